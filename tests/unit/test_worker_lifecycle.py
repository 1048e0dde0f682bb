"""Unit tests of the worker on in-memory fakes: retries with backoff, giving up, shutdown, leases.

Real control plane (SQLite on a temporary file); ``InMemoryRuntime`` and
``FakeEngine`` from ``cloner.testing`` stand in for Docker and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cloner.daemon.worker import Worker
from cloner.domain import RequestStatus, Status, container_name, volume_name
from cloner.errors import NotReady, RuntimeFault
from tests.unit.conftest import Env, EnvFactory

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------- transient failures


async def test_transient_runtime_fault_requeues_with_backoff_then_succeeds(
    make_env: EnvFactory,
) -> None:
    """A RuntimeFault at start is retried after a delay; the second attempt reaches READY."""
    env = await make_env(backoff_base_s=0.2, backoff_cap_s=0.2)
    env.runtime.fail_next["ensure_container"] = [RuntimeFault("docker refused create: 500")]
    created = await env.create()
    started = time.time()
    request = await env.work_once()

    assert request.status is RequestStatus.QUEUED
    assert request.attempts == 1
    assert request.last_error == "start: docker refused create: 500"
    assert request.not_before is not None
    assert request.not_before.timestamp() >= started + 0.2 * 0.8
    assert await env.cp.claim(env.app.owner_id, 30.0) is None  # still backing off
    tenant = await env.tenant()
    assert tenant.status is Status.PROVISIONING
    assert tenant.error == {
        "step": "start", "reason": "docker refused create: 500", "class": "RuntimeFault",
        "attempt": 1, "transient": True,
    }
    assert env.runtime.containers == {}  # transient failures are not compensated
    assert env.metric("cloner_provision_retries_total", engine="postgres", step="start") == 1

    request = await env.work_once()

    assert request.id == created.id
    assert request.status is RequestStatus.DONE
    assert request.attempts == 2
    tenant = await env.tenant()
    assert tenant.status is Status.READY
    assert tenant.error is None
    assert tenant.attempts == 2
    assert env.runtime.called("ensure_container") == [container_name("acme")] * 2
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="success",
                      error_class="") == 1
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="failure",
                      error_class="RuntimeFault") == 0


async def test_not_ready_twice_is_retried_with_the_container_log_in_the_error(
    env: Env,
) -> None:
    """Two NotReady probes are retried; the error carries the log tail; attempt 3 is READY."""
    env.engine.fail_next["wait_ready"] = [NotReady("connection refused"),
                                          NotReady("the database system is starting up")]
    env.runtime.logs[container_name("acme")] = "LOG: starting\nLOG: redo in progress\n"
    await env.create()

    first = await env.work_once()
    assert first.status is RequestStatus.QUEUED
    tenant = await env.tenant()
    assert tenant.error is not None
    assert tenant.error["step"] == "ready"
    assert tenant.error["attempt"] == 1
    assert tenant.error["transient"] is True
    assert "connection refused" in tenant.error["reason"]
    assert "LOG: redo in progress" in tenant.error["reason"]

    second = await env.work_once()
    assert second.status is RequestStatus.QUEUED
    assert (await env.tenant()).error["attempt"] == 2  # type: ignore[index]

    third = await env.work_once()
    assert third.status is RequestStatus.DONE
    assert third.attempts == 3
    tenant = await env.tenant()
    assert tenant.status is Status.READY
    assert tenant.attempts == 3
    assert env.engine.hooks().count("wait_ready") == 3
    assert env.engine.hooks().count("container_spec") == 3
    assert len(env.runtime.containers) == 1  # the same container was adopted each time
    assert env.metric("cloner_provision_retries_total", engine="postgres", step="ready") == 2


async def test_transient_failures_exhausting_max_attempts_fail_with_the_last_error(
    make_env: EnvFactory,
) -> None:
    """With max_attempts=2 a persistent NotReady fails on attempt 2 and compensates."""
    env = await make_env(max_attempts=2)
    env.engine.fail["wait_ready"] = NotReady("the database system is starting up")
    await env.create()

    first = await env.work_once()
    assert first.status is RequestStatus.QUEUED
    second = await env.work_once()

    assert second.status is RequestStatus.FAILED
    assert second.attempts == 2
    assert (second.last_error or "").startswith("ready: the database system is starting up")
    tenant = await env.tenant()
    assert tenant.status is Status.FAILED
    assert tenant.error is not None
    assert tenant.error["step"] == "ready"
    assert tenant.error["class"] == "NotReady"
    assert tenant.error["attempt"] == 2
    assert env.runtime.containers == {}
    assert env.runtime.volumes == {}
    assert env.metric("cloner_provision_retries_total", engine="postgres", step="ready") == 1
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="failure",
                      error_class="NotReady") == 1


async def test_container_dying_while_starting_fails_ready_before_the_probe_times_out(
    env: Env,
) -> None:
    """The ready watchdog notices an exited container and retries with its log tail."""
    env.engine.hold["wait_ready"] = asyncio.Event()  # the probe alone would wait 60 s
    env.runtime.logs[container_name("acme")] = "PANIC: could not write to file"
    await env.create()
    request = await env.claim()
    task = asyncio.create_task(Worker(env.app, "w").process(request))
    await env.engine.wait_entered("wait_ready")
    env.runtime.set_status(container_name("acme"), "exited")
    await asyncio.wait_for(task, timeout=5.0)

    stored = await env.request(request.id)
    assert stored.status is RequestStatus.QUEUED
    tenant = await env.tenant()
    assert tenant.status is Status.PROVISIONING
    assert tenant.error is not None
    assert tenant.error["step"] == "ready"
    assert "exited while starting" in tenant.error["reason"]
    assert "PANIC: could not write to file" in tenant.error["reason"]


# ----------------------------------------------------------------------- shutdown


async def test_cancelled_worker_releases_the_request_without_charging_an_attempt(
    env: Env,
) -> None:
    """Shutdown mid-pipeline hands the request back queued with attempts restored."""
    env.engine.hold["wait_ready"] = asyncio.Event()
    created = await env.create()
    request = await env.claim()
    assert request.attempts == 1
    with capture_logs() as logs:
        task = asyncio.create_task(Worker(env.app, "w").process(request))
        await env.engine.wait_entered("wait_ready")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "worker.released_on_shutdown" in [e["event"] for e in logs]

    stored = await env.request(created.id)
    assert stored.status is RequestStatus.QUEUED
    assert stored.attempts == 0
    tenant = await env.tenant()
    assert tenant.status is Status.PROVISIONING
    assert tenant.error is None
    assert container_name("acme") in env.runtime.containers  # kept for the resume
    assert env.engine.hooks() == ["container_spec", "wait_ready"]
    assert env.metric("cloner_workers_busy") == 0

    env.engine.hold["wait_ready"].set()
    resumed = await env.work_once()
    assert resumed.id == created.id
    assert resumed.status is RequestStatus.DONE
    assert resumed.attempts == 1
    assert (await env.tenant()).status is Status.READY
    assert len(env.runtime.containers) == 1


# --------------------------------------------------------------------- lease lost


async def test_worker_that_lost_its_lease_stops_without_writing_ready(
    make_env: EnvFactory,
) -> None:
    """When another owner re-takes an expired lease, the first worker stops, writes nothing."""
    env = await make_env(lease_ttl_s=0.05, heartbeat_interval_s=0.3)
    env.engine.hold["wait_ready"] = asyncio.Event()
    created = await env.create()
    request = await env.claim()
    with capture_logs() as logs:
        task = asyncio.create_task(Worker(env.app, "w").process(request))
        await env.engine.wait_entered("wait_ready")
        await asyncio.sleep(0.1)  # lease (50 ms) expired; the first renewal is due at 300 ms
        stolen = await env.cp.claim("other-daemon", 30.0)
        assert stolen is not None
        assert stolen.id == created.id
        assert stolen.attempts == 2
        await asyncio.wait_for(task, timeout=2.0)  # the renewal fails: the work is cancelled

    assert task.exception() is None
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["worker.lease_lost"]
    tenant = await env.tenant()
    assert tenant.status is Status.PROVISIONING
    assert tenant.error is None
    stored = await env.request(created.id)
    assert stored.status is RequestStatus.RUNNING
    assert stored.attempts == 2
    assert "apply_templates" not in env.engine.hooks()
    assert container_name("acme") in env.runtime.containers  # no compensation
    assert volume_name("acme") in env.runtime.volumes
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="success",
                      error_class="") == 0


async def test_worker_whose_lease_was_taken_stops_at_the_next_step_not_the_next_heartbeat(
    make_env: EnvFactory,
) -> None:
    """A stalled worker resuming after its lease was re-taken stops before the next step."""
    env = await make_env(lease_ttl_s=0.05, heartbeat_interval_s=0.3)
    env.engine.hold["wait_ready"] = asyncio.Event()
    created = await env.create()
    request = await env.claim()
    task = asyncio.create_task(Worker(env.app, "w").process(request))
    await env.engine.wait_entered("wait_ready")
    await asyncio.sleep(0.1)  # stalled past the lease; another daemon re-takes it
    stolen = await env.cp.claim("other-daemon", 30.0)
    assert stolen is not None and stolen.id == created.id
    env.engine.hold["wait_ready"].set()  # the stalled worker resumes before its renewal
    await asyncio.wait_for(task, timeout=2.0)

    assert (await env.tenant()).status is Status.PROVISIONING
    assert "apply_templates" not in env.engine.hooks()
    stored = await env.request(created.id)
    assert stored.status is RequestStatus.RUNNING  # still the other daemon's
    assert container_name("acme") in env.runtime.containers  # no compensation
