"""Migration benchmark: provisions N tenants at one version, fills them with rows, then
migrates them all to another version with ``cloner.migrations.Rollout``.

Prints the rollout's wall time, per-tenant p50/p95/max (backup included), each step's
p50/p95/max and the pre-migration backup's, and checks that every tenant reached the
target with the schema of a fresh tenant of that version. Everything lives in a
temporary data dir and is removed at the end (``--keep`` to keep it).

    .venv/bin/python benchmarks/migrate.py --count 20 --concurrency 4
    .venv/bin/python benchmarks/migrate.py --count 20 --from v1.0 --to v1.2 --rows 2000
    .venv/bin/python benchmarks/migrate.py --engine sqlite --count 20 --concurrency 4
    .venv/bin/python benchmarks/migrate.py --engine mysql --count 20 --prefix mym-bench
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import aiomysql
import asyncpg
from figures import print_row  # benchmarks/figures.py

from cloner.app import App
from cloner.daemon.worker import Worker
from cloner.domain import Engine, RequestStatus, Status
from cloner.engines import Placement, TenantTarget, get_engine
from cloner.logging import configure_logging
from cloner.migrations.catalogue import diff_catalogues
from cloner.migrations.rollout import Rollout, RolloutOptions, RolloutResult
from cloner.migrations.runner import migration_hooks
from cloner.settings import Settings
from cloner.tenants import TenantService

INDUSTRIES = ("technology", "healthcare", "finance", "none")


async def provision(
    app: App, engine: str, specs: list[tuple[str, str, str]], workers: int
) -> float:
    """Provision (tenant, version, industry) with real workers; seconds it took."""
    service = TenantService(app)
    requests = [await service.create(t, engine, ind, ver) for t, ver, ind in specs]
    stop = asyncio.Event()

    async def watch() -> None:
        while True:
            states = [await app.control_plane.get_request(r.id) for r in requests]
            if all(s and s.status in (RequestStatus.DONE, RequestStatus.FAILED) for s in states):
                stop.set()
                return
            await asyncio.sleep(0.05)

    started = time.monotonic()
    await asyncio.gather(watch(), *(Worker(app, f"mig-bench-{n}").run(stop)
                                    for n in range(workers)))
    return time.monotonic() - started


async def fill(app: App, tenant_id: str, rows: int) -> None:
    """``rows`` users and query log lines (and, from v1.1, ``rows`` orders of 3 lines each),
    written as the owner (postgres, mysql) or into the file (sqlite)."""
    tenant = await TenantService(app).get(tenant_id)
    _engine, target = await app.services.target(tenant)
    if target.endpoint.path is not None:
        await asyncio.to_thread(fill_sqlite, Path(target.endpoint.path), tenant_id, rows)
    elif tenant.engine is Engine.MYSQL:
        await fill_mysql(target, tenant_id, rows)
    else:
        await fill_postgres(target, tenant_id, rows)


def fill_sqlite(path: Path, tenant_id: str, rows: int) -> None:
    """``fill`` for a sqlite tenant file, in one transaction (blocking)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        org = conn.execute("INSERT INTO organizations (slug, name) VALUES (?, ?) RETURNING id",
                           (tenant_id, tenant_id)).fetchone()[0]
        conn.executemany(
            "INSERT INTO users (organization_id, email, display_name) VALUES (?, ?, ?)",
            [(org, f"u{g}@example.com", f"User {g}") for g in range(1, rows + 1)])
        conn.execute("INSERT INTO query_logs (user_id, natural_language, status) "
                     "SELECT id, 'question from ' || email, 'succeeded' FROM users")
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'orders'").fetchone():
            conn.executemany(
                "INSERT INTO customers (name, email) VALUES (?, ?)",
                [(f"Customer {g}", f"c{g}@example.com") for g in range(1, rows + 1)])
            conn.executemany(
                "INSERT INTO products (sku, name, price) VALUES (?, ?, ?)",
                [(f"SKU-{g}", f"Product {g}", f"{g}.00") for g in range(1, 11)])
            conn.execute("INSERT INTO orders (order_number, customer_id) "
                         "SELECT 'O-' || email, id FROM customers")
            conn.execute(
                "INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                "SELECT o.id, p.id, 1, p.price FROM orders o "
                "CROSS JOIN (SELECT id, price FROM products ORDER BY sku LIMIT 3) p")
        conn.execute("COMMIT")
    finally:
        conn.close()


