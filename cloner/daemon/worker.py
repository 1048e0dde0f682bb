"""Workers lease requests from the queue and run the pipelines.

A lease is renewed every ``heartbeat_interval_s`` while work runs; a worker
that cannot renew stops its work (someone else owns it now). On shutdown the
daemon waits for in-flight work, then cancels it, and the lease is released
so another daemon (or this one after a restart) resumes from the last step.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from cloner.app import App
from cloner.controlplane import TenantUpdate
from cloner.domain import PROVISIONING_KINDS, Request, RequestKind, Status
from cloner.logging import get_logger
from cloner.pipeline import StepFailed

log = get_logger(__name__)


def backoff_s(attempt: int, base_s: float, cap_s: float, jitter: float = 0.2) -> float:
    """Exponential backoff with ±jitter: base·2^(attempt-1), capped."""
    # Clamp the exponent: past ~60 doublings any cap is reached, and 2**1100 overflows a float.
    delay = min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 60))
    jittered: float = delay * (1 + random.uniform(-jitter, jitter))  # noqa: S311 - not crypto
    return max(0.0, jittered)


class LeaseLost(Exception):
    """Another worker took over the request."""


class Worker:
    """One worker: claim → run → record, until told to stop."""

    def __init__(self, app: App, name: str) -> None:
        self.app = app
        self.name = name
        self.busy = False

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; the current request finishes first."""
        settings = self.app.settings
        while not stop.is_set():
            request = await self.app.control_plane.claim(self.app.owner_id, settings.lease_ttl_s)
            if request is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=settings.poll_interval_s)
                continue
            await self.process(request)

    async def process(self, request: Request) -> None:
        """Run one leased request to an outcome, renewing its lease meanwhile."""
        with structlog.contextvars.bound_contextvars(
            tenant_id=request.tenant_id, request_id=request.id, kind=request.kind.value,
            attempt=request.attempts, worker=self.name,
        ):
            self.busy = True
            self.app.metrics.workers_busy.inc()
            work = asyncio.create_task(self._execute(request), name=f"{self.name}:{request.id}")
            heartbeat = asyncio.create_task(self._heartbeat(request, work))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                # Shutdown: stop the pipeline, hand the request back for a resume.
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                await asyncio.shield(
                    self.app.control_plane.release(request.id, self.app.owner_id)
                )
                log.warning("worker.released_on_shutdown")
                raise
            except LeaseLost:
                log.warning("worker.lease_lost")
            finally:
                heartbeat.cancel()
                self.busy = False
                self.app.metrics.workers_busy.dec()

    def _lease_check(self, request: Request) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            renewed = await self.app.control_plane.renew(
                request.id, self.app.owner_id, self.app.settings.lease_ttl_s
            )
            if not renewed:
                raise LeaseLost()

        return check

    async def _heartbeat(self, request: Request, work: asyncio.Task[None]) -> None:
        settings = self.app.settings
        while not work.done():
            await asyncio.sleep(settings.heartbeat_interval_s)
            renewed = await self.app.control_plane.renew(
                request.id, self.app.owner_id, settings.lease_ttl_s
            )
            if not renewed:
                work.cancel(msg="lease lost")
                return

    async def _execute(self, request: Request) -> None:
        cp = self.app.control_plane
        owner = self.app.owner_id
        tenant = await cp.get_tenant(request.tenant_id)
        if (request.kind in PROVISIONING_KINDS and tenant is not None
                and tenant.request_id == request.id and tenant.status is Status.FAILED):
            # Redelivered after the failure was recorded: only the queue is behind.
            error = tenant.error or {}
            line = f"{error.get('step')}: {error.get('reason')}"
            await asyncio.shield(cp.fail(request.id, owner, line))
            return
        try:
            if request.kind in PROVISIONING_KINDS:
                await self.app.provisioner.run(request, checkpoint=self._lease_check(request))
            elif request.kind is RequestKind.BACKUP:
                await self.app.deprovisioner.on_demand(request)
            else:
                await self.app.deprovisioner.run(request)
        except StepFailed as failure:
            await asyncio.shield(self._record_failure(request, failure))
            return
        except asyncio.CancelledError as exc:
            if exc.args and exc.args[0] == "lease lost":
                raise LeaseLost() from exc
            raise
        await asyncio.shield(cp.complete(request.id, owner))

    async def _record_failure(self, request: Request, failure: StepFailed) -> None:
        cp = self.app.control_plane
        owner = self.app.owner_id
        settings = self.app.settings
        error: dict[str, Any] = {
            "step": failure.step, "reason": failure.reason, "class": failure.error_class,
            "attempt": request.attempts, "transient": failure.transient,
        }
        line = f"{failure.step}: {failure.reason}"
        tenant = await cp.get_tenant(request.tenant_id)
        engine = tenant.engine.value if tenant else str(request.payload.get("engine", "unknown"))
        if failure.transient and request.attempts < settings.max_attempts:
            delay = backoff_s(request.attempts, settings.backoff_base_s, settings.backoff_cap_s)
            log.warning("worker.retry", step=failure.step, reason=failure.reason,
                        delay_s=round(delay, 2))
            self.app.metrics.retries.labels(engine=engine, step=failure.step).inc()
            if request.kind is not RequestKind.BACKUP:
                await cp.update_tenant(request.tenant_id, TenantUpdate(error=error))
            await cp.retry(request.id, owner, line, delay)
            return
        log.error("worker.failed", step=failure.step, reason=failure.reason,
                  error_class=failure.error_class)
        detail = {**error, "request": request.id, "actor": request.payload.get("actor")}
        if request.kind in PROVISIONING_KINDS:
            if request.kind is RequestKind.RESTORE:
                self.app.metrics.restores.labels(engine=engine, outcome="failure").inc()
            else:
                self.app.metrics.provisions.labels(
                    engine=engine, outcome="failure", error_class=failure.error_class
                ).inc()
            try:
                # Only what this request created goes (resources labelled with its id). A
                # deprovisioned tenant's kept volume is not: a restore failing before `start`
                # (e.g. its backup stopped verifying while queued) never touched it.
                detail["compensation"] = await self.app.provisioner.compensate(
                    request.tenant_id, request.id, tenant.engine if tenant else None)
            except Exception as exc:  # the reconciler removes what is left
                log.exception("worker.compensation_failed", error=str(exc))
            await cp.update_tenant(request.tenant_id, TenantUpdate(
                status=Status.FAILED, error=error, event_detail=detail,
                event="restore_failed" if request.kind is RequestKind.RESTORE else "failed",
            ))
        elif request.kind is RequestKind.BACKUP:
            # The tenant itself is fine: the reason goes to the request and the history,
            # not to the tenant's error (that field explains why a tenant is not ready).
            await cp.update_tenant(request.tenant_id, TenantUpdate(
                event="backup_failed", event_detail=detail,
            ))
        else:
            await cp.update_tenant(request.tenant_id, TenantUpdate(
                error=error, event="deprovision_failed", event_detail=detail,
            ))
        await cp.fail(request.id, owner, line)


async def drain_until_done(app: App, request_id: str, timeout_s: float) -> None:
    """Work the queue in this process until ``request_id`` has finished (no daemon running)."""
    worker = Worker(app, "inline")
    stop = asyncio.Event()

    async def watch() -> None:
        while True:
            request = await app.control_plane.get_request(request_id)
            if request is None or request.status.value in ("done", "failed"):
                stop.set()
                return
            await asyncio.sleep(0.1)

    async with asyncio.timeout(timeout_s):
        await asyncio.gather(worker.run(stop), watch())
