"""PostgreSQL side of schema migrations: ``schema_info`` bookkeeping, one step per
transaction, and a catalogue of the schema for comparisons.

``PostgresEngine`` implements ``MigrationHooks`` with thin methods over these
functions; they take an open asyncpg connection (as the superuser, on the
tenant database, pinned: see ``postgres.pinned_settings``) so the engine keeps
owning how connections are made. ``schema_info`` and everything else in the
tenant's schema is read and written after ``SET LOCAL ROLE`` to the owner role:
a view or trigger the tenant made never runs with superuser rights. The
catalogue reads only ``pg_catalog``, every name qualified.

A step is recorded in ``schema_info`` as ``kind='migration'``,
``name='<step>:<up|down>'``, ``version`` = the version the step leads to, the
file's checksum, ``applied_at`` and ``duration_ms``. The table's unique key
(kind, name, version) keeps one row per step and direction, so a step applied
again after being reverted replaces its row: the newest row (highest id) is
the database's current version, and the registry keeps the full history.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.migrations.errors import MigrationError
from cloner.migrations.recorded import already_applied, state_from_rows

_STATE = """
SELECT kind, name, version, checksum, applied_at, duration_ms
  FROM public.schema_info WHERE kind IN ('root', 'migration') ORDER BY id
"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def read_state(conn: asyncpg.Connection, tenant_id: str, owner: str) -> MigrationState:
    """What ``schema_info`` says about the root version and the applied steps."""
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL ROLE {_quote(owner)}")
        if not await conn.fetchval(
            "SELECT pg_catalog.to_regclass('public.schema_info') IS NOT NULL"
        ):
            raise MigrationError(f"tenant {tenant_id}: the database has no schema_info table")
        return state_from_rows(tenant_id, await conn.fetch(_STATE))


async def apply_step(
    conn: asyncpg.Connection, tenant_id: str, owner: str, *, script: MigrationScript,
    sql: str, lock_timeout_s: float,
) -> AppliedMigration:
    """Run ``sql`` (the script's text) and record it, in one transaction."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {max(int(lock_timeout_s * 1000), 1)}")
        # A step may run long (a backfill): the migration's own deadlines bound it.
        await conn.execute("SET LOCAL statement_timeout = 0")
        # As the owner, exactly like the templates: new objects are owned by it and pick
        # up the app/readonly default privileges set at provisioning; and schema_info,
        # the tenant's table, is never read or written with superuser rights.
        await conn.execute(f"SET LOCAL ROLE {_quote(owner)}")
        # Serialises migrations of this database whoever runs them: the state read under
        # this lock cannot change before the commit (plain SELECTs are not blocked).
        await conn.execute("LOCK TABLE public.schema_info IN SHARE ROW EXCLUSIVE MODE")
        state = state_from_rows(tenant_id, await conn.fetch(_STATE))
        if (recorded := already_applied(state, script, tenant_id)) is not None:
            return recorded
        await conn.execute("SET LOCAL search_path = public")
        started = time.monotonic()
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"tenant {tenant_id}: {script.label} failed: {type(exc).__name__}: {exc}"
                .replace("\n", " ")
            ) from exc
        duration_ms = int((time.monotonic() - started) * 1000)
        await conn.execute(
            "DELETE FROM public.schema_info "
            "WHERE kind = 'migration' AND name = $1 AND version = $2",
            script.record_name, script.to_version,
        )
        applied_at = await conn.fetchval(
            "INSERT INTO public.schema_info (kind, name, version, checksum, duration_ms) "
            "VALUES ('migration', $1, $2, $3, $4) RETURNING applied_at",
            script.record_name, script.to_version, script.checksum, duration_ms,
        )
    return AppliedMigration(script.step, script.direction, script.to_version, script.checksum,
                            applied_at, duration_ms)


async def realign(
    conn: asyncpg.Connection, tenant_id: str, owner: str, applied: AppliedMigration,
    checksum: str,
) -> None:
    """Replace the recorded checksum of one applied step (as the owner role)."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {_quote(owner)}")
        status = await conn.execute(
            "UPDATE public.schema_info SET checksum = $3 "
            "WHERE kind = 'migration' AND name = $1 AND version = $2",
            applied.record_name, applied.version, checksum,
        )
    if status != "UPDATE 1":
        raise MigrationError(
            f"tenant {tenant_id}: no schema_info row for {applied.record_name} "
            f"at {applied.version}"
        )


# ------------------------------------------------------------------ catalogue

_RELKINDS = "('r', 'p', 'v', 'm', 'S', 'f')"
_WITH_COLUMNS = "('r', 'p', 'v', 'm', 'f')"

