"""A fleet rollout: plan, canaries, then the rest with bounded concurrency; halt on failures.

``Rollout(services, options).run()`` does what ``cloner migrate --to vX.Y`` says:

1. Plan every tenant in scope from the registry (``plan.build_plan``); a dry
   run stops here and changes nothing.
2. Record the rollout in the registry, refusing to start while another one is
   alive (its heartbeat is fresh), and keep a heartbeat while it runs.
3. Migrate the canary tenants (``--canary K``, at most ``--concurrency`` at a
   time). Any canary failing halts the rollout: the rest never start.
4. Migrate the others, at most ``--concurrency`` at a time. Once more than
   ``--max-failures`` tenants have failed, no further tenant is started
   (tenants already in flight finish); they are reported ``not_started``.

New tenants keep being provisioned meanwhile: the rollout only ever touches
the tenants it planned, and only one at a time per tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cloner.catalog.migrations import MigrationCatalog
from cloner.controlplane.migrations import ROLLOUT_HEARTBEAT_S, TenantOutcome
from cloner.domain import parse_engine
from cloner.engines import get_engine
from cloner.errors import InvalidInput
from cloner.logging import get_logger
from cloner.migrations.plan import RolloutPlan, TenantPlan, build_plan
from cloner.migrations.runner import (
    LOCK_TIMEOUT_S,
    Outcome,
    TenantMigrator,
    TenantResult,
    error_detail,
    migration_hooks,
    release_fences,
)
from cloner.migrations.status import sync_migration_metrics
from cloner.pipeline.context import Services

log = get_logger(__name__)


@dataclass(frozen=True)
class RolloutOptions:
    """What ``cloner migrate`` was asked to do."""

    target_version: str
    engine: str = "postgres"
    tenants: tuple[str, ...] = ()
    concurrency: int = 4
    canary: int = 1
    max_failures: int = 0
    allow_destructive: bool = False
    dry_run: bool = False
    actor: str | None = None
    lock_timeout_s: float = LOCK_TIMEOUT_S

    def check(self) -> None:
        """``InvalidInput`` for out-of-range numbers."""
        if self.concurrency < 1:
            raise InvalidInput(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.canary < 0:
            raise InvalidInput(f"--canary must be 0 or more, not {self.canary}")
        if self.max_failures < 0:
            raise InvalidInput(f"--max-failures must be 0 or more, not {self.max_failures}")
        if self.lock_timeout_s <= 0:
            raise InvalidInput("the lock timeout must be positive")

    def as_dict(self) -> dict[str, Any]:
        """Recorded with the rollout."""
        return {"concurrency": self.concurrency, "canary": self.canary,
                "max_failures": self.max_failures, "tenants": list(self.tenants),
                "allow_destructive": self.allow_destructive,
                "lock_timeout_s": self.lock_timeout_s}


@dataclass
class RolloutResult:
    """What a rollout did (or, for a dry run, would do)."""

    plan: RolloutPlan
    options: RolloutOptions
    rollout_id: str | None = None
    #: ``planned`` (dry run), ``succeeded``, ``failed`` or ``halted``.
    status: str = "planned"
    halted_reason: str | None = None
    results: list[TenantResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True for a dry run or a rollout without failures."""
        return self.status in {"planned", "succeeded"}

    def summary(self) -> dict[str, int]:
        """Tenants per outcome."""
        return dict(Counter(r.outcome.value for r in self.results))

    def as_dict(self) -> dict[str, Any]:
        """The ``cloner migrate --json`` document."""
        return {
            "rollout_id": self.rollout_id, "dry_run": self.options.dry_run,
            "engine": self.plan.engine, "target_version": self.plan.target_version,
            "status": self.status, "halted_reason": self.halted_reason,
            "options": self.options.as_dict(), "plan": self.plan.as_list(),
            "tenants": [r.as_dict() for r in self.results], "summary": self.summary(),
            "seconds": round(self.seconds, 3),
        }


