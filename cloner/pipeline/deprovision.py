"""Deprovisioning: final verified backup → container removed → volume kept (or purged).

Data is never dropped before a verified backup exists. Every deprovision of a
tenant that still has data takes a *final* backup (``final: true`` and the
request id in its record): from the running container, or, when the container
is gone, from the kept volume through a helper container
(``ContainerHost.dump_volume``). If neither works the delete fails and removes
nothing. ``--purge`` (and retention) remove the volume only after that final
backup is read back and its SHA-256 matches its manifest and sidecar, right
before the removal; an older on-demand or pre-migration backup never counts.
The same class takes on-demand backups of ready tenants (``RequestKind.BACKUP``).
Every event it records names who asked (``actor`` of the request payload).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloner import constants
from cloner.backups import final_backup_problem, is_final, write_manifest
from cloner.controlplane import TenantUpdate
from cloner.domain import Engine, Request, Status, Tenant, volume_name
from cloner.engines import BackupResult, Placement, get_engine
from cloner.errors import BackupError, InvalidTransition, LeaseLost, TimeoutExceeded
from cloner.logging import get_logger
from cloner.pipeline.context import Services
from cloner.pipeline.hosts import ContainerHost, TenantHost
from cloner.pipeline.provision import Checkpoint, StepFailed, run_checkpoint

log = get_logger(__name__)

#: ``reason`` of the purge requests the retention sweep enqueues.
RETENTION_REASON = "retention"


class Deprovisioner:
    """Takes a tenant from ready/degraded/failed to deprovisioned or purged."""

    def __init__(self, services: Services) -> None:
        self.s = services

    async def run(self, request: Request, checkpoint: Checkpoint | None = None) -> Tenant:
        """Run one deprovision request; raise ``StepFailed`` on failure.

        ``checkpoint`` runs before every step (the worker confirms its lease
        there); each step has a deadline: a backup ``backup_timeout_s``, the
        others ``step_timeout_s``.
        """
        tenant_id = request.tenant_id
        purge = bool(request.payload.get("purge"))
        actor = request.payload.get("actor")
        tenant = await self._get(tenant_id)
        if tenant.status is Status.DEPROVISIONED and not purge and is_final(tenant.backup):
            return tenant  # done (redelivered); without a final backup, one is taken below
        step = "validate"
        was_deprovisioned = tenant.status is Status.DEPROVISIONED
        try:
            driver = get_engine(tenant.engine)
            host = self.s.host(driver)
            async with self._step(step, checkpoint):
                if was_deprovisioned and await host.has_data(tenant_id):
                    _require_same_data(tenant_id, tenant.backup,
                                       await host.data_request(tenant_id))
            step = "mark"
            async with self._step(step, checkpoint):
                tenant = await self._mark(tenant, request, purge=purge, actor=actor)
            step = "backup"
            backup = tenant.backup
            async with self._step(step, checkpoint):
                has_data, live = await host.has_data(tenant_id), await host.is_live(tenant_id)
                # Which request created the data kept now (volume label, directory marker).
                data_of = await host.data_request(tenant_id) if has_data else None

            def covered() -> bool:
                # The final backup of this request (a retried attempt took it), or the one
                # taken when a deprovisioned tenant's container was removed: its data has
                # not changed since. An on-demand or pre-migration backup never counts.
                return is_final(backup) and (
                    (backup or {}).get("request") == request.id or was_deprovisioned)

            if (has_data and live and not covered() and tenant.endpoint is not None
                    and (tenant.has_credentials or not driver.roles)):
                # Bounded by backup_timeout_s inside (a stalled dump is killed).
                backup = await self.backup(tenant, reason="deprovision", request_id=request.id,
                                           actor=actor, final=True, data_request=data_of)
            step = "remove"
            async with self._step(step, checkpoint):
                await host.stop(tenant_id)
            if has_data and not covered():
                # The container is gone (removed by hand, pruned, never recreated) or could
                # not be backed up: the data is dumped from the kept volume itself. If that
                # fails, so does the delete, and the volume stays.
                step = "backup"
                await _at(step, checkpoint)
                backup = await self._final_backup_of_kept_data(
                    tenant, request.id, actor, data_of)
            final = Status.PURGED if purge else Status.DEPROVISIONED
            if purge:
                step = "purge"
                await self._purge(host, tenant_id, backup, has_data=has_data,
                                  checkpoint=checkpoint)
            self.s.metrics.deprovisions.labels(outcome="success").inc()
            reason = request.payload.get("reason")
            done = await self.s.control_plane.update_tenant(tenant_id, TenantUpdate(
                status=final, error=None, event=final.value,
                event_detail={"backup": (backup or {}).get("path"), "request": request.id,
                              "actor": actor, "reason": reason},
            ))
        except LeaseLost:
            raise  # another attempt owns the request now: nothing to record, nothing to count
        except Exception as exc:
            self.s.metrics.deprovisions.labels(outcome="failure").inc()
            if isinstance(exc, StepFailed):
                raise
            raise StepFailed(step, exc) from exc
        if final is Status.PURGED and reason == RETENTION_REASON:
            # Counted with the reconciler's actions: the retention sweep of its pass
            # decided this purge; the worker only carried it out.
            self.s.metrics.reconcile_actions.labels(action="retention_purged").inc()
            log.info("retention.purged", tenant_id=tenant_id, backup=(backup or {}).get("path"))
        return done

    async def _mark(
        self, tenant: Tenant, request: Request, *, purge: bool, actor: str | None
    ) -> Tenant:
        if tenant.status is Status.DEPROVISIONING:
            return tenant
        return await self.s.control_plane.update_tenant(tenant.tenant_id, TenantUpdate(
            status=Status.DEPROVISIONING, event="deprovision_started",
            event_detail={"purge": purge, "request": request.id, "actor": actor},
        ))

    async def _final_backup_of_kept_data(
        self, tenant: Tenant, request_id: str, actor: str | None, data_of: str | None
    ) -> dict[str, Any]:
        if get_engine(tenant.engine).placement is Placement.CONTAINER:
            return await self.backup_from_volume(
                tenant, reason="deprovision", request_id=request_id, actor=actor, final=True,
                data_request=data_of)
        return await self.backup(tenant, reason="deprovision", request_id=request_id,
                                 actor=actor, final=True, data_request=data_of)

    async def _purge(
        self, host: TenantHost, tenant_id: str, backup: dict[str, Any] | None, *,
        has_data: bool, checkpoint: Checkpoint | None,
    ) -> None:
        await _at("purge", checkpoint)
        if has_data:
            # Read back now, immediately before the volume goes (not when enqueued).
            await asyncio.to_thread(
                require_final_backup, self.s.settings.backups_dir, tenant_id, backup,
                await host.data_request(tenant_id))
        async with self._step("purge", None):
            await host.remove_data(tenant_id)

    def _step(
        self, step: str, checkpoint: Checkpoint | None
    ) -> AbstractAsyncContextManager[None]:
        return _step(step, checkpoint, self.s.settings.step_timeout_s)

    async def _get(self, tenant_id: str) -> Tenant:
        tenant = await self.s.control_plane.get_tenant(tenant_id)
        if tenant is None:
            raise StepFailed("validate", BackupError(f"no tenant {tenant_id!r}"))
        return tenant

    async def on_demand(self, request: Request) -> dict[str, Any]:
        """Run one on-demand backup request of a ready tenant; ``StepFailed`` on failure."""
        tenant = await self._get(request.tenant_id)
        if tenant.backup and tenant.backup.get("request") == request.id:
            return tenant.backup  # redelivered after the backup was recorded
        if tenant.status is not Status.READY:
            raise StepFailed("validate", InvalidTransition(
                f"tenant {tenant.tenant_id!r} is {tenant.status.value}; "
                "only a ready tenant can be backed up on demand"
            ))
        try:
            return await self.backup(tenant, reason="on-demand", request_id=request.id,
                                     actor=request.payload.get("actor"))
        except LeaseLost:
            raise
        except Exception as exc:
            raise StepFailed("backup", exc) from exc

    async def backup(
        self, tenant: Tenant, *, reason: str, request_id: str | None,
        actor: str | None = None, final: bool = False, data_request: str | None = None,
    ) -> dict[str, Any]:
        """Take, checksum and record a logical backup; the container is started if needed.

        A ``final`` backup records ``data_request``: the request that created the data
        it was taken from, which a purge or restore compares with the data it removes.

        The whole backup has one deadline (``backup_timeout_s``): a dump that
        outlives it is stopped (its process killed in the container) and the
        backup fails with ``BackupError``; the dump tool itself waits at most
        ``dump_lock_timeout_s`` for a table lock the tenant holds.
        """
        engine, target = await self.s.target(tenant)
        settings = self.s.settings

        async def dump() -> BackupResult:
            await self.s.host(engine).ensure_running(target)
            await engine.wait_ready(target, settings.ready_timeout_s)
            return await engine.backup(self.s.runtime, target,
                                       backup_dest(self.s, tenant.tenant_id),
                                       lock_wait_s=settings.dump_lock_timeout_s)

        return await self._take(tenant, dump, reason=reason, request_id=request_id,
                                actor=actor, final=final, data_request=data_request)

    async def backup_from_volume(
        self, tenant: Tenant, *, reason: str, request_id: str | None,
        actor: str | None = None, final: bool = False, data_request: str | None = None,
    ) -> dict[str, Any]:
        """Like ``backup``, for a tenant whose container is gone: dumped from its kept volume
        (``ContainerHost.dump_volume``), recorded the same way."""

        async def dump() -> BackupResult:
            return await ContainerHost(self.s).dump_volume(
                tenant.tenant_id, backup_dest(self.s, tenant.tenant_id),
                engine=tenant.engine, request_id=request_id,
            )

        return await self._take(tenant, dump, reason=reason, request_id=request_id,
                                actor=actor, final=final, data_request=data_request,
                                source="volume")

    async def _take(
        self, tenant: Tenant, dump: Callable[[], Awaitable[BackupResult]], *, reason: str,
        request_id: str | None, actor: str | None, final: bool, data_request: str | None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Run ``dump`` under the backup deadline, then checksum-record it like every backup."""
        started = time.monotonic()
        try:
            async with _backup_deadline(tenant.tenant_id, self.s.settings.backup_timeout_s):
                result = await dump()
        except Exception:
            self.s.metrics.backups.labels(engine=tenant.engine.value, outcome="failure").inc()
            raise
        record = _record(result, tenant.tenant_id, reason, request_id,
                         time.monotonic() - started, engine=tenant.engine.value,
                         template_version=tenant.template_version,
                         industry=tenant.industry.value, final=final)
        if final:
            record["data_request"] = data_request
        record["actor"] = actor
        if source is not None:
            record["source"] = source
        return await self._recorded(tenant, record, result)

    async def _recorded(
        self, tenant: Tenant, record: dict[str, Any], result: BackupResult
    ) -> dict[str, Any]:
        await asyncio.to_thread(write_manifest, result.path, record)
        self.s.metrics.backups.labels(engine=tenant.engine.value, outcome="success").inc()
        self.s.metrics.backup_size.labels(engine=tenant.engine.value).set(result.size_bytes)
        self.s.metrics.backup_duration.labels(engine=tenant.engine.value).observe(
            record["duration_s"])
        await self.s.control_plane.update_tenant(tenant.tenant_id, TenantUpdate(
            backup=record, event="backup", event_detail=record,
        ))
        log.info("backup.done", tenant_id=tenant.tenant_id, path=str(result.path),
                 size_bytes=result.size_bytes, final=record.get("final", False))
        return record


