"""Real Docker, real PostgreSQL: workers are fenced and never hang (audit M2, M3).

- Two workers of one daemon share a request whose lease expired under a
  stalled heartbeat: only one attempt applies the template step, and the stale
  attempt's registry write is refused.
- A tenant's app role holding ACCESS EXCLUSIVE on one of its own tables fails
  its own backup in bounded time with a clear error, while the health monitor
  probes another tenant normally in the same pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomysql
import pytest
import structlog
from structlog.testing import capture_logs

from cloner.app import App
from cloner.catalog import ResolvedTemplates
from cloner.daemon.health import HealthMonitor
from cloner.daemon.worker import Worker
from cloner.domain import CheckResult, RequestStatus, Status, container_name
from cloner.engines import Neighbour, TenantTarget
from cloner.engines.postgres import POSTGRES_UID, PostgresEngine
from cloner.errors import BackupError, ControlPlaneError, TimeoutExceeded
from cloner.pipeline import Deprovisioner
from cloner.tenants import TenantService
from cloner.testing import use_engine
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import connect, provision_ready, run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STALE, FRESH = "stale", "fresh"
#: A check only the stale attempt's proof carries: if it shows up, its write landed.
STALE_MARK = "written_by_the_stale_attempt"


def _worker() -> str | None:
    """Which test worker the current task runs for (bound by ``Worker.process``)."""
    value = structlog.contextvars.get_contextvars().get("worker")
    return str(value) if value is not None else None


@asynccontextmanager
async def _app(tmp_path: Path, **overrides: Any) -> AsyncIterator[App]:
    require_docker()
    async with App.open(make_settings(tmp_path / "data", **overrides)) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


class StallingPostgres(PostgresEngine):
    """The real PostgreSQL driver; the stale attempt stalls in one hook until released.

    ``apply_templates`` and ``prove_isolation`` record which attempt entered and
    which really ran them; in the hook named by ``stall_in`` the stale attempt
    waits for ``release``. With ``ignore_cancel`` it keeps waiting when cancelled
    (a driver call that does not honour cancellation), so it outlives its lease.
    """

    def __init__(self, stall_in: str, *, ignore_cancel: bool = False) -> None:
        self.stall_in = stall_in
        self.ignore_cancel = ignore_cancel
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()
        self.entered: list[tuple[str, str | None]] = []
        self.applied: list[tuple[str, str | None]] = []

    async def _maybe_stall(self, hook: str) -> None:
        worker = _worker()
        self.entered.append((hook, worker))
        if worker != STALE or hook != self.stall_in:
            return
        self.stalled.set()
        while not self.release.is_set():
            try:
                await asyncio.wait_for(self.release.wait(), timeout=120)
            except asyncio.CancelledError:
                if not self.ignore_cancel:
                    raise

    async def apply_templates(self, target: TenantTarget, templates: ResolvedTemplates) -> None:
        await self._maybe_stall("apply_templates")
        await super().apply_templates(target, templates)
        self.applied.append(("apply_templates", _worker()))

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        await self._maybe_stall("prove_isolation")
        checks = list(await super().prove_isolation(target, neighbours))
        self.applied.append(("prove_isolation", _worker()))
        if _worker() == STALE:
            checks.append(CheckResult(STALE_MARK, True, "the stale attempt's proof"))
        return checks


def _stall_renewals(app: App, stalled: asyncio.Event) -> None:
    """The stale attempt's renewals fail once it stalls (the control plane looks locked)."""
    cp = app.control_plane
    renew: Callable[..., Any] = cp.renew

    async def flaky_renew(*args: Any, **kwargs: Any) -> Any:
        if _worker() == STALE and stalled.is_set():
            raise ControlPlaneError("control plane is locked or unreadable: database is locked")
        return await renew(*args, **kwargs)

    cp.renew = flaky_renew  # type: ignore[method-assign]


