"""Schema migrations on real Docker and real MariaDB tenants (the ``mysql`` engine).

- A v1.0 tenant migrated up to v1.1 and v1.2 and back down has, at every
  version, exactly the catalogue of a fresh tenant of that version; commerce
  data survives the v1.1 ↔ v1.2 steps (renamed column, backfilled count).
- A fleet of v1.0 tenants (and one v1.1 tenant with orders) with data goes to
  v1.2 through the CLI: data preserved, backfill right, schema equal to a
  fresh v1.2.
- A broken step on a copy of the templates fails on the canary part-way; as
  MariaDB's DDL is not transactional the canary is restored from its
  pre-migration backup, the rollout halts, and every tenant stays on v1.0
  with its data, its schema and its schema_info guard.

Tenant ids start with ``mym-``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomysql
import pymysql
import pytest

from cloner.app import App
from cloner.catalog.migrations import AppliedMigration, Direction, MigrationCatalog
from cloner.domain import Status
from cloner.migrations.catalogue import diff_catalogues
from cloner.migrations.errors import MigrationConflict, MigrationError
from cloner.migrations.rollout import RolloutResult
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import target_of
from tests.migration_support import (
    assert_same_schema,
    catalogue,
    provision_versions,
    reach,
    rollout,
    version_in_db,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ACTOR = "cli:mym-test"

REPO = Path(__file__).resolve().parents[2]
CLONER = Path(sys.executable).with_name("cloner")
_ER_TABLEACCESS_DENIED = 1142
_ER_LOCK_WAIT_TIMEOUT = 1205


# ------------------------------------------------------------------ helpers
async def provision(app: App, specs: list[tuple[str, str, str]]) -> None:
    """Provision mysql (tenant, version, industry) triples; all must be ready."""
    await provision_versions(app, "mysql", specs, ACTOR)


async def migrate(app: App, target: str, *tenants: str, **options: Any) -> RolloutResult:
    """Run a mysql rollout in-process."""
    return await rollout(app, "mysql", target, *tenants, actor=ACTOR, **options)







def down_from_12_record(applied: AppliedMigration) -> AppliedMigration:
    """A record of a step the database never ran (v1.1-v1.2 down)."""
    return AppliedMigration("v1.1-v1.2", Direction.DOWN, "v1.1", applied.checksum)


def areas(differences: list[str]) -> set[str]:
    """``section.table`` of each difference line (``~ columns.orders[item_count].type: …``)."""
    return {".".join(re.split(r"[.\[]", line[2:])[:2]) for line in differences}




@asynccontextmanager
async def as_role(app: App, tenant_id: str, role: str) -> AsyncIterator[aiomysql.Cursor]:
    """A cursor on a real connection as one of the tenant's accounts, in its database."""
    target = await target_of(app, await TenantService(app).get(tenant_id))
    cred = target.credentials.roles[role]
    conn = await aiomysql.connect(
        host=target.endpoint.host, port=target.endpoint.port, user=cred.username,
        password=cred.password, db=target.database, autocommit=True, connect_timeout=5)
    try:
        async with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


