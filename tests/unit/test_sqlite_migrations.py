"""Schema migrations of sqlite tenants, on real SQLite files (no Docker: SQLite is the
real thing here).

- Through the real engine and ``cloner.migrations``: a v1.0 tenant migrated up
  to v1.1 and v1.2 and back down has, at every version, exactly the catalogue
  of a fresh tenant of that version; a fleet of v1.0 and v1.1 tenants with data
  goes to v1.2 through the ``cloner migrate`` CLI with its data; a broken
  migration fails on the canary, halts the rollout and leaves every tenant on
  its version with its data; an edited, already-applied migration is refused
  until ``migrate repair``.
- The engine's step: one transaction, refused from the wrong version, not run
  twice, foreign keys handled as SQLite's table-rebuild procedure says,
  engine-only statements refused, the busy timeout honoured.
- The catalogue sees real differences and ignores cosmetic ones.

Tenant ids start with ``sqm-``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from cloner.app import App
from cloner.catalog import Catalog
from cloner.catalog.migrations import (
    AppliedMigration,
    Direction,
    MigrationCatalog,
    MigrationScript,
)
from cloner.domain import Credentials, Endpoint, Industry, RoleCredential, Status
from cloner.engines.base import TenantTarget
from cloner.engines.sqlite import SqliteEngine
from cloner.engines.sqlite_migrations import normalise_sql
from cloner.migrations.catalogue import diff_catalogues
from cloner.migrations.errors import MigrationConflict, MigrationError
from cloner.migrations.rollout import RolloutResult
from cloner.migrations.status import repair
from cloner.tenants import TenantService
from tests.conftest import make_settings
from tests.migration_support import (
    assert_same_schema,
    catalogue,
    provision_versions,
    reach,
    rollout,
    version_in_db,
)

REPO = Path(__file__).resolve().parents[2]
CLONER = Path(sys.executable).with_name("cloner")
ENGINE = SqliteEngine()


# ------------------------------------------------------------ fleet helpers

ACTOR = "cli:sqm-test"


async def provision(app: App, specs: list[tuple[str, str, str]]) -> None:
    """Provision sqlite (tenant, version, industry) triples; all must be ready."""
    await provision_versions(app, "sqlite", specs, ACTOR)


async def migrate(app: App, target: str, *tenants: str, **options: Any) -> RolloutResult:
    """Run a sqlite rollout in-process."""
    return await rollout(app, "sqlite", target, *tenants, actor=ACTOR, **options)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """A real App (SQLite control plane) on the shipped templates; sqlite tenants only."""
    async with App.open(make_settings(tmp_path / "data")) as opened:
        yield opened


@pytest.fixture
async def app_on_copy(tmp_path: Path) -> AsyncIterator[App]:
    """A real App whose templates dir is a private copy the test may break."""
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    async with App.open(make_settings(tmp_path / "data", templates_dir=templates)) as opened:
        yield opened




async def path_of(app: App, tenant_id: str) -> Path:
    """The tenant's database file."""
    _hooks, target = await reach(app, tenant_id)
    assert target.endpoint.path is not None
    return Path(target.endpoint.path)






