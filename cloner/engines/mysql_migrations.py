"""MariaDB side of schema migrations: ``schema_info`` bookkeeping, steps run statement by
statement, and a catalogue of the schema for comparisons.

``MysqlEngine`` implements ``MigrationHooks`` with thin methods over these
functions; they take an open aiomysql connection so the engine keeps owning
how connections are made (and this module needs nothing from it at run time).

MariaDB commits every DDL statement on its own, so a step is not all or
nothing: it runs one statement at a time, and only once the last one has run
is it recorded in ``schema_info`` (a small DML transaction). A step that fails
part-way is therefore never taken for an applied one; the rollout restores
the tenant from its pre-migration backup (``transactional_ddl = False``).
Before its first statement a step marks the database (its comment, where
``restore`` keeps its progress marks too: ``cloner:migrating <step>
<version>``) and clears the mark once recorded, so a step cut short by a
crash or Ctrl-C is seen as such (``MigrationState.in_progress``) and no step
ever runs on top of it: the next run restores the pre-migration backup.
Two runs on the same database are serialised by a server-wide named lock
(``GET_LOCK``), which, unlike a table lock, survives the implicit commits.

A step is recorded as ``kind='migration'``, ``name='<step>:<up|down>'``,
``version`` = the version the step leads to, the file's checksum, ``applied_at``
and ``duration_ms``; as for PostgreSQL a step applied again after being
reverted replaces its row, and the newest row is the database's version.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiomysql
import pymysql

from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.migrations.errors import MigrationConflict, MigrationError
from cloner.migrations.recorded import already_applied, state_from_rows

if TYPE_CHECKING:
    from cloner.engines.mysql import Statement

_STATE_COLUMNS = ("kind", "name", "version", "checksum", "applied_at", "duration_ms")
_STATE = f"""
SELECT {", ".join(_STATE_COLUMNS)}
  FROM schema_info WHERE kind IN ('root', 'migration') ORDER BY id
"""
_HAS_SCHEMA_INFO = """
SELECT COUNT(*) FROM information_schema.TABLES
 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'schema_info'
"""


#: Database comment of a step in progress (followed by ``<record name> <to version>``).
MIGRATING_MARK = "cloner:migrating "
_COMMENT = "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()"


def in_progress(comment: str, state: MigrationState) -> str | None:
    """The step a ``MIGRATING_MARK`` comment names, unless that step was recorded since
    (a crash between the record's commit and clearing the mark)."""
    if not comment.startswith(MIGRATING_MARK):
        return None
    name, _, version = comment[len(MIGRATING_MARK):].partition(" ")
    last = state.applied[-1] if state.applied else None
    if last is not None and last.record_name == name and last.version == version:
        return None
    return name


async def _comment(cur: aiomysql.Cursor) -> str:
    await cur.execute(_COMMENT)
    row = await cur.fetchone()
    return str(row[0] or "") if row else ""


async def _set_comment(cur: aiomysql.Cursor, database: str, comment: str) -> None:
    quoted = "`" + database.replace("`", "``") + "`"
    await cur.execute(f"ALTER DATABASE {quoted} COMMENT = %s", (comment,))


def lock_name(database: str) -> str:
    """The named lock that serialises migrations of one database (GET_LOCK: ≤ 64 chars)."""
    return f"cloner:migrate:{database}"[:64]


def lock_wait_s(lock_timeout_s: float) -> int:
    """``lock_timeout_s`` as MariaDB's whole-second lock waits (at least 1: 0 means no wait)."""
    return max(1, math.ceil(lock_timeout_s))


def _utc(value: Any) -> Any:
    # TIMESTAMP values come back naive, in the session time zone (set to UTC).
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else value


async def _state_rows(cur: aiomysql.Cursor) -> list[dict[str, Any]]:
    await cur.execute(_STATE)
    return [
        {k: _utc(v) for k, v in zip(_STATE_COLUMNS, row, strict=True)}
        for row in await cur.fetchall()
    ]


async def read_state(conn: aiomysql.Connection, tenant_id: str) -> MigrationState:
    """What ``schema_info`` says about the root version and the applied steps."""
    async with conn.cursor() as cur:
        await cur.execute(_HAS_SCHEMA_INFO)
        row = await cur.fetchone()
        if not row or not row[0]:
            raise MigrationError(f"tenant {tenant_id}: the database has no schema_info table")
        await cur.execute("SET SESSION time_zone = '+00:00'")
        state = state_from_rows(tenant_id, await _state_rows(cur))
        return replace(state, in_progress=in_progress(await _comment(cur), state))


async def apply_step(
    conn: aiomysql.Connection, tenant_id: str, database: str, *, script: MigrationScript,
    statements: Sequence[Statement], session: Mapping[str, str], lock_timeout_s: float,
) -> AppliedMigration:
    """Run ``statements`` (the script, split) one by one, then record the step.

    ``conn`` is the owner's session in the tenant database: objects a step
    creates belong to the same account as the templates' and are reached by
    the app/readonly database-level grants. ``session`` holds the variables
    the templates run under (sql_mode, time_zone …), set first.
    """
    wait_s = lock_wait_s(lock_timeout_s)
    lock = lock_name(database)
    async with conn.cursor() as cur:
        for variable, value in session.items():
            await cur.execute(f"SET SESSION {variable} = %s", (value,))
        # DDL waits for metadata locks, the backfill for row locks: both bounded, so an
        # application transaction holding a table fails the step instead of stalling it.
        await cur.execute("SET SESSION lock_wait_timeout = %s", (wait_s,))
        await cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (wait_s,))
        # A step may run long (a backfill): the migration's own deadlines bound it.
        await cur.execute("SET SESSION max_statement_time = 0")
        await cur.execute("SELECT GET_LOCK(%s, %s)", (lock, wait_s))
        got = await cur.fetchone()
        if not got or got[0] != 1:
            raise MigrationConflict(
                f"tenant {tenant_id}: another migration of this database holds {lock!r}"
            )
        # Not released when cancelled: the connection is then closed mid-protocol, and a
        # named lock (like an open transaction) ends with its session on the server.
        try:
            applied = await _apply_locked(cur, tenant_id, database, script, statements)
        except Exception:
            await _release(cur, lock)
            raise
        await _release(cur, lock)
        return applied


