"""Schema migrations on real Docker and real PostgreSQL tenants.

- A v1.0 tenant migrated up to v1.1 and v1.2 and back down has, at every
  version, exactly the catalogue of a fresh tenant of that version.
- Five v1.0 tenants with data go to v1.2 through the CLI while a new tenant is
  provisioned: data preserved, schema equal to a fresh v1.2.
- A broken migration on a copy of the templates fails on the canary, halts the
  rollout and leaves every tenant on its old version with its data: once with
  down steps, once (no down step) from the pre-migration backup.
- An edited, already-applied migration is refused until `migrate repair`.

Tenant ids start with ``mig-``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from cloner.app import App
from cloner.domain import Status
from cloner.migrations.catalogue import diff_catalogues
from cloner.migrations.rollout import RolloutResult
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import connect, run_workers, target_of
from tests.migration_support import (
    assert_same_schema,
    catalogue,
    provision_versions,
    reach,
    rollout,
    version_in_db,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ACTOR = "cli:mig-test"

REPO = Path(__file__).resolve().parents[2]
CLONER = Path(sys.executable).with_name("cloner")


# ------------------------------------------------------------------ helpers
async def provision(app: App, specs: list[tuple[str, str, str]]) -> None:
    """Provision postgres (tenant, version, industry) triples; all must be ready."""
    await provision_versions(app, "postgres", specs, ACTOR)


async def migrate(app: App, target: str, *tenants: str, **options: Any) -> RolloutResult:
    """Run a postgres rollout in-process."""
    return await rollout(app, "postgres", target, *tenants, actor=ACTOR, **options)









async def fill_core(app: App, tenant_id: str, n: int) -> None:
    """Rows in v1.0 tables, written as the app role (organizations, users, query logs)."""
    conn = await connect(await target_of(app, await TenantService(app).get(tenant_id)), "app")
    try:
        org = await conn.fetchval(
            "INSERT INTO organizations (slug, name) VALUES ($1, $2) RETURNING id",
            f"org-{tenant_id}", f"Org of {tenant_id}")
        await conn.execute(
            "INSERT INTO users (organization_id, email, display_name) "
            "SELECT $1, 'user' || g || '@' || $2 || '.example', 'User ' || g "
            "FROM generate_series(1, $3::int) g", org, tenant_id, n)
        await conn.execute(
            "INSERT INTO query_logs (user_id, natural_language, status) "
            "SELECT id, 'how many orders for ' || email, 'succeeded' FROM users")
    finally:
        await conn.close()


async def snapshot(app: App, tenant_id: str) -> dict[str, Any]:
    """Row counts (schema_info aside, it gains rows) and a sample of values."""
    tenant = await TenantService(app).get(tenant_id)
    engine, target = await app.services.target(tenant)
    counts = await engine.row_counts(target)
    counts.pop("schema_info", None)
    conn = await connect(target, "readonly")
    try:
        users = [tuple(r) for r in await conn.fetch(
            "SELECT email, display_name, status FROM users ORDER BY email LIMIT 5")]
        logs = [tuple(r) for r in await conn.fetch(
            "SELECT natural_language, status FROM query_logs ORDER BY id LIMIT 3")]
        settings = await conn.fetchval(
            "SELECT value::text FROM system_settings WHERE key = 'max_rows'")
    finally:
        await conn.close()
    return {"counts": counts, "users": users, "logs": logs, "max_rows": settings}


def cli_env(app: App) -> dict[str, str]:
    """Environment for `cloner …` subprocesses on this app's data dir and templates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env.update({
        "CLONER_DATA_DIR": str(app.settings.data_dir),
        "CLONER_TEMPLATES_DIR": str(app.settings.templates_dir),
        "CLONER_POSTGRES_IMAGE": app.settings.postgres_image,
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


def copy_templates(tmp_path: Path) -> Path:
    """A private copy of the shipped templates."""
    copy = tmp_path / "templates"
    shutil.copytree(REPO / "templates", copy)
    return copy


