"""SQLite side of schema migrations: ``schema_info`` bookkeeping, one step per
transaction, and a catalogue of the schema for comparisons.

Blocking functions on a tenant's file; ``SqliteEngine`` implements
``MigrationHooks`` with thin methods that run them in a worker thread.

A step runs the way SQLite's documentation prescribes for the schema changes
``ALTER TABLE`` cannot make (https://www.sqlite.org/lang_altertable.html,
"Making Other Kinds Of Table Schema Changes"): foreign key enforcement is
switched off on the step's own connection *before* ``BEGIN IMMEDIATE`` (the
pragma is a silent no-op inside a transaction), the statements run, and
``PRAGMA foreign_key_check`` must come back empty before the step is recorded
and committed. ``PRAGMA defer_foreign_keys`` would not do: it only postpones
the checks, while ``DROP TABLE`` of a parent still runs an implicit
``DELETE`` whose ``ON DELETE CASCADE`` actions fire, so rebuilding ``orders``
would empty ``order_items``. Other connections keep enforcing foreign keys,
and a migration that deletes a parent row fails the final check rather than
cascading. The statements run under an authorizer that refuses PRAGMA (but
read-only introspection), ATTACH/DETACH and transaction control, which belong
to the engine.

A step is recorded in ``schema_info`` as ``kind='migration'``,
``name='<step>:<up|down>'``, ``version`` = the version the step leads to, the
file's checksum, ``applied_at`` and ``duration_ms``; like the postgres engine,
a step applied again after being reverted replaces its row, and the newest row
is the database's current version.

The catalogue is what SQLite itself reports (``PRAGMA table_list``,
``table_xinfo``, ``foreign_key_list``, ``index_list``, ``index_xinfo``) plus
each object's stored ``CREATE`` statement, normalised: whitespace, letter case
of keywords and identifiers (both case-insensitive in SQLite) and quotes
around plain identifiers (``ALTER TABLE … RENAME TO`` writes the new name
quoted) do not count; comments are listed apart, since the templates keep
table and column descriptions as comments in the definition.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.migrations.errors import MigrationError
from cloner.migrations.recorded import already_applied, state_from_rows

_STATE = """
SELECT kind, name, version, checksum, applied_at, duration_ms
  FROM schema_info WHERE kind IN ('root', 'migration') ORDER BY id