async def _release(cur: aiomysql.Cursor, lock: str) -> None:
    # A lost connection took the lock with it: nothing left to release.
    with contextlib.suppress(pymysql.err.MySQLError, OSError):
        await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
        await cur.fetchall()


async def _apply_locked(
    cur: aiomysql.Cursor, tenant_id: str, database: str, script: MigrationScript,
    statements: Sequence[Statement],
) -> AppliedMigration:
    # Read under the lock: no other run can record a step before this one has.
    state = state_from_rows(tenant_id, await _state_rows(cur))
    comment = await _comment(cur)
    if (recorded := already_applied(state, script, tenant_id)) is not None:
        if comment.startswith(MIGRATING_MARK):
            await _set_comment(cur, database, "")
        return recorded
    if (half := in_progress(comment, state)) is not None:
        raise MigrationConflict(
            f"tenant {tenant_id}: step {half} was cut short part-way; the database must be "
            "restored from its pre-migration backup before any step runs"
        )
    # Marked before the first statement (each commits on its own): a crash from here on
    # leaves a database that says it is between two versions.
    await _set_comment(cur, database, f"{MIGRATING_MARK}{script.record_name} {script.to_version}")
    started = time.monotonic()
    for done, statement in enumerate(statements):
        try:
            await cur.execute(statement.sql)
        except (pymysql.err.MySQLError, OSError, TimeoutError) as exc:
            if done == 0:
                # A failed DDL statement leaves nothing behind (atomic DDL): with none
                # committed the database is still at the step's source version.
                with contextlib.suppress(pymysql.err.MySQLError, OSError):
                    await _set_comment(cur, database, "")
            first = statement.sql.splitlines()[0][:80]
            raise MigrationError(
                f"tenant {tenant_id}: {script.label} failed at line {statement.line} "
                f"({first}) after {done} of {len(statements)} statements: "
                f"{type(exc).__name__}: {_error_text(exc)}"
            ) from exc
    duration_ms = int((time.monotonic() - started) * 1000)
    # Only now, every statement having run: one small transaction (DML is transactional).
    await cur.execute("START TRANSACTION")
    try:
        await cur.execute(
            "DELETE FROM schema_info WHERE kind = 'migration' AND name = %s AND version = %s",
            (script.record_name, script.to_version),
        )
        await cur.execute(
            "INSERT INTO schema_info (kind, name, version, checksum, duration_ms) "
            "VALUES ('migration', %s, %s, %s, %s)",
            (script.record_name, script.to_version, script.checksum, duration_ms),
        )
        await cur.execute("SELECT applied_at FROM schema_info WHERE id = LAST_INSERT_ID()")
        row = await cur.fetchone()
        await cur.execute("COMMIT")
    except Exception:
        await cur.execute("ROLLBACK")
        raise
    await _set_comment(cur, database, "")
    return AppliedMigration(script.step, script.direction, script.to_version, script.checksum,
                            _utc(row[0]) if row else None, duration_ms)


