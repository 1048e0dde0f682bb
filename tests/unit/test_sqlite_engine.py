"""The sqlite engine on real SQLite files: template cache, install, isolation, backup."""

from __future__ import annotations

import gzip
import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from cloner.catalog import ResolvedTemplates, TemplateFile
from cloner.domain import Credentials, RoleCredential
from cloner.engines import Neighbour, TenantTarget
from cloner.engines.sqlite import SqliteEngine, prebuilt_template, split_statements, template_key
from cloner.errors import BackupError, NotReady, TemplateError
from cloner.pipeline.hosts import EmbeddedHost

ROOT_SQL = """
-- bookkeeping; the engine writes its rows
CREATE TABLE schema_info (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    checksum TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    duration_ms INTEGER, UNIQUE (kind, name, version));
CREATE TABLE system_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO system_settings VALUES ('a;b', 'semicolon inside a literal');
CREATE TABLE orgs (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE users (id INTEGER PRIMARY KEY,
                    org_id INTEGER NOT NULL REFERENCES orgs (id),
                    password TEXT);
CREATE TRIGGER users_touch AFTER UPDATE ON users BEGIN
    UPDATE users SET password = NULL WHERE id = NEW.id AND 0;
END;
INSERT INTO orgs (name) VALUES ('first'), ('second');
"""
OVERLAY_SQL = "CREATE TABLE licenses (id INTEGER PRIMARY KEY, seats INTEGER NOT NULL);\n" \
              "INSERT INTO licenses (seats) VALUES (5);\n"

ENGINE = SqliteEngine()


def _template(path: Path, kind: str, name: str, text: str) -> TemplateFile:
    path.write_text(text)
    return TemplateFile(kind, name, "v1.0", path, hashlib.sha256(text.encode()).hexdigest())


