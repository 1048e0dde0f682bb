"""Health monitor: probes every live tenant, exports its gauges, moves it ready ⇄ degraded.

Every ``health_interval_s`` each READY or DEGRADED tenant gets a protocol probe
(``EngineDriver.probe``: connect as the app role, trivial query) and one
resource sample from the runtime (memory without page cache, CPU in cores).
The results feed the per-tenant gauges ``cloner_tenant_up``,
``cloner_tenant_probe_seconds``, ``cloner_tenant_memory_bytes`` and
``cloner_tenant_cpu_ratio``; a tenant that leaves READY/DEGRADED loses its
label sets, so dashboards never show a deprovisioned tenant as "down".

Every ``volume_sample_interval_s`` one runtime listing (``docker system df``)
sizes every tenant volume at once, for ``cloner_tenant_volume_bytes`` (alerted
on against ``cloner_tenant_volume_quota_bytes``), and the free space of the
data directory's file system is read (``cloner_data_dir_free_bytes``).

Every ``isolation_interval_s`` (and on the first pass) the full isolation
proof of DESIGN.md is re-run through ``cloner.pipeline.verify`` — the same
code the ``verify`` step uses — and its report is stored on the tenant.

Each tenant's check (probe, sample, isolation re-proof) runs under its own
deadline, ``health_check_timeout_s``: a tenant that stalls its check, say by
holding a lock its proof needs, is reported without a verdict and cannot hold
up the pass for the others.

State rules:

- READY + failed probe → DEGRADED; READY + failed isolation proof → DEGRADED.
- DEGRADED + successful probe → READY, but only while the tenant's isolation
  report (fresh, or the stored one) passes: a tenant degraded by a failed
  proof stays degraded until a later proof passes.
- Tenants with an active (queued or running) request are probed and measured
  but never moved: the worker owns their state.
- Transitions go through the registry's state machine, so a tenant that moved
  on meanwhile (say, to ``deprovisioning``) is simply left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass
from typing import Any

import structlog

from cloner.app import App
from cloner.controlplane import TenantUpdate
from cloner.domain import IsolationReport, Status, Tenant, container_name, volume_name
from cloner.engines import Placement, get_engine
from cloner.errors import InvalidTransition
from cloner.logging import get_logger
from cloner.pipeline.verify import prove_isolation
from cloner.runtime.base import ContainerStats

log = get_logger(__name__)

#: States the monitor watches (and exports gauges for). Not MIGRATING: a rollout owns
#: the tenant then, and a probe failing on its locks must not degrade it.
WATCHED = frozenset({Status.READY, Status.DEGRADED})
#: Probe deadline: well under the interval, long enough for a busy server to accept.
PROBE_TIMEOUT_S = 5.0
#: Tenants checked at once: bounds connections, threads and Docker stats calls in flight.
CONCURRENCY = 8
#: Slack of a tenant's outer deadline past the isolation proof's (probe, sample, decision).
OUTER_MARGIN_S = 10.0


# ------------------------------------------------------------------ transitions


async def mark_degraded(
    app: App, tenant: Tenant, reason: str, *, by: str = "health", **detail: Any
) -> bool:
    """READY → DEGRADED with an event and a metric; False if the tenant was not READY.

    Shared with the reconciler (``by="reconcile"``) so both count
    ``health_transitions`` the same way; ``by`` prefixes the log event name.
    """
    return await _transition(app, tenant, Status.DEGRADED, reason, by=by, detail=detail)


async def mark_ready(
    app: App, tenant: Tenant, reason: str, *, by: str = "health", **detail: Any
) -> bool:
    """DEGRADED → READY with an event and a metric; False if the tenant was not DEGRADED."""
    return await _transition(app, tenant, Status.READY, reason, by=by, detail=detail)


async def _transition(
    app: App, tenant: Tenant, target: Status, reason: str, *, by: str, detail: dict[str, Any]
) -> bool:
    source = Status.READY if target is Status.DEGRADED else Status.DEGRADED
    cp = app.control_plane
    # The state machine alone would also let PROVISIONING → READY through, so the row is
    # re-read and must still be the same incarnation in the expected state; a worker may
    # only touch it through an active request, which we check last.
    current = await cp.get_tenant(tenant.tenant_id)
    if (current is None or current.status is not source
            or current.request_id != tenant.request_id
            or await cp.active_request(tenant.tenant_id) is not None):
        return False
    try:
        await asyncio.shield(cp.update_tenant(tenant.tenant_id, TenantUpdate(
            status=target, event=target.value,
            event_detail={"reason": reason, "by": by, **detail},
        )))
    except InvalidTransition:
        return False  # someone else moved it between our read and our write
    app.metrics.health_transitions.labels(to=target.value).inc()
    event = f"{by}.degraded" if target is Status.DEGRADED else f"{by}.recovered"
    (log.warning if target is Status.DEGRADED else log.info)(
        event, tenant_id=tenant.tenant_id, reason=reason, **detail
    )
    return True


# -------------------------------------------------------------------- results


@dataclass(frozen=True)
class TenantHealth:
    """What one pass found for one tenant."""

    tenant_id: str
    engine: str
    up: bool
    probe_seconds: float | None
    stats: ContainerStats | None
    #: Result of the isolation proof run in this pass; None when none ran.
    isolation_passed: bool | None
    #: ``ready`` or ``degraded`` when this pass moved the tenant.
    transition: str | None
    error: str | None = None


@dataclass(frozen=True)
class HealthReport:
    """One health pass over every watched tenant."""

    tenants: tuple[TenantHealth, ...]

    def get(self, tenant_id: str) -> TenantHealth | None:
        """The result for one tenant, if it was checked."""
        return next((t for t in self.tenants if t.tenant_id == tenant_id), None)


# -------------------------------------------------------------------- monitor


class HealthMonitor:
    """Periodic probes, resource gauges and isolation re-proofs (see module docstring)."""

    def __init__(self, app: App, *, concurrency: int = CONCURRENCY,
                 probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.app = app
        self.probe_timeout_s = probe_timeout_s
        self._limiter = asyncio.Semaphore(concurrency)
        #: tenant id → engine of every label set currently exported
        self._exported: dict[str, str] = {}
        #: monotonic time of the next volume-size sample (0: at the first pass)
        self._next_volume_sample = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``health_interval_s`` until ``stop``; re-prove isolation on its cadence."""
        settings = self.app.settings
        next_isolation = time.monotonic()  # first pass proves too: the daemon may have been
        while not stop.is_set():           # down longer than the isolation interval
            isolation = time.monotonic() >= next_isolation
            try:
                await self.check_once(isolation=isolation)
            except Exception as exc:  # one bad pass (control plane busy) must not stop the daemon
                log.warning("health.pass_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                if isolation:
                    next_isolation = time.monotonic() + settings.isolation_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.health_interval_s)

    async def check_once(self, *, isolation: bool = False) -> HealthReport:
        """One pass over every READY/DEGRADED tenant; ``isolation`` re-runs the proof too."""
        tenants = [t for t in await self.app.control_plane.list_tenants() if t.status in WATCHED]
        results = await asyncio.gather(
            *(self._guarded(t, isolation) for t in tenants), return_exceptions=True
        )
        checked: list[TenantHealth] = []
        for tenant, result in zip(tenants, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.error("health.check_crashed", tenant_id=tenant.tenant_id,
                          error=f"{type(result).__name__}: {result}")
                continue
            checked.append(result)
        self._forget_except({t.tenant_id for t in tenants})
        if time.monotonic() >= self._next_volume_sample:
            self._next_volume_sample = (time.monotonic()
                                        + self.app.settings.volume_sample_interval_s)
            await self.sample_disk(tenants)
        return HealthReport(tuple(checked))

    async def sample_disk(self, tenants: list[Tenant]) -> None:
        """Volume bytes of every watched container tenant (one listing), data-dir free space."""
        m = self.app.metrics
        settings = self.app.settings
        m.tenant_volume_quota_bytes.set(settings.tenant_volume_quota_bytes)
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, settings.data_dir)
        except OSError as exc:
            log.warning("health.disk_usage_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            m.data_dir_free_bytes.set(usage.free)
        try:
            sizes = await self.app.runtime.volume_sizes()
        except Exception as exc:  # Docker busy or down: keep the last sample, try next time
            log.warning("health.volume_sizes_failed", error=f"{type(exc).__name__}: {exc}")
            return
        for tenant in tenants:
            if tenant.tenant_id not in self._exported:
                continue
            size = sizes.get(volume_name(tenant.tenant_id))
            labels = {"tenant": tenant.tenant_id, "engine": tenant.engine.value}
            if size is None:
                with contextlib.suppress(KeyError):
                    m.tenant_volume_bytes.remove(tenant.tenant_id, tenant.engine.value)
            else:
                m.tenant_volume_bytes.labels(**labels).set(size)

    async def _guarded(self, tenant: Tenant, isolation: bool) -> TenantHealth:
        """One tenant's check under its own deadline (``health_check_timeout_s``).

        A tenant that stalls its check (say, by holding a lock its isolation
        proof needs) costs the pass at most that long and is reported, while
        every other tenant is checked as usual.
        """
        limit = self.app.settings.health_check_timeout_s
        async with self._limiter:
            with structlog.contextvars.bound_contextvars(tenant_id=tenant.tenant_id):
                # The proof gets the deadline itself (an unfinished proof is no verdict);
                # this outer one, a little later, bounds everything else of the check.
                deadline = asyncio.get_running_loop().time() + limit
                guard = asyncio.timeout(limit + OUTER_MARGIN_S)
                try:
                    async with guard:
                        return await self._check(tenant, isolation, deadline)
                except TimeoutError:
                    if not guard.expired():
                        raise
                    error = f"health check did not finish within {limit:g}s"
                    log.warning("health.check_timeout", timeout_s=limit)
                    return TenantHealth(
                        tenant_id=tenant.tenant_id, engine=tenant.engine.value, up=False,
                        probe_seconds=None, stats=None, isolation_passed=None,
                        transition=None, error=error,
                    )

    async def _check(self, tenant: Tenant, isolation: bool, deadline: float) -> TenantHealth:
        app = self.app
        engine_label = tenant.engine.value
        started = time.monotonic()
        error: str | None = None
        seconds: float | None = None
        driver = target = None
        try:
            driver, target = await app.services.target(tenant)
            seconds = await driver.probe(target, self.probe_timeout_s)
        except Exception as exc:  # any failure means applications cannot use it either
            error = f"{type(exc).__name__}: {exc}"
            log.info("health.probe_failed", error=error)
        up = error is None
        stats = await self._stats(tenant)
        elapsed = seconds if seconds is not None else time.monotonic() - started
        self._export(tenant, up, elapsed, stats)

        report: IsolationReport | None = None
        if isolation and up and driver is not None and target is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    report = await prove_isolation(app.services, tenant.engine, driver, target)
            except TimeoutError:
                # A tenant can stall its own proof (locks): no verdict, keep the last one.
                log.warning("health.isolation_timeout",
                            timeout_s=app.settings.health_check_timeout_s)
            except Exception as exc:  # an interrupted proof is no verdict: keep the last one
                log.warning("health.isolation_error", error=f"{type(exc).__name__}: {exc}")
            else:
                if not report.passed:
                    log.error("health.isolation_failed",
                              failed=[c.name for c in report.checks if not c.passed])

        transition = await self._decide(tenant, up, error, report)
        return TenantHealth(
            tenant_id=tenant.tenant_id, engine=engine_label, up=up, probe_seconds=seconds,
            stats=stats, isolation_passed=None if report is None else report.passed,
            transition=transition, error=error,
        )

    async def _decide(
        self, tenant: Tenant, up: bool, error: str | None, report: IsolationReport | None
    ) -> str | None:
        app = self.app
        if tenant.status is Status.READY:
            if not up:
                moved = await mark_degraded(app, tenant, "probe failed", error=error)
                return "degraded" if moved else None
            if report is not None and not report.passed:
                failed = [c.name for c in report.checks if not c.passed]
                moved = await mark_degraded(app, tenant, "isolation proof failed", failed=failed)
                return "degraded" if moved else None
            return None
        # DEGRADED: back to READY only if reachable and its isolation (fresh or stored) holds.
        proof = report if report is not None else tenant.isolation
        if up and (proof is None or proof.passed):
            moved = await mark_ready(app, tenant, "probe succeeded")
            return "ready" if moved else None
        return None

    async def _stats(self, tenant: Tenant) -> ContainerStats | None:
        if get_engine(tenant.engine).placement is not Placement.CONTAINER:
            return None  # an embedded engine's file: no container to sample
        name = tenant.container_name or container_name(tenant.tenant_id)
        try:
            return await self.app.runtime.stats(name)
        except Exception as exc:  # Docker down or refusing: no sample, the probe still counts
            log.debug("health.stats_failed", error=f"{type(exc).__name__}: {exc}")
            return None

    # ---------------------------------------------------------------- gauges

    def _export(
        self, tenant: Tenant, up: bool, probe_seconds: float, stats: ContainerStats | None
    ) -> None:
        m = self.app.metrics
        labels = {"tenant": tenant.tenant_id, "engine": tenant.engine.value}
        previous = self._exported.get(tenant.tenant_id)
        if previous is not None and previous != tenant.engine.value:
            self._remove(tenant.tenant_id, previous)
        self._exported[tenant.tenant_id] = tenant.engine.value
        m.tenant_up.labels(**labels).set(1 if up else 0)
        m.tenant_probe_seconds.labels(**labels).set(probe_seconds)
        if stats is None:
            # No sample beats a stale one: a stopped container uses no memory.
            for gauge in (m.tenant_memory_bytes, m.tenant_cpu_ratio):
                with contextlib.suppress(KeyError):
                    gauge.remove(tenant.tenant_id, tenant.engine.value)
            return
        m.tenant_memory_bytes.labels(**labels).set(stats.memory_bytes)
        if stats.cpu_cores is not None:
            m.tenant_cpu_ratio.labels(**labels).set(stats.cpu_cores)

    def _forget_except(self, keep: set[str]) -> None:
        for tenant_id in [t for t in self._exported if t not in keep]:
            self._remove(tenant_id, self._exported.pop(tenant_id))

    def _remove(self, tenant_id: str, engine: str) -> None:
        m = self.app.metrics
        for gauge in (m.tenant_up, m.tenant_probe_seconds, m.tenant_memory_bytes,
                      m.tenant_cpu_ratio, m.tenant_volume_bytes):
            with contextlib.suppress(KeyError):
                gauge.remove(tenant_id, engine)
