"""Helpers for integration tests: run workers until given requests finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomysql
import asyncpg

from cloner.app import App
from cloner.daemon.worker import Worker
from cloner.domain import RequestStatus, Status, Tenant
from cloner.engines import TenantTarget
from cloner.pools import TenantPools
from cloner.tenants import TenantService


async def run_workers(app: App, request_ids: list[str], workers: int = 3,
                      timeout_s: float = 180.0) -> None:
    """Run ``workers`` real workers until every request is done or failed."""
    stop = asyncio.Event()

    async def watch() -> None:
        while True:
            statuses = [await app.control_plane.get_request(r) for r in request_ids]
            if all(s is not None and s.status in (RequestStatus.DONE, RequestStatus.FAILED)
                   for s in statuses):
                stop.set()
                return
            await asyncio.sleep(0.1)

    pool = [Worker(app, f"test-{i}") for i in range(workers)]
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(watch(), *(w.run(stop) for w in pool))


async def target_of(app: App, tenant: Tenant) -> TenantTarget:
    """The real connection target (with decrypted credentials) of a tenant."""
    _engine, target = await app.services.target(tenant)
    return target


async def connect(target: TenantTarget, role: str, *, database: str | None = None,
                  host_port: tuple[str, int] | None = None) -> asyncpg.Connection:
    """Connect with one of the tenant's real roles."""
    cred = target.credentials.roles[role]
    host, port = host_port or (target.endpoint.host, target.endpoint.port)
    return await asyncpg.connect(host=host, port=port, user=cred.username,
                                 password=cred.password,
                                 database=database or target.database, timeout=5, ssl=False)


async def provision_ready(app: App, engine: str, *tenant_ids: str) -> None:
    """Create technology tenants of ``engine`` and run workers until all are ready."""
    service = TenantService(app)
    requests = [await service.create(t, engine, "technology") for t in tenant_ids]
    await run_workers(app, [r.id for r in requests], workers=len(tenant_ids))
    for tenant_id in tenant_ids:
        tenant = await service.get(tenant_id)
        assert tenant.status is Status.READY, tenant.error


@asynccontextmanager
async def pools_of(app: App, refresh_s: float, **settings: object) -> AsyncIterator[TenantPools]:
    """TenantPools on the app's registry, refreshed every ``refresh_s``, with overrides."""
    values: dict[str, object] = {"pool_refresh_interval_s": refresh_s, **settings}
    pools = TenantPools(app.settings.model_copy(update=values), app.control_plane, app.vault,
                        app.metrics)
    try:
        yield pools
    finally:
        await pools.close()


@asynccontextmanager
async def mysql_cursor(target: TenantTarget, role: str | None) -> AsyncIterator[aiomysql.Cursor]:
    """A cursor on the tenant's MariaDB database as ``role`` (None: root), autocommit."""
    cred = target.credentials.superuser if role is None else target.credentials.roles[role]
    user = "root" if role is None else cred.username
    conn = await aiomysql.connect(host=target.endpoint.host, port=target.endpoint.port,
                                  user=user, password=cred.password, db=target.database,
                                  autocommit=True, connect_timeout=5)
    try:
        async with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()
