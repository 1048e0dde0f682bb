"""Backups on disk: where they live, their manifests, and how a restore source is checked.

Every backup is three files in ``$CLONER_DATA_DIR/backups/<tenant>/``:
``<tenant>-<UTC>.dump`` (the archive), ``.sha256`` (``sha256sum`` format) and
``.json`` (the manifest: engine, template version, industry, size, checksum,
reason, who asked, when). The manifest is the source of truth for listing and
restoring: a restore re-provisions the tenant with the template version and
industry the manifest names.

A restore source must be a regular ``.dump`` file directly in the tenant's own
folder (symlinks are resolved first, so neither ``..`` nor a link can reach
anything else) whose SHA-256, computed again now, matches its manifest and its
``.sha256`` file. Anything else is refused with ``InvalidBackup`` before a
request is enqueued, and checked once more by the worker before it loads it.

Functions here do blocking file I/O and hashing: async callers run them with
``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloner import constants
from cloner.domain import validate_tenant_id
from cloner.errors import InvalidBackup, InvalidInput

_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class BackupInfo:
    """One backup as found on disk, with the outcome of re-checking its checksum."""

    tenant_id: str
    path: Path
    size_bytes: int
    #: The checksum the manifest records (None without a readable manifest).
    sha256: str | None
    #: True when the archive's SHA-256, computed now, matches the manifest and ``.sha256``.
    verified: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    #: Why ``verified`` is False, in one line.
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``cloner backup list --json`` shape."""
        m = self.manifest
        return {
            "tenant": self.tenant_id, "path": str(self.path), "size_bytes": self.size_bytes,
            "sha256": self.sha256, "taken_at": m.get("taken_at"), "reason": m.get("reason"),
            "actor": m.get("actor"), "engine": m.get("engine"),
            "template_version": m.get("template_version"), "industry": m.get("industry"),
            "verified": self.verified, "problem": self.problem,
        }


def tenant_backup_dir(backups_dir: Path, tenant_id: str) -> Path:
    """The folder holding one tenant's backups."""
    return backups_dir / validate_tenant_id(tenant_id)


def write_manifest(path: Path, record: dict[str, Any]) -> None:
    """Write the ``.json`` manifest (0600) and the ``.sha256`` file next to an archive."""
    manifest = path.with_suffix(constants.MANIFEST_SUFFIX)
    manifest.write_text(json.dumps(record, indent=2) + "\n")
    manifest.chmod(0o600)
    checksum = path.with_suffix(path.suffix + constants.CHECKSUM_SUFFIX)
    checksum.write_text(f"{record['sha256']}  {path.name}\n")
    checksum.chmod(0o600)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_backup_path(backups_dir: Path, tenant_id: str, value: str | Path) -> Path:
    """The real path of a restore source, refusing anything outside the tenant's folder.

    A relative ``value`` is taken relative to the tenant's folder. The check is
    made on the fully resolved path (``..`` collapsed, symlinks followed), so a
    link planted in the folder cannot point a restore at another file.
    """
    folder = tenant_backup_dir(backups_dir, tenant_id)
    shown = str(value)[:200]
    try:
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidBackup(
            f"tenant {tenant_id!r} has no backups: {folder} does not exist"
        ) from None
    try:
        candidate = Path(value)
        if not candidate.is_absolute():
            candidate = folder / candidate
        # strict=False: a missing file still resolves, so "outside" is reported before
        # "missing" and a probe cannot learn which outside paths exist.
        real = candidate.resolve(strict=False)
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, loops, too long
        raise InvalidBackup(f"backup path {shown!r} is not usable: {_why(exc)}") from None
    if real.parent != root:
        raise InvalidBackup(
            f"backup {shown!r} is outside {folder}: a restore only reads backups "
            f"from the tenant's own folder (see `cloner backup list {tenant_id}`)"
        )
    if real.suffix != constants.BACKUP_SUFFIX:
        raise InvalidBackup(f"backup {shown!r} is not a {constants.BACKUP_SUFFIX} archive")
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        raise InvalidBackup(f"backup {shown!r} does not exist in {folder}") from None
    except (OSError, ValueError) as exc:  # e.g. a name longer than the filesystem allows
        raise InvalidBackup(f"backup path {shown!r} is not usable: {_why(exc)}") from None
    if not stat.S_ISREG(mode):
        raise InvalidBackup(f"backup {shown!r} is not a regular file")
    return real


