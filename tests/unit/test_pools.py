"""Unit tests of tenant pools: lazy opening, LRU eviction, registry refresh, swaps, errors.

The registry is the real SQLite control plane; pools come from a fake factory
so no database server is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cloner import errors
from cloner.controlplane import SQLiteControlPlane, TenantUpdate
from cloner.domain import (
    Credentials,
    Endpoint,
    Engine,
    Industry,
    RequestKind,
    Status,
    TenantSpec,
)
from cloner.engines import available_engines, get_engine
from cloner.engines.pooling import pool_factory_of
from cloner.errors import InvalidInput
from cloner.metrics import Metrics
from cloner.pools import (
    PoolExhausted,
    PoolOptions,
    PoolsNotSupported,
    TenantNotFound,
    TenantPools,
    TenantUnavailable,
)
from cloner.secrets import Vault, generate_credentials
from cloner.settings import Settings
from tests.conftest import make_settings


class FakeConnection:
    """Stands in for an asyncpg connection; remembers its pool."""

    def __init__(self, pool: FakePool) -> None:
        self.pool = pool


class FakePool:
    """A pool that hands out up to ``max_size`` fake connections and records its closing."""

    def __init__(
        self, endpoint: Endpoint, username: str, password: str, options: PoolOptions, *,
        hang_on_close: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.options = options
        self._free = asyncio.Semaphore(options.max_size)
        self.in_use = 0
        self.closed = False
        self.terminated = False
        self.in_use_at_close: int | None = None
        self._hang_on_close = hang_on_close

    async def acquire(
        self, *, timeout: float | None = None,  # noqa: ASYNC109 - asyncpg.Pool.acquire's signature
    ) -> FakeConnection:
        """Wait for a free slot like asyncpg (TimeoutError after ``timeout``)."""
        assert not self.closed, "acquire on a closed pool"
        async with asyncio.timeout(timeout):
            await self._free.acquire()
        self.in_use += 1
        return FakeConnection(self)

    async def release(self, connection: Any) -> None:
        """Take a connection back."""
        assert connection.pool is self
        self.in_use -= 1
        self._free.release()

    async def close(self) -> None:
        """Close (or hang, to exercise the forced path)."""
        self.in_use_at_close = self.in_use
        if self._hang_on_close:
            await asyncio.Event().wait()
        self.closed = True

    def terminate(self) -> None:
        """Force-close."""
        self.terminated = True

    def get_idle_size(self) -> int:
        """Fake idle count: one warm connection unless closed or busy."""
        return 0 if self.closed or self.in_use else 1


class FakeFactory:
    """A ``PoolFactory`` for every engine that records each pool it builds, in order."""

    pool_connect_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, hang_on_close: bool = False) -> None:
        self.pools: list[FakePool] = []
        self.hang_on_close = hang_on_close
        #: Raised by the next ``open_pool`` calls instead of building a pool.
        self.refuse_with: BaseException | None = None

    async def open_pool(
        self, endpoint: Endpoint, username: str, password: str, options: PoolOptions
    ) -> FakePool:
        """Build a fake pool (or refuse like a server that is not there)."""
        if self.refuse_with is not None:
            raise self.refuse_with
        pool = FakePool(endpoint, username, password, options, hang_on_close=self.hang_on_close)
        self.pools.append(pool)
        return pool

    def for_tenant(self, prefix: str) -> list[FakePool]:
        """Pools built for one tenant (by username prefix), oldest first."""
        return [p for p in self.pools if p.username.startswith(prefix)]


@dataclass
class Env:
    """A control plane, a vault, fake pools and the TenantPools under test."""

    cp: SQLiteControlPlane
    vault: Vault
    factory: FakeFactory
    metrics: Metrics
    pools: TenantPools

    async def ready(
        self, tenant_id: str, port: int = 5432, engine: Engine = Engine.POSTGRES
    ) -> Credentials:
        """Register a ready tenant of ``engine`` with fresh credentials; return them."""
        spec = TenantSpec(tenant_id, engine, Industry.NONE, "v1.1")
        await self.cp.enqueue(spec, RequestKind.PROVISION, tenant_id, {})
        await self.cp.update_tenant(tenant_id, TenantUpdate(status=Status.PROVISIONING))
        creds = generate_credentials(tenant_id.replace("-", "_"))
        endpoint = (Endpoint(path=f"/data/sqlite/{tenant_id}.sqlite3")
                    if engine is Engine.SQLITE
                    else Endpoint(host="127.0.0.1", port=port, database=tenant_id))
        await self.cp.update_tenant(tenant_id, TenantUpdate(
            status=Status.READY, endpoint=endpoint,
            credentials_token=self.vault.seal_credentials(creds),
        ))
        return creds

    def sample(self, name: str, **labels: str) -> float | None:
        """A metric sample from the pools' registry."""
        return self.metrics.registry.get_sample_value(name, labels)


