"""Per-tenant connection pools, created lazily from the registry and kept in step with it.

``TenantPools`` hands applications native connections of one tenant and one
role: asyncpg for postgres, aiomysql for mysql, a pymongo ``AsyncDatabase`` for
mongodb. Each engine opens its own pools (``cloner.engines.pooling``); sqlite
tenants have no server and no logins and are refused (applications open their
file directly). A pool is opened the first time a (tenant, role) is asked for,
from the registry's endpoint and decrypted credentials (held in memory only).
A background task polls the registry's change counter; when it moved, the
tenants that have pools are read again: a tenant no longer ``ready`` loses its
pools, changed endpoint or credentials get a fresh pool swapped in. A pool
being replaced or evicted is closed only once the connections it handed out
have come back (bounded by the command timeout), so running queries finish.

At most ``pool_max_open`` pools stay open; beyond that the least recently
used idle pool is closed. A pool with connections in use is never evicted: if
every pool is busy the cap is exceeded for a while and a warning is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cloner import constants
from cloner.controlplane import ControlPlane, SQLiteControlPlane
from cloner.domain import Credentials, Endpoint, Engine, Status, Tenant, validate_tenant_id
from cloner.engines import Placement, available_engines, get_engine
from cloner.engines.pooling import PoolFactory, PoolLike, PoolOptions, pool_factory_of
from cloner.errors import ClonerError, InvalidInput
from cloner.logging import REDACTOR, get_logger
from cloner.metrics import Metrics
from cloner.pools.errors import (
    PoolExhausted,
    PoolsNotSupported,
    TenantNotFound,
    TenantUnavailable,
)
from cloner.secrets import TENANT_ROLES, SecretsError, Vault
from cloner.settings import Settings

log = get_logger(__name__)

#: Roles an application may ask a pool for.
ROLES = TENANT_ROLES

#: Errors that mean "unreachable or refused" whatever the engine.
_BASE_CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)

_Key = tuple[str, str]


@dataclass(frozen=True)
class _Target:
    """Where, how and as whom one (tenant, role) pool connects."""

    engine: Engine
    endpoint: Endpoint
    username: str
    password: str

    def __repr__(self) -> str:  # the password must never reach a log
        e = self.endpoint
        return f"_Target({self.engine.value}:{self.username}@{e.host}:{e.port}/{e.database})"

    @property
    def fingerprint(self) -> str:
        """Changes when anything the pool connects with changes; reveals nothing."""
        e = self.endpoint
        raw = "\0".join((self.engine.value, str(e.host), str(e.port), str(e.database),
                         self.username, self.password))
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(eq=False)
class _Entry:
    """One open pool and its bookkeeping."""

    key: _Key
    pool: PoolLike
    fingerprint: str
    #: Registry change counter read before the data this pool was built from.
    checked_at: int
    in_use_gauge: Any
    idle_gauge: Any
    in_use: int = 0
    retired: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.drained.set()


class TenantPools:
    """Connection pools of every tenant an application talks to (see module docstring).

    ``async with pools.acquire("acme", role="app") as conn`` yields the
    engine's native connection. ``pool_factory`` defaults to each engine's own
    ``open_pool``; one factory (for every engine) or a mapping per engine
    replaces it, so tests can count and inspect pools without a server.
    """

    def __init__(
        self,
        settings: Settings,
        control_plane: ControlPlane,
        vault: Vault,
        metrics: Metrics | None = None,
        *,
        pool_factory: PoolFactory | Mapping[Engine, PoolFactory] | None = None,
    ) -> None:
        self.settings = settings
        self.control_plane = control_plane
        self.vault = vault
        self.metrics = metrics or Metrics()
        self._factories = _factories(pool_factory)
        self._connect_errors = _BASE_CONNECT_ERRORS + tuple(
            {exc for f in self._factories.values() for exc in f.pool_connect_errors}
        )
        self._acquire_timeout_s = settings.pool_acquire_timeout_s
        # Insertion order is recency: acquire moves a pool to the end, eviction takes the front.
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._locks: dict[_Key, asyncio.Lock] = {}
        self._retiring: dict[asyncio.Task[None], _Entry] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *,
        pool_factory: PoolFactory | Mapping[Engine, PoolFactory] | None = None,
    ) -> AsyncIterator[TenantPools]:
        """Pools for an application that embeds cloner without the daemon.

        Opens the control plane named by ``settings`` and reads the daemon's
        secret key (``CLONER_SECRET_KEY`` or the key file in the data dir; it is
        never created here: a new key could not decrypt the registry).
        """
        vault = _vault(settings)
        control_plane = SQLiteControlPlane(settings.control_plane_path)
        await control_plane.open()
        pools = cls(settings, control_plane, vault, pool_factory=pool_factory)
        try:
            pools.start()
            yield pools
        finally:
            try:
                await pools.close()
            finally:
                await control_plane.close()

    # ----------------------------------------------------------------- public

    def start(self) -> None:
        """Start the registry refresh task (``acquire`` also starts it on first use)."""
        if self._closed:
            raise ClonerError("tenant pools are closed")
        if self._refresher is None:
            self._refresher = asyncio.create_task(
                self._refresh_loop(), name="cloner-pools-refresh"
            )

    @asynccontextmanager
    async def acquire(self, tenant_id: str, role: str = "app") -> AsyncIterator[Any]:
        """A pooled native connection of ``tenant_id`` logged in as ``role``.

        asyncpg ``Connection`` (postgres), aiomysql ``Connection`` (mysql) or
        pymongo ``AsyncDatabase`` (mongodb). Raises ``TenantNotFound`` (no such
        tenant), ``TenantUnavailable`` (not ``ready``, its database refuses
        connections, or ``PoolsNotSupported`` for sqlite) or ``PoolExhausted``
        (no connection freed within ``pool_acquire_timeout_s``).
        """
        started = time.perf_counter()
        entry = self._entries.get((tenant_id, role))
        if entry is None:
            entry = await self._open_entry(tenant_id, role)
        else:
            self._entries.move_to_end(entry.key)
        # Counted before the first await: a pool being retired waits for this connection.
        if entry.in_use == 0:
            entry.drained.clear()
        entry.in_use += 1
        entry.in_use_gauge.inc()
        try:
            conn = await self._checkout(entry, tenant_id, role)
            self.metrics.pool_acquire_wait.observe(time.perf_counter() - started)
            try:
                yield conn
            finally:
                await entry.pool.release(conn)
        finally:
            entry.in_use -= 1
            entry.in_use_gauge.dec()
            if not entry.retired:
                entry.idle_gauge.set(entry.pool.get_idle_size())
            if entry.in_use == 0:
                entry.drained.set()

    async def refresh(self) -> None:
        """Bring open pools in line with the registry, if it changed since they were built."""
        counter = await self.control_plane.registry_change_counter()
        stale = sorted({key[0] for key, e in self._entries.items() if e.checked_at < counter})
        for tenant_id in stale:
            await self._recheck(tenant_id, counter)

    async def close(self, timeout_s: float = constants.POOL_CLOSE_TIMEOUT_S) -> None:
        """Stop refreshing and close every pool: gracefully within ``timeout_s``, then force."""
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        entries = list(self._entries.values())
        self._entries.clear()
        # Pools still draining are closed now too: close() must not leave any behind.
        retiring = dict(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        everything = entries + list(retiring.values())
        await asyncio.gather(*(self._close_pool(e, timeout_s) for e in everything))
        for entry in everything:
            self._forget_metrics(entry.key)
        self.metrics.pools_open.set(0)

    @property
    def open_pools(self) -> list[tuple[str, str]]:
        """(tenant, role) of the pools in service, least recently used first."""
        return list(self._entries)

    # ---------------------------------------------------------------- opening

    async def _checkout(self, entry: _Entry, tenant_id: str, role: str) -> Any:
        try:
            return await entry.pool.acquire(timeout=self._acquire_timeout_s)
        except TimeoutError:
            self.metrics.pool_acquire_failures.labels(reason="exhausted").inc()
            raise PoolExhausted(
                tenant_id,
                f"no free {role} connection for tenant {tenant_id!r} within "
                f"{self._acquire_timeout_s:g}s (pool_max_size={self.settings.pool_max_size}); "
                "hint: release connections sooner or raise CLONER_POOL_MAX_SIZE",
            ) from None
        except self._connect_errors as exc:
            self.metrics.pool_acquire_failures.labels(reason="connect").inc()
            raise TenantUnavailable(
                tenant_id, f"tenant {tenant_id!r} refused a {role} connection: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
            ) from exc

    async def _open_entry(self, tenant_id: str, role: str) -> _Entry:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role[:20]!r}: choose one of {', '.join(ROLES)}")
        validate_tenant_id(tenant_id)
        self.start()
        key = (tenant_id, role)
        # One opener per (tenant, role): a burst of first acquires builds one pool, not many.
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._entries.get(key)
            if entry is not None:
                return entry
            counter = await self.control_plane.registry_change_counter()
            try:
                tenant, creds = await self._load(tenant_id)
                target = self._target(tenant, creds, role)
                entry = await self._build(key, target, counter)
            except TenantNotFound:
                self.metrics.pool_acquire_failures.labels(reason="not_found").inc()
                raise
            except TenantUnavailable:
                self.metrics.pool_acquire_failures.labels(reason="unavailable").inc()
                raise
            self._entries[key] = entry
            self._evict_idle(keep=key)
            self._update_open_gauge()
            log.info("pools.opened", tenant_id=tenant_id, role=role,
                     open_pools=len(self._entries))
            return entry

    async def _load(self, tenant_id: str) -> tuple[Tenant, Credentials | None]:
        tenant = await self.control_plane.get_tenant(tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant_id)
        if tenant.status is not Status.READY:
            return tenant, None
        token = await self.control_plane.credentials_token(tenant_id)
        if token is None:
            return tenant, None
        creds = self.vault.open_credentials(token)
        # Decrypted secrets join the log redactor before anything could log them.
        REDACTOR.add(creds.all_secrets())
        return tenant, creds

    async def _build(self, key: _Key, target: _Target, counter: int) -> _Entry:
        tenant_id, role = key
        s = self.settings
        options = PoolOptions(
            min_size=s.pool_min_size, max_size=s.pool_max_size,
            connect_timeout_s=s.pool_acquire_timeout_s, command_timeout_s=s.pool_command_timeout_s,
        )
        try:
            pool = await self._factories[target.engine].open_pool(
                target.endpoint, target.username, target.password, options
            )
        except self._connect_errors as exc:
            raise TenantUnavailable(
                tenant_id, f"cannot open a {role} pool for {target.engine.value} tenant "
                f"{tenant_id!r} at {target.endpoint.host}:{target.endpoint.port}: "
                f"{type(exc).__name__}: {str(exc)[:200]}; "
                f"hint: `cloner tenant show {tenant_id}`",
            ) from exc
        entry = _Entry(
            key=key, pool=pool, fingerprint=target.fingerprint, checked_at=counter,
            in_use_gauge=self.metrics.pool_connections_in_use.labels(tenant=tenant_id, role=role),
            idle_gauge=self.metrics.pool_connections_idle.labels(tenant=tenant_id, role=role),
        )
        entry.idle_gauge.set(pool.get_idle_size())
        return entry

    # ---------------------------------------------------------------- closing

    def _evict_idle(self, keep: _Key) -> None:
        excess = len(self._entries) - self.settings.pool_max_open
        if excess <= 0:
            return
        for key, entry in list(self._entries.items()):
            if excess == 0:
                break
            if key == keep or entry.in_use:
                continue
            del self._entries[key]
            self._retire(entry, forget_metrics=True)
            self.metrics.pool_evictions.inc()
            excess -= 1
            log.debug("pools.evicted", tenant_id=key[0], role=key[1])
        if excess > 0:
            log.warning("pools.over_cap", open_pools=len(self._entries),
                        max_open=self.settings.pool_max_open,
                        hint="every pool has connections in use; raise CLONER_POOL_MAX_OPEN")

    def _retire(self, entry: _Entry, *, forget_metrics: bool) -> None:
        entry.retired = True
        task = asyncio.create_task(
            self._drain_and_close(entry, forget_metrics),
            name=f"cloner-pools-close-{entry.key[0]}-{entry.key[1]}",
        )
        self._retiring[task] = entry
        task.add_done_callback(self._retired)
        self._update_open_gauge()

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.pop(task, None)
        self._update_open_gauge()

    async def _drain_and_close(self, entry: _Entry, forget_metrics: bool) -> None:
        # Connections already handed out finish their queries first; a query cannot
        # outlast the command timeout, so neither does the wait.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.pool_command_timeout_s):
                await entry.drained.wait()
        await self._close_pool(entry, constants.POOL_CLOSE_TIMEOUT_S)
        if forget_metrics and entry.key not in self._entries:
            self._forget_metrics(entry.key)

    async def _close_pool(self, entry: _Entry, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await entry.pool.close()
        except self._connect_errors as exc:
            log.warning("pools.close_forced", tenant_id=entry.key[0], role=entry.key[1],
                        error=type(exc).__name__)
            entry.pool.terminate()

    def _forget_metrics(self, key: _Key) -> None:
        for gauge in (self.metrics.pool_connections_in_use, self.metrics.pool_connections_idle):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)

    def _update_open_gauge(self) -> None:
        self.metrics.pools_open.set(len(self._entries) + len(self._retiring))

    # -------------------------------------------------------------- refreshing

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.pool_refresh_interval_s)
            try:
                await self.refresh()
            except ClonerError as exc:
                # Pools keep serving on what they know; the next poll tries again.
                log.warning("pools.refresh_failed", error=f"{type(exc).__name__}: {exc}")

    async def _recheck(self, tenant_id: str, counter: int) -> None:
        gone = ""
        try:
            tenant, creds = await self._load(tenant_id)
        except TenantNotFound as exc:
            tenant, creds, gone = None, None, exc.message
        for key, entry in [(k, e) for k, e in self._entries.items() if k[0] == tenant_id]:
            try:
                target = self._target(tenant, creds, key[1]) if tenant else None
            except TenantUnavailable as exc:
                gone = exc.message
                target = None
            if target is None:
                self._drop(key, entry)
                log.info("pools.closed_unavailable", tenant_id=tenant_id, role=key[1],
                         reason=gone)
                continue
            if target.fingerprint == entry.fingerprint:
                entry.checked_at = counter
                continue
            await self._swap(key, entry, target, counter)

    async def _swap(self, key: _Key, old: _Entry, target: _Target, counter: int) -> None:
        try:
            new = await self._build(key, target, counter)
        except TenantUnavailable as exc:
            # The next acquire tries again (and reports) rather than using stale credentials.
            self._drop(key, old)
            log.warning("pools.swap_failed", tenant_id=key[0], role=key[1], reason=exc.message)
            return
        if self._entries.get(key) is not old:
            # Evicted, dropped or closed while the new pool was opening: it is not needed.
            self._retire(new, forget_metrics=False)
            return
        # Same key, so the pool keeps its place in the LRU order.
        self._entries[key] = new
        self._retire(old, forget_metrics=False)
        log.info("pools.swapped", tenant_id=key[0], role=key[1])

    def _drop(self, key: _Key, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
            self._retire(entry, forget_metrics=True)

    def _target(self, tenant: Tenant, creds: Credentials | None, role: str) -> _Target:
        tenant_id = tenant.tenant_id
        engine = tenant.engine
        # Checked before the state: no retry will ever give this tenant a pool.
        if get_engine(engine).placement is Placement.EMBEDDED:
            raise PoolsNotSupported(
                tenant_id, f"tenant {tenant_id!r} runs {engine.value}, an embedded database "
                "with no server and no logins, so it has no connection pools; hint: open its "
                f"file directly (endpoint.path in `cloner tenant show {tenant_id} --json`)",
            )
        if tenant.status is Status.MIGRATING:
            raise TenantUnavailable(
                tenant_id, f"tenant {tenant_id!r} is migrating to a new schema version "
                f"(from {tenant.template_version}); connections are refused until the "
                "migration has finished: retry shortly",
            )
        if tenant.status is not Status.READY:
            raise TenantUnavailable(
                tenant_id, f"tenant {tenant_id!r} is {tenant.status.value}, not ready"
            )
        if engine not in self._factories:
            raise PoolsNotSupported(
                tenant_id, f"tenant {tenant_id!r} runs {engine.value}, which has no pool "
                f"factory here; pools serve {', '.join(sorted(e.value for e in self._factories))}",
            )
        endpoint = tenant.endpoint
        if (
            creds is None or role not in creds.roles or endpoint is None
            or endpoint.host is None or endpoint.port is None or endpoint.database is None
        ):
            raise TenantUnavailable(
                tenant_id, f"tenant {tenant_id!r} has no endpoint or {role} credentials"
            )
        cred = creds.roles[role]
        return _Target(engine, endpoint, cred.username, cred.password)


def _factories(
    given: PoolFactory | Mapping[Engine, PoolFactory] | None,
) -> dict[Engine, PoolFactory]:
    """Pool factory per server engine: the engines' own unless tests give theirs."""
    if isinstance(given, Mapping):
        return dict(given)
    if given is not None:
        return {engine: given for engine in available_engines()
                if get_engine(engine).placement is Placement.CONTAINER}
    factories: dict[Engine, PoolFactory] = {}
    for engine in available_engines():
        factory = pool_factory_of(get_engine(engine))
        if factory is not None:
            factories[engine] = factory
    return factories


def _vault(settings: Settings) -> Vault:
    if settings.secret_key is not None:
        return Vault(settings.secret_key.get_secret_value())
    path = settings.data_dir / constants.SECRET_KEY_FILE
    try:
        # Following the file: `cloner keys rotate` may re-encrypt under a new key meanwhile.
        return Vault.from_key_file(path, create=False)
    except SecretsError as exc:
        raise ClonerError(
            f"{exc.message}; hint: set CLONER_SECRET_KEY or point CLONER_DATA_DIR at the "
            "daemon's data dir"
        ) from exc
