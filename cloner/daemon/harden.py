"""Hardening upgrades: tenants of an older cloner get today's rbac, a few per pass.

rbac runs at provisioning, restore and migration rollback only, so after an
upgrade that bumps an engine's ``hardening_level`` every existing tenant keeps
the older shape. Each reconciler pass asks this module which tenants are due:
READY, recorded level below their engine's, no request of their own queued or
running, and no ``harden_failed`` in the last ``harden_retry_s``. At most
``harden_per_pass`` ``harden`` requests are in the queue at once (those queued
or running count), lowest level first, then by id, so a large fleet is
upgraded gradually and never crowds out provisioning.

The work is an ordinary queued request (``pipeline/harden.py``): the queue's
one-active-request rule keeps it from racing a delete, backup, restore or a
second harden of the same tenant, and a schema migration refuses a tenant
with an active request.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cloner.app import App
from cloner.domain import Engine, Request, RequestKind, Status, Tenant
from cloner.engines import get_engine
from cloner.errors import ClonerError, InvalidTransition, TenantExists

#: ``actor`` of the requests this sweep queues.
ACTOR_HARDEN = "hardening"
HARDEN_FAILED_EVENT = f"{RequestKind.HARDEN.value}_failed"


@dataclass(frozen=True)
class HardenOutcome:
    """A ``harden`` request the sweep queued."""

    tenant_id: str
    detail: str


def engine_levels(engines: Iterable[Engine]) -> dict[Engine, int]:
    """The current hardening level of each engine (engines without a driver are left out)."""
    levels: dict[Engine, int] = {}
    for engine in set(engines):
        try:
            levels[engine] = get_engine(engine).hardening_level
        except ClonerError:
            continue
    return levels


def due_for_hardening(
    tenants: Iterable[Tenant], active: Mapping[str, Request | None],
    levels: Mapping[Engine, int], *, limit: int, cooling: Collection[str] = (),
) -> list[Tenant]:
    """The tenants a pass should queue a ``harden`` request for, in order.

    READY, below their engine's level, without an active request, no migration
    in flight or fencing its logins (``apply_rbac`` would give them LOGIN back)
    and not in ``cooling``; at most ``limit`` minus the ``harden`` requests
    already active.
    """
    in_flight = sum(1 for r in active.values() if r is not None and r.kind is RequestKind.HARDEN)
    room = limit - in_flight
    if room <= 0:
        return []
    due = sorted(
        (t for t in tenants
         if t.status is Status.READY and t.engine in levels
         and t.migration is None and not t.logins_fenced
         and t.hardening_level < levels[t.engine]
         and active.get(t.tenant_id) is None and t.tenant_id not in cooling),
        key=lambda t: (t.hardening_level, t.tenant_id),
    )
    return due[:room]


class HardenSweep:
    """Queues ``harden`` requests for tenants below their engine's hardening level."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def sweep(
        self, tenants: Mapping[str, Tenant], active: Mapping[str, Request | None], now: float
    ) -> list[HardenOutcome]:
        """One sweep over the registry snapshot of a reconciler pass."""
        settings = self.app.settings
        cp = self.app.control_plane
        if settings.harden_per_pass <= 0:
            return []
        levels = engine_levels(t.engine for t in tenants.values())
        # Histories are read only for the tenants about to be picked: one that failed
        # recently makes room for the next in line (the loop ends when none is cooling).
        checked: set[str] = set()
        cooling: set[str] = set()
        while True:
            picked = due_for_hardening(tenants.values(), active, levels,
                                       limit=settings.harden_per_pass, cooling=cooling)
            fresh = [t for t in picked if t.tenant_id not in checked]
            newly_cooling = False
            for tenant in fresh:
                checked.add(tenant.tenant_id)
                failed_at = await self._last_failure(tenant.tenant_id)
                if failed_at is not None and now - failed_at < settings.harden_retry_s:
                    cooling.add(tenant.tenant_id)
                    newly_cooling = True
            if not newly_cooling:
                break
        outcomes: list[HardenOutcome] = []
        for tenant in picked:
            level = levels[tenant.engine]
            try:
                request = await cp.enqueue(None, RequestKind.HARDEN, tenant.tenant_id, {
                    "actor": ACTOR_HARDEN,
                    "reason": f"hardening level {tenant.hardening_level} → {level}",
                })
            except (TenantExists, InvalidTransition):
                continue  # another request of the tenant was queued since the snapshot
            outcomes.append(HardenOutcome(
                tenant.tenant_id,
                f"level {tenant.hardening_level} → {level}; harden request {request.id}",
            ))
        return outcomes

    async def _last_failure(self, tenant_id: str) -> float | None:
        events = await self.app.control_plane.events(tenant_id)
        stamps = [e["at"] for e in events if e["kind"] == HARDEN_FAILED_EVENT]
        return datetime.fromisoformat(stamps[-1]).timestamp() if stamps else None
