"""The control-plane interface: what workers, CLI and HTTP need from queue and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cloner.controlplane.migrations import MigrationRegistry
from cloner.domain import (
    Endpoint,
    IsolationReport,
    Lease,
    Request,
    RequestKind,
    Status,
    Tenant,
    TenantSpec,
)
from cloner.users import User, UserRole


@dataclass(frozen=True)
class QueueStats:
    """Queue depth and the age of its oldest waiting request."""

    queued: int
    running: int
    oldest_queued_age_s: float | None


@dataclass(frozen=True)
class InstallIdentity:
    """The install a control plane owns: resources labelled ``cloner.install=<install_id>``."""

    install_id: str
    #: ``new``, ``install.id file`` (upgraded from the data dir's file) or ``adopted``.
    origin: str
    created_at: str


@dataclass(frozen=True)
class OrphanDecision:
    """An admin's recorded decision about a quarantined orphan (``cloner orphans …``)."""

    name: str
    kind: str
    tenant_id: str | None
    decision: str
    actor: str | None
    reason: str | None
    backup: dict[str, Any] | None
    at: str


_UNSET: Any = object()


@dataclass(frozen=True)
class TenantUpdate:
    """Fields to change on a registry row; ``_UNSET`` fields stay as they are."""

    status: Status | None = None
    endpoint: Endpoint | None = _UNSET
    container_id: str | None = _UNSET
    container_name: str | None = _UNSET
    credentials_token: str | None = _UNSET
    isolation: IsolationReport | None = _UNSET
    timings: dict[str, Any] = _UNSET
    error: dict[str, Any] | None = _UNSET
    backup: dict[str, Any] | None = _UNSET
    attempts: int = _UNSET
    #: The engine hardening level the tenant's rbac was just applied at.
    hardening_level: int = _UNSET
    event: str | None = None
    event_detail: dict[str, Any] = field(default_factory=dict)

    def changed(self) -> dict[str, Any]:
        """The fields that are set, by name (``status`` and event excluded)."""
        names = (
            "endpoint", "container_id", "container_name", "credentials_token",
            "isolation", "timings", "error", "backup", "attempts", "hardening_level",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not _UNSET}