async def _at(step: str, checkpoint: Checkpoint | None) -> None:
    if checkpoint is not None:
        await run_checkpoint(checkpoint, step)


@asynccontextmanager
async def _step(step: str, checkpoint: Checkpoint | None, timeout_s: float) -> AsyncIterator[None]:
    """Start ``step`` at a checkpoint (the lease is still ours), then bound it: its
    overrun fails the step with a clear ``TimeoutExceeded``."""
    await _at(step, checkpoint)
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            yield
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        raise StepFailed(step, TimeoutExceeded(
            f"step {step} exceeded {timeout_s:g}s (CLONER_STEP_TIMEOUT_S)")) from exc


@asynccontextmanager
async def _backup_deadline(tenant_id: str, timeout_s: float) -> AsyncIterator[None]:
    """Bound one whole backup; its overrun is a ``BackupError`` that says which setting."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            yield
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        raise BackupError(
            f"backup of {tenant_id} did not finish within {timeout_s:g}s "
            "(CLONER_BACKUP_TIMEOUT_S); it was stopped"
        ) from exc


def backup_dest(services: Services, tenant_id: str) -> Path:
    """Where a new backup of ``tenant_id`` goes (a sortable UTC stamp in its name)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = services.settings.backups_dir / tenant_id
    return folder / f"{tenant_id}-{stamp}{constants.BACKUP_SUFFIX}"