async def _env(
    tmp_path: Path, factory: FakeFactory, *,
    pool_factory: Mapping[Engine, FakeFactory] | None = None, **overrides: object,
) -> Env:
    values: dict[str, object] = {"pool_refresh_interval_s": 3600.0}
    values.update(overrides)
    settings: Settings = make_settings(tmp_path / "data", **values)
    cp = SQLiteControlPlane(tmp_path / "cp.sqlite3")
    await cp.open()
    vault, metrics = Vault(Vault.new_key()), Metrics()
    pools = TenantPools(settings, cp, vault, metrics,
                        pool_factory=factory if pool_factory is None else pool_factory)
    return Env(cp, vault, factory, metrics, pools)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """Pools with a cap of 2 and a refresh interval long enough to only refresh by hand."""
    e = await _env(tmp_path, FakeFactory(), pool_max_open=2)
    try:
        yield e
    finally:
        await e.pools.close()
        await e.cp.close()


async def _eventually(predicate: Any, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


# ------------------------------------------------------------------ acquiring


async def test_acquire_builds_pool_from_registry_with_role_credentials(env: Env) -> None:
    """The first acquire opens a pool with the tenant's endpoint and the role's login."""
    creds = await env.ready("acme", port=49153)
    async with env.pools.acquire("acme", role="readonly") as conn:
        assert isinstance(conn, FakeConnection)
    [pool] = env.factory.pools
    assert pool.endpoint == Endpoint(host="127.0.0.1", port=49153, database="acme")
    assert pool.username == creds.roles["readonly"].username
    assert pool.password == creds.roles["readonly"].password
    assert pool.options == PoolOptions(min_size=1, max_size=20, connect_timeout_s=30.0,
                                       command_timeout_s=60.0)


async def test_second_acquire_reuses_the_warm_pool(env: Env) -> None:
    """Repeated acquires of one (tenant, role) share one pool; other roles get their own."""
    await env.ready("acme")
    for _ in range(3):
        async with env.pools.acquire("acme") as conn:
            assert conn.pool is env.factory.pools[0]
    async with env.pools.acquire("acme", role="owner"):
        pass
    assert len(env.factory.pools) == 2
    assert env.pools.open_pools == [("acme", "app"), ("acme", "owner")]


async def test_concurrent_first_acquires_open_one_pool(env: Env) -> None:
    """A burst of first acquires for one tenant builds exactly one pool."""
    await env.ready("acme")

    async def use() -> None:
        async with env.pools.acquire("acme"):
            await asyncio.sleep(0)

    await asyncio.gather(*(use() for _ in range(10)))
    assert len(env.factory.pools) == 1


async def test_unknown_tenant_raises_tenant_not_found_with_its_id(env: Env) -> None:
    """An id the registry does not know raises TenantNotFound (also the cloner-wide class)."""
    with pytest.raises(TenantNotFound) as caught:
        async with env.pools.acquire("ghost"):
            pass
    assert caught.value.tenant_id == "ghost"
    assert isinstance(caught.value, errors.TenantNotFound)
    assert env.sample("cloner_pool_acquire_failures_total", reason="not_found") == 1
    assert env.factory.pools == []


async def test_tenant_not_ready_raises_tenant_unavailable(env: Env) -> None:
    """A tenant still provisioning cannot be connected to."""
    spec = TenantSpec("acme", Engine.POSTGRES, Industry.NONE, "v1.1")
    await env.cp.enqueue(spec, RequestKind.PROVISION, "acme", {})
    with pytest.raises(TenantUnavailable, match="requested") as caught:
        async with env.pools.acquire("acme"):
            pass
    assert caught.value.tenant_id == "acme"
    assert env.sample("cloner_pool_acquire_failures_total", reason="unavailable") == 1


async def test_each_engine_gets_pools_from_its_own_factory(tmp_path: Path) -> None:
    """postgres, mysql and mongodb tenants are pooled by the factory of their engine."""
    factories = {Engine.POSTGRES: FakeFactory(), Engine.MYSQL: FakeFactory(),
                 Engine.MONGODB: FakeFactory()}
    e = await _env(tmp_path, FakeFactory(), pool_factory=factories)
    try:
        for tenant_id, engine in (("pg-t", Engine.POSTGRES), ("my-t", Engine.MYSQL),
                                  ("mongo-t", Engine.MONGODB)):
            creds = await e.ready(tenant_id, engine=engine)
            async with e.pools.acquire(tenant_id, role="readonly") as conn:
                assert conn.pool is factories[engine].pools[-1]
            assert conn.pool.username == creds.roles["readonly"].username
        assert [len(f.pools) for f in factories.values()] == [1, 1, 1]
        assert e.factory.pools == []
    finally:
        await e.pools.close()
        await e.cp.close()


async def test_engine_without_a_factory_is_refused_for_good(tmp_path: Path) -> None:
    """A ready tenant whose engine has no factory is refused, not retried, and says why."""
    e = await _env(tmp_path, FakeFactory(), pool_factory={Engine.POSTGRES: FakeFactory()})
    try:
        await e.ready("my-t", engine=Engine.MYSQL)
        with pytest.raises(PoolsNotSupported, match="mysql, which has no pool factory") as caught:
            async with e.pools.acquire("my-t"):
                pass
        assert caught.value.tenant_id == "my-t"
        assert not caught.value.transient
    finally:
        await e.pools.close()
        await e.cp.close()


async def test_sqlite_tenant_is_refused_with_a_hint_to_open_its_file(env: Env) -> None:
    """sqlite has no server or logins: acquire refuses, naming the file route, opens nothing."""
    await env.ready("lite", engine=Engine.SQLITE)
    with pytest.raises(PoolsNotSupported, match="embedded database") as caught:
        async with env.pools.acquire("lite"):
            pass
    assert isinstance(caught.value, TenantUnavailable)
    assert "endpoint.path" in caught.value.message
    assert (caught.value.transient, caught.value.http_status) == (False, 409)
    assert env.factory.pools == []
    assert env.sample("cloner_pool_acquire_failures_total", reason="unavailable") == 1


def test_server_engines_own_a_pool_factory_and_sqlite_does_not() -> None:
    """By default every container engine opens its own pools; the embedded one has none."""
    have = {e for e in available_engines() if pool_factory_of(get_engine(e)) is not None}
    assert have == {Engine.POSTGRES, Engine.MYSQL, Engine.MONGODB}
    assert pool_factory_of(get_engine(Engine.SQLITE)) is None


async def test_engine_specific_connect_error_becomes_tenant_unavailable(tmp_path: Path) -> None:
    """A factory's own ``pool_connect_errors`` are reported as TenantUnavailable."""

    class DriverRefused(Exception):
        """Stands in for a client library's login error."""

    class Refusing(FakeFactory):
        pool_connect_errors = (DriverRefused,)

    refusing = Refusing()
    refusing.refuse_with = DriverRefused("access denied")
    e = await _env(tmp_path, FakeFactory(), pool_factory={Engine.MYSQL: refusing})
    try:
        await e.ready("my-t", engine=Engine.MYSQL)
        with pytest.raises(TenantUnavailable, match=r"mysql tenant 'my-t'.*DriverRefused"):
            async with e.pools.acquire("my-t"):
                pass
    finally:
        await e.pools.close()
        await e.cp.close()


async def test_unknown_role_is_invalid_input(env: Env) -> None:
    """Only owner, app and readonly pools exist."""
    await env.ready("acme")
    with pytest.raises(InvalidInput, match="unknown role"):
        async with env.pools.acquire("acme", role="superuser"):
            pass


async def test_error_messages_carry_no_secret(env: Env) -> None:
    """A refused pool names the tenant and endpoint, never a password."""
    creds = await env.ready("acme")

    env.factory.refuse_with = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(TenantUnavailable) as caught:
        async with env.pools.acquire("acme"):
            pass
    assert "acme" in str(caught.value)
    assert all(secret not in str(caught.value) for secret in creds.all_secrets())


async def test_busy_pool_raises_pool_exhausted_after_the_timeout(tmp_path: Path) -> None:
    """With every connection held, the next acquire fails with PoolExhausted in time."""
    e = await _env(tmp_path, FakeFactory(), pool_max_size=1, pool_acquire_timeout_s=0.05)
    try:
        await e.ready("acme")
        async with e.pools.acquire("acme"):
            with pytest.raises(PoolExhausted) as caught:
                async with e.pools.acquire("acme"):
                    pass
        assert caught.value.tenant_id == "acme"
        assert e.sample("cloner_pool_acquire_failures_total", reason="exhausted") == 1
    finally:
        await e.pools.close()
        await e.cp.close()


async def test_metrics_follow_connections_in_use(env: Env) -> None:
    """In-use gauge counts held connections; open-pools gauge counts pools; waits are timed."""
    await env.ready("acme")
    async with env.pools.acquire("acme"):
        assert env.sample("cloner_pool_connections_in_use", tenant="acme", role="app") == 1
        assert env.sample("cloner_pools_open") == 1
    assert env.sample("cloner_pool_connections_in_use", tenant="acme", role="app") == 0
    assert env.sample("cloner_pool_connections_idle", tenant="acme", role="app") == 1
    assert env.sample("cloner_pool_acquire_wait_seconds_count") == 1


# ------------------------------------------------------------------- eviction


async def test_lru_evicts_the_least_recently_used_idle_pool(env: Env) -> None:
    """Over the cap, the pool used longest ago is closed, not the oldest created."""
    for tenant_id in ("aaa", "bbb", "ccc"):
        await env.ready(tenant_id)
    for tenant_id in ("aaa", "bbb", "aaa", "ccc"):
        async with env.pools.acquire(tenant_id):
            pass
    assert env.pools.open_pools == [("aaa", "app"), ("ccc", "app")]
    [bbb] = env.factory.for_tenant("bbb")
    await _eventually(lambda: bbb.closed)
    assert not env.factory.for_tenant("aaa")[0].closed
    assert env.sample("cloner_pool_evictions_total") == 1


async def test_busy_pool_is_not_evicted_and_cap_is_exceeded_with_a_warning(env: Env) -> None:
    """Pools with connections in use stay open; the cap is exceeded and logged instead."""
    for tenant_id in ("aaa", "bbb", "ccc"):
        await env.ready(tenant_id)
    with capture_logs() as logs:
        async with env.pools.acquire("aaa"), env.pools.acquire("bbb"), \
                env.pools.acquire("ccc"):
            assert len(env.pools.open_pools) == 3
    assert any(entry["event"] == "pools.over_cap" for entry in logs)
    assert not any(p.closed for p in env.factory.pools)
    assert env.sample("cloner_pool_evictions_total") == 0
    # Once idle again, the next new pool brings the count back under the cap.
    await env.ready("ddd")
    async with env.pools.acquire("ddd"):
        pass
    assert len(env.pools.open_pools) == 2
    assert env.sample("cloner_pool_evictions_total") == 2


# -------------------------------------------------------------------- refresh


async def test_refresh_closes_pool_of_degraded_tenant_and_acquire_is_refused(env: Env) -> None:
    """A tenant that left ready loses its pool at the next refresh and refuses acquires."""
    await env.ready("acme")
    async with env.pools.acquire("acme"):
        pass
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.DEGRADED))
    await env.pools.refresh()
    [pool] = env.factory.pools
    await _eventually(lambda: pool.closed)
    assert env.pools.open_pools == []
    with pytest.raises(TenantUnavailable, match="degraded") as caught:
        async with env.pools.acquire("acme"):
            pass
    assert caught.value.tenant_id == "acme"


