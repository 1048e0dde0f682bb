"""PostgreSQL engine (asyncpg): one server per tenant, one database, three roles.

The tenant container starts with a throw-away bootstrap superuser password
(the official image's ``POSTGRES_PASSWORD``). The first thing ``wait_ready``
does once the server answers is to replace it with the real superuser secret,
sent as a SCRAM verifier, so the value visible in ``docker inspect`` is dead
before any tenant credential exists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from cloner import constants
from cloner.backups import sha256_of
from cloner.catalog import ResolvedTemplates
from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.domain import (
    CheckResult,
    Credentials,
    Endpoint,
    Engine,
    RoleCredential,
    sql_identifier,
)
from cloner.engines import postgres_migrations as pg_migrations
from cloner.engines.base import (
    BackupResult,
    ContainerDefaults,
    Neighbour,
    Placement,
    SessionLimits,
    TenantTarget,
    fenced_logins,
)
from cloner.engines.checks import (
    NeighbourFinding,
    login_usernames,
    looks_like_plaintext_secret,
    neighbours_refuse,
    pg_verifier_accepts,
    throwaway_password,
)
from cloner.engines.pooling import PoolLike, PoolOptions
from cloner.errors import BackupError, NotReady, TemplateError
from cloner.logging import get_logger
from cloner.runtime.base import ContainerSpec, Runtime
from cloner.secrets import TENANT_ROLES, scram_sha256_verifier

log = get_logger(__name__)

PGDATA = "/var/lib/postgresql/data"
#: Where the server puts its local socket (a private tmpfs in the container).
SOCKET_DIR = "/var/run/postgresql"
POSTGRES_UID_NUM = 999
POSTGRES_UID = f"{POSTGRES_UID_NUM}:{POSTGRES_UID_NUM}"
CONNECT_TIMEOUT_S = 5.0
#: How long fencing waits for terminated application sessions to be gone.
FENCE_WAIT_S = 10.0
PROBE_TABLE = "system_settings"  # every root template version ships it (catalog contract)
_AUTH_ERRORS = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
#: The search path of every session cloner opens. Sent in the startup packet, it
#: outranks ``ALTER DATABASE/ROLE … SET search_path``: no tenant object can shadow a
#: built-in (pg_temp last: a temp object is only ever reached by its qualified name).
PINNED_SEARCH_PATH = "pg_catalog, pg_temp"
#: Catalog relations and functions cloner's SQL names (always as ``pg_catalog.<name>``).
#: ``no_catalog_shadowing`` fails when a tenant schema holds anything by these names;
#: tests/unit/test_postgres_pinning.py keeps the list in step with the SQL.
CATALOG_NAMES = frozenset({
    "aclexplode", "array_length", "col_description", "count", "current_setting",
    "format_type", "md5", "obj_description", "pg_attrdef", "pg_attribute", "pg_auth_members",
    "pg_authid", "pg_class", "pg_constraint", "pg_database", "pg_db_role_setting", "pg_depend",
    "pg_enum", "pg_get_constraintdef", "pg_get_expr", "pg_get_function_identity_arguments",
    "pg_get_functiondef", "pg_get_triggerdef", "pg_get_viewdef", "pg_hba_file_rules",
    "pg_index", "pg_indexes", "pg_namespace", "pg_operator", "pg_proc", "pg_read_file",
    "pg_roles", "pg_sequences", "pg_tables", "pg_trigger", "pg_type", "to_regclass",
    "pg_stat_activity", "pg_terminate_backend", "pg_backend_pid",
})
#: Objects with a lower oid came with the server (``FirstNormalObjectId``).
FIRST_NORMAL_OID = 16384


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (names are derived from validated ids, quoted anyway)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresEngine:
    """PostgreSQL 15 tenants."""

    engine = Engine.POSTGRES
    placement = Placement.CONTAINER
    roles: tuple[str, ...] = TENANT_ROLES
    superuser = "postgres"
    #: 1: the database belongs to the superuser (the owner role owns schema public only)
    #: and tenant database/role settings are stripped (audit H1).
    hardening_level = 1
    container_port = 5432
    transient_errors: tuple[type[BaseException], ...] = (
        asyncpg.CannotConnectNowError, asyncpg.InterfaceError, asyncpg.TooManyConnectionsError,
    )
    #: What asyncpg raises opening a pool or a pooled connection the server refuses.
    pool_connect_errors: tuple[type[BaseException], ...] = (
        asyncpg.PostgresError, asyncpg.InterfaceError,
    )

    def database_name(self, tenant_id: str) -> str:
        """``acme-corp`` → ``acme_corp``."""
        return sql_identifier(tenant_id)

    def container_spec(
        self, tenant_id: str, credentials: Credentials, labels: dict[str, str],
        defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """Non-root, read-only root fs, no capabilities; data on the tenant volume."""
        return defaults.tenant_spec(
            tenant_id, labels, uid=POSTGRES_UID_NUM, port=self.container_port,
            volume_mount=PGDATA,
            env={
                "POSTGRES_PASSWORD": credentials.bootstrap_password,
                "PGDATA": PGDATA,
            },
            command=_server_command(defaults),
            # Owned by the engine uid explicitly: without uid/gid Docker mounts the
            # tmpfs root-owned and postgres cannot create its socket lock file.
            private_dirs={"/var/run/postgresql": "0700"},
        )

    def volume_dump_spec(
        self, tenant_id: str, name: str, labels: dict[str, str], defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """The tenant container's shape on the kept volume, listening on its socket only.

        No password in the environment: the volume holds an initialised cluster,
        so the entrypoint starts it as it is (and refuses an empty volume).
        """
        spec = defaults.tenant_spec(
            tenant_id, labels, uid=POSTGRES_UID_NUM, port=self.container_port,
            volume_mount=PGDATA, env={"PGDATA": PGDATA},
            command=(*_server_command(defaults), "-c", "listen_addresses="),
            private_dirs={"/var/run/postgresql": "0700"},
        )
        return dataclasses.replace(spec, name=name)

    async def local_ready(self, runtime: Runtime, container: str) -> bool:
        """``pg_isready`` on the local socket (false while crash recovery replays WAL)."""
        code, _ = await runtime.exec(
            container, ["pg_isready", "-q", "-h", SOCKET_DIR], user=POSTGRES_UID
        )
        return code == 0

    async def dump_local(
        self, runtime: Runtime, container: str, tenant_id: str, dest: Path,
    ) -> BackupResult:
        """The same ``pg_dump -Fc`` as ``backup``, as the superuser over the local socket."""
        return await self._dump(
            runtime, container, tenant_id, superuser=self.superuser,
            database=self.database_name(tenant_id), dest=dest,
        )

    # -------------------------------------------------------------- connecting

    @staticmethod
    async def _connect(
        endpoint: Endpoint, user: str, password: str, database: str,
        timeout_s: float = CONNECT_TIMEOUT_S, *, limits: SessionLimits | None = None,
    ) -> asyncpg.Connection:
        """A session pinned at connect time (``pinned_settings``), whoever logs in."""
        return await asyncpg.connect(
            host=endpoint.host, port=endpoint.port, user=user, password=password,
            database=database, timeout=timeout_s, ssl=False,
            server_settings=pinned_settings(limits or SessionLimits()),
        )

    @asynccontextmanager
    async def _session(
        self, target: TenantTarget, role: str | None = None, database: str | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        cred = target.credentials.superuser if role is None else target.credentials.roles[role]
        await target.vouch()
        conn = await self._connect(
            target.endpoint, cred.username, cred.password, database or target.database,
            limits=target.session,
        )
        try:
            yield conn
        finally:
            await conn.close(timeout=5)

    async def wait_ready(self, target: TenantTarget, timeout_s: float) -> None:
        """Connect + ``SELECT 1`` with bounded backoff; rotate the bootstrap password."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        last_error: BaseException | None = None
        superuser = target.credentials.superuser
        while time.monotonic() < deadline:
            for password, bootstrap in ((superuser.password, False),
                                        (target.credentials.bootstrap_password, True)):
                try:
                    await target.vouch()
                    conn = await self._connect(
                        target.endpoint, superuser.username, password, "postgres",
                        timeout_s=min(CONNECT_TIMEOUT_S, max(deadline - time.monotonic(), 0.1)),
                        limits=target.session,
                    )
                except _AUTH_ERRORS as exc:
                    last_error = exc
                    continue
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        TimeoutError, NotReady) as exc:  # NotReady: endpoint not vouched for
                    last_error = exc
                    break
                try:
                    await conn.fetchval("SELECT 1")
                    if bootstrap:
                        await self._set_password(conn, superuser.username, superuser.password)
                    return
                finally:
                    await conn.close(timeout=5)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise NotReady(
            f"postgres at {target.endpoint.host}:{target.endpoint.port} did not answer "
            f"within {timeout_s:.0f}s; last error: {type(last_error).__name__}: {last_error}"
        )

    async def probe(self, target: TenantTarget, timeout_s: float) -> float:
        """Connect as the app role to the tenant database and ``SELECT 1``; seconds taken.

        The app role is what applications use, so this fails exactly when they
        would: server down, database gone, or the app login broken.
        """
        started = time.monotonic()
        app = target.credentials.roles["app"]
        try:
            async with asyncio.timeout(timeout_s):
                await target.vouch()
                conn = await self._connect(
                    target.endpoint, app.username, app.password, target.database,
                    timeout_s=timeout_s, limits=target.session,
                )
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await conn.close(timeout=max(timeout_s, 1.0))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise NotReady(
                f"postgres at {target.endpoint.host}:{target.endpoint.port} failed the health "
                f"probe as {app.username}: {type(exc).__name__}: {exc}"
            ) from exc
        return time.monotonic() - started

    @staticmethod
    async def _set_password(conn: asyncpg.Connection, role: str, password: str) -> None:
        # A verifier, not the password, goes over the wire; and the statement is kept
        # out of the server log even if it fails.
        verifier = scram_sha256_verifier(password)
        async with conn.transaction():
            await conn.execute("SET LOCAL log_statement = 'none'")
            await conn.execute("SET LOCAL log_min_error_statement = 'panic'")
            await conn.execute(f"ALTER ROLE {quote_ident(role)} PASSWORD {_literal(verifier)}")

    # --------------------------------------------------------------- template

    async def _ensure_database(self, target: TenantTarget) -> None:
        """The owner role (no login yet), the tenant database, and its schema the owner owns.

        The database itself belongs to the superuser: its owner could ``ALTER
        DATABASE … SET`` defaults for every session in it, cloner's included,
        and create schemas; the tenant's owner role owns schema ``public`` only.
        """
        db = target.database
        owner = target.credentials.grantee("owner")
        async with self._session(target, database="postgres") as conn:
            if not await conn.fetchval(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", owner
            ):
                await conn.execute(
                    f"CREATE ROLE {quote_ident(owner)} NOLOGIN NOSUPERUSER NOCREATEDB "
                    "NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                )
            if not await conn.fetchval(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", db
            ):
                await conn.execute(f"CREATE DATABASE {quote_ident(db)}")
        async with self._session(target) as conn:
            await conn.execute(f"ALTER SCHEMA public OWNER TO {quote_ident(owner)}")

    async def apply_templates(self, target: TenantTarget, templates: ResolvedTemplates) -> None:
        """Create the database and owner role, then root + overlay in one transaction."""
        db = target.database
        owner = target.credentials.grantee("owner")
        await self._ensure_database(target)
        async with self._session(target) as conn, conn.transaction():
            # The tenant's schema is read and written as its owner: a view or trigger
            # the tenant put there never runs with superuser rights.
            await conn.execute(f"SET LOCAL ROLE {quote_ident(owner)}")
            if await self._applied(conn, templates, db):
                return
            # Template scripts may run long (seed data): no per-statement limit here.
            await conn.execute("SET LOCAL statement_timeout = 0")
            await conn.execute("SET LOCAL search_path = public")
            for template in templates.files:
                started = time.monotonic()
                try:
                    await conn.execute(template.read())
                except asyncpg.PostgresError as exc:
                    raise TemplateError(
                        f"{template.kind} template {template.path.name} "
                        f"({template.name} {template.version}) failed: "
                        f"{type(exc).__name__}: {exc}".replace("\n", " ")
                    ) from exc
                await conn.execute(
                    "INSERT INTO public.schema_info "
                    "(kind, name, version, checksum, duration_ms) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    template.kind, template.name, template.version, template.checksum,
                    int((time.monotonic() - started) * 1000),
                )

    @staticmethod
    async def _applied(
        conn: asyncpg.Connection, templates: ResolvedTemplates, database: str
    ) -> bool:
        if not await conn.fetchval(
            "SELECT pg_catalog.to_regclass('public.schema_info') IS NOT NULL"
        ):
            return False
        rows = await conn.fetch("SELECT kind, name, version, checksum FROM public.schema_info")
        recorded = {(r["kind"], r["name"], r["version"]): r["checksum"].strip() for r in rows}
        for template in templates.files:
            checksum = recorded.get((template.kind, template.name, template.version))
            if checksum != template.checksum:
                raise TemplateError(
                    f"database {database} already has a schema that does not "
                    f"match {template.kind} {template.name} {template.version}"
                )
        return True

    # ------------------------------------------------------------------- rbac

    async def apply_rbac(self, target: TenantTarget, connection_limit: int) -> None:
        """Three login roles with SCRAM verifiers; PUBLIC stripped of everything.

        Also what makes an older tenant match today's shape on a re-run: the
        database moves to the superuser (the owner role keeps schema ``public``),
        and every session default on the database or the tenant's roles other
        than cloner's own is removed. Privileges go to each role's privilege role
        (``Credentials.grantee``): before any rotation that is the login itself;
        after one, the privilege role is NOLOGIN and the login inherits it
        (``create_login``).
        """
        db = quote_ident(target.database)
        creds = target.credentials
        owner, app, ro = (quote_ident(creds.grantee(r)) for r in ("owner", "app", "readonly"))
        superuser = quote_ident(creds.superuser.username)
        usernames = sorted({creds.roles[name].username for name in ("owner", "app", "readonly")}
                           | {creds.grantee(name) for name in ("owner", "app", "readonly")})
        async with self._session(target) as conn, conn.transaction():
            await conn.execute("SET LOCAL log_statement = 'none'")
            await conn.execute("SET LOCAL log_min_error_statement = 'panic'")
            stale = await conn.fetch(
                """SELECT d.datname, r.rolname
                     FROM pg_catalog.pg_db_role_setting s
                     LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
                     LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
                    WHERE r.rolname = ANY($1::text[])
                       OR (s.setrole = 0 AND d.datname = $2)""",
                usernames, target.database,
            )
            for row in stale:
                if row["rolname"] is None:
                    await conn.execute(f"ALTER DATABASE {quote_ident(row['datname'])} RESET ALL")
                    continue
                scope = "" if row["datname"] is None else (
                    f" IN DATABASE {quote_ident(row['datname'])}")
                await conn.execute(f"ALTER ROLE {quote_ident(row['rolname'])}{scope} RESET ALL")
            # Then cloner's own settings: search_path=public, and role=<privilege role>
            # on a rotated login.
            for name in ("owner", "app", "readonly"):
                grantee, login = creds.grantee(name), creds.roles[name]
                if grantee != login.username:
                    await self._set_role(conn, grantee, None, connection_limit, inherit=False)
                await self._set_login(conn, grantee, login, connection_limit)
            await conn.execute(f"""
                ALTER DATABASE {db} OWNER TO {superuser};
                REVOKE ALL ON DATABASE {db} FROM PUBLIC, {owner}, {app}, {ro};
                REVOKE ALL ON DATABASE postgres FROM PUBLIC;
                REVOKE ALL ON DATABASE template1 FROM PUBLIC;
                GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {owner};
                GRANT CONNECT ON DATABASE {db} TO {app}, {ro};
                REVOKE ALL ON SCHEMA public FROM PUBLIC;
                GRANT USAGE ON SCHEMA public TO {app}, {ro};
                GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app};
                GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app};
                GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro};
                GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {ro};
                REVOKE INSERT, UPDATE, DELETE ON TABLE public.schema_info FROM {app};
                REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
                GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {app}, {ro};
                ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
                ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                    GRANT USAGE, SELECT ON SEQUENCES TO {app};
                ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                    GRANT SELECT ON TABLES TO {ro};
                ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                    GRANT SELECT ON SEQUENCES TO {ro};
                ALTER DEFAULT PRIVILEGES FOR ROLE {owner} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
                ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                    GRANT EXECUTE ON FUNCTIONS TO {app}, {ro};
            """)

    @staticmethod
    async def _set_role(
        conn: asyncpg.Connection, name: str, password: str | None, connection_limit: int,
        *, inherit: bool,
    ) -> None:
        """Create or reset one tenant role: never privileged; LOGIN only with a password."""
        exists = await conn.fetchval("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", name)
        login = (
            f"LOGIN PASSWORD {_literal(scram_sha256_verifier(password))}" if password is not None
            else "NOLOGIN PASSWORD NULL"
        )
        await conn.execute(
            f"{'ALTER' if exists else 'CREATE'} ROLE {quote_ident(name)} {login} NOSUPERUSER "
            f"NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
            f"{'INHERIT' if inherit else 'NOINHERIT'} CONNECTION LIMIT {int(connection_limit)}"
        )
        await conn.execute(f"ALTER ROLE {quote_ident(name)} SET search_path = public")

    async def _set_login(
        self, conn: asyncpg.Connection, grantee: str, login: RoleCredential,
        connection_limit: int,
    ) -> None:
        """``login`` as a way in to ``grantee``'s privileges (itself, or a member of it).

        A separate login inherits its privilege role and starts every session as
        it (role setting ``role``), so what it creates belongs to the privilege
        role, never to a login that a later rotation removes.
        """
        if login.username == grantee:
            await self._set_role(conn, grantee, login.password, connection_limit, inherit=False)
            return
        await self._set_role(conn, login.username, login.password, connection_limit, inherit=True)
        await conn.execute(f"GRANT {quote_ident(grantee)} TO {quote_ident(login.username)}")
        await conn.execute(
            f"ALTER ROLE {quote_ident(login.username)} SET role = {_literal(grantee)}"
        )

    # ---------------------------------------------------------------- rotation
    # Credential rotation (cloner.rotation): PostgreSQL has no dual passwords, so a
    # second login role inheriting the same privilege role carries the new password.

    async def create_login(
        self, target: TenantTarget, role: str, login: RoleCredential, connection_limit: int
    ) -> None:
        """Create (or reset) ``login`` for ``role``; the current login keeps working."""
        grantee = target.credentials.grantee(role)
        async with self._session(target) as conn, conn.transaction():
            await conn.execute("SET LOCAL log_statement = 'none'")
            await conn.execute("SET LOCAL log_min_error_statement = 'panic'")
            await self._set_login(conn, grantee, login, connection_limit)

    async def retire_login(self, target: TenantTarget, role: str, login: RoleCredential) -> None:
        """Make ``login`` unusable: no new sessions, open ones ended, the role dropped.

        The privilege role itself (the login before the first rotation) is kept,
        NOLOGIN with no password: it owns the tenant's objects and holds its
        grants. A separate login's objects (a session that reset its role) go to
        the privilege role before it is dropped. Idempotent.
        """
        grantee = target.credentials.grantee(role)
        name = quote_ident(login.username)
        async with self._session(target, database="postgres") as conn:
            if not await conn.fetchval(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", login.username
            ):
                return
            await conn.execute(f"ALTER ROLE {name} NOLOGIN PASSWORD NULL")
            await conn.execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
                "WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()", login.username,
            )
        if login.username == grantee:
            return
        for database in (target.database, "postgres"):
            async with self._session(target, database=database) as conn:
                await conn.execute(f"REASSIGN OWNED BY {name} TO {quote_ident(grantee)}")
                await conn.execute(f"DROP OWNED BY {name}")
        async with self._session(target, database="postgres") as conn:
            await conn.execute(f"DROP ROLE IF EXISTS {name}")

    # -------------------------------------------------------------- isolation

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        """Run every engine check with the tenant's real credentials.

        The tamper checks come first: they read the catalog in a pinned session
        and say whether anything in the tenant's reach could steer cloner's.
        """
        return [
            await self._check_session_settings(target),
            await self._check_catalog_shadowing(target),
            await self._check_app_read_write(target),
            await self._check_readonly(target),
            await self._check_roles_unprivileged(target),
            await self._check_app_cannot_escalate(target),
            await self._check_public_revoked(target),
            await self._check_neighbours_refuse(target, neighbours),
        ]

    async def _check_app_read_write(self, target: TenantTarget) -> CheckResult:
        name = "app_reads_and_writes_own_database"
        try:
            async with self._session(target, "app") as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    await conn.execute(
                        f"INSERT INTO public.{PROBE_TABLE} (key, value) VALUES ($1, $2::jsonb)",
                        "cloner_isolation_probe", "true",
                    )
                    seen = await conn.fetchval(
                        f"SELECT value FROM public.{PROBE_TABLE} WHERE key = $1",
                        "cloner_isolation_probe",
                    )
                finally:
                    await tx.rollback()
        except (asyncpg.PostgresError, OSError) as exc:
            return CheckResult(name, False, f"app could not read/write: {type(exc).__name__}")
        return CheckResult(name, seen is not None, f"insert+select on {PROBE_TABLE} as app")

    async def _check_readonly(self, target: TenantTarget) -> CheckResult:
        name = "readonly_reads_cannot_write"
        try:
            async with self._session(target, "readonly") as conn:
                rows = await conn.fetchval(f"SELECT pg_catalog.count(*) FROM public.{PROBE_TABLE}")
                try:
                    await conn.execute(
                        f"INSERT INTO public.{PROBE_TABLE} (key, value) VALUES ($1, $2::jsonb)",
                        "cloner_readonly_probe", "true",
                    )
                except asyncpg.InsufficientPrivilegeError:
                    return CheckResult(
                        name, True, f"read {rows} rows; insert refused: permission denied"
                    )
                return CheckResult(name, False, "readonly role could INSERT")
        except (asyncpg.PostgresError, OSError) as exc:
            return CheckResult(name, False, f"readonly check failed: {type(exc).__name__}")

    async def _check_roles_unprivileged(self, target: TenantTarget) -> CheckResult:
        name = "roles_not_privileged"
        creds = target.credentials
        superuser = creds.superuser.username
        logins = {r: c.username for r, c in creds.roles.items()}
        grantees = {r: creds.grantee(r) for r in creds.roles}
        usernames = sorted(set(logins.values()) | set(grantees.values()))
        # The one membership a tenant role may have: a rotated login in its own privilege role.
        allowed = {(logins[r], grantees[r]) for r in logins if logins[r] != grantees[r]}
        async with self._session(target) as conn:
            rows = await conn.fetch(
                """SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb,
                          r.rolreplication, r.rolbypassrls, r.rolcanlogin
                     FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($1::text[])""",
                usernames,
            )
            memberships = await conn.fetch(
                """SELECT m.rolname AS member, g.rolname AS granted
                     FROM pg_catalog.pg_auth_members a
                     JOIN pg_catalog.pg_roles m ON m.oid = a.member
                     JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
                    WHERE m.rolname = ANY($1::text[])""",
                usernames,
            )
            others = await conn.fetch(
                """SELECT rolname FROM pg_catalog.pg_roles
                    WHERE (rolsuper OR rolbypassrls OR rolreplication) AND rolname <> $1
                    ORDER BY 1""",
                superuser,
            )
        bad = [
            r["rolname"] for r in rows
            if r["rolsuper"] or r["rolcreaterole"] or r["rolcreatedb"] or r["rolreplication"]
            or r["rolbypassrls"]
        ]
        bad += [f"{m['member']} member of {m['granted']}" for m in memberships
                if (m["member"], m["granted"]) not in allowed]
        separate = set(grantees.values()) - set(logins.values())
        bad += [f"{r['rolname']} (privilege role) can log in" for r in rows
                if r["rolname"] in separate and r["rolcanlogin"]]
        if len(rows) != len(usernames):
            return CheckResult(name, False, f"expected {len(usernames)} roles, found {len(rows)}")
        if bad:
            return CheckResult(name, False, f"privileged roles: {', '.join(bad)}")
        if others:
            return CheckResult(
                name, False,
                f"roles other than {superuser} with superuser/replication/bypassrls: "
                f"{', '.join(r['rolname'] for r in others)}",
            )
        return CheckResult(
            name, True,
            "owner/app/readonly: no superuser, createrole, createdb, replication, "
            "bypassrls or role memberships"
            + (" beyond each rotated login in its own NOLOGIN privilege role" if allowed else "")
            + f"; {superuser} is the only superuser",
        )

    async def _check_session_settings(self, target: TenantTarget) -> CheckResult:
        """``no_tenant_session_settings``: nothing a tenant set applies to a session.

        Fails on any ``pg_db_role_setting`` row but cloner's own (``search_path =
        public`` on a non-superuser role, server-wide; plus ``role = <its privilege
        role>`` on a login a credential rotation created), and on a database not
        owned by the superuser. The latter is only reported while the tenant's
        recorded hardening level is below the engine's (``target.legacy_hardening``):
        it was provisioned before the owner role stopped owning its database and
        keeps it until its ``harden`` request re-runs ``apply_rbac``. Once hardened,
        the same ownership fails (the owner could ``ALTER DATABASE … SET`` again).
        """
        name = "no_tenant_session_settings"
        superuser = target.credentials.superuser.username
        async with self._session(target) as conn:
            rows = await conn.fetch(
                """SELECT COALESCE(d.datname, '*') AS datname, COALESCE(r.rolname, '*') AS rolname,
                          s.setconfig
                     FROM pg_catalog.pg_db_role_setting s
                     LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
                     LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
                    WHERE NOT (s.setdatabase = 0 AND r.rolname IS NOT NULL AND NOT r.rolsuper
                               AND s.setconfig = ARRAY['search_path=public'])
                    ORDER BY 1, 2"""
            )
            owner = await conn.fetchval(
                """SELECT o.rolname FROM pg_catalog.pg_database d
                     JOIN pg_catalog.pg_roles o ON o.oid = d.datdba WHERE d.datname = $1""",
                target.database,
            )
        # A rotated login also starts its sessions as its privilege role (``_set_login``).
        creds = target.credentials
        rotated = {
            login.username: {"search_path=public", f"role={creds.grantee(role)}"}
            for role, login in creds.roles.items() if login.username != creds.grantee(role)
        }
        rows = [r for r in rows if not (
            r["datname"] == "*" and set(r["setconfig"]) == rotated.get(r["rolname"]))]
        ownership = f"database {target.database} owned by {owner}"
        foreign_owner = owner != superuser and not target.legacy_hardening
        if foreign_owner:
            ownership += f", not {superuser}"
        elif owner != superuser:
            ownership += (f" (tolerated until its harden request moves it to {superuser}: "
                          "hardened below the engine's level)")
        if rows or foreign_owner:
            settings = "".join(
                f"{', '.join(r['setconfig'])} for role {r['rolname']} in database "
                f"{r['datname']}; " for r in rows
            )
            return CheckResult(name, False, f"{settings}{ownership}")
        return CheckResult(
            name, True,
            f"no database or role settings besides cloner's search_path=public on tenant "
            f"roles; {ownership}",
        )

    async def _check_catalog_shadowing(self, target: TenantTarget) -> CheckResult:
        """``no_catalog_shadowing``: no tenant object could stand in for a built-in.

        Looks at every schema but the system ones for relations or functions
        named like the catalog objects cloner uses (``CATALOG_NAMES``) and for
        operators over built-in types only, owned by anyone but a superuser
        (objects the server's own extensions installed are a superuser's).
        cloner's sessions are pinned and qualified, so such objects could not
        capture them: the check reports the attempt.
        """
        name = "no_catalog_shadowing"
        async with self._session(target) as conn:
            rows = await conn.fetch(
                """WITH tenant_ns AS (
                       SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                          AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)')
                   SELECT 'relation' AS kind, ns.nspname || '.' || c.relname AS object
                     FROM pg_catalog.pg_class c
                     JOIN tenant_ns ns ON ns.oid = c.relnamespace
                     JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
                    WHERE c.relname = ANY($1::text[]) AND NOT o.rolsuper
                   UNION ALL
                   SELECT 'function', ns.nspname || '.' || p.proname
                     FROM pg_catalog.pg_proc p
                     JOIN tenant_ns ns ON ns.oid = p.pronamespace
                     JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
                    WHERE p.proname = ANY($1::text[]) AND NOT o.rolsuper
                   UNION ALL
                   SELECT 'operator', ns.nspname || '.' || op.oprname
                     FROM pg_catalog.pg_operator op
                     JOIN tenant_ns ns ON ns.oid = op.oprnamespace
                     JOIN pg_catalog.pg_roles o ON o.oid = op.oprowner
                    WHERE op.oprleft::pg_catalog.int8 < $2
                      AND op.oprright::pg_catalog.int8 < $2 AND NOT o.rolsuper
                   ORDER BY 1, 2""",
                sorted(CATALOG_NAMES), FIRST_NORMAL_OID,
            )
        if rows:
            found = ", ".join(f"{r['kind']} {r['object']}" for r in rows)
            return CheckResult(name, False, f"tenant objects shadow catalog names: {found}")
        return CheckResult(
            name, True,
            f"no tenant relation or function named like the {len(CATALOG_NAMES)} catalog "
            "objects cloner uses, no tenant operator over built-in types",
        )

    async def _check_app_cannot_escalate(self, target: TenantTarget) -> CheckResult:
        name = "app_cannot_escalate"
        attempts = {
            "create role": "CREATE ROLE cloner_escalation_probe",
            "create database": "CREATE DATABASE cloner_escalation_probe",
            "read pg_authid": "SELECT pg_catalog.count(*) FROM pg_catalog.pg_authid",
            "read server files": "SELECT pg_catalog.pg_read_file('/etc/passwd')",
            "create in public": "CREATE TABLE public.cloner_escalation_probe (id int)",
        }
        allowed = []
        async with self._session(target, "app") as conn:
            for label, statement in attempts.items():
                try:
                    await conn.execute(statement)
                except asyncpg.InsufficientPrivilegeError:
                    continue
                except asyncpg.PostgresError as exc:
                    allowed.append(f"{label} ({type(exc).__name__})")
                    continue
                allowed.append(label)
        if allowed:
            return CheckResult(name, False, f"app was not refused: {', '.join(allowed)}")
        return CheckResult(name, True, f"refused: {', '.join(attempts)}")

    async def _check_public_revoked(self, target: TenantTarget) -> CheckResult:
        name = "public_has_no_privileges"
        async with self._session(target) as conn:
            dbs = await conn.fetch(
                """SELECT d.datname,
                          d.datacl IS NULL AS default_acl,
                          EXISTS (SELECT 1 FROM pg_catalog.aclexplode(d.datacl) a
                                   WHERE a.grantee = 0) AS public_grant
                     FROM pg_catalog.pg_database d WHERE d.datname = ANY($1::text[])""",
                [target.database, "postgres", "template1"],
            )
            schema = await conn.fetchrow(
                """SELECT n.nspacl IS NULL AS default_acl,
                          EXISTS (SELECT 1 FROM pg_catalog.aclexplode(n.nspacl) a
                                   WHERE a.grantee = 0) AS public_grant
                     FROM pg_catalog.pg_namespace n WHERE n.nspname = 'public'"""
            )
        problems = [r["datname"] for r in dbs if r["default_acl"] or r["public_grant"]]
        if schema is None or schema["default_acl"] or schema["public_grant"]:
            problems.append("schema public")
        if problems:
            return CheckResult(name, False, f"PUBLIC still has privileges on {problems}")
        return CheckResult(
            name, True, f"no PUBLIC grants on database {target.database}, postgres, "
            "template1 or schema public",
        )

    async def _check_neighbours_refuse(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> CheckResult:
        return await neighbours_refuse(
            target, neighbours, self._ask_neighbour,
            auth="host logins scram-sha-256 only, every stored password a SCRAM verifier",
        )

    async def _ask_neighbour(self, target: TenantTarget, neighbour: Neighbour) -> NeighbourFinding:
        """The neighbour's own superuser session judges this tenant's credentials (see checks)."""
        theirs = neighbour.target
        if theirs is None:
            return NeighbourFinding(unreachable="no connection target")
        names = login_usernames(target)
        mine = target.credentials.superuser
        try:
            async with self._session(theirs, database="postgres") as conn:
                present = await conn.fetch(
                    "SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($1::text[])",
                    names,
                )
                verifier = await conn.fetchval(
                    "SELECT a.rolpassword FROM pg_catalog.pg_authid a WHERE a.rolname = $1",
                    mine.username,
                )
                encryption = await conn.fetchval(
                    "SELECT pg_catalog.current_setting('password_encryption')"
                )
                hba = await conn.fetch(
                    "SELECT h.line_number, h.type, h.address, h.netmask, h.auth_method, h.error "
                    "FROM pg_catalog.pg_hba_file_rules h"
                )
                weak = await conn.fetch(
                    "SELECT a.rolname FROM pg_catalog.pg_authid a "
                    "WHERE a.rolpassword IS NOT NULL AND a.rolpassword NOT LIKE 'SCRAM-SHA-256$%'"
                )
        except NotReady as exc:  # not vouched for any more (EndpointNotVouched), or down
            return NeighbourFinding(unreachable=exc.message)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return NeighbourFinding(unreachable=type(exc).__name__)
        problems = [f"has a role named {r['rolname']}" for r in present]
        accepted = await pg_verifier_accepts(verifier, mine.password)
        if accepted:
            problems.append(accepted)
        if encryption != "scram-sha-256":
            problems.append(f"password_encryption is {encryption}")
        problems += _weak_hba_rules(hba)
        problems += [f"role {r['rolname']} has a non-SCRAM password" for r in weak]
        refused = 0
        # Throwaway passwords are worthless to whoever gets them: one look at the
        # runtime only keeps the verdict about the neighbour's own server.
        try:
            await theirs.vouch()
        except NotReady as exc:
            return NeighbourFinding(tuple(problems), unreachable=exc.message)
        for name in names:
            try:
                conn = await self._connect(
                    theirs.endpoint, name, throwaway_password(), neighbour.database, timeout_s=3
                )
            except _AUTH_ERRORS:
                refused += 1
                continue
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                return NeighbourFinding(tuple(problems), unreachable=type(exc).__name__,
                                        throwaway_refused=refused)
            await conn.close(timeout=5)
            problems.append(f"accepted a login as {name} with a throwaway password")
        return NeighbourFinding(tuple(problems), throwaway_refused=refused)

    # ---------------------------------------------------------------- backups

    async def backup(
        self, runtime: Runtime, target: TenantTarget, dest: Path, *,
        lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,
    ) -> BackupResult:
        """``pg_dump -Fc`` inside the tenant container, streamed to ``dest``, checksummed."""
        if target.container_name is None:
            raise BackupError("postgres backup needs the tenant container")
        return await self._dump(
            runtime, target.container_name, target.tenant_id,
            superuser=target.credentials.superuser.username, database=target.database, dest=dest,
            lock_wait_s=lock_wait_s,
        )

    async def _dump(
        self, runtime: Runtime, container: str, tenant_id: str, *, superuser: str,
        database: str, dest: Path, lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,
    ) -> BackupResult:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = dest.with_suffix(dest.suffix + ".partial")
        try:
            size = await runtime.exec_to_file(
                container,
                ["pg_dump", "-U", superuser, "-Fc", "-Z", "6",
                 # A tenant holding a lock on its tables fails its own backup, in bounded
                 # time, instead of pinning the worker (pg_dump waits forever by default).
                 f"--lock-wait-timeout={max(1, round(lock_wait_s * 1000))}",
                 "--no-owner", "--no-privileges", "-d", database],
                partial, user=POSTGRES_UID,
            )
        except Exception as exc:
            partial.unlink(missing_ok=True)
            text = str(exc)
            if "lock" in text and ("timeout" in text or "could not obtain" in text):
                raise BackupError(
                    f"pg_dump of {tenant_id} gave up after waiting {lock_wait_s:g}s for "
                    "a table lock held in the tenant database (an open transaction holding "
                    f"LOCK TABLE?): {text[-300:]}"
                ) from exc
            raise BackupError(f"pg_dump of {tenant_id} failed: {exc}") from exc
        if size < 5 or await asyncio.to_thread(_magic, partial) != b"PGDMP":
            partial.unlink(missing_ok=True)
            raise BackupError(f"pg_dump of {tenant_id} produced no valid archive")
        entries = await self._restorable_entries(runtime, container, partial)
        digest = await asyncio.to_thread(sha256_of, partial)
        partial.chmod(0o600)
        partial.replace(dest)
        return BackupResult(dest, size, digest, "pg_dump-custom", entries)

    @staticmethod
    async def _restorable_entries(runtime: Runtime, container: str, archive: Path) -> int:
        """Read the archive back with ``pg_restore --list``: a backup nobody can restore
        is no backup. Returns the number of table-data entries it lists."""
        # `pg_restore --list` stops reading once it has the table of contents (the start
        # of the archive); the rest is drained so that uploading a large archive through
        # stdin does not fail with a broken pipe. The exit code stays pg_restore's.
        code, listing = await runtime.exec_with_stdin(
            container,
            ["sh", "-c", "pg_restore --list; rc=$?; cat >/dev/null; exit $rc"],
            archive, user=POSTGRES_UID,
        )
        entries = sum(1 for line in listing.splitlines() if " TABLE DATA " in line)
        if code != 0 or entries == 0:
            await asyncio.to_thread(archive.unlink, missing_ok=True)
            raise BackupError(
                f"archive is not restorable: pg_restore --list exited {code}, "
                f"{entries} table-data entries"
            )
        return entries

    async def restore(self, runtime: Runtime, target: TenantTarget, source: Path) -> None:
        """``pg_restore`` inside the container, fed through stdin; owned by the owner role.

        The database and owner role are created first when missing (a restore
        into a fresh server). A database whose schema already holds tables is
        left alone: ``--single-transaction`` makes a restore all or nothing, so
        tables there mean an earlier attempt of the same request finished it.
        """
        if target.container_name is None:
            raise BackupError("postgres restore needs the tenant container")
        await self._ensure_database(target)
        async with self._session(target) as conn:
            restored = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r')"
            )
        if restored:
            log.info("postgres.restore_already_done", tenant_id=target.tenant_id)
            return
        owner = target.credentials.grantee("owner")
        code, output = await runtime.exec_with_stdin(
            target.container_name,
            ["pg_restore", "-U", target.credentials.superuser.username, "--no-owner",
             "--no-privileges", "--role", owner, "--single-transaction",
             "--exit-on-error", "-d", target.database],
            source, user=POSTGRES_UID,
        )
        if code != 0:
            raise BackupError(f"pg_restore into {target.tenant_id} failed: {output[-300:]}")

    async def row_counts(self, target: TenantTarget) -> dict[str, int]:
        """Exact row counts per table in schema public (read as the owner role)."""
        owner = target.credentials.grantee("owner")
        async with self._session(target) as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL ROLE {quote_ident(owner)}")
            tables = await conn.fetch(
                "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'public' "
                "ORDER BY 1"
            )
            return {
                t["tablename"]: int(await conn.fetchval(
                    f"SELECT pg_catalog.count(*) FROM public.{quote_ident(t['tablename'])}"
                ))
                for t in tables
            }

    async def template_warnings(self, target: TenantTarget) -> list[str]:
        """Tables without PK, FKs without a leading index, password-looking columns."""
        async with self._session(target) as conn:
            no_pk = await conn.fetch(
                """SELECT c.relname FROM pg_catalog.pg_class c
                    JOIN pg_catalog.pg_namespace n
                      ON n.oid = c.relnamespace AND n.nspname = 'public'
                   WHERE c.relkind = 'r' AND NOT EXISTS (
                         SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid
                            AND k.contype = 'p') ORDER BY 1"""
            )
            fk_unindexed = await conn.fetch(
                """SELECT t.relname AS tbl, k.conname FROM pg_catalog.pg_constraint k
                   JOIN pg_catalog.pg_namespace n
                     ON n.oid = k.connamespace AND n.nspname = 'public'
                   JOIN pg_catalog.pg_class t ON t.oid = k.conrelid
                  WHERE k.contype = 'f' AND NOT EXISTS (
                        SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = k.conrelid
                           AND (i.indkey::int2[])[0:pg_catalog.array_length(k.conkey, 1) - 1]
                               = k.conkey)
                  ORDER BY 1, 2"""
            )
            columns = await conn.fetch(
                """SELECT table_name, column_name FROM information_schema.columns
                    WHERE table_schema = 'public' ORDER BY 1, 2"""
            )
        warnings = [f"table {r['relname']} has no primary key" for r in no_pk]
        warnings += [f"foreign key {r['conname']} on {r['tbl']} has no index" for r in fk_unindexed]
        warnings += [
            f"column {r['table_name']}.{r['column_name']} looks like a plaintext secret"
            for r in columns if looks_like_plaintext_secret(r["column_name"])
        ]
        return warnings

    # ------------------------------------------------------------- migrations
    # MigrationHooks (cloner.engines.base); the SQL lives in engines/postgres_migrations.py.

    #: PostgreSQL DDL is transactional: a step that fails leaves nothing behind.
    transactional_ddl = True

    async def migration_state(self, target: TenantTarget) -> MigrationState:
        """Root version and applied steps from the tenant's ``schema_info``."""
        owner = target.credentials.grantee("owner")
        async with self._session(target) as conn:
            return await pg_migrations.read_state(conn, target.tenant_id, owner)

    async def apply_migration_step(
        self, target: TenantTarget, script: MigrationScript, lock_timeout_s: float
    ) -> AppliedMigration:
        """One step in one transaction as the owner role, recorded in ``schema_info``."""
        sql = await asyncio.to_thread(script.read)
        owner = target.credentials.grantee("owner")
        async with self._session(target) as conn:
            return await pg_migrations.apply_step(
                conn, target.tenant_id, owner, script=script, sql=sql,
                lock_timeout_s=lock_timeout_s,
            )

    async def realign_migration_checksum(
        self, target: TenantTarget, applied: AppliedMigration, checksum: str
    ) -> None:
        """Record ``checksum`` for an applied step (``migrate repair``)."""
        owner = target.credentials.grantee("owner")
        async with self._session(target) as conn:
            await pg_migrations.realign(conn, target.tenant_id, owner, applied, checksum)

    async def schema_catalogue(self, target: TenantTarget) -> dict[str, Any]:
        """Tables, columns, constraints, indexes, sequences, privileges by role kind."""
        creds = target.credentials
        kinds = {cred.username: role for role, cred in creds.roles.items()}
        # Privileges are granted to the privilege roles: they are what a role kind means.
        kinds.update({creds.grantee(role): role for role in creds.roles})
        kinds[creds.superuser.username] = "superuser"
        async with self._session(target) as conn:
            return await pg_migrations.catalogue(conn, kinds)

    async def drop_database(self, target: TenantTarget) -> None:
        """``DROP DATABASE … WITH (FORCE)``: sessions still connected are ended first."""
        async with self._session(target, database="postgres") as conn:
            await conn.execute(
                f"DROP DATABASE IF EXISTS {quote_ident(target.database)} WITH (FORCE)"
            )

    async def fence_logins(self, target: TenantTarget, fenced: bool) -> None:
        """``ALTER ROLE … NOLOGIN`` (or ``LOGIN``) for the application roles; when fencing,
        also terminate their sessions and wait (bounded) until they are gone."""
        users = list(fenced_logins(target.credentials))
        if not users:
            return
        async with self._session(target, database="postgres") as conn:
            for user in users:
                exists = await conn.fetchval(
                    "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", user)
                if exists:
                    await conn.execute(
                        f"ALTER ROLE {quote_ident(user)} {'NOLOGIN' if fenced else 'LOGIN'}")
            if not fenced:
                return
            deadline = time.monotonic() + FENCE_WAIT_S
            while True:
                # pg_terminate_backend only signals: the backend may still finish a commit.
                left = await conn.fetchval(
                    "SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) "
                    "FROM pg_catalog.pg_stat_activity "
                    "WHERE usename = ANY($1::text[]) AND pid <> pg_catalog.pg_backend_pid()",
                    users)
                if not left:
                    return
                if time.monotonic() >= deadline:
                    raise NotReady(f"{left} application session(s) of {target.tenant_id} "
                                   f"did not end within {FENCE_WAIT_S:.0f}s")
                await asyncio.sleep(0.05)

    def dsn(self, endpoint: Endpoint, username: str, password: str) -> str:
        """``postgresql://user:password@host:port/database``."""
        return (
            f"postgresql://{quote(username, safe='')}:{quote(password, safe='')}"
            f"@{endpoint.host}:{endpoint.port}/{endpoint.database}"
        )

    async def open_pool(
        self, endpoint: Endpoint, username: str, password: str, options: PoolOptions
    ) -> PoolLike:
        """An ``asyncpg.Pool``: it resets session state when a connection comes back."""
        pool: PoolLike = await asyncpg.create_pool(
            host=endpoint.host, port=endpoint.port, database=endpoint.database,
            user=username, password=password,
            min_size=options.min_size, max_size=options.max_size,
            command_timeout=options.command_timeout_s, timeout=options.connect_timeout_s,
            ssl=False, server_settings={"application_name": options.application_name},
        )
        return pool