_RELATIONS = f"""
SELECT c.relname AS name, c.relkind::text AS kind, o.rolname AS owner,
       pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END AS definition,
       c.relacl IS NULL AS default_acl
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
 WHERE n.nspname = 'public' AND c.relkind IN {_RELKINDS}
 ORDER BY c.relname
"""

_PRIVILEGES = f"""
SELECT c.relname AS relation, COALESCE(g.rolname, 'PUBLIC') AS grantee, a.privilege_type
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
  LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
 WHERE n.nspname = 'public' AND c.relkind IN {_RELKINDS}
"""

_COLUMNS = f"""
SELECT c.relname AS relation, a.attname AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS "default", a.attidentity::text AS identity,
       a.attgenerated::text AS generated,
       CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::pg_catalog.regcollation::text
       END AS collation,
       pg_catalog.col_description(c.oid, a.attnum) AS comment
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = 'public' AND c.relkind IN {_WITH_COLUMNS}
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum
"""

_CONSTRAINTS = """
SELECT c.relname AS relation, k.conname AS name, k.contype::text AS type,
       pg_catalog.pg_get_constraintdef(k.oid) AS definition
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = k.connamespace
 WHERE n.nspname = 'public'
 ORDER BY c.relname, k.conname
"""

_INDEXES = """
SELECT tablename AS relation, indexname AS name, indexdef AS definition
  FROM pg_catalog.pg_indexes WHERE schemaname = 'public' ORDER BY tablename, indexname
"""

_SEQUENCES = """
SELECT s.sequencename AS name, s.data_type::text AS type, s.start_value, s.increment_by,
       s.min_value, s.max_value, s.cycle,
       (SELECT t.relname || '.' || a.attname
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
          JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = q.oid
           AND d.deptype IN ('a', 'i') LIMIT 1) AS owned_by
  FROM pg_catalog.pg_sequences s
  JOIN pg_catalog.pg_class q ON q.relname = s.sequencename
  JOIN pg_catalog.pg_namespace n ON n.oid = q.relnamespace AND n.nspname = s.schemaname
 WHERE s.schemaname = 'public'
 ORDER BY s.sequencename
"""

_FUNCTIONS = """
SELECT p.proname AS name, pg_catalog.pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_catalog.md5(pg_catalog.pg_get_functiondef(p.oid)) AS definition_md5
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
 ORDER BY 1, 2
"""

_TRIGGERS = """
SELECT c.relname AS relation, t.tgname AS name, pg_catalog.pg_get_triggerdef(t.oid) AS definition
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND NOT t.tgisinternal
 ORDER BY 1, 2
"""

_TYPES = """
SELECT t.typname AS name, t.typtype::text AS kind,
       pg_catalog.format_type(t.typbasetype, t.typtypmod) AS base,
       ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid
              ORDER BY e.enumsortorder) AS labels
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')
 ORDER BY 1
"""


async def catalogue(conn: asyncpg.Connection, role_kinds: dict[str, str]) -> dict[str, Any]:
    """The public schema as plain data, role names replaced by their kind (``role_kinds``).

    Role names carry the tenant id, so two tenants' catalogues only compare equal
    once ``acme_app`` and ``globex_app`` both read ``app``.
    """
    def kind(role: str) -> str:
        return role_kinds.get(role, role if role == "PUBLIC" else f"role:{role}")

    privileges: dict[str, list[str]] = {}
    for row in await conn.fetch(_PRIVILEGES):
        privileges.setdefault(row["relation"], []).append(
            f"{kind(row['grantee'])}:{row['privilege_type']}"
        )
    relations = []
    for row in await conn.fetch(_RELATIONS):
        relations.append({
            "name": row["name"], "kind": row["kind"], "owner": kind(row["owner"]),
            "comment": row["comment"], "definition": row["definition"],
            "privileges": ("default" if row["default_acl"]
                           else sorted(privileges.get(row["name"], []))),
        })
    columns: dict[str, list[dict[str, Any]]] = {}
    for row in await conn.fetch(_COLUMNS):
        # Listed in column order (attnum): a column added by a migration must come last
        # in the fresh template too, or SELECT * would differ between the two.
        columns.setdefault(row["relation"], []).append(
            {k: row[k] for k in ("name", "type", "not_null", "default", "identity",
                                 "generated", "collation", "comment")}
        )
    return {
        "relations": relations,
        "columns": columns,
        "constraints": [dict(r) for r in await conn.fetch(_CONSTRAINTS)],
        "indexes": [dict(r) for r in await conn.fetch(_INDEXES)],
        "sequences": [dict(r) for r in await conn.fetch(_SEQUENCES)],
        "functions": [dict(r) for r in await conn.fetch(_FUNCTIONS)],
        "triggers": [dict(r) for r in await conn.fetch(_TRIGGERS)],
        "types": [dict(r) | {"labels": list(r["labels"])} for r in await conn.fetch(_TYPES)],
    }
