"""The control plane as one attempt sees it: every registry write fenced by its lease.

A worker hands the pipelines an ``AttemptControlPlane`` (through
``Services.control_plane``) instead of the shared control plane. Reads pass
straight through; ``update_tenant`` carries the attempt's lease, so the
registry refuses it (``LeaseLost``) once another attempt claimed the request.
Pipelines therefore never pass tokens around, and a pipeline step cannot
write unfenced by forgetting to.

A new control-plane method that an attempt uses to write must take ``lease``
too and be passed it here; mypy keeps this class in step with the
``ControlPlane`` protocol, so a new method cannot be left out silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloner.controlplane.base import (
    ControlPlane,
    InstallIdentity,
    OrphanDecision,
    QueueStats,
    TenantUpdate,
)
from cloner.controlplane.migrations import MigrationRegistry
from cloner.domain import Lease, Request, RequestKind, Status, Tenant, TenantSpec
from cloner.errors import LeaseLost
from cloner.users import User, UserRole


class AttemptControlPlane:
    """``ControlPlane`` bound to one attempt's lease (see module docstring)."""

    def __init__(self, inner: ControlPlane, lease: Lease, lease_ttl_s: float) -> None:
        self.inner = inner
        self.lease = lease
        self.lease_ttl_s = lease_ttl_s

    async def checkpoint(self) -> None:
        """Renew the lease at a step boundary; ``LeaseLost`` if it is no longer held.

        Control-plane errors (busy, locked) propagate as they are: the pipeline
        turns them into a transient step failure.
        """
        if not await self.inner.renew(self.lease, self.lease_ttl_s):
            raise LeaseLost(
                f"request {self.lease.request_id} was taken over by another attempt; "
                "this attempt stops here"
            )

    # ---------------------------------------------------------- fenced writes

    async def update_tenant(
        self, tenant_id: str, update: TenantUpdate, *, lease: Lease | None = None
    ) -> Tenant:
        """The attempt's registry write, fenced by its lease."""
        return await self.inner.update_tenant(tenant_id, update, lease=lease or self.lease)

    # ------------------------------------------------------------ pass-through

    @property
    def migrations(self) -> MigrationRegistry:
        """Schema-migration records (not part of an attempt)."""
        return self.inner.migrations

    async def open(self) -> None:
        """The shared control plane is opened by the app, not by an attempt."""

    async def close(self) -> None:
        """Closing an attempt's view leaves the shared control plane open."""

    async def enqueue(
        self, spec: TenantSpec | None, kind: RequestKind, tenant_id: str,
        payload: dict[str, Any],
    ) -> Request:
        """Delegated."""
        return await self.inner.enqueue(spec, kind, tenant_id, payload)

    async def claim(self, owner: str, lease_ttl_s: float) -> Request | None:
        """Delegated."""
        return await self.inner.claim(owner, lease_ttl_s)

    async def renew(self, lease: Lease, lease_ttl_s: float) -> bool:
        """Delegated."""
        return await self.inner.renew(lease, lease_ttl_s)

    async def complete(self, lease: Lease) -> None:
        """Delegated."""
        await self.inner.complete(lease)

    async def fail(self, lease: Lease, error: str) -> None:
        """Delegated."""
        await self.inner.fail(lease, error)

    async def retry(self, lease: Lease, error: str, delay_s: float) -> None:
        """Delegated."""
        await self.inner.retry(lease, error, delay_s)

    async def release(self, lease: Lease) -> None:
        """Delegated."""
        await self.inner.release(lease)

    async def get_request(self, request_id: str) -> Request | None:
        """Delegated."""
        return await self.inner.get_request(request_id)

    async def active_request(self, tenant_id: str) -> Request | None:
        """Delegated."""
        return await self.inner.active_request(tenant_id)

    async def queue_stats(self) -> QueueStats:
        """Delegated."""
        return await self.inner.queue_stats()

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """Delegated."""
        return await self.inner.get_tenant(tenant_id)

    async def list_tenants(self, status: Status | None = None) -> list[Tenant]:
        """Delegated."""
        return await self.inner.list_tenants(status)

    async def credentials_token(self, tenant_id: str) -> str | None:
        """Delegated."""
        return await self.inner.credentials_token(tenant_id)

    async def credentials_tokens(self) -> list[tuple[str, str]]:
        """Delegated."""
        return await self.inner.credentials_tokens()

    async def replace_credentials_token(
        self, tenant_id: str, old: str, new: str, detail: dict[str, Any]
    ) -> bool:
        """Delegated (`cloner keys rotate`, a compare-and-set of its own, not an attempt's)."""
        return await self.inner.replace_credentials_token(tenant_id, old, new, detail)

    async def registry_change_counter(self) -> int:
        """Delegated."""
        return await self.inner.registry_change_counter()

    async def tenant_counts(self) -> dict[tuple[str, str], int]:
        """Delegated."""
        return await self.inner.tenant_counts()

    async def events(self, tenant_id: str) -> list[dict[str, Any]]:
        """Delegated."""
        return await self.inner.events(tenant_id)

    async def heartbeat_daemon(self, owner: str, pid: int, hostname: str) -> None:
        """Delegated."""
        await self.inner.heartbeat_daemon(owner, pid, hostname)

    async def remove_daemon(self, owner: str) -> None:
        """Delegated."""
        await self.inner.remove_daemon(owner)

    async def live_daemons(self, within_s: float) -> list[dict[str, Any]]:
        """Delegated."""
        return await self.inner.live_daemons(within_s)

    async def add_user(self, email: str, tenant_id: str, role: UserRole | str) -> User:
        """Delegated."""
        return await self.inner.add_user(email, tenant_id, role)

    async def remove_user(self, email: str, tenant_id: str | None = None) -> User:
        """Delegated."""
        return await self.inner.remove_user(email, tenant_id)

    async def list_users(self, tenant_id: str | None = None) -> list[User]:
        """Delegated."""
        return await self.inner.list_users(tenant_id)

    async def get_user(self, email: str) -> User | None:
        """Delegated."""
        return await self.inner.get_user(email)

    # Install identity and orphans: admin operations, never part of an attempt.

    async def install_identity(self) -> InstallIdentity | None:
        """Delegated."""
        return await self.inner.install_identity()

    async def claim_install_identity(self, install_id: str, origin: str) -> InstallIdentity:
        """Delegated."""
        return await self.inner.claim_install_identity(install_id, origin)

    async def tenant_count(self) -> int:
        """Delegated."""
        return await self.inner.tenant_count()

    async def record_orphan_decision(self, decision: OrphanDecision) -> None:
        """Delegated."""
        await self.inner.record_orphan_decision(decision)

    async def orphan_decisions(self) -> list[OrphanDecision]:
        """Delegated."""
        return await self.inner.orphan_decisions()

    async def adopt_tenant(
        self, spec: TenantSpec, request_id: str | None, backup: dict[str, Any],
        decision: OrphanDecision,
    ) -> Tenant:
        """Delegated."""
        return await self.inner.adopt_tenant(spec, request_id, backup, decision)

    async def backup_to(self, dest: Path) -> None:
        """Delegated."""
        await self.inner.backup_to(dest)


def _check_protocol(fenced: AttemptControlPlane) -> None:
    """Never called: lets mypy prove the fenced view is a whole ``ControlPlane``."""
    _cp: ControlPlane = fenced
    del _cp