async def backup_kept_volume(
    services: Services, tenant_id: str, *, reason: str, request_id: str | None = None,
    actor: str | None = None, engine: Engine | None = None,
) -> dict[str, Any]:
    """Back up the kept volume of ``tenant_id`` from its labels alone (no registry row needed).

    The shared primitive for volumes whose container is gone (orphans, adoption):
    the engine's normal archive, with the usual ``.json`` manifest and ``.sha256``
    sidecar in the tenant's backup folder, so ``backup list`` and ``tenant restore
    --from`` see it like any other. The engine comes from ``engine`` or the
    volume's label, the template version from the volume's label; the industry is
    unknown without a registry row (``None`` in the manifest). The registry is not
    touched. Raises ``BackupError`` (nothing written) when no backup can be taken.
    """
    started = time.monotonic()
    volume = await services.runtime.volume_info(volume_name(tenant_id))
    labels = volume.labels if volume is not None else {}
    result = await ContainerHost(services).dump_volume(
        tenant_id, backup_dest(services, tenant_id), engine=engine, request_id=request_id,
    )
    record = _record(
        result, tenant_id, reason, request_id, time.monotonic() - started,
        engine=engine.value if engine is not None else labels.get(constants.LABEL_ENGINE),
        template_version=labels.get(constants.LABEL_TEMPLATE_VERSION), industry=None,
        final=False,
    )
    record["actor"] = actor
    record["source"] = "volume"
    await asyncio.to_thread(write_manifest, result.path, record)
    log.info("backup.volume_done", tenant_id=tenant_id, path=str(result.path),
             size_bytes=result.size_bytes)
    return record


