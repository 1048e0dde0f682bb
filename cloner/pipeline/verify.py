"""The isolation proof of one tenant, shared by the ``verify`` step and the health monitor.

DESIGN.md asks for the proof at provisioning time and again, on a slower
cadence, for every live tenant: both run exactly this code so a re-run proves
the same things the first run did. The engine proves what only it can see
(roles, grants, neighbours refusing the tenant's credentials); the tenant's
host proves where it sits (published address and network of its container,
or the private, contained file of an embedded engine; see ``hosts.py``).

The cross-tenant part asks a bounded, rotating sample of neighbours
(``CLONER_ISOLATION_SAMPLE``), never the whole fleet, and only neighbours
cloner vouches for: READY in the registry, and their container matched
against the runtime (name, id, tenant label, running, published port). A
freed port or a stale endpoint of a stopped, provisioning or degraded tenant
is never treated as a tenant. The engine then asks each sampled neighbour's
own server, through the neighbour's own privileged session, about this
tenant's credentials; none of this tenant's secrets leaves for another
endpoint (``engines/checks.py``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cloner.controlplane import TenantUpdate
from cloner.domain import CheckResult, Engine, IsolationReport, Status, Tenant
from cloner.engines import EngineDriver, Neighbour, Placement, TenantTarget
from cloner.engines.checks import CROSS_TENANT_CHECK
from cloner.logging import get_logger
from cloner.pipeline.context import Services

log = get_logger(__name__)

#: The only state whose endpoint cloner vouches for (besides the runtime's word).
NEIGHBOUR_STATES = frozenset({Status.READY})


@dataclass(frozen=True)
class NeighbourSample:
    """The neighbours one proof asks, and the candidates it passed over."""

    neighbours: tuple[Neighbour, ...]
    #: (tenant id, why not vouched for) of candidates inspected and skipped.
    skipped: tuple[tuple[str, str], ...] = ()
    #: READY tenants of the same engine the sample was drawn from.
    candidates: int = 0


async def prove_isolation(
    services: Services, engine_kind: Engine, driver: EngineDriver, target: TenantTarget
) -> IsolationReport:
    """Run the full proof for ``target``, count every check and store the report.

    The report is stored whether it passed or not: a failed proof is exactly
    what an operator needs to read. Callers decide what a failure means
    (provisioning fails the request; the health monitor degrades the tenant).
    """
    sample = await sample_neighbours(services, engine_kind, driver, target.tenant_id)
    checks = _note_sample(await driver.prove_isolation(target, sample.neighbours), sample)
    checks += await services.host(driver).checks(target)
    report = IsolationReport(tuple(checks))
    for check in checks:
        services.metrics.isolation_checks.labels(
            check=check.name, outcome="passed" if check.passed else "failed"
        ).inc()
    await services.control_plane.update_tenant(target.tenant_id, TenantUpdate(isolation=report))
    return report


async def sample_neighbours(
    services: Services, engine_kind: Engine, driver: EngineDriver, tenant_id: str,
    *, at: float | None = None,
) -> NeighbourSample:
    """Up to ``isolation_sample`` vouched neighbours of ``tenant_id``, rotating per interval.

    Candidates are the other READY tenants of the same engine, in id order.
    Each proof starts at an offset derived from the tenant id and the current
    isolation interval (``at``, default now), so successive re-proofs of one
    tenant walk the whole fleet ``isolation_sample`` neighbours at a time, and
    different tenants start at different places. A container candidate is
    vouched for (one runtime inspect) before it counts; at most twice the
    sample size are inspected, so a host full of stopped tenants cannot make
    one proof expensive either.
    """
    settings = services.settings
    size = settings.isolation_sample
    tenants = await services.control_plane.list_tenants()
    candidates = sorted(
        (t for t in tenants
         if t.tenant_id != tenant_id and t.engine == engine_kind
         and t.status in NEIGHBOUR_STATES and t.endpoint is not None
         and (t.endpoint.port is not None or t.endpoint.path is not None)),
        key=lambda t: t.tenant_id,
    )
    if not candidates:
        return NeighbourSample(())
    interval = int((time.time() if at is None else at) // settings.isolation_interval_s)
    start = (zlib.crc32(tenant_id.encode()) + interval * size) % len(candidates)
    ordered = candidates[start:] + candidates[:start]
    if driver.placement is Placement.EMBEDDED:
        chosen = tuple(_neighbour(driver, t, None) for t in ordered[:size])
        return NeighbourSample(chosen, candidates=len(candidates))
    picked: list[Neighbour] = []
    skipped: list[tuple[str, str]] = []
    for tenant in ordered[: 2 * size]:
        if len(picked) >= size:
            break
        problem, theirs = await _vouch(services, tenant)
        if theirs is None:
            skipped.append((tenant.tenant_id, problem))
            continue
        picked.append(_neighbour(driver, tenant, theirs))
    if skipped:
        log.info("verify.neighbours_not_vouched", tenant_id=tenant_id,
                 skipped=[f"{t}: {why}" for t, why in skipped])
    return NeighbourSample(tuple(picked), tuple(skipped), len(candidates))


async def _vouch(services: Services, tenant: Tenant) -> tuple[str, TenantTarget | None]:
    """The neighbour's own target when its endpoint is vouched for, else why not."""
    try:
        _driver, theirs = await services.target(tenant)
    except Exception as exc:  # no credentials or endpoint stored: not a usable neighbour
        return f"{type(exc).__name__}: {exc}", None
    guard = theirs.guard
    if guard is None:
        return "no endpoint guard", None
    problem = await guard.problem(theirs.endpoint)
    if problem is not None:
        return problem, None
    return "", theirs


def _neighbour(driver: EngineDriver, tenant: Tenant, theirs: TenantTarget | None) -> Neighbour:
    assert tenant.endpoint is not None
    return Neighbour(tenant.tenant_id, tenant.endpoint, driver.database_name(tenant.tenant_id),
                     theirs)


def _note_sample(checks: Sequence[CheckResult], sample: NeighbourSample) -> list[CheckResult]:
    """Add the sample's coverage and the skipped candidates to the cross-tenant check."""
    notes = f" [{len(sample.neighbours)} sampled of {sample.candidates} READY candidate(s)"
    if sample.skipped:
        notes += "; not vouched for, skipped: " + ", ".join(
            f"{t} ({why})" for t, why in sample.skipped
        )
    notes += "]"
    return [replace(c, detail=c.detail + notes) if c.name == CROSS_TENANT_CHECK else c
            for c in checks]
