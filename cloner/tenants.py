"""Tenant operations shared by the CLI, the HTTP API and the Python client.

Input is validated here, before anything is enqueued: a bad id, engine,
industry, version or backup path never reaches the queue, Docker or SQL.
Every request records who asked (``actor``: ``cli:<unix user>``, ``http``,
``retention``) in its payload; the control plane copies it into the history.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from cloner import constants
from cloner.app import App
from cloner.backups import BackupInfo, final_backup_problem, is_final, verify_backup
from cloner.domain import (
    RESTORABLE,
    Industry,
    Request,
    RequestKind,
    RequestStatus,
    Status,
    Tenant,
    TenantSpec,
    parse_engine,
    parse_industry,
    sql_identifier,
    validate_tenant_id,
    validate_version,
    volume_name,
)
from cloner.engines import Placement, get_engine, rotation_hooks
from cloner.errors import (
    ClonerError,
    InvalidBackup,
    InvalidInput,
    InvalidTransition,
    RuntimeUnavailable,
    TenantExists,
    TenantNotFound,
    TimeoutExceeded,
)
from cloner.logging import get_logger
from cloner.pipeline.rotate import ROLE_CHOICES, roles_to_rotate
from cloner.secrets import role_usernames

log = get_logger(__name__)

#: States in which a repeated, identical create is answered with the request that made the
#: tenant: it is on its way, or there. Failed and purged tenants are created anew instead.
_LIVE = frozenset({Status.REQUESTED, Status.PROVISIONING, Status.READY, Status.DEGRADED})


@dataclass(frozen=True)
class Accepted:
    """The answer to an idempotent create: which request provisions the tenant."""

    request_id: str
    tenant_id: str
    status: Status
    #: False when an identical earlier create was found and nothing was enqueued.
    created: bool


class TenantService:
    """Create, inspect and delete tenants through the queue and the registry."""

    def __init__(self, app: App) -> None:
        self.app = app

    def validate_spec(
        self, tenant_id: str, engine: str, industry: str, template_version: str | None
    ) -> TenantSpec:
        """Check every field of a create request; raise ``InvalidInput`` on the first bad one."""
        validate_tenant_id(tenant_id)
        eng = parse_engine(engine)
        get_engine(eng)
        ind = parse_industry(industry)
        catalog = self.app.catalog
        version = (
            validate_version(template_version) if template_version
            else catalog.latest_version(eng.value)
        )
        catalog.resolve(eng.value, version, ind)
        return TenantSpec(tenant_id, eng, ind, version)

    async def create(
        self, tenant_id: str, engine: str, industry: str, template_version: str | None = None,
        *, actor: str | None = None,
    ) -> Request:
        """Validate and enqueue a provisioning request."""
        spec = self.validate_spec(tenant_id, engine, industry, template_version)
        await self._refuse_over_unknown_volume(spec)
        return await self.app.control_plane.enqueue(
            spec, RequestKind.PROVISION, spec.tenant_id, _payload(spec, actor)
        )

    async def _refuse_over_unknown_volume(self, spec: TenantSpec) -> None:
        """Refuse a create that would start over a volume of an incarnation the registry
        does not know (a quarantined orphan, e.g. after a control-plane restore): the
        runtime gives a new request an empty volume, which would wipe that data."""
        if get_engine(spec.engine).placement is not Placement.CONTAINER:
            return
        name = volume_name(spec.tenant_id)
        try:
            volume = await self.app.runtime.volume_info(name)
        except RuntimeUnavailable:
            log.warning("tenant.volume_unchecked", tenant_id=spec.tenant_id, volume=name)
            return
        if volume is None:
            return
        tenant = await self.app.control_plane.get_tenant(spec.tenant_id)
        label = volume.labels.get(constants.LABEL_REQUEST)
        if tenant is None or tenant.request_id != label:
            raise TenantExists(
                f"volume {name} holds data of request {label}, which the registry does not "
                f"know (a quarantined orphan): `cloner orphans adopt {name}` or "
                f"`cloner orphans remove {name}` first"
            )

    async def create_or_get(
        self, tenant_id: str, engine: str, industry: str, template_version: str | None = None,
        *, actor: str | None = None,
    ) -> Accepted:
        """Like ``create``, but a repeat of the same spec returns the original request.

        Signup flows retry (timeouts, double submits). While the tenant is live
        (requested, provisioning, ready or degraded), a create with the same
        engine, industry and effective template version (explicit, or the
        latest) enqueues nothing and answers the request that created it; a
        different spec is ``TenantExists``. Failed and purged tenants are
        created anew, as with ``create``.
        """
        spec = self.validate_spec(tenant_id, engine, industry, template_version)
        found = await self._same_live_spec(spec)
        if found is not None:
            return found
        await self._refuse_over_unknown_volume(spec)
        try:
            request = await self.app.control_plane.enqueue(
                spec, RequestKind.PROVISION, spec.tenant_id, _payload(spec, actor)
            )
        except TenantExists:
            # An identical create may have won the race between the check and the enqueue
            # (the enqueue transaction is what serialises them): answer with its request.
            found = await self._same_live_spec(spec)
            if found is None:
                raise
            return found
        return Accepted(request.id, spec.tenant_id, Status.REQUESTED, created=True)

    async def _same_live_spec(self, spec: TenantSpec) -> Accepted | None:
        tenant = await self.app.control_plane.get_tenant(spec.tenant_id)
        if tenant is None or tenant.status not in _LIVE or tenant.request_id is None:
            return None
        active = await self.app.control_plane.active_request(spec.tenant_id)
        if active is not None and active.kind is RequestKind.DEPROVISION:
            # Still ready, but a delete is queued: "created" would be a lie in a moment.
            raise TenantExists(
                f"tenant {spec.tenant_id!r} is being deleted (request {active.id}); "
                "create it again once it is purged, or choose another id"
            )
        if active is not None and active.kind is RequestKind.RESTORE:
            # A restore is not the signup's create, even with the same spec.
            raise TenantExists(
                f"tenant {spec.tenant_id!r} is being restored from a backup "
                f"(request {active.id}); choose another id"
            )
        if tenant.spec != spec:
            raise TenantExists(
                f"tenant {spec.tenant_id!r} already exists as {_describe(tenant.spec)}; "
                f"this request asks for {_describe(spec)}: delete it first or choose another id"
            )
        return Accepted(tenant.request_id, tenant.tenant_id, tenant.status, created=False)

    async def delete(self, tenant_id: str, *, purge: bool, actor: str | None = None) -> Request:
        """Enqueue a deprovisioning request (backup first, volume kept unless purge)."""
        tenant = await self.get(tenant_id)
        allowed = {Status.READY, Status.DEGRADED, Status.FAILED, Status.DEPROVISIONING}
        if purge or not is_final(tenant.backup):
            # Deleting a deprovisioned tenant again takes the final backup it lacks
            # (deprovisioned before final backups were recorded) from its kept volume.
            allowed.add(Status.DEPROVISIONED)
        if tenant.status not in allowed:
            raise InvalidTransition(
                f"tenant {tenant_id!r} is {tenant.status.value}; cannot delete it now"
            )
        if (purge and tenant.status is Status.DEPROVISIONED and is_final(tenant.backup)
                and (data_of := await self._data_of(tenant)) is not None):
            # Refused up front when the final backup is already bad; the worker checks
            # once more right before it removes the volume. (Without a final backup on
            # record, the worker takes one from the kept volume before purging.)
            problem = await asyncio.to_thread(
                partial(final_backup_problem, data_of=data_of),
                self.app.settings.backups_dir, tenant_id, tenant.backup)
            if problem is not None:
                raise InvalidTransition(
                    f"refusing to purge {tenant_id!r}: {problem}; the volume is kept")
        return await self.app.control_plane.enqueue(
            None, RequestKind.DEPROVISION, tenant_id, {"purge": purge, "actor": actor}
        )

    async def _data_of(self, tenant: Tenant) -> str | None:
        """The request that created the tenant's kept data ("" unknown), None without data."""
        host = self.app.services.host(get_engine(tenant.engine))
        if not await host.has_data(tenant.tenant_id):
            return None
        return await host.data_request(tenant.tenant_id)

    async def restore(
        self, tenant_id: str, backup: str | None = None, *, actor: str | None = None
    ) -> Request:
        """Enqueue a restore of a deprovisioned or purged tenant from a verified backup.

        ``backup`` is a ``.dump`` in the tenant's own backup folder (absolute, or
        relative to that folder); None means the tenant's last recorded backup.
        Its SHA-256 is computed again and must match its manifest, whose engine,
        industry and template version the restored tenant gets. Refusals:
        ``TenantNotFound``; ``InvalidTransition`` unless the tenant is
        deprovisioned, purged, or failed in an earlier restore; ``InvalidBackup``
        for a path outside the folder or a backup that does not verify.
        """
        tenant = await self.get(tenant_id)
        await self._check_restorable(tenant)
        source = backup if backup is not None else _recorded_backup(tenant)
        info = await asyncio.to_thread(
            verify_backup, self.app.settings.backups_dir, tenant_id, source
        )
        spec = _spec_of_backup(tenant_id, info)
        await self._check_volume_backed_up(tenant, info)
        payload = _payload(spec, actor) | {"backup": str(info.path), "sha256": info.sha256}
        return await self.app.control_plane.enqueue(spec, RequestKind.RESTORE, tenant_id, payload)

    async def _check_restorable(self, tenant: Tenant) -> None:
        if tenant.status in RESTORABLE:
            return
        if tenant.status is Status.FAILED and tenant.request_id is not None:
            # A failed restore left the tenant failed; trying again must stay possible,
            # or its data would only be reachable by hand.
            last = await self.app.control_plane.get_request(tenant.request_id)
            if last is not None and last.kind is RequestKind.RESTORE:
                return
        raise InvalidTransition(
            f"tenant {tenant.tenant_id!r} is {tenant.status.value}; only a deprovisioned or "
            "purged tenant (or one whose restore failed) can be restored"
        )

    async def _check_volume_backed_up(self, tenant: Tenant, chosen: BackupInfo) -> None:
        """Refuse to replace a kept volume whose data no verified final backup holds.

        The volume of a deprovisioned tenant (or one whose restore failed and
        kept it) is replaced by the restore; its data must then live on in the
        final backup taken when its container was removed. An on-demand or
        pre-migration backup is older than the volume and never counts.
        """
        data_of = None if tenant.status is Status.PURGED else await self._data_of(tenant)
        if data_of is None:
            return
        final = tenant.backup or {}
        if (is_final(tenant.backup) and final.get("sha256") == chosen.sha256
                and final.get("data_request") == data_of):
            return  # the chosen backup is the final one of this data, and it was just verified
        problem = await asyncio.to_thread(
            partial(final_backup_problem, data_of=data_of),
            self.app.settings.backups_dir, tenant.tenant_id, tenant.backup)
        if problem is not None:
            hint = ("fix or put back the final backup file" if is_final(tenant.backup) else
                    f"`cloner tenant delete {tenant.tenant_id}` takes one from the volume")
            raise InvalidTransition(
                f"tenant {tenant.tenant_id!r} still has its data volume and {problem}; a "
                f"restore would replace that data: {hint} first"
            )

    async def backup(self, tenant_id: str, *, actor: str | None = None) -> Request:
        """Enqueue an on-demand backup of a ready tenant.

        Queued rather than run in the caller: the one-active-request rule keeps it
        from racing a delete or restore of the same tenant, and the daemon's
        worker counts it in its metrics.
        """
        tenant = await self.get(tenant_id)
        if tenant.status is not Status.READY:
            raise InvalidTransition(
                f"tenant {tenant_id!r} is {tenant.status.value}; only a ready tenant can be "
                "backed up on demand (deprovisioning takes a final backup itself)"
            )
        return await self.app.control_plane.enqueue(
            None, RequestKind.BACKUP, tenant_id, {"actor": actor}
        )

    async def rotate(
        self, tenant_id: str, role: str = "all", *, actor: str | None = None
    ) -> Request:
        """Enqueue new passwords for a ready tenant's roles (``role``: one, or ``all``).

        Queued like a backup, so it never races a delete, restore or migration of
        the same tenant. Refusals: ``InvalidInput`` for an unknown role or an
        engine without logins (sqlite), ``TenantNotFound``, ``InvalidTransition``
        unless the tenant is ready, ``TenantExists`` while another request of the
        tenant is in progress.
        """
        if role not in ROLE_CHOICES:
            raise InvalidInput(
                f"unknown role {role[:20]!r}: choose one of {', '.join(ROLE_CHOICES)}"
            )
        tenant = await self.get(tenant_id)
        engine = get_engine(tenant.engine)
        if rotation_hooks(engine) is None:
            raise InvalidInput(
                f"tenant {tenant_id!r} runs {tenant.engine.value}, an embedded database with "
                "no logins, so it has no credentials to rotate"
            )
        roles = roles_to_rotate(role, engine.roles)
        if tenant.status is not Status.READY or not tenant.has_credentials:
            raise InvalidTransition(
                f"tenant {tenant_id!r} is {tenant.status.value}; only a ready tenant's "
                "credentials can be rotated"
            )
        return await self.app.control_plane.enqueue(
            None, RequestKind.ROTATE, tenant_id, {"roles": roles, "actor": actor}
        )

    async def rotation_result(self, request: Request) -> dict[str, Any]:
        """``tenant rotate --json`` of a finished rotate request (no secrets).

        ``{"tenant_id", "request_id", "roles": [..], "logins": {role: username},
        "finished_at"}``, read from the ``rotated`` event the request recorded.
        """
        history = await self.app.control_plane.events(request.tenant_id)
        done = [e for e in history
                if e["kind"] == "rotated" and e["detail"].get("request") == request.id]
        detail = done[-1]["detail"] if done else {}
        roles = [str(r) for r in request.payload.get("roles", [])]
        logins = detail.get("logins") or {}
        if not logins:  # redelivered after finishing: the registry has the logins
            creds = await self.app.services.credentials(request.tenant_id)
            logins = {r: creds.roles[r].username for r in roles} if creds else {}
        return {
            "tenant_id": request.tenant_id, "request_id": request.id, "roles": roles,
            "logins": logins, "finished_at": done[-1]["at"] if done else None,
        }

    async def get(self, tenant_id: str) -> Tenant:
        """A tenant or ``TenantNotFound``."""
        validate_tenant_id(tenant_id)
        tenant = await self.app.control_plane.get_tenant(tenant_id)
        if tenant is None:
            raise TenantNotFound(f"no tenant {tenant_id!r}")
        return tenant

    async def list(self, status: str | None = None) -> list[Tenant]:
        """Tenants, optionally filtered by state."""
        if status is not None and status not in {s.value for s in Status}:
            raise InvalidInput(
                f"unknown state {status[:30]!r}: choose one of {', '.join(s.value for s in Status)}"
            )
        return await self.app.control_plane.list_tenants(Status(status) if status else None)

    async def wait(self, request_id: str, timeout_s: float) -> Request:
        """Poll until the request is done or failed."""
        deadline = time.monotonic() + timeout_s
        while True:
            request = await self.app.control_plane.get_request(request_id)
            assert request is not None
            if request.status in (RequestStatus.DONE, RequestStatus.FAILED):
                return request
            if time.monotonic() >= deadline:
                raise TimeoutExceeded(
                    f"request {request_id} still {request.status.value} after {timeout_s:.0f}s; "
                    "it keeps running in the daemon"
                )
            await asyncio.sleep(0.1)

    async def to_json(
        self, tenant: Tenant, *, reveal: bool, events: bool = False
    ) -> dict[str, Any]:
        """The ``tenant show --json`` document of DESIGN.md (+ the newest ``events``)."""
        roles: dict[str, Any] = {}
        dsn: dict[str, Any] = {}
        engine = get_engine(tenant.engine)
        creds = await self.app.services.credentials(tenant.tenant_id) if reveal else None
        if tenant.has_credentials:
            # Login names are no secret, but a rotation changes them: read them from the
            # registry (decrypted in memory only), the derived names as a fallback.
            logins = await self._login_names(tenant.tenant_id) if creds is None else {
                r: c.username for r, c in creds.roles.items()}
            names = role_usernames(sql_identifier(tenant.tenant_id)) | logins
            for role in engine.roles:
                cred = creds.roles[role] if creds else None
                roles[role] = {
                    "username": cred.username if cred else names[role],
                    "password": cred.password if cred else None,
                }
                if cred and tenant.endpoint is not None and tenant.endpoint.port is not None:
                    dsn[role] = engine.dsn(tenant.endpoint, cred.username, cred.password)
                else:
                    dsn[role] = None
        container = (
            {"id": tenant.container_id, "name": tenant.container_name}
            if tenant.container_name else None
        )
        doc: dict[str, Any] = {
            "tenant_id": tenant.tenant_id,
            "status": tenant.status.value,
            "engine": tenant.engine.value,
            "industry": tenant.industry.value,
            "template_version": tenant.template_version,
            "endpoint": tenant.endpoint.as_dict() if tenant.endpoint else None,
            "container": container,
            "roles": roles,
            "dsn": dsn,
            "isolation": tenant.isolation.as_dict() if tenant.isolation else None,
            "timings": tenant.timings or None,
            "error": tenant.error,
            "attempts": tenant.attempts,
            "backup": tenant.backup,
            "created_at": tenant.created_at.isoformat(),
            "updated_at": tenant.updated_at.isoformat(),
            # The migration in flight (its step, phase, pre-migration backup), None when none.
            "migration": tenant.migration,
            # The latest fence of the application logins: since, until (None while fenced),
            # seconds.
            "writes_fenced": tenant.writes_fenced,
        }
        if events:
            history = await self.app.control_plane.events(tenant.tenant_id)
            doc["events"] = history[-constants.SHOWN_EVENTS:]
        return doc


    async def _login_names(self, tenant_id: str) -> dict[str, str]:
        try:
            creds = await self.app.services.credentials(tenant_id)
        except ClonerError:
            return {}  # a key that cannot decrypt: show the derived names
        return {r: c.username for r, c in creds.roles.items()} if creds else {}