@contextmanager
def opened(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection the way an application opens the file (foreign keys on), committed."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        yield conn
    finally:
        conn.close()


def fill_core(path: Path, tenant_id: str, n: int) -> None:
    """An organisation, ``n`` users and a query log line per user (v1.0 tables)."""
    with opened(path) as db:
        db.execute("BEGIN")
        org = db.execute("INSERT INTO organizations (slug, name) VALUES (?, ?) RETURNING id",
                         (f"org-{tenant_id}", f"Org of {tenant_id}")).fetchone()[0]
        db.executemany(
            "INSERT INTO users (organization_id, email, display_name) VALUES (?, ?, ?)",
            [(org, f"user{i}@{tenant_id}.example", f"User {i}") for i in range(1, n + 1)])
        db.execute("INSERT INTO query_logs (user_id, natural_language, status) "
                   "SELECT id, 'how many orders for ' || email, 'succeeded' FROM users")
        db.execute("COMMIT")


def fill_commerce(path: Path) -> dict[str, int]:
    """Two customers (GB, and no country), three products, orders with 3, 1 and 0 lines
    (v1.1 tables); the expected item_count per order number."""
    lines = {"A-1": 3, "A-2": 1, "A-3": 0}
    with opened(path) as db:
        db.execute("BEGIN")
        ada = db.execute("INSERT INTO customers (name, email, country) "
                         "VALUES ('Ada', 'ada@example.com', 'GB') RETURNING id").fetchone()[0]
        db.execute("INSERT INTO customers (name) VALUES ('Bob')")
        products = [db.execute("INSERT INTO products (sku, name, price) VALUES (?, ?, '10.00') "
                               "RETURNING id", (sku, sku)).fetchone()[0]
                    for sku in ("SKU-1", "SKU-2", "SKU-3")]
        for number, count in lines.items():
            order = db.execute("INSERT INTO orders (order_number, customer_id) VALUES (?, ?) "
                               "RETURNING id", (number, ada)).fetchone()[0]
            db.executemany("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                           "VALUES (?, ?, 2, '10.00')", [(order, p) for p in products[:count]])
        db.execute("COMMIT")
    return lines


def snapshot(path: Path) -> dict[str, Any]:
    """Row counts (schema_info aside) and a sample of values, whatever the version."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name <> 'schema_info' ORDER BY name")]
        doc: dict[str, Any] = {
            "counts": {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                       for t in tables},
            "users": db.execute("SELECT email, display_name, status FROM users "
                                "ORDER BY email LIMIT 5").fetchall(),
            "logs": db.execute("SELECT natural_language, status FROM query_logs "
                               "ORDER BY id LIMIT 3").fetchall(),
            "max_rows": db.execute("SELECT value FROM system_settings "
                                   "WHERE key = 'max_rows'").fetchone(),
        }
        if "customers" in tables:
            country = "country_code" if any(
                row[1] == "country_code" for row in db.execute("PRAGMA table_info(customers)")
            ) else "country"
            doc["customers"] = db.execute(
                f"SELECT rowid, id, name, email, {country} FROM customers ORDER BY rowid"
            ).fetchall()
            doc["lines"] = db.execute(
                "SELECT o.order_number, i.quantity, i.unit_price, i.line_total "
                "FROM order_items i JOIN orders o ON o.id = i.order_id ORDER BY i.id").fetchall()
    return doc


def item_counts(path: Path) -> dict[str, int]:
    """orders.item_count by order number (v1.2)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT order_number, item_count FROM orders"))


def set_script(templates: Path, step: str, direction: str, text: str | None) -> None:
    """Replace (or, with None, remove) a sqlite migration file and update the manifest."""
    folder = templates / "sqlite" / "migrations"
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


async def cli(app: App, *args: str) -> tuple[int, str, str]:
    """Run `cloner ARGS…` as a user would, on this app's data dir and templates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env.update({"CLONER_DATA_DIR": str(app.settings.data_dir),
                "CLONER_TEMPLATES_DIR": str(app.settings.templates_dir),
                "CLONER_LOG_FORMAT": "json"})
    proc = await asyncio.create_subprocess_exec(
        str(CLONER), *args, env=env, cwd=app.settings.data_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# ------------------------------------------------------------- fleet tests


async def test_migrated_schema_equals_fresh_schema_up_and_down(app: App) -> None:
    """v1.0 → v1.1 → v1.2 → v1.1 → v1.0 on one tenant: at each version its catalogue is
    exactly a fresh tenant's, and commerce data survives v1.1 ↔ v1.2 (rename, backfill)."""
    await provision(app, [("sqm-fresh-10", "v1.0", "healthcare"),
                          ("sqm-fresh-11", "v1.1", "healthcare"),
                          ("sqm-fresh-12", "v1.2", "healthcare"),
                          ("sqm-fresh-12-down", "v1.2", "healthcare"),
                          ("sqm-mover", "v1.0", "healthcare")])
    assert diff_catalogues(await catalogue(app, "sqm-fresh-10"),
                           await catalogue(app, "sqm-fresh-11")) != []  # the check can fail
    assert diff_catalogues(await catalogue(app, "sqm-fresh-11"),
                           await catalogue(app, "sqm-fresh-12")) != []

    up = await migrate(app, "v1.1", "sqm-mover")
    assert up.status == "succeeded", up.as_dict()
    await assert_same_schema(app, "sqm-fresh-11", "sqm-mover")

    mover = await path_of(app, "sqm-mover")
    lines = fill_commerce(mover)
    up2 = await migrate(app, "v1.2", "sqm-mover")
    assert up2.status == "succeeded", up2.as_dict()
    await assert_same_schema(app, "sqm-fresh-12", "sqm-mover")
    v12 = await catalogue(app, "sqm-mover")  # what "the same catalogue" covers, spot-checked
    assert [c["name"] for c in v12["columns"]["orders"]][-1] == "item_count"
    assert ("country_code: check (length (country_code) = 2 and country_code not glob "
            "'*[^A-Z]*')") in v12["checks"]["customers"]
    [index] = [i for i in v12["indexes"] if i["name"] == "orders_customer_placed_at_idx"]
    assert [(c["column"], c["descending"]) for c in index["columns"]] == [
        ("customer_id", False), ("placed_at", True)]
    customers = next(t for t in v12["tables"] if t["name"] == "customers")
    assert "country_code: ISO 3166-1 alpha-2 country code." in customers["comments"]
    assert item_counts(mover) == lines  # the backfill
    with opened(mover) as db:
        assert db.execute("SELECT name, country_code FROM customers ORDER BY name").fetchall() \
            == [("Ada", "GB"), ("Bob", None)]  # the renamed column kept its values
        # Still enforced afterwards: the rebuilt customers is the parent of orders.
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            db.execute("DELETE FROM customers WHERE name = 'Ada'")

    down = await migrate(app, "v1.1", "sqm-mover")
    assert down.status == "succeeded", down.as_dict()
    await assert_same_schema(app, "sqm-fresh-11", "sqm-mover")
    with opened(mover) as db:
        assert db.execute("SELECT country FROM customers WHERE name = 'Ada'").fetchone() == ("GB",)
        assert db.execute("SELECT count(*) FROM order_items").fetchone() == (4,)

    down2 = await migrate(app, "v1.0", "sqm-mover", allow_destructive=True)
    assert down2.status == "succeeded", down2.as_dict()
    await assert_same_schema(app, "sqm-fresh-10", "sqm-mover")
    tenant = await TenantService(app).get("sqm-mover")
    assert (tenant.status, tenant.template_version) == (Status.READY, "v1.0")
    assert await version_in_db(app, "sqm-mover") == "v1.0"
    steps = await app.control_plane.migrations.steps_of("sqm-mover")
    assert [(s["step"], s["direction"]) for s in steps] == [
        ("v1.0-v1.1", "up"), ("v1.1-v1.2", "up"), ("v1.1-v1.2", "down"), ("v1.0-v1.1", "down")]
    assert all(isinstance(s["duration_ms"], int) for s in steps)

    # A fresh v1.2 file (item_count declared in CREATE TABLE) goes down the same way.
    fresh_down = await migrate(app, "v1.1", "sqm-fresh-12-down")
    assert fresh_down.status == "succeeded", fresh_down.as_dict()
    await assert_same_schema(app, "sqm-fresh-11", "sqm-fresh-12-down")


async def test_fleet_with_data_reaches_v1_2_through_the_cli(app: App) -> None:
    """`cloner migrate --engine sqlite --to v1.2` takes three v1.0 and two v1.1 tenants with
    data to v1.2: row counts and values kept, item_count backfilled, country_code carries
    the old values, schema equal to a fresh v1.2."""
    old = [f"sqm-fleet-{n}" for n in range(1, 4)]
    commerce = ["sqm-fleet-4", "sqm-fleet-5"]
    fleet = old + commerce
    await provision(app, [(t, "v1.0", "technology") for t in old]
                    + [(t, "v1.1", "technology") for t in commerce]
                    + [("sqm-fleet-ref", "v1.2", "technology")])
    expected_counts = {}
    for n, tenant_id in enumerate(fleet, start=1):
        path = await path_of(app, tenant_id)
        fill_core(path, tenant_id, 10 * n)
        if tenant_id in commerce:
            expected_counts[tenant_id] = fill_commerce(path)
    before = {t: snapshot(await path_of(app, t)) for t in fleet}

    code, out, err = await cli(app, "migrate", "--engine", "sqlite", "--to", "v1.2",
                               "--canary", "1", "--concurrency", "2", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "succeeded"
    results = {r["tenant_id"]: r for r in doc["tenants"]}
    assert {t: results[t]["outcome"] for t in fleet} == dict.fromkeys(fleet, "migrated")
    assert results["sqm-fleet-ref"]["outcome"] == "up_to_date"
    assert doc["plan"][0]["tenant_id"] == "sqm-fleet-1" and doc["plan"][0]["canary"]
    assert [len(results[t]["steps"]) for t in fleet] == [2, 2, 2, 1, 1]

    for tenant_id in fleet:
        tenant = await TenantService(app).get(tenant_id)
        assert (tenant.status, tenant.template_version) == (Status.READY, "v1.2")
        assert await version_in_db(app, tenant_id) == "v1.2"
        path = await path_of(app, tenant_id)
        after = snapshot(path)
        if tenant_id in old:
            added = {k: after["counts"].pop(k) for k in set(after["counts"])
                     - set(before[tenant_id]["counts"])}
            assert added == {"customers": 0, "products": 0, "orders": 0, "order_items": 0}
            for key in ("customers", "lines"):
                assert after.pop(key) == []
        else:
            assert item_counts(path) == expected_counts[tenant_id]
        assert after == before[tenant_id]  # same rows and values, country → country_code too
        assert results[tenant_id]["backup"] and Path(results[tenant_id]["backup"]).is_file()
        await assert_same_schema(app, "sqm-fleet-ref", tenant_id)

    code, out, err = await cli(app, "migrate", "status", "--engine", "sqlite", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["versions"]["sqlite"] == {"v1.2": 6}
    assert status["last_rollout"]["status"] == "succeeded"
    assert status["last_rollout"]["summary"] == {"migrated": 5, "up_to_date": 1}


async def test_broken_migration_halts_on_the_canary_and_leaves_everyone_intact(
    app_on_copy: App,
) -> None:
    """A v1.1-v1.2 step that fails after its rebuild and ADD COLUMN ran: the canary is
    rolled back (down steps, then, with no down step, from its backup), the rollout halts,
    a v1.1 tenant whose own step fails keeps its data; every tenant stays on its version
    with its data and schema."""
    app = app_on_copy
    templates = app.settings.templates_dir
    good_up = (templates / "sqlite/migrations/v1.1-v1.2/up.sql").read_text()
    # Every statement of the real step succeeds inside the transaction; this one fails.
    set_script(templates, "v1.1-v1.2", "up",
               good_up + "\nUPDATE customers SET no_such_column = 1;\n")
    tenants = {"sqm-broken-a": "v1.0", "sqm-broken-b": "v1.1", "sqm-broken-c": "v1.0"}
    await provision(app, [(t, v, "finance") for t, v in tenants.items()])
    for tenant_id, version in tenants.items():
        path = await path_of(app, tenant_id)
        fill_core(path, tenant_id, 7)
        if version == "v1.1":
            fill_commerce(path)
    before = {t: (snapshot(await path_of(app, t)), await catalogue(app, t)) for t in tenants}

    first = await migrate(app, "v1.2", canary=1, concurrency=2)
    assert first.status == "halted", first.as_dict()
    assert {r.tenant_id: r.outcome.value for r in first.results} == {
        "sqm-broken-a": "rolled_back", "sqm-broken-b": "not_started",
        "sqm-broken-c": "not_started"}
    canary = first.results[0]
    assert canary.error is not None and "no_such_column" in canary.error["reason"]
    assert [(s["step"], s["direction"]) for s in canary.steps] == [
        ("v1.0-v1.1", "up"), ("v1.0-v1.1", "down")]

    # Without a down step for v1.0-v1.1 the way back is the pre-migration backup.
    set_script(templates, "v1.0-v1.1", "down", None)
    second = await migrate(app, "v1.2", canary=1, concurrency=2)
    assert second.status == "halted", second.as_dict()
    assert (second.results[0].tenant_id, second.results[0].outcome.value) == (
        "sqm-broken-a", "restored")
    assert [s["direction"] for s in second.results[0].steps] == ["up", "restore"]

    # The v1.1 tenant's only step fails: its transaction (customers rebuilt, orders
    # altered) is rolled back and nothing is left to revert.
    third = await migrate(app, "v1.2", "sqm-broken-b", canary=1)
    assert third.status == "halted", third.as_dict()
    [only] = third.results
    assert (only.outcome.value, only.steps) == ("rolled_back", ())

    for tenant_id, version in tenants.items():
        tenant = await TenantService(app).get(tenant_id)
        assert (tenant.status, tenant.template_version) == (Status.READY, version)
        assert await version_in_db(app, tenant_id) == version
        data, schema = before[tenant_id]
        assert snapshot(await path_of(app, tenant_id)) == data
        differences = diff_catalogues(schema, await catalogue(app, tenant_id))
        assert differences == [], "\n".join(differences)
    canary_tenant = await TenantService(app).get("sqm-broken-a")
    assert canary_tenant.error is not None and canary_tenant.error["step"] == "v1.1-v1.2 up"
    assert (await TenantService(app).get("sqm-broken-c")).error is None
    # The restored file passes the isolation proof again (private, WAL, FKs, whole).
    _hooks, target = await reach(app, "sqm-broken-a")
    checks = await ENGINE.prove_isolation(target, [])
    assert [c.name for c in checks if not c.passed] == []
    assert (await path_of(app, "sqm-broken-a")).stat().st_mode & 0o777 == 0o600


async def test_edited_applied_migration_is_refused_until_repaired(app_on_copy: App) -> None:
    """After v1.0-v1.1 up ran, its file is edited (manifest updated): the tenant is refused
    untouched; `migrate repair` records the new checksum in its file; then it migrates."""
    app = app_on_copy
    templates = app.settings.templates_dir
    await provision(app, [("sqm-edited", "v1.0", "none")])
    assert (await migrate(app, "v1.1")).status == "succeeded"
    up = templates / "sqlite/migrations/v1.0-v1.1/up.sql"
    set_script(templates, "v1.0-v1.1", "up", up.read_text() + "\n-- reviewed 2026-12-01\n")

    refused = await migrate(app, "v1.2")
    [result] = refused.results
    assert (refused.status, result.outcome.value) == ("halted", "refused")
    assert result.error is not None
    assert "cloner migrate repair --tenant sqm-edited" in result.error["reason"]
    assert await version_in_db(app, "sqm-edited") == "v1.1"

    [repaired] = await repair(app.services, engine="sqlite", tenants=("sqm-edited",))
    assert len(repaired.repaired) == 1 and "v1.0-v1.1 up" in repaired.repaired[0]
    hooks, target = await reach(app, "sqm-edited")
    [applied] = (await hooks.migration_state(target)).applied
    assert applied.checksum == hashlib.sha256(up.read_bytes()).hexdigest()

    assert (await migrate(app, "v1.2")).status == "succeeded"
    assert await version_in_db(app, "sqm-edited") == "v1.2"
    history = [(s["step"], s["direction"])
               for s in await app.control_plane.migrations.steps_of("sqm-edited")]
    assert history == [("v1.0-v1.1", "up"), ("v1.0-v1.1", "repair"), ("v1.1-v1.2", "up")]


# ------------------------------------------------------------ engine tests


@pytest.fixture(scope="module")
def shipped() -> tuple[Catalog, MigrationCatalog]:
    """The shipped templates and migrations (read only)."""
    return (Catalog(REPO / "templates", REPO / "industry_templates"),
            MigrationCatalog(REPO / "templates"))


async def fresh_file(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog], version: str, name: str,
    industry: Industry = Industry.NONE,
) -> TenantTarget:
    """A tenant file of ``version`` installed by the engine (no registry)."""
    folder = tmp_path / "sqlite" / "tenants" / name
    folder.mkdir(parents=True)
    target = TenantTarget(name, ENGINE.database_name(name),
                          Endpoint(path=str(folder / ENGINE.database_name(name))),
                          Credentials(RoleCredential("none", "none"), "none", {}),
                          storage_root=tmp_path / "sqlite")
    await ENGINE.apply_templates(target, shipped[0].resolve("sqlite", version, industry))
    return target


def step_script(shipped: tuple[Catalog, MigrationCatalog], step: str,
                direction: Direction = Direction.UP) -> MigrationScript:
    """A shipped migration script."""
    found = shipped[1].step_between("sqlite", *step.split("-"))
    assert found is not None
    script = found.script(direction)
    assert script is not None
    return script


def custom_script(tmp_path: Path, text: str, step: str = "v1.1-v1.2") -> MigrationScript:
    """An up script with ``text`` for ``step`` (not in any manifest)."""
    source, dest = step.split("-")
    path = tmp_path / f"{step}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.sql"
    path.write_text(text)
    return MigrationScript("sqlite", step, Direction.UP, source, dest, path,
                           hashlib.sha256(text.encode()).hexdigest())


def file_of(target: TenantTarget) -> Path:
    """The target's database file."""
    assert target.endpoint.path is not None
    return Path(target.endpoint.path)


async def test_step_is_refused_from_another_version_and_never_run_twice(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog]
) -> None:
    """v1.1-v1.2 up on a v1.0 file is a MigrationConflict; v1.0-v1.1 up applied again (a
    resumed rollout) returns the recorded step without running it."""
    target = await fresh_file(tmp_path, shipped, "v1.0", "sqm-twice")
    conflict = re.escape("starts from v1.1 but the database is at v1.0")
    with pytest.raises(MigrationConflict, match=conflict):
        await ENGINE.apply_migration_step(target, step_script(shipped, "v1.1-v1.2"), 1.0)
    first = await ENGINE.apply_migration_step(target, step_script(shipped, "v1.0-v1.1"), 1.0)
    again = await ENGINE.apply_migration_step(target, step_script(shipped, "v1.0-v1.1"), 1.0)
    assert again == first and first.version == "v1.1" and first.applied_at is not None
    state = await ENGINE.migration_state(target)
    assert (state.root_version, state.current_version, len(state.applied)) == (
        "v1.0", "v1.1", 1)
    with closing(sqlite3.connect(file_of(target))) as db:
        assert db.execute("SELECT count(*) FROM schema_info WHERE kind = 'migration'"
                          ).fetchone() == (1,)


async def test_rebuilding_a_parent_table_keeps_its_cascading_children(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog]
) -> None:
    """A step that rebuilds orders (parent of order_items, ON DELETE CASCADE) keeps every
    order line: the step runs with foreign key actions off, as SQLite's rebuild procedure
    says. With PRAGMA defer_foreign_keys instead, DROP TABLE orders deletes the lines."""
    target = await fresh_file(tmp_path, shipped, "v1.1", "sqm-rebuild")
    path = file_of(target)
    fill_commerce(path)
    control = tmp_path / "control.sqlite3"
    shutil.copy(path, control)
    rebuild = """
        CREATE TABLE orders_rebuilt (
            id TEXT NOT NULL PRIMARY KEY, order_number TEXT NOT NULL UNIQUE,
            customer_id TEXT NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
            status TEXT NOT NULL, total TEXT NOT NULL, currency TEXT NOT NULL,
            placed_at TEXT NOT NULL, updated_at TEXT NOT NULL) STRICT;
        INSERT INTO orders_rebuilt SELECT * FROM orders;
        DROP TABLE orders;
        ALTER TABLE orders_rebuilt RENAME TO orders;
    """
    await ENGINE.apply_migration_step(target, custom_script(tmp_path, rebuild), 1.0)
    with opened(path) as db:
        assert db.execute("SELECT count(*) FROM order_items").fetchone() == (4,)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        db.execute("DELETE FROM orders WHERE order_number = 'A-1'")  # FKs work as before
        assert db.execute("SELECT count(*) FROM order_items").fetchone() == (1,)

    with opened(control) as db:  # the hazard the engine avoids
        db.execute("BEGIN")
        db.execute("PRAGMA defer_foreign_keys = ON")
        for statement in rebuild.split(";")[:-1]:
            db.execute(statement)
        assert db.execute("SELECT count(*) FROM order_items").fetchone() == (0,)
        db.execute("ROLLBACK")


async def test_step_that_leaves_dangling_keys_is_rolled_back(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog]
) -> None:
    """Deleting customers that orders still reference passes statement by statement (keys
    are off during a step) but fails the foreign_key_check before commit: nothing changes."""
    target = await fresh_file(tmp_path, shipped, "v1.1", "sqm-dangling")
    fill_commerce(file_of(target))
    before = snapshot(file_of(target))
    script = custom_script(tmp_path, "CREATE TABLE scratch (a INTEGER);\n"
                                     "DELETE FROM customers;\n")
    with pytest.raises(MigrationError, match=r"foreign keys point nowhere.*orders rowid"):
        await ENGINE.apply_migration_step(target, script, 1.0)
    assert snapshot(file_of(target)) == before
    assert (await ENGINE.migration_state(target)).current_version == "v1.1"
    with closing(sqlite3.connect(file_of(target))) as db:
        assert db.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'scratch'"
                          ).fetchone() == (0,)


