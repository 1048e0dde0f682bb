"""Migrating one tenant: the steps, the bookkeeping, and the way back when a step fails.

For one tenant of a rollout, in order:

1. ``ready → migrating`` in the registry (atomically refused if a request of the
   tenant is queued or running). Pools stop handing out its connections.
2. The database's own record (``schema_info``) is read: its version is the
   truth (the registry is corrected if a crash left it behind), and every
   applied step's checksum must match the catalog, or the tenant is refused
   untouched (``migrate repair`` accepts an edited file deliberately).
3. A verified backup is taken (the deprovisioning code path), named
   ``pre-migration`` in its manifest.
4. Each step runs in its own transaction and is recorded in the tenant
   database and, right after, in the registry (which moves the tenant's
   ``template_version``).
5. ``migrating → ready``. If a step failed instead, the steps already applied
   in this run are reverted with their down steps, newest first; where a
   down step is missing or fails, or the engine's DDL is not transactional,
   the database is replaced by the pre-migration backup. The tenant is left
   ``ready`` on its old version with the error recorded. Only if even the
   restore fails does it stay ``migrating`` (outcome ``stuck``): pools keep
   refusing it and the next rollout adopts it.

Writes are fenced (audit M8): before the pre-migration backup the application
logins are refused and their sessions ended (``MigrationHooks.fence_logins``),
so nothing is written that a restore of that backup would drop; they are let
in again once the tenant is back at a step boundary (migrated, rolled back or
restored), never while it is not. The fence is recorded in the registry
before it is applied and cleared after it is lifted (``Tenant.writes_fenced``),
so a fence that a crash left behind is always known and lifted later
(``release_fences``: at the next rollout and by ``migrate repair``).

The registry also follows the migration in flight (``Tenant.migration``: the
start version, the pre-migration backup, the step running, the phase). When a
rollout dies mid-way (SIGKILL, Ctrl-C) the tenant stays ``migrating`` with
that record, and the next run recovers deliberately before anything else
(audit M7): if the database says a step was cut short part-way (an engine
without transactional DDL marks it, ``MigrationState.in_progress``), or a
restore was cut short, it restores the *dead rollout's* pre-migration backup;
otherwise the database is at a step boundary and the run resumes from it. A
half-migrated database is never backed up. What was done is reported as the
tenant's ``recovery`` (``migrate --json``, ``migrate status``, its events).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from cloner.backups import verify_backup
from cloner.catalog.migrations import Direction, MigrationCatalog, MigrationScript
from cloner.controlplane import TenantUpdate
from cloner.controlplane.migrations import StepRecord, TenantOutcome
from cloner.domain import Status, Tenant
from cloner.engines import EngineDriver, TenantTarget
from cloner.engines.base import MigrationHooks
from cloner.errors import ClonerError, InvalidInput, InvalidTransition, TenantNotFound
from cloner.logging import REDACTOR, get_logger
from cloner.migrations.errors import ChecksumMismatch, MigrationError
from cloner.migrations.plan import TenantPlan, plan_path
from cloner.pipeline.context import Services
from cloner.pipeline.deprovision import Deprovisioner

log = get_logger(__name__)

#: How long a step waits for locks held by application sessions before it fails.
LOCK_TIMEOUT_S = 10.0
#: ``reason`` of the backups a rollout takes before it touches a tenant.
BACKUP_REASON = "pre-migration"

_HOOKS = ("transactional_ddl", "migration_state", "apply_migration_step",
          "realign_migration_checksum", "schema_catalogue", "drop_database", "fence_logins")


def migration_hooks(driver: EngineDriver) -> MigrationHooks:
    """The engine's ``MigrationHooks``, or ``InvalidInput`` if it has none yet."""
    if all(hasattr(driver, name) for name in _HOOKS):
        return cast("MigrationHooks", driver)
    raise InvalidInput(f"engine {driver.engine.value} does not support schema migrations yet")