def _why(exc: Exception) -> str:
    # strerror, not str(exc): the latter repeats the (possibly huge, hostile) path.
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)[:200]


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of an archive, or ``InvalidBackup`` if it is missing or unreadable."""
    manifest = path.with_suffix(constants.MANIFEST_SUFFIX)
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise InvalidBackup(f"backup {path.name} has no manifest {manifest.name}") from None
    except (OSError, ValueError) as exc:
        raise InvalidBackup(f"manifest {manifest.name} is unreadable: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
        raise InvalidBackup(f"manifest {manifest.name} records no sha256")
    return data


def inspect_backup(tenant_id: str, path: Path) -> BackupInfo:
    """Read the manifest of ``path`` and re-compute its checksum; never raises for bad files."""
    size = path.stat().st_size
    try:
        manifest = read_manifest(path)
    except InvalidBackup as exc:
        return BackupInfo(tenant_id, path, size, None, False, problem=exc.message)
    expected = str(manifest["sha256"])
    problem = _checksum_problem(tenant_id, path, size, expected, manifest)
    return BackupInfo(tenant_id, path, size, expected, problem is None, manifest, problem)


def _checksum_problem(
    tenant_id: str, path: Path, size: int, expected: str, manifest: dict[str, Any]
) -> str | None:
    label = manifest.get("label")
    if label is not None and label != constants.CONTAINER_PREFIX + tenant_id:
        return f"manifest belongs to {label}, not to tenant {tenant_id}"
    recorded_size = manifest.get("size_bytes")
    if recorded_size is not None and recorded_size != size:
        return f"size is {size} bytes, manifest says {recorded_size}"
    sidecar = path.with_suffix(path.suffix + constants.CHECKSUM_SUFFIX)
    if sidecar.exists():
        words = sidecar.read_text().split()
        if not words or words[0] != expected:
            return f"{sidecar.name} does not agree with the manifest"
    actual = sha256_of(path)
    if actual != expected:
        return f"sha256 is {actual[:12]}…, manifest says {expected[:12]}…"
    return None


def verify_backup(backups_dir: Path, tenant_id: str, value: str | Path) -> BackupInfo:
    """A verified restore source for ``tenant_id``, or ``InvalidBackup`` saying why not."""
    path = resolve_backup_path(backups_dir, tenant_id, value)
    info = inspect_backup(tenant_id, path)
    if not info.verified:
        raise InvalidBackup(f"backup {path.name} failed verification: {info.problem}")
    return info


def list_backups(backups_dir: Path, tenant_id: str | None = None) -> list[BackupInfo]:
    """Every backup under ``backups_dir`` (or one tenant's), oldest first, each re-verified."""
    if tenant_id is not None:
        folders = [tenant_backup_dir(backups_dir, tenant_id)]
    elif backups_dir.is_dir():
        folders = sorted(p for p in backups_dir.iterdir() if p.is_dir())
    else:
        folders = []
    found: list[BackupInfo] = []
    for folder in folders:
        try:
            owner = validate_tenant_id(folder.name)
        except InvalidInput:
            continue  # not a tenant folder: nothing cloner wrote
        if not folder.is_dir():
            continue
        # Names carry a sortable UTC stamp, so name order is the order they were taken in.
        for path in sorted(folder.glob(f"*{constants.BACKUP_SUFFIX}")):
            if path.is_file() and not path.is_symlink():
                found.append(inspect_backup(owner, path))
    return found


def is_final(backup: dict[str, Any] | None) -> bool:
    """True when ``backup`` is a tenant's final backup: taken by a deprovision request
    and recorded as such, with the request whose data it holds (``data_request``). An
    on-demand or pre-migration backup never is; a record without ``data_request``
    (written before it existed) is not either, so a new final backup is taken."""
    return bool(backup and backup.get("final") is True and backup.get("request")
                and "data_request" in backup)


def final_backup_problem(backups_dir: Path, tenant_id: str, backup: dict[str, Any] | None,
                         *, data_of: str | None = None) -> str | None:
    """None when ``backup`` is the tenant's final backup and verifies now, else why not.

    With ``data_of`` (the request that created the data about to be removed or
    replaced), the final backup must also have been taken from that data.
    Verification reads the archive back (SHA-256 against the manifest and the
    ``.sha256`` sidecar, as ``backup list`` does). Blocking: run in a thread.
    """
    if not backup:
        return "no final backup is recorded"
    if not is_final(backup):
        return (f"the recorded backup is a {backup.get('reason') or 'earlier'} backup, "
                "not the final one")
    if data_of is not None and backup.get("data_request") != data_of:
        return (f"the final backup was taken from the data of request "
                f"{backup.get('data_request') or '?'}, not from the data kept now "
                f"(request {data_of or '?'})")
    try:
        info = verify_backup(backups_dir, tenant_id, str(backup.get("path")))
    except InvalidBackup as exc:
        return f"the final backup does not verify: {exc.message}"
    if info.sha256 != backup.get("sha256"):
        return "the final backup's checksum differs from the one recorded when it was taken"
    return None
