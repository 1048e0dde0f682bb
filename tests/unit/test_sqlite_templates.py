"""SQLite templates: each (version, industry) applies cleanly and mirrors its postgres twin.

The postgres templates are the reference. Their CREATE TABLE / CREATE INDEX /
INSERT statements are read with a small tokenizer (below) that refuses SQL it
does not understand, and compared with what SQLite itself reports about a
database built from the sqlite templates: tables, columns in order,
nullability, defaults, keys, foreign keys with their ON DELETE action,
indexes, and the seed rows value by value.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cloner.catalog import Catalog, ResolvedTemplates
from cloner.domain import Industry

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ["v1.0", "v1.1", "v1.2"]
INDUSTRIES = list(Industry)
COMBOS = [(v, i) for v in VERSIONS for i in INDUSTRIES]
COMBO_IDS = [f"{v}-{i.value}" for v, i in COMBOS]

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# --------------------------------------------------------------------------
# A tokenizer and parser for the subset of PostgreSQL DDL/DML the templates use
# --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<comment>--[^\n]*|/\*.*?\*/)
      | (?P<string>'(?:[^']|'')*')
      | (?P<ident>"(?:[^"]|"")*")
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<cast>::)
      | (?P<op><>|<=|>=|[(),;.\-+*/<>=~!|%\[\]{}])""",
    re.S | re.X,
)
_TABLE_CONSTRAINTS = {"CHECK", "UNIQUE", "PRIMARY", "FOREIGN", "CONSTRAINT", "EXCLUDE"}
_AUTO_TYPES = {"serial", "bigserial", "smallserial"}


@dataclass(frozen=True)
class Tok:
    """One SQL token: kind (word, string, number, ident, cast, op) and its text."""

    kind: str
    text: str

    @property
    def up(self) -> str:
        """Keyword form of a word token."""
        return self.text.upper() if self.kind == "word" else self.text


def tokenize(sql: str) -> list[Tok]:
    """Tokens of ``sql`` without whitespace and comments; raises on anything unknown."""
    tokens, pos = [], 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None:
            raise ValueError(f"cannot tokenize SQL at {sql[pos:pos + 30]!r}")
        pos = m.end()
        assert m.lastgroup is not None
        if m.lastgroup not in ("space", "comment"):
            tokens.append(Tok(m.lastgroup, m.group()))
    return tokens


def statements(tokens: list[Tok]) -> Iterator[list[Tok]]:
    """Token lists split at top-level semicolons."""
    current: list[Tok] = []
    for tok in tokens:
        if tok.text == ";":
            if current:
                yield current
            current = []
        else:
            current.append(tok)
    if current:
        yield current


def parenthesized(tokens: list[Tok], start: int) -> tuple[list[list[Tok]], int]:
    """Comma-separated items of the group opening at ``start``; and the index after it."""
    assert tokens[start].text == "(", tokens[start:start + 3]
    items: list[list[Tok]] = [[]]
    depth = 0
    for i in range(start, len(tokens)):
        text = tokens[i].text
        if text == "(":
            depth += 1
            if depth == 1:
                continue
        elif text == ")":
            depth -= 1
            if depth == 0:
                return items, i + 1
        elif text == "," and depth == 1:
            items.append([])
            continue
        items[-1].append(tokens[i])
    raise ValueError("unbalanced parentheses")


def top_level(item: list[Tok]) -> Iterator[tuple[int, Tok]]:
    """(index, token) of the tokens of ``item`` outside any parentheses."""
    depth = 0
    for i, tok in enumerate(item):
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        elif depth == 0:
            yield i, tok


def names(items: list[list[Tok]]) -> tuple[str, ...]:
    """A column list ``(a, b)``: each item must be a bare name."""
    if any(len(item) != 1 or item[0].kind != "word" for item in items):
        raise ValueError(f"expected a plain column list, got {items}")
    return tuple(item[0].text for item in items)


def index_keys(items: list[list[Tok]]) -> tuple[str, ...]:
    """An index's column list: bare names, each optionally ASC or DESC (``"b DESC"``)."""
    keys = []
    for item in items:
        order = [t.up for t in item[1:]]
        if item[0].kind != "word" or order not in ([], ["ASC"], ["DESC"]):
            raise ValueError(f"expected a plain index column, got {item}")
        keys.append(item[0].text + (" DESC" if order == ["DESC"] else ""))
    return tuple(keys)