def _server_command(defaults: ContainerDefaults) -> tuple[str, ...]:
    return (
        "postgres",
        "-c", f"max_connections={defaults.connection_limit * 3 + 10}",
        "-c", "shared_buffers=32MB",
        "-c", "password_encryption=scram-sha-256",
        "-c", "log_min_error_statement=panic",
    )


def pinned_settings(limits: SessionLimits) -> dict[str, str]:
    """The startup-packet settings of every session cloner opens on a tenant server.

    Values sent at connect time take precedence over ``ALTER DATABASE … SET``
    and ``ALTER ROLE … SET``, so no tenant can change the search path or lift
    the timeouts of cloner's sessions, privileged or not.
    """
    return {
        "application_name": "cloner",
        "search_path": PINNED_SEARCH_PATH,
        "statement_timeout": str(max(int(limits.statement_timeout_s * 1000), 1)),
        "lock_timeout": str(max(int(limits.lock_timeout_s * 1000), 1)),
    }


def _weak_hba_rules(rules: Sequence[Any]) -> list[str]:
    """pg_hba lines that let a TCP client in without SCRAM, or that did not parse.

    Lines limited to loopback addresses are left alone: only a process inside
    the tenant's own container reaches them, and that process is the server.
    """
    problems = []
    for rule in rules:
        if rule["error"]:
            problems.append(f"pg_hba.conf line {rule['line_number']}: {rule['error']}")
            continue
        if rule["type"] == "local" or rule["auth_method"] in ("scram-sha-256", "reject"):
            continue
        if _loopback_only(rule["address"], rule["netmask"]):
            continue
        problems.append(
            f"pg_hba.conf line {rule['line_number']}: {rule['type']} {rule['address'] or 'all'} "
            f"uses {rule['auth_method']}"
        )
    return problems


def _loopback_only(address: str | None, netmask: str | None) -> bool:
    if not address:
        return False
    try:
        network = ipaddress.ip_network(f"{address}/{netmask}" if netmask else address,
                                       strict=False)
    except ValueError:
        return False
    return network.is_loopback


def _magic(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(5)