class Outcome(enum.StrEnum):
    """How one tenant's migration ended."""

    MIGRATED = "migrated"
    #: Already at the target version: nothing done.
    UP_TO_DATE = "up_to_date"
    #: A step failed; the steps of this run were reverted with down steps.
    ROLLED_BACK = "rolled_back"
    #: A step failed; the database was replaced by the pre-migration backup.
    RESTORED = "restored"
    #: Not touched: checksums differ, the backup failed, or the path is impossible.
    REFUSED = "refused"
    #: A step failed and the old version could not be brought back: still ``migrating``.
    STUCK = "stuck"
    #: Listed but not migrated (not ready, or it changed state since the plan).
    SKIPPED = "skipped"
    #: The rollout halted before it reached this tenant.
    NOT_STARTED = "not_started"


#: Outcomes that count against ``--max-failures``.
FAILURES = frozenset({Outcome.ROLLED_BACK, Outcome.RESTORED, Outcome.REFUSED, Outcome.STUCK})


@dataclass(frozen=True)
class TenantResult:
    """One tenant's part of a rollout."""

    tenant_id: str
    engine: str
    from_version: str
    to_version: str
    #: The version the tenant database is at now.
    reached_version: str
    outcome: Outcome
    canary: bool = False
    #: Steps run on the database, rollback included: ``{step, direction, duration_ms}``.
    steps: tuple[dict[str, Any], ...] = ()
    error: dict[str, Any] | None = None
    backup: str | None = None
    duration_s: float = 0.0
    #: What the run did about a migration a dead rollout left behind (restored/resumed).
    recovery: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """True for outcomes that count as failures."""
        return self.outcome in FAILURES

    def as_dict(self) -> dict[str, Any]:
        """The ``migrate --json`` shape of one tenant."""
        return {
            "tenant_id": self.tenant_id, "engine": self.engine,
            "from_version": self.from_version, "to_version": self.to_version,
            "reached_version": self.reached_version, "outcome": self.outcome.value,
            "canary": self.canary, "steps": list(self.steps), "error": self.error,
            "backup": self.backup, "seconds": round(self.duration_s, 3),
            "recovery": self.recovery,
        }


@dataclass(frozen=True)
class _Subject:
    """The tenant being migrated and how to reach its database."""

    tenant: Tenant
    engine: EngineDriver
    hooks: MigrationHooks
    target: TenantTarget


@dataclass
class _Run:
    """State of one tenant's migration, filled in as it goes."""

    plan: TenantPlan
    started: float = field(default_factory=time.monotonic)
    start_version: str = ""
    reached: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    backup: dict[str, Any] | None = None
    #: Scripts of this run that completed, in order (what a rollback reverts).
    applied: list[MigrationScript] = field(default_factory=list)
    subject: _Subject | None = None
    #: True while the application logins are fenced (by this run or one before it).
    fenced: bool = False
    #: The registry's record of this migration (``Tenant.migration``), as last written.
    progress: dict[str, Any] = field(default_factory=dict)
    recovery: dict[str, Any] | None = None


def error_detail(step: str, exc: BaseException) -> dict[str, Any]:
    """The ``{step, reason, class}`` error record of the registry, redacted, one line."""
    text = exc.message if isinstance(exc, ClonerError) else (str(exc) or type(exc).__name__)
    return {"step": step, "reason": REDACTOR.redact(" ".join(text.split()))[:500],
            "class": type(exc).__name__}


