"""Real Docker, real MariaDB: tenant pools hand out aiomysql connections and follow the registry."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager

import aiomysql
import pymysql
import pytest
from structlog.testing import capture_logs

from cloner.app import App
from cloner.domain import Status
from cloner.pools import PoolExhausted, TenantPools, TenantUnavailable
from cloner.tenants import TenantService
from tests.integration.helpers import pools_of as shared_pools_of
from tests.integration.helpers import provision_ready, run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REFRESH_S = 1.0
MARGIN_S = 1.5
MARKER_SQL = "SELECT JSON_UNQUOTE(value) FROM system_settings WHERE `key` = %s"
_ER_TABLEACCESS_DENIED = 1142



async def provision(app: App, *tenant_ids: str) -> None:
    """Create technology mysql tenants and run workers until all are ready."""
    await provision_ready(app, "mysql", *tenant_ids)


def pools_of(app: App, **settings: object) -> AbstractAsyncContextManager[TenantPools]:
    """TenantPools on the app's registry, refreshed every ``REFRESH_S``, with overrides."""
    return shared_pools_of(app, REFRESH_S, **settings)


async def fetchval(conn: aiomysql.Connection, sql: str, *args: object) -> object:
    """First column of the first row (None without a row)."""
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        row = await cur.fetchone()
    return None if row is None else row[0]


async def test_app_writes_readonly_reads_and_nothing_secret_is_logged(docker_app: App) -> None:
    """app writes and reads back, readonly reads and is refused writes, no password is logged."""
    await provision(docker_app, "pl-my-one", "pl-my-two")
    secrets: set[str] = set()
    for tenant_id in ("pl-my-one", "pl-my-two"):
        target = await target_of(docker_app, await TenantService(docker_app).get(tenant_id))
        secrets.update(target.credentials.all_secrets())
    assert len(secrets) >= 8  # superuser, bootstrap and three roles each, per tenant
    with capture_logs() as logs:
        async with pools_of(docker_app, pool_max_size=2, pool_acquire_timeout_s=0.5) as pools:
            for tenant_id in ("pl-my-one", "pl-my-two"):
                async with pools.acquire(tenant_id, role="app") as conn:
                    assert isinstance(conn, aiomysql.Connection)
                    async with conn.cursor() as cur:
                        await cur.execute(
                            "INSERT INTO system_settings (`key`, value) "
                            "VALUES ('marker', JSON_QUOTE(%s))", (tenant_id,),
                        )

            async def read(tenant_id: str, role: str) -> tuple[str, object]:
                async with pools.acquire(tenant_id, role=role) as conn:
                    return tenant_id, await fetchval(conn, MARKER_SQL, "marker")

            # Many concurrent readers over two pools of 2: each sees its own tenant only.
            asked = [("pl-my-one", "readonly"), ("pl-my-two", "app")] * 20
            results = await asyncio.gather(*(read(t, r) for t, r in asked))
            assert all(tenant == marker for tenant, marker in results), results

            async with pools.acquire("pl-my-one", role="readonly") as conn:
                with pytest.raises(pymysql.err.OperationalError) as refused:
                    async with conn.cursor() as cur:
                        await cur.execute(
                            "UPDATE system_settings SET value = '\"x\"' WHERE `key` = 'marker'"
                        )
                assert refused.value.args[0] == _ER_TABLEACCESS_DENIED
            # The refused write left the pooled connection usable, and wrote nothing.
            async with pools.acquire("pl-my-one", role="readonly") as conn:
                assert await fetchval(conn, MARKER_SQL, "marker") == "pl-my-one"

            async with pools.acquire("pl-my-two", role="app"), \
                    pools.acquire("pl-my-two", role="app"):
                with pytest.raises(PoolExhausted):
                    async with pools.acquire("pl-my-two", role="app"):
                        pass
            assert sorted(pools.open_pools) == [("pl-my-one", "app"), ("pl-my-one", "readonly"),
                                                ("pl-my-two", "app")]
    assert any(entry["event"] == "pools.opened" for entry in logs)
    logged = repr(logs)
    assert not [s for s in secrets if s in logged]


async def test_deleted_tenant_pool_is_closed_within_one_refresh(docker_app: App) -> None:
    """Deprovisioning closes the open pool at the next refresh; acquires are then refused."""
    await provision(docker_app, "pl-my-gone")
    async with pools_of(docker_app) as pools:
        async with pools.acquire("pl-my-gone", role="app") as conn:
            assert await fetchval(conn, "SELECT DATABASE()") == "pl_my_gone"
        assert pools.open_pools == [("pl-my-gone", "app")]
        request = await TenantService(docker_app).delete("pl-my-gone", purge=False)
        await run_workers(docker_app, [request.id], workers=1)
        tenant = await TenantService(docker_app).get("pl-my-gone")
        assert tenant.status is Status.DEPROVISIONED
        # From here only the refresh task can close the pool; it must within one interval.
        started = time.monotonic()
        while pools.open_pools:
            assert time.monotonic() - started < REFRESH_S + MARGIN_S, pools.open_pools
            await asyncio.sleep(0.05)
        with pytest.raises(TenantUnavailable, match="deprovisioned") as caught:
            async with pools.acquire("pl-my-gone", role="app"):
                pass
        assert caught.value.tenant_id == "pl-my-gone"