async def fill_mysql(target: TenantTarget, tenant_id: str, rows: int) -> None:
    """``fill`` for a mysql (MariaDB) tenant, as its owner account."""
    owner = target.credentials.roles["owner"]
    conn = await aiomysql.connect(host=target.endpoint.host, port=target.endpoint.port,
                                  user=owner.username, password=owner.password,
                                  db=target.database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s)",
                              (tenant_id, tenant_id))
            await cur.execute("SELECT id FROM organizations WHERE slug = %s", (tenant_id,))
            (org,) = await cur.fetchone()
            await cur.executemany(
                "INSERT INTO users (organization_id, email, display_name) VALUES (%s, %s, %s)",
                [(org, f"u{g}@example.com", f"User {g}") for g in range(1, rows + 1)])
            await cur.execute(
                "INSERT INTO query_logs (user_id, natural_language, status) "
                "SELECT id, CONCAT('question from ', email), 'succeeded' FROM users")
            await cur.execute("SHOW TABLES LIKE 'orders'")
            if await cur.fetchall():
                await cur.executemany(
                    "INSERT INTO customers (name, email) VALUES (%s, %s)",
                    [(f"Customer {g}", f"c{g}@example.com") for g in range(1, rows + 1)])
                await cur.executemany(
                    "INSERT INTO products (sku, name, price) VALUES (%s, %s, %s)",
                    [(f"SKU-{g}", f"Product {g}", g) for g in range(1, 11)])
                await cur.execute("INSERT INTO orders (order_number, customer_id) "
                                  "SELECT CONCAT('O-', email), id FROM customers")
                await cur.execute(
                    "INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                    "SELECT o.id, p.id, 1, p.price FROM orders o "
                    "CROSS JOIN (SELECT id, price FROM products ORDER BY sku LIMIT 3) p")
    finally:
        await conn.ensure_closed()


async def fill_postgres(target: TenantTarget, tenant_id: str, rows: int) -> None:
    """``fill`` for a postgres tenant, as its owner role."""
    owner = target.credentials.roles["owner"]
    conn = await asyncpg.connect(host=target.endpoint.host, port=target.endpoint.port,
                                 user=owner.username, password=owner.password,
                                 database=target.database, ssl=False)
    try:
        org = await conn.fetchval(
            "INSERT INTO organizations (slug, name) VALUES ($1, $1) RETURNING id", tenant_id)
        await conn.execute(
            "INSERT INTO users (organization_id, email, display_name) "
            "SELECT $1, 'u' || g || '@example.com', 'User ' || g "
            "FROM generate_series(1, $2::int) g", org, rows)
        await conn.execute(
            "INSERT INTO query_logs (user_id, natural_language, status) "
            "SELECT id, 'question from ' || email, 'succeeded' FROM users")
        if await conn.fetchval("SELECT to_regclass('public.orders') IS NOT NULL"):
            # Commerce rows too (v1.1+): the v1.1 -> v1.2 step backfills orders.item_count.
            await conn.execute(
                "INSERT INTO customers (name, email) "
                "SELECT 'Customer ' || g, 'c' || g || '@example.com' "
                "FROM generate_series(1, $1::int) g", rows)
            await conn.execute(
                "INSERT INTO products (sku, name, price) "
                "SELECT 'SKU-' || g, 'Product ' || g, g FROM generate_series(1, 10) g")
            await conn.execute(
                "INSERT INTO orders (order_number, customer_id) "
                "SELECT 'O-' || c.email, c.id FROM customers c")
            await conn.execute(
                "INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                "SELECT o.id, p.id, 1, p.price FROM orders o "
                "CROSS JOIN (SELECT id, price FROM products LIMIT 3) p")
    finally:
        await conn.close()