async def test_background_refresh_closes_pool_within_the_interval(tmp_path: Path) -> None:
    """The refresh task started by the first acquire notices a deprovisioning tenant."""
    e = await _env(tmp_path, FakeFactory(), pool_refresh_interval_s=0.05)
    try:
        await e.ready("acme")
        async with e.pools.acquire("acme"):
            pass
        await e.cp.update_tenant("acme", TenantUpdate(status=Status.DEPROVISIONING))
        [pool] = e.factory.pools
        await _eventually(lambda: pool.closed, timeout_s=1.0)
    finally:
        await e.pools.close()
        await e.cp.close()


async def test_credential_change_swaps_pool_and_keeps_running_connection(env: Env) -> None:
    """New credentials get a new pool; the old one closes only after its connection returns."""
    await env.ready("acme")
    async with env.pools.acquire("acme") as held:
        new_creds = generate_credentials("acme")
        await env.cp.update_tenant("acme", TenantUpdate(
            credentials_token=env.vault.seal_credentials(new_creds)))
        await env.pools.refresh()
        old, new = env.factory.pools
        assert new.password == new_creds.roles["app"].password
        async with env.pools.acquire("acme") as fresh:
            assert fresh.pool is new
        await asyncio.sleep(0.05)
        assert held.pool is old and not old.closed
    await _eventually(lambda: old.closed)
    assert old.in_use_at_close == 0
    assert not new.closed
    assert env.pools.open_pools == [("acme", "app")]


