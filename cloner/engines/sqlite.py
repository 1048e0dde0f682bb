"""SQLite tenants: one file per tenant in cloner's data directory, no container.

Provisioning copies a pre-built template file for (version, industry): the
root and overlay are applied once into ``<root>/templates/``, the result is
checksummed, and every later tenant of that combination gets a verified
copy. That is why a sqlite tenant is ready in milliseconds.

There are no logins: whoever can open the file owns the data, so isolation
is file-system isolation. The tenant's directory is 0700 and its files 0600
(``EmbeddedHost``); the engine proves the rest — the database is whole, in
WAL mode with foreign keys enforced, a read-only open cannot write, and no
other tenant's path leads to the same file.

Every call into ``sqlite3`` runs in a worker thread. Schema migrations
(``MigrationHooks``) are carried out by ``sqlite_migrations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from cloner import constants
from cloner.backups import sha256_of
from cloner.catalog import ResolvedTemplates
from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.domain import CheckResult, Credentials, Endpoint, Engine
from cloner.engines import sqlite_migrations
from cloner.engines.base import (
    BackupResult,
    ContainerDefaults,
    Neighbour,
    Placement,
    TenantTarget,
)
from cloner.engines.checks import looks_like_plaintext_secret
from cloner.engines.sqlite_migrations import plain_sql_only
from cloner.errors import BackupError, ClonerError, NotReady, TemplateError
from cloner.logging import get_logger
from cloner.runtime.base import ContainerSpec, Runtime

log = get_logger(__name__)

FILE_SUFFIX = ".sqlite3"
PROBE_TABLE = "system_settings"  # every root template version ships it (catalog contract)
BUSY_TIMEOUT_S = 5.0
BACKUP_FORMAT = "sqlite-gzip"
_COPY_CHUNK = 1 << 20


class SqliteEngine:
    """SQLite tenants (embedded: no server, no container, no logins)."""

    engine = Engine.SQLITE
    placement = Placement.EMBEDDED
    roles: tuple[str, ...] = ()
    superuser = ""  # no logins
    hardening_level = 0  # unchanged since levels were introduced
    container_port = 0
    transient_errors: tuple[type[BaseException], ...] = ()

    def database_name(self, tenant_id: str) -> str:
        """The tenant's file name inside its directory."""
        return tenant_id + FILE_SUFFIX

    def container_spec(
        self, tenant_id: str, credentials: Credentials, labels: dict[str, str],
        defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """Never called: the pipeline asks the embedded host, not the runtime."""
        raise ClonerError(f"sqlite tenant {tenant_id} has no container")

    async def wait_ready(self, target: TenantTarget, timeout_s: float) -> None:
        """Nothing starts; check the tenant directory is there and writable."""
        folder = _path(target).parent
        if not await asyncio.to_thread(os.access, folder, os.W_OK | os.X_OK):
            raise NotReady(f"tenant directory {folder} is missing or not writable")

    async def probe(self, target: TenantTarget, timeout_s: float) -> float:
        """Open the file read-write and read the probe table; seconds taken."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.to_thread(_probe, _path(target))
        except (OSError, TimeoutError, sqlite3.Error) as exc:
            raise NotReady(
                f"sqlite file {_path(target)} failed the health probe: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return time.monotonic() - started

    async def apply_templates(self, target: TenantTarget, templates: ResolvedTemplates) -> None:
        """Copy the verified pre-built file of (root, overlay) into place, once."""
        if target.storage_root is None:
            raise TemplateError("sqlite needs the engine's storage root")
        await asyncio.to_thread(
            _install_template, _path(target), target.storage_root / "templates", templates
        )

    async def apply_rbac(self, target: TenantTarget, connection_limit: int) -> None:
        """No logins exist; access is the file's mode, so make sure it is private."""
        await asyncio.to_thread(_make_private, _path(target))

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        """Whole, WAL, foreign keys on, read-only open refuses writes, not shared."""
        others = [Path(n.endpoint.path) for n in neighbours if n.endpoint.path]
        return await asyncio.to_thread(_isolation_checks, _path(target), others)

    async def backup(
        self, runtime: Runtime, target: TenantTarget, dest: Path, *,
        lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,
    ) -> BackupResult:
        """An online copy (SQLite backup API), gzip-compressed, checked, checksummed."""
        try:
            return await asyncio.to_thread(_backup, _path(target), dest)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"sqlite backup of {target.tenant_id} failed: {exc}") from exc

    async def restore(self, runtime: Runtime, target: TenantTarget, source: Path) -> None:
        """Decompress a backup into the tenant's path (left alone if already restored)."""
        try:
            await asyncio.to_thread(_restore, source, _path(target))
        except (OSError, sqlite3.Error, EOFError, gzip.BadGzipFile) as exc:
            raise BackupError(f"sqlite restore of {target.tenant_id} failed: {exc}") from exc

    async def row_counts(self, target: TenantTarget) -> dict[str, int]:
        """Rows per table."""
        return await asyncio.to_thread(_row_counts, _path(target))

    async def template_warnings(self, target: TenantTarget) -> list[str]:
        """Tables without PK, FKs without a leading index, secret-looking columns."""
        return await asyncio.to_thread(_warnings, _path(target))

    def dsn(self, endpoint: Endpoint, username: str, password: str) -> str:
        """``sqlite:///`` URL of the file (no credentials exist)."""
        return f"sqlite:///{endpoint.path}"

    # ------------------------------------------------------------- migrations
    # MigrationHooks (cloner.engines.base); the work is in engines/sqlite_migrations.py.

    #: SQLite DDL is transactional: a step that fails leaves nothing behind.
    transactional_ddl = True

    async def fence_logins(self, target: TenantTarget, fenced: bool) -> None:
        """Nothing: an embedded file has no logins (applications open it through cloner)."""

    async def migration_state(self, target: TenantTarget) -> MigrationState:
        """Root version and applied steps from the tenant's ``schema_info``."""
        return await asyncio.to_thread(
            sqlite_migrations.read_state, _path(target), target.tenant_id, BUSY_TIMEOUT_S)

    async def apply_migration_step(
        self, target: TenantTarget, script: MigrationScript, lock_timeout_s: float
    ) -> AppliedMigration:
        """One step in one ``BEGIN IMMEDIATE`` transaction, recorded in ``schema_info``;
        ``lock_timeout_s`` is the busy timeout for other writers."""
        statements = await asyncio.to_thread(lambda: split_statements(script.read()))
        return await asyncio.to_thread(
            sqlite_migrations.apply_step, _path(target), target.tenant_id, script=script,
            statements=statements, lock_timeout_s=lock_timeout_s,
        )

    async def realign_migration_checksum(
        self, target: TenantTarget, applied: AppliedMigration, checksum: str
    ) -> None:
        """Record ``checksum`` for an applied step (``migrate repair``)."""
        await asyncio.to_thread(sqlite_migrations.realign, _path(target), target.tenant_id,
                                applied, checksum, BUSY_TIMEOUT_S)

    async def schema_catalogue(self, target: TenantTarget) -> dict[str, Any]:
        """Tables, columns, CHECKs, foreign keys, indexes, triggers; normalised definitions."""
        return await asyncio.to_thread(
            sqlite_migrations.catalogue, _path(target), target.tenant_id, BUSY_TIMEOUT_S)

    async def drop_database(self, target: TenantTarget) -> None:
        """Remove the tenant's file with its ``-wal`` / ``-shm`` (before a restore)."""
        await asyncio.to_thread(sqlite_migrations.drop_files, _path(target))


