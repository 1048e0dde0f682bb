"""Unit tests of the health monitor on fakes: probes, transitions, gauges, isolation re-proofs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cloner.daemon.health import HealthMonitor, HealthReport, TenantHealth
from cloner.domain import Status, container_name
from cloner.errors import NotReady
from cloner.runtime.base import ContainerStats
from cloner.runtime.docker import _container_stats, _parse_time
from cloner.tenants import TenantService
from cloner.testing import FAKE_CHECKS, FakeEngine
from tests.unit.fleet import Fleet, open_fleet

TENANT = {"tenant": "acme", "engine": "postgres"}


@pytest.fixture
async def fleet(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Fleet]:
    """A fleet on fakes with one READY tenant, ``acme``."""
    async with open_fleet(tmp_path, engine) as opened:
        await opened.ready()
        yield opened


def of(report: HealthReport, tenant_id: str = "acme") -> TenantHealth:
    """The result for one tenant, which must have been checked."""
    found = report.get(tenant_id)
    assert found is not None
    return found


def transitions(fleet: Fleet, to: str) -> float:
    """How many health transitions to ``to`` were counted."""
    return fleet.metric("cloner_health_transitions_total", to=to)


async def test_healthy_tenant_exports_gauges_and_stays_ready(fleet: Fleet) -> None:
    """A passing probe: up=1, probe latency, memory and CPU from the runtime's stats."""
    fleet.engine.probe_seconds = 0.0123
    fleet.runtime.stats_result[container_name("acme")] = ContainerStats(
        memory_bytes=50_000_000, cpu_cores=0.25)

    report = await HealthMonitor(fleet.app).check_once()

    result = report.get("acme")
    assert result is not None and result.up and result.transition is None
    assert fleet.sample("cloner_tenant_up", **TENANT) == 1
    assert fleet.sample("cloner_tenant_probe_seconds", **TENANT) == pytest.approx(0.0123)
    assert fleet.sample("cloner_tenant_memory_bytes", **TENANT) == 50_000_000
    assert fleet.sample("cloner_tenant_cpu_ratio", **TENANT) == 0.25
    assert (await fleet.tenant()).status is Status.READY
    assert fleet.engine.probed["acme"] == (await fleet.tenant()).endpoint


async def test_failed_probe_degrades_and_a_later_success_recovers(fleet: Fleet) -> None:
    """READY → DEGRADED on a failed probe (event + metric), DEGRADED → READY when it answers."""
    monitor = HealthMonitor(fleet.app)
    fleet.engine.fail["probe"] = NotReady("connection refused")

    with capture_logs() as logs:
        down = await monitor.check_once()

    result = down.get("acme")
    assert result is not None and not result.up and result.transition == "degraded"
    assert "connection refused" in (result.error or "")
    assert (await fleet.tenant()).status is Status.DEGRADED
    assert transitions(fleet, "degraded") == 1
    assert fleet.sample("cloner_tenant_up", **TENANT) == 0
    degraded = [e for e in logs if e["event"] == "health.degraded"]
    assert degraded and degraded[0]["tenant_id"] == "acme"
    events = await fleet.cp.events("acme")
    assert events[-1]["kind"] == "degraded"
    assert events[-1]["detail"]["reason"] == "probe failed"

    still = await monitor.check_once()  # still failing: no second transition
    assert of(still).transition is None
    assert transitions(fleet, "degraded") == 1

    del fleet.engine.fail["probe"]
    up = await monitor.check_once()

    assert of(up).transition == "ready"
    assert (await fleet.tenant()).status is Status.READY
    assert transitions(fleet, "ready") == 1
    assert fleet.sample("cloner_tenant_up", **TENANT) == 1


async def test_stopped_container_has_no_memory_or_cpu_series(fleet: Fleet) -> None:
    """No stats sample (container stopped): memory/CPU series removed, not left stale."""
    monitor = HealthMonitor(fleet.app)
    await monitor.check_once()
    assert fleet.sample("cloner_tenant_memory_bytes", **TENANT) is not None
    fleet.runtime.set_status(container_name("acme"), "exited")
    fleet.engine.fail["probe"] = NotReady("connection refused")

    await monitor.check_once()

    assert fleet.sample("cloner_tenant_memory_bytes", **TENANT) is None
    assert fleet.sample("cloner_tenant_cpu_ratio", **TENANT) is None
    assert fleet.sample("cloner_tenant_up", **TENANT) == 0


async def test_gauges_removed_when_tenant_leaves_ready_and_degraded(fleet: Fleet) -> None:
    """A deprovisioned tenant disappears from the per-tenant gauges."""
    monitor = HealthMonitor(fleet.app)
    await monitor.check_once()
    assert fleet.sample("cloner_tenant_up", **TENANT) == 1

    await fleet.delete()
    report = await monitor.check_once()

    assert report.get("acme") is None
    for name in ("cloner_tenant_up", "cloner_tenant_probe_seconds",
                 "cloner_tenant_memory_bytes", "cloner_tenant_cpu_ratio"):
        assert fleet.sample(name, **TENANT) is None, name