def _require_same_data(tenant_id: str, backup: dict[str, Any] | None,
                       data_of: str | None) -> None:
    """A deprovisioned tenant's kept data must be what its final backup was taken from.

    Otherwise (e.g. the control plane was restored from an older copy and the data has
    been replaced by a later restore since) nothing here may judge that data.
    """
    recorded = (backup or {}).get("data_request")
    if is_final(backup) and recorded != data_of:
        raise BackupError(
            f"the kept data of {tenant_id} was created by request {data_of or '?'}, but the "
            f"final backup is of request {recorded or '?'}'s data: it may belong to a newer "
            "incarnation (see `cloner orphans list`); nothing removed")


def require_final_backup(backups_dir: Path, tenant_id: str,
                         backup: dict[str, Any] | None, data_of: str | None) -> None:
    """``BackupError`` (one line) unless the final backup verifies now and was taken from
    the data kept now (created by request ``data_of``). Blocking."""
    problem = final_backup_problem(backups_dir, tenant_id, backup, data_of=data_of)
    if problem is not None:
        raise BackupError(f"refusing to purge {tenant_id}: {problem}; the volume is kept")


def _record(
    result: BackupResult, tenant_id: str, reason: str, request_id: str | None, seconds: float,
    *, engine: str | None, template_version: str | None, industry: str | None, final: bool,
) -> dict[str, Any]:
    return {
        "path": str(result.path), "size_bytes": result.size_bytes, "sha256": result.sha256,
        "format": result.format, "restorable_entries": result.restorable_entries,
        "engine": engine, "template_version": template_version, "industry": industry,
        "reason": reason, "request": request_id, "final": final,
        "duration_s": round(seconds, 3),
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": constants.CONTAINER_PREFIX + tenant_id,
    }