async def _two_attempts(
    app: App, engine: StallingPostgres, tenant_id: str
) -> tuple[str, BaseException | None]:
    """Stale attempt claims and stalls; a fresh worker of the same daemon re-takes the
    request after the lease expired and finishes it; then the stale attempt resumes.
    Returns the request id and what the stale worker raised (None: it ended cleanly)."""
    request = await TenantService(app).create(tenant_id, "postgres", "none")
    _stall_renewals(app, engine.stalled)
    claimed = await app.control_plane.claim(app.owner_id, app.settings.lease_ttl_s)
    assert claimed is not None and claimed.id == request.id
    stale = asyncio.create_task(Worker(app, STALE).process(claimed))
    async with asyncio.timeout(90):
        await engine.stalled.wait()
    await run_workers(app, [request.id], workers=1, timeout_s=120)  # the fresh worker…
    engine.release.set()  # …finished the request; the stale attempt resumes now
    async with asyncio.timeout(60):
        (outcome,) = await asyncio.gather(stale, return_exceptions=True)
    return request.id, outcome if isinstance(outcome, BaseException) else None


async def test_two_workers_sharing_a_request_cannot_both_apply_a_step(tmp_path: Path) -> None:
    """Stalled heartbeat, lease expired: the template step is applied by one attempt only."""
    engine = StallingPostgres("apply_templates")
    with use_engine(engine):
        async with _app(tmp_path, lease_ttl_s=3.0, heartbeat_interval_s=1.0) as app:
            # run_workers names its workers test-0…; the fresh one is test-0.
            request_id, stale_error = await _two_attempts(app, engine, "fence-a1")

            applied = [w for hook, w in engine.applied if hook == "apply_templates"]
            assert applied == ["test-0"], engine.applied  # never also by the stale attempt
            assert ("apply_templates", STALE) in engine.entered
            assert stale_error is None, repr(stale_error)  # the worker stopped, it did not crash
            request = await app.control_plane.get_request(request_id)
            assert request is not None
            assert request.status is RequestStatus.DONE and request.attempts == 2
            kinds = [e["kind"] for e in await app.control_plane.events("fence-a1")]
            assert kinds.count("ready") == 1 and "failed" not in kinds
            tenant = await app.control_plane.get_tenant("fence-a1")
            assert tenant is not None and tenant.status is Status.READY
            # The real database was provisioned once and works for the application.
            conn = await connect(await target_of(app, tenant), "app")
            try:
                assert await conn.fetchval("SELECT count(*) FROM system_settings") >= 0
            finally:
                await conn.close()


async def test_stale_attempt_writes_are_refused_after_another_attempt_finished(
    tmp_path: Path,
) -> None:
    """A stale attempt that outlived its lease cannot write the registry or compensate."""
    engine = StallingPostgres("prove_isolation", ignore_cancel=True)
    with use_engine(engine), capture_logs() as logs:
        async with _app(tmp_path, lease_ttl_s=3.0, heartbeat_interval_s=1.0) as app:
            request_id, stale_error = await _two_attempts(app, engine, "fence-b1")

            # The stale attempt did run its proof to the end…
            assert ("prove_isolation", STALE) in engine.applied
            tenant = await app.control_plane.get_tenant("fence-b1")
            assert tenant is not None
            # …but its write of the report was refused: the stored one is the fresh attempt's.
            assert tenant.isolation is not None
            assert STALE_MARK not in [c.name for c in tenant.isolation.checks]
            assert stale_error is None, repr(stale_error)
            assert tenant.status is Status.READY and tenant.error is None
            request = await app.control_plane.get_request(request_id)
            assert request is not None
            assert request.status is RequestStatus.DONE and request.attempts == 2
            kinds = [e["kind"] for e in await app.control_plane.events("fence-b1")]
            assert kinds.count("ready") == 1 and "failed" not in kinds
            # Nothing was compensated away under the fresh attempt: the tenant still serves.
            assert await app.runtime.inspect(container_name("fence-b1")) is not None
            conn = await connect(await target_of(app, tenant), "app")
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()
    # capture_logs leaves out bound context: the stale attempt's entry is the refused write.
    lost = [e for e in logs if e["event"] == "worker.lease_lost"
            and "refused" in str(e.get("error", ""))]
    assert len(lost) == 1, [e for e in logs if "lease" in e["event"]]


