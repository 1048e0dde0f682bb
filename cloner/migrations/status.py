"""``cloner migrate status``, ``cloner migrate repair``, and the metrics of migrations.

The metrics follow the registry rather than the process that migrated: the
daemon's gauge refresh calls ``sync_migration_metrics``, which counts step
records and tenant outcomes it has not seen yet (by id) and sets the
tenants-per-version gauge, so ``/metrics`` shows what every ``cloner migrate``
did, whichever process ran it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from cloner.catalog.migrations import MigrationCatalog
from cloner.controlplane import ControlPlane
from cloner.controlplane.migrations import StepRecord
from cloner.domain import Status, Tenant, parse_engine
from cloner.engines import get_engine
from cloner.errors import InvalidInput, InvalidTransition, TenantNotFound
from cloner.logging import get_logger
from cloner.metrics import Metrics
from cloner.migrations.errors import RolloutInProgress
from cloner.migrations.plan import TenantPlan
from cloner.migrations.runner import (
    TenantMigrator,
    error_detail,
    migration_hooks,
    release_fences,
)
from cloner.pipeline.context import Services

log = get_logger(__name__)

#: Step directions that ran SQL on a tenant database (timed in the histogram).
_TIMED = frozenset({"up", "down"})


async def sync_migration_metrics(control_plane: ControlPlane, metrics: Metrics) -> None:
    """Bring the migration metrics in line with the registry (cheap when nothing changed)."""
    registry = control_plane.migrations
    cursor = metrics.migration_cursor
    for step in await registry.steps_since(cursor["steps"]):
        cursor["steps"] = max(cursor["steps"], int(step["id"]))
        if step["direction"] in _TIMED and step["duration_ms"] is not None:
            metrics.migration_step_duration.labels(
                engine=step["engine"], step=step["step"], direction=step["direction"],
            ).observe(step["duration_ms"] / 1000)
    for outcome in await registry.outcomes_since(cursor["outcomes"]):
        cursor["outcomes"] = max(cursor["outcomes"], int(outcome["id"]))
        metrics.migrations.labels(engine=outcome["engine"], outcome=outcome["outcome"]).inc()
    metrics.set_version_counts(await registry.version_counts())


async def migration_status(control_plane: ControlPlane, engine: str | None = None
                           ) -> dict[str, Any]:
    """The ``cloner migrate status --json`` document: per-tenant versions, the last rollout."""
    registry = control_plane.migrations
    tenants = []
    for tenant in await control_plane.list_tenants():
        if engine is not None and tenant.engine.value != engine:
            continue
        if tenant.status in (Status.DEPROVISIONED, Status.PURGED):
            continue
        last = await registry.last_outcome(tenant.tenant_id)
        tenants.append({
            "tenant_id": tenant.tenant_id, "engine": tenant.engine.value,
            "status": tenant.status.value, "template_version": tenant.template_version,
            "previous_versions": list(tenant.previous_versions),
            "last_migration": None if last is None else {
                k: last.get(k) for k in ("rollout_id", "outcome", "from_version", "to_version",
                                         "reached_version", "error", "backup", "finished_at",
                                         "recovery")
            },
            # The migration in flight (the step a dead rollout left cut short, its backup).
            "migration": tenant.migration,
            "writes_fenced": tenant.writes_fenced,
        })
    versions: dict[str, dict[str, int]] = {}
    for (eng, version), n in sorted((await registry.version_counts()).items()):
        if engine is None or eng == engine:
            versions.setdefault(eng, {})[version] = n
    rollout = await registry.last_rollout()
    if rollout is not None:
        rollout = {
            k: rollout[k] for k in ("id", "engine", "target_version", "status", "actor",
                                    "options", "summary", "error", "started_at",
                                    "finished_at")
        } | {"tenants": await registry.rollout_outcomes(str(rollout["id"]))}
    live = await registry.live_rollout()
    return {"tenants": tenants, "versions": versions, "last_rollout": rollout,
            "running": live is not None}


@dataclass(frozen=True)
class RepairResult:
    """What ``migrate repair`` did for one tenant."""

    tenant_id: str
    #: ``v1.0-v1.1 up: abc… → def…`` per realigned step.
    repaired: tuple[str, ...]
    #: Applied steps that cannot be repaired (no longer in the catalog), or why it failed.
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The ``migrate repair --json`` shape."""
        return {"tenant_id": self.tenant_id, "repaired": list(self.repaired),
                "problems": list(self.problems)}


