"""The registry's part of schema migrations: rollouts, per-tenant outcomes, applied steps.

``ControlPlane.migrations`` hands out a ``MigrationRegistry``. Each method is
one control-plane transaction, so the registry never shows a tenant half
moved: a step's record and the tenant's new ``template_version`` land
together, and a tenant leaves ``migrating`` in the same transaction that
records how its migration ended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloner.domain import Status, Tenant

#: A running rollout renews its heartbeat this often…
ROLLOUT_HEARTBEAT_S = 5.0
#: …and one silent for this long died with its process (it no longer blocks a new one).
ROLLOUT_STALE_S = 30.0


def previous_versions(raw: str | None, request_id: str | None) -> tuple[str, ...]:
    """The versions in a ``tenants.previous_versions`` value, if it belongs to ``request_id``."""
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return ()
    if not isinstance(data, dict) or data.get("request") != request_id:
        return ()
    return tuple(str(v) for v in data.get("versions") or ())


def encode_previous_versions(versions: list[str], request_id: str | None) -> str:
    """The ``tenants.previous_versions`` value for ``versions`` of this incarnation."""
    return json.dumps({"request": request_id, "versions": versions})


@dataclass(frozen=True)
class StepRecord:
    """One migration step that ran (or was reverted, restored or repaired) on a tenant."""

    tenant_id: str
    engine: str
    step: str
    #: ``up``, ``down``, ``restore`` (the pre-migration backup) or ``repair``.
    direction: str
    from_version: str
    to_version: str
    checksum: str
    duration_ms: int | None = None
    rollout_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TenantOutcome:
    """How one tenant's migration in one rollout ended."""

    rollout_id: str
    tenant_id: str
    engine: str
    from_version: str
    to_version: str
    #: The version the tenant database is at now.
    reached_version: str
    outcome: str
    error: dict[str, Any] | None = None
    backup: str | None = None
    duration_s: float | None = None
    #: What this run did about a migration a dead rollout left behind (restored/resumed).
    recovery: dict[str, Any] | None = None


class MigrationRegistry(Protocol):
    """Migration bookkeeping in the control plane (see module docstring)."""

    async def start_rollout(
        self, rollout_id: str, engine: str, target_version: str, *, actor: str | None,
        options: dict[str, Any], plan: list[dict[str, Any]],
        stale_after_s: float = ROLLOUT_STALE_S,
    ) -> None:
        """Record a running rollout; ``RolloutInProgress`` while another one is alive.

        Rollouts whose heartbeat is older than ``stale_after_s`` are marked
        ``interrupted`` in the same transaction.
        """

    async def heartbeat_rollout(self, rollout_id: str) -> None:
        """Tell other processes the rollout is still alive."""

    async def finish_rollout(
        self, rollout_id: str, status: str, summary: dict[str, Any], error: str | None = None
    ) -> None:
        """Record the end of a rollout."""

    async def live_rollout(self, stale_after_s: float = ROLLOUT_STALE_S) -> dict[str, Any] | None:
        """The running rollout with a fresh heartbeat, if any."""

    async def last_rollout(self) -> dict[str, Any] | None:
        """The most recently started rollout."""

    async def rollout_outcomes(self, rollout_id: str) -> list[dict[str, Any]]:
        """Per-tenant outcomes of a rollout, in the order they finished."""

    async def begin_migration(
        self, tenant_id: str, rollout_id: str, stale_after_s: float = ROLLOUT_STALE_S
    ) -> Tenant:
        """READY → MIGRATING for ``rollout_id`` (or adopt a tenant a dead rollout left
        MIGRATING); ``InvalidTransition`` if it is in another state or has an active
        request, ``TenantNotFound`` if it does not exist."""

    async def record_step(self, record: StepRecord) -> Tenant:
        """Append a step record; a step that changes the version updates the tenant's
        ``template_version`` (the old one joins ``previous_versions``) in the same
        transaction."""

    async def finish_migration(
        self, outcome: TenantOutcome, *, status: Status | None, error: dict[str, Any] | None
    ) -> Tenant:
        """Record a tenant's outcome; a tenant this rollout moved to MIGRATING goes to
        ``status`` (READY, or MIGRATING when it could not be brought back) with ``error``
        shown by ``tenant show``; READY also clears its record of the migration in
        flight. ``status=None`` records the outcome of a tenant the rollout never
        started and leaves its row as it is."""

    async def note_migration(
        self, tenant_id: str, migration: dict[str, Any] | None, *,
        event: str | None = None, detail: dict[str, Any] | None = None,
    ) -> Tenant:
        """Replace the tenant's record of the migration in flight (``Tenant.migration``),
        with a history event when ``event`` is given."""

    async def set_writes_fenced(
        self, tenant_id: str, fenced: bool, rollout_id: str | None
    ) -> Tenant:
        """Record that the application logins are now fenced (or no longer): the first
        fence of a period sets ``since`` (event ``writes_fenced``), the unfence sets
        ``until`` and ``seconds`` (event ``writes_unfenced``). Idempotent both ways."""

    async def steps_of(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every step record of a tenant, oldest first."""

    async def last_outcome(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's outcome in the latest rollout that included it."""

    async def version_counts(self) -> dict[tuple[str, str], int]:
        """(engine, template version) → tenants with a database at that version."""

    async def steps_since(self, after_id: int) -> list[dict[str, Any]]:
        """Step records with an id above ``after_id`` (for the metrics)."""

    async def outcomes_since(self, after_id: int) -> list[dict[str, Any]]:
        """Tenant outcomes with an id above ``after_id`` (for the metrics)."""