@pytest.mark.parametrize("statement", [
    "PRAGMA foreign_keys = ON;",
    "PRAGMA writable_schema = 1;",
    "ATTACH DATABASE ':memory:' AS other;",
    "SAVEPOINT halfway;",
    "COMMIT;",
])
async def test_engine_only_statements_are_refused(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog], statement: str
) -> None:
    """PRAGMA (other than read-only introspection), ATTACH, SAVEPOINT and transaction control
    in a migration are refused by the authorizer, and what ran before them is undone."""
    target = await fresh_file(tmp_path, shipped, "v1.1", "sqm-refused")
    script = custom_script(tmp_path, f"CREATE TABLE scratch (a INTEGER);\n{statement}\n")
    with pytest.raises(MigrationError, match="engine's, not a migration's"):
        await ENGINE.apply_migration_step(target, script, 1.0)
    with closing(sqlite3.connect(file_of(target))) as db:
        assert db.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'scratch'"
                          ).fetchone() == (0,)
    assert (await ENGINE.migration_state(target)).current_version == "v1.1"


async def test_step_waits_for_another_writer_at_most_the_lock_timeout(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog]
) -> None:
    """While an application holds the write lock the step fails after ~lock_timeout_s, saying
    why, and changes nothing; once the lock is released the same step runs."""
    target = await fresh_file(tmp_path, shipped, "v1.1", "sqm-locked")
    up = step_script(shipped, "v1.1-v1.2")
    with opened(file_of(target)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO customers (name) VALUES ('in flight')")
        started = time.monotonic()
        with pytest.raises(MigrationError, match=re.escape("locked by another writer for 0.3s")):
            await ENGINE.apply_migration_step(target, up, 0.3)
        waited = time.monotonic() - started
        writer.execute("COMMIT")
    assert 0.25 <= waited < 3.0
    assert (await ENGINE.migration_state(target)).current_version == "v1.1"
    await ENGINE.apply_migration_step(target, up, 0.3)
    assert (await ENGINE.migration_state(target)).current_version == "v1.2"


async def test_realign_and_drop_database(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog]
) -> None:
    """realign records a new checksum for an applied step (unknown steps are an error);
    drop_database removes the file with its -wal and -shm."""
    target = await fresh_file(tmp_path, shipped, "v1.0", "sqm-realign")
    applied = await ENGINE.apply_migration_step(target, step_script(shipped, "v1.0-v1.1"), 1.0)
    await ENGINE.realign_migration_checksum(target, applied, "f" * 64)
    [recorded] = (await ENGINE.migration_state(target)).applied
    assert recorded.checksum == "f" * 64
    with pytest.raises(MigrationError, match="no schema_info row"):
        await ENGINE.realign_migration_checksum(
            target, AppliedMigration("v1.1-v1.2", Direction.UP, "v1.2", "0" * 64), "f" * 64)

    path = file_of(target)
    with opened(path) as db:  # an open connection keeps -wal and -shm around
        db.execute("SELECT count(*) FROM users").fetchone()
        assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    await ENGINE.drop_database(target)
    assert [p.name for p in path.parent.iterdir()] == []
    with pytest.raises(MigrationError, match="cannot open"):
        await ENGINE.migration_state(target)