@dataclass
class Table:
    """What the comparison looks at in one table."""

    columns: list[str] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    not_null: set[str] = field(default_factory=set)
    defaulted: set[str] = field(default_factory=set)  # DEFAULT, serial or rowid alias
    primary_key: tuple[str, ...] = ()
    uniques: set[tuple[str, ...]] = field(default_factory=set)
    foreign_keys: set[tuple[str, str, str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class Index:
    """A CREATE INDEX: table, columns (``"b DESC"`` if descending), unique, partial."""

    table: str
    columns: tuple[str, ...]
    unique: bool
    partial: bool


@dataclass
class Seed:
    """Rows one INSERT adds: their values, or only their count for INSERT … SELECT."""

    table: str
    columns: tuple[str, ...]
    count: int
    rows: list[tuple[Any, ...]] | None


@dataclass
class Schema:
    """Tables, indexes and seed rows of a database or of template SQL."""

    tables: dict[str, Table] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    seeds: list[Seed] = field(default_factory=list)


def parse_postgres(sql: str, schema: Schema | None = None) -> Schema:
    """The tables, indexes and seeds that ``sql`` creates, added to ``schema``."""
    schema = schema or Schema()
    for stmt in statements(tokenize(sql)):
        head = [t.up for t in stmt[:4]]
        if head[:2] == ["CREATE", "TABLE"]:
            _parse_create_table(stmt, schema)
        elif head[:2] == ["CREATE", "INDEX"] or head[:3] == ["CREATE", "UNIQUE", "INDEX"]:
            _parse_create_index(stmt, schema)
        elif head[:2] == ["INSERT", "INTO"]:
            _parse_insert(stmt, schema)
        elif head[:2] != ["COMMENT", "ON"]:
            raise ValueError(f"unexpected statement in template: {' '.join(head)} …")
    return schema


def _parse_create_table(stmt: list[Tok], schema: Schema) -> None:
    name = stmt[2].text
    items, end = parenthesized(stmt, 3)
    if end != len(stmt):
        raise ValueError(f"unexpected table options after CREATE TABLE {name}")
    table = Table()
    for item in items:
        first = item[0].up
        if first in _TABLE_CONSTRAINTS:
            if first == "UNIQUE":
                table.uniques.add(names(parenthesized(item, 1)[0]))
            elif first == "PRIMARY":
                table.primary_key = names(parenthesized(item, 2)[0])
                table.not_null.update(table.primary_key)
            elif first != "CHECK":
                raise ValueError(f"unsupported table constraint {first} in {name}")
            continue
        _parse_column(item, table)
    schema.tables[name] = table


def _parse_column(item: list[Tok], table: Table) -> None:
    column, type_name = item[0].text, item[1].text.lower()
    table.columns.append(column)
    table.types[column] = type_name
    if type_name in _AUTO_TYPES:
        table.defaulted.add(column)
    words = list(top_level(item))
    for pos, (i, tok) in enumerate(words):
        nxt = words[pos + 1][1].up if pos + 1 < len(words) else ""
        if tok.up == "NOT" and nxt == "NULL":
            table.not_null.add(column)
        elif tok.up == "PRIMARY" and nxt == "KEY":
            table.primary_key = (column,)
            table.not_null.add(column)
        elif tok.up == "DEFAULT":
            table.defaulted.add(column)
        elif tok.up == "UNIQUE":
            table.uniques.add((column,))
        elif tok.up == "REFERENCES":
            ref_table = item[i + 1].text
            ref_cols, after = parenthesized(item, i + 2)
            action = "NO ACTION"
            if [t.up for t in item[after:after + 2]] == ["ON", "DELETE"]:
                action = item[after + 2].up
                if action in ("SET", "NO"):
                    action += " " + item[after + 3].up
            table.foreign_keys.add((column, ref_table, names(ref_cols)[0], action))


def _parse_create_index(stmt: list[Tok], schema: Schema) -> None:
    unique = stmt[1].up == "UNIQUE"
    at = 3 if unique else 2
    name, on, table = stmt[at].text, stmt[at + 1].up, stmt[at + 2].text
    if on != "ON":
        raise ValueError(f"unsupported CREATE INDEX form for {name}")
    cols, end = parenthesized(stmt, at + 3)
    partial = end < len(stmt) and stmt[end].up == "WHERE"
    if end < len(stmt) and not partial:
        raise ValueError(f"unsupported clause after index {name}: {stmt[end].text}")
    schema.indexes[name] = Index(table, index_keys(cols), unique, partial)


def _parse_insert(stmt: list[Tok], schema: Schema) -> None:
    table = stmt[2].text
    cols_items, end = parenthesized(stmt, 3)
    columns = names(cols_items)
    if stmt[end].up == "VALUES":
        rows = [tuple(_literal(value) for value in items) for items in _tuples(stmt, end + 1)]
        schema.seeds.append(Seed(table, columns, len(rows), rows))
        return
    # INSERT … SELECT … FROM (VALUES …) JOIN …: one row per VALUES tuple, which
    # holds as long as the join finds every key (the sqlite side counts real rows).
    values_at = [i for i, t in enumerate(stmt) if t.up == "VALUES"]
    if len(values_at) != 1:
        raise ValueError(f"cannot count the rows INSERT INTO {table} adds")
    schema.seeds.append(Seed(table, columns, len(list(_tuples(stmt, values_at[0] + 1))), None))


def _tuples(stmt: list[Tok], start: int) -> Iterator[list[list[Tok]]]:
    at = start
    while at < len(stmt) and stmt[at].text == "(":
        items, at = parenthesized(stmt, at)
        yield items
        if at < len(stmt) and stmt[at].text == ",":
            at += 1
        else:
            break


def postgres_comments(sql: str) -> dict[tuple[str, str | None], str]:
    """``COMMENT ON TABLE t`` / ``COLUMN t.c … IS 'text'``: {(table, column or None): text}."""
    found: dict[tuple[str, str | None], str] = {}
    for stmt in statements(tokenize(sql)):
        head = [t.up for t in stmt[:3]]
        if head[:2] != ["COMMENT", "ON"]:
            continue
        text = stmt[-1].text[1:-1].replace("''", "'")
        if head[2] == "TABLE":
            found[(stmt[3].text, None)] = text
        elif head[2] == "COLUMN" and stmt[4].text == ".":
            found[(stmt[3].text, stmt[5].text)] = text
        else:
            raise ValueError(f"unsupported COMMENT ON form: {' '.join(head)}")
    return found


@dataclass(frozen=True)
class Json:
    """A literal cast to json/jsonb."""

    text: str


def _literal(item: list[Tok]) -> Any:
    kinds = [t.kind for t in item]
    if kinds == ["string"]:
        return item[0].text[1:-1].replace("''", "'")
    if kinds[:2] == ["string", "cast"] and item[2].text.lower() in ("json", "jsonb"):
        return Json(item[0].text[1:-1].replace("''", "'"))
    if kinds == ["number"]:
        return Decimal(item[0].text)
    if kinds == ["op", "number"] and item[0].text == "-":
        return -Decimal(item[1].text)
    if kinds == ["word"] and item[0].up in ("NULL", "TRUE", "FALSE"):
        return {"NULL": None, "TRUE": True, "FALSE": False}[item[0].up]
    raise ValueError(f"unsupported literal {' '.join(t.text for t in item)}")


def normalized(pg_type: str, value: Any) -> Any:
    """A value of a postgres column, or of its sqlite twin, in one comparable form."""
    if value is None:
        return None
    if isinstance(value, Json):
        value = value.text
    if pg_type in ("json", "jsonb"):
        return json.dumps(json.loads(value), sort_keys=True)
    if pg_type.startswith("numeric"):
        return Decimal(str(value))
    if pg_type in ("timestamptz", "timestamp"):
        return datetime.fromisoformat(value)
    if pg_type == "boolean":
        return bool(value)
    if pg_type in ("integer", "bigint", "smallint"):
        return int(value)
    return value


# --------------------------------------------------------------------------
# What SQLite reports about a database built from the sqlite templates
# --------------------------------------------------------------------------


def introspect(conn: sqlite3.Connection) -> Schema:
    """Tables, indexes (explicit ones), keys and defaults as SQLite reports them."""
    schema = Schema()
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\' ORDER BY rowid"
    )]
    for name in tables:
        table = Table()
        pk: dict[int, str] = {}
        for _cid, col, col_type, notnull, default, pk_pos, hidden in conn.execute(
            f'PRAGMA table_xinfo("{name}")'
        ):
            table.columns.append(col)
            table.types[col] = col_type
            rowid_alias = pk_pos == 1 and col_type == "INTEGER"
            if notnull or rowid_alias:
                table.not_null.add(col)
            if (default is not None or rowid_alias) and not hidden:
                table.defaulted.add(col)
            if pk_pos:
                pk[pk_pos] = col
        table.primary_key = tuple(pk[k] for k in sorted(pk))
        for _seq, index, unique, origin, partial in conn.execute(
            f'PRAGMA index_list("{name}")'
        ):
            keys = [(col, desc) for _seqno, _cid, col, desc, _coll, key
                    in conn.execute(f'PRAGMA index_xinfo("{index}")') if key]
            if origin == "u":
                table.uniques.add(tuple(col for col, _desc in keys))
            elif origin == "c":
                cols = tuple(col + (" DESC" if desc else "") for col, desc in keys)
                schema.indexes[index] = Index(name, cols, bool(unique), bool(partial))
        for row in conn.execute(f'PRAGMA foreign_key_list("{name}")'):
            table.foreign_keys.add((row[3], row[2], row[4], row[6]))
        schema.tables[name] = table
    return schema