# ---------------------------------------------------------------- connections


def _path(target: TenantTarget) -> Path:
    if target.endpoint.path is None:
        raise ClonerError(f"sqlite tenant {target.tenant_id} has no path")
    return Path(target.endpoint.path)


@contextlib.contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection with foreign keys enforced; ``read_only`` opens with ``mode=ro``."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    else:
        if not path.is_file():  # connect() would silently create an empty database
            raise FileNotFoundError(f"{path} does not exist")
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        yield conn
    finally:
        conn.close()


def _probe(path: Path) -> None:
    with connect(path) as conn:
        conn.execute(f"SELECT 1 FROM {PROBE_TABLE} LIMIT 1").fetchall()


def _make_private(path: Path) -> None:
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists():
            name.chmod(0o600)


# ------------------------------------------------------------------ templates


def template_key(templates: ResolvedTemplates) -> str:
    """Cache key of a (root, overlay) pair: versions, names and file checksums."""
    parts = [f"{t.kind}:{t.name}:{t.version}:{t.checksum}" for t in templates.files]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    overlay = templates.overlay.name if templates.overlay else "none"
    return f"{templates.root.version}-{overlay}-{digest}"


def prebuilt_template(cache_dir: Path, templates: ResolvedTemplates) -> Path:
    """The verified pre-built file for ``templates``, built now if missing or damaged.

    The file's SHA-256 is kept beside it; a copy whose bytes no longer match
    is rebuilt rather than handed to a tenant.
    """
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = template_key(templates)
    built = cache_dir / f"{key}{FILE_SUFFIX}"
    checksum = cache_dir / f"{key}.sha256"
    if built.is_file() and checksum.is_file():
        if sha256_of(built) == checksum.read_text().strip():
            return built
        log.warning("sqlite.template_cache_damaged", file=str(built))
    partial = cache_dir / f".{key}.{os.getpid()}.{time.monotonic_ns()}.partial"
    try:
        _build_template(partial, templates)
        digest = sha256_of(partial)
        sidecar = partial.with_suffix(".sha256")
        sidecar.write_text(digest + "\n")
        partial.replace(built)
        sidecar.replace(checksum)
    finally:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".sha256").unlink(missing_ok=True)
    log.info("sqlite.template_built", key=key)
    return built


