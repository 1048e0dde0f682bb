"""``MigrationRegistry`` on the SQLite control plane (same file, same write lock)."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from cloner.controlplane.migrations import (
    ROLLOUT_STALE_S,
    StepRecord,
    TenantOutcome,
    encode_previous_versions,
    previous_versions,
)
from cloner.controlplane.sqlite import QUERIES, _now_iso, _tenant
from cloner.domain import Status, Tenant, check_transition
from cloner.errors import InvalidTransition, TenantNotFound
from cloner.migrations.errors import RolloutInProgress

if TYPE_CHECKING:
    from cloner.controlplane.sqlite import SQLiteControlPlane

_JSON_COLUMNS = ("options", "plan", "summary", "error", "detail", "recovery")


def _row(row: aiosqlite.Row) -> dict[str, Any]:
    data = dict(row)
    for key in _JSON_COLUMNS:
        if key in data and isinstance(data[key], str):
            # A plain-text error (of an interrupted rollout) stays text.
            with contextlib.suppress(ValueError):
                data[key] = json.loads(data[key])
    return data


class SQLiteMigrationRegistry:
    """Rollouts, tenant outcomes and step records in the control-plane file."""

    def __init__(self, cp: SQLiteControlPlane) -> None:
        self.cp = cp

    # ------------------------------------------------------------- rollouts

    async def start_rollout(
        self, rollout_id: str, engine: str, target_version: str, *, actor: str | None,
        options: dict[str, Any], plan: list[dict[str, Any]],
        stale_after_s: float = ROLLOUT_STALE_S,
    ) -> None:
        """Insert a running rollout unless a live one exists (checked in the same transaction)."""
        now = time.time()
        async with self.cp._write() as db:
            cursor = await db.execute(QUERIES["running_rollouts"])
            for running in await cursor.fetchall():
                if running["heartbeat_at"] >= now - stale_after_s:
                    raise RolloutInProgress(
                        f"rollout {running['id']} (to {running['target_version']}, started "
                        f"{running['started_at']}) is still running; wait for it, or for its "
                        f"heartbeat to stop for {stale_after_s:.0f}s if its process died"
                    )
                await db.execute(QUERIES["interrupt_rollout"],
                                 {"id": running["id"], "now": _now_iso()})
            await db.execute(QUERIES["insert_rollout"], {
                "id": rollout_id, "engine": engine, "target_version": target_version,
                "actor": actor, "options": json.dumps(options), "plan": json.dumps(plan),
                "heartbeat_at": now, "now": _now_iso(),
            })

    async def heartbeat_rollout(self, rollout_id: str) -> None:
        """Renew the heartbeat."""
        async with self.cp._write() as db:
            await db.execute(QUERIES["heartbeat_rollout"],
                             {"id": rollout_id, "heartbeat_at": time.time()})

    async def finish_rollout(
        self, rollout_id: str, status: str, summary: dict[str, Any], error: str | None = None
    ) -> None:
        """Close the rollout with its status and outcome counts."""
        async with self.cp._write() as db:
            await db.execute(QUERIES["finish_rollout"], {
                "id": rollout_id, "status": status, "summary": json.dumps(summary),
                "error": error, "now": _now_iso(),
            })

    async def live_rollout(self, stale_after_s: float = ROLLOUT_STALE_S) -> dict[str, Any] | None:
        """The running rollout whose heartbeat is fresh, if any."""
        rows = await self.cp._read("running_rollouts")
        fresh = [r for r in rows if r["heartbeat_at"] >= time.time() - stale_after_s]
        return _row(fresh[-1]) if fresh else None

    async def last_rollout(self) -> dict[str, Any] | None:
        """The newest rollout."""
        rows = await self.cp._read("last_rollout")
        return _row(rows[0]) if rows else None

    async def rollout_outcomes(self, rollout_id: str) -> list[dict[str, Any]]:
        """Per-tenant outcomes, in finishing order."""
        return [_row(r) for r in await self.cp._read("rollout_outcomes", rollout_id=rollout_id)]

    # ------------------------------------------------------------- tenants

    async def begin_migration(
        self, tenant_id: str, rollout_id: str, stale_after_s: float = ROLLOUT_STALE_S
    ) -> Tenant:
        """READY (or MIGRATING of a dead rollout) → MIGRATING, atomically with the checks."""
        async with self.cp._write() as db:
            cursor = await db.execute(QUERIES["get_tenant"], {"tenant_id": tenant_id})
            row = await cursor.fetchone()
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            cursor = await db.execute(QUERIES["active_request"], {"tenant_id": tenant_id})
            active = await cursor.fetchone()
            if active is not None:
                # A worker owns the tenant while its request runs (a delete, a backup …).
                raise InvalidTransition(
                    f"tenant {tenant_id!r} has a {active['kind']} request in progress "
                    f"({active['id']}); migrate it once that has finished"
                )
            status = Status(row["status"])
            event = "migration_started"
            if status is Status.MIGRATING and row["rollout_id"] != rollout_id:
                owner = None
                if row["rollout_id"]:
                    cursor = await db.execute(QUERIES["get_rollout"], {"id": row["rollout_id"]})
                    owner = await cursor.fetchone()
                if (owner is not None and owner["status"] == "running"
                        and owner["heartbeat_at"] >= time.time() - stale_after_s):
                    raise InvalidTransition(
                        f"tenant {tenant_id!r} is being migrated by rollout {owner['id']}"
                    )
                event = "migration_adopted"
            elif status is not Status.MIGRATING:
                if status is not Status.READY:
                    raise InvalidTransition(
                        f"tenant {tenant_id!r} is {status.value}; only a ready tenant can be "
                        "migrated"
                    )
                check_transition(status, Status.MIGRATING)
            await db.execute(QUERIES["set_tenant_migration_state"], {
                "tenant_id": tenant_id, "status": Status.MIGRATING.value, "error": row["error"],
                "rollout_id": rollout_id, "now": _now_iso(),
            })
            await db.execute(QUERIES["bump_registry_changes"])
            await self.cp._event(db, tenant_id, event, {
                "rollout": rollout_id, "from": row["template_version"],
                "adopted_from": row["rollout_id"] if event == "migration_adopted" else None,
            })
            return await self._tenant(db, tenant_id)

    async def record_step(self, record: StepRecord) -> Tenant:
        """Append the record; move the tenant's version when the step moved the database."""
        async with self.cp._write() as db:
            cursor = await db.execute(QUERIES["get_tenant"], {"tenant_id": record.tenant_id})
            row = await cursor.fetchone()
            if row is None:
                raise TenantNotFound(f"no tenant {record.tenant_id!r}")
            await db.execute(QUERIES["insert_migration_step"], {
                "tenant_id": record.tenant_id, "rollout_id": record.rollout_id,
                "engine": record.engine, "step": record.step, "direction": record.direction,
                "from_version": record.from_version, "to_version": record.to_version,
                "checksum": record.checksum, "duration_ms": record.duration_ms,
                "now": _now_iso(), "detail": json.dumps(record.detail),
            })
            current = row["template_version"]
            if record.to_version != current:
                previous = [v for v in previous_versions(row["previous_versions"],
                                                         row["request_id"])
                            if v not in (current, record.to_version)]
                await db.execute(QUERIES["set_tenant_version"], {
                    "tenant_id": record.tenant_id, "version": record.to_version,
                    "previous_versions": encode_previous_versions([*previous, current],
                                                                  row["request_id"]),
                    "now": _now_iso(),
                })
                await db.execute(QUERIES["bump_registry_changes"])
            await self.cp._event(db, record.tenant_id, f"migration_{record.direction}", {
                "rollout": record.rollout_id, "step": record.step,
                "from": record.from_version, "to": record.to_version,
                "duration_ms": record.duration_ms, **record.detail,
            })
            return await self._tenant(db, record.tenant_id)

    async def finish_migration(
        self, outcome: TenantOutcome, *, status: Status | None, error: dict[str, Any] | None
    ) -> Tenant:
        """Outcome row + tenant state (+ history event) in one transaction."""
        async with self.cp._write() as db:
            cursor = await db.execute(QUERIES["get_tenant"], {"tenant_id": outcome.tenant_id})
            row = await cursor.fetchone()
            if row is None:
                raise TenantNotFound(f"no tenant {outcome.tenant_id!r}")
            current = Status(row["status"])
            if status is not None and current is not Status.MIGRATING:
                raise InvalidTransition(
                    f"tenant {outcome.tenant_id!r} is {current.value}, not migrating"
                )
            await db.execute(QUERIES["insert_rollout_outcome"], {
                "rollout_id": outcome.rollout_id, "tenant_id": outcome.tenant_id,
                "engine": outcome.engine, "from_version": outcome.from_version,
                "to_version": outcome.to_version, "reached_version": outcome.reached_version,
                "outcome": outcome.outcome,
                "error": json.dumps(outcome.error) if outcome.error else None,
                "backup": outcome.backup, "duration_s": outcome.duration_s, "now": _now_iso(),
                "recovery": json.dumps(outcome.recovery) if outcome.recovery else None,
            })
            if status is not None:
                check_transition(current, status)
                await db.execute(QUERIES["set_tenant_migration_state"], {
                    "tenant_id": outcome.tenant_id, "status": status.value,
                    "error": json.dumps(error) if error else None,
                    # A tenant left MIGRATING keeps its rollout, so the next one adopts it.
                    "rollout_id": outcome.rollout_id if status is Status.MIGRATING else None,
                    "now": _now_iso(),
                })
                if status is Status.READY:
                    # Back at a step boundary: nothing left for a later run to recover.
                    await db.execute(QUERIES["set_tenant_migration_progress"], {
                        "tenant_id": outcome.tenant_id, "migration": None, "now": _now_iso()})
                await db.execute(QUERIES["bump_registry_changes"])
            await self.cp._event(db, outcome.tenant_id, f"migration_{outcome.outcome}", {
                "rollout": outcome.rollout_id, "from": outcome.from_version,
                "to": outcome.to_version, "reached": outcome.reached_version,
                "error": outcome.error, "backup": outcome.backup,
                **({"recovery": outcome.recovery} if outcome.recovery else {}),
            })
            return await self._tenant(db, outcome.tenant_id)

    async def note_migration(
        self, tenant_id: str, migration: dict[str, Any] | None, *,
        event: str | None = None, detail: dict[str, Any] | None = None,
    ) -> Tenant:
        """Replace ``tenants.migration`` (+ an event) in one transaction."""
        async with self.cp._write() as db:
            cursor = await db.execute(QUERIES["get_tenant"], {"tenant_id": tenant_id})
            row = await cursor.fetchone()
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            # Stamped with the incarnation: a re-created tenant id never inherits it.
            await db.execute(QUERIES["set_tenant_migration_progress"], {
                "tenant_id": tenant_id, "now": _now_iso(),
                "migration": None if migration is None
                else json.dumps(migration | {"request": row["request_id"]}),
            })
            if event is not None:
                await self.cp._event(db, tenant_id, event, detail or {})
            return await self._tenant(db, tenant_id)

    async def set_writes_fenced(
        self, tenant_id: str, fenced: bool, rollout_id: str | None
    ) -> Tenant:
        """Open or close the current fence period (idempotent), with its event."""
        async with self.cp._write() as db:
            cursor = await db.execute(QUERIES["get_tenant"], {"tenant_id": tenant_id})
            row = await cursor.fetchone()
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            current = _tenant(row).writes_fenced
            active = current is not None and current.get("until") is None
            record: dict[str, Any] | None = None
            if fenced and not active:
                record = {"since": _now_iso(), "until": None, "seconds": None,
                          "rollout": rollout_id, "request": row["request_id"]}
                event = "writes_fenced"
            elif not fenced and active and current is not None:
                until = _now_iso()
                seconds = (datetime.fromisoformat(until)
                           - datetime.fromisoformat(str(current["since"]))).total_seconds()
                record = current | {"until": until, "seconds": round(seconds, 3),
                                    "unfenced_by": rollout_id}
                event = "writes_unfenced"
            if record is not None:
                await db.execute(QUERIES["set_tenant_writes_fenced"], {
                    "tenant_id": tenant_id, "writes_fenced": json.dumps(record),
                    "now": _now_iso(),
                })
                await self.cp._event(db, tenant_id, event, record)
            return await self._tenant(db, tenant_id)

    async def _tenant(self, db: aiosqlite.Connection, tenant_id: str) -> Tenant:
        cursor = await db.execute(QUERIES["get_tenant"], {"tenant_id": tenant_id})
        row = await cursor.fetchone()
        assert row is not None
        return _tenant(row)

    # ---------------------------------------------------------------- reads

    async def steps_of(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every step record of a tenant, oldest first."""
        rows = await self.cp._read("migration_steps_of_tenant", tenant_id=tenant_id)
        return [_row(r) for r in rows]

    async def last_outcome(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's newest outcome row."""
        rows = await self.cp._read("last_outcome_of_tenant", tenant_id=tenant_id)
        return _row(rows[0]) if rows else None

    async def version_counts(self) -> dict[tuple[str, str], int]:
        """(engine, version) → tenants with a database."""
        rows = await self.cp._read("count_tenants_by_version")
        return {(r["engine"], r["template_version"]): int(r["n"]) for r in rows}

    async def steps_since(self, after_id: int) -> list[dict[str, Any]]:
        """Step records newer than ``after_id``."""
        return [_row(r) for r in await self.cp._read("migration_steps_since", after=after_id)]

    async def outcomes_since(self, after_id: int) -> list[dict[str, Any]]:
        """Outcome rows newer than ``after_id``."""
        return [_row(r) for r in await self.cp._read("outcomes_since", after=after_id)]