async def realign(
    conn: aiomysql.Connection, tenant_id: str, applied: AppliedMigration, checksum: str
) -> None:
    """Replace the recorded checksum of one applied step."""
    where = "WHERE kind = 'migration' AND name = %s AND version = %s"
    key = (applied.record_name, applied.version)
    async with conn.cursor() as cur:
        # Counted first: the UPDATE's row count is of changed rows, 0 for the same value.
        await cur.execute(f"SELECT COUNT(*) FROM schema_info {where}", key)
        row = await cur.fetchone()
        if not row or row[0] != 1:
            raise MigrationError(
                f"tenant {tenant_id}: no schema_info row for {applied.record_name} "
                f"at {applied.version}"
            )
        await cur.execute(f"UPDATE schema_info SET checksum = %s {where}", (checksum, *key))


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
        return f"({exc.args[0]}) {exc.args[1]}"
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------ catalogue

_TABLES = """
SELECT TABLE_NAME, TABLE_TYPE, ENGINE, ROW_FORMAT, TABLE_COLLATION, CREATE_OPTIONS,
       TABLE_COMMENT
  FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME
"""

_COLUMNS = """
SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA,
       GENERATION_EXPRESSION, CHARACTER_SET_NAME, COLLATION_NAME, COLUMN_COMMENT
  FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s
 ORDER BY TABLE_NAME, ORDINAL_POSITION
"""

# PRIMARY KEY, UNIQUE, FOREIGN KEY and CHECK, each with what defines it. MariaDB names
# a column-level CHECK after its column, so a UNIQUE key and a CHECK can share a name:
# the type is part of the key under which a constraint is listed.
_CONSTRAINTS = """
SELECT t.TABLE_NAME, t.CONSTRAINT_NAME, t.CONSTRAINT_TYPE,
       (SELECT GROUP_CONCAT(CONCAT('`', k.COLUMN_NAME, '`') ORDER BY k.ORDINAL_POSITION)
          FROM information_schema.KEY_COLUMN_USAGE k
         WHERE k.CONSTRAINT_SCHEMA = t.CONSTRAINT_SCHEMA AND k.TABLE_NAME = t.TABLE_NAME
           AND k.CONSTRAINT_NAME = t.CONSTRAINT_NAME) AS key_columns,
       (SELECT CONCAT(k.REFERENCED_TABLE_NAME, ' (',
                      GROUP_CONCAT(CONCAT('`', k.REFERENCED_COLUMN_NAME, '`')
                                   ORDER BY k.ORDINAL_POSITION), ')')
          FROM information_schema.KEY_COLUMN_USAGE k
         WHERE k.CONSTRAINT_SCHEMA = t.CONSTRAINT_SCHEMA AND k.TABLE_NAME = t.TABLE_NAME
           AND k.CONSTRAINT_NAME = t.CONSTRAINT_NAME
           AND k.REFERENCED_TABLE_NAME IS NOT NULL
         GROUP BY k.REFERENCED_TABLE_NAME) AS referenced,
       r.UPDATE_RULE, r.DELETE_RULE, c.LEVEL, c.CHECK_CLAUSE
  FROM information_schema.TABLE_CONSTRAINTS t
  LEFT JOIN information_schema.REFERENTIAL_CONSTRAINTS r
         ON t.CONSTRAINT_TYPE = 'FOREIGN KEY'
        AND r.CONSTRAINT_SCHEMA = t.CONSTRAINT_SCHEMA AND r.TABLE_NAME = t.TABLE_NAME
        AND r.CONSTRAINT_NAME = t.CONSTRAINT_NAME
  LEFT JOIN information_schema.CHECK_CONSTRAINTS c
         ON t.CONSTRAINT_TYPE = 'CHECK'
        AND c.CONSTRAINT_SCHEMA = t.CONSTRAINT_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
        AND c.CONSTRAINT_NAME = t.CONSTRAINT_NAME
 WHERE t.TABLE_SCHEMA = %s
 ORDER BY t.TABLE_NAME, t.CONSTRAINT_TYPE, t.CONSTRAINT_NAME
"""

_INDEXES = """
SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, INDEX_TYPE, COLUMN_NAME, COLLATION, SUB_PART,
       IGNORED, INDEX_COMMENT
  FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s
 ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""

_TRIGGERS = """
SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER,
       ACTION_STATEMENT, DEFINER, SQL_MODE
  FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s
 ORDER BY EVENT_OBJECT_TABLE, TRIGGER_NAME