class ControlPlane(Protocol):
    """Queue + registry. Every state change is one transaction."""

    @property
    def migrations(self) -> MigrationRegistry:
        """Schema-migration records (``cloner.controlplane.migrations``)."""

    async def open(self) -> None:
        """Connect and migrate the schema."""

    async def close(self) -> None:
        """Release connections."""

    # queue
    async def enqueue(
        self, spec: TenantSpec | None, kind: RequestKind, tenant_id: str,
        payload: dict[str, Any],
    ) -> Request:
        """Record a request and what it does to the tenant row, atomically.

        A provisioning request creates (or re-creates) the row; re-creating removes
        the users of the previous incarnation (``users_removed`` event); a restore moves an
        existing row back to ``requested`` with ``spec`` (from the backup's
        manifest) and no credentials; other kinds need the row to exist.
        """

    async def claim(self, owner: str, lease_ttl_s: float) -> Request | None:
        """Lease the next runnable request, or an expired one, as a new attempt.

        The returned request's ``lease`` is this attempt's own token (``owner``
        plus a nonce); every write below that takes a lease is refused with
        ``LeaseLost`` once a later claim took the request over.
        """

    async def renew(self, lease: Lease, lease_ttl_s: float) -> bool:
        """Extend a lease; False means it was lost."""

    async def complete(self, lease: Lease) -> None:
        """Mark a leased request done (``LeaseLost`` if no longer held)."""

    async def fail(self, lease: Lease, error: str) -> None:
        """Mark a leased request failed for good (``LeaseLost`` if no longer held)."""

    async def retry(self, lease: Lease, error: str, delay_s: float) -> None:
        """Put a leased request back with a delay (``LeaseLost`` if no longer held)."""

    async def release(self, lease: Lease) -> None:
        """Give a leased request back without charging an attempt (shutdown)."""

    async def get_request(self, request_id: str) -> Request | None:
        """One request by id."""

    async def active_request(self, tenant_id: str) -> Request | None:
        """The queued or running request of a tenant, if any."""

    async def queue_stats(self) -> QueueStats:
        """Depth and age of the queue."""

    # registry
    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """One registry row."""

    async def list_tenants(self, status: Status | None = None) -> list[Tenant]:
        """Registry rows, optionally by state."""

    async def update_tenant(
        self, tenant_id: str, update: TenantUpdate, *, lease: Lease | None = None
    ) -> Tenant:
        """Apply an update; a status change is checked against the state machine.

        Moving to ``purged`` also removes the tenant's users in the same
        transaction (a ``users_removed`` event lists them). ``lease`` fences the
        write to an attempt: ``LeaseLost`` unless it still holds its request for
        this tenant, checked in the write's own transaction.
        """

    async def credentials_token(self, tenant_id: str) -> str | None:
        """The encrypted credentials of a tenant."""

    async def credentials_tokens(self) -> list[tuple[str, str]]:
        """(tenant id, encrypted credentials) of every tenant that has some."""

    async def replace_credentials_token(
        self, tenant_id: str, old: str, new: str, detail: dict[str, Any]
    ) -> bool:
        """Compare-and-set a re-encrypted token; False when the stored one is not ``old``.

        Recorded as a ``credentials_reencrypted`` event with ``detail``.
        """

    async def registry_change_counter(self) -> int:
        """A number that changes whenever any tenant row is written (never goes back).

        Cheap to poll: connection pools compare it with the last value they saw
        and re-read their tenants only when it moved.
        """

    async def tenant_counts(self) -> dict[tuple[str, str], int]:
        """(status, engine) → number of tenants."""

    async def events(self, tenant_id: str) -> list[dict[str, Any]]:
        """History of a tenant."""

    # daemons
    async def heartbeat_daemon(self, owner: str, pid: int, hostname: str) -> None:
        """Record that a daemon is alive."""

    async def remove_daemon(self, owner: str) -> None:
        """Forget a daemon (clean shutdown)."""

    async def live_daemons(self, within_s: float) -> list[dict[str, Any]]:
        """Daemons that sent a heartbeat recently."""

    # users
    async def add_user(self, email: str, tenant_id: str, role: UserRole | str) -> User:
        """Map ``email`` (lowercased, validated) to a tenant with a role.

        Unknown tenant → ``TenantNotFound``; an email already mapped to another
        tenant → ``UserConflict``; the same tenant again updates the role.
        """

    async def remove_user(self, email: str, tenant_id: str | None = None) -> User:
        """Forget a user; ``UserNotFound`` when there is none (in ``tenant_id``, if given)."""

    async def list_users(self, tenant_id: str | None = None) -> list[User]:
        """Users, of one tenant or of all, ordered by tenant then email."""

    async def get_user(self, email: str) -> User | None:
        """One user by (case-insensitive) email, or None."""

    # identity and orphans (cloner.install, cloner.orphans)
    async def install_identity(self) -> InstallIdentity | None:
        """The install this control plane owns, or None before it was bound to one."""

    async def claim_install_identity(self, install_id: str, origin: str) -> InstallIdentity:
        """Bind an unbound control plane to ``install_id``; the existing identity if bound."""

    async def tenant_count(self) -> int:
        """Registry rows in any state."""

    async def record_orphan_decision(self, decision: OrphanDecision) -> None:
        """Append an admin decision about an orphan (and a tenant history event)."""

    async def orphan_decisions(self) -> list[OrphanDecision]:
        """Every recorded orphan decision, oldest first."""

    async def adopt_tenant(
        self, spec: TenantSpec, request_id: str | None, backup: dict[str, Any],
        decision: OrphanDecision,
    ) -> Tenant:
        """Register ``spec`` as deprovisioned from an orphan volume, with its backup.

        Refuses (``TenantExists``) unless the id is free or its row is failed or
        purged; the row and the decision are written in one transaction.
        """

    async def backup_to(self, dest: Path) -> None:
        """Write a consistent copy of the control plane to ``dest`` (mode 0600)."""