def _build_template(path: Path, templates: ResolvedTemplates) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        for template in templates.files:
            started = time.monotonic()
            try:
                # executescript would COMMIT first; run statement by statement instead.
                # The authorizer keeps a template from attaching another file (another
                # tenant's, say), changing pragmas or ending the transaction.
                conn.set_authorizer(plain_sql_only)
                try:
                    for statement in split_statements(template.read()):
                        conn.execute(statement)
                finally:
                    conn.set_authorizer(None)
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise TemplateError(
                    f"{template.kind} template {template.path.name} "
                    f"({template.name} {template.version}) failed: {type(exc).__name__}: {exc}"
                ) from exc
            conn.execute(
                "INSERT INTO schema_info (kind, name, version, checksum, duration_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (template.kind, template.name, template.version, template.checksum,
                 int((time.monotonic() - started) * 1000)),
            )
        problems = conn.execute("PRAGMA foreign_key_check").fetchall()
        if problems:
            conn.execute("ROLLBACK")
            raise TemplateError(f"template rows break foreign keys: {problems[:3]}")
        conn.execute("COMMIT")
        conn.execute("VACUUM")
    finally:
        conn.close()


def split_statements(script: str) -> list[str]:
    """Complete SQL statements of ``script``, in order (``sqlite3.complete_statement``)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if _has_sql(pending):
                statements.append(pending.strip())
            pending = ""
    if _has_sql(pending):
        raise TemplateError(f"incomplete SQL statement at the end: {pending.strip()[:80]}")
    return statements


def _has_sql(text: str) -> bool:
    lines = (line.split("--", 1)[0].strip() for line in text.splitlines())
    return any(line and line != ";" for line in lines)


def _applied(path: Path, templates: ResolvedTemplates) -> bool:
    """True if ``path`` already holds exactly these templates; raise if it holds others."""
    with connect(path) as conn:
        if conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_info'"
        ).fetchone() is None:
            return False
        recorded = {
            (kind, name, version): checksum
            for kind, name, version, checksum in conn.execute(
                "SELECT kind, name, version, checksum FROM schema_info"
            )
        }
    for template in templates.files:
        if recorded.get((template.kind, template.name, template.version)) != template.checksum:
            raise TemplateError(
                f"{path.name} already has a schema that does not match "
                f"{template.kind} {template.name} {template.version}"
            )
    return True


def _install_template(path: Path, cache_dir: Path, templates: ResolvedTemplates) -> None:
    if path.is_file() and _applied(path, templates):
        return
    source = prebuilt_template(cache_dir, templates)
    _copy_in(source, path, compressed=False)


def _copy_in(source: Path, path: Path, *, compressed: bool) -> None:
    """Copy ``source`` (gunzipped if ``compressed``) to ``path``: private, WAL, atomic."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with contextlib.ExitStack() as stack:
            src: IO[bytes] | gzip.GzipFile = (
                stack.enter_context(gzip.open(source, "rb")) if compressed
                else stack.enter_context(source.open("rb"))
            )
            out = stack.enter_context(os.fdopen(fd, "wb"))
            shutil.copyfileobj(src, out, _COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        conn = sqlite3.connect(partial)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"copy failed its integrity check: {result}")
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        _make_private(partial)
        for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)  # they belong to whatever file was there before
        partial.replace(path)
    finally:
        for name in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            name.unlink(missing_ok=True)


# ----------------------------------------------------------------- isolation


def _isolation_checks(path: Path, others: list[Path]) -> list[CheckResult]:
    checks: list[CheckResult] = []
    with connect(path) as conn:
        integrity = conn.execute("PRAGMA quick_check").fetchone()
        checks.append(CheckResult("database_integrity", integrity == ("ok",),
                                  f"quick_check: {integrity[0] if integrity else None}"))
        journal = conn.execute("PRAGMA journal_mode").fetchone()
        checks.append(CheckResult("wal_journal", journal == ("wal",),
                                  f"journal_mode {journal[0] if journal else None}"))
        fk = conn.execute("PRAGMA foreign_keys").fetchone()
        checks.append(CheckResult("foreign_keys_enforced", fk == (1,),
                                  f"foreign_keys {fk[0] if fk else None}"))
        try:
            conn.execute("BEGIN")
            conn.execute(f"CREATE TEMP TABLE _cloner_probe AS SELECT * FROM {PROBE_TABLE} LIMIT 1")
            conn.execute(f"DELETE FROM {PROBE_TABLE} WHERE 0")
            conn.execute("ROLLBACK")
            checks.append(CheckResult("owner_reads_and_writes", True,
                                      f"read {PROBE_TABLE}, write rolled back"))
        except sqlite3.Error as exc:
            checks.append(CheckResult("owner_reads_and_writes", False, f"{exc}"))
    checks.append(_read_only_refuses_writes(path))
    checks.append(_not_shared(path, others))
    return checks


