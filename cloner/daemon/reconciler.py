"""Reconciler: makes what runs in Docker agree with the registry, once at start and every 15 s.

The registry is the source of truth; Docker is what survives (or does not
survive) crashes, restarts and manual ``docker rm``. Each pass lists every
container and volume labelled with this install (``Runtime.owned``), reads
the registry and the active (queued/running) requests, and then:

1. **Abandoned tenants.** A tenant still REQUESTED or PROVISIONING with no
   active request will never be finished by anyone: every worker path ends a
   provisioning request with the tenant READY or FAILED, so this only happens
   when that last registry write was lost (e.g. the control plane failed
   while recording a failure). Once its row is older than ``orphan_grace_s``
   it is marked FAILED (step ``reconcile``), which makes the id deletable and
   re-creatable again; its resources then follow the FAILED rule below.

2. **Orphans.** A container or volume is an orphan when no live registry row
   wants it. The tenant is read from the ``cloner.tenant`` label (or, failing
   that, from the deterministic ``cloner-<tenant>[-data]`` name). Only
   resources labelled with the install id stored in this control plane are
   ever looked at (``cloner.install``): a new or foreign control plane sees
   none of another install's resources.

   - an active request for the tenant → never touched (a worker owns it);
   - no registry row → **quarantined**;
   - a ``cloner.request`` label other than the tenant's ``request_id`` (an
     incarnation this registry does not know: e.g. the control plane was
     restored from an older copy) → **quarantined**, except while the tenant
     is DEPROVISIONING or MIGRATING (a delete or rollout owns it);
   - the tenant's own request: READY/DEGRADED/DEPROVISIONING/MIGRATING → wanted;
     REQUESTED/PROVISIONING with no active request (see 1), FAILED (unless
     ``keep_failed``: the failed request's resources are kept for debugging),
     PURGED → orphan; DEPROVISIONED → the container is an orphan, the volume is
     the tenant's retained data.

   Of these, only a **container** of the tenant's own, finished request is
   removed by the reconciler: its data lives on the volume, and the registry
   records why it is not wanted (failed, purged, deprovisioned). Everything
   else, and **every volume**, is quarantined: left in place, reported once as
   ``reconcile.quarantined``, counted in ``cloner_orphans{kind}`` and listed by
   ``cloner orphans list``. A volume goes only by a recorded decision: purge or
   retention after a verified backup, or ``cloner orphans remove`` (which backs
   it up first). Judging by the registry alone is not enough to destroy data:
   the registry itself may be the thing that is wrong.

   Scratch servers of ``cloner template validate`` (role ``scratch``, never
   tenant data) have no registry row by design; their container and volume are
   removed after ``SCRATCH_GRACE_S``, far longer than any validation run.

   Grace (``orphan_grace_s``, default 60 s, twice the lease TTL) is measured
   from when this process first saw the resource, never from its creation
   time: after a restart or a control-plane restore every resource is old, and
   that must not make anything eligible at once. A resource is quarantined or
   removed only once it has been an orphan for the grace, and a removal happens
   only after the registry row and active request are read again right before
   it: a request enqueued meanwhile (a tenant re-created in the window between
   our snapshot and the delete) spares it. A container is also re-inspected
   and spared if it was replaced meanwhile.

3. **Repairs.** A READY or DEGRADED tenant without an active request whose
   container is missing or stopped is marked DEGRADED, then its container is
   restarted (stopped) or recreated from its volume (missing, or refusing to
   start) with the same labels, including ``cloner.request`` = the tenant's
   request, so the runtime adopts the existing volume: the data survives and
   the engine skips its initialisation because the data directory is not
   empty. The engine is then waited for with the stored credentials, the new
   endpoint (the host port may change) and container id are registered, a
   recreated container is proven isolated again, and the tenant goes back to
   READY — unless its isolation proof fails. A volume that is gone, or that
   belongs to another request (adopting it would wipe it), is unrecoverable:
   the tenant stays DEGRADED and an operator is told. A running container
   whose published port or id no longer matches the registry (Docker
   restarted) gets its endpoint re-registered. Containers that are
   ``restarting`` or ``paused`` are left to Docker and to whoever paused them.

4. **Drift.** A container whose image differs from the configured image of
   its engine, or whose ``cloner.template_version`` label differs from the
   tenant's, is logged and counted, never acted upon.

5. **Retention** (``daemon/retention.py``). A DEPROVISIONED tenant whose
   deprovisioning is older than ``retention_days`` and whose final backup
   verifies gets a purge request (``action="retention_queued"``); the worker
   that runs it counts ``action="retention_purged"``. Without a verified
   backup nothing is purged (``action="retention_blocked"``, reported once).

6. **Hardening** (``daemon/harden.py``). READY tenants whose recorded
   hardening level is below their engine's get a ``harden`` request (at most
   ``harden_per_pass`` active at once): a worker re-applies rbac and re-proves
   them (``action="harden_queued"``).

The reconciler never fights the workers: tenants with an active request are
skipped, and every state change goes through the registry's state machine,
so a tenant that moved on meanwhile (say, to ``deprovisioning``) refuses the
change. Every action is logged as ``reconcile.<action>`` with the tenant id
and counted in ``cloner_reconcile_actions_total{action}``; a completed pass
sets ``cloner_reconcile_last_success_timestamp_seconds``; ``cloner_runtime_up``
says whether Docker answered. A pass during which Docker is unreachable logs
once, counts ``action="runtime_unavailable"`` and returns. With several
daemons on one control plane (later) only the holder of a leader lease may
run passes; with SQLite there is one daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from cloner import constants
from cloner.app import App
from cloner.controlplane import TenantUpdate
from cloner.daemon.harden import HardenSweep
from cloner.daemon.health import mark_degraded, mark_ready
from cloner.daemon.retention import RetentionSweep
from cloner.domain import (
    Credentials,
    Endpoint,
    Request,
    Status,
    Tenant,
    container_name,
    volume_name,
)
from cloner.engines import EngineDriver, Placement, SessionLimits, TenantTarget, get_engine
from cloner.errors import ClonerError, InvalidTransition, NotReady, RuntimeUnavailable
from cloner.logging import get_logger
from cloner.pipeline.verify import prove_isolation
from cloner.runtime.base import ContainerInfo, OwnedResources, VolumeInfo

log = get_logger(__name__)

#: Scratch servers of ``template validate`` live seconds to minutes; this is generous.
SCRATCH_GRACE_S = 1800.0
ROLE_SCRATCH = "scratch"
#: Repairs wait for a database to start; a few at once keeps a mass failure quick.
REPAIR_CONCURRENCY = 4
#: Container states that need no repair: running, or already handled by Docker or a person.
LEFT_ALONE = frozenset({"running", "restarting", "paused", "removing"})
WANTS_CONTAINER = frozenset({Status.READY, Status.DEGRADED})
UNFINISHED = frozenset({Status.REQUESTED, Status.PROVISIONING})


@dataclass(frozen=True)
class ReconcileAction:
    """One thing a pass did (or found and deliberately left alone)."""

    action: str
    tenant_id: str | None
    subject: str
    detail: str = ""


@dataclass(frozen=True)
class ReconcileReport:
    """The outcome of one pass."""

    runtime_up: bool
    actions: tuple[ReconcileAction, ...] = ()

    def of(self, action: str) -> tuple[ReconcileAction, ...]:
        """The actions of one kind (``orphan_removed``, ``recreated``, ``drift`` …)."""
        return tuple(a for a in self.actions if a.action == action)


@dataclass(frozen=True)
class Resource:
    """A container or volume of ours, as the reconciler judges it."""

    kind: str  # "container" | "volume"
    name: str
    labels: dict[str, str]
    created_at: datetime | None
    container_id: str | None = None

    @property
    def tenant_id(self) -> str | None:
        """The tenant it belongs to: its label, else derived from the deterministic name."""
        label = self.labels.get(constants.LABEL_TENANT)
        if label:
            return label
        name = self.name
        if not name.startswith(constants.CONTAINER_PREFIX):
            return None
        name = name.removeprefix(constants.CONTAINER_PREFIX)
        if self.kind == "volume":
            if not name.endswith(constants.VOLUME_SUFFIX):
                return None
            name = name.removesuffix(constants.VOLUME_SUFFIX)
        return name or None

    @property
    def request_id(self) -> str | None:
        """The request that created it."""
        return self.labels.get(constants.LABEL_REQUEST)

    @property
    def scratch(self) -> bool:
        """True for a ``template validate`` scratch server."""
        return self.labels.get(constants.LABEL_ROLE) == ROLE_SCRATCH

    @property
    def key(self) -> tuple[str, str]:
        """Identity across passes (a recreated container gets a new key)."""
        return (self.kind, self.container_id or self.name)

    @classmethod
    def of_container(cls, info: ContainerInfo) -> Resource:
        """From what the runtime reports about a container."""
        return cls("container", info.name, dict(info.labels), info.created_at, info.id)

    @classmethod
    def of_volume(cls, info: VolumeInfo) -> Resource:
        """From what the runtime reports about a volume."""
        return cls("volume", info.name, dict(info.labels), info.created_at)


@dataclass(frozen=True)
class Verdict:
    """Why a resource is an orphan, and whether the reconciler may remove it."""

    reason: str
    #: True: left in place for an admin (``cloner orphans``); False: the reconciler removes it.
    quarantine: bool


#: A delete or a rollout owns the tenant's resources whatever their request label.
_OWNED_BY_WORK = frozenset({Status.DEPROVISIONING, Status.MIGRATING})


def orphan_verdict(
    resource: Resource, tenant: Tenant | None, active: Request | None, *, keep_failed: bool
) -> Verdict | None:
    """The verdict on ``resource``, or None if a live registry row wants it (module rules)."""
    if resource.scratch:
        return Verdict("scratch server of template validate", quarantine=False)
    if resource.labels.get(constants.LABEL_ROLE) == constants.ROLE_VOLUME_DUMP:
        return None  # a backup's helper: lives seconds; a crashed one is replaced by the next
    if tenant is None:
        return Verdict("no registry row", quarantine=True)
    if active is not None:
        return None
    status = tenant.status
    if resource.request_id != tenant.request_id:
        if status in _OWNED_BY_WORK:
            return None
        return Verdict(f"request {resource.request_id} is not the {status.value} tenant's "
                       f"request {tenant.request_id}", quarantine=True)
    if status in UNFINISHED:
        reason = f"tenant is {status.value} with no active request"
    elif status is Status.FAILED and not keep_failed:
        reason = "tenant failed"
    elif status is Status.PURGED:
        reason = "tenant purged"
    elif status is Status.DEPROVISIONED and resource.kind == "container":
        reason = "tenant deprovisioned"
    else:
        return None
    # The container of the tenant's own finished request holds nothing the volume does
    # not; a volume is data, and the reconciler never removes data on its own.
    return Verdict(reason, quarantine=resource.kind == "volume")


class Reconciler:
    """Registry vs runtime, one pass at a time (see module docstring for the rules)."""

    def __init__(self, app: App) -> None:
        self.app = app
        #: resource key → wall time this process first saw it (for runtimes without dates)
        self._first_seen: dict[tuple[str, str], float] = {}
        #: conditions already reported, so a standing one is logged once, not every pass
        self._reported: set[tuple[str, str, str]] = set()
        self._seen_now: set[tuple[str, str, str]] = set()
        self._limiter = asyncio.Semaphore(REPAIR_CONCURRENCY)
        self._retention = RetentionSweep(app)
        self._harden = HardenSweep(app)

    async def run(self, stop: asyncio.Event) -> None:
        """A pass now, then every ``reconcile_interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except Exception as exc:  # a bad pass (control plane busy) must not stop the daemon
                log.warning("reconcile.pass_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.app.settings.reconcile_interval_s)

    async def reconcile_once(self) -> ReconcileReport:
        """One pass; returns what it did. Docker being down is reported, not raised."""
        actions: list[ReconcileAction] = []
        self._seen_now = set()
        try:
            await self._pass(actions)
        except RuntimeUnavailable as exc:
            # Counted as well as gauged: a short outage between two scrapes still shows.
            self.app.metrics.runtime_up.set(0)
            self.app.metrics.reconcile_actions.labels(action="runtime_unavailable").inc()
            log.warning("reconcile.runtime_unavailable", error=exc.message)
            return ReconcileReport(runtime_up=False, actions=tuple(actions))
        self._reported &= self._seen_now
        self.app.metrics.reconcile_last_success.set(time.time())
        return ReconcileReport(runtime_up=True, actions=tuple(actions))

    # ------------------------------------------------------------------ pass

    async def _pass(self, actions: list[ReconcileAction]) -> None:
        runtime = self.app.runtime
        cp = self.app.control_plane
        await runtime.ping()
        owned = await runtime.owned()
        self.app.metrics.runtime_up.set(1)

        resources = [Resource.of_container(c) for c in owned.containers]
        resources += [Resource.of_volume(v) for v in owned.volume_info]
        now = time.time()
        self._first_seen = {
            r.key: self._first_seen.get(r.key, now) for r in resources
        }
        tenants = {t.tenant_id: t for t in await cp.list_tenants()}
        relevant = {r.tenant_id for r in resources if r.tenant_id} | {
            t.tenant_id for t in tenants.values()
            if t.status in WANTS_CONTAINER or t.status in UNFINISHED
        }
        active = {tid: await cp.active_request(tid) for tid in sorted(relevant)}

        for tenant in list(tenants.values()):
            if tenant.status in UNFINISHED and active.get(tenant.tenant_id) is None:
                updated = await self._abandon(tenant, now, actions)
                if updated is not None:
                    tenants[tenant.tenant_id] = updated

        # Containers first: Docker refuses to remove a volume a container still mounts.
        quarantined = {"container": 0, "volume": 0}
        for resource in sorted(resources, key=lambda r: r.kind != "container"):
            tid = resource.tenant_id
            owner = tenants.get(tid) if tid else None
            verdict = orphan_verdict(resource, owner, active.get(tid) if tid else None,
                                     keep_failed=self.app.settings.keep_failed)
            if verdict is None:
                continue
            if verdict.quarantine:
                if self._quarantine(resource, verdict.reason, now, actions):
                    quarantined[resource.kind] += 1
            else:
                await self._consider_orphan(resource, verdict.reason, now, actions)
        for kind, count in quarantined.items():
            self.app.metrics.orphans.labels(kind=kind).set(count)

        await self._repairs(tenants, active, owned, actions)
        await self._retention_sweep(tenants, active, actions)
        await self._harden_sweep(tenants, active, actions)

    # ------------------------------------------------------------- abandoned

    async def _abandon(
        self, tenant: Tenant, now: float, actions: list[ReconcileAction]
    ) -> Tenant | None:
        age_s = now - tenant.updated_at.astimezone(UTC).timestamp()
        if age_s < self.app.settings.orphan_grace_s:
            return None
        cp = self.app.control_plane
        # Read again: a worker that just claimed a retry would make this a live tenant.
        if await cp.active_request(tenant.tenant_id) is not None:
            return None
        error = {"step": "reconcile", "class": "Abandoned",
                 "reason": f"left {tenant.status.value} with no active request"}
        try:
            updated = await asyncio.shield(cp.update_tenant(tenant.tenant_id, TenantUpdate(
                status=Status.FAILED, error=error, event="failed", event_detail=error,
            )))
        except InvalidTransition:
            return None
        self._act(actions, "abandoned", tenant.tenant_id, tenant.tenant_id,
                  f"was {tenant.status.value} with no active request; marked failed")
        return updated

    # ---------------------------------------------------------------- orphans

    def _quarantine(
        self, resource: Resource, reason: str, now: float, actions: list[ReconcileAction]
    ) -> bool:
        """Leave ``resource`` in place and report it once; False while still within grace."""
        age_s = now - self._first_seen.get(resource.key, now)
        if age_s < self.app.settings.orphan_grace_s:
            log.debug("reconcile.orphan_pending", tenant_id=resource.tenant_id,
                      kind=resource.kind, name=resource.name, reason=reason,
                      seen_s=round(age_s, 1))
            return False
        self._act(actions, "quarantined", resource.tenant_id, resource.name,
                  f"{resource.kind}: {reason}; left in place (cloner orphans list)",
                  level="warning", once=True)
        return True

    async def _consider_orphan(
        self, resource: Resource, reason: str, now: float, actions: list[ReconcileAction]
    ) -> None:
        grace = self.app.settings.orphan_grace_s
        if resource.scratch:
            grace = max(grace, SCRATCH_GRACE_S)
        # From first sight by this process, never from creation: after a restart (or a
        # restored control plane) every resource is old, and that proves nothing.
        age_s = now - self._first_seen.get(resource.key, now)
        if age_s < grace:
            log.debug("reconcile.orphan_pending", tenant_id=resource.tenant_id,
                      kind=resource.kind, name=resource.name, reason=reason,
                      age_s=round(age_s, 1), grace_s=grace)
            return
        try:
            await self._remove_orphan(resource, reason, age_s, actions)
        except RuntimeUnavailable:
            raise
        except Exception as exc:  # one stubborn resource must not stop the pass
            self._act(actions, "failed", resource.tenant_id, resource.name,
                      f"removing orphan {resource.kind}: {type(exc).__name__}: {exc}",
                      level="error")

    async def _remove_orphan(
        self, resource: Resource, reason: str, age_s: float, actions: list[ReconcileAction]
    ) -> None:
        cp = self.app.control_plane
        runtime = self.app.runtime
        tid = resource.tenant_id
        # The snapshot may be seconds old: a tenant created (or re-created) since then owns
        # these now. Reading the row and its request again right before deleting closes
        # the kill-between-create-and-register window down to the delete call itself.
        tenant = await cp.get_tenant(tid) if tid else None
        active = await cp.active_request(tid) if tid else None
        verdict = orphan_verdict(resource, tenant, active,
                                 keep_failed=self.app.settings.keep_failed)
        if verdict is None or verdict.quarantine:
            self._act(actions, "orphan_spared", tid, resource.name,
                      f"{resource.kind} is no longer removable after re-reading the registry")
            return
        if resource.kind == "volume" and not resource.scratch:
            raise AssertionError("the reconciler never removes a tenant volume")
        if resource.kind == "container":
            current = await runtime.inspect(resource.name)
            if current is None:
                return
            if current.id != resource.container_id:
                self._act(actions, "orphan_spared", tid, resource.name,
                          "container was replaced since the snapshot")
                return
            await runtime.remove_container(resource.name)
        else:
            await runtime.remove_volume(resource.name)
        self._act(actions, "orphan_removed", tid, resource.name,
                  f"{resource.kind}: {reason} (seen {age_s:.0f}s ago)")

    # ---------------------------------------------------------------- repairs

    async def _repairs(
        self, tenants: dict[str, Tenant], active: dict[str, Request | None],
        owned: OwnedResources, actions: list[ReconcileAction],
    ) -> None:
        containers = {c.name: c for c in owned.containers}
        volumes = {v.name: v for v in owned.volume_info}
        jobs = []
        for tenant in tenants.values():
            tid = tenant.tenant_id
            if (tenant.status not in WANTS_CONTAINER or active.get(tid) is not None
                    or not _in_container(tenant)):
                continue
            found = containers.get(container_name(tid))
            current = (found if found is not None
                       and found.labels.get(constants.LABEL_REQUEST) == tenant.request_id
                       else None)
            if current is not None and current.status in LEFT_ALONE:
                self._check_drift(tenant, current, actions)
                if current.running:
                    await self._guard(tenant, actions,
                                      self._refresh_endpoint(tenant, current, actions))
                continue
            jobs.append(self._guard(
                tenant, actions, self._repair(tenant, current,
                                              volumes.get(volume_name(tid)), actions),
            ))
        await asyncio.gather(*jobs)

    async def _guard(self, tenant: Tenant, actions: list[ReconcileAction],
                     work: Coroutine[Any, Any, None]) -> None:
        async with self._limiter:
            with structlog.contextvars.bound_contextvars(tenant_id=tenant.tenant_id):
                try:
                    await work
                except RuntimeUnavailable:
                    raise
                except Exception as exc:  # the next pass tries again; others go on
                    self._act(actions, "repair_failed", tenant.tenant_id,
                              container_name(tenant.tenant_id),
                              f"{type(exc).__name__}: {exc}", level="error")

    async def _repair(
        self, tenant: Tenant, container: ContainerInfo | None, volume: VolumeInfo | None,
        actions: list[ReconcileAction],
    ) -> None:
        tid = tenant.tenant_id
        cp = self.app.control_plane
        runtime = self.app.runtime
        name = container_name(tid)
        why = "container missing" if container is None else f"container {container.status}"
        if tenant.status is Status.READY and await mark_degraded(
            self.app, tenant, why, by="reconcile"
        ):
            self._act(actions, "degraded", tid, name, why, logged=True)
        # Last look before touching Docker: a delete may have been enqueued meanwhile.
        fresh = await cp.get_tenant(tid)
        if (fresh is None or fresh.status is not Status.DEGRADED
                or fresh.request_id != tenant.request_id
                or await cp.active_request(tid) is not None):
            return
        driver = get_engine(fresh.engine)
        action = "restarted"
        info: ContainerInfo | None = None
        if container is not None:
            try:
                info = await runtime.start(name)
            except RuntimeUnavailable:
                raise
            except Exception as exc:
                log.warning("reconcile.restart_failed", error=f"{type(exc).__name__}: {exc}")
                await runtime.remove_container(name)  # recreated below, from the same volume
        creds = await self.app.services.credentials(tid)
        if info is None:
            problem = self._unrecoverable_reason(fresh, volume, creds)
            if problem is not None:
                self._act(actions, "unrecoverable", tid, volume_name(tid), problem,
                          level="error", once=True)
                return
            assert creds is not None
            info = await self._recreate(fresh, driver, creds)
            action = "recreated"
        if creds is None:
            raise NotReady(f"tenant {tid} has no stored credentials to wait for its database")
        if info.host_port is None:
            raise NotReady(f"container {info.name} publishes no port")
        endpoint = Endpoint(host=self.app.settings.bind_host, port=info.host_port,
                            database=driver.database_name(tid))
        # Registered before waiting: whatever happens next, the registry points at the
        # container that exists, and a later pass or health probe finds the right port.
        await asyncio.shield(cp.update_tenant(tid, TenantUpdate(
            container_id=info.id, container_name=info.name, endpoint=endpoint,
            event=f"reconcile_{action}",
            event_detail={"container_id": info.id, "port": info.host_port},
        )))
        self._act(actions, action, tid, name, f"now at {endpoint.host}:{endpoint.port}")
        target = TenantTarget(tid, driver.database_name(tid), endpoint, creds, name,
                              session=SessionLimits.from_settings(self.app.settings),
                              guard=self.app.services.endpoint_guard(tid, info.name, info.id),
                              legacy_hardening=fresh.hardening_level < driver.hardening_level)
        await driver.wait_ready(target, self.app.settings.ready_timeout_s)
        proof = fresh.isolation
        if action == "recreated":
            # A new container is a new thing to trust: prove it before calling it READY.
            proof = await prove_isolation(self.app.services, fresh.engine, driver, target)
        if proof is not None and not proof.passed:
            failed = [c.name for c in proof.checks if not c.passed]
            self._act(actions, "isolation_failed", tid, name,
                      f"stays degraded; failed checks: {', '.join(failed)}", level="error")
            return
        after = await cp.get_tenant(tid)
        if after is not None and await mark_ready(self.app, after, f"container {action}",
                                                  by="reconcile"):
            self._act(actions, "ready", tid, name, f"container {action}", logged=True)

    def _unrecoverable_reason(
        self, tenant: Tenant, volume: VolumeInfo | None, creds: Credentials | None
    ) -> str | None:
        if volume is None:
            return "container and data volume are both gone; restore from a backup"
        if volume.labels.get(constants.LABEL_REQUEST) != tenant.request_id:
            # Adopting it under this request id would make the runtime wipe it.
            return (f"volume {volume.name} belongs to request "
                    f"{volume.labels.get(constants.LABEL_REQUEST)}, not {tenant.request_id}")
        if creds is None:
            return "no stored credentials for the tenant"
        return None

    async def _recreate(
        self, tenant: Tenant, driver: EngineDriver, creds: Credentials
    ) -> ContainerInfo:
        labels = {
            constants.LABEL_TENANT: tenant.tenant_id,
            # The same request id as the volume's label: the runtime adopts the volume
            # instead of replacing it, so the data directory (and its roles) survive.
            constants.LABEL_REQUEST: tenant.request_id or "",
            constants.LABEL_ENGINE: tenant.engine.value,
            constants.LABEL_TEMPLATE_VERSION: tenant.template_version,
            constants.LABEL_INDUSTRY: tenant.industry.value,
            constants.LABEL_ROLE: "tenant-database",
        }
        services = self.app.services
        spec = driver.container_spec(
            tenant.tenant_id, creds, labels, services.container_defaults(tenant.engine.value)
        )
        await self.app.runtime.ensure_network(self.app.settings.tenant_network)
        return await self.app.runtime.ensure_container(spec)

    async def _refresh_endpoint(
        self, tenant: Tenant, container: ContainerInfo, actions: list[ReconcileAction]
    ) -> None:
        """Docker restarted: the container runs again, possibly on another host port."""
        port = tenant.endpoint.port if tenant.endpoint is not None else None
        if container.host_port is None or (
            port == container.host_port and tenant.container_id == container.id
        ):
            return
        driver = get_engine(tenant.engine)
        endpoint = Endpoint(host=self.app.settings.bind_host, port=container.host_port,
                            database=driver.database_name(tenant.tenant_id))
        fresh = await self.app.control_plane.get_tenant(tenant.tenant_id)
        if fresh is None or fresh.status not in WANTS_CONTAINER:
            return
        await asyncio.shield(self.app.control_plane.update_tenant(
            tenant.tenant_id, TenantUpdate(
                endpoint=endpoint, container_id=container.id, container_name=container.name,
                event="reconcile_endpoint_updated",
                event_detail={"port": container.host_port, "container_id": container.id},
            )))
        self._act(actions, "endpoint_updated", tenant.tenant_id, container.name,
                  f"port {port} → {container.host_port}")

    # -------------------------------------------------------------- retention

    async def _retention_sweep(
        self, tenants: dict[str, Tenant], active: dict[str, Request | None],
        actions: list[ReconcileAction],
    ) -> None:
        for outcome in await self._retention.sweep(tenants, active, time.time()):
            blocked = outcome.action == "retention_blocked"
            self._act(actions, outcome.action, outcome.tenant_id,
                      volume_name(outcome.tenant_id), outcome.detail,
                      level="warning" if blocked else "info", once=blocked)

    # -------------------------------------------------------------- hardening

    async def _harden_sweep(
        self, tenants: dict[str, Tenant], active: dict[str, Request | None],
        actions: list[ReconcileAction],
    ) -> None:
        for outcome in await self._harden.sweep(tenants, active, time.time()):
            self._act(actions, "harden_queued", outcome.tenant_id, outcome.tenant_id,
                      outcome.detail)

    # ------------------------------------------------------------------ drift

    def _check_drift(
        self, tenant: Tenant, container: ContainerInfo, actions: list[ReconcileAction]
    ) -> None:
        try:
            expected_image = self.app.settings.image_for(tenant.engine.value)
        except KeyError:
            expected_image = None  # an engine without an image (sqlite) cannot drift
        found: list[str] = []
        if expected_image is not None and container.image != expected_image:
            found.append(f"image {container.image} (configured {expected_image})")
        version = container.labels.get(constants.LABEL_TEMPLATE_VERSION)
        # A container keeps the label it was created with; schema migrations move the
        # registry's version on, so the versions it was migrated from are no drift.
        if version != tenant.template_version and version not in tenant.previous_versions:
            found.append(f"template version {version} (registry {tenant.template_version})")
        for what in found:
            self._act(actions, "drift", tenant.tenant_id, container.name, what,
                      level="warning", once=True)

    # ---------------------------------------------------------------- helpers

    def _act(
        self, actions: list[ReconcileAction], action: str, tenant_id: str | None,
        subject: str, detail: str, *, level: str = "info", once: bool = False,
        logged: bool = False,
    ) -> None:
        """Record, log and count one action; ``once`` logs/counts a standing condition once.

        ``logged`` skips the log line when the caller already wrote it (the shared
        ready/degraded transitions log ``reconcile.degraded`` / ``reconcile.recovered``).
        """
        actions.append(ReconcileAction(action, tenant_id, subject, detail))
        key = (action, subject, detail)
        if once:
            self._seen_now.add(key)
            if key in self._reported:
                return
            self._reported.add(key)
        self.app.metrics.reconcile_actions.labels(action=action).inc()
        if logged:
            return
        getattr(log, level)(f"reconcile.{action}", tenant_id=tenant_id, subject=subject,
                            detail=detail)


def _in_container(tenant: Tenant) -> bool:
    """True when the tenant's engine runs in a container (an embedded file has none)."""
    try:
        return get_engine(tenant.engine).placement is Placement.CONTAINER
    except ClonerError:  # an engine without a driver on this build: leave it alone
        return False
