"""Planning: the path of steps from one version to another, and which tenants a rollout takes.

A path only ever goes through adjacent versions (v1.0 → v1.1 → v1.2, or back),
one step at a time, each step checked against the catalog. The plan is made
from the registry's versions; the runner re-plans each tenant from what its
database says (the truth) just before migrating it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

from cloner.catalog import Catalog
from cloner.catalog.migrations import Direction, MigrationCatalog, MigrationScript
from cloner.domain import Engine, Status, Tenant, validate_version
from cloner.errors import InvalidInput, InvalidTransition, TemplateNotFound, TenantNotFound
from cloner.migrations.errors import MigrationPathError

#: States whose tenants a rollout lists without migrating (they have, or will have, a
#: database, but it is not theirs to touch now).
_SKIPPED = frozenset({Status.DEGRADED, Status.REQUESTED, Status.PROVISIONING})
#: States a rollout migrates: ready, and migrating ones a dead rollout left behind.
_MIGRATABLE = frozenset({Status.READY, Status.MIGRATING})


def plan_path(
    migrations: MigrationCatalog, versions: Sequence[str], engine: str, current: str,
    target: str, *, allow_destructive: bool = False,
) -> tuple[MigrationScript, ...]:
    """The scripts that take a database from ``current`` to ``target``, in order.

    ``versions`` is the engine's version list, oldest first. Raises
    ``MigrationPathError`` when a step is missing, a down step does not exist,
    or a down step drops data and ``allow_destructive`` is False.
    """
    for version in (current, target):
        if version not in versions:
            raise MigrationPathError(
                f"{engine} has no template version {version}: known {', '.join(versions)}"
            )
    if current == target:
        return ()
    i, j = versions.index(current), versions.index(target)
    up = i < j
    hops = list(pairwise(versions[i:j + 1] if up else versions[j:i + 1][::-1]))
    scripts = []
    for source, dest in hops:
        step = migrations.step_between(engine, source, dest)
        if step is None:
            raise MigrationPathError(
                f"{engine} has no migration between {source} and {dest}; "
                f"add templates/{engine}/migrations/{min(source, dest, key=_key)}-"
                f"{max(source, dest, key=_key)}/"
            )
        script = step.script(Direction.UP if up else Direction.DOWN)
        if script is None:
            raise MigrationPathError(
                f"{engine} migration {step.name} has no down step: {source} cannot go back "
                f"to {dest} (restore a backup taken at {dest} instead)"
            )
        if script.destructive and not allow_destructive:
            raise MigrationPathError(
                f"{engine} {script.label} ({source} → {dest}) drops data; "
                "pass --allow-destructive to go through it (a backup is taken first)"
            )
        scripts.append(script)
    return tuple(scripts)


@dataclass(frozen=True)
class TenantPlan:
    """What a rollout intends for one tenant."""

    tenant_id: str
    engine: str
    status: str
    from_version: str
    to_version: str
    steps: tuple[MigrationScript, ...] = ()
    canary: bool = False
    #: Why the tenant is listed but not migrated (not ready); None when it is migrated.
    skip_reason: str | None = None
    #: A tenant a dead rollout left ``migrating``: its database says where it really is.
    adopt: bool = False

    @property
    def needs_work(self) -> bool:
        """True when the runner has something to do for this tenant."""
        return self.skip_reason is None and (bool(self.steps) or self.adopt)

    def as_dict(self) -> dict[str, Any]:
        """The ``migrate --dry-run --json`` shape of one tenant."""
        return {
            "tenant_id": self.tenant_id, "engine": self.engine, "status": self.status,
            "from_version": self.from_version, "to_version": self.to_version,
            "steps": [{"step": s.step, "direction": s.direction.value,
                       "from_version": s.from_version, "to_version": s.to_version}
                      for s in self.steps],
            "canary": self.canary, "skip_reason": self.skip_reason, "adopt": self.adopt,
        }


@dataclass(frozen=True)
class RolloutPlan:
    """Every tenant in scope, canaries first, then the others in registry order."""

    engine: str
    target_version: str
    tenants: tuple[TenantPlan, ...]

    @property
    def canaries(self) -> list[TenantPlan]:
        """Tenants migrated first, alone, before the rest."""
        return [t for t in self.tenants if t.canary]

    @property
    def to_migrate(self) -> list[TenantPlan]:
        """Tenants the runner will work on, canaries first."""
        return [t for t in self.tenants if t.needs_work]

    def as_list(self) -> list[dict[str, Any]]:
        """JSON-ready plan."""
        return [t.as_dict() for t in self.tenants]


def build_plan(
    tenants: Sequence[Tenant], *, catalog: Catalog, migrations: MigrationCatalog, engine: Engine,
    target_version: str, named: Sequence[str] = (), canary: int = 1,
    allow_destructive: bool = False,
) -> RolloutPlan:
    """The rollout plan for ``tenants`` (the registry), checked before anything runs.

    Without ``named``, every tenant of ``engine`` with a database is in scope:
    ready ones are migrated, degraded or still-provisioning ones listed as
    skipped. ``named`` restricts the scope to those ids, which must exist, run
    ``engine`` and be ready (or left migrating by a rollout that died).
    Raises ``InvalidInput`` subclasses (exit 2) for an unknown target version,
    an impossible path or a refused tenant.
    """
    validate_version(target_version)
    versions = catalog.versions(engine.value)
    if target_version not in versions:
        raise TemplateNotFound(
            f"unknown template version {target_version!r} for {engine.value}: "
            f"known {', '.join(versions)}"
        )
    by_id = {t.tenant_id: t for t in tenants}
    if named:
        scope = []
        for tenant_id in dict.fromkeys(named):
            tenant = by_id.get(tenant_id)
            if tenant is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            if tenant.engine is not engine:
                raise InvalidInput(
                    f"tenant {tenant_id!r} runs {tenant.engine.value}, not {engine.value}"
                )
            if tenant.status not in _MIGRATABLE:
                raise InvalidTransition(
                    f"tenant {tenant_id!r} is {tenant.status.value}; only a ready tenant can "
                    "be migrated"
                )
            scope.append(tenant)
    else:
        scope = [t for t in tenants if t.engine is engine
                 and (t.status in _MIGRATABLE or t.status in _SKIPPED)]
    planned: list[TenantPlan] = []
    canaries_left = canary
    for tenant in scope:
        base = TenantPlan(tenant.tenant_id, engine.value, tenant.status.value,
                          tenant.template_version, target_version)
        if tenant.status in _SKIPPED:
            planned.append(replace(base, skip_reason=f"tenant is {tenant.status.value}"))
            continue
        try:
            steps = plan_path(migrations, versions, engine.value, tenant.template_version,
                              target_version, allow_destructive=allow_destructive)
        except MigrationPathError as exc:
            raise MigrationPathError(f"tenant {tenant.tenant_id!r}: {exc.message}") from None
        item = replace(base, steps=steps, adopt=tenant.status is Status.MIGRATING)
        if item.needs_work and canaries_left > 0:
            item = replace(item, canary=True)
            canaries_left -= 1
        planned.append(item)
    # Canaries first; otherwise registry order (oldest tenants first).
    ordered = [t for t in planned if t.canary] + [t for t in planned if not t.canary]
    return RolloutPlan(engine.value, target_version, tuple(ordered))


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))