async def verify(app: App, args: argparse.Namespace, tenants: list[str]) -> list[str]:
    """Problems: tenants not at the target, or whose schema differs from a fresh one."""
    problems = []
    service = TenantService(app)
    reference = await service.get(f"{args.prefix}-ref")
    engine, target = await app.services.target(reference)
    hooks = migration_hooks(engine)
    expected = await hooks.schema_catalogue(target)
    for tenant_id in tenants:
        tenant = await service.get(tenant_id)
        if (tenant.status, tenant.template_version) != (Status.READY, args.to_version):
            problems.append(f"{tenant_id}: {tenant.status.value} {tenant.template_version}")
            continue
        _engine, target = await app.services.target(tenant)
        if tenant.industry is reference.industry:
            differences = diff_catalogues(expected, await hooks.schema_catalogue(target))
            if differences:
                problems.append(f"{tenant_id}: schema differs: {differences[:3]}")
    return problems


def report(result: RolloutResult, args: argparse.Namespace, provision_s: float) -> None:
    """Print the rollout's figures."""
    done = [r for r in result.results if r.steps]
    print(f"\n{args.engine}: migrate {args.from_version} -> {args.to_version}: "
          f"tenants={args.count} "
          f"rows/tenant={args.rows} concurrency={args.concurrency} canary={args.canary} "
          f"status={result.status} summary={result.summary()}")
    print(f"provisioning the fleet: {provision_s:.1f}s; rollout wall time: "
          f"{result.seconds:.2f}s")
    print(f"{'':<26}{'n':>4}{'p50 s':>9}{'p95 s':>9}{'max s':>9}")
    if done:
        print_row("per tenant (end to end)", [r.duration_s for r in done], width=26, count=True)
    steps: dict[str, list[float]] = {}
    for r in done:
        for step in r.steps:
            label = f"step {step['step']} {step['direction']}"
            steps.setdefault(label, []).append((step["duration_ms"] or 0) / 1000)
    for label, values in sorted(steps.items()):
        print_row(label, values, width=26, count=True)


async def run(args: argparse.Namespace) -> None:
    """Provision, fill, migrate, verify, print, clean up."""
    configure_logging("warning", "json")
    data_dir = Path(tempfile.mkdtemp(prefix="cloner-mig-bench-"))
    settings = Settings(data_dir=data_dir, workers=args.concurrency, log_level="warning",
                        log_format="json")
    tenants = [f"{args.prefix}-{n:03d}" for n in range(args.count)]
    in_containers = get_engine(Engine(args.engine)).placement is Placement.CONTAINER
    async with App.open(settings) as app:
        try:
            if in_containers:  # sqlite tenants are files: no Docker involved
                await app.runtime.ping()
            specs = [(t, args.from_version, INDUSTRIES[n % len(INDUSTRIES)])
                     for n, t in enumerate(tenants)]
            specs.append((f"{args.prefix}-ref", args.to_version, INDUSTRIES[0]))
            provision_s = await provision(app, args.engine, specs, args.concurrency)
            await asyncio.gather(*(fill(app, t, args.rows) for t in tenants))
            result = await Rollout(app.services, RolloutOptions(
                target_version=args.to_version, engine=args.engine, tenants=tuple(tenants),
                concurrency=args.concurrency, canary=args.canary, actor="benchmark",
            )).run()
            report(result, args, provision_s)
            backups = [float(t.backup["duration_s"]) for t in await app.control_plane
                       .list_tenants() if t.backup and t.backup.get("reason") == "pre-migration"]
            if backups:
                print_row("pre-migration backup", backups, width=26, count=True)
            problems = await verify(app, args, tenants)
            if problems:
                print(f"PROBLEMS: {problems}")
            else:
                print(f"verified: every tenant is ready at {args.to_version}; those of the "
                      "reference's industry have exactly a fresh tenant's schema")
        finally:
            if not args.keep and in_containers:
                owned = await app.runtime.owned()
                await asyncio.gather(*(app.runtime.remove_container(c.name)
                                       for c in owned.containers))
                await asyncio.gather(*(app.runtime.remove_volume(v) for v in owned.volumes))
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="postgres", choices=["postgres", "sqlite", "mysql"],
                        help="engine of the tenants (those with migrations)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--canary", type=int, default=1)
    parser.add_argument("--from", dest="from_version", default="v1.0")
    parser.add_argument("--to", dest="to_version", default="v1.2")
    parser.add_argument("--rows", type=int, default=1000,
                        help="users (and query log lines) written into each tenant first")
    parser.add_argument("--keep", action="store_true", help="keep the tenants afterwards")
    parser.add_argument("--prefix", default="mig-bench",
                        help="tenant id prefix (containers are cloner-<prefix>-NNN)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