def _read_only_refuses_writes(path: Path) -> CheckResult:
    with connect(path, read_only=True) as conn:
        conn.execute(f"SELECT count(*) FROM {PROBE_TABLE}").fetchone()
        try:
            conn.execute(f"DELETE FROM {PROBE_TABLE}")
        except sqlite3.OperationalError as exc:
            return CheckResult("readonly_cannot_write", True, f"read-only open refused: {exc}")
        conn.rollback()
    return CheckResult("readonly_cannot_write", False, "a read-only open could delete rows")


def _not_shared(path: Path, others: list[Path]) -> CheckResult:
    mine = path.stat()
    same = []
    for other in others:
        with contextlib.suppress(OSError):
            st = other.stat()
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                same.append(str(other))
    shared = mine.st_nlink != 1 or bool(same)
    detail = (f"{len(others)} other tenant files checked; links {mine.st_nlink}"
              + (f"; same file as {same}" if same else ""))
    return CheckResult("file_not_shared", not shared, detail)


# ------------------------------------------------------------ backup/restore


def _backup(path: Path, dest: Path) -> BackupResult:
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    snapshot = dest.with_name(f".{dest.name}.snapshot")
    partial = dest.with_suffix(dest.suffix + ".partial")
    try:
        with connect(path, read_only=True) as src:
            target = sqlite3.connect(snapshot)
            try:
                src.backup(target)  # a consistent copy even while others write
            finally:
                target.close()
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with snapshot.open("rb") as raw, os.fdopen(fd, "wb") as out, \
                gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as zipped:
            shutil.copyfileobj(raw, zipped, _COPY_CHUNK)
        tables = _readable_tables(partial)
        digest = sha256_of(partial)
        size = partial.stat().st_size
        partial.replace(dest)
    finally:
        snapshot.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return BackupResult(dest, size, digest, BACKUP_FORMAT, tables)


def _readable_tables(archive: Path) -> int:
    """Decompress to a scratch file and count tables: proves the backup restores."""
    scratch = archive.with_name(f".{archive.name}.check")
    try:
        with gzip.open(archive, "rb") as src, scratch.open("wb") as out:
            shutil.copyfileobj(src, out, _COPY_CHUNK)
        conn = sqlite3.connect(f"file:{scratch}?mode=ro", uri=True)
        try:
            if conn.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise BackupError(f"{archive.name} does not hold a sound database")
            row = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()
        finally:
            conn.close()
    finally:
        scratch.unlink(missing_ok=True)
    tables = int(row[0]) if row else 0
    if tables == 0:
        raise BackupError(f"{archive.name} holds no tables")
    return tables


def _restore(source: Path, path: Path) -> None:
    if path.is_file():
        with connect(path) as conn:
            if conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_info'"
            ).fetchone() is not None:
                log.info("sqlite.restore_already_done", file=path.name)
                return
    _copy_in(source, path, compressed=True)


# ------------------------------------------------------------- introspection


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )]


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _row_counts(path: Path) -> dict[str, int]:
    with connect(path, read_only=True) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0])
            for table in _user_tables(conn)
        }


def _warnings(path: Path) -> list[str]:
    warnings: list[str] = []
    with connect(path, read_only=True) as conn:
        for table in _user_tables(conn):
            columns = conn.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall()
            if not any(col[5] for col in columns):
                warnings.append(f"table {table} has no primary key")
            indexed = set()
            for index in conn.execute(f"PRAGMA index_list({quote_ident(table)})").fetchall():
                first = conn.execute(f"PRAGMA index_info({quote_ident(index[1])})").fetchone()
                if first is not None:
                    indexed.add(first[2])
            pk_first = [col[1] for col in columns if col[5] == 1]
            indexed.update(pk_first)
            for fk in conn.execute(f"PRAGMA foreign_key_list({quote_ident(table)})").fetchall():
                if fk[1] == 0 and fk[3] not in indexed:  # first column of each key
                    warnings.append(f"foreign key {table}.{fk[3]} has no index")
            warnings += [f"column {table}.{col[1]} looks like a plaintext secret"
                         for col in columns if looks_like_plaintext_secret(str(col[1]))]
    return warnings