async def test_a_tenant_lock_fails_its_own_backup_in_bounded_time_not_others_health(
    tmp_path: Path,
) -> None:
    """ACCESS EXCLUSIVE held by a tenant's app role: its backup fails fast and says why;
    the same health pass probes and re-proves the other tenant normally."""
    async with _app(tmp_path, dump_lock_timeout_s=2.0, health_check_timeout_s=15.0) as app:
        await provision_ready(app, "postgres", "fence-lock-x", "fence-lock-y")
        locked = await app.control_plane.get_tenant("fence-lock-x")
        assert locked is not None
        holder = await connect(await target_of(app, locked), "app")
        try:
            await holder.execute("BEGIN")
            await holder.execute("LOCK TABLE system_settings IN ACCESS EXCLUSIVE MODE")

            started = time.monotonic()
            backup = await TenantService(app).backup("fence-lock-x")
            health = asyncio.create_task(HealthMonitor(app).check_once(isolation=True))
            await run_workers(app, [backup.id], workers=1, timeout_s=90)
            backup_s = time.monotonic() - started
            async with asyncio.timeout(90):
                report = await health
            health_s = time.monotonic() - started
        finally:
            await holder.close()

        finished = await app.control_plane.get_request(backup.id)
        assert finished is not None
        assert finished.status is RequestStatus.FAILED
        assert "lock" in (finished.last_error or ""), finished.last_error
        assert "fence-lock-x" in (finished.last_error or "")
        assert backup_s < 45, backup_s
        assert health_s < 45, health_s
        other = report.get("fence-lock-y")
        assert other is not None and other.up and other.isolation_passed is True, other
        # The locked tenant's pass ended too, without a verdict against it.
        stalled = report.get("fence-lock-x")
        assert stalled is not None and stalled.isolation_passed is None, stalled
        # No dump is left running in the tenant's container.
        _code, out = await app.runtime.exec(
            container_name("fence-lock-x"), ["sh", "-c", "cat /proc/[0-9]*/comm"],
            user=POSTGRES_UID)
        assert "pg_dump" not in out.split(), out
        assert not list((app.settings.backups_dir / "fence-lock-x").glob("*.partial"))


async def test_a_tenant_lock_tables_fails_its_own_mysql_backup_in_bounded_time(
    tmp_path: Path,
) -> None:
    """MariaDB: the owner's LOCK TABLES … WRITE in an open session fails the tenant's own
    backup after the configured lock wait (MariaDB's own default is a year)."""
    async with _app(tmp_path, dump_lock_timeout_s=2.0) as app:
        await provision_ready(app, "mysql", "fence-lock-m")
        tenant = await app.control_plane.get_tenant("fence-lock-m")
        assert tenant is not None
        target = await target_of(app, tenant)
        owner = target.credentials.roles["owner"]
        holder = await aiomysql.connect(
            host=target.endpoint.host, port=target.endpoint.port, user=owner.username,
            password=owner.password, db=target.database, autocommit=True, connect_timeout=5)
        try:
            async with holder.cursor() as cur:
                await cur.execute("LOCK TABLES system_settings WRITE")
            started = time.monotonic()
            with pytest.raises(BackupError, match="lock") as caught:
                async with asyncio.timeout(90):
                    await Deprovisioner(app.services).backup(
                        tenant, reason="on-demand", request_id=None)
            elapsed = time.monotonic() - started
        finally:
            holder.close()

        assert elapsed < 30, elapsed
        assert "fence-lock-m" in caught.value.message
        assert not list((app.settings.backups_dir / "fence-lock-m").glob("*.partial"))
        # Once the lock is gone, the same backup works.
        record = await Deprovisioner(app.services).backup(
            tenant, reason="on-demand", request_id=None)
        assert Path(record["path"]).is_file()


async def test_an_exec_past_its_deadline_is_killed_inside_the_container(tmp_path: Path) -> None:
    """docker-py reads exec streams without a timeout: ours has one, and kills the process."""
    async with _app(tmp_path) as app:
        await provision_ready(app, "postgres", "fence-exec")
        name = container_name("fence-exec")
        started = time.monotonic()
        with pytest.raises(TimeoutExceeded, match="did not finish within 1s; it was killed"):
            await app.runtime.exec_to_file(
                name, ["sh", "-c", "sleep 300 | cat"], tmp_path / "out", user=POSTGRES_UID,
                timeout_s=1.0)
        assert time.monotonic() - started < 15
        _code, out = await app.runtime.exec(
            name, ["sh", "-c", "cat /proc/[0-9]*/comm"], user=POSTGRES_UID)
        assert "sleep" not in out.split(), out  # the pipeline's children are gone too
        # Cancelling the caller kills it as well.
        task = asyncio.create_task(app.runtime.exec(name, ["sleep", "300"], user=POSTGRES_UID))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        _code, out = await app.runtime.exec(
            name, ["sh", "-c", "cat /proc/[0-9]*/comm"], user=POSTGRES_UID)
        assert "sleep" not in out.split(), out