class Rollout:
    """One ``cloner migrate`` run (see module docstring)."""

    def __init__(self, services: Services, options: RolloutOptions) -> None:
        options.check()
        self.s = services
        self.options = options
        self.migrations = MigrationCatalog(services.settings.templates_dir)

    async def plan(self) -> RolloutPlan:
        """The plan, from the registry; raises (exit 2) when it cannot be carried out."""
        engine = parse_engine(self.options.engine)
        migration_hooks(get_engine(engine))
        tenants = await self.s.control_plane.list_tenants()
        # Checksums and lint of every file on the paths: file I/O, off the event loop.
        return await asyncio.to_thread(
            build_plan, tenants, catalog=self.s.catalog, migrations=self.migrations,
            engine=engine, target_version=self.options.target_version,
            named=self.options.tenants, canary=self.options.canary,
            allow_destructive=self.options.allow_destructive,
        )

    async def run(self) -> RolloutResult:
        """Plan, and unless this is a dry run, carry the plan out."""
        started = time.monotonic()
        plan = await self.plan()
        result = RolloutResult(plan, self.options)
        if self.options.dry_run:
            return result
        rollout_id = uuid.uuid4().hex
        result.rollout_id = rollout_id
        migrations = self.s.control_plane.migrations
        await migrations.start_rollout(
            rollout_id, plan.engine, plan.target_version, actor=self.options.actor,
            options=self.options.as_dict(), plan=plan.as_list(),
        )
        log.info("rollout.started", rollout=rollout_id, target=plan.target_version,
                 tenants=len(plan.to_migrate))
        heartbeat = asyncio.create_task(self._heartbeat(rollout_id),
                                        name=f"cloner-rollout-{rollout_id}")
        try:
            # Fences a crash left on tenants no longer migrating: lifted before anything else.
            await release_fences(self.s, plan.engine, by=rollout_id)
            await self._execute(plan, rollout_id, result)
        except BaseException:
            # Cancelled (Ctrl-C) or a bug: say so now rather than after the stale timeout.
            with contextlib.suppress(Exception):
                await asyncio.shield(migrations.finish_rollout(
                    rollout_id, "interrupted", result.summary(), "interrupted"))
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        failed = any(r.failed for r in result.results)
        result.status = ("halted" if result.halted_reason
                         else "failed" if failed else "succeeded")
        result.seconds = time.monotonic() - started
        await migrations.finish_rollout(rollout_id, result.status, result.summary(),
                                        result.halted_reason)
        await sync_migration_metrics(self.s.control_plane, self.s.metrics)
        log.info("rollout.finished", rollout=rollout_id, status=result.status,
                 summary=result.summary(), seconds=round(result.seconds, 2))
        return result

    async def _execute(self, plan: RolloutPlan, rollout_id: str, result: RolloutResult) -> None:
        migrator = TenantMigrator(
            self.s, rollout_id=rollout_id, target_version=plan.target_version,
            actor=self.options.actor, allow_destructive=self.options.allow_destructive,
            lock_timeout_s=self.options.lock_timeout_s,
        )
        for item in plan.tenants:
            if item.skip_reason is not None:
                result.results.append(await self._unstarted(
                    rollout_id, item, Outcome.SKIPPED, item.skip_reason))
            elif not item.needs_work:
                result.results.append(await self._unstarted(
                    rollout_id, item, Outcome.UP_TO_DATE, None))
        work = plan.to_migrate
        canaries = [t for t in work if t.canary]
        rest = [t for t in work if not t.canary]
        await self._batch(migrator, canaries, result, canary_phase=True)
        if result.halted_reason is None:
            await self._batch(migrator, rest, result, canary_phase=False)
        started = {r.tenant_id for r in result.results}
        for item in work:
            if item.tenant_id not in started:
                result.results.append(await self._unstarted(
                    rollout_id, item, Outcome.NOT_STARTED, result.halted_reason))

    async def _batch(
        self, migrator: TenantMigrator, items: Sequence[TenantPlan], result: RolloutResult,
        *, canary_phase: bool,
    ) -> None:
        queue = deque(items)
        limit = self.options.max_failures

        async def worker() -> None:
            # Checked before each tenant is taken: a halt stops new work, never work in flight.
            while queue and result.halted_reason is None:
                item = queue.popleft()
                outcome = await self._one(migrator, item)
                result.results.append(outcome)
                if not outcome.failed:
                    continue
                failures = sum(r.failed for r in result.results)
                if canary_phase:
                    result.halted_reason = (f"canary {item.tenant_id} failed "
                                            f"({outcome.outcome.value})")
                elif failures > limit:
                    result.halted_reason = f"{failures} failed tenants > --max-failures {limit}"
                if result.halted_reason:
                    log.warning("rollout.halted", reason=result.halted_reason)

        async with asyncio.TaskGroup() as group:
            for n in range(min(self.options.concurrency, len(items))):
                group.create_task(worker(), name=f"cloner-rollout-worker-{n}")

    async def _one(self, migrator: TenantMigrator, item: TenantPlan) -> TenantResult:
        try:
            return await migrator.run(item)
        except Exception as exc:  # the registry failed under us: the tenant's state is unknown
            log.exception("rollout.tenant_crashed", tenant_id=item.tenant_id)
            return TenantResult(item.tenant_id, item.engine, item.from_version, item.to_version,
                                item.from_version, Outcome.STUCK, item.canary,
                                error=error_detail("rollout", exc))

    async def _unstarted(
        self, rollout_id: str, item: TenantPlan, outcome: Outcome, reason: str | None
    ) -> TenantResult:
        error = {"step": "plan", "reason": reason, "class": outcome.value} if reason else None
        await self.s.control_plane.migrations.finish_migration(
            TenantOutcome(rollout_id, item.tenant_id, item.engine, item.from_version,
                          item.to_version, item.from_version, outcome.value, error),
            status=None, error=None,
        )
        return TenantResult(item.tenant_id, item.engine, item.from_version, item.to_version,
                            item.from_version, outcome, item.canary, error=error)

    async def _heartbeat(self, rollout_id: str) -> None:
        while True:
            await asyncio.sleep(ROLLOUT_HEARTBEAT_S)
            try:
                await self.s.control_plane.migrations.heartbeat_rollout(rollout_id)
            except Exception as exc:  # a missed beat is not fatal; several would be
                log.warning("rollout.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
