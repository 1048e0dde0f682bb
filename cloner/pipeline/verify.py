"""The isolation proof of one tenant, shared by the ``verify`` step and the health monitor.

DESIGN.md asks for the proof at provisioning time and again, on a slower
cadence, for every live tenant: both run exactly this code so a re-run proves
the same things the first run did. The engine proves what only it can see
(roles, grants, neighbours refusing the tenant's credentials); the tenant's
host proves where it sits (published address and network of its container,
or the private, contained file of an embedded engine; see ``hosts.py``).
"""

from __future__ import annotations

from cloner.controlplane import TenantUpdate
from cloner.domain import Engine, IsolationReport, Status
from cloner.engines import EngineDriver, Neighbour, TenantTarget
from cloner.pipeline.context import Services

#: States whose endpoints the cross-tenant refusal check must try.
NEIGHBOUR_STATES = frozenset({Status.READY, Status.DEGRADED, Status.PROVISIONING})


async def prove_isolation(
    services: Services, engine_kind: Engine, driver: EngineDriver, target: TenantTarget
) -> IsolationReport:
    """Run the full proof for ``target``, count every check and store the report.

    The report is stored whether it passed or not: a failed proof is exactly
    what an operator needs to read. Callers decide what a failure means
    (provisioning fails the request; the health monitor degrades the tenant).
    """
    neighbours = await neighbours_of(services, engine_kind, driver, target.tenant_id)
    checks = await driver.prove_isolation(target, neighbours)
    checks += await services.host(driver).checks(target)
    report = IsolationReport(tuple(checks))
    for check in checks:
        services.metrics.isolation_checks.labels(
            check=check.name, outcome="passed" if check.passed else "failed"
        ).inc()
    await services.control_plane.update_tenant(target.tenant_id, TenantUpdate(isolation=report))
    return report


async def neighbours_of(
    services: Services, engine_kind: Engine, driver: EngineDriver, tenant_id: str
) -> list[Neighbour]:
    """Every other tenant of the same engine with a live endpoint on this host."""
    tenants = await services.control_plane.list_tenants()
    return [
        Neighbour(t.tenant_id, t.endpoint, driver.database_name(t.tenant_id))
        for t in tenants
        if t.tenant_id != tenant_id and t.engine == engine_kind
        and t.status in NEIGHBOUR_STATES
        and t.endpoint is not None
        and (t.endpoint.port is not None or t.endpoint.path is not None)
    ]