async def repair(
    services: Services, *, engine: str = "postgres", tenants: tuple[str, ...] = (),
    actor: str | None = None,
) -> list[RepairResult]:
    """Accept edited, already-applied migrations: record the catalog's checksums in the
    tenant databases, like Flyway's ``repair``, and keep the old ones in the registry.

    First, tenants a dead rollout left ``migrating`` are brought back to a step
    boundary (the pre-migration backup restored when a step was cut short) and
    made ready, and application logins still fenced after a crash are let in.
    Only ready tenants are repaired, and never while a rollout runs (it may be
    validating the same records). Named tenants must exist and run ``engine``.
    """
    cp = services.control_plane
    live = await cp.migrations.live_rollout()
    if live is not None:
        raise RolloutInProgress(f"rollout {live['id']} is running; repair once it has finished")
    eng = parse_engine(engine)
    driver = get_engine(eng)
    hooks = migration_hooks(driver)
    catalog = MigrationCatalog(services.settings.templates_dir)
    all_tenants = {t.tenant_id: t for t in await cp.list_tenants()}
    for tenant_id in dict.fromkeys(tenants):
        tenant = all_tenants.get(tenant_id)
        if tenant is None:
            raise TenantNotFound(f"no tenant {tenant_id!r}")
        if tenant.engine is not eng:
            raise InvalidInput(f"tenant {tenant_id!r} runs {tenant.engine.value}, not {engine}")
        if tenant.status not in (Status.READY, Status.MIGRATING):
            raise InvalidTransition(
                f"tenant {tenant_id!r} is {tenant.status.value}; only a ready tenant (or one "
                "a dead rollout left migrating) can be repaired"
            )
    named = set(tenants)
    results: list[RepairResult] = []
    stranded = [t for t in all_tenants.values()
                if t.engine is eng and t.status is Status.MIGRATING
                and (not named or t.tenant_id in named)]
    recovered = await _recover_stranded(services, eng.value, stranded, actor)
    results.extend(recovered.values())
    await release_fences(services, eng.value, by="repair")
    all_tenants = {t.tenant_id: t for t in await cp.list_tenants()}
    chosen = [t for t in all_tenants.values()
              if t.engine is eng and t.status is Status.READY
              and (not named or t.tenant_id in named) and t.tenant_id not in recovered]
    for tenant in chosen:
        repaired: list[str] = []
        problems: list[str] = []
        try:
            _driver, target = await services.target(tenant)
            state = await hooks.migration_state(target)
            for problem in await asyncio.to_thread(catalog.validate_applied, eng.value, state):
                applied = problem.applied
                if problem.expected is None:
                    problems.append(problem.describe())
                    continue
                await hooks.realign_migration_checksum(target, applied, problem.expected)
                await cp.migrations.record_step(StepRecord(
                    tenant.tenant_id, eng.value, applied.step, "repair", applied.version,
                    applied.version, problem.expected, detail={
                        "direction_repaired": applied.direction.value,
                        "old_checksum": applied.checksum, "actor": actor,
                    },
                ))
                repaired.append(f"{applied.step} {applied.direction.value}: "
                                f"{applied.checksum[:12]}… → {problem.expected[:12]}…")
        except Exception as exc:  # one unreachable tenant must not stop the others
            problems.append(error_detail("repair", exc)["reason"])
        if repaired:
            log.info("migrate.repaired", tenant_id=tenant.tenant_id, steps=repaired)
        results.append(RepairResult(tenant.tenant_id, tuple(repaired), tuple(problems)))
    return results


async def _recover_stranded(
    services: Services, engine: str, stranded: list[Tenant], actor: str | None,
) -> dict[str, RepairResult]:
    """Recover (``TenantMigrator(recover_only=True)``) tenants a dead rollout left
    migrating, under a rollout record of their own so the registry says who did it."""
    if not stranded:
        return {}
    cp = services.control_plane
    rollout_id = uuid.uuid4().hex
    await cp.migrations.start_rollout(
        rollout_id, engine, "repair", actor=actor, options={"repair": True},
        plan=[{"tenant_id": t.tenant_id, "recover": True} for t in stranded],
    )
    migrator = TenantMigrator(services, rollout_id=rollout_id, target_version="repair",
                              actor=actor, recover_only=True)
    outcomes: dict[str, int] = {}
    results: dict[str, RepairResult] = {}
    try:
        for tenant in stranded:
            if tenant.migration is None:
                results[tenant.tenant_id] = RepairResult(tenant.tenant_id, (), (
                    "migrating without a record of the migration in flight (left by an older "
                    "cloner); run `cloner migrate --to` again to adopt it",))
                continue
            item = TenantPlan(tenant.tenant_id, engine, tenant.status.value,
                              tenant.template_version, tenant.template_version, adopt=True)
            done = await migrator.run(item)
            outcomes[done.outcome.value] = outcomes.get(done.outcome.value, 0) + 1
            if done.outcome.value in {"stuck", "skipped"}:
                results[tenant.tenant_id] = RepairResult(
                    tenant.tenant_id, (), (str((done.error or {}).get("reason")),))
                continue
            recovery = done.recovery or {}
            line = (f"recovered: {recovery.get('action', 'ready')} at {done.reached_version}"
                    + (f" from {recovery['backup']}" if recovery.get("backup") else ""))
            results[tenant.tenant_id] = RepairResult(tenant.tenant_id, (line,), ())
    finally:
        await cp.migrations.finish_rollout(
            rollout_id, "succeeded" if all(not r.problems for r in results.values())
            else "failed", outcomes)
    return results


__all__ = ["RepairResult", "migration_status", "repair", "sync_migration_metrics"]
