"""Deprovisioning: final verified backup → container removed → volume kept (or purged).

Data is never dropped before a verified backup exists: ``--purge`` removes
the volume only after the backup of this run (or an earlier one) checks out.
The same class takes on-demand backups of ready tenants (``RequestKind.BACKUP``).
Every event it records names who asked (``actor`` of the request payload).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloner import constants
from cloner.backups import write_manifest
from cloner.controlplane import TenantUpdate
from cloner.domain import Request, Status, Tenant
from cloner.engines import BackupResult, get_engine
from cloner.errors import BackupError, InvalidTransition
from cloner.logging import get_logger
from cloner.pipeline.context import Services
from cloner.pipeline.provision import StepFailed

log = get_logger(__name__)

#: ``reason`` of the purge requests the retention sweep enqueues.
RETENTION_REASON = "retention"


class Deprovisioner:
    """Takes a tenant from ready/degraded/failed to deprovisioned or purged."""

    def __init__(self, services: Services) -> None:
        self.s = services

    async def run(self, request: Request) -> Tenant:
        """Run one deprovision request; raise ``StepFailed`` on failure."""
        tenant_id = request.tenant_id
        purge = bool(request.payload.get("purge"))
        actor = request.payload.get("actor")
        tenant = await self._get(tenant_id)
        if tenant.status is Status.DEPROVISIONED and not purge:
            return tenant
        step = "mark"
        try:
            if tenant.status is not Status.DEPROVISIONING:
                tenant = await self.s.control_plane.update_tenant(tenant_id, TenantUpdate(
                    status=Status.DEPROVISIONING, event="deprovision_started",
                    event_detail={"purge": purge, "request": request.id, "actor": actor},
                ))
            step = "backup"
            backup = tenant.backup
            host = self.s.host(get_engine(tenant.engine))
            has_data = await host.has_data(tenant_id)
            live = await host.is_live(tenant_id)
            taken_now = bool(backup and backup.get("request") == request.id)
            # Once the container is gone the data cannot change: the backup taken when it
            # was removed stays the final one (purging a deprovisioned tenant needs no new one).
            if (has_data and live and tenant.endpoint is not None and not taken_now
                    and (tenant.has_credentials or not get_engine(tenant.engine).roles)):
                backup = await self.backup(tenant, reason="deprovision", request_id=request.id,
                                           actor=actor)
            step = "remove"
            await host.stop(tenant_id)
            final = Status.DEPROVISIONED
            if purge:
                step = "purge"
                _require_verified(backup, has_data)
                await host.remove_data(tenant_id)
                final = Status.PURGED
            self.s.metrics.deprovisions.labels(outcome="success").inc()
            reason = request.payload.get("reason")
            done = await self.s.control_plane.update_tenant(tenant_id, TenantUpdate(
                status=final, error=None, event=final.value,
                event_detail={"backup": (backup or {}).get("path"), "request": request.id,
                              "actor": actor, "reason": reason},
            ))
        except Exception as exc:
            self.s.metrics.deprovisions.labels(outcome="failure").inc()
            raise StepFailed(step, exc) from exc
        if final is Status.PURGED and reason == RETENTION_REASON:
            # Counted with the reconciler's actions: the retention sweep of its pass
            # decided this purge; the worker only carried it out.
            self.s.metrics.reconcile_actions.labels(action="retention_purged").inc()
            log.info("retention.purged", tenant_id=tenant_id, backup=(backup or {}).get("path"))
        return done

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
        except Exception as exc:
            raise StepFailed("backup", exc) from exc

    async def backup(
        self, tenant: Tenant, *, reason: str, request_id: str | None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Take, checksum and record a logical backup; the container is started if needed."""
        engine, target = await self.s.target(tenant)
        started = time.monotonic()
        try:
            await self.s.host(engine).ensure_running(target)
            await engine.wait_ready(target, self.s.settings.ready_timeout_s)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            folder = self.s.settings.backups_dir / tenant.tenant_id
            dest = folder / f"{tenant.tenant_id}-{stamp}{constants.BACKUP_SUFFIX}"
            result = await engine.backup(self.s.runtime, target, dest)
        except Exception:
            self.s.metrics.backups.labels(engine=tenant.engine.value, outcome="failure").inc()
            raise
        record = _record(result, tenant, reason, request_id, time.monotonic() - started)
        record["actor"] = actor
        await asyncio.to_thread(write_manifest, result.path, record)
        self.s.metrics.backups.labels(engine=tenant.engine.value, outcome="success").inc()
        self.s.metrics.backup_size.labels(engine=tenant.engine.value).set(result.size_bytes)
        self.s.metrics.backup_duration.labels(engine=tenant.engine.value).observe(
            record["duration_s"])
        await self.s.control_plane.update_tenant(tenant.tenant_id, TenantUpdate(
            backup=record, event="backup", event_detail=record,
        ))
        log.info("backup.done", tenant_id=tenant.tenant_id, path=str(result.path),
                 size_bytes=result.size_bytes)
        return record


def _require_verified(backup: dict[str, Any] | None, has_data: bool) -> None:
    if has_data and not _verified(backup):
        raise BackupError("refusing to purge: no verified backup of this tenant")


def _verified(backup: dict[str, Any] | None) -> bool:
    if not backup:
        return False
    path = Path(backup["path"])
    return path.is_file() and path.stat().st_size == backup.get("size_bytes") and bool(
        backup.get("sha256")
    )


def _record(
    result: BackupResult, tenant: Tenant, reason: str, request_id: str | None, seconds: float
) -> dict[str, Any]:
    return {
        "path": str(result.path), "size_bytes": result.size_bytes, "sha256": result.sha256,
        "format": result.format, "restorable_entries": result.restorable_entries,
        "engine": tenant.engine.value,
        "template_version": tenant.template_version, "industry": tenant.industry.value,
        "reason": reason, "request": request_id, "duration_s": round(seconds, 3),
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": constants.CONTAINER_PREFIX + tenant.tenant_id,
    }

