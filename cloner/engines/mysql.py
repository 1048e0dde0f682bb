"""MariaDB engine ("mysql", aiomysql): one server per tenant, one database, three accounts.

The tenant container starts with a throw-away bootstrap root password (the
official image's ``MARIADB_ROOT_PASSWORD``). The first thing ``wait_ready``
does once the server answers is to give every root account the real secret,
sent as a ``mysql_native_password`` hash, so the value visible in ``docker
inspect`` is dead before any tenant credential exists. It also creates
``mysql@localhost``, identified by the unix socket: the OS user the server
runs as (uid 999) gets in without a password from inside the container, which
is how ``mariadb-dump`` and the restore client log in (no secret in an argv or
a file), and what the postgres image's ``local trust`` is to ``pg_dump``.

MariaDB differs from PostgreSQL in ways that shape this module:

- DDL commits implicitly, so templates cannot run in one transaction: a
  database whose templates are not all recorded in ``schema_info`` is
  dropped and re-created before they are applied again.
- In a database-level GRANT, ``_`` and ``%`` in the database name are
  wildcards: every grant names the database through ``grant_pattern`` so a
  grant on ``acme_corp`` does not also reach ``acmeXcorp``.
- Accounts are ``user@host``. With a loopback bind host every legitimate
  client reaches the server through the published port, i.e. from the tenant
  network's gateway, so tenant accounts are bound to the address cloner
  itself is seen from rather than to ``%``.
- There is no partial revoke: app's write access to ``schema_info`` is
  refused by triggers instead of by a REVOKE.
- Schema migrations (``cloner migrate``) cannot be transactional either: a
  step runs statement by statement and is recorded once it has fully run; one
  that fails part-way is undone by restoring the pre-migration backup
  (``engines/mysql_migrations.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import hmac
import ipaddress
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiomysql
import pymysql

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
from cloner.engines import mysql_migrations as my_migrations
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
    throwaway_password,
)
from cloner.engines.pooling import PoolLike, PoolOptions
from cloner.errors import BackupError, NotReady, TemplateError
from cloner.logging import get_logger
from cloner.migrations.errors import MigrationError
from cloner.runtime.base import ContainerSpec, Runtime
from cloner.secrets import TENANT_ROLES, generate_password, own_login_pattern

log = get_logger(__name__)

DATADIR = "/var/lib/mysql"
SOCKET_PATH = "/run/mysqld/mysqld.sock"
MYSQL_UID_NUM = 999
MYSQL_UID = f"{MYSQL_UID_NUM}:{MYSQL_UID_NUM}"
#: The superuser: the credentials' superuser password, always under this name
#: (tenants provisioned before engines named their superuser carry ``postgres``).
SUPERUSER = "root"
#: The account of uid 999 over the unix socket (both images name that OS user mysql).
SOCKET_ACCOUNT = "mysql"
#: The ``mariadb`` client on the local socket as the socket account (no password).
_SOCKET_CLIENT = ("mariadb", "--protocol=socket", f"--socket={SOCKET_PATH}",
                  f"--user={SOCKET_ACCOUNT}")
CONNECT_TIMEOUT_S = 5.0
PROBE_TABLE = "system_settings"  # every root template version ships it (catalog contract)
DB_CHARSET = "utf8mb4"
#: Case-sensitive, code-point order: what text is under PostgreSQL's C.UTF-8.
DB_COLLATION = "utf8mb4_bin"
TEMPLATE_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
#: The session templates and migration steps run in.
TEMPLATE_SESSION = {"sql_mode": TEMPLATE_SQL_MODE, "time_zone": "+00:00",
                    "foreign_key_checks": "ON"}
#: How long dropping a tenant database waits for metadata locks of sessions it cannot end.
DROP_LOCK_WAIT_S = 30
BACKUP_FORMAT = "mariadb-dump-sql-gzip"
#: Written by mariadb-dump as its last line when it finished.
_DUMP_COMPLETE = b"-- Dump completed"
_RESTORED = "cloner:restored "
_RESTORING = "cloner:restoring "

# Server error codes (mysqld_error.h / errmsg.h).
_ER_DBACCESS_DENIED = 1044
_ER_ACCESS_DENIED = 1045
_ER_TABLEACCESS_DENIED = 1142
_ER_ACCESS_DENIED_NO_PASSWORD = 1698
_ER_NO_SUCH_THREAD = 1094
#: Refusals: what a privilege check answers.
_DENIED = frozenset({_ER_DBACCESS_DENIED, _ER_ACCESS_DENIED, _ER_TABLEACCESS_DENIED, 1143,
                     1227, 1370, 1410, _ER_ACCESS_DENIED_NO_PASSWORD})
_LOGIN_REFUSED = frozenset({_ER_ACCESS_DENIED, _ER_ACCESS_DENIED_NO_PASSWORD})
#: Server not (yet, or no longer) there: too many connections, shutting down, can't
#: connect, server gone, lost connection, connection killed.
#: What each tenant role may do in its database (database-level, never grantable).
_ROLE_PRIVILEGES = {
    "owner": "ALL PRIVILEGES",
    "app": "SELECT, INSERT, UPDATE, DELETE, EXECUTE",
    "readonly": "SELECT",
}
_CONNECTION_ERRORS = frozenset({1040, 1053, 2002, 2003, 2006, 2013, 1927})


def quote_ident(name: str) -> str:
    """Quote an identifier with backticks (names derive from validated ids, quoted anyway)."""
    return "`" + name.replace("`", "``") + "`"


def grant_pattern(database: str) -> str:
    """The quoted database name for a database-level GRANT, wildcards escaped.

    MariaDB reads ``_`` and ``%`` in ``GRANT … ON `db`.*`` as LIKE wildcards: a
    grant on ``tenant_a`` would also open ``tenantXa``. Escaped, it names exactly
    one database.
    """
    escaped = database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return quote_ident(escaped)


def account(user: str, host: str) -> str:
    """``'user'@'host'`` as an SQL account name."""
    return f"{_literal(user)}@{_literal(host)}"


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def native_password_hash(password: str) -> str:
    """What MariaDB stores for ``mysql_native_password``: ``*`` + SHA1(SHA1(password)).

    Sent instead of the password (``IDENTIFIED BY PASSWORD '*…'``) so the
    cleartext never reaches the server's statement handling or its logs.
    """
    inner = hashlib.sha1(password.encode(), usedforsecurity=False).digest()
    return "*" + hashlib.sha1(inner, usedforsecurity=False).hexdigest().upper()


def account_host(peer: str, endpoint_host: str | None) -> str:
    """The host part of the tenant accounts.

    With a loopback bind host the published port is the only way in, and every
    connection through it arrives from the tenant network's gateway: the
    address the server sees cloner's own connection come from (``peer``). Any
    other bind host lets remote clients in with their own addresses: ``%``.
    """
    if not _is_loopback(endpoint_host):
        return "%"
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return "%"
    return "%" if address.is_loopback else str(address)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Statement:
    """One statement of a script, with the line it starts on (for error messages)."""

    line: int
    sql: str


def split_statements(script: str) -> list[Statement]:
    """Split a MariaDB script into statements at top-level semicolons.

    Semicolons inside '…', "…" and `…` quotes (with doubled-quote and backslash
    escapes) and inside comments do not split. ``--`` (followed by a blank) and
    ``#`` comments and ``/* … */`` comments are dropped; ``/*! … */``
    executable comments are kept. Raises ``TemplateError`` for an unclosed
    quote or comment and for ``DELIMITER``, a client command that templates
    cannot use.
    """
    statements: list[Statement] = []
    out: list[str] = []
    line = start_line = 1
    i = 0
    while i < len(script):
        end = _token_end(script, i, line)
        piece = script[i:end]
        if not out and not piece.isspace():
            start_line = line
        if piece == ";":
            _add_statement(statements, start_line, "".join(out))
            out.clear()
        elif piece.startswith(("#", "--")) or (
            piece.startswith("/*") and not piece.startswith(("/*!", "/*M!"))
        ):
            if out:
                out.append(" ")  # a comment separates tokens like a blank
        elif out or not piece.isspace():
            out.append(piece)
        line += piece.count("\n")
        i = end
    _add_statement(statements, start_line, "".join(out))
    return statements


def _token_end(script: str, i: int, line: int) -> int:
    """Where the token at ``i`` ends: a quoted string, a comment, or one character."""
    ch = script[i]
    if ch in "'\"`":
        j = i + 1
        while j < len(script):
            escaped = script[j] == "\\" and ch != "`"
            if escaped or script.startswith(ch * 2, j):
                j += 2
            elif script[j] == ch:
                return j + 1
            else:
                j += 1
        raise TemplateError(f"line {line}: unclosed {ch} quote")
    if script.startswith("/*", i):
        end = script.find("*/", i + 2)
        if end < 0:
            raise TemplateError(f"line {line}: unclosed /* comment")
        return end + 2
    after_dashes = script[i + 2:i + 3]
    if ch == "#" or (script.startswith("--", i) and (after_dashes.isspace() or not after_dashes)):
        end = script.find("\n", i)
        return len(script) if end < 0 else end
    return i + 1


def _add_statement(statements: list[Statement], line: int, text: str) -> None:
    text = text.strip()
    if not text:
        return
    if re.match(r"DELIMITER\b", text, re.I):
        raise TemplateError(
            f"line {line}: DELIMITER is a client command; templates hold plain statements "
            "only (no compound statements)"
        )
    statements.append(Statement(line, text))


def error_code(exc: BaseException) -> int | None:
    """The server (or client library) error number of a PyMySQL error."""
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _is_connection_error(exc: BaseException) -> bool:
    return (isinstance(exc, (OSError, TimeoutError, pymysql.err.InterfaceError))
            or error_code(exc) in _CONNECTION_ERRORS)


class _QuietCursor(aiomysql.Cursor):  # type: ignore[misc]  # aiomysql ships no type hints
    """A cursor that leaves server notes alone.

    aiomysql fetches ``SHOW WARNINGS`` after every statement that produced a
    note (``CREATE … IF NOT EXISTS`` on an existing object, say) and turns each
    into a Python warning on stderr; cloner's idempotent statements produce
    them by design.
    """

    async def _show_warnings(self, conn: Any) -> None:  # noqa: ARG002 - aiomysql's signature
        return None


_NATIVE_PLUGIN = "mysql_native_password"


class _HashedAuthConnection(aiomysql.Connection):  # type: ignore[misc]  # aiomysql ships no type hints
    """A client connection that never hands its password to the server.

    aiomysql answers whatever the server asks for: a ``mysql_clear_password``
    switch gets the password as it is, ``sha256_password`` and
    ``caching_sha2_password`` encrypt it with a public key the server sends.
    cloner's accounts are all ``mysql_native_password`` (a scramble of the
    password with the server's nonce), so that is the only answer given: the
    first response always uses it (``auth_plugin``) and any switch to another
    plugin is refused with error 2059 before anything is sent. Defence in
    depth behind the endpoint guard (``pipeline/endpoints.py``): a squatter
    that got in between the guard's inspect and the connect learns nothing.
    """

    async def _process_auth(self, plugin_name: bytes, auth_packet: Any) -> Any:
        if plugin_name != _NATIVE_PLUGIN.encode():
            raise pymysql.err.OperationalError(
                2059, f"server asked for {plugin_name.decode(errors='replace')}; "
                "cloner answers mysql_native_password challenges only",
            )
        return await super()._process_auth(plugin_name, auth_packet)


def _server_command(defaults: ContainerDefaults) -> tuple[str, ...]:
    pool_mb = defaults.mysql_innodb_buffer_pool_mb
    return (
        "mariadbd",
        f"--max-connections={defaults.connection_limit * 3 + 10}",
        f"--innodb-buffer-pool-size={pool_mb}M",
        # Redo log and its buffer: 96 MB on disk and 16 MB in memory by
        # default, far more than a small tenant writes between checkpoints.
        "--innodb-log-file-size=16M",
        "--innodb-log-buffer-size=2M",
        # MyISAM and Aria hold only the small system tables here.
        "--key-buffer-size=1M",
        "--aria-pagecache-buffer-size=8M",
        "--table-open-cache=256",
        "--table-definition-cache=400",
        "--thread-cache-size=4",
        "--tmp-table-size=16M",
        "--max-heap-table-size=16M",
        "--query-cache-type=0",
        "--query-cache-size=0",
        "--performance-schema=OFF",
        "--skip-name-resolve",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
    )


async def _kill_connections(
    cur: aiomysql.Cursor, where: str, params: Sequence[object]
) -> None:
    """``KILL`` every other connection matching ``where`` (a PROCESSLIST condition with
    ``%s`` placeholders); one that ended meanwhile is no error."""
    await cur.execute(
        f"SELECT ID FROM information_schema.PROCESSLIST WHERE {where} "
        "AND ID <> CONNECTION_ID()", tuple(params),
    )
    for (session_id,) in await cur.fetchall():
        try:
            await cur.execute("KILL CONNECTION %s", (int(session_id),))
        except pymysql.err.MySQLError as exc:
            if error_code(exc) != _ER_NO_SUCH_THREAD:
                raise


class MysqlEngine:
    """MariaDB 10.11 tenants (the ``mysql`` engine)."""

    engine = Engine.MYSQL
    placement = Placement.CONTAINER
    roles: tuple[str, ...] = TENANT_ROLES
    superuser = SUPERUSER
    #: 1: the schema_info guard triggers are defined by the owner account, not root (H1).
    hardening_level = 1
    container_port = 3306
    #: Connection-level faults are raised as ``NotReady`` (transient) by this
    #: module; this one can escape mid-query when the server goes away.
    transient_errors: tuple[type[BaseException], ...] = (pymysql.err.InterfaceError,)
    #: A refused login or an unreachable server, when opening or acquiring a pooled connection.
    pool_connect_errors: tuple[type[BaseException], ...] = (pymysql.err.MySQLError,)

    def database_name(self, tenant_id: str) -> str:
        """``acme-corp`` → ``acme_corp``."""
        return sql_identifier(tenant_id)

    def container_spec(
        self, tenant_id: str, credentials: Credentials, labels: dict[str, str],
        defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """Non-root, read-only root fs, no capabilities; sized for density on the command line.

        The sizing goes on the command line, not into a config file, so an
        official ``mariadb`` image gets exactly what the offline image gets.
        """
        return defaults.tenant_spec(
            tenant_id, labels, uid=MYSQL_UID_NUM, port=self.container_port,
            volume_mount=DATADIR,
            env={
                "MARIADB_ROOT_PASSWORD": credentials.bootstrap_password,
                # The official image loads zoneinfo into mysql.* at initialisation
                # (seconds); tenants use offsets, and the offline image has none.
                "MARIADB_INITDB_SKIP_TZINFO": "1",
            },
            command=_server_command(defaults),
            # Owned by the engine uid explicitly: Docker mounts a tmpfs root-owned,
            # and mariadbd must create its socket and pid file there.
            private_dirs={"/run/mysqld": "0755"},
        )

    def volume_dump_spec(
        self, tenant_id: str, name: str, labels: dict[str, str], defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """The tenant container's shape on the kept volume, socket only, no root password.

        The volume holds an initialised data directory, so the entrypoint starts
        it as it is (and refuses an empty one for want of a root password).
        """
        spec = defaults.tenant_spec(
            tenant_id, labels, uid=MYSQL_UID_NUM, port=self.container_port,
            volume_mount=DATADIR, env={"MARIADB_INITDB_SKIP_TZINFO": "1"},
            command=(*_server_command(defaults), "--skip-networking"),
            private_dirs={"/run/mysqld": "0755"},
        )
        return dataclasses.replace(spec, name=name)

    async def local_ready(self, runtime: Runtime, container: str) -> bool:
        """The socket account answers a query (false while InnoDB recovers)."""
        code, _ = await runtime.exec(container, [*_SOCKET_CLIENT, "-e", "SELECT 1"],
                                     user=MYSQL_UID)
        return code == 0

    async def dump_local(
        self, runtime: Runtime, container: str, tenant_id: str, dest: Path,
    ) -> BackupResult:
        """The same ``mariadb-dump | gzip`` as ``backup``, tables counted over the socket."""
        database = self.database_name(tenant_id)

        async def count() -> int:
            code, output = await runtime.exec(
                container,
                [*_SOCKET_CLIENT, "--batch", "--skip-column-names", f"--database={database}",
                 "-e", "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                 "TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'"],
                user=MYSQL_UID,
            )
            words = output.split()
            if code != 0 or not words or not words[-1].isdigit():
                raise BackupError(f"cannot count the tables of {tenant_id}: {output[-300:]}")
            return int(words[-1])

        return await self._dump(runtime, container, tenant_id, database, dest, count=count)

    # -------------------------------------------------------------- connecting

    @staticmethod
    async def _raw_connect(
        endpoint: Endpoint, user: str, password: str, database: str | None,
        timeout_s: float = CONNECT_TIMEOUT_S, *, limits: SessionLimits | None = None,
    ) -> aiomysql.Connection:
        """A connection with cloner's session limits (``pinned_init``), or the client
        library's own error."""
        # aiomysql bounds only the TCP connect by connect_timeout; the handshake
        # and authentication are bounded here.
        async with asyncio.timeout(timeout_s):
            # What aiomysql.connect does, with a connection class that answers hashed
            # challenges only (see _HashedAuthConnection).
            conn = _HashedAuthConnection(
                host=endpoint.host, port=endpoint.port, user=user, password=password,
                db=database, connect_timeout=timeout_s, charset=DB_CHARSET,
                autocommit=True, local_infile=False, cursorclass=_QuietCursor,
                program_name="cloner", auth_plugin=_NATIVE_PLUGIN,
                init_command=pinned_init(limits or SessionLimits()),
            )
            try:
                await conn._connect()
            except BaseException:
                conn.close()  # a refused or timed-out handshake leaves no socket behind
                raise
            return conn

    async def _connect(
        self, endpoint: Endpoint, user: str, password: str, database: str | None,
        timeout_s: float = CONNECT_TIMEOUT_S, *, limits: SessionLimits | None = None,
    ) -> aiomysql.Connection:
        """A connection; a server that is not there (yet) is ``NotReady`` (retried)."""
        try:
            return await self._raw_connect(endpoint, user, password, database, timeout_s,
                                           limits=limits)
        except (OSError, TimeoutError, pymysql.err.MySQLError) as exc:
            if _is_connection_error(exc):
                raise NotReady(
                    f"mariadb at {endpoint.host}:{endpoint.port} is not reachable: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            raise

    @asynccontextmanager
    async def _session(
        self, target: TenantTarget, role: str | None = None, *, no_database: bool = False,
    ) -> AsyncIterator[aiomysql.Connection]:
        """As ``role`` (root when None), in the tenant database unless ``no_database``."""
        if role is None:
            user, password = SUPERUSER, target.credentials.superuser.password
        else:
            cred = target.credentials.roles[role]
            user, password = cred.username, cred.password
        db = None if no_database else target.database
        await target.vouch()
        conn = await self._connect(target.endpoint, user, password, db, limits=target.session)
        try:
            yield conn
        finally:
            await _close(conn)

    async def wait_ready(self, target: TenantTarget, timeout_s: float) -> None:
        """Connect + ``SELECT 1`` with bounded backoff; rotate the bootstrap password."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        last_error: BaseException | None = None
        real = target.credentials.superuser.password
        while time.monotonic() < deadline:
            for password, bootstrap in ((real, False),
                                        (target.credentials.bootstrap_password, True)):
                try:
                    await target.vouch()
                    conn = await self._raw_connect(
                        target.endpoint, SUPERUSER, password, None,
                        timeout_s=min(CONNECT_TIMEOUT_S, max(deadline - time.monotonic(), 0.1)),
                        limits=target.session,
                    )
                except (OSError, TimeoutError, pymysql.err.MySQLError,
                        NotReady) as exc:  # NotReady: endpoint not vouched for
                    last_error = exc
                    if error_code(exc) in _LOGIN_REFUSED:
                        continue  # the other password may be the current one
                    break
                try:
                    async with conn.cursor() as cur:
                        await cur.execute("SELECT 1")
                        if bootstrap:
                            await self._rotate_root(cur, real)
                        await self._ensure_socket_account(cur)
                    return
                finally:
                    await _close(conn)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise NotReady(
            f"mariadb at {target.endpoint.host}:{target.endpoint.port} did not answer "
            f"within {timeout_s:.0f}s; last error: {type(last_error).__name__}: {last_error}"
        )

    @staticmethod
    async def _rotate_root(cur: aiomysql.Cursor, password: str) -> None:
        # Every root account (root@localhost too: the bootstrap password must not
        # open the server from inside the container either).
        await cur.execute("SELECT Host FROM mysql.global_priv WHERE User = %s", (SUPERUSER,))
        hosts = [str(row[0]) for row in await cur.fetchall()]
        digest = native_password_hash(password)
        for host in hosts:
            await cur.execute(
                f"ALTER USER {account(SUPERUSER, host)} IDENTIFIED BY PASSWORD {_literal(digest)}"
            )
        log.debug("mysql.root_password_rotated", accounts=len(hosts))

    @staticmethod
    async def _ensure_socket_account(cur: aiomysql.Cursor) -> None:
        socket_account = account(SOCKET_ACCOUNT, "localhost")
        await cur.execute(f"CREATE USER IF NOT EXISTS {socket_account} IDENTIFIED VIA unix_socket")
        await cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO {socket_account}")

    async def probe(self, target: TenantTarget, timeout_s: float) -> float:
        """Connect as the app account to the tenant database and ``SELECT 1``; seconds taken.

        The app account is what applications use, so this fails exactly when
        they would: server down, database gone, or the app login broken.
        """
        started = time.monotonic()
        app = target.credentials.roles["app"]
        try:
            async with asyncio.timeout(timeout_s):
                await target.vouch()
                conn = await self._raw_connect(
                    target.endpoint, app.username, app.password, target.database,
                    timeout_s=timeout_s, limits=target.session,
                )
                try:
                    async with conn.cursor() as cur:
                        await cur.execute("SELECT 1")
                finally:
                    await _close(conn)
        except (OSError, TimeoutError, pymysql.err.MySQLError) as exc:
            raise NotReady(
                f"mariadb at {target.endpoint.host}:{target.endpoint.port} failed the health "
                f"probe as {app.username}: {type(exc).__name__}: {exc}"
            ) from exc
        return time.monotonic() - started

    # --------------------------------------------------------------- accounts

    @staticmethod
    async def _account_host(cur: aiomysql.Cursor, target: TenantTarget) -> str:
        await cur.execute("SELECT SUBSTRING_INDEX(USER(), '@', -1)")
        row = await cur.fetchone()
        return account_host(str(row[0]) if row else "", target.endpoint.host)

    @staticmethod
    async def _set_account(
        cur: aiomysql.Cursor, user: str, host: str, password: str, connection_limit: int
    ) -> None:
        """Create or update ``user@host``; the same user at any other host is dropped."""
        await cur.execute("SELECT Host FROM mysql.global_priv WHERE User = %s", (user,))
        existing = {str(row[0]) for row in await cur.fetchall()}
        for stale in sorted(existing - {host}):
            await cur.execute(f"DROP USER {account(user, stale)}")
        verb = "ALTER" if host in existing else "CREATE"
        await cur.execute(
            f"{verb} USER {account(user, host)} "
            f"IDENTIFIED BY PASSWORD {_literal(native_password_hash(password))} "
            f"WITH MAX_USER_CONNECTIONS {int(connection_limit)}"
        )

    async def _ensure_database(self, target: TenantTarget) -> None:
        """The tenant database and its owner account (the template step runs as the owner).

        The owner gets no connection limit here (0); ``apply_rbac`` sets the real one.
        """
        owner = target.credentials.roles["owner"]
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            host = await self._account_host(cur, target)
            await cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_ident(target.database)} "
                f"CHARACTER SET {DB_CHARSET} COLLATE {DB_COLLATION}"
            )
            await self._set_account(cur, owner.username, host, owner.password, 0)
            await cur.execute(
                f"GRANT ALL PRIVILEGES ON {grant_pattern(target.database)}.* "
                f"TO {account(owner.username, host)}"
            )

    async def _reset_database(self, target: TenantTarget) -> None:
        """Drop and re-create the tenant database (grants live on, in mysql.db)."""
        db = quote_ident(target.database)
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {db}")
            await cur.execute(
                f"CREATE DATABASE {db} CHARACTER SET {DB_CHARSET} COLLATE {DB_COLLATION}"
            )

    # --------------------------------------------------------------- template

    async def apply_templates(self, target: TenantTarget, templates: ResolvedTemplates) -> None:
        """Root then overlay, as the owner, each statement on its own; recorded in ``schema_info``.

        MariaDB commits DDL implicitly, so there is no all-or-nothing apply:
        a database holding anything but a complete, recorded apply of exactly
        these templates (an interrupted earlier attempt) is dropped and
        re-created first. Nothing but template data can be there yet: the
        accounts that could write to it are handed out only after this step.
        """
        await self._ensure_database(target)
        async with self._session(target, "owner") as conn, conn.cursor() as cur:
            state = await self._applied(cur, templates, target.database)
        if state == "applied":
            return
        if state == "partial":
            log.warning("mysql.template_reset_partial_apply", database=target.database)
            await self._reset_database(target)
        async with self._session(target, "owner") as conn, conn.cursor() as cur:
            for variable, value in TEMPLATE_SESSION.items():
                await cur.execute(f"SET SESSION {variable} = %s", (value,))
            # Template scripts may run long (seed data): no per-statement limit here.
            await cur.execute("SET SESSION max_statement_time = 0")
            for template in templates.files:
                started = time.monotonic()
                for statement in split_statements(template.read()):
                    try:
                        await cur.execute(statement.sql)
                    except pymysql.err.MySQLError as exc:
                        if _is_connection_error(exc):
                            raise NotReady(
                                f"connection lost while applying {template.path.name}: {exc}"
                            ) from exc
                        first = statement.sql.splitlines()[0][:80]
                        raise TemplateError(
                            f"{template.kind} template {template.path.name} "
                            f"({template.name} {template.version}) failed at line "
                            f"{statement.line} ({first}): {type(exc).__name__}: "
                            f"{_error_text(exc)}"
                        ) from exc
                await cur.execute(
                    "INSERT INTO schema_info (kind, name, version, checksum, duration_ms) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (template.kind, template.name, template.version, template.checksum,
                     int((time.monotonic() - started) * 1000)),
                )

    @staticmethod
    async def _applied(cur: aiomysql.Cursor, templates: ResolvedTemplates, database: str) -> str:
        """``empty``, ``applied`` (all recorded, same checksums) or ``partial``."""
        await cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
        )
        tables = {str(row[0]) for row in await cur.fetchall()}
        if not tables:
            return "empty"
        if "schema_info" not in tables:
            return "partial"
        await cur.execute("SELECT kind, name, version, checksum FROM schema_info")
        recorded = {(str(r[0]), str(r[1]), str(r[2])): str(r[3]).strip()
                    for r in await cur.fetchall()}
        complete = True
        for template in templates.files:
            checksum = recorded.get((template.kind, template.name, template.version))
            if checksum is None:
                complete = False
            elif checksum != template.checksum:
                raise TemplateError(
                    f"database {database} already has a schema that does not "
                    f"match {template.kind} {template.name} {template.version}"
                )
        return "applied" if complete else "partial"

    # ------------------------------------------------------------------- rbac

    async def apply_rbac(self, target: TenantTarget, connection_limit: int) -> None:
        """Three accounts with privileges on the tenant database only, none grantable.

        Database-level grants (with the name's wildcards escaped) also cover
        tables the owner creates later, as PostgreSQL's default privileges do.
        Every account is stripped of all privileges first, so a re-run leaves
        exactly these. ``schema_info`` is guarded by triggers: MariaDB cannot
        revoke one table out of a database-level grant.
        """
        roles = target.credentials.roles
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            host = await self._account_host(cur, target)
            for name in TENANT_ROLES:
                cred = roles[name]
                await self._grant_role(cur, target.database, name, cred, host=host,
                                       connection_limit=connection_limit)
            await self._guard_schema_info(
                cur, target.database,
                (target.credentials.grantee("owner"), roles["owner"].username), host,
            )

    async def _grant_role(
        self, cur: aiomysql.Cursor, database: str, role: str, cred: RoleCredential, *,
        host: str, connection_limit: int,
    ) -> None:
        """``cred``'s account with exactly ``role``'s privileges (all others revoked first)."""
        await self._set_account(cur, cred.username, host, cred.password, connection_limit)
        acct = account(cred.username, host)
        await cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {acct}")
        await cur.execute(
            f"GRANT {_ROLE_PRIVILEGES[role]} ON {grant_pattern(database)}.* TO {acct}"
        )

    @staticmethod
    async def _guard_schema_info(
        cur: aiomysql.Cursor, database: str, owners: Sequence[str], host: str
    ) -> None:
        """Triggers refusing writes to ``schema_info`` by anyone but the owner logins and cloner.

        ``owners[0]`` is the owner's privilege account (``Credentials.grantee``): the
        triggers' definer, which a rotation locks but never drops.
        """
        await cur.execute(f"USE {quote_ident(database)}")
        names = dict.fromkeys((*owners, SUPERUSER, SOCKET_ACCOUNT))
        allowed = ", ".join(_literal(u) for u in names)
        await cur.execute(
            "SELECT User FROM mysql.global_priv WHERE Host = %s AND User IN (%s, %s)",
            (host, owners[0], owners[-1]),
        )
        present = {str(row[0]) for row in await cur.fetchall()}
        # A server restored under rotated credentials may lack the privilege account.
        definer = account(owners[0] if owners[0] in present else owners[-1], host)
        for event in ("INSERT", "UPDATE", "DELETE"):
            # The invoker (USER()), not the definer (CURRENT_USER()), decides. Defined
            # as the owner: no object in a tenant database runs with root's rights
            # (``no_privileged_definers``), cloner's own included.
            await cur.execute(
                f"CREATE OR REPLACE DEFINER = {definer} "
                f"TRIGGER schema_info_guard_{event.lower()} "
                f"BEFORE {event} ON schema_info FOR EACH ROW "
                f"IF SUBSTRING_INDEX(USER(), '@', 1) NOT IN ({allowed}) THEN "
                "SIGNAL SQLSTATE '42000' SET MYSQL_ERRNO = 1142, "
                "MESSAGE_TEXT = 'schema_info is maintained by cloner'; END IF"
            )

    # --------------------------------------------------------------- rotation
    # Credential rotation (cloner.rotation): MariaDB 10.11 has no dual passwords, so
    # a second account with the same grants carries the new password for the window.

    async def create_login(
        self, target: TenantTarget, role: str, login: RoleCredential, connection_limit: int
    ) -> None:
        """Create (or reset) ``login`` with ``role``'s grants; the current account keeps working."""
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            host = await self._account_host(cur, target)
            await self._grant_role(cur, target.database, role, login, host=host,
                                   connection_limit=connection_limit)
            if role == "owner":
                await self._guard_schema_info(
                    cur, target.database, (target.credentials.grantee("owner"), login.username),
                    host,
                )

    async def retire_login(self, target: TenantTarget, role: str, login: RoleCredential) -> None:
        """Make ``login`` unusable: dropped, its open sessions killed. Idempotent.

        An account still named as the DEFINER of a view, routine, trigger or event
        is locked instead (password replaced by one nobody knows): dropping it
        would break those objects.
        """
        del role  # every account stands alone in MariaDB
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT Host FROM mysql.global_priv WHERE User = %s", (login.username,)
            )
            for (host,) in await cur.fetchall():
                acct = account(login.username, str(host))
                definer = f"{login.username}@{host}"
                await cur.execute(
                    "SELECT (SELECT COUNT(*) FROM information_schema.VIEWS WHERE DEFINER = %s)"
                    " + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE DEFINER = %s)"
                    " + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE DEFINER = %s)"
                    " + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE DEFINER = %s)",
                    (definer,) * 4,
                )
                row = await cur.fetchone()
                if row and int(row[0] or 0):
                    unknown = native_password_hash(generate_password())
                    await cur.execute(
                        f"ALTER USER {acct} IDENTIFIED BY PASSWORD {_literal(unknown)} "
                        "ACCOUNT LOCK"
                    )
                else:
                    await cur.execute(f"DROP USER IF EXISTS {acct}")
            await _kill_connections(cur, "USER = %s", (login.username,))

    # -------------------------------------------------------------- isolation

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        """Run every engine check with the tenant's real credentials."""
        return [
            await self._check_app_read_write(target),
            await self._check_readonly(target),
            await self._check_app_sees_own_schema_only(target),
            await self._check_roles_unprivileged(target),
            await self._check_app_cannot_escalate(target),
            await self._check_public_revoked(target),
            await self._check_no_privileged_definers(target),
            await self._check_neighbours_refuse(target, neighbours),
        ]

    async def _check_app_read_write(self, target: TenantTarget) -> CheckResult:
        name = "app_reads_and_writes_own_database"
        try:
            async with self._session(target, "app") as conn, conn.cursor() as cur:
                await cur.execute("START TRANSACTION")
                try:
                    await cur.execute(
                        f"INSERT INTO {PROBE_TABLE} (`key`, value) VALUES (%s, %s)",
                        ("cloner_isolation_probe", "true"),
                    )
                    await cur.execute(
                        f"SELECT value FROM {PROBE_TABLE} WHERE `key` = %s",
                        ("cloner_isolation_probe",),
                    )
                    seen = await cur.fetchone()
                finally:
                    await cur.execute("ROLLBACK")
        except (pymysql.err.MySQLError, OSError, NotReady) as exc:
            return CheckResult(name, False, f"app could not read/write: {type(exc).__name__}")
        return CheckResult(name, seen is not None, f"insert+select on {PROBE_TABLE} as app")

    async def _check_readonly(self, target: TenantTarget) -> CheckResult:
        name = "readonly_reads_cannot_write"
        try:
            async with self._session(target, "readonly") as conn, conn.cursor() as cur:
                await cur.execute(f"SELECT COUNT(*) FROM {PROBE_TABLE}")
                row = await cur.fetchone()
                try:
                    await cur.execute(
                        f"INSERT INTO {PROBE_TABLE} (`key`, value) VALUES (%s, %s)",
                        ("cloner_readonly_probe", "true"),
                    )
                except pymysql.err.MySQLError as exc:
                    if error_code(exc) in _DENIED:
                        return CheckResult(
                            name, True,
                            f"read {row[0] if row else 0} rows; insert refused: "
                            f"{_error_text(exc)}",
                        )
                    raise
                return CheckResult(name, False, "readonly account could INSERT")
        except (pymysql.err.MySQLError, OSError, NotReady) as exc:
            return CheckResult(name, False, f"readonly check failed: {type(exc).__name__}")

    async def _check_app_sees_own_schema_only(self, target: TenantTarget) -> CheckResult:
        name = "app_sees_own_schema_only"
        try:
            async with self._session(target, "app") as conn, conn.cursor() as cur:
                await cur.execute("SHOW DATABASES")
                visible = {str(row[0]) for row in await cur.fetchall()}
        except (pymysql.err.MySQLError, OSError, NotReady) as exc:
            return CheckResult(name, False, f"app could not list schemas: {type(exc).__name__}")
        others = sorted(visible - {target.database, "information_schema"})
        if target.database not in visible or others:
            return CheckResult(name, False, f"app sees {sorted(visible)}")
        return CheckResult(name, True, f"app sees {target.database} and information_schema only")

    async def _check_roles_unprivileged(self, target: TenantTarget) -> CheckResult:
        name = "roles_not_privileged"
        usernames = [target.credentials.roles[r].username for r in TENANT_ROLES]
        marks = ", ".join(["%s"] * len(usernames))
        expected_pattern = grant_pattern(target.database)[1:-1].replace("``", "`")
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            # Global privileges are a bitmask; 0 is USAGE (log in, nothing else):
            # no SUPER, FILE, PROCESS, CREATE USER, SHUTDOWN...
            await cur.execute(
                f"SELECT User, Host, CAST(JSON_VALUE(Priv, '$.access') AS UNSIGNED) "
                f"FROM mysql.global_priv WHERE User IN ({marks})", usernames,
            )
            accounts = await cur.fetchall()
            await cur.execute(
                f"SELECT User, Db, Grant_priv FROM mysql.db WHERE User IN ({marks})", usernames
            )
            db_grants = await cur.fetchall()
            extra = {}
            for table in ("tables_priv", "columns_priv", "proxies_priv", "roles_mapping"):
                await cur.execute(
                    f"SELECT COUNT(*) FROM mysql.{table} WHERE User IN ({marks})", usernames
                )
                row = await cur.fetchone()
                extra[table] = int(row[0]) if row else 0
        problems = []
        if sorted(str(a[0]) for a in accounts) != sorted(usernames):
            problems.append(f"expected one account each for {usernames}, found "
                            f"{sorted(f'{a[0]}@{a[1]}' for a in accounts)}")
        problems += [f"{a[0]} has global privileges" for a in accounts if int(a[2] or 0)]
        problems += [f"{g[0]} has a grant on {g[1]}" for g in db_grants
                     if str(g[1]) != expected_pattern]
        problems += [f"{g[0]} has GRANT OPTION" for g in db_grants if str(g[2]) != "N"]
        problems += [f"{count} rows in mysql.{table}" for table, count in extra.items() if count]
        if target.endpoint.host and _is_loopback(target.endpoint.host):
            problems += [f"{a[0]} accepts logins from any host" for a in accounts
                         if str(a[1]) == "%"]
        if problems:
            return CheckResult(name, False, "; ".join(problems))
        hosts = sorted({str(a[1]) for a in accounts})
        return CheckResult(
            name, True,
            f"owner/app/readonly@{','.join(hosts)}: no global privileges (no SUPER, FILE, "
            f"PROCESS, CREATE USER), grants on {expected_pattern} only, no GRANT OPTION, "
            "no roles or proxies",
        )

    async def _check_no_privileged_definers(self, target: TenantTarget) -> CheckResult:
        """``no_privileged_definers``: nothing in the tenant database runs as another account.

        Triggers, views, routines and events run with their DEFINER's rights
        (SQL SECURITY DEFINER, the default). Every one in the tenant database
        must be defined by one of the tenant's own accounts: one defined by
        root (or any account outside the tenant) would lend its privileges to
        whoever makes it run. cloner itself never reads a tenant object as root.
        The ``schema_info`` guard triggers of tenants provisioned before cloner
        defined them as the owner are root's and pass: no tenant can create an
        object defined by root, nor change a trigger's body without re-creating
        it as itself, so those still hold cloner's own body. They pass only while
        the tenant's recorded hardening level is below the engine's
        (``target.legacy_hardening``); its ``harden`` request re-creates them as
        the owner, and from then on a root-defined guard fails like anything else.
        """
        name = "no_privileged_definers"
        creds = target.credentials
        own = {c.username for c in creds.roles.values()}
        # A rotated-out login stays (locked) while it defines objects: still the tenant's.
        own_pattern = re.compile(own_login_pattern([creds.grantee(r) for r in creds.roles]))
        legacy_guards = {f"schema_info_guard_{event}" for event in ("insert", "update", "delete")}
        objects = (
            ("trigger", "TRIGGER_NAME", "DEFINER", "TRIGGERS", "TRIGGER_SCHEMA"),
            ("view", "TABLE_NAME", "DEFINER", "VIEWS", "TABLE_SCHEMA"),
            ("routine", "ROUTINE_NAME", "DEFINER", "ROUTINES", "ROUTINE_SCHEMA"),
            ("event", "EVENT_NAME", "DEFINER", "EVENTS", "EVENT_SCHEMA"),
        )
        found: list[str] = []
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            for kind, column, definer, table, schema in objects:
                await cur.execute(
                    f"SELECT {column}, {definer} FROM information_schema.{table} "
                    f"WHERE {schema} = %s ORDER BY 1", (target.database,),
                )
                found += [
                    f"{kind} {row[0]} (DEFINER={row[1]})" for row in await cur.fetchall()
                    if str(row[1]).rpartition("@")[0] not in own
                    and not own_pattern.fullmatch(str(row[1]).rpartition("@")[0])
                    and not (target.legacy_hardening
                             and kind == "trigger" and str(row[0]) in legacy_guards
                             and str(row[1]).rpartition("@")[0] == SUPERUSER)
                ]
        if found:
            return CheckResult(
                name, False, f"objects defined by a non-tenant account: {', '.join(found)}"
            )
        return CheckResult(
            name, True,
            "every trigger, view, routine and event in the database is defined by a tenant "
            "account",
        )

    async def _check_app_cannot_escalate(self, target: TenantTarget) -> CheckResult:
        name = "app_cannot_escalate"
        attempts = {
            "create user": "CREATE USER cloner_escalation_probe",
            "create database": "CREATE DATABASE cloner_escalation_probe",
            "read mysql.global_priv": "SELECT COUNT(*) FROM mysql.global_priv",
            "write server files": "SELECT 1 INTO OUTFILE '/tmp/cloner_escalation_probe'",
            "set global variables": "SET GLOBAL max_connections = @@GLOBAL.max_connections",
            "grant own privileges": (
                f"GRANT SELECT ON {grant_pattern(target.database)}.* TO CURRENT_USER"
            ),
            "create in mysql schema": "CREATE TABLE mysql.cloner_escalation_probe (id INT)",
        }
        allowed = []
        # A superuser session stays open meanwhile, so "sees no other session"
        # has a session to not see.
        async with self._session(target, no_database=True) as _witness, \
                self._session(target, "app") as conn, conn.cursor() as cur:
            # In a transaction that is rolled back: should the guard be missing,
            # the probe row must not stay.
            await cur.execute("START TRANSACTION")
            try:
                await cur.execute(
                    "INSERT INTO schema_info (kind, name, version, checksum) "
                    "VALUES ('migration', 'cloner_escalation_probe', 'v0.0', REPEAT('0', 64))"
                )
                allowed.append("write schema_info")
            except pymysql.err.MySQLError as exc:
                if error_code(exc) not in _DENIED:
                    allowed.append(f"write schema_info ({type(exc).__name__} {error_code(exc)})")
            finally:
                await cur.execute("ROLLBACK")
            for label, statement in attempts.items():
                try:
                    await cur.execute(statement)
                except pymysql.err.MySQLError as exc:
                    if error_code(exc) not in _DENIED:
                        allowed.append(f"{label} ({type(exc).__name__} {error_code(exc)})")
                    continue
                allowed.append(label)
            # Without FILE, LOAD_FILE returns NULL instead of failing.
            await cur.execute("SELECT LOAD_FILE('/etc/passwd') IS NOT NULL")
            row = await cur.fetchone()
            if row and row[0]:
                allowed.append("read server files")
            # Without PROCESS, the process list holds the app's own sessions only.
            await cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER <> %s",
                (target.credentials.roles["app"].username,),
            )
            row = await cur.fetchone()
            if row and row[0]:
                allowed.append("see other sessions")
        if allowed:
            return CheckResult(name, False, f"app was not refused: {', '.join(allowed)}")
        return CheckResult(
            name, True,
            f"refused: write schema_info, {', '.join(attempts)}, read server files, "
            "see other sessions",
        )

    async def _check_public_revoked(self, target: TenantTarget) -> CheckResult:
        name = "public_has_no_privileges"
        own = [target.credentials.roles[r].username for r in TENANT_ROLES]
        marks = ", ".join(["%s"] * len(own))
        # Every generation of the tenant's own logins (a rotated-out DEFINER stays, locked).
        own_pattern = own_login_pattern([target.credentials.grantee(r) for r in TENANT_ROLES])
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM mysql.global_priv WHERE User = ''")
            row = await cur.fetchone()
            anonymous = int(row[0]) if row else 0
            problems = [f"{anonymous} anonymous account(s)"] if anonymous else []
            # PUBLIC (10.11) and anonymous grants anywhere.
            for table in ("db", "tables_priv", "columns_priv", "procs_priv"):
                await cur.execute(
                    f"SELECT COUNT(*) FROM mysql.{table} WHERE User IN ('', 'PUBLIC')"
                )
                row = await cur.fetchone()
                if row and row[0]:
                    problems.append(f"{row[0]} PUBLIC/anonymous grant(s) in mysql.{table}")
            # Database-level grants are LIKE patterns: any that matches the tenant
            # database (an unescaped `tenant_a` would match `tenantXa`) opens it.
            await cur.execute(
                f"SELECT User, Host, Db FROM mysql.db WHERE %s LIKE Db AND User NOT IN ({marks}) "
                "AND User NOT REGEXP %s",
                (target.database, *own, own_pattern),
            )
            problems += [f"{r[0]}@{r[1]} reaches it through grant pattern {r[2]}"
                         for r in await cur.fetchall()]
        if problems:
            return CheckResult(name, False, "; ".join(problems))
        return CheckResult(
            name, True,
            f"no anonymous accounts, no PUBLIC grants, no other grant pattern matches "
            f"{target.database}",
        )

    async def _check_neighbours_refuse(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> CheckResult:
        return await neighbours_refuse(
            target, neighbours, self._ask_neighbour,
            auth="no anonymous account, every account native-hashed (or socket-only, or locked)",
        )

    async def _ask_neighbour(self, target: TenantTarget, neighbour: Neighbour) -> NeighbourFinding:
        """The neighbour's own root session judges this tenant's credentials (see checks)."""
        theirs = neighbour.target
        if theirs is None:
            return NeighbourFinding(unreachable="no connection target")
        names = login_usernames(target)
        try:
            async with self._session(theirs, no_database=True) as conn, \
                    conn.cursor() as cur:
                await cur.execute("SELECT User, Host, Priv FROM mysql.global_priv")
                accounts = [(str(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]
        except NotReady as exc:  # not vouched for any more (EndpointNotVouched), or down
            return NeighbourFinding(unreachable=exc.message)
        except (OSError, TimeoutError, pymysql.err.MySQLError) as exc:
            return NeighbourFinding(unreachable=f"{type(exc).__name__} {error_code(exc)}")
        problems = account_problems(accounts, names, target.credentials.superuser.password)
        refused = 0
        # Throwaway passwords are worthless to whoever gets them: one look at the
        # runtime only keeps the verdict about the neighbour's own server.
        try:
            await theirs.vouch()
        except NotReady as exc:
            return NeighbourFinding(tuple(problems), unreachable=exc.message)
        for name in names:
            # Logins are server-wide in MariaDB: one attempt per name, no database.
            try:
                conn = await self._raw_connect(
                    theirs.endpoint, name, throwaway_password(), None, timeout_s=3
                )
            except (OSError, TimeoutError, pymysql.err.MySQLError) as exc:
                if error_code(exc) in _LOGIN_REFUSED:
                    refused += 1
                    continue
                return NeighbourFinding(tuple(problems), throwaway_refused=refused,
                                        unreachable=f"{type(exc).__name__} {error_code(exc)}")
            await _close(conn)
            problems.append(f"accepted a login as {name} with a throwaway password")
        return NeighbourFinding(tuple(problems), throwaway_refused=refused)

    # ---------------------------------------------------------------- backups

    async def backup(
        self, runtime: Runtime, target: TenantTarget, dest: Path, *,
        lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,
    ) -> BackupResult:
        """``mariadb-dump | gzip`` inside the tenant container, streamed to ``dest``, verified.

        One consistent snapshot (``--single-transaction``) with routines,
        events and triggers; the dump logs in through the socket account.
        The archive counts only once it has been read back whole: gzip intact,
        mariadb-dump's completion line at the end, one ``CREATE TABLE`` per
        table of the database.
        """
        if target.container_name is None:
            raise BackupError("mysql backup needs the tenant container")
        return await self._dump(
            runtime, target.container_name, target.tenant_id, target.database, dest,
            count=lambda: self._table_count(target), watch=target, lock_wait_s=lock_wait_s,
        )

    async def _dump(
        self, runtime: Runtime, container: str, tenant_id: str, database: str, dest: Path,
        *, count: Callable[[], Awaitable[int]], watch: TenantTarget | None = None,
        lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,
    ) -> BackupResult:
        """Dump ``database``; with ``watch`` (a live tenant server) its lock waits are bounded
        by ``lock_wait_s`` (``_lock_wait_guard``). A helper on a kept volume has no tenant
        sessions, hence no watcher."""
        tables = await count()
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = dest.with_suffix(dest.suffix + ".partial")
        script = (
            f"mariadb-dump --protocol=socket --socket={SOCKET_PATH} --user={SOCKET_ACCOUNT} "
            "--single-transaction --quick --routines --events --triggers --hex-blob "
            f"--default-character-set={DB_CHARSET} --no-tablespaces -- \"$1\" | gzip -6"
        )
        killed: list[int] = []
        try:
            guard = (self._lock_wait_guard(watch, lock_wait_s, killed) if watch is not None
                     else contextlib.nullcontext())
            async with guard:
                size = await runtime.exec_to_file(
                    container,
                    ["bash", "-o", "pipefail", "-c", script, "cloner-backup", database],
                    partial, user=MYSQL_UID,
                )
        except Exception as exc:
            partial.unlink(missing_ok=True)
            if killed:
                raise BackupError(
                    f"mariadb-dump of {tenant_id} gave up after waiting {lock_wait_s:g}s "
                    "for a table lock held in the tenant database (LOCK TABLES in an open "
                    "session?)"
                ) from exc
            raise BackupError(f"mariadb-dump of {tenant_id} failed: {exc}") from exc
        try:
            entries = await asyncio.to_thread(_dumped_tables, partial)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            partial.unlink(missing_ok=True)
            raise BackupError(f"backup of {tenant_id} is not a readable gzip: "
                              f"{exc}") from exc
        if entries is not None and entries != tables:
            # The owner may have created or dropped a table while the dump ran: the
            # dump's snapshot lies between the two counts.
            tables = await count()
        if entries is None or entries != tables:
            partial.unlink(missing_ok=True)
            raise BackupError(
                f"backup of {tenant_id} is incomplete: "
                f"{'no completion line' if entries is None else f'{entries} CREATE TABLE'}"
                f", expected {tables} tables"
            )
        digest = await asyncio.to_thread(sha256_of, partial)
        partial.chmod(0o600)
        partial.replace(dest)
        return BackupResult(dest, size, digest, BACKUP_FORMAT, entries)

    @asynccontextmanager
    async def _lock_wait_guard(
        self, target: TenantTarget, lock_wait_s: float, killed: list[int]
    ) -> AsyncIterator[None]:
        """Bound the dump's lock waits while the block runs.

        mariadb-dump has no lock-wait option and MariaDB's ``lock_wait_timeout``
        defaults to a year, so a tenant holding ``LOCK TABLES … WRITE`` would
        block the dump for good. A watcher (as root) ends the dump's statement
        (``KILL QUERY``) once it has waited ``lock_wait_s`` for a lock; the ids
        it killed land in ``killed``.
        """
        watcher = asyncio.create_task(self._kill_lock_waits(target, lock_wait_s, killed))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _kill_lock_waits(
        self, target: TenantTarget, lock_wait_s: float, killed: list[int]
    ) -> None:
        interval = min(0.5, lock_wait_s / 4)
        while True:
            try:
                async with self._session(target, no_database=True) as conn:
                    while True:
                        await asyncio.sleep(interval)
                        async with conn.cursor() as cur:
                            await cur.execute(
                                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s "
                                "AND STATE LIKE 'Waiting for%%lock%%' AND TIME_MS >= %s",
                                (SOCKET_ACCOUNT, lock_wait_s * 1000),
                            )
                            for (session_id,) in await cur.fetchall():
                                await cur.execute(f"KILL QUERY {int(session_id)}")
                                killed.append(int(session_id))
                                log.warning("mysql.dump_lock_wait_killed",
                                            tenant_id=target.tenant_id, waited_s=lock_wait_s)
            except (OSError, TimeoutError, pymysql.Error, NotReady) as exc:  # look again soon
                log.debug("mysql.lock_watch_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(interval)

    async def restore(self, runtime: Runtime, target: TenantTarget, source: Path) -> None:
        """Load a backup through the ``mariadb`` client in the container, fed through stdin.

        MariaDB cannot load a dump in one transaction, so the database comment
        records progress: ``cloner:restoring <sha256>`` before the load,
        ``cloner:restored <sha256>`` after it. A re-run finds the second and
        does nothing, or the first and starts over on an empty database. A
        database holding tables without either mark is not touched.
        """
        if target.container_name is None:
            raise BackupError("mysql restore needs the tenant container")
        digest = await asyncio.to_thread(sha256_of, source)
        await self._ensure_database(target)
        comment, has_tables = await self._restore_state(target)
        if comment == _RESTORED + digest:
            log.info("mysql.restore_already_done", tenant_id=target.tenant_id)
            return
        if comment == _RESTORING + digest:
            await self._reset_database(target)
        elif has_tables:
            raise BackupError(
                f"database {target.database} already holds tables that no restore of this "
                "backup put there; drop it first"
            )
        await self._set_comment(target, _RESTORING + digest)
        code, output = await runtime.exec_with_stdin(
            target.container_name,
            ["bash", "-o", "pipefail", "-c",
             f"gzip -dc | mariadb --protocol=socket --socket={SOCKET_PATH} "
             f"--user={SOCKET_ACCOUNT} --binary-mode --database=\"$1\"",
             "cloner-restore", target.database],
            source, user=MYSQL_UID,
        )
        if code != 0:
            await self._reset_database(target)
            raise BackupError(f"restore into {target.tenant_id} failed: {output[-300:]}")
        await self._set_comment(target, _RESTORED + digest)

    async def _restore_state(self, target: TenantTarget) -> tuple[str, bool]:
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                (target.database,),
            )
            row = await cur.fetchone()
            await cur.execute(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                (target.database,),
            )
            tables = await cur.fetchone()
        return (str(row[0] or "") if row else ""), bool(tables and tables[0])

    async def _set_comment(self, target: TenantTarget, comment: str) -> None:
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute(
                f"ALTER DATABASE {quote_ident(target.database)} COMMENT = {_literal(comment)}"
            )

    async def _table_count(self, target: TenantTarget) -> int:
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE = 'BASE TABLE'", (target.database,),
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def row_counts(self, target: TenantTarget) -> dict[str, int]:
        """Exact row counts per base table of the tenant database (read as the owner:
        a table swapped for an invoker view never runs tenant code as root)."""
        async with self._session(target, "owner") as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (target.database,),
            )
            tables = [str(row[0]) for row in await cur.fetchall()]
            counts = {}
            for table in tables:
                await cur.execute(
                    f"SELECT COUNT(*) FROM {quote_ident(target.database)}.{quote_ident(table)}"
                )
                row = await cur.fetchone()
                counts[table] = int(row[0]) if row else 0
        return counts

    async def template_warnings(self, target: TenantTarget) -> list[str]:
        """Tables without PK, FKs without a leading index, password-looking columns.

        InnoDB gives every foreign key an index of its own when none leads with
        its columns, so the second kind only shows for other storage engines.
        """
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute(
                """SELECT t.TABLE_NAME FROM information_schema.TABLES t
                    WHERE t.TABLE_SCHEMA = %s AND t.TABLE_TYPE = 'BASE TABLE'
                      AND NOT EXISTS (
                          SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c
                           WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA
                             AND c.TABLE_NAME = t.TABLE_NAME
                             AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')
                    ORDER BY 1""", (target.database,),
            )
            no_pk = [str(r[0]) for r in await cur.fetchall()]
            await cur.execute(
                """SELECT TABLE_NAME, CONSTRAINT_NAME,
                          GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION)
                     FROM information_schema.KEY_COLUMN_USAGE
                    WHERE TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME IS NOT NULL
                    GROUP BY TABLE_NAME, CONSTRAINT_NAME ORDER BY 1, 2""", (target.database,),
            )
            foreign_keys = await cur.fetchall()
            await cur.execute(
                """SELECT TABLE_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)
                     FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s
                    GROUP BY TABLE_NAME, INDEX_NAME""", (target.database,),
            )
            indexes: dict[str, list[str]] = {}
            for table, columns in await cur.fetchall():
                indexes.setdefault(str(table), []).append(str(columns))
            await cur.execute(
                """SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS
                    WHERE TABLE_SCHEMA = %s ORDER BY 1, 2""", (target.database,),
            )
            columns = await cur.fetchall()
        warnings = [f"table {t} has no primary key" for t in no_pk]
        warnings += [
            f"foreign key {constraint} on {table} has no index"
            for table, constraint, cols in foreign_keys
            if not any(f"{index},".startswith(f"{cols},") for index in indexes.get(table, []))
        ]
        warnings += [
            f"column {table}.{column} looks like a plaintext secret"
            for table, column in columns if looks_like_plaintext_secret(str(column))
        ]
        return warnings

    # ------------------------------------------------------------- migrations
    # MigrationHooks (cloner.engines.base); the SQL lives in engines/mysql_migrations.py.

    #: MariaDB commits each DDL statement on its own: a step that fails part-way is
    #: undone by restoring the pre-migration backup, never by its down step.
    transactional_ddl = False

    async def migration_state(self, target: TenantTarget) -> MigrationState:
        """Root version and applied steps from the tenant's ``schema_info``.

        Read as the owner, like everything in the tenant's database: as root, a
        ``schema_info`` the tenant replaced by an SQL SECURITY INVOKER view would
        run the tenant's functions with root's rights.
        """
        async with self._session(target, "owner") as conn:
            return await my_migrations.read_state(conn, target.tenant_id)

    async def apply_migration_step(
        self, target: TenantTarget, script: MigrationScript, lock_timeout_s: float
    ) -> AppliedMigration:
        """One step, statement by statement as the owner, recorded once every statement ran.

        The script is split before anything runs, so one that cannot be split
        (an unclosed quote, ``DELIMITER``) changes nothing.
        """
        text = await asyncio.to_thread(script.read)
        try:
            statements = split_statements(text)
        except TemplateError as exc:
            raise MigrationError(
                f"tenant {target.tenant_id}: {script.label}: {exc.message}") from exc
        async with self._session(target, "owner") as conn:
            return await my_migrations.apply_step(
                conn, target.tenant_id, target.database, script=script,
                statements=statements, session=TEMPLATE_SESSION,
                lock_timeout_s=lock_timeout_s,
            )

    async def realign_migration_checksum(
        self, target: TenantTarget, applied: AppliedMigration, checksum: str
    ) -> None:
        """Record ``checksum`` for an applied step (``migrate repair``), as the owner."""
        async with self._session(target, "owner") as conn:
            await my_migrations.realign(conn, target.tenant_id, applied, checksum)

    async def schema_catalogue(self, target: TenantTarget) -> dict[str, Any]:
        """Tables, columns, keys, CHECKs, indexes, triggers, grants by role kind."""
        creds = target.credentials
        kinds = {creds.grantee(role): role for role in creds.roles}
        kinds.update({cred.username: role for role, cred in creds.roles.items()})
        kinds[SUPERUSER] = "superuser"
        kinds[SOCKET_ACCOUNT] = "socket"
        own_pattern = grant_pattern(target.database)[1:-1].replace("``", "`")
        async with self._session(target, no_database=True) as conn:
            return await my_migrations.catalogue(conn, target.database, own_pattern, kinds)

    async def drop_database(self, target: TenantTarget) -> None:
        """End the sessions still in the database, then drop it.

        PostgreSQL's ``DROP DATABASE … WITH (FORCE)``: a session left in it (an
        application that ignored ``migrating``) would otherwise hold its
        metadata locks and stall the drop.
        """
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await _kill_connections(cur, "DB = %s", (target.database,))
            await cur.execute("SET SESSION lock_wait_timeout = %s", (DROP_LOCK_WAIT_S,))
            await cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(target.database)}")

    async def fence_logins(self, target: TenantTarget, fenced: bool) -> None:
        """``ACCOUNT LOCK`` (or ``UNLOCK``) the application accounts at every host; when
        locking, also ``KILL`` their connections (a lock refuses only new logins)."""
        users = fenced_logins(target.credentials)
        if not users:
            return
        marks = ", ".join(["%s"] * len(users))
        verb = "LOCK" if fenced else "UNLOCK"
        async with self._session(target, no_database=True) as conn, conn.cursor() as cur:
            await cur.execute(
                f"SELECT User, Host FROM mysql.global_priv WHERE User IN ({marks})", users)
            for user, host in await cur.fetchall():
                await cur.execute(f"ALTER USER {account(str(user), str(host))} ACCOUNT {verb}")
            if not fenced:
                return
            await _kill_connections(cur, f"USER IN ({marks})", users)

    def dsn(self, endpoint: Endpoint, username: str, password: str) -> str:
        """``mysql://user:password@host:port/database``."""
        return (
            f"mysql://{quote(username, safe='')}:{quote(password, safe='')}"
            f"@{endpoint.host}:{endpoint.port}/{endpoint.database}"
        )

    async def open_pool(
        self, endpoint: Endpoint, username: str, password: str, options: PoolOptions
    ) -> PoolLike:
        """An ``aiomysql.Pool`` of autocommit utf8mb4 sessions, behind ``PoolLike``.

        ``max_statement_time`` (MariaDB) is the command timeout, enforced by the
        server; ``LOAD DATA LOCAL`` is off so a hostile server cannot read
        client files.
        """
        # aiomysql's connect_timeout bounds the TCP connect only; this bounds the
        # handshake and login of the first min_size connections too.
        async with asyncio.timeout(options.connect_timeout_s * max(options.min_size, 1)):
            pool = await aiomysql.create_pool(
                minsize=options.min_size, maxsize=options.max_size,
                host=endpoint.host, port=endpoint.port, user=username, password=password,
                db=endpoint.database, connect_timeout=options.connect_timeout_s,
                charset=DB_CHARSET, autocommit=True, local_infile=False,
                program_name=options.application_name,
                init_command=f"SET SESSION max_statement_time = {options.command_timeout_s:g}",
            )
        return _AiomysqlPool(pool)


class _AiomysqlPool:
    """``aiomysql.Pool`` with asyncpg's pool shape: acquire timeout, awaitable close."""

    def __init__(self, pool: aiomysql.Pool) -> None:
        self._pool = pool

    async def acquire(
        self, *, timeout: float | None = None,  # noqa: ASYNC109 - asyncpg.Pool.acquire's signature
    ) -> aiomysql.Connection:
        # aiomysql waits for a free connection without bound; TimeoutError after
        # ``timeout`` is what TenantPools reports as an exhausted pool.
        async with asyncio.timeout(timeout):
            return await self._pool.acquire()

    async def release(self, connection: aiomysql.Connection) -> None:
        # An open transaction makes aiomysql close the connection instead of reusing it.
        await self._pool.release(connection)

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    def terminate(self) -> None:
        self._pool.terminate()

    def get_idle_size(self) -> int:
        return int(self._pool.freesize)


def pinned_init(limits: SessionLimits) -> str:
    """The first statement of every session cloner opens on a tenant server.

    MariaDB has no per-database or per-account variable defaults and a tenant
    cannot ``SET GLOBAL``, so nothing a tenant does changes a new session's
    variables; what is set here are cloner's own bounds: a statement and a
    lock wait (metadata and row) end instead of stalling the caller.
    """
    lock_s = max(1, math.ceil(limits.lock_timeout_s))
    return (
        f"SET SESSION max_statement_time = {limits.statement_timeout_s:g}, "
        f"lock_wait_timeout = {lock_s}, innodb_lock_wait_timeout = {lock_s}"
    )


async def _close(conn: aiomysql.Connection) -> None:
    """Say goodbye (COM_QUIT) within a bound; drop the socket if the server does not answer."""
    try:
        async with asyncio.timeout(5):
            await conn.ensure_closed()
    except (OSError, TimeoutError, pymysql.err.MySQLError):
        conn.close()


#: Authentication plugins whose stored secret is a hash the client proves knowledge of.
_HASHED_PLUGINS = frozenset({"mysql_native_password", "ed25519"})


def account_problems(
    accounts: Sequence[tuple[str, str, str]], foreign_names: Sequence[str], root_password: str,
) -> list[str]:
    """What, in a neighbour's ``mysql.global_priv`` rows, would let another tenant's login in.

    An account named like one of the tenant's logins; an anonymous account
    (it matches every user name); a root account whose hash is the one of
    the tenant's own root password; an account that authenticates without a
    hashed secret (no password, ``mysql_old_password``, PAM or any plugin
    that has the client send a cleartext password). ``unix_socket`` is only
    fine at ``localhost``: it never answers over TCP.
    """
    problems = []
    mine = native_password_hash(root_password)
    for user, host, priv_text in accounts:
        if user in foreign_names:
            problems.append(f"has an account named {user}@{host}")
            continue
        if user == "":
            problems.append(f"has an anonymous account @{host}")
            continue
        try:
            priv = json.loads(priv_text)
        except ValueError:
            problems.append(f"{user}@{host} has unreadable privileges")
            continue
        if priv.get("account_locked"):
            continue
        ways = [priv, *(w for w in priv.get("auth_or") or [] if isinstance(w, dict) and w)]
        for way in ways:
            plugin = str(way.get("plugin") or "mysql_native_password")
            secret = str(way.get("authentication_string") or "")
            if plugin == "unix_socket" and host == "localhost":
                continue
            if plugin not in _HASHED_PLUGINS:
                problems.append(f"{user}@{host} authenticates with {plugin}")
            elif not secret:
                problems.append(f"{user}@{host} has no password")
            elif user == SUPERUSER and hmac.compare_digest(secret.upper(), mine):
                problems.append(f"{user}@{host} accepts this tenant's root password")
    return problems


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
        return f"({exc.args[0]}) {exc.args[1]}"
    return str(exc)


def _dumped_tables(path: Path) -> int | None:
    """``CREATE TABLE`` statements in a gzipped dump; None without the completion line."""
    tables = 0
    last = b""
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if line.startswith(b"CREATE TABLE "):
                tables += 1
            if line.strip():
                last = line
    return tables if last.startswith(_DUMP_COMPLETE) else None