"""
_HAS_SCHEMA_INFO = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_info'"
#: Authorizer actions a migration may not use: the engine owns attached databases
#: and the transaction (a COMMIT in a script would commit half a step).
_REFUSED_ACTIONS = frozenset({sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH,
                              sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT})
#: Pragmas that only read, allowed because SQLite issues some itself: ADD COLUMN
#: with a CHECK runs quick_check on the table, RENAME reads table_info. Every other
#: pragma (foreign_keys, writable_schema, journal_mode, …) is the engine's.
_READ_ONLY_PRAGMAS = frozenset({
    "quick_check", "integrity_check", "foreign_key_check", "foreign_key_list",
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
})


@contextlib.contextmanager
def _open(
    path: Path, tenant_id: str, *, timeout_s: float, read_only: bool = False
) -> Iterator[sqlite3.Connection]:
    """An autocommit connection (transactions are explicit) that never creates the file."""
    mode = "ro" if read_only else "rw"
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True,
                               timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise MigrationError(f"tenant {tenant_id}: cannot open {path}: {exc}") from exc
    try:
        yield conn
    finally:
        conn.close()


def _timestamp(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value is not None else None
    except ValueError:
        return None


def _state(conn: sqlite3.Connection, tenant_id: str) -> MigrationState:
    if conn.execute(_HAS_SCHEMA_INFO).fetchone() is None:
        raise MigrationError(f"tenant {tenant_id}: the database has no schema_info table")
    keys = ("kind", "name", "version", "checksum", "applied_at", "duration_ms")
    rows = [dict(zip(keys, row, strict=True)) for row in conn.execute(_STATE)]
    for row in rows:
        row["applied_at"] = _timestamp(row["applied_at"])
    return state_from_rows(tenant_id, rows)


def read_state(path: Path, tenant_id: str, timeout_s: float) -> MigrationState:
    """What ``schema_info`` says about the root version and the applied steps."""
    try:
        with _open(path, tenant_id, timeout_s=timeout_s, read_only=True) as conn:
            return _state(conn, tenant_id)
    except sqlite3.Error as exc:
        raise MigrationError(f"tenant {tenant_id}: cannot read schema_info: {exc}") from exc


def plain_sql_only(action: int, arg1: str | None, *_rest: object) -> int:
    """SQLite authorizer: deny ATTACH/DETACH, transaction control and writing pragmas."""
    if action in _REFUSED_ACTIONS or (
        action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in _READ_ONLY_PRAGMAS
    ):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def apply_step(
    path: Path, tenant_id: str, *, script: MigrationScript, statements: Sequence[str],
    lock_timeout_s: float,
) -> AppliedMigration:
    """Run ``statements`` (the script's, in order) and record the step, in one transaction.

    Waits at most ``lock_timeout_s`` for another writer (SQLite's busy timeout).
    """
    with _open(path, tenant_id, timeout_s=lock_timeout_s) as conn:
        # Outside the transaction, or it would be ignored (module docstring).
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            # IMMEDIATE takes the write lock now: the state read below cannot change
            # before the commit, whoever else migrates or writes this file.
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise MigrationError(
                f"tenant {tenant_id}: {script.label}: the database stayed locked by another "
                f"writer for {lock_timeout_s:g}s ({exc}); retry when it is idle"
            ) from exc
        try:
            applied = _apply_locked(conn, tenant_id, script, statements)
            if conn.in_transaction:  # not when the step was found already applied
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # some errors (disk full, I/O) already rolled back
                conn.execute("ROLLBACK")
            raise
    return applied


def _apply_locked(
    conn: sqlite3.Connection, tenant_id: str, script: MigrationScript,
    statements: Sequence[str],
) -> AppliedMigration:
    state = _state(conn, tenant_id)
    if (recorded := already_applied(state, script, tenant_id)) is not None:
        conn.execute("ROLLBACK")
        return recorded
    started = time.monotonic()
    conn.set_authorizer(plain_sql_only)
    done = 0
    try:
        for statement in statements:
            # fetchall: a statement with RETURNING only runs to the end when read out.
            conn.execute(statement).fetchall()
            done += 1
    except sqlite3.Error as exc:
        reason = str(exc)
        if reason == "not authorized":
            reason = ("PRAGMA, ATTACH, DETACH and transaction control are the engine's, "
                      "not a migration's")
        raise MigrationError(
            f"tenant {tenant_id}: {script.label} failed at statement {done + 1} "
            f"({_first_line(statements[done])}): {type(exc).__name__}: {reason}"
        ) from exc
    finally:
        conn.set_authorizer(None)
    broken = conn.execute("PRAGMA foreign_key_check").fetchmany(3)
    if broken:
        shown = ", ".join(f"{table} rowid {rowid} -> {parent}"
                          for table, rowid, parent, _fk in broken)
        raise MigrationError(
            f"tenant {tenant_id}: {script.label} leaves rows whose foreign keys point "
            f"nowhere ({shown}); the step was rolled back"
        )
    duration_ms = int((time.monotonic() - started) * 1000)
    conn.execute(
        "DELETE FROM schema_info WHERE kind = 'migration' AND name = ? AND version = ?",
        (script.record_name, script.to_version),
    )
    row = conn.execute(
        "INSERT INTO schema_info (kind, name, version, checksum, duration_ms) "
        "VALUES ('migration', ?, ?, ?, ?) RETURNING applied_at",
        (script.record_name, script.to_version, script.checksum, duration_ms),
    ).fetchone()
    return AppliedMigration(script.step, script.direction, script.to_version, script.checksum,
                            _timestamp(row[0] if row else None), duration_ms)


def _first_line(statement: str) -> str:
    lines = [line.strip() for line in statement.splitlines()]
    code = next((line for line in lines if line and not line.startswith("--")), "")
    return code[:80]


def realign(
    path: Path, tenant_id: str, applied: AppliedMigration, checksum: str, timeout_s: float
) -> None:
    """Replace the recorded checksum of one applied step."""
    with _open(path, tenant_id, timeout_s=timeout_s) as conn:
        try:
            changed = conn.execute(
                "UPDATE schema_info SET checksum = ? "
                "WHERE kind = 'migration' AND name = ? AND version = ?",
                (checksum, applied.record_name, applied.version),
            ).rowcount
        except sqlite3.Error as exc:
            raise MigrationError(f"tenant {tenant_id}: cannot update schema_info: {exc}") \
                from exc
    if changed != 1:
        raise MigrationError(
            f"tenant {tenant_id}: no schema_info row for {applied.record_name} "
            f"at {applied.version}"
        )


def drop_files(path: Path) -> None:
    """Remove the database file and its WAL, shared-memory and rollback journal files."""
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        name.unlink(missing_ok=True)


# ------------------------------------------------------------------ catalogue

_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
      | (?P<string>'(?:[^']|'')*')
      | (?P<blob>[xX]'[0-9A-Fa-f]*')
      | (?P<quoted>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
      | (?P<number>0[xX][0-9A-Fa-f]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<word>[^\W\d][\w$]*)
      | (?P<op>->>|->|\|\||<<|>>|<=|>=|==|!=|<>|.)""",
    re.S | re.X,
)
_PLAIN_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TABLE_CONSTRAINT = {"constraint", "check", "primary", "unique", "foreign"}


def _tokens(sql: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Normalised (kind, text) tokens of ``sql``, and its comments in order."""
    tokens: list[tuple[str, str]] = []
    comments: list[str] = []
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup or "op", match.group()
        if kind == "space":
            continue
        if kind == "comment":
            body = text[2:] if text.startswith("--") else text[2:].removesuffix("*/")
            if body.split():
                comments.append(" ".join(body.split()))
        elif kind == "word":
            tokens.append((kind, text.translate(_ASCII_LOWER)))
        elif kind == "quoted":
            name = text[1:-1].replace(text[0] * 2, text[0]) if text[0] != "[" else text[1:-1]
            if _PLAIN_IDENT.fullmatch(name):
                tokens.append(("ident", name.translate(_ASCII_LOWER)))
            else:
                tokens.append(("ident", '"' + name.replace('"', '""').translate(_ASCII_LOWER)
                               + '"'))
        elif kind == "blob":
            tokens.append((kind, text.lower()))
        else:
            tokens.append((kind, text))
    return tokens, comments


def _render(tokens: Sequence[tuple[str, str]]) -> str:
    out: list[str] = []
    previous = ""
    for _kind, text in tokens:
        if out and previous not in ("(", ".") and text not in (")", ",", "."):
            out.append(" ")
        out.append(text)
        previous = text
    return "".join(out)


def normalise_sql(sql: str) -> tuple[str, list[str]]:
    """``sql`` with cosmetic differences removed, and its comments (whitespace collapsed).

    Whitespace, comments, the letter case of words and the quotes around plain
    identifiers go; string, blob and number literals are kept exactly.
    """
    tokens, comments = _tokens(sql)
    return _render(tokens), comments


def _checks(sql: str) -> list[str]:
    """The CHECK constraints of a CREATE TABLE, each prefixed by its column (or ``table``)."""
    tokens, _comments = _tokens(sql)
    start = next((i for i, t in enumerate(tokens) if t[1] == "("), None)
    if start is None:
        return []
    items: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for token in tokens[start:]:
        if token[1] == "(":
            depth += 1
            if depth == 1:
                continue
        elif token[1] == ")":
            depth -= 1
            if depth == 0:
                break
        elif token[1] == "," and depth == 1:
            items.append([])
            continue
        items[-1].append(token)
    found = []
    for item in items:
        if not item:
            continue
        kind, first = item[0]
        owner = "table" if kind == "word" and first in _TABLE_CONSTRAINT else first
        for i, token in enumerate(item[:-1]):
            if token == ("word", "check") and item[i + 1][1] == "(":
                found.append(f"{owner}: {_render(_group(item, i))}")
    return found


def _group(tokens: Sequence[tuple[str, str]], at: int) -> Sequence[tuple[str, str]]:
    """``tokens[at]`` (CHECK) through the parenthesis that closes the group after it."""
    depth = 0
    for i in range(at + 1, len(tokens)):
        if tokens[i][1] == "(":
            depth += 1
        elif tokens[i][1] == ")":
            depth -= 1
            if depth == 0:
                return tokens[at:i + 1]
    return tokens[at:]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def catalogue(path: Path, tenant_id: str, timeout_s: float) -> dict[str, Any]:
    """The schema of the file at ``path`` as plain data, order-stable (see module docstring)."""
    with _open(path, tenant_id, timeout_s=timeout_s, read_only=True) as conn:
        try:
            conn.execute("BEGIN")  # one read transaction: every query sees the same schema
            return _catalogue(conn)
        except sqlite3.Error as exc:
            raise MigrationError(f"tenant {tenant_id}: cannot read the schema: {exc}") \
                from exc
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")


def _catalogue(conn: sqlite3.Connection) -> dict[str, Any]:
    stored = {(kind, name): (table, sql) for kind, name, table, sql in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema")}
    relations = sorted(
        (name, kind, bool(without_rowid), bool(strict))
        for _schema, name, kind, _ncol, without_rowid, strict
        in conn.execute("PRAGMA main.table_list")
        if not name.startswith("sqlite_")
    )
    tables: list[dict[str, Any]] = []
    columns: dict[str, list[dict[str, Any]]] = {}
    checks: dict[str, list[str]] = {}
    foreign_keys: list[dict[str, Any]] = []
    indexes: list[dict[str, Any]] = []
    for name, kind, without_rowid, strict in relations:
        sql = stored.get(("view" if kind == "view" else "table", name), ("", None))[1] or ""
        definition, comments = normalise_sql(sql)
        tables.append({"name": name, "kind": kind, "strict": strict,
                       "without_rowid": without_rowid, "definition": definition,
                       "comments": comments})
        # In column order (cid): a column added by a migration must come last in the
        # fresh template too, or SELECT * would differ between the two.
        columns[name] = [
            {"name": col, "type": col_type, "not_null": bool(notnull),
             "default": normalise_sql(default)[0] if default is not None else None,
             "primary_key": pk, "hidden": hidden}
            for _cid, col, col_type, notnull, default, pk, hidden
            in conn.execute(f"PRAGMA table_xinfo({_quote(name)})")
        ]
        if kind == "table":
            checks[name] = _checks(sql)
            foreign_keys.extend(_foreign_keys(conn, name))
            indexes.extend(_indexes(conn, name, stored))
    triggers = []
    for (kind, name), (table, sql) in sorted(stored.items()):
        if kind == "trigger":
            definition, comments = normalise_sql(sql or "")
            triggers.append({"relation": table, "name": name, "definition": definition,
                             "comments": comments})
    return {
        "tables": tables, "columns": columns, "checks": checks,
        "foreign_keys": sorted(foreign_keys, key=lambda f: (f["relation"], f["name"])),
        "indexes": sorted(indexes, key=lambda i: (i["relation"], i["name"])),
        "triggers": sorted(triggers, key=lambda t: (t["relation"], t["name"])),
    }


def _foreign_keys(conn: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    keys: dict[int, dict[str, Any]] = {}
    for fk_id, _seq, parent, source, dest, on_update, on_delete, match in conn.execute(
        f"PRAGMA foreign_key_list({_quote(table)})"
    ):
        key = keys.setdefault(fk_id, {"relation": table, "columns": [], "parent": parent,
                                      "parent_columns": [], "on_update": on_update,
                                      "on_delete": on_delete, "match": match})
        key["columns"].append(source)
        key["parent_columns"].append(dest)
    # Named by what they link: PRAGMA's ids are positions, not names.
    return [k | {"name": f"({', '.join(k['columns'])}) -> {k['parent']}"}
            for k in keys.values()]


def _indexes(
    conn: sqlite3.Connection, table: str, stored: dict[tuple[str, str], tuple[str, str | None]]
) -> list[dict[str, Any]]:
    found = []
    for _seq, name, unique, origin, partial in conn.execute(
        f"PRAGMA index_list({_quote(table)})"
    ):
        keys = [
            {"column": col if cid >= 0 else ("<rowid>" if cid == -1 else "<expression>"),
             "descending": bool(desc), "collation": coll}
            for _seqno, cid, col, desc, coll, key in conn.execute(
                f"PRAGMA index_xinfo({_quote(name)})")
            if key
        ]
        # Autoindexes (UNIQUE / PRIMARY KEY) have no CREATE statement; expressions and a
        # partial index's WHERE live only in theirs.
        definition, comments = normalise_sql(stored.get(("index", name), ("", None))[1] or "")
        found.append({"relation": table, "name": name, "unique": bool(unique),
                      "origin": origin, "partial": bool(partial), "columns": keys,
                      "definition": definition or None, "comments": comments})
    return found