def _payload(spec: TenantSpec, actor: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "engine": spec.engine.value, "industry": spec.industry.value,
        "template_version": spec.template_version,
    }
    if actor is not None:
        payload["actor"] = actor
    return payload


def _recorded_backup(tenant: Tenant) -> str:
    path = (tenant.backup or {}).get("path")
    if not isinstance(path, str) or not path:
        raise InvalidBackup(
            f"tenant {tenant.tenant_id!r} has no recorded backup; name one with --from "
            f"(see `cloner backup list {tenant.tenant_id}`)"
        )
    return path


def _spec_of_backup(tenant_id: str, info: BackupInfo) -> TenantSpec:
    """The spec a restored tenant gets: what the backup's manifest says it was taken from."""
    manifest = info.manifest
    try:
        engine = parse_engine(str(manifest.get("engine")))
        get_engine(engine)
        return TenantSpec(
            tenant_id, engine, parse_industry(str(manifest.get("industry"))),
            validate_version(str(manifest.get("template_version"))),
        )
    except InvalidInput as exc:
        raise InvalidBackup(f"manifest of {info.path.name}: {exc.message}") from None


def _describe(spec: TenantSpec) -> str:
    return (
        f"engine={spec.engine.value} industry={spec.industry.value} "
        f"template_version={spec.template_version}"
    )


__all__ = ["Accepted", "Industry", "TenantService"]
