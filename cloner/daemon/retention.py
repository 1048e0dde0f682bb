"""Retention: a deprovisioned tenant's volume is purged once it has been kept long enough.

``tenant delete`` keeps the data volume of a deprovisioned tenant so an admin
can change their mind; ``retention_days`` (``CLONER_RETENTION_DAYS``, default
30) says for how long. Each reconciler pass asks this module which
deprovisioned tenants are due: deprovisioned (the ``deprovisioned`` event,
else the row's last update) more than ``retention_days`` ago, no request of
their own queued or running, and a final backup that verifies now (SHA-256
re-computed against its manifest). For each, a purge request is enqueued with
``actor="retention"`` and ``reason="retention"``.

The purge itself is an ordinary ``tenant delete --purge`` run by a worker, not
done inside the pass: the queue's one-active-request rule keeps it from
racing a restore or delete of the same tenant. When
that request finishes the tenant is ``purged``, its volume is gone, its
backups are kept, the ``purged`` event names the ``retention`` actor, and
``cloner_reconcile_actions_total{action="retention_purged"}`` counts it.

The worker re-reads the final backup (SHA-256 against manifest and sidecar)
immediately before it removes the volume, so a backup that rots between this
pass and the purge still stops it.

A due tenant without a verified final backup is never purged: the pass reports
``retention_blocked`` (once per standing condition) and an operator decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cloner import constants
from cloner.app import App
from cloner.backups import is_final, resolve_backup_path, verify_backup
from cloner.domain import Request, RequestKind, Status, Tenant
from cloner.engines import get_engine
from cloner.errors import InvalidBackup, InvalidTransition, TenantExists
from cloner.pipeline.deprovision import RETENTION_REASON

SECONDS_PER_DAY = 86_400.0
DEPROVISIONED_EVENT = Status.DEPROVISIONED.value


@dataclass(frozen=True)
class RetentionOutcome:
    """What the sweep did (or refused to do) about one tenant."""

    action: str  # "retention_queued" | "retention_blocked"
    tenant_id: str
    detail: str


class RetentionSweep:
    """Finds deprovisioned tenants past retention and enqueues their purge."""

    def __init__(self, app: App) -> None:
        self.app = app
        #: (path, size, mtime_ns) → verification outcome, so a blocked tenant's big backup
        #: is not hashed again every pass while the file is unchanged.
        self._verified: dict[tuple[str, int, int], str | None] = {}

    async def sweep(
        self, tenants: Mapping[str, Tenant], active: Mapping[str, Request | None], now: float
    ) -> list[RetentionOutcome]:
        """One sweep over the registry snapshot of a reconciler pass."""
        retention_s = self.app.settings.retention_days * SECONDS_PER_DAY
        outcomes: list[RetentionOutcome] = []
        for tenant in tenants.values():
            if tenant.status is not Status.DEPROVISIONED:
                continue
            tid = tenant.tenant_id
            if active.get(tid) is not None or await self.app.control_plane.active_request(tid):
                continue
            age_s = now - (await self._deprovisioned_at(tenant)).timestamp()
            if age_s < retention_s:
                continue
            problem = await self._backup_problem(tenant)
            if problem is not None:
                outcomes.append(RetentionOutcome("retention_blocked", tid, problem))
                continue
            try:
                request = await self.app.control_plane.enqueue(
                    None, RequestKind.DEPROVISION, tid,
                    {"purge": True, "actor": constants.ACTOR_RETENTION,
                     "reason": RETENTION_REASON},
                )
            except (TenantExists, InvalidTransition):
                continue  # someone else acted on the tenant since the snapshot
            outcomes.append(RetentionOutcome(
                "retention_queued", tid,
                f"deprovisioned {age_s / SECONDS_PER_DAY:.1f} days ago; purge request "
                f"{request.id}",
            ))
        return outcomes

    async def _deprovisioned_at(self, tenant: Tenant) -> datetime:
        events = await self.app.control_plane.events(tenant.tenant_id)
        stamps = [e["at"] for e in events if e["kind"] == DEPROVISIONED_EVENT]
        return datetime.fromisoformat(stamps[-1]) if stamps else tenant.updated_at

    async def _backup_problem(self, tenant: Tenant) -> str | None:
        """None when the tenant's final backup verifies, else why it does not.

        Only the final backup (``final: true``, taken by the deprovision that removed
        the container) holds the volume's data: an on-demand or pre-migration backup
        recorded since is older, and never lets the volume go.
        """
        backup = tenant.backup
        path = (backup or {}).get("path")
        if not isinstance(path, str) or not path:
            return "no recorded backup; the volume is kept"
        if not is_final(backup):
            return (f"the recorded backup is a {(backup or {}).get('reason') or 'earlier'} "
                    "backup, not a final one; the volume is kept (a purge by hand takes "
                    "the final backup from it first)")
        host = self.app.services.host(get_engine(tenant.engine))
        data_of = await host.data_request(tenant.tenant_id)
        if data_of is not None and (backup or {}).get("data_request") != data_of:
            return (f"the kept data was created by request {data_of or '?'}, not the one the "
                    "final backup was taken from; the volume is kept (see `cloner orphans list`)")
        return await asyncio.to_thread(self._verify_cached, tenant.tenant_id, path)

    def _verify_cached(self, tenant_id: str, path: str) -> str | None:
        backups_dir = self.app.settings.backups_dir
        try:
            real = resolve_backup_path(backups_dir, tenant_id, path)
            st = real.stat()
        except (InvalidBackup, OSError) as exc:
            reason = exc.message if isinstance(exc, InvalidBackup) else str(exc)
            return f"backup is not usable ({reason}); the volume is kept"
        key = (str(real), st.st_size, st.st_mtime_ns)
        if key not in self._verified:
            try:
                verify_backup(backups_dir, tenant_id, real)
                self._verified[key] = None
            except InvalidBackup as exc:
                self._verified[key] = f"backup does not verify ({exc.message}); the volume is kept"
        return self._verified[key]