async def fetch(cur: aiomysql.Cursor, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Execute and fetch every row."""
    await cur.execute(sql, args)
    return [tuple(r) for r in await cur.fetchall()]


async def fill_core(app: App, tenant_id: str, n: int) -> None:
    """Rows in v1.0 tables, written as the app account (an organization, users, query logs)."""
    async with as_role(app, tenant_id, "app") as cur:
        await cur.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s)",
                          (f"org-{tenant_id}", f"Org of {tenant_id}"))
        [(org,)] = await fetch(cur, "SELECT id FROM organizations WHERE slug = %s",
                               (f"org-{tenant_id}",))
        await cur.executemany(
            "INSERT INTO users (organization_id, email, display_name) VALUES (%s, %s, %s)",
            [(org, f"user{i}@{tenant_id}.example", f"User {i}") for i in range(1, n + 1)])
        await cur.execute(
            "INSERT INTO query_logs (user_id, natural_language, status) "
            "SELECT id, CONCAT('how many orders for ', email), 'succeeded' FROM users")


async def fill_commerce(app: App, tenant_id: str, lines_per_order: Sequence[int]) -> None:
    """One customer from GB, three products and one order per entry with that many lines
    (v1.1 tables), written as the app account."""
    async with as_role(app, tenant_id, "app") as cur:
        await cur.execute("INSERT INTO customers (name, email, country) "
                          "VALUES ('Ada', 'ada@example.com', 'GB')")
        [(customer,)] = await fetch(cur, "SELECT id FROM customers")
        await cur.executemany("INSERT INTO products (sku, name, price) VALUES (%s, %s, 10)",
                              [(f"SKU-{i}", f"Product {i}") for i in range(1, 4)])
        products = [r[0] for r in await fetch(cur, "SELECT id FROM products ORDER BY sku")]
        for n, lines in enumerate(lines_per_order, start=1):
            await cur.execute(
                "INSERT INTO orders (order_number, customer_id, placed_at, updated_at) "
                "VALUES (%s, %s, '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05.123456')",
                (f"A-{n}", customer))
            [(order,)] = await fetch(cur, "SELECT id FROM orders WHERE order_number = %s",
                                     (f"A-{n}",))
            await cur.executemany(
                "INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                "VALUES (%s, %s, 2, 10)", [(order, p) for p in products[:lines]])


async def snapshot(app: App, tenant_id: str) -> dict[str, Any]:
    """Row counts (schema_info aside, it gains rows) and a sample of values."""
    tenant = await TenantService(app).get(tenant_id)
    engine, target = await app.services.target(tenant)
    counts = await engine.row_counts(target)
    counts.pop("schema_info", None)
    async with as_role(app, tenant_id, "readonly") as cur:
        users = await fetch(cur, "SELECT email, display_name, status, created_at FROM users "
                                 "ORDER BY email LIMIT 5")
        logs = await fetch(cur, "SELECT natural_language, status FROM query_logs "
                                "ORDER BY id LIMIT 3")
        settings = await fetch(cur, "SELECT value FROM system_settings WHERE `key` = 'max_rows'")
    return {"counts": counts, "users": users, "logs": logs, "max_rows": settings}


async def app_writes_schema_info(app: App, tenant_id: str) -> int | None:
    """The error number the app account gets writing schema_info (None: it could)."""
    async with as_role(app, tenant_id, "app") as cur:
        await cur.execute("START TRANSACTION")
        try:
            await cur.execute(
                "INSERT INTO schema_info (kind, name, version, checksum) "
                "VALUES ('migration', 'mym-probe:up', 'v9.9', REPEAT('0', 64))")
        except pymysql.err.MySQLError as exc:
            return int(exc.args[0])
        finally:
            await cur.execute("ROLLBACK")
    return None


def cli_env(app: App) -> dict[str, str]:
    """Environment for `cloner …` subprocesses on this app's data dir and templates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env.update({
        "CLONER_DATA_DIR": str(app.settings.data_dir),
        "CLONER_TEMPLATES_DIR": str(app.settings.templates_dir),
        "CLONER_MYSQL_IMAGE": app.settings.mysql_image,
        "CLONER_LOG_FORMAT": "json",
    })
    return env


