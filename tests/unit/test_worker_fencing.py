"""Unit tests of lease fencing in the worker: real SQLite control plane, fake runtime and engine.

Two attempts of one request never both act (audit M2): each claim has its own
token, the heartbeat retries control-plane errors and stops work whose lease it
cannot confirm, and a control-plane error never stops a worker's loop or the
daemon's heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cloner.daemon import service
from cloner.daemon.health import HealthMonitor
from cloner.daemon.service import Daemon
from cloner.daemon.worker import Worker
from cloner.domain import CheckResult, RequestStatus, Status, container_name
from cloner.engines import Neighbour, TenantTarget
from cloner.errors import ControlPlaneError
from cloner.tenants import TenantService
from cloner.testing import FakeEngine, use_engine
from tests.unit.conftest import Env, EnvFactory
from tests.unit.fleet import open_fleet


def _failing(
    original: Callable[..., Awaitable[Any]], failures: list[int] | None = None,
) -> tuple[Callable[..., Awaitable[Any]], list[int]]:
    """Wrap ``original``: raise ``ControlPlaneError`` while ``failures[0]`` > 0 (-1: always)."""
    budget = failures if failures is not None else [-1]
    calls = [0]

    async def call(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if budget[0] != 0:
            budget[0] -= 1 if budget[0] > 0 else 0
            raise ControlPlaneError("control plane is locked or unreadable: database is locked")
        return await original(*args, **kwargs)

    return call, calls


async def _run_until_done(env: Env, request_id: str, timeout_s: float = 5.0) -> None:
    stop = asyncio.Event()

    async def watch() -> None:
        finished = (RequestStatus.DONE, RequestStatus.FAILED)
        while not stop.is_set():
            if (await env.request(request_id)).status in finished:
                stop.set()
            await asyncio.sleep(0.01)

    async with asyncio.timeout(timeout_s):
        await asyncio.gather(watch(), Worker(env.app, "w").run(stop))


async def test_heartbeat_retries_control_plane_errors_and_keeps_its_lease(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two failed renewals are retried with backoff; the work finishes as attempt 1."""
    env = await make_env(lease_ttl_s=2.0, heartbeat_interval_s=0.1)
    renew, calls = _failing(env.cp.renew, [2])
    env.engine.delay_s["wait_ready"] = 0.6
    created = await env.create()
    request = await env.claim()
    with capture_logs() as logs:
        task = asyncio.create_task(Worker(env.app, "w").process(request))
        await env.engine.wait_entered("wait_ready")  # past the checkpoints of the first steps
        monkeypatch.setattr(env.cp, "renew", renew)
        await asyncio.wait_for(task, 5.0)

    stored = await env.request(created.id)
    assert stored.status is RequestStatus.DONE
    assert stored.attempts == 1
    assert calls[0] >= 3
    events = [e["event"] for e in logs]
    assert events.count("worker.renew_retry") == 2
    assert "worker.lease_lost" not in events
    assert (await env.tenant()).status is Status.READY