async def test_failed_isolation_proof_degrades_until_a_proof_passes(fleet: Fleet) -> None:
    """A failed re-proof: report stored, checks counted, DEGRADED; probes alone do not undo it."""
    monitor = HealthMonitor(fleet.app)
    fleet.engine.failing_checks = {"app_cannot_escalate"}
    counted_before = fleet.metric("cloner_isolation_checks_total",
                                 check="app_cannot_escalate", outcome="failed")

    report = await monitor.check_once(isolation=True)

    result = report.get("acme")
    assert result is not None and result.isolation_passed is False
    assert result.transition == "degraded"
    tenant = await fleet.tenant()
    assert tenant.status is Status.DEGRADED
    assert tenant.isolation is not None and not tenant.isolation.passed
    assert fleet.metric("cloner_isolation_checks_total", check="app_cannot_escalate",
                       outcome="failed") == counted_before + 1
    assert (await fleet.cp.events("acme"))[-1]["detail"]["failed"] == ["app_cannot_escalate"]

    # The probe answers, but the stored proof failed: still degraded.
    assert of(await monitor.check_once()).transition is None
    assert (await fleet.tenant()).status is Status.DEGRADED

    fleet.engine.failing_checks = set()
    healed = await monitor.check_once(isolation=True)

    assert of(healed).transition == "ready"
    tenant = await fleet.tenant()
    assert tenant.status is Status.READY
    assert tenant.isolation is not None and tenant.isolation.passed
    assert [c.name for c in tenant.isolation.checks][: len(FAKE_CHECKS)] == list(FAKE_CHECKS)


async def test_isolation_proof_includes_container_checks_and_neighbours(fleet: Fleet) -> None:
    """The re-proof is the provisioning proof: container checks and the other tenants."""
    await fleet.ready("other")
    await HealthMonitor(fleet.app).check_once(isolation=True)

    tenant = await fleet.tenant()
    assert tenant.isolation is not None
    names = {c.name for c in tenant.isolation.checks}
    assert {"port_published_on_bind_host_only", "own_isolated_network"} <= names
    assert [n.tenant_id for n in fleet.engine.neighbours["acme"]] == ["other"]


async def test_tenant_with_active_request_is_probed_but_not_moved(fleet: Fleet) -> None:
    """A queued delete owns the tenant's state: a failed probe does not degrade it."""
    await TenantService(fleet.app).delete("acme", purge=False)
    fleet.engine.fail["probe"] = NotReady("connection refused")

    report = await HealthMonitor(fleet.app).check_once()

    result = report.get("acme")
    assert result is not None and not result.up and result.transition is None
    assert (await fleet.tenant()).status is Status.READY
    assert fleet.sample("cloner_tenant_up", **TENANT) == 0


async def test_probes_run_concurrently_within_the_bound(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """Probes overlap, but never more than the concurrency bound at once."""
    async with open_fleet(tmp_path, engine) as fleet:
        for i in range(5):
            await fleet.ready(f"tenant-{i}")
        in_flight = peak = 0
        original = engine.probe

        async def slow_probe(target: Any, timeout_s: float) -> float:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            return await original(target, timeout_s)

        engine.probe = slow_probe  # type: ignore[method-assign]
        report = await HealthMonitor(fleet.app, concurrency=2).check_once()

    assert len(report.tenants) == 5 and all(t.up for t in report.tenants)
    assert peak == 2


async def test_run_proves_isolation_on_the_first_pass_and_stops(
    fleet: Fleet, monkeypatch: Any
) -> None:
    """run(): first pass includes the isolation proof; returns once stop is set."""
    monitor = HealthMonitor(fleet.app)
    calls: list[bool] = []
    passed = asyncio.Event()
    original = monitor.check_once

    async def observed(*, isolation: bool = False) -> HealthReport:
        calls.append(isolation)
        report = await original(isolation=isolation)
        passed.set()
        return report

    monkeypatch.setattr(monitor, "check_once", observed)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    await asyncio.wait_for(passed.wait(), 2)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert calls == [True]


# ------------------------------------------------------------ Docker stats math


def test_docker_stats_subtract_page_cache_and_compute_cores() -> None:
    """Memory = usage - inactive file cache (v1 and v2 keys); CPU = share of system x CPUs."""
    raw: dict[str, Any] = {
        "memory_stats": {"usage": 100_000_000, "limit": 256_000_000,
                         "stats": {"total_inactive_file": 30_000_000}},
        "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000},
                      "system_cpu_usage": 20_000_000_000, "online_cpus": 4},
        "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000},
                         "system_cpu_usage": 12_000_000_000},
    }
    stats = _container_stats(raw)
    assert stats.memory_bytes == 70_000_000
    assert stats.memory_limit_bytes == 256_000_000
    assert stats.cpu_cores == pytest.approx(0.5)  # 1e9 of 8e9 system ns over 4 CPUs

    v2 = {**raw, "memory_stats": {"usage": 100, "stats": {"inactive_file": 40}},
          "precpu_stats": {}}
    stats = _container_stats(v2)
    assert stats.memory_bytes == 60
    assert stats.cpu_cores is None  # no previous reading: no rate


def test_docker_timestamps_with_nanoseconds_parse() -> None:
    """Docker's RFC 3339 with nine fractional digits and Z; the zero time is 'unknown'."""
    parsed = _parse_time("2024-05-01T10:11:12.123456789Z")
    assert parsed == datetime(2024, 5, 1, 10, 11, 12, 123456, tzinfo=UTC)
    assert _parse_time("2024-05-01T10:11:12+02:00") is not None
    assert _parse_time("0001-01-01T00:00:00Z") is None
    assert _parse_time("yesterday") is None
    assert _parse_time(None) is None