async def cli(app: App, *args: str) -> tuple[int, str, str]:
    """Run `cloner ARGS…` as a user would, without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        str(CLONER), *args, env=cli_env(app), cwd=app.settings.data_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def set_script(templates: Path, step: str, direction: str, text: str) -> None:
    """Replace a mysql migration file and update the manifest to match."""
    folder = templates / "mysql" / "migrations"
    (folder / step / f"{direction}.sql").write_text(text)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["steps"][step]["files"][f"{direction}.sql"] = hashlib.sha256(
        text.encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture
async def app_on_copy(tmp_path: Path) -> AsyncIterator[App]:
    """A real App whose templates dir is a private copy the test may break."""
    require_docker()
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    settings = make_settings(tmp_path / "data", templates_dir=templates)
    async with App.open(settings) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


# -------------------------------------------------------------------- tests


async def test_migrated_schema_equals_fresh_schema_up_and_down(docker_app: App) -> None:
    """v1.0 → v1.1 → v1.2 → v1.1 → v1.0 on one MariaDB tenant: at each version its
    catalogue is exactly a fresh tenant's (columns, types, defaults, CHECKs, keys, indexes,
    triggers, grants); a redelivered step is not re-run, a step waits for locks only as
    long as it is told, and commerce data survives the rename and the backfill."""
    app = docker_app
    await provision(app, [("mym-fresh-10", "v1.0", "healthcare"),
                          ("mym-fresh-11", "v1.1", "healthcare"),
                          ("mym-fresh-12", "v1.2", "healthcare"),
                          ("mym-mover", "v1.0", "healthcare")])
    fresh = {v: await catalogue(app, f"mym-fresh-{v}") for v in ("10", "11", "12")}
    # The comparison can fail: adjacent versions differ, and only where they should.
    assert diff_catalogues(fresh["10"], fresh["11"]) != []
    assert areas(diff_catalogues(fresh["11"], fresh["12"])) == {
        "columns.customers", "columns.orders", "constraints.customers", "constraints.orders",
        "indexes.orders"}

    up = await migrate(app, "v1.1", "mym-mover")
    assert up.status == "succeeded", up.as_dict()
    assert [r.outcome.value for r in up.results if r.tenant_id == "mym-mover"] == ["migrated"]
    await assert_same_schema(app, "mym-fresh-11", "mym-mover")

    # Hook level: a step redelivered after it was recorded is not run again (its CREATE
    # TABLEs would fail), and a step from another version is refused.
    hooks, target = await reach(app, "mym-mover")
    steps = MigrationCatalog(app.settings.templates_dir).steps("mysql")
    recorded = (await hooks.migration_state(target)).applied[-1]
    again = await hooks.apply_migration_step(target, steps[0].up, 5)
    assert again == recorded and again.applied_at is not None
    assert again.applied_at.tzinfo is not None
    down_from_12 = steps[1].down
    assert down_from_12 is not None
    with pytest.raises(MigrationConflict, match=re.escape(
            "starts from v1.2 but the database is at v1.1")):
        await hooks.apply_migration_step(target, down_from_12, 5)
    # `migrate repair` records another checksum for an applied step, and only for one.
    await hooks.realign_migration_checksum(target, recorded, "f" * 64)
    assert (await hooks.migration_state(target)).applied[-1].checksum == "f" * 64
    await hooks.realign_migration_checksum(target, recorded, recorded.checksum)
    assert (await hooks.migration_state(target)).applied[-1] == recorded
    with pytest.raises(MigrationError, match="no schema_info row"):
        await hooks.realign_migration_checksum(target, down_from_12_record(recorded), "0" * 64)

    await fill_commerce(app, "mym-mover", [3, 1, 0])

    # An application transaction holding customers: the step's first statement waits
    # lock_timeout_s for its metadata lock, then fails, and nothing is recorded.
    async with as_role(app, "mym-mover", "app") as holder:
        await holder.execute("START TRANSACTION")
        await holder.execute("SELECT COUNT(*) FROM customers")
        started = time.monotonic()
        with pytest.raises(MigrationError, match="after 0 of") as failure:
            await hooks.apply_migration_step(target, steps[1].up, 1)
        waited = time.monotonic() - started
        await holder.execute("ROLLBACK")
    assert f"({_ER_LOCK_WAIT_TIMEOUT})" in failure.value.message
    assert 0.9 <= waited < 5
    assert await version_in_db(app, "mym-mover") == "v1.1"
    await assert_same_schema(app, "mym-fresh-11", "mym-mover")

    up2 = await migrate(app, "v1.2", "mym-mover")
    assert up2.status == "succeeded", up2.as_dict()
    await assert_same_schema(app, "mym-fresh-12", "mym-mover")
    v12 = await catalogue(app, "mym-mover")  # what "the same catalogue" covers, spot-checked
    assert v12["columns"]["orders"][-1]["name"] == "item_count"
    assert v12["constraints"]["customers"]["CHECK country_code"] == (
        "column CHECK (`country_code` regexp '^[A-Z]{2}$')")
    assert "CHECK country" not in v12["constraints"]["customers"]
    assert v12["indexes"]["orders"]["orders_customer_placed_at_idx"]["columns"] == [
        "customer_id", "placed_at DESC"]
    assert set(v12["triggers"]["schema_info"]) == {
        "schema_info_guard_insert", "schema_info_guard_update", "schema_info_guard_delete"}
    assert {"app:SELECT", "app:INSERT", "readonly:SELECT", "owner:ALTER"} <= set(
        v12["privileges"]["database"])
    assert "readonly:INSERT" not in v12["privileges"]["database"]
    async with as_role(app, "mym-mover", "readonly") as cur:
        counts = dict(await fetch(cur, "SELECT order_number, item_count FROM orders"))
        stamps = set(await fetch(cur, "SELECT placed_at, updated_at FROM orders"))
        country = await fetch(cur, "SELECT country_code FROM customers")
    assert counts == {"A-1": 3, "A-2": 1, "A-3": 0}  # the backfill
    assert len(stamps) == 1 and str(next(iter(stamps))[1]) == "2026-01-02 03:04:05.123456"
    assert country == [("GB",)]  # the renamed column kept its data
    assert await app_writes_schema_info(app, "mym-mover") == _ER_TABLEACCESS_DENIED

    down = await migrate(app, "v1.1", "mym-mover")
    assert down.status == "succeeded", down.as_dict()
    await assert_same_schema(app, "mym-fresh-11", "mym-mover")
    async with as_role(app, "mym-mover", "readonly") as cur:
        assert await fetch(cur, "SELECT country FROM customers") == [("GB",)]
        assert await fetch(cur, "SELECT COUNT(*) FROM order_items") == [(4,)]

    down2 = await migrate(app, "v1.0", "mym-mover", allow_destructive=True)
    assert down2.status == "succeeded", down2.as_dict()
    await assert_same_schema(app, "mym-fresh-10", "mym-mover")
    tenant = await TenantService(app).get("mym-mover")
    assert (tenant.status, tenant.template_version) == (Status.READY, "v1.0")
    assert await version_in_db(app, "mym-mover") == "v1.0"
    history = await app.control_plane.migrations.steps_of("mym-mover")
    assert [(s["step"], s["direction"]) for s in history] == [
        ("v1.0-v1.1", "up"), ("v1.1-v1.2", "up"), ("v1.1-v1.2", "down"), ("v1.0-v1.1", "down")]
    assert all(isinstance(s["duration_ms"], int) for s in history)


async def test_fleet_with_data_reaches_v1_2_through_the_cli(docker_app: App) -> None:
    """`cloner migrate --engine mysql --to v1.2` takes v1.0 tenants with data (and a v1.1
    one with orders) to v1.2: rows and values kept, item_count backfilled, schema equal to
    a fresh v1.2, pre-migration backups on disk."""
    app = docker_app
    fleet = ["mym-fleet-1", "mym-fleet-2", "mym-fleet-3"]
    await provision(app, [(t, "v1.0", "technology") for t in fleet]
                    + [("mym-fleet-shop", "v1.1", "technology"),
                       ("mym-fleet-ref", "v1.2", "technology")])
    for n, tenant_id in enumerate(fleet, start=1):
        await fill_core(app, tenant_id, 40 * n)
    await fill_core(app, "mym-fleet-shop", 5)
    await fill_commerce(app, "mym-fleet-shop", [2, 3, 0, 1])
    movers = [*fleet, "mym-fleet-shop"]
    before = {t: await snapshot(app, t) for t in movers}

    code, out, err = await cli(app, "migrate", "--engine", "mysql", "--to", "v1.2",
                               "--canary", "1", "--concurrency", "2", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "succeeded", doc
    results = {r["tenant_id"]: r for r in doc["tenants"]}
    assert {t: results[t]["outcome"] for t in movers} == dict.fromkeys(movers, "migrated")
    assert results["mym-fleet-ref"]["outcome"] == "up_to_date"
    assert [s["step"] for s in results["mym-fleet-1"]["steps"]] == ["v1.0-v1.1", "v1.1-v1.2"]
    assert [s["step"] for s in results["mym-fleet-shop"]["steps"]] == ["v1.1-v1.2"]

    for tenant_id in movers:
        tenant = await TenantService(app).get(tenant_id)
        assert (tenant.status, tenant.template_version) == (Status.READY, "v1.2")
        assert await version_in_db(app, tenant_id) == "v1.2"
        after = await snapshot(app, tenant_id)
        added = {k: after["counts"].pop(k) for k in set(after["counts"]) - set(
            before[tenant_id]["counts"])}
        expected_added = ({} if tenant_id == "mym-fleet-shop" else
                          {"customers": 0, "products": 0, "orders": 0, "order_items": 0})
        assert added == expected_added
        assert after == before[tenant_id]  # every old table: same rows, same sample values
        assert results[tenant_id]["backup"] and Path(results[tenant_id]["backup"]).is_file()
        await assert_same_schema(app, "mym-fleet-ref", tenant_id)
    async with as_role(app, "mym-fleet-shop", "readonly") as cur:
        counts = dict(await fetch(cur, "SELECT order_number, item_count FROM orders"))
        country = await fetch(cur, "SELECT country_code FROM customers")
    assert counts == {"A-1": 2, "A-2": 3, "A-3": 0, "A-4": 1}
    assert country == [("GB",)]

    code, out, err = await cli(app, "migrate", "status", "--engine", "mysql", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["versions"]["mysql"] == {"v1.2": 5}
    assert status["last_rollout"]["status"] == "succeeded"
    assert status["last_rollout"]["summary"] == {"migrated": 4, "up_to_date": 1}


async def test_broken_step_is_restored_from_backup_and_halts_the_rollout(
    app_on_copy: App,
) -> None:
    """A v1.1-v1.2 step that fails after four of its statements committed: the canary is
    restored from its pre-migration backup (MariaDB DDL is not transactional, so no down
    step is trusted), the rollout halts, and every tenant stays on v1.0 with its data,
    schema, working app account and guarded schema_info."""
    app = app_on_copy
    templates = app.settings.templates_dir
    good_up = (templates / "mysql/migrations/v1.1-v1.2/up.sql").read_text()
    set_script(templates, "v1.1-v1.2", "up",
               good_up + "\nUPDATE customers SET no_such_column = 1;\n")
    tenants = ["mym-broken-a", "mym-broken-b", "mym-broken-c"]
    await provision(app, [(t, "v1.0", "finance") for t in tenants])
    for tenant_id in tenants:
        await fill_core(app, tenant_id, 7)
    before = {t: (await snapshot(app, t), await catalogue(app, t)) for t in tenants}

    # An application session that ignored `migrating` and sits in a transaction on the
    # canary: its metadata lock would stall the restore's DROP DATABASE; it is ended.
    async with as_role(app, "mym-broken-a", "app") as straggler:
        await straggler.execute("START TRANSACTION")
        await straggler.execute("SELECT COUNT(*) FROM organizations")
        result = await migrate(app, "v1.2", canary=1, concurrency=2)
        with pytest.raises(pymysql.err.OperationalError):
            await straggler.execute("SELECT 1")
    assert result.status == "halted", result.as_dict()
    outcomes = {r.tenant_id: r.outcome.value for r in result.results}
    assert outcomes == {"mym-broken-a": "restored", "mym-broken-b": "not_started",
                        "mym-broken-c": "not_started"}
    canary = result.results[0]
    assert canary.error is not None
    assert "no_such_column" in canary.error["reason"]
    assert "after 4 of 5 statements" in canary.error["reason"]
    assert [(s["step"], s["direction"]) for s in canary.steps] == [
        ("v1.0-v1.1", "up"), ("backup", "restore")]
    assert result.halted_reason == "canary mym-broken-a failed (restored)"

    for tenant_id in tenants:
        tenant = await TenantService(app).get(tenant_id)
        assert (tenant.status, tenant.template_version) == (Status.READY, "v1.0")
        assert await version_in_db(app, tenant_id) == "v1.0"
        data, schema = before[tenant_id]
        assert await snapshot(app, tenant_id) == data
        differences = diff_catalogues(schema, await catalogue(app, tenant_id))
        assert differences == [], "\n".join(differences)
        assert await app_writes_schema_info(app, tenant_id) == _ER_TABLEACCESS_DENIED
    restored = await TenantService(app).get("mym-broken-a")
    assert restored.error is not None and restored.error["step"] == "v1.1-v1.2 up"
    assert (await TenantService(app).get("mym-broken-b")).error is None
    # The restored database still answers the app account (grants were put back).
    async with as_role(app, "mym-broken-a", "app") as cur:
        await cur.execute("INSERT INTO organizations (slug, name) VALUES ('after', 'After')")
    last = await app.control_plane.migrations.last_rollout()
    assert last is not None and last["status"] == "halted"