def differences(pg: Schema, lite: Schema) -> list[str]:
    """Every way the sqlite schema differs from the postgres one (empty = same)."""
    diffs = []
    if set(pg.tables) != set(lite.tables):
        diffs.append(f"tables: postgres only {sorted(set(pg.tables) - set(lite.tables))}, "
                     f"sqlite only {sorted(set(lite.tables) - set(pg.tables))}")
    for name in sorted(set(pg.tables) & set(lite.tables)):
        want, got = pg.tables[name], lite.tables[name]
        for aspect in ("columns", "not_null", "defaulted", "primary_key", "uniques",
                       "foreign_keys"):
            if getattr(want, aspect) != getattr(got, aspect):
                diffs.append(f"{name}.{aspect}: postgres {getattr(want, aspect)!r}, "
                             f"sqlite {getattr(got, aspect)!r}")
    if pg.indexes != lite.indexes:
        keys = set(pg.indexes) | set(lite.indexes)
        diffs.extend(f"index {k}: postgres {pg.indexes.get(k)}, sqlite {lite.indexes.get(k)}"
                     for k in sorted(keys) if pg.indexes.get(k) != lite.indexes.get(k))
    return diffs


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """The shipped templates (read only)."""
    return Catalog(REPO / "templates", REPO / "industry_templates")