async def test_heartbeat_that_cannot_confirm_its_lease_stops_the_work_before_expiry(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Renewals failing until the lease could expire cancel the work one interval early."""
    env = await make_env(lease_ttl_s=0.6, heartbeat_interval_s=0.15)
    env.engine.hold["wait_ready"] = asyncio.Event()  # would run forever
    created = await env.create()
    request = await env.claim()
    claimed_at = time.monotonic()
    renew, _calls = _failing(env.cp.renew)
    with capture_logs() as logs:
        task = asyncio.create_task(Worker(env.app, "w").process(request))
        await env.engine.wait_entered("wait_ready")
        monkeypatch.setattr(env.cp, "renew", renew)  # the control plane stops answering
        await asyncio.wait_for(task, timeout=3.0)
    stopped_after = time.monotonic() - claimed_at

    assert stopped_after < 0.6  # before the lease could be re-taken
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "worker.lease_unconfirmed"]
    assert env.metric("cloner_worker_leases_lost_total", reason="unconfirmed") == 1
    stored = await env.request(created.id)
    assert stored.status is RequestStatus.RUNNING  # nothing recorded: the lease decides
    assert "apply_templates" not in env.engine.hooks()
    assert container_name("acme") in env.runtime.containers  # no compensation
    monkeypatch.undo()
    await asyncio.sleep(0.65)
    again = await env.claim()
    assert again.id == created.id and again.attempts == 2


async def test_two_workers_of_one_daemon_never_both_run_a_step(make_env: EnvFactory) -> None:
    """Same owner id, lease expired under a stalled worker: only the new attempt goes on."""
    env = await make_env(lease_ttl_s=0.05, heartbeat_interval_s=0.3)
    env.engine.hold["wait_ready"] = asyncio.Event()
    created = await env.create()
    first = await env.claim()
    stalled = asyncio.create_task(Worker(env.app, "w1").process(first))
    await env.engine.wait_entered("wait_ready")
    await asyncio.sleep(0.1)  # the lease (50 ms) expired; the first renewal is due at 300 ms
    second = await env.cp.claim(env.app.owner_id, 30.0)  # same daemon, another worker
    assert second is not None and second.id == created.id and second.attempts == 2
    assert first.lease is not None and second.lease is not None
    assert first.lease.token != second.lease.token
    env.engine.hold["wait_ready"].set()
    with capture_logs() as logs:
        await asyncio.gather(stalled, Worker(env.app, "w2").process(second))

    assert env.engine.hooks().count("apply_templates") == 1
    assert "worker.lease_lost" in [e["event"] for e in logs]
    stored = await env.request(created.id)
    assert stored.status is RequestStatus.DONE and stored.attempts == 2
    assert [e["kind"] for e in await env.cp.events("acme")].count("ready") == 1
    assert (await env.tenant()).status is Status.READY


async def test_control_plane_error_at_a_checkpoint_is_a_transient_step_failure(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A locked control plane at a step boundary retries the request; it does not fail it."""
    env = await make_env(lease_ttl_s=30.0, heartbeat_interval_s=10.0)
    created = await env.create()
    renew, _calls = _failing(env.cp.renew, [1])
    monkeypatch.setattr(env.cp, "renew", renew)

    first = await env.work_once()
    assert first.status is RequestStatus.QUEUED
    assert (first.last_error or "").startswith("validate: control plane is locked")
    tenant = await env.tenant()
    assert tenant.error is not None and tenant.error["transient"] is True

    second = await env.work_once()
    assert second.id == created.id
    assert second.status is RequestStatus.DONE and second.attempts == 2


async def test_worker_loop_survives_control_plane_errors(
    env: Env, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claims failing with a locked control plane are retried; the request still gets done."""
    created = await env.create()
    claim, calls = _failing(env.cp.claim, [2])
    monkeypatch.setattr(env.cp, "claim", claim)
    with capture_logs() as logs:
        await _run_until_done(env, created.id)

    assert calls[0] >= 3
    assert (await env.request(created.id)).status is RequestStatus.DONE
    assert env.metric("cloner_worker_control_plane_errors_total") == 2
    assert [e["event"] for e in logs].count("worker.control_plane_error") == 2


async def test_failed_outcome_write_leaves_the_request_to_its_next_attempt(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`complete` failing once: the loop goes on, and the request is re-claimed after its
    lease expired and finished by attempt 2 (the pipeline is idempotent)."""
    env = await make_env(lease_ttl_s=0.3, heartbeat_interval_s=0.1)
    created = await env.create()
    complete, calls = _failing(env.cp.complete, [1])
    monkeypatch.setattr(env.cp, "complete", complete)
    await _run_until_done(env, created.id)

    stored = await env.request(created.id)
    assert stored.status is RequestStatus.DONE and stored.attempts == 2
    assert calls[0] == 2
    assert (await env.tenant()).status is Status.READY


async def test_daemon_heartbeat_survives_control_plane_errors(
    env: Env, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing daemon heartbeat is logged and retried; the task does not die."""
    monkeypatch.setattr(service, "DAEMON_HEARTBEAT_S", 0.02)
    beat, calls = _failing(env.cp.heartbeat_daemon, [3])
    monkeypatch.setattr(env.cp, "heartbeat_daemon", beat)
    daemon = Daemon(env.app)
    task = asyncio.create_task(daemon._heartbeat())
    async with asyncio.timeout(2.0):
        while not await env.cp.live_daemons(within_s=60):
            assert not task.done(), task
            await asyncio.sleep(0.01)
    daemon.stop.set()
    await asyncio.wait_for(task, 1.0)
    assert calls[0] >= 4


# ------------------------------------------------------------------ deadlines


class _StallsOne(FakeEngine):
    """A fake whose isolation proof never ends for one tenant (it holds a lock, say)."""

    def __init__(self, stalled: str) -> None:
        super().__init__()
        self.stalled = stalled
        self.stalling = False

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        if self.stalling and target.tenant_id == self.stalled:
            await asyncio.Event().wait()
        return await super().prove_isolation(target, neighbours)


async def test_one_stalled_tenant_cannot_stall_the_health_pass_for_others(
    tmp_path: Path,
) -> None:
    """The stalled tenant's proof ends at its own deadline without a verdict; the other
    tenant is probed and re-proved in the same pass."""
    with use_engine(_StallsOne("stuck")) as engine:
        async with open_fleet(tmp_path, engine, health_check_timeout_s=0.3) as fleet:
            await fleet.ready("stuck")
            await fleet.ready("fine")
            engine.stalling = True
            with capture_logs() as logs:
                started = time.monotonic()
                report = await asyncio.wait_for(
                    HealthMonitor(fleet.app).check_once(isolation=True), timeout=5)
            assert time.monotonic() - started < 2
            fine, stuck = report.get("fine"), report.get("stuck")
            assert fine is not None and fine.up and fine.isolation_passed is True
            assert stuck is not None and stuck.up and stuck.isolation_passed is None
            assert stuck.transition is None
            assert (await fleet.tenant("stuck")).status is Status.READY
            assert "health.isolation_timeout" in [e["event"] for e in logs]


async def test_backup_past_its_deadline_fails_with_a_clear_error(
    make_env: EnvFactory,
) -> None:
    """A dump that outlives CLONER_BACKUP_TIMEOUT_S is stopped; the request fails saying so."""
    env = await make_env(backup_timeout_s=0.2)
    created = await env.create()
    assert (await env.work_once()).id == created.id
    backup = await TenantService(env.app).backup("acme")
    env.engine.delay_s["backup"] = 30
    started = time.monotonic()
    stored = await env.work_once()

    assert stored.id == backup.id and stored.status is RequestStatus.FAILED
    assert time.monotonic() - started < 5
    assert "did not finish within 0.2s (CLONER_BACKUP_TIMEOUT_S)" in (stored.last_error or "")
    assert (await env.tenant()).status is Status.READY