async def test_endpoint_change_swaps_pool(env: Env) -> None:
    """A tenant whose port moved (container recreated) is reached at the new port."""
    await env.ready("acme", port=40000)
    async with env.pools.acquire("acme"):
        pass
    await env.cp.update_tenant("acme", TenantUpdate(
        endpoint=Endpoint(host="127.0.0.1", port=40001, database="acme")))
    await env.pools.refresh()
    async with env.pools.acquire("acme") as conn:
        assert conn.pool.endpoint.port == 40001


async def test_unrelated_registry_change_keeps_the_pool(env: Env) -> None:
    """A change to another tenant re-reads this one but keeps its pool."""
    await env.ready("acme")
    async with env.pools.acquire("acme"):
        pass
    await env.ready("other")
    await env.pools.refresh()
    assert len(env.factory.pools) == 1
    assert not env.factory.pools[0].closed


async def test_close_terminates_a_pool_that_does_not_close_in_time(tmp_path: Path) -> None:
    """close() gives each pool its timeout, then terminates it."""
    e = await _env(tmp_path, FakeFactory(hang_on_close=True))
    try:
        await e.ready("acme")
        async with e.pools.acquire("acme"):
            pass
        await e.pools.close(timeout_s=0.05)
        [pool] = e.factory.pools
        assert pool.terminated
        assert e.sample("cloner_pools_open") == 0
    finally:
        await e.cp.close()


