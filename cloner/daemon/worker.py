"""Workers lease requests from the queue and run the pipelines.

Each claim is an attempt with its own lease token. The pipelines get an
attempt-scoped control plane (``AttemptControlPlane``): every registry write
they make, the step checkpoints and the request's outcome are refused with
``LeaseLost`` once another attempt took the request over, so two attempts of
one request never both act. A lease is renewed every ``heartbeat_interval_s``
while work runs; a renewal the control plane refuses ends the attempt, and
control-plane errors are retried with backoff until the lease could expire,
then the work is cancelled (it must not outlive its lease). On shutdown the
daemon waits for in-flight work, then cancels it, and the lease is released so
another daemon (or this one after a restart) resumes from the last step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from typing import Any

import structlog

from cloner.app import App
from cloner.controlplane import AttemptControlPlane, TenantUpdate
from cloner.domain import PROVISIONING_KINDS, Lease, Request, RequestKind, Status
from cloner.errors import ControlPlaneError, LeaseLost
from cloner.logging import get_logger
from cloner.pipeline import Deprovisioner, Provisioner, StepFailed
from cloner.pipeline.harden import Hardener
from cloner.pipeline.rotate import Rotator

log = get_logger(__name__)

__all__ = ["LeaseLost", "Worker", "backoff_s", "drain_until_done"]

#: First retry of a failed renewal; doubles up to the heartbeat interval.
RENEW_RETRY_BASE_S = 0.2
#: A worker whose claim loop hits a control-plane error waits at most this long to retry.
CLAIM_RETRY_CAP_S = 5.0
#: Request kinds whose failure leaves the tenant as it was (still ready): no tenant error.
#: A failed harden is queued again by a later reconciler pass.
_TENANT_UNTOUCHED = frozenset({RequestKind.BACKUP, RequestKind.ROTATE, RequestKind.HARDEN})


def backoff_s(attempt: int, base_s: float, cap_s: float, jitter: float = 0.2) -> float:
    """Exponential backoff with ±jitter: base·2^(attempt-1), capped."""
    # Clamp the exponent: past ~60 doublings any cap is reached, and 2**1100 overflows a float.
    delay = min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 60))
    jittered: float = delay * (1 + random.uniform(-jitter, jitter))  # noqa: S311 - not crypto
    return max(0.0, jittered)


@dataclasses.dataclass
class _Attempt:
    """One claim being worked on: its lease and why the heartbeat stopped it, if it did."""

    request: Request
    lease: Lease
    control_plane: AttemptControlPlane
    lost: str | None = None


class Worker:
    """One worker: claim → run → record, until told to stop."""

    def __init__(self, app: App, name: str) -> None:
        self.app = app
        self.name = name
        self.busy = False

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; the current request finishes first.

        A control-plane error (locked, unreadable) while claiming or recording
        an outcome is logged and retried with backoff: it never stops the
        daemon. The request it concerned is re-claimed once its lease expires.
        """
        settings = self.app.settings
        errors = 0
        while not stop.is_set():
            try:
                request = await self.app.control_plane.claim(
                    self.app.owner_id, settings.lease_ttl_s)
                if request is not None:
                    await self.process(request)
            except ControlPlaneError as exc:
                errors += 1
                delay = backoff_s(errors, settings.poll_interval_s, CLAIM_RETRY_CAP_S)
                log.warning("worker.control_plane_error", worker=self.name, error=exc.message,
                            retry_in_s=round(delay, 2))
                self.app.metrics.worker_control_plane_errors.inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                continue
            errors = 0
            if request is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=settings.poll_interval_s)

    async def process(self, request: Request) -> None:
        """Run one leased request to an outcome, renewing its lease meanwhile."""
        if request.lease is None:
            raise ValueError(f"request {request.id} was not claimed (it carries no lease)")
        attempt = _Attempt(request, request.lease, AttemptControlPlane(
            self.app.control_plane, request.lease, self.app.settings.lease_ttl_s))
        with structlog.contextvars.bound_contextvars(
            tenant_id=request.tenant_id, request_id=request.id, kind=request.kind.value,
            attempt=request.attempts, worker=self.name,
        ):
            self.busy = True
            self.app.metrics.workers_busy.inc()
            work = asyncio.create_task(self._execute(attempt), name=f"{self.name}:{request.id}")
            heartbeat = asyncio.create_task(self._heartbeat(attempt, work))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                # Shutdown: stop the pipeline, hand the request back for a resume.
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                try:
                    await asyncio.shield(self.app.control_plane.release(attempt.lease))
                except (LeaseLost, ControlPlaneError) as exc:
                    log.warning("worker.release_failed", error=exc.message)
                else:
                    log.warning("worker.released_on_shutdown")
                raise
            except LeaseLost as exc:
                reason = attempt.lost or "taken_over"
                log.warning("worker.lease_lost", reason=reason, error=exc.message)
                self.app.metrics.leases_lost.labels(reason=reason).inc()
            finally:
                heartbeat.cancel()
                self.busy = False
                self.app.metrics.workers_busy.dec()

    async def _heartbeat(self, attempt: _Attempt, work: asyncio.Task[None]) -> None:
        """Renew the lease while ``work`` runs; cancel it once the lease is not certain.

        A renewal that fails with a control-plane error is retried with backoff.
        The lease is certain until ``ttl`` after the last renewal that *started*
        and succeeded; one heartbeat interval before that the work is cancelled
        (the next claim may come at expiry), and so is work whose renewal the
        control plane refused (another attempt holds the request).
        """
        settings = self.app.settings
        ttl, interval = settings.lease_ttl_s, settings.heartbeat_interval_s
        confirmed = time.monotonic()  # the claim itself set the expiry
        failures = 0
        while not work.done():
            delay = interval if failures == 0 else min(
                interval, RENEW_RETRY_BASE_S * 2 ** (failures - 1))
            await asyncio.sleep(delay)
            deadline = confirmed + ttl - interval
            started = time.monotonic()
            held: bool | None
            error = ""
            try:
                # Shielded: a renewal still running at the deadline finishes in the
                # background instead of being cut off inside its transaction.
                held = await asyncio.wait_for(
                    asyncio.shield(self.app.control_plane.renew(attempt.lease, ttl)),
                    timeout=max(deadline - started, 0.01),
                )
            except (ControlPlaneError, TimeoutError) as exc:
                held = None
                error = exc.message if isinstance(exc, ControlPlaneError) else "renewal timed out"
            if held is None:
                failures += 1
                if time.monotonic() >= deadline:
                    log.error("worker.lease_unconfirmed", error=error, failures=failures,
                              hint="the control plane did not answer before the lease could "
                                   "expire; the attempt stops and the request is retried")
                    self._stop(attempt, work, "unconfirmed")
                    return
                log.warning("worker.renew_retry", error=error, failures=failures)
                continue
            if not held:
                self._stop(attempt, work, "taken_over")
                return
            confirmed, failures = started, 0

    @staticmethod
    def _stop(attempt: _Attempt, work: asyncio.Task[None], reason: str) -> None:
        attempt.lost = reason
        work.cancel(msg="lease lost")

    async def _execute(self, attempt: _Attempt) -> None:
        request, cp = attempt.request, attempt.control_plane
        services = dataclasses.replace(self.app.services, control_plane=cp)
        try:
            tenant = await cp.get_tenant(request.tenant_id)
            if (request.kind in PROVISIONING_KINDS and tenant is not None
                    and tenant.request_id == request.id and tenant.status is Status.FAILED):
                # Redelivered after the failure was recorded: only the queue is behind.
                error = tenant.error or {}
                line = f"{error.get('step')}: {error.get('reason')}"
                await asyncio.shield(cp.fail(attempt.lease, line))
                return
            try:
                if request.kind in PROVISIONING_KINDS:
                    await Provisioner(services).run(
                        request, checkpoint=cp.checkpoint)
                elif request.kind is RequestKind.BACKUP:
                    await Deprovisioner(services).on_demand(request)
                elif request.kind is RequestKind.ROTATE:
                    await Rotator(services).run(request)
                elif request.kind is RequestKind.HARDEN:
                    await Hardener(services).run(request)
                else:
                    await Deprovisioner(services).run(
                        request, checkpoint=cp.checkpoint)
            except StepFailed as failure:
                if isinstance(failure.cause, LeaseLost):
                    raise failure.cause from failure
                await asyncio.shield(self._record_failure(attempt, failure))
                return
            await asyncio.shield(cp.complete(attempt.lease))
        except asyncio.CancelledError as exc:
            if attempt.lost is not None:
                raise LeaseLost(
                    f"lease of request {request.id} lost ({attempt.lost}); work cancelled"
                ) from exc
            raise

    async def _record_failure(self, attempt: _Attempt, failure: StepFailed) -> None:
        request, cp, lease = attempt.request, attempt.control_plane, attempt.lease
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
            if request.kind not in _TENANT_UNTOUCHED:
                await cp.update_tenant(request.tenant_id, TenantUpdate(error=error))
            await cp.retry(lease, line, delay)
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
            # Compensation removes containers: only while this attempt still holds the
            # request (LeaseLost otherwise), never under a successor's feet.
            await cp.checkpoint()
            try:
                # Only what this request created goes (resources labelled with its id). A
                # deprovisioned tenant's kept volume is not: a restore failing before `start`
                # (e.g. its backup stopped verifying while queued) never touched it.
                detail["compensation"] = await Provisioner(self.app.services).compensate(
                    request.tenant_id, request.id, tenant.engine if tenant else None)
            except Exception as exc:  # the reconciler removes what is left
                log.exception("worker.compensation_failed", error=str(exc))
            await cp.update_tenant(request.tenant_id, TenantUpdate(
                status=Status.FAILED, error=error, event_detail=detail,
                event="restore_failed" if request.kind is RequestKind.RESTORE else "failed",
            ))
        elif request.kind in _TENANT_UNTOUCHED:
            # The tenant itself is fine: the reason goes to the request and the history,
            # not to the tenant's error (that field explains why a tenant is not ready).
            # A failed harden is queued again by a later reconciler pass.
            await cp.update_tenant(request.tenant_id, TenantUpdate(
                event=f"{request.kind.value}_failed", event_detail=detail,
            ))
        else:
            await cp.update_tenant(request.tenant_id, TenantUpdate(
                error=error, event="deprovision_failed", event_detail=detail,
            ))
        await cp.fail(lease, line)


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