"""

_VIEWS = """
SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, IS_UPDATABLE, DEFINER, SECURITY_TYPE,
       ALGORITHM
  FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME
"""

_ROUTINES = """
SELECT ROUTINE_NAME, ROUTINE_TYPE, DTD_IDENTIFIER, ROUTINE_DEFINITION, IS_DETERMINISTIC,
       SQL_DATA_ACCESS, SECURITY_TYPE, DEFINER
  FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s
 ORDER BY ROUTINE_TYPE, ROUTINE_NAME
"""

_EVENTS = """
SELECT EVENT_NAME, EVENT_DEFINITION, EVENT_TYPE, INTERVAL_VALUE, INTERVAL_FIELD, STATUS,
       ON_COMPLETION, DEFINER
  FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s ORDER BY EVENT_NAME
"""

_SCHEMA = """
SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME
  FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s
"""

# Database-level grants are LIKE patterns (`acme\_corp`): every pattern that matches
# the database reaches it, whatever its spelling.
_SCHEMA_PRIVILEGES = """
SELECT GRANTEE, TABLE_SCHEMA, PRIVILEGE_TYPE, IS_GRANTABLE
  FROM information_schema.SCHEMA_PRIVILEGES WHERE %s LIKE TABLE_SCHEMA
"""

_TABLE_PRIVILEGES = """
SELECT GRANTEE, TABLE_NAME, PRIVILEGE_TYPE, IS_GRANTABLE
  FROM information_schema.TABLE_PRIVILEGES WHERE TABLE_SCHEMA = %s
"""

_COLUMN_PRIVILEGES = """
SELECT GRANTEE, CONCAT(TABLE_NAME, '.', COLUMN_NAME), PRIVILEGE_TYPE, IS_GRANTABLE
  FROM information_schema.COLUMN_PRIVILEGES WHERE TABLE_SCHEMA = %s