def build(path: Path, templates: ResolvedTemplates) -> sqlite3.Connection:
    """A tenant file built the way the engine does: one transaction, FKs on, schema_info rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # executescript commits any open transaction first, so root and overlay go
    # in one script to be one transaction; it stays open for the schema_info rows.
    conn.executescript("BEGIN;\n" + "\n".join(t.read() for t in templates.files))
    conn.executemany(
        "INSERT INTO schema_info (kind, name, version, checksum, duration_ms) "
        "VALUES (?, ?, ?, ?, 0)",
        [(t.kind, t.name, t.version, t.checksum) for t in templates.files],
    )
    conn.execute("COMMIT")
    return conn


@dataclass
class Built:
    """A tenant file built from the sqlite templates, and the postgres reference schema."""

    conn: sqlite3.Connection
    templates: ResolvedTemplates
    reference: Schema
    pg_templates: ResolvedTemplates


@pytest.fixture
def tenant_db(
    request: pytest.FixtureRequest, tmp_path: Path, catalog: Catalog
) -> Iterator[Built]:
    """The sqlite build and postgres reference for the parametrized version/industry."""
    version, industry = request.param
    templates = catalog.resolve("sqlite", version, industry)
    pg_templates = catalog.resolve("postgres", version, industry)
    reference = Schema()
    for template in pg_templates.files:
        parse_postgres(template.read(), reference)
    conn = build(tmp_path / "tenant.db", templates)
    try:
        yield Built(conn, templates, reference, pg_templates)
    finally:
        conn.close()


@pytest.fixture
def v11_db(tmp_path: Path, catalog: Catalog) -> Iterator[sqlite3.Connection]:
    """A v1.1 tenant file with the finance overlay."""
    conn = build(tmp_path / "tenant.db", catalog.resolve("sqlite", "v1.1", Industry.FINANCE))
    try:
        yield conn
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------


def test_sqlite_versions_and_overlays_mirror_postgres(catalog: Catalog) -> None:
    """Each sqlite version is a postgres version with the same description and date."""
    assert catalog.versions("sqlite") == VERSIONS
    assert set(VERSIONS) <= set(catalog.versions("postgres"))
    assert catalog.overlays_for("sqlite") == catalog.overlays_for("postgres")
    # Only these two manifests: list_versions() would also read other engines'.
    lite, pg = (json.loads((REPO / "templates" / e / "versions.json").read_text())["versions"]
                for e in ("sqlite", "postgres"))
    for version in VERSIONS:
        assert (lite[version]["description"], lite[version]["released"]) == (
            pg[version]["description"], pg[version]["released"])
        assert catalog.root("sqlite", version).checksum == lite[version]["files"]["schema.sql"]


# --------------------------------------------------------------------------
# Every (version, industry)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("tenant_db", COMBOS, ids=COMBO_IDS, indirect=True)
def test_templates_apply_with_foreign_keys_and_integrity_intact(tenant_db: Built) -> None:
    """Root + overlay apply in one transaction with FKs on; FK and integrity checks pass."""
    conn = tenant_db.conn
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    recorded = conn.execute(
        "SELECT kind, name, version, checksum, applied_at FROM schema_info ORDER BY id"
    ).fetchall()
    assert [row[:4] for row in recorded] == [
        (t.kind, t.name, t.version, t.checksum) for t in tenant_db.templates.files]
    assert all(TIMESTAMP_RE.match(row[4]) for row in recorded)


@pytest.mark.parametrize("tenant_db", COMBOS, ids=COMBO_IDS, indirect=True)
def test_schema_matches_postgres_template(tenant_db: Built) -> None:
    """Same tables, columns (in order), nullability, defaults, keys, FKs and indexes."""
    assert tenant_db.reference.tables, "the postgres parser found no tables"
    assert differences(tenant_db.reference, introspect(tenant_db.conn)) == []


@pytest.mark.parametrize("tenant_db", COMBOS, ids=COMBO_IDS, indirect=True)
def test_descriptions_match_postgres_comments(tenant_db: Built) -> None:
    """Every postgres COMMENT ON TABLE / COLUMN text is a comment in the sqlite table's
    stored definition (``-- text``, or ``-- column: text`` for a column)."""
    expected: dict[tuple[str, str | None], str] = {}
    for template in tenant_db.pg_templates.files:
        expected.update(postgres_comments(template.read()))
    assert expected, "the postgres templates have no COMMENT ON"
    missing = []
    for (table, column), text in sorted(expected.items(), key=str):
        row = tenant_db.conn.execute(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        comments = " ".join(" ".join(re.findall(r"--([^\n]*)", row[0] if row else "")).split())
        wanted = f"{column}: {text}" if column else text
        if wanted.lower() not in comments.lower():
            missing.append(f"{table}.{column or ''}: {text!r}")
    assert missing == []


@pytest.mark.parametrize("tenant_db", COMBOS, ids=COMBO_IDS, indirect=True)
def test_every_table_is_strict(tenant_db: Built) -> None:
    """Every template table is STRICT, so columns keep their declared types."""
    conn, reference = tenant_db.conn, tenant_db.reference
    strict = {name: bool(flag) for _schema, name, kind, _ncol, _wr, flag
              in conn.execute("PRAGMA main.table_list") if kind == "table"}
    assert {name: strict[name] for name in reference.tables} == dict.fromkeys(
        reference.tables, True)


@pytest.mark.parametrize("tenant_db", COMBOS, ids=COMBO_IDS, indirect=True)
def test_seed_rows_match_postgres_template(tenant_db: Built) -> None:
    """Per table the same number of seed rows, and the same values where postgres lists them."""
    conn, reference = tenant_db.conn, tenant_db.reference
    expected_counts: Counter[str] = Counter()
    for seed in reference.seeds:
        expected_counts[seed.table] += seed.count
    counts = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
              for name in reference.tables if name != "schema_info"}
    assert counts == {name: expected_counts[name] for name in counts}

    for seed in reference.seeds:
        if seed.rows is None:
            continue
        types = [reference.tables[seed.table].types[c] for c in seed.columns]
        want = Counter(tuple(normalized(t, v) for t, v in zip(types, row, strict=True))
                       for row in seed.rows)
        cols = ", ".join(f'"{c}"' for c in seed.columns)
        got = Counter(tuple(normalized(t, v) for t, v in zip(types, row, strict=True))
                      for row in conn.execute(f'SELECT {cols} FROM "{seed.table}"'))
        assert got == want, seed.table


# --------------------------------------------------------------------------
# The comparison itself can fail
# --------------------------------------------------------------------------


def test_comparison_reports_a_missing_column_table_and_index(
    tmp_path: Path, catalog: Catalog
) -> None:
    """Dropping a column, a table or an index on the sqlite side is reported."""
    conn = build(tmp_path / "t.db", catalog.resolve("sqlite", "v1.1", Industry.HEALTHCARE))
    reference = Schema()
    for template in catalog.resolve("postgres", "v1.1", Industry.HEALTHCARE).files:
        parse_postgres(template.read(), reference)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("ALTER TABLE medical_procedures DROP COLUMN description")
    conn.execute("DROP TABLE order_items")
    conn.execute("DROP INDEX users_status_idx")
    diffs = "\n".join(differences(reference, introspect(conn)))
    conn.close()
    assert "medical_procedures.columns" in diffs
    assert "order_items" in diffs
    assert "index users_status_idx" in diffs


def test_postgres_parser_reads_columns_keys_and_seeds() -> None:
    """The reference parser extracts columns, constraints, indexes and seed rows."""
    schema = parse_postgres("""
        -- a comment; with a semicolon
        CREATE TABLE t (
            id    bigserial PRIMARY KEY,
            o_id  uuid NOT NULL REFERENCES o (id) ON DELETE SET NULL,
            note  text CHECK (note IS NULL OR note <> 'NOT NULL; UNIQUE'),
            cfg   jsonb NOT NULL DEFAULT '{}'::jsonb,
            UNIQUE (o_id, note)
        );
        CREATE UNIQUE INDEX t_note_idx ON t (note) WHERE note IS NOT NULL;
        CREATE INDEX t_recent_idx ON t (o_id, id DESC);
        INSERT INTO t (o_id, note, cfg) VALUES ('x', 'it''s', '[1]'::jsonb), (NULL, NULL, '2');
    """)
    table = schema.tables["t"]
    assert table.columns == ["id", "o_id", "note", "cfg"]
    assert table.not_null == {"id", "o_id", "cfg"}
    assert table.defaulted == {"id", "cfg"}
    assert table.primary_key == ("id",)
    assert table.uniques == {("o_id", "note")}
    assert table.foreign_keys == {("o_id", "o", "id", "SET NULL")}
    assert schema.indexes == {
        "t_note_idx": Index("t", ("note",), unique=True, partial=True),
        "t_recent_idx": Index("t", ("o_id", "id DESC"), unique=False, partial=False)}
    assert schema.seeds == [Seed("t", ("o_id", "note", "cfg"), 2,
                                 [("x", "it's", Json("[1]")), (None, None, "2")])]
    with pytest.raises(ValueError, match="unexpected statement"):
        parse_postgres("DROP TABLE t;")


# --------------------------------------------------------------------------
# The translated types and constraints behave like postgres's
# --------------------------------------------------------------------------


def test_defaults_produce_uuid_v4_and_canonical_timestamps(v11_db: sqlite3.Connection) -> None:
    """Omitted ids are random v4 UUIDs; omitted timestamps are canonical UTC now."""
    v11_db.executemany("INSERT INTO organizations (slug, name) VALUES (?, ?)",
                       [("acme", "Acme"), ("globex", "Globex")])
    rows = v11_db.execute("SELECT id, created_at, settings FROM organizations").fetchall()
    assert len({r[0] for r in rows}) == 2
    for org_id, created_at, settings in rows:
        assert UUID_RE.match(org_id), org_id
        assert TIMESTAMP_RE.match(created_at), created_at
        assert settings == "{}"


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("INSERT INTO organizations (id, slug, name) VALUES "
         "('0F8FAD5B-D9CB-469F-A165-70867728950E', 'a', 'A')", "CHECK"),
        ("INSERT INTO organizations (id, slug, name) VALUES ('not-a-uuid', 'a', 'A')", "CHECK"),
        ("INSERT INTO organizations (slug, name) VALUES ('Bad_Slug', 'A')", "CHECK"),
        ("INSERT INTO organizations (slug, name) VALUES ('-lead', 'A')", "CHECK"),
        ("INSERT INTO organizations (slug, name) VALUES ('ok', '   ')", "CHECK"),
        ("INSERT INTO organizations (slug, name, settings) VALUES ('ok', 'A', '[]')", "CHECK"),
        ("INSERT INTO organizations (slug, name, settings) VALUES ('ok', 'A', '{bad')", "CHECK"),
        ("INSERT INTO organizations (slug, name, created_at) "
         "VALUES ('ok', 'A', '2026-01-01 00:00:00')", "CHECK"),
        ("INSERT INTO users (organization_id, email, display_name) "
         "VALUES ('0f8fad5b-d9cb-469f-a165-70867728950e', 'a@b.c', 'A')", "FOREIGN KEY"),
        ("INSERT INTO products (sku, name, price) VALUES ('S', 'P', '1.5')", "CHECK"),
        ("INSERT INTO products (sku, name, price) VALUES ('S', 'P', '-1.00')", "CHECK"),
        ("INSERT INTO products (sku, name, price) VALUES ('S', 'P', '10000000000.00')", "CHECK"),
        ("INSERT INTO products (sku, name, price, currency) VALUES ('S', 'P', '1.00', 'usd')",
         "CHECK"),
        ("INSERT INTO products (sku, name, price, active) VALUES ('S', 'P', '1.00', 2)", "CHECK"),
        ("INSERT INTO query_logs (natural_language, created_at, completed_at) VALUES "
         "('q', '2026-01-02T00:00:00.000Z', '2026-01-01T00:00:00.000Z')", "CHECK"),
        ("INSERT INTO permissions (role, resource, action) VALUES ('root', 'r', 'read')",
         "CHECK"),
        ("INSERT INTO permissions (resource, action) VALUES ('r', 'read')", "CHECK"),
        ("INSERT INTO security_logs (event_type, ip_address) VALUES ('login', 'localhost')",
         "CHECK"),
        ("INSERT INTO query_logs (natural_language, rows_returned) VALUES ('q', 'many')",
         "cannot store TEXT value in INTEGER column"),
        ("INSERT INTO accounts (account_number, holder_name, account_type, balance) "
         "VALUES ('SAV-999999', 'X', 'savings', '-1.00')", "CHECK"),
        ("INSERT INTO system_settings (key, value) VALUES ('Max', '1')", "CHECK"),
    ],
)
def test_constraints_reject_what_postgres_rejects(
    v11_db: sqlite3.Connection, sql: str, error: str
) -> None:
    """Invalid uuids, slugs, JSON, money, timestamps, enums and dangling FKs are refused."""
    with pytest.raises(sqlite3.IntegrityError, match=error):
        v11_db.execute(sql)


def test_accepted_forms_round_trip(v11_db: sqlite3.Connection) -> None:
    """Valid IPv4/IPv6 addresses, a credit balance and dotted setting keys are accepted."""
    v11_db.executemany("INSERT INTO security_logs (event_type, ip_address) VALUES ('x', ?)",
                       [("192.168.0.1",), ("::1",), ("2001:db8::/32",)])
    v11_db.execute("INSERT INTO accounts (account_number, holder_name, account_type, balance) "
                   "VALUES ('LOAN-000001', 'X', 'loan', '-2500.00')")
    v11_db.execute("INSERT INTO system_settings (key, value) VALUES ('ui.theme_v2', '\"dark\"')")
    assert v11_db.execute("SELECT count(*) FROM security_logs").fetchone() == (3,)


def test_on_delete_actions_behave_like_postgres(v11_db: sqlite3.Connection) -> None:
    """CASCADE removes children, SET NULL keeps logs, RESTRICT blocks deleting a used row."""
    db = v11_db
    org = db.execute("INSERT INTO organizations (slug, name) VALUES ('o', 'O') "
                     "RETURNING id").fetchone()[0]
    user = db.execute("INSERT INTO users (organization_id, email, display_name) "
                      "VALUES (?, 'u@x.io', 'U') RETURNING id", (org,)).fetchone()[0]
    db.execute("INSERT INTO query_logs (user_id, natural_language) VALUES (?, 'q')", (user,))
    db.execute("INSERT INTO api_tokens (user_id, name, token_hash) VALUES (?, 't', ?)",
               (user, "a" * 64))
    db.execute("UPDATE accounts SET organization_id = ? WHERE account_number = 'CHK-100200300'",
               (org,))

    db.execute("DELETE FROM organizations WHERE id = ?", (org,))
    assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM api_tokens").fetchone() == (0,)
    assert db.execute("SELECT user_id FROM query_logs").fetchall() == [(None,)]
    assert db.execute("SELECT organization_id FROM accounts "
                      "WHERE account_number = 'CHK-100200300'").fetchone() == (None,)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.execute("DELETE FROM accounts WHERE account_number = 'CHK-100200300'")


def test_order_line_total_is_exact(v11_db: sqlite3.Connection) -> None:
    """line_total = quantity * unit_price in exact decimals; an overflowing line is refused."""
    db = v11_db
    customer = db.execute("INSERT INTO customers (name) VALUES ('C') RETURNING id").fetchone()[0]
    order = db.execute("INSERT INTO orders (order_number, customer_id) VALUES ('O-1', ?) "
                       "RETURNING id", (customer,)).fetchone()[0]
    products = [db.execute("INSERT INTO products (sku, name, price) VALUES (?, 'P', ?) "
                           "RETURNING id", (f"S{i}", price)).fetchone()[0]
                for i, price in enumerate(["0.10", "9999999999.99", "0.05"])]
    db.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
               "VALUES (?, ?, 3, '0.10')", (order, products[0]))
    db.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
               "VALUES (?, ?, 99, '9999999999.99')", (order, products[1]))
    assert [r[0] for r in db.execute("SELECT line_total FROM order_items ORDER BY id")] == [
        "0.30", "989999999999.01"]
    assert Decimal("0.30") == Decimal(3) * Decimal("0.10")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                   "VALUES (?, ?, 2000000000, '9999.99')", (order, products[2]))
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.execute("DELETE FROM customers WHERE id = ?", (customer,))
    db.execute("DELETE FROM orders WHERE id = ?", (order,))
    assert db.execute("SELECT count(*) FROM order_items").fetchone() == (0,)


def test_one_default_profile_per_user(v11_db: sqlite3.Connection) -> None:
    """The partial unique index allows many profiles but one default per user."""
    db = v11_db
    org = db.execute("INSERT INTO organizations (slug, name) VALUES ('o', 'O') "
                     "RETURNING id").fetchone()[0]
    user = db.execute("INSERT INTO users (organization_id, email, display_name) "
                      "VALUES (?, 'u@x.io', 'U') RETURNING id", (org,)).fetchone()[0]
    db.executemany("INSERT INTO hdt_profiles (user_id, name, is_default) VALUES (?, ?, ?)",
                   [(user, "a", 1), (user, "b", 0), (user, "c", 0)])
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute("INSERT INTO hdt_profiles (user_id, name, is_default) VALUES (?, 'd', 1)",
                   (user,))


def test_finance_ledger_matches_balances(v11_db: sqlite3.Connection) -> None:
    """Each seeded account's balance is its credits minus its debits, to the cent."""
    ledger: dict[str, Decimal] = {}
    for number, kind, amount in v11_db.execute(
        "SELECT a.account_number, t.kind, t.amount FROM transactions t "
        "JOIN accounts a ON a.id = t.account_id"
    ):
        sign = 1 if kind == "credit" else -1
        ledger[number] = ledger.get(number, Decimal(0)) + sign * Decimal(amount)
    balances = {n: Decimal(b) for n, b in v11_db.execute(
        "SELECT account_number, balance FROM accounts")}
    assert len(balances) == 5
    assert ledger == balances


def test_table_descriptions_survive_in_the_schema(v11_db: sqlite3.Connection) -> None:
    """The COMMENT ON text of each table is kept in sqlite_schema with its definition."""
    sql = v11_db.execute("SELECT sql FROM sqlite_schema WHERE name = 'order_items'").fetchone()[0]
    assert "Order lines; unit_price is captured at order time." in sql