async def test_open_reads_the_control_plane_and_key_of_the_data_dir(tmp_path: Path) -> None:
    """TenantPools.open serves a tenant registered by another control-plane handle."""
    key = Vault.new_key()
    settings = make_settings(tmp_path / "data", secret_key=key)
    cp = SQLiteControlPlane(settings.control_plane_path)
    await cp.open()
    try:
        writer = Env(cp, Vault(key), FakeFactory(), Metrics(), None)  # type: ignore[arg-type]
        await writer.ready("acme")
    finally:
        await cp.close()
    factory = FakeFactory()
    async with TenantPools.open(settings, pool_factory=factory) as pools, \
            pools.acquire("acme") as conn:
        assert conn.pool is factory.pools[0]
    assert factory.pools[0].closed


# ---------------------------------------------------------- registry counter


async def test_registry_counter_increments_on_every_tenant_write(env: Env) -> None:
    """Enqueueing a tenant and each update bump the counter; queue-only writes do not."""
    start = await env.cp.registry_change_counter()
    spec = TenantSpec("acme", Engine.POSTGRES, Industry.NONE, "v1.1")
    request = await env.cp.enqueue(spec, RequestKind.PROVISION, "acme", {})
    after_enqueue = await env.cp.registry_change_counter()
    assert after_enqueue == start + 1
    claimed = await env.cp.claim("owner", 30.0)
    assert claimed is not None and claimed.lease is not None
    assert claimed.id == request.id
    assert await env.cp.registry_change_counter() == after_enqueue
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.PROVISIONING))
    await env.cp.update_tenant("acme", TenantUpdate(timings={"total_s": 1.0}))
    assert await env.cp.registry_change_counter() == after_enqueue + 2
    await env.cp.complete(claimed.lease)
    assert await env.cp.registry_change_counter() == after_enqueue + 2