"""

_GRANTEE = re.compile(r"^'((?:[^'\\]|\\.|'')*)'@")


def account_user(account: str) -> str:
    """The user part of ``'user'@'host'`` (a GRANTEE) or ``user@host`` (a DEFINER)."""
    quoted = _GRANTEE.match(account)
    if quoted:
        return quoted.group(1)
    return account.rsplit("@", 1)[0] if "@" in account else account


class _Namer:
    """Replaces what differs between two tenants (their database and account names) by
    what they stand for, so that catalogues of different tenants compare."""

    def __init__(self, database: str, own_pattern: str, role_kinds: Mapping[str, str]) -> None:
        self.database = database
        self.own_patterns = {database, own_pattern}
        self.role_kinds = dict(role_kinds)
        names = sorted({database, *role_kinds}, key=len, reverse=True)
        self._names = re.compile(
            "(?<![A-Za-z0-9_$])(" + "|".join(re.escape(n) for n in names) + ")(?![A-Za-z0-9_$])"
        )

    def kind(self, user: str) -> str:
        if user == "PUBLIC":
            return user
        return self.role_kinds.get(user, f"role:{user}")

    def text(self, value: str | None) -> str | None:
        """SQL text with the database and account names replaced by ``{database}``, ``{app}`` …"""
        if value is None:
            return None

        def name(match: re.Match[str]) -> str:
            found = match.group(1)
            return "{database}" if found == self.database else "{" + self.kind(found) + "}"

        return self._names.sub(name, value)

    def grant(self, grantee: str, privilege: str, grantable: str, where: str = "") -> str:
        line = f"{self.kind(account_user(grantee))}:{privilege}"
        if grantable == "YES":
            line += ":grantable"
        return line + (f" on {where}" if where else "")


async def _rows(cur: aiomysql.Cursor, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    await cur.execute(sql, args)
    return list(await cur.fetchall())


def _md5(text: str | None) -> str | None:
    return None if text is None else hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


async def catalogue(
    conn: aiomysql.Connection, database: str, own_pattern: str, role_kinds: Mapping[str, str],
) -> dict[str, Any]:
    """The tenant database's schema as plain data, from ``information_schema``.

    Tables, columns (type, nullability, default, extra, generation, collation,
    comment; in column order), keys and constraints with their definitions
    (CHECK clauses included), indexes (columns, direction, prefix, type),
    triggers, views, routines and events, the database's character set, and
    every grant that reaches it, by role kind. Account and database names are
    replaced by what they stand for (``role_kinds``: account → ``owner``/``app``
    …; ``own_pattern``: the escaped name the database's grants use). Left out
    on purpose: counters (AUTO_INCREMENT, row counts), the database comment
    (``restore`` keeps its progress marks there) and account hosts (each tenant
    network has its own gateway).
    """
    names = _Namer(database, own_pattern, role_kinds)
    async with conn.cursor() as cur:
        schema = await _rows(cur, _SCHEMA, database)
        relations = [
            {"name": t, "type": kind, "engine": engine, "row_format": row_format,
             "collation": collation, "options": options, "comment": comment}
            for t, kind, engine, row_format, collation, options, comment
            in await _rows(cur, _TABLES, database)
        ]
        columns: dict[str, list[dict[str, Any]]] = {}
        for (table, name, type_, nullable, default, extra, generated, charset, collation,
             comment) in await _rows(cur, _COLUMNS, database):
            columns.setdefault(table, []).append({
                "name": name, "type": type_, "nullable": nullable == "YES", "default": default,
                "extra": extra, "generated": generated, "charset": charset,
                "collation": collation, "comment": comment,
            })
        constraints: dict[str, dict[str, str]] = {}
        for (table, name, type_, key_columns, referenced, on_update, on_delete, level,
             clause) in await _rows(cur, _CONSTRAINTS, database):
            if type_ == "CHECK":
                definition = f"{str(level).lower()} CHECK ({clause})"
            elif type_ == "FOREIGN KEY":
                definition = (f"({key_columns}) REFERENCES {referenced} "
                              f"ON UPDATE {on_update} ON DELETE {on_delete}")
            else:
                definition = f"({key_columns})"
            constraints.setdefault(table, {})[f"{type_} {name}"] = definition
        indexes: dict[str, dict[str, dict[str, Any]]] = {}
        for (table, name, non_unique, index_type, column, collation, sub_part, ignored,
             comment) in await _rows(cur, _INDEXES, database):
            index = indexes.setdefault(table, {}).setdefault(name, {
                "unique": not int(non_unique), "type": index_type, "columns": [],
                "ignored": ignored, "comment": comment,
            })
            part = f"{column}({sub_part})" if sub_part is not None else str(column)
            index["columns"].append(part + (" DESC" if collation == "D" else ""))
        triggers: dict[str, dict[str, dict[str, Any]]] = {}
        for (table, name, timing, event, order, statement, definer,
             sql_mode) in await _rows(cur, _TRIGGERS, database):
            triggers.setdefault(table, {})[name] = {
                "timing": timing, "event": event, "order": order,
                "statement": names.text(statement),
                "definer": names.kind(account_user(definer)), "sql_mode": sql_mode,
            }
        views = {
            name: {"definition": names.text(definition), "check_option": check,
                   "updatable": updatable, "definer": names.kind(account_user(definer)),
                   "security": security, "algorithm": algorithm}
            for name, definition, check, updatable, definer, security, algorithm
            in await _rows(cur, _VIEWS, database)
        }
        routines = {
            f"{kind} {name}": {"returns": returns, "definition_md5": _md5(names.text(body)),
                               "deterministic": deterministic, "data_access": access,
                               "security": security,
                               "definer": names.kind(account_user(definer))}
            for name, kind, returns, body, deterministic, access, security, definer
            in await _rows(cur, _ROUTINES, database)
        }
        events = {
            name: {"definition_md5": _md5(names.text(body)), "type": type_,
                   "every": f"{value} {field}" if value is not None else None,
                   "status": status, "on_completion": completion,
                   "definer": names.kind(account_user(definer))}
            for name, body, type_, value, field, status, completion, definer
            in await _rows(cur, _EVENTS, database)
        }
        database_grants = sorted(
            names.grant(grantee, privilege, grantable,
                        "" if pattern in names.own_patterns else f"pattern {pattern}")
            for grantee, pattern, privilege, grantable
            in await _rows(cur, _SCHEMA_PRIVILEGES, database)
        )
        object_grants: dict[str, list[str]] = {}
        for sql in (_TABLE_PRIVILEGES, _COLUMN_PRIVILEGES):
            for grantee, obj, privilege, grantable in await _rows(cur, sql, database):
                object_grants.setdefault(str(obj), []).append(
                    names.grant(grantee, privilege, grantable))
    return {
        "database": {"charset": schema[0][0], "collation": schema[0][1]} if schema else None,
        "relations": relations,
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
        "triggers": triggers,
        "views": views,
        "routines": routines,
        "events": events,
        "privileges": {"database": database_grants,
                       "objects": {k: sorted(v) for k, v in sorted(object_grants.items())}},
    }
