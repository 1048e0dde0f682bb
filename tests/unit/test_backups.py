"""Unit tests of backups on disk: restore-source containment, verification, listing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cloner.backups import list_backups, resolve_backup_path, verify_backup
from cloner.errors import InvalidBackup
from tests.unit.conftest import make_backup


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    """A backups dir with one backup for `acme` and one for `other`."""
    root = tmp_path / "backups"
    make_backup(root, "acme")
    make_backup(root, "other")
    return root


# ----------------------------------------------------------------- containment


@pytest.mark.parametrize("value", [
    "../other/other-20260101T000000000000Z.dump",
    "../../../../etc/passwd",
    "/etc/passwd",
    "sub/acme-20260101T000000000000Z.dump",
    "./../acme/../other/other-20260101T000000000000Z.dump",
])
def test_paths_outside_the_tenant_folder_are_refused(backups: Path, value: str) -> None:
    """Relative escapes, absolute foreign paths and subfolders are refused as outside."""
    with pytest.raises(InvalidBackup, match="outside") as info:
        resolve_backup_path(backups, "acme", value)
    assert info.value.exit_code == 2
    assert info.value.http_status == 422


def test_absolute_path_into_another_tenants_folder_is_refused(backups: Path) -> None:
    """Another tenant's real, verified backup cannot be restored into this tenant."""
    foreign = backups / "other" / "other-20260101T000000000000Z.dump"
    assert verify_backup(backups, "other", foreign).verified
    with pytest.raises(InvalidBackup, match="outside"):
        resolve_backup_path(backups, "acme", str(foreign))


def test_symlink_in_the_folder_pointing_outside_is_refused(backups: Path) -> None:
    """A link planted in the tenant's folder is judged by where it points."""
    link = backups / "acme" / "planted.dump"
    link.symlink_to(backups / "other" / "other-20260101T000000000000Z.dump")
    with pytest.raises(InvalidBackup, match="outside"):
        resolve_backup_path(backups, "acme", str(link))


@pytest.mark.parametrize(("value", "message"), [
    ("acme-20260101T000000000000Z.json", "not a .dump archive"),
    ("acme-missing.dump", "does not exist"),
    ("bad\x00name.dump", "not usable"),
    ("x" * 5000 + ".dump", "not usable"),
])
def test_unusable_names_inside_the_folder_are_refused(
    backups: Path, value: str, message: str
) -> None:
    """Manifests, missing files, NUL bytes and over-long names are InvalidBackup, not crashes."""
    with pytest.raises(InvalidBackup, match=message):
        resolve_backup_path(backups, "acme", value)


def test_a_fifo_named_like_a_dump_is_refused(backups: Path) -> None:
    """Only regular files are read: a FIFO would block the reader forever."""
    fifo = backups / "acme" / "acme-fifo.dump"
    os.mkfifo(fifo)
    with pytest.raises(InvalidBackup, match="not a regular file"):
        resolve_backup_path(backups, "acme", str(fifo))


def test_tenant_without_a_backup_folder_is_refused(backups: Path) -> None:
    """A tenant that never had a backup has nothing to restore."""
    with pytest.raises(InvalidBackup, match="has no backups"):
        resolve_backup_path(backups, "newco", "newco-x.dump")


def test_relative_and_absolute_names_resolve_to_the_same_file(backups: Path) -> None:
    """A bare file name is taken relative to the tenant's folder."""
    name = "acme-20260101T000000000000Z.dump"
    expected = (backups / "acme" / name).resolve()
    assert resolve_backup_path(backups, "acme", name) == expected
    assert resolve_backup_path(backups, "acme", str(backups / "acme" / name)) == expected


# ---------------------------------------------------------------- verification


def test_verify_accepts_an_untouched_backup_and_returns_its_manifest(backups: Path) -> None:
    """A backup whose checksum matches manifest and .sha256 verifies; its manifest is read."""
    info = verify_backup(backups, "acme", "acme-20260101T000000000000Z.dump")
    assert info.verified and info.problem is None
    assert info.manifest["template_version"] == "v1.1"
    assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()