@pytest.fixture
def templates(tmp_path: Path) -> ResolvedTemplates:
    """A tiny root + overlay pair with a trigger and a literal holding ';'."""
    return ResolvedTemplates(
        _template(tmp_path / "schema.sql", "root", "sqlite", ROOT_SQL),
        _template(tmp_path / "overlay.sql", "overlay", "technology", OVERLAY_SQL),
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The engine's storage root inside a private data dir."""
    return tmp_path / "data" / "sqlite"


async def _tenant(root: Path, tenant_id: str, request_id: str = "req-1") -> TenantTarget:
    from cloner.pipeline.hosts import Placing

    creds = Credentials(RoleCredential("su", "x"), "y", {})
    hosted = await EmbeddedHost(root).start(Placing(tenant_id, request_id, ENGINE, creds, {}))
    return TenantTarget(tenant_id, ENGINE.database_name(tenant_id), hosted.endpoint, creds,
                        storage_root=root)


async def _provisioned(root: Path, tenant_id: str, templates: ResolvedTemplates) -> TenantTarget:
    target = await _tenant(root, tenant_id)
    await ENGINE.wait_ready(target, 1.0)
    await ENGINE.apply_templates(target, templates)
    await ENGINE.apply_rbac(target, 10)
    return target


def test_split_statements_keeps_triggers_and_literals_whole() -> None:
    """A trigger body and a ';' inside a string stay in one statement each."""
    statements = split_statements(ROOT_SQL)
    assert len(statements) == 7
    assert statements[5].startswith("CREATE TRIGGER") and statements[5].endswith("END;")
    assert "'a;b'" in statements[2]
    with pytest.raises(TemplateError, match="incomplete"):
        split_statements("CREATE TABLE t (a INTEGER")


def test_template_is_built_once_verified_and_rebuilt_when_damaged(
    tmp_path: Path, templates: ResolvedTemplates
) -> None:
    """The cache file is reused while its checksum holds and rebuilt when it does not."""
    cache = tmp_path / "cache"
    built = prebuilt_template(cache, templates)
    key = template_key(templates)
    assert built.name == f"{key}.sqlite3"
    recorded = (cache / f"{key}.sha256").read_text().strip()
    assert hashlib.sha256(built.read_bytes()).hexdigest() == recorded
    first_mtime = built.stat().st_mtime_ns
    assert prebuilt_template(cache, templates).stat().st_mtime_ns == first_mtime  # reused
    with built.open("r+b") as damaged:
        damaged.seek(200)
        damaged.write(b"\xff" * 16)
    damaged_digest = hashlib.sha256(built.read_bytes()).hexdigest()
    rebuilt = prebuilt_template(cache, templates)
    # Rebuilt, not reused: sound again and recorded anew (the bytes may differ from the
    # first build by schema_info's applied_at timestamp).
    digest = hashlib.sha256(rebuilt.read_bytes()).hexdigest()
    assert digest != damaged_digest
    assert digest == (cache / f"{key}.sha256").read_text().strip()
    conn = sqlite3.connect(rebuilt)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


def test_a_changed_template_gets_a_new_cache_key(
    tmp_path: Path, templates: ResolvedTemplates
) -> None:
    """The key covers file checksums, so an edited overlay can never reuse an old file."""
    other = ResolvedTemplates(
        templates.root,
        _template(tmp_path / "o2.sql", "overlay", "technology", OVERLAY_SQL + "-- x\n"),
    )
    assert template_key(other) != template_key(templates)


def test_a_broken_template_fails_with_its_name_and_leaves_no_cache(tmp_path: Path) -> None:
    """A failing statement rolls the build back; nothing half-built stays in the cache."""
    bad = ResolvedTemplates(
        _template(tmp_path / "schema.sql", "root", "sqlite", ROOT_SQL + "INSERT INTO nope;\n"),
        None,
    )
    cache = tmp_path / "cache"
    with pytest.raises(TemplateError, match=r"schema\.sql"):
        prebuilt_template(cache, bad)
    assert list(cache.iterdir()) == []


async def test_provisioned_file_is_private_wal_with_templates_recorded(
    root: Path, templates: ResolvedTemplates
) -> None:
    """0700 directories, a 0600 file in WAL mode, and schema_info naming both templates."""
    target = await _provisioned(root, "acme", templates)
    path = Path(target.endpoint.path or "")
    assert path == root / "tenants" / "acme" / "acme.sqlite3"
    for folder in (root, root / "tenants", path.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = conn.execute("SELECT kind, name FROM schema_info ORDER BY id").fetchall()
        assert rows == [("root", "sqlite"), ("overlay", "technology")]
    finally:
        conn.close()
    assert await ENGINE.row_counts(target) == {
        "licenses": 1, "orgs": 2, "schema_info": 2, "system_settings": 1, "users": 0,
    }
    assert await ENGINE.probe(target, 2.0) >= 0


async def test_applying_again_is_a_no_op_and_keeps_data(
    root: Path, templates: ResolvedTemplates
) -> None:
    """A redelivered template step finds the file done and does not overwrite rows."""
    target = await _provisioned(root, "acme", templates)
    conn = sqlite3.connect(target.endpoint.path or "")
    conn.execute("INSERT INTO orgs (name) VALUES ('written by the app')")
    conn.commit()
    conn.close()
    await ENGINE.apply_templates(target, templates)
    assert (await ENGINE.row_counts(target))["orgs"] == 3


async def test_a_file_holding_other_templates_is_refused(
    tmp_path: Path, root: Path, templates: ResolvedTemplates
) -> None:
    """A file provisioned from other templates is never silently replaced."""
    target = await _provisioned(root, "acme", templates)
    other = ResolvedTemplates(
        _template(tmp_path / "r2.sql", "root", "sqlite", ROOT_SQL + "-- v2\n"), None
    )
    with pytest.raises(TemplateError, match="does not match"):
        await ENGINE.apply_templates(target, other)


async def test_isolation_proof_passes_and_catches_a_shared_file(
    root: Path, templates: ResolvedTemplates
) -> None:
    """Every check passes for two separate tenants; a hard link to a neighbour fails one."""
    a = await _provisioned(root, "tenant-a", templates)
    b = await _provisioned(root, "tenant-b", templates)
    neighbour = Neighbour("tenant-b", b.endpoint, ENGINE.database_name("tenant-b"))
    checks = await ENGINE.prove_isolation(a, [neighbour])
    assert {c.name for c in checks} >= {
        "database_integrity", "wal_journal", "foreign_keys_enforced",
        "owner_reads_and_writes", "readonly_cannot_write", "file_not_shared",
    }
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    host_checks = await EmbeddedHost(root).checks(a)
    assert all(c.passed for c in host_checks), host_checks

    # An operator "optimising" disk space links B's path to A's file.
    b_path = Path(b.endpoint.path or "")
    b_path.unlink()
    os.link(a.endpoint.path or "", b_path)
    shared = {c.name: c for c in await ENGINE.prove_isolation(a, [neighbour])}
    assert not shared["file_not_shared"].passed
    assert "tenant-b" in shared["file_not_shared"].detail


async def test_host_checks_catch_loose_permissions_and_escaping_links(
    tmp_path: Path, root: Path, templates: ResolvedTemplates
) -> None:
    """A group-readable file fails the permission check; a symlink out fails containment."""
    target = await _provisioned(root, "acme", templates)
    path = Path(target.endpoint.path or "")
    path.chmod(0o644)
    checks = {c.name: c for c in await EmbeddedHost(root).checks(target)}
    assert not checks["private_file_permissions"].passed
    assert "acme.sqlite3" in checks["private_file_permissions"].detail
    path.chmod(0o600)

    elsewhere = tmp_path / "elsewhere.sqlite3"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    checks = {c.name: c for c in await EmbeddedHost(root).checks(target)}
    assert not checks["path_contained_in_data_dir"].passed


async def test_backup_restores_into_a_fresh_tenant_with_equal_rows(
    tmp_path: Path, root: Path, templates: ResolvedTemplates
) -> None:
    """gzip archive, checksummed, verified; restoring it reproduces every table's rows."""
    source = await _provisioned(root, "acme", templates)
    conn = sqlite3.connect(source.endpoint.path or "")
    conn.executemany("INSERT INTO orgs (name) VALUES (?)", [(f"o{i}",) for i in range(50)])
    conn.commit()
    conn.close()
    dest = tmp_path / "backups" / "acme.dump"
    result = await ENGINE.backup(None, source, dest)  # type: ignore[arg-type]
    assert result.path == dest and result.size_bytes == dest.stat().st_size
    assert result.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert result.restorable_entries == 5
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    with gzip.open(dest) as archive:
        assert archive.read(16) == b"SQLite format 3\x00"

    restored = await _tenant(root, "acme-copy")
    await ENGINE.restore(None, restored, dest)  # type: ignore[arg-type]
    assert await ENGINE.row_counts(restored) == await ENGINE.row_counts(source)
    await ENGINE.restore(None, restored, dest)  # idempotent: already restored


async def test_a_corrupt_archive_is_refused(
    tmp_path: Path, root: Path, templates: ResolvedTemplates
) -> None:
    """Restoring garbage fails with BackupError and leaves no file behind."""
    target = await _tenant(root, "acme")
    bogus = tmp_path / "bogus.dump"
    bogus.write_bytes(gzip.compress(b"not a database" * 100))
    with pytest.raises(BackupError):
        await ENGINE.restore(None, target, bogus)  # type: ignore[arg-type]
    assert not Path(target.endpoint.path or "").exists()


async def test_probe_fails_when_the_file_is_gone(root: Path, templates: ResolvedTemplates) -> None:
    """A deleted file is NotReady, not an empty database silently created."""
    target = await _provisioned(root, "acme", templates)
    Path(target.endpoint.path or "").unlink()
    with pytest.raises(NotReady):
        await ENGINE.probe(target, 1.0)
    assert not Path(target.endpoint.path or "").exists()


async def test_warnings_name_missing_fk_index_and_password_column(
    root: Path, templates: ResolvedTemplates
) -> None:
    """users.org_id has no index and users.password looks like a password."""
    target = await _provisioned(root, "acme", templates)
    warnings = await ENGINE.template_warnings(target)
    assert "foreign key users.org_id has no index" in warnings
    assert "column users.password looks like a plaintext secret" in warnings
    assert not any("has no primary key" in w for w in warnings)


async def test_new_request_replaces_files_of_an_earlier_incarnation(
    root: Path, templates: ResolvedTemplates
) -> None:
    """Same request: files kept (crash re-run). Another request: the stale files go."""
    first = await _provisioned(root, "acme", templates)
    again = await _tenant(root, "acme", "req-1")
    assert Path(again.endpoint.path or "").is_file()
    host = EmbeddedHost(root)
    await host.stop("acme")
    assert await host.has_data("acme") and not await host.is_live("acme")
    await _tenant(root, "acme", "req-2")
    assert not Path(first.endpoint.path or "").exists()
    assert await host.is_live("acme")


def test_a_template_cannot_attach_another_file_or_change_pragmas(tmp_path: Path) -> None:
    """The build's authorizer denies ATTACH and pragmas even if lint was skipped."""
    victim = tmp_path / "other-tenant.sqlite3"
    sqlite3.connect(victim).close()
    for sneaky in (f"ATTACH DATABASE '{victim}' AS other;", "PRAGMA foreign_keys = OFF;"):
        bad = ResolvedTemplates(
            _template(tmp_path / "schema.sql", "root", "sqlite", ROOT_SQL + sneaky + "\n"), None
        )
        with pytest.raises(TemplateError, match="not authorized"):
            prebuilt_template(tmp_path / "cache", bad)


def test_lint_refuses_sqlite_escape_hatches_only_for_sqlite() -> None:
    """ATTACH / PRAGMA / VACUUM / load_extension are sqlite lint errors, not elsewhere."""
    from cloner.catalog import lint_template

    for sql in ("ATTACH DATABASE 'x' AS y;", "PRAGMA writable_schema = 1;",
                "VACUUM INTO '/tmp/copy';", "SELECT load_extension('x');"):
        assert lint_template("sqlite", "CREATE TABLE t (a INTEGER);\n" + sql), sql
    harmless = "CREATE TABLE t (attachment TEXT); -- PRAGMA in a comment\n"
    assert lint_template("sqlite", harmless) == []
    assert lint_template("postgres", "CREATE TABLE t (a int);\nVACUUM;\n") == []