async def test_catalogue_sees_real_differences_and_ignores_cosmetic_ones(
    tmp_path: Path, shipped: tuple[Catalog, MigrationCatalog]
) -> None:
    """Reformatting customers (whitespace, case, quoted names) changes nothing; a changed
    CHECK, default, partial-index WHERE, index order, comment or column order is reported."""
    reference = await fresh_file(tmp_path, shipped, "v1.1", "sqm-cat-ref")
    expected = await ENGINE.schema_catalogue(reference)
    with closing(sqlite3.connect(file_of(reference))) as db:
        customers_sql = db.execute(
            "SELECT sql FROM sqlite_schema WHERE name = 'customers'").fetchone()[0]
    reformatted = re.sub(r" +", " ", customers_sql).replace(
        "CREATE TABLE customers", 'create table "CUSTOMERS_new"').replace(
        "NOT NULL", "not null").replace("TEXT", "Text").replace("\n ", "\n\t")
    rebuild = (f"{reformatted};\nINSERT INTO customers_new SELECT * FROM customers;\n"
               "DROP TABLE customers;\nALTER TABLE customers_new RENAME TO customers;\n"
               "create  index  \"customers_name_idx\"  on  customers(\n  name\n);\n")
    cosmetic = await fresh_file(tmp_path, shipped, "v1.1", "sqm-cat-cosmetic")
    await ENGINE.apply_migration_step(cosmetic, custom_script(tmp_path, rebuild), 1.0)
    with closing(sqlite3.connect(file_of(cosmetic))) as db:
        stored = db.execute("SELECT sql FROM sqlite_schema WHERE name = 'customers'").fetchone()
    assert stored[0] != customers_sql  # the text differs …
    assert diff_catalogues(expected, await ENGINE.schema_catalogue(cosmetic)) == []  # … only so

    changes = {
        "check": (customers_sql.replace("length(country) = 2", "length(country) = 3"),
                  "checks.customers"),
        "default": (customers_sql.replace("phone        TEXT,", "phone TEXT DEFAULT 'n/a',"),
                    "columns.customers[phone].default"),
        "comment": (customers_sql.replace("-- Customers of the tenant", "-- Clients of the"),
                    "tables[customers].comments"),
        "order": (customers_sql.replace("    phone        TEXT,\n", "").replace(
            "updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))",
            "updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at)),\n    phone TEXT"),
            "columns.customers[phone].position"),
    }
    for name, (definition, where) in changes.items():
        assert definition != customers_sql, name
        target = await fresh_file(tmp_path, shipped, "v1.1", f"sqm-cat-{name}")
        columns = "id, external_ref, name, email, phone, country, created_at, updated_at"
        text = (definition.replace("CREATE TABLE customers", "CREATE TABLE customers_new")
                + f";\nINSERT INTO customers_new ({columns}) SELECT {columns} FROM customers;\n"
                "DROP TABLE customers;\nALTER TABLE customers_new RENAME TO customers;\n"
                "CREATE INDEX customers_name_idx ON customers (name);\n")
        await ENGINE.apply_migration_step(target, custom_script(tmp_path, text), 1.0)
        differences = diff_catalogues(expected, await ENGINE.schema_catalogue(target))
        assert any(line[2:].startswith(where) for line in differences), (name, differences)

    indexes = {
        "where": ("DROP INDEX api_tokens_active_idx;\nCREATE INDEX api_tokens_active_idx "
                  "ON api_tokens (expires_at) WHERE revoked_at IS NOT NULL;\n",
                  "indexes[api_tokens.api_tokens_active_idx].definition"),
        "desc": ("DROP INDEX orders_status_idx;\n"
                 "CREATE INDEX orders_status_idx ON orders (status, placed_at DESC);\n",
                 "indexes[orders.orders_status_idx].columns"),
        "unique": ("DROP INDEX products_name_idx;\n"
                   "CREATE UNIQUE INDEX products_name_idx ON products (name);\n",
                   "indexes[products.products_name_idx].unique"),
    }
    for name, (text, where) in indexes.items():
        target = await fresh_file(tmp_path, shipped, "v1.1", f"sqm-cat-ix-{name}")
        await ENGINE.apply_migration_step(target, custom_script(tmp_path, text), 1.0)
        differences = diff_catalogues(expected, await ENGINE.schema_catalogue(target))
        assert any(line[2:].startswith(where) for line in differences), (name, differences)


def test_normalise_sql_keeps_literals_and_lists_comments() -> None:
    """Whitespace, case and quotes around plain names go; literals, odd names stay."""
    left, left_comments = normalise_sql(
        'CREATE TABLE "Orders" (\n  -- why\n  "my col" TEXT DEFAULT \'A  b\' /* note */,'
        "\n  n INTEGER CHECK (n >= 0)\n)")
    right, right_comments = normalise_sql(
        "create table orders (\"my col\" text default 'A  b', n integer check(n>=0))")
    assert left == right == ("create table orders (\"my col\" text default 'A  b', "
                             "n integer check (n >= 0))")
    assert (left_comments, right_comments) == (["why", "note"], [])
    assert normalise_sql("SELECT 'a'")[0] != normalise_sql("SELECT 'A'")[0]
    assert normalise_sql("SELECT x'AB'")[0] == normalise_sql("select X'ab'")[0]
