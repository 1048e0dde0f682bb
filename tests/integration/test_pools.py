"""Real Docker, real PostgreSQL: tenant pools keep tenants apart and follow the registry."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager

import asyncpg
import pytest

from cloner.app import App
from cloner.domain import Status
from cloner.pools import TenantPools, TenantUnavailable
from cloner.tenants import TenantService
from tests.integration.helpers import pools_of as shared_pools_of
from tests.integration.helpers import provision_ready, run_workers

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REFRESH_S = 1.0
MARGIN_S = 1.5
MARKER_SQL = "SELECT value #>> '{}' FROM system_settings WHERE key = 'marker'"



async def provision(app: App, *tenant_ids: str) -> None:
    """Create technology postgres tenants and run workers until all are ready."""
    await provision_ready(app, "postgres", *tenant_ids)


def pools_of(app: App, **settings: object) -> AbstractAsyncContextManager[TenantPools]:
    """TenantPools on the app's registry, refreshed every ``REFRESH_S``, with overrides."""
    return shared_pools_of(app, REFRESH_S, **settings)


async def mark(pools: TenantPools, *tenant_ids: str) -> None:
    """Store each tenant's id as its marker row, written as the owner role."""
    for tenant_id in tenant_ids:
        async with pools.acquire(tenant_id, role="owner") as conn:
            await conn.execute(
                "INSERT INTO system_settings (key, value) VALUES ('marker', to_jsonb($1::text))",
                tenant_id,
            )


async def read_markers(pools: TenantPools, tenant_ids: list[str]) -> list[tuple[str, str]]:
    """(asked tenant, marker seen) for each id, all concurrently, as the app role."""

    async def one(tenant_id: str) -> tuple[str, str]:
        async with pools.acquire(tenant_id, role="app") as conn:
            return tenant_id, await conn.fetchval(MARKER_SQL)

    return await asyncio.gather(*(one(t) for t in tenant_ids))


async def test_concurrent_acquires_only_ever_see_their_own_tenant(docker_app: App) -> None:
    """200 concurrent acquire+SELECT tasks over two tenants each read their own marker."""
    await provision(docker_app, "pool-one", "pool-two")
    async with pools_of(docker_app) as pools:
        await mark(pools, "pool-one", "pool-two")
        asked = ["pool-one", "pool-two"] * 100
        results = await read_markers(pools, asked)
    assert len(results) == 200
    assert all(tenant == marker for tenant, marker in results), results


async def test_single_open_pool_still_serves_both_tenants(docker_app: App) -> None:
    """With pool_max_open=1 pools are evicted and rebuilt, and answers stay correct."""
    await provision(docker_app, "cap-one", "cap-two")
    async with pools_of(docker_app, pool_max_open=1) as pools:
        await mark(pools, "cap-one", "cap-two")
        sequential = [await read_markers(pools, [t]) for t in ["cap-one", "cap-two"] * 10]
        concurrent = await read_markers(pools, ["cap-one", "cap-two"] * 100)
        assert len(pools.open_pools) <= 2
    results = [r for batch in sequential for r in batch] + concurrent
    assert all(tenant == marker for tenant, marker in results), results
    evictions = docker_app.metrics.registry.get_sample_value("cloner_pool_evictions_total")
    assert evictions is not None and evictions > 0


async def test_deprovisioned_tenant_is_refused_within_one_refresh(docker_app: App) -> None:
    """After deprovisioning, acquires fail with TenantUnavailable within a refresh interval."""
    await provision(docker_app, "pool-gone")
    async with pools_of(docker_app) as pools:
        async with pools.acquire("pool-gone") as conn:
            assert await conn.fetchval("SELECT 1") == 1
        request = await TenantService(docker_app).delete("pool-gone", purge=False)
        await run_workers(docker_app, [request.id], workers=1)
        assert (await TenantService(docker_app).get("pool-gone")).status is Status.DEPROVISIONED
        # From here only the refresh task can close the pool; it must within one interval.
        started = time.monotonic()
        while pools.open_pools:
            assert time.monotonic() - started < REFRESH_S + MARGIN_S, pools.open_pools
            await asyncio.sleep(0.05)
        with pytest.raises(TenantUnavailable, match="deprovisioned") as caught:
            async with pools.acquire("pool-gone", role="app"):
                pass
        assert caught.value.tenant_id == "pool-gone"


async def test_readonly_pool_cannot_write(docker_app: App) -> None:
    """A readonly connection reads the tenant's tables and is refused any write."""
    await provision(docker_app, "pool-ro")
    async with pools_of(docker_app) as pools:
        async with pools.acquire("pool-ro", role="readonly") as conn:
            assert await conn.fetchval("SELECT count(*) FROM system_settings") > 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO system_settings (key, value) VALUES ('marker', '\"x\"')"
                )
        # The refused write left the pooled connection usable.
        async with pools.acquire("pool-ro", role="readonly") as conn:
            assert await conn.fetchval(MARKER_SQL) is None