def set_script(templates: Path, step: str, direction: str, text: str | None) -> None:
    """Replace (or, with None, remove) a migration file and update the manifest to match."""
    folder = templates / "postgres" / "migrations"
    path = folder / step / f"{direction}.sql"
    manifest = json.loads((folder / "manifest.json").read_text())
    if text is None:
        path.unlink()
        del manifest["steps"][step]["files"][f"{direction}.sql"]
    else:
        path.write_text(text)
        manifest["steps"][step]["files"][f"{direction}.sql"] = hashlib.sha256(
            text.encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture
async def app_on_copy(tmp_path: Path) -> Any:
    """A real App whose templates dir is a private copy the test may break."""
    require_docker()
    templates = copy_templates(tmp_path)
    settings = make_settings(tmp_path / "data", templates_dir=templates)
    async with App.open(settings) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


# -------------------------------------------------------------------- tests


async def test_migrated_schema_equals_fresh_schema_up_and_down(docker_app: App) -> None:
    """v1.0 → v1.1 → v1.2 → v1.1 → v1.0 on one tenant: at each version its catalogue is
    exactly a fresh tenant's (columns, types, defaults, constraints, indexes, grants), and
    commerce data survives the v1.1 ↔ v1.2 steps (rename, backfill)."""
    app = docker_app
    await provision(app, [("mig-fresh-10", "v1.0", "healthcare"),
                          ("mig-fresh-11", "v1.1", "healthcare"),
                          ("mig-fresh-12", "v1.2", "healthcare"),
                          ("mig-mover", "v1.0", "healthcare")])
    assert diff_catalogues(await catalogue(app, "mig-fresh-10"),
                           await catalogue(app, "mig-fresh-11")) != []  # the check can fail

    up = await migrate(app, "v1.1", "mig-mover")
    assert up.status == "succeeded", up.as_dict()
    await assert_same_schema(app, "mig-fresh-11", "mig-mover")

    mover = await target_of(app, await TenantService(app).get("mig-mover"))
    conn = await connect(mover, "app")  # the app role can use the tables a migration made
    try:
        customer = await conn.fetchval(
            "INSERT INTO customers (name, email, country) VALUES ('Ada', 'ada@example.com', "
            "'GB') RETURNING id")
        products = [await conn.fetchval(
            "INSERT INTO products (sku, name, price) VALUES ($1, $1, 10) RETURNING id", sku)
            for sku in ("SKU-1", "SKU-2", "SKU-3")]
        for number, lines in (("A-1", 3), ("A-2", 1), ("A-3", 0)):
            order = await conn.fetchval(
                "INSERT INTO orders (order_number, customer_id) VALUES ($1, $2) RETURNING id",
                number, customer)
            for product in products[:lines]:
                await conn.execute(
                    "INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                    "VALUES ($1, $2, 2, 10)", order, product)
    finally:
        await conn.close()

    up2 = await migrate(app, "v1.2", "mig-mover")
    assert up2.status == "succeeded", up2.as_dict()
    await assert_same_schema(app, "mig-fresh-12", "mig-mover")
    v12 = await catalogue(app, "mig-mover")  # what "the same catalogue" covers, spot-checked
    assert [c["name"] for c in v12["columns"]["orders"]][-1] == "item_count"
    assert {"name": "customers_country_code_check", "relation": "customers", "type": "c",
            "definition": "CHECK ((country_code ~ '^[A-Z]{2}$'::text))"} in v12["constraints"]
    assert any(i["name"] == "orders_customer_placed_at_idx" for i in v12["indexes"])
    orders = next(r for r in v12["relations"] if r["name"] == "orders")
    assert {"app:INSERT", "app:SELECT", "readonly:SELECT"} <= set(orders["privileges"])
    assert "readonly:INSERT" not in orders["privileges"] and orders["owner"] == "owner"
    conn = await connect(mover, "readonly")
    try:
        counts = {r["order_number"]: r["item_count"] for r in await conn.fetch(
            "SELECT order_number, item_count FROM orders")}
        country = await conn.fetchval("SELECT country_code FROM customers")
    finally:
        await conn.close()
    assert counts == {"A-1": 3, "A-2": 1, "A-3": 0}  # the backfill
    assert country == "GB"  # the renamed column kept its data

    down = await migrate(app, "v1.1", "mig-mover")
    assert down.status == "succeeded", down.as_dict()
    await assert_same_schema(app, "mig-fresh-11", "mig-mover")
    conn = await connect(mover, "readonly")
    try:
        assert await conn.fetchval("SELECT country FROM customers") == "GB"
        assert await conn.fetchval("SELECT count(*) FROM order_items") == 4
    finally:
        await conn.close()

    down2 = await migrate(app, "v1.0", "mig-mover", allow_destructive=True)
    assert down2.status == "succeeded", down2.as_dict()
    await assert_same_schema(app, "mig-fresh-10", "mig-mover")
    tenant = await TenantService(app).get("mig-mover")
    assert (tenant.status, tenant.template_version) == (Status.READY, "v1.0")
    assert await version_in_db(app, "mig-mover") == "v1.0"
    steps = await app.control_plane.migrations.steps_of("mig-mover")
    assert [(s["step"], s["direction"]) for s in steps] == [
        ("v1.0-v1.1", "up"), ("v1.1-v1.2", "up"), ("v1.1-v1.2", "down"), ("v1.0-v1.1", "down")]
    assert all(isinstance(s["duration_ms"], int) for s in steps)


async def test_five_tenants_with_data_reach_v1_2_through_the_cli(docker_app: App) -> None:
    """`cloner migrate --to v1.2` takes five v1.0 tenants with data to v1.2 (row counts and
    values kept, schema equal to a fresh v1.2) while a new v1.1 tenant is provisioned."""
    app = docker_app
    fleet = [f"mig-five-{n}" for n in range(1, 6)]
    await provision(app, [(t, "v1.0", "technology") for t in fleet]
                    + [("mig-five-ref", "v1.2", "technology")])
    for n, tenant_id in enumerate(fleet, start=1):
        # The last one is big enough that its backup archive outgrows the socket buffers
        # (reading such an archive back with `pg_restore --list` once broke the backup).
        await fill_core(app, tenant_id, 10 * n if n < len(fleet) else 20_000)
    before = {t: await snapshot(app, t) for t in fleet}

    rollout = asyncio.create_task(cli(app, "migrate", "--to", "v1.2", "--canary", "1",
                                      "--concurrency", "2", "--json"))
    # A signup arrives once the rollout is under way: it is provisioned meanwhile, at the
    # version it asks for, and the rollout (planned before it existed) leaves it alone.
    for _ in range(1200):  # another process: poll the registry, up to 60 s
        if await app.control_plane.migrations.live_rollout() is not None:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the CLI rollout never started")
    newcomer = await TenantService(app).create("mig-five-new", "postgres", "finance", "v1.1")
    await run_workers(app, [newcomer.id], workers=1)
    code, out, err = await rollout
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "succeeded"
    results = {r["tenant_id"]: r for r in doc["tenants"]}
    assert {t: results[t]["outcome"] for t in fleet} == dict.fromkeys(fleet, "migrated")
    assert results["mig-five-ref"]["outcome"] == "up_to_date"
    assert doc["plan"][0]["tenant_id"] == "mig-five-1" and doc["plan"][0]["canary"]

    for tenant_id in fleet:
        tenant = await TenantService(app).get(tenant_id)
        assert (tenant.status, tenant.template_version) == (Status.READY, "v1.2")
        assert await version_in_db(app, tenant_id) == "v1.2"
        after = await snapshot(app, tenant_id)
        added = {k: after["counts"].pop(k) for k in set(after["counts"]) - set(
            before[tenant_id]["counts"])}
        assert added == {"customers": 0, "products": 0, "orders": 0, "order_items": 0}
        assert after == before[tenant_id]  # every old table: same rows, same sample values
        assert results[tenant_id]["backup"] and Path(results[tenant_id]["backup"]).is_file()
        await assert_same_schema(app, "mig-five-ref", tenant_id)
    new = await TenantService(app).get("mig-five-new")
    assert (new.status, new.template_version) == (Status.READY, "v1.1")
    assert "mig-five-new" not in results
    assert await app.control_plane.migrations.last_outcome("mig-five-new") is None

    code, out, err = await cli(app, "migrate", "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["versions"]["postgres"] == {"v1.1": 1, "v1.2": 6}
    assert status["last_rollout"]["status"] == "succeeded"
    assert status["last_rollout"]["summary"] == {"migrated": 5, "up_to_date": 1}


async def test_broken_migration_halts_on_the_canary_and_leaves_everyone_intact(
    app_on_copy: App,
) -> None:
    """A v1.1-v1.2 step that fails half-way: the canary is rolled back (down steps, then, with
    no down step, from its backup), the rollout halts, every tenant stays on v1.0 with its
    data, schema and working credentials."""
    app = app_on_copy
    templates = app.settings.templates_dir
    good_up = (templates / "postgres/migrations/v1.1-v1.2/up.sql").read_text()
    # The first statements succeed inside the step's transaction; the last one fails.
    set_script(templates, "v1.1-v1.2", "up",
               good_up + "\nUPDATE customers SET no_such_column = 1;\n")
    tenants = ["mig-broken-a", "mig-broken-b", "mig-broken-c"]
    await provision(app, [(t, "v1.0", "finance") for t in tenants])
    for tenant_id in tenants:
        await fill_core(app, tenant_id, 7)
    before = {t: (await snapshot(app, t), await catalogue(app, t)) for t in tenants}

    first = await migrate(app, "v1.2", canary=1, concurrency=2)
    assert first.status == "halted", first.as_dict()
    outcomes = {r.tenant_id: r.outcome.value for r in first.results}
    assert outcomes == {"mig-broken-a": "rolled_back", "mig-broken-b": "not_started",
                        "mig-broken-c": "not_started"}
    canary = first.results[0]
    assert canary.error is not None and "no_such_column" in canary.error["reason"]
    assert [(s["step"], s["direction"]) for s in canary.steps] == [
        ("v1.0-v1.1", "up"), ("v1.0-v1.1", "down")]

    # Without a down step for v1.0-v1.1 the way back is the pre-migration backup.
    set_script(templates, "v1.0-v1.1", "down", None)
    second = await migrate(app, "v1.2", canary=1, concurrency=2)
    assert second.status == "halted", second.as_dict()
    assert second.results[0].tenant_id == "mig-broken-a"
    assert second.results[0].outcome.value == "restored"
    assert [s["direction"] for s in second.results[0].steps] == ["up", "restore"]

    for tenant_id in tenants:
        tenant = await TenantService(app).get(tenant_id)
        assert (tenant.status, tenant.template_version) == (Status.READY, "v1.0")
        assert await version_in_db(app, tenant_id) == "v1.0"
        data, schema = before[tenant_id]
        assert await snapshot(app, tenant_id) == data
        differences = diff_catalogues(schema, await catalogue(app, tenant_id))
        assert differences == [], "\n".join(differences)
    canary_tenant = await TenantService(app).get("mig-broken-a")
    assert canary_tenant.error is not None and canary_tenant.error["step"] == "v1.1-v1.2 up"
    assert (await TenantService(app).get("mig-broken-b")).error is None
    # The restored database still answers the app role (grants were put back).
    target = await target_of(app, canary_tenant)
    conn = await connect(target, "app")
    try:
        await conn.execute("INSERT INTO organizations (slug, name) VALUES ('after', 'After')")
    finally:
        await conn.close()
    last = await app.control_plane.migrations.last_rollout()
    assert last is not None and last["status"] == "halted"


async def test_edited_applied_migration_is_refused_until_repaired(app_on_copy: App) -> None:
    """After v1.0-v1.1 up ran, its file is edited (manifest updated): `migrate` refuses the
    tenant (exit 1), `migrate repair` records the new checksum, then `migrate` succeeds."""
    app = app_on_copy
    templates = app.settings.templates_dir
    await provision(app, [("mig-edited", "v1.0", "none")])
    code, _out, err = await cli(app, "migrate", "--to", "v1.1")
    assert code == 0, err
    up = templates / "postgres/migrations/v1.0-v1.1/up.sql"
    set_script(templates, "v1.0-v1.1", "up", up.read_text() + "\n-- reviewed 2026-12-01\n")

    code, out, err = await cli(app, "migrate", "--to", "v1.2", "--json")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("cloner: error:")]
    assert len(errors) == 1 and "mig-edited" in errors[0]  # the rest is the JSON log
    [result] = json.loads(out)["tenants"]
    assert result["outcome"] == "refused"
    assert "cloner migrate repair --tenant mig-edited" in result["error"]["reason"]
    tenant = await TenantService(app).get("mig-edited")
    assert (tenant.status, tenant.template_version) == (Status.READY, "v1.1")

    code, out, err = await cli(app, "migrate", "repair", "--tenant", "mig-edited", "--json")
    assert code == 0, err
    [repaired] = json.loads(out)
    assert len(repaired["repaired"]) == 1 and "v1.0-v1.1 up" in repaired["repaired"][0]
    hooks, target = await reach(app, "mig-edited")
    [applied] = (await hooks.migration_state(target)).applied
    assert applied.checksum == hashlib.sha256(up.read_bytes()).hexdigest()

    code, out, err = await cli(app, "migrate", "--to", "v1.2")
    assert code == 0, err
    assert (await TenantService(app).get("mig-edited")).template_version == "v1.2"
    history = [(s["step"], s["direction"])
               for s in await app.control_plane.migrations.steps_of("mig-edited")]
    assert history == [("v1.0-v1.1", "up"), ("v1.0-v1.1", "repair"), ("v1.1-v1.2", "up")]
