"""Re-applying an engine's newer hardening to a tenant provisioned by an older cloner.

Each engine declares ``hardening_level``, bumped whenever what ``apply_rbac``
enforces changes; the registry records per tenant the level its rbac last ran
at (provisioning, restore and migration rollback record the engine's current
one). The reconciler queues a ``harden`` request for READY tenants below their
engine's level (``daemon/harden.py``), and a worker runs it here:

1. the tenant must still be READY and still below the level (a redelivered
   request after the level was recorded does nothing);
2. ``apply_rbac`` runs again with the stored credentials: it is idempotent,
   keeps every password and all data, and brings older tenants to today's shape
   (PostgreSQL: database owned by the superuser, tenant settings stripped;
   MariaDB: schema_info guards defined by the owner);
3. the isolation proof runs again, strictly (no legacy tolerance), and is
   stored like any proof;
4. only when it passes is the new level recorded, with a ``hardened`` event
   (``from`` → ``to``).

A failure raises ``StepFailed``: the worker retries transient ones, then
records ``harden_failed`` in the tenant's history. The tenant keeps its
status, credentials and recorded level, and a later pass queues it again
(after ``CLONER_HARDEN_RETRY_S``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from cloner.controlplane import TenantUpdate
from cloner.domain import Request, Status, Tenant
from cloner.engines import get_engine
from cloner.errors import IsolationViolation, TenantNotFound
from cloner.logging import get_logger
from cloner.pipeline.context import Services
from cloner.pipeline.provision import StepFailed
from cloner.pipeline.verify import prove_isolation

log = get_logger(__name__)

#: Event recorded when a tenant's hardening was brought up to its engine's level.
HARDENED_EVENT = "hardened"


class Hardener:
    """Runs one ``harden`` request (see module docstring)."""

    def __init__(self, services: Services) -> None:
        self.s = services

    async def run(self, request: Request) -> Tenant:
        """Re-apply rbac and re-prove the tenant of ``request``; ``StepFailed`` on failure."""
        tenant = await self.s.control_plane.get_tenant(request.tenant_id)
        if tenant is None:
            raise StepFailed("validate", TenantNotFound(f"no tenant {request.tenant_id!r}"))
        driver = get_engine(tenant.engine)
        level = driver.hardening_level
        if (tenant.status is not Status.READY or tenant.hardening_level >= level
                or tenant.migration is not None or tenant.logins_fenced):
            # Moved on since it was queued (deleted, degraded, migrating) or already
            # recorded (redelivery): whatever runs rbac next records the level itself.
            log.info("harden.nothing_to_do", tenant_id=tenant.tenant_id,
                     status=tenant.status.value, level=tenant.hardening_level, engine_level=level)
            return tenant
        engine, target = await self.s.target(tenant)
        settings = self.s.settings
        log.info("harden.start", tenant_id=tenant.tenant_id, step="rbac",
                 level=tenant.hardening_level, engine_level=level)
        try:
            async with asyncio.timeout(settings.step_timeout_s):
                await engine.apply_rbac(target, settings.tenant_connection_limit)
        except Exception as exc:
            raise StepFailed("rbac", exc) from exc
        try:
            report = await prove_isolation(self.s, tenant.engine, engine,
                                           replace(target, legacy_hardening=False))
        except Exception as exc:
            raise StepFailed("verify", exc) from exc
        if not report.passed:
            failed = ", ".join(c.name for c in report.checks if not c.passed)
            raise StepFailed("verify", IsolationViolation(
                f"isolation proof failed after re-applying rbac: {failed}"))
        updated = await self.s.control_plane.update_tenant(tenant.tenant_id, TenantUpdate(
            hardening_level=level, event=HARDENED_EVENT,
            event_detail={"from": tenant.hardening_level, "to": level, "request": request.id},
        ))
        log.info("harden.done", tenant_id=tenant.tenant_id, step="register",
                 level_from=tenant.hardening_level, level_to=level)
        return updated
