"""The isolation proof of one tenant, shared by the ``verify`` step and the health monitor.

DESIGN.md asks for the proof at provisioning time and again, on a slower
cadence, for every live tenant: both run exactly this code so a re-run proves
the same things the first run did. The engine proves what only it can see
(roles, grants, neighbours refusing the tenant's credentials); the container
checks here prove what only the runtime can see (published address, network).
"""

from __future__ import annotations

from cloner.controlplane import TenantUpdate
from cloner.domain import CheckResult, Engine, IsolationReport, Status
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
    checks += await container_checks(services, target)
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
        and t.endpoint is not None and t.endpoint.port is not None
    ]


async def container_checks(services: Services, target: TenantTarget) -> list[CheckResult]:
    """Published on the bind host only; alone on the isolated tenant network."""
    name = target.container_name
    info = await services.runtime.inspect(name) if name is not None else None
    network = services.settings.tenant_network
    if info is None:
        return [CheckResult("container_exists", False, "container vanished")]
    bind = services.settings.bind_host
    port_ok = info.host_ip == bind
    isolated = await services.runtime.network_isolated(network)
    net_ok = info.networks == (network,) and isolated
    return [
        CheckResult(
            "port_published_on_bind_host_only", port_ok,
            f"published on {info.host_ip}:{info.host_port} (expected {bind})",
        ),
        CheckResult(
            "own_isolated_network", net_ok,
            f"networks {list(info.networks)}; inter-container traffic "
            f"{'disabled' if isolated else 'ENABLED'} on {network}",
        ),
    ]