class TenantMigrator:
    """Runs the module's sequence for one tenant at a time (safe to share between tasks)."""

    def __init__(
        self, services: Services, *, rollout_id: str, target_version: str,
        actor: str | None = None, allow_destructive: bool = False,
        lock_timeout_s: float = LOCK_TIMEOUT_S, recover_only: bool = False,
    ) -> None:
        self.s = services
        #: ``migrate repair``: bring a tenant a dead rollout left behind to a step boundary
        #: (and ready, logins unfenced) without migrating it any further.
        self.recover_only = recover_only
        self.rollout_id = rollout_id
        self.target_version = target_version
        self.actor = actor
        self.allow_destructive = allow_destructive
        self.lock_timeout_s = lock_timeout_s
        self.migrations = MigrationCatalog(services.settings.templates_dir)

    async def run(self, plan: TenantPlan) -> TenantResult:
        """Migrate one planned tenant; every failure ends in a result, never an exception."""
        run = _Run(plan, start_version=plan.from_version, reached=plan.from_version)
        with structlog.contextvars.bound_contextvars(
            tenant_id=plan.tenant_id, rollout=self.rollout_id
        ):
            try:
                tenant = await self.s.control_plane.migrations.begin_migration(
                    plan.tenant_id, self.rollout_id)
            except (InvalidTransition, TenantNotFound) as exc:
                # It moved on since the plan (degraded, deleted, a request queued): not ours.
                log.info("migrate.skipped", reason=exc.message)
                return await self._record(run, Outcome.SKIPPED, error_detail("begin", exc),
                                          status=None)
            return await self._migrate(run, tenant)

    async def _migrate(self, run: _Run, tenant: Tenant) -> TenantResult:
        run.fenced = tenant.logins_fenced
        dead = tenant.migration
        if dead is not None and dead.get("rollout") != self.rollout_id:
            try:
                tenant = await self._recover(run, tenant, dead)
            except Exception as exc:  # still between versions: stays migrating, fenced
                # The message is the whole story: no traceback in the log.
                log.error("migrate.recovery_failed",  # noqa: TRY400
                          error=f"{type(exc).__name__}: {exc}")
                return await self._record(run, Outcome.STUCK, error_detail("recover", exc),
                                          status=Status.MIGRATING)
        if self.recover_only:
            restored = (run.recovery or {}).get("action") == "restored"
            if run.recovery is not None and not restored:
                run.start_version = run.reached = str(run.recovery["at_version"])
            return await self._record(run, Outcome.RESTORED if restored else Outcome.UP_TO_DATE,
                                      None, status=Status.READY)
        try:
            subject, steps = await self._prepare(run, tenant)
        except Exception as exc:  # checksums, path, or the database did not answer: untouched
            log.warning("migrate.refused", error=f"{type(exc).__name__}: {exc}")
            return await self._record(run, Outcome.REFUSED, error_detail("validate", exc),
                                      status=Status.READY)
        run.subject = subject
        if not steps:
            return await self._record(run, Outcome.UP_TO_DATE, None, status=Status.READY)
        run.progress = {"rollout": self.rollout_id, "start_version": run.start_version,
                        "target_version": self.target_version, "phase": "backup",
                        "backup": None, "step": None}
        try:
            await self._note(run)
            # Before the backup: a write after it would be lost by a restore of it.
            await self._fence(run, subject)
            run.backup = await Deprovisioner(self.s).backup(
                subject.tenant, reason=BACKUP_REASON, request_id=None, actor=self.actor)
        except Exception as exc:  # no backup, no migration: nothing was changed
            log.warning("migrate.backup_failed", error=f"{type(exc).__name__}: {exc}")
            return await self._record(run, Outcome.REFUSED, error_detail("backup", exc),
                                      status=Status.READY)
        run.progress["backup"] = {"path": run.backup["path"],
                                  "sha256": run.backup.get("sha256")}
        for script in steps:
            try:
                # Recorded before the step starts: a crash in it leaves the step named.
                await self._note(run, phase="step", step=script.label)
                await self._apply(run, subject, script)
            except Exception as exc:  # any failure of a step is rolled back, whatever it was
                log.warning("migrate.step_failed", step=script.label,
                            error=f"{type(exc).__name__}: {exc}")
                return await self._roll_back(run, subject, error_detail(script.label, exc))
            run.applied.append(script)
        log.info("migrate.migrated", from_version=run.start_version, to_version=run.reached)
        return await self._record(run, Outcome.MIGRATED, None, status=Status.READY)

    async def _note(self, run: _Run, *, event: str | None = None,
                    detail: dict[str, Any] | None = None, **changes: Any) -> None:
        """Write ``run.progress`` (updated with ``changes``) to the registry."""
        run.progress.update(changes)
        await self.s.control_plane.migrations.note_migration(
            run.plan.tenant_id, dict(run.progress), event=event, detail=detail)

    async def _subject(self, tenant: Tenant) -> _Subject:
        engine, target = await self.s.target(tenant)
        return _Subject(tenant, engine, migration_hooks(engine), target)

    async def _fence(self, run: _Run, subject: _Subject) -> None:
        """Refuse the application logins and end their sessions (idempotent).

        Recorded before it is applied, so a crash in between leaves a fence the
        registry knows about (and ``release_fences`` lifts), never an unknown one.
        """
        await self.s.control_plane.migrations.set_writes_fenced(
            subject.tenant.tenant_id, True, self.rollout_id)
        run.fenced = True
        await subject.hooks.fence_logins(subject.target, True)
        log.info("migrate.writes_fenced")

    async def _unfence(self, run: _Run) -> str | None:
        """Let the application logins in again; why not, if that failed."""
        try:
            subject = run.subject
            if subject is None:
                tenant = await self.s.control_plane.get_tenant(run.plan.tenant_id)
                if tenant is None:
                    return None
                subject = await self._subject(tenant)
            await subject.hooks.fence_logins(subject.target, False)
            await self.s.control_plane.migrations.set_writes_fenced(
                run.plan.tenant_id, False, self.rollout_id)
        except Exception as exc:  # recorded as still fenced: release_fences lifts it later
            log.error("migrate.unfence_failed",  # noqa: TRY400
                      error=f"{type(exc).__name__}: {exc}")
            return str(error_detail("unfence", exc)["reason"])
        run.fenced = False
        log.info("migrate.writes_unfenced")
        return None

    async def _recover(self, run: _Run, tenant: Tenant, dead: dict[str, Any]) -> Tenant:
        """Bring a tenant a dead rollout left mid-migration back to a step boundary.

        Restores the dead rollout's pre-migration backup when the database is
        not at a step boundary (a step or a restore was cut short), else
        resumes from where the database is. Never backs up the database first.
        """
        subject = await self._subject(tenant)
        run.subject = subject
        await self._fence(run, subject)
        interrupted = dead.get("step")
        dead_rollout = dead.get("recovering") or dead.get("rollout")
        state, unreadable = None, ""
        try:
            state = await subject.hooks.migration_state(subject.target)
        except Exception as exc:
            unreadable = f"{type(exc).__name__}: {exc}"
        phase = dead.get("phase")
        if state is not None and state.in_progress is None and phase != "restore":
            run.recovery = {"action": "resumed", "rollout": dead_rollout,
                            "interrupted_step": interrupted,
                            "at_version": state.current_version}
            log.warning("migrate.recovered", **run.recovery)
            await self.s.control_plane.migrations.note_migration(
                tenant.tenant_id, None, event="migration_recovered", detail=run.recovery)
            return tenant
        if state is not None and state.in_progress is not None:
            why = f"step {state.in_progress} was cut short part-way"
        elif phase == "restore":
            why = "the restore of the pre-migration backup was cut short"
        elif phase == "step":
            why = f"step {interrupted} was cut short and the database cannot be read ({unreadable})"
        else:
            raise MigrationError(f"the database cannot be read: {unreadable}")
        backup = dead.get("backup")
        start = dead.get("start_version")
        if not backup or not start:
            raise MigrationError(
                f"{why}, and rollout {dead_rollout} recorded no pre-migration backup: restore "
                f"the tenant from `cloner backup list {tenant.tenant_id}` by hand"
            )
        # Recorded first: if this run dies in the restore, the next one restores again.
        run.progress = {"rollout": self.rollout_id, "start_version": start,
                        "target_version": dead.get("target_version"), "phase": "restore",
                        "backup": backup, "step": interrupted, "recovering": dead_rollout}
        await self._note(run)
        log.warning("migrate.recovering", reason=why, backup=backup["path"])
        await self._restore(run, subject, backup, start,
                            detail={"recovering": dead_rollout, "interrupted_step": interrupted})
        run.recovery = {"action": "restored", "rollout": dead_rollout,
                        "interrupted_step": interrupted, "at_version": start, "reason": why,
                        "backup": backup["path"]}
        log.warning("migrate.recovered", **run.recovery)
        fresh = await self.s.control_plane.migrations.note_migration(
            tenant.tenant_id, None, event="migration_recovered", detail=run.recovery)
        run.progress = {}
        return fresh

    async def _prepare(
        self, run: _Run, tenant: Tenant
    ) -> tuple[_Subject, tuple[MigrationScript, ...]]:
        """Read the database's record, check it against the catalog, plan from it."""
        engine, target = await self.s.target(tenant)
        hooks = migration_hooks(engine)
        state = await hooks.migration_state(target)
        run.start_version = run.reached = state.current_version
        if state.current_version != tenant.template_version:
            # A crash between a step's commit and its registry record: the database wins.
            tenant = await self.s.control_plane.migrations.record_step(StepRecord(
                tenant.tenant_id, tenant.engine.value, "registry", "sync",
                tenant.template_version, state.current_version, "",
                rollout_id=self.rollout_id, detail={"reason": "registry behind the database"},
            ))
        # The catalog reads, hashes and lints files: off the event loop.
        problems = await asyncio.to_thread(
            self.migrations.validate_applied, tenant.engine.value, state)
        if problems:
            raise ChecksumMismatch(
                f"tenant {tenant.tenant_id}: " + "; ".join(p.describe() for p in problems)
                + f"; accept the edited file(s) on purpose with "
                  f"`cloner migrate repair --tenant {tenant.tenant_id}`"
            )
        steps = await asyncio.to_thread(
            plan_path, self.migrations, self.s.catalog.versions(tenant.engine.value),
            tenant.engine.value, state.current_version, self.target_version,
            allow_destructive=self.allow_destructive,
        )
        return _Subject(tenant, engine, hooks, target), steps

    async def _apply(
        self, run: _Run, subject: _Subject, script: MigrationScript, *, rollback: bool = False
    ) -> None:
        applied = await subject.hooks.apply_migration_step(
            subject.target, script, self.lock_timeout_s)
        tenant = subject.tenant
        await self.s.control_plane.migrations.record_step(StepRecord(
            tenant.tenant_id, tenant.engine.value, script.step, script.direction.value,
            script.from_version, script.to_version, script.checksum,
            duration_ms=applied.duration_ms, rollout_id=self.rollout_id,
            detail={"rollback": True} if rollback else {},
        ))
        run.reached = script.to_version
        run.steps.append({"step": script.step, "direction": script.direction.value,
                          "duration_ms": applied.duration_ms, "rollback": rollback})

    async def _roll_back(
        self, run: _Run, subject: _Subject, failure: dict[str, Any]
    ) -> TenantResult:
        """Back to ``run.start_version``: down steps where trustworthy, else the backup."""
        why_restore = "the engine's DDL is not transactional"
        if subject.hooks.transactional_ddl:
            why_restore = await self._revert(run, subject)
            if not why_restore:
                log.warning("migrate.rolled_back", to_version=run.start_version)
                return await self._record(run, Outcome.ROLLED_BACK, failure,
                                          status=Status.READY)
        log.warning("migrate.restoring", reason=why_restore)
        try:
            assert run.backup is not None
            await self._note(run, phase="restore")
            await self._restore(run, subject, run.backup, run.start_version)
        except Exception as exc:
            # The message is the whole story: no traceback in the log.
            log.error("migrate.stuck", error=f"{type(exc).__name__}: {exc}")  # noqa: TRY400
            stuck = failure | {"restore": error_detail("restore", exc)["reason"]}
            return await self._record(run, Outcome.STUCK, stuck, status=Status.MIGRATING)
        return await self._record(run, Outcome.RESTORED, failure | {"restored": why_restore},
                                  status=Status.READY)

    async def _revert(self, run: _Run, subject: _Subject) -> str:
        """Run the down steps of this run's steps, newest first; '' when that worked,
        else why the backup has to be restored instead."""
        for script in reversed(run.applied):
            reverse = await asyncio.to_thread(self._reverse, script)
            if reverse is None:
                return f"{script.step} has no down step"
            try:
                await self._apply(run, subject, reverse, rollback=True)
            except Exception as exc:  # a failed down step: the backup is the way back
                return f"{reverse.label} failed: {type(exc).__name__}: {exc}"
        try:
            state = await subject.hooks.migration_state(subject.target)
        except Exception as exc:
            return f"cannot read the version back: {type(exc).__name__}: {exc}"
        if state.current_version != run.start_version:
            return (f"after the down steps the database is at {state.current_version}, "
                    f"not {run.start_version}")
        return ""

    def _reverse(self, script: MigrationScript) -> MigrationScript | None:
        step = self.migrations.step_between(script.engine, script.from_version,
                                            script.to_version)
        if step is None:
            return None
        opposite = Direction.DOWN if script.direction is Direction.UP else Direction.UP
        return step.script(opposite)

    async def _restore(
        self, run: _Run, subject: _Subject, backup: dict[str, Any], version: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Replace the database by a pre-migration ``backup`` (at ``version``), grants
        included; the application logins stay fenced throughout."""
        settings = self.s.settings
        tenant, hooks, target = subject.tenant, subject.hooks, subject.target
        started = time.monotonic()
        info = await asyncio.to_thread(
            verify_backup, settings.backups_dir, tenant.tenant_id, backup["path"])
        await hooks.drop_database(target)
        await subject.engine.restore(self.s.runtime, target, info.path)
        # The dump carries neither owners nor grants (as for `tenant restore`).
        await subject.engine.apply_rbac(target, settings.tenant_connection_limit)
        # apply_rbac gives the roles their LOGIN back: fenced again until the outcome is.
        await hooks.fence_logins(target, True)
        await self.s.control_plane.update_tenant(tenant.tenant_id, TenantUpdate(
            hardening_level=subject.engine.hardening_level))
        state = await hooks.migration_state(target)
        if state.current_version != version or state.in_progress is not None:
            raise MigrationError(
                f"the restored database is at {state.current_version}"
                + (f" with {state.in_progress} marked in progress" if state.in_progress else "")
                + f", not {version}"
            )
        duration_ms = int((time.monotonic() - started) * 1000)
        await self.s.control_plane.migrations.record_step(StepRecord(
            tenant.tenant_id, tenant.engine.value, "backup", "restore", run.reached,
            version, str(info.sha256), duration_ms=duration_ms,
            rollout_id=self.rollout_id, detail={"backup": str(info.path), **(detail or {})},
        ))
        run.reached = run.start_version = version
        run.steps.append({"step": "backup", "direction": "restore",
                          "duration_ms": duration_ms, "rollback": True})

    async def _record(
        self, run: _Run, outcome: Outcome, error: dict[str, Any] | None, *,
        status: Status | None,
    ) -> TenantResult:
        plan = run.plan
        if status is Status.READY and run.fenced:
            # Back at a step boundary: the applications may write again.
            problem = await self._unfence(run)
            if problem is not None:
                error = (error or {}) | {"unfence": problem}
        duration_s = time.monotonic() - run.started
        backup = (run.backup or {}).get("path")
        # Shielded: a tenant must not stay `migrating` because the caller was cancelled
        # between the database's answer and this write.
        await asyncio.shield(self.s.control_plane.migrations.finish_migration(
            TenantOutcome(
                self.rollout_id, plan.tenant_id, plan.engine, run.start_version,
                self.target_version, run.reached, outcome.value, error, backup,
                round(duration_s, 3), run.recovery,
            ),
            status=status, error=error,
        ))
        return TenantResult(
            plan.tenant_id, plan.engine, run.start_version, self.target_version, run.reached,
            outcome, plan.canary, tuple(run.steps), error, backup, duration_s, run.recovery,
        )


async def release_fences(services: Services, engine: str, *, by: str | None) -> list[str]:
    """Let in the application logins of every ``engine`` tenant still recorded as fenced
    but no longer migrating (a crash between its outcome and the unfence); the tenant
    ids released. Tenants left ``migrating`` keep their fence until recovered."""
    cp = services.control_plane
    released = []
    for tenant in await cp.list_tenants():
        if (tenant.engine.value != engine or not tenant.logins_fenced
                or tenant.status is Status.MIGRATING):
            continue
        try:
            driver, target = await services.target(tenant)
            await migration_hooks(driver).fence_logins(target, False)
            await cp.migrations.set_writes_fenced(tenant.tenant_id, False, by)
        except Exception as exc:  # one unreachable tenant must not stop the others
            log.warning("migrate.release_fence_failed", tenant_id=tenant.tenant_id,
                        error=f"{type(exc).__name__}: {exc}")
            continue
        log.info("migrate.fence_released", tenant_id=tenant.tenant_id)
        released.append(tenant.tenant_id)
    return released