def test_verify_refuses_a_tampered_archive(backups: Path) -> None:
    """One flipped byte (same size) fails the re-computed checksum."""
    path = backups / "acme" / "acme-20260101T000000000000Z.dump"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidBackup, match="sha256"):
        verify_backup(backups, "acme", path)


def test_verify_refuses_a_sidecar_that_disagrees(backups: Path) -> None:
    """A .sha256 file that names another checksum than the manifest fails verification."""
    path = backups / "acme" / "acme-20260101T000000000000Z.dump"
    path.with_suffix(".dump.sha256").write_text("0" * 64 + f"  {path.name}\n")
    with pytest.raises(InvalidBackup, match="does not agree"):
        verify_backup(backups, "acme", path)


def test_verify_refuses_a_backup_without_manifest(backups: Path) -> None:
    """Without its manifest a dump has no trusted checksum and no spec to restore."""
    path = backups / "acme" / "acme-20260101T000000000000Z.dump"
    path.with_suffix(".json").unlink()
    with pytest.raises(InvalidBackup, match="no manifest"):
        verify_backup(backups, "acme", path)


def test_verify_refuses_a_manifest_of_another_tenant(backups: Path) -> None:
    """A dump copied into this folder with its manifest still belongs to the other tenant."""
    path = make_backup(backups, "acme", stamp="20260102T000000000000Z", label="cloner-other")
    with pytest.raises(InvalidBackup, match="belongs to cloner-other"):
        verify_backup(backups, "acme", path)


# --------------------------------------------------------------------- listing


def test_list_reports_every_backup_with_its_verification(backups: Path) -> None:
    """Listing re-verifies each dump and ignores partial files and non-tenant folders."""
    make_backup(backups, "acme", stamp="20260103T000000000000Z", reason="on-demand")
    tampered = make_backup(backups, "acme", stamp="20260104T000000000000Z")
    tampered.write_bytes(tampered.read_bytes() + b"x")
    (backups / "acme" / "acme-x.dump.partial").write_bytes(b"half")
    (backups / "Not A Tenant").mkdir()
    (backups / "Not A Tenant" / "x.dump").write_bytes(b"x")

    rows = [b.as_dict() for b in list_backups(backups)]
    assert [(r["tenant"], Path(r["path"]).name) for r in rows] == [
        ("acme", "acme-20260101T000000000000Z.dump"),
        ("acme", "acme-20260103T000000000000Z.dump"),
        ("acme", "acme-20260104T000000000000Z.dump"),
        ("other", "other-20260101T000000000000Z.dump"),
    ]
    assert [r["verified"] for r in rows] == [True, True, False, True]
    assert "size" in rows[2]["problem"]
    assert rows[1]["reason"] == "on-demand"
    assert rows[0]["actor"] == "cli:alice"
    assert set(rows[0]) >= {"tenant", "path", "size_bytes", "sha256", "taken_at", "reason",
                            "verified"}
    assert [r["tenant"] for r in (b.as_dict() for b in list_backups(backups, "other"))] == [
        "other"]


def test_list_of_a_missing_backups_dir_is_empty(tmp_path: Path) -> None:
    """No backups dir (nothing deprovisioned yet) lists nothing instead of failing."""
    assert list_backups(tmp_path / "nope") == []
    assert list_backups(tmp_path / "nope", "acme") == []


def test_manifest_and_checksum_files_are_private(backups: Path) -> None:
    """The manifest and the .sha256 are written with mode 0600, like the dump."""
    path = backups / "acme" / "acme-20260101T000000000000Z.dump"
    for sidecar in (path.with_suffix(".json"), path.with_suffix(".dump.sha256")):
        assert sidecar.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.with_suffix(".json").read_text())["label"] == "cloner-acme"
