"""Quarantined orphans: list them, and the two admin decisions about one (remove, adopt).

A quarantined orphan is a container or volume labelled with this install that
no registry row wants and that the reconciler therefore leaves in place
(``cloner.daemon.reconciler.orphan_verdict``): no registry row, a request
label the registry does not know, or a volume of a failed or purged tenant.
Typical cause: the control plane was restored from an older copy, so tenants
created since are unknown to it; their data is still on their volumes.

- ``list`` reads Docker first, then the registry (a resource a worker is
  creating right now already has its request in the registry by then).
- ``remove NAME`` removes a container, or backs a volume up first
  (``backup_kept_volume``: a helper container dumps it), verifies that backup,
  and only then removes the volume; no backup, no removal. Decision recorded.
- ``adopt NAME`` (a tenant's volume or container) backs the volume up the same
  way and re-registers the tenant as ``deprovisioned`` with that backup as its
  final one, so ``cloner tenant restore TENANT`` brings its data back (new
  credentials). The volume stays, as the deprovisioned tenant's retained data.

Both decisions are written to ``orphan_decisions`` and the tenant's history
with who asked. A quarantined container that holds the volume is removed
first (its data is on the volume; the dump needs the volume to itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloner import constants
from cloner.app import App
from cloner.backups import verify_backup, write_manifest
from cloner.controlplane import OrphanDecision
from cloner.daemon.reconciler import Resource, orphan_verdict
from cloner.domain import (
    ADOPTABLE,
    Industry,
    Request,
    TenantSpec,
    container_name,
    parse_engine,
    validate_version,
    volume_name,
)
from cloner.errors import BackupError, ClonerError, InvalidInput, TenantExists
from cloner.logging import get_logger
from cloner.pipeline.deprovision import backup_kept_volume

log = get_logger(__name__)

REMOVED = "removed"
ADOPTED = "adopted"


class OrphanNotFound(InvalidInput):
    """No quarantined orphan of that name."""

    http_status = 404


class OrphanRefused(ClonerError):
    """The orphan cannot be removed or adopted safely; nothing was changed."""


@dataclass(frozen=True)
class Orphan:
    """One quarantined resource, as ``cloner orphans list`` shows it."""

    name: str
    kind: str
    tenant_id: str | None
    created_at: datetime | None
    reason: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The ``orphans list --json`` shape (DESIGN.md)."""
        return {
            "name": self.name, "kind": self.kind, "tenant_id": self.tenant_id,
            "created_at": (self.created_at.isoformat(timespec="seconds")
                           if self.created_at is not None else None),
            "reason": self.reason,
        }


class OrphanService:
    """What ``cloner orphans …`` does, on the app's runtime and control plane."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def list(self) -> list[Orphan]:
        """Every quarantined orphan now: containers first, then volumes, by name."""
        owned = await self.app.runtime.owned()
        resources = [Resource.of_container(c) for c in owned.containers]
        resources += [Resource.of_volume(v) for v in owned.volume_info]
        cp = self.app.control_plane
        tenants = {t.tenant_id: t for t in await cp.list_tenants()}
        active: dict[str, Request | None] = {}
        for named in sorted({r.tenant_id for r in resources if r.tenant_id}):
            active[named] = await cp.active_request(named)
        found = []
        for resource in resources:
            tid = resource.tenant_id
            verdict = orphan_verdict(resource, tenants.get(tid) if tid else None,
                                     active.get(tid) if tid else None,
                                     keep_failed=self.app.settings.keep_failed)
            if verdict is not None and verdict.quarantine:
                found.append(Orphan(resource.name, resource.kind, tid, resource.created_at,
                                    verdict.reason, resource.labels))
        return sorted(found, key=lambda o: (o.kind != "container", o.name))

    async def get(self, name: str) -> Orphan:
        """The quarantined orphan called ``name``; ``OrphanNotFound`` otherwise."""
        for orphan in await self.list():
            if orphan.name == name:
                return orphan
        raise OrphanNotFound(
            f"no quarantined orphan named {name!r}; `cloner orphans list` shows them"
        )

    # ----------------------------------------------------------------- remove

    async def remove(self, name: str, *, actor: str | None) -> dict[str, Any]:
        """Remove one orphan; a volume only after a verified backup of it (module doc)."""
        orphan = await self.get(name)
        if orphan.kind == "container":
            await self.app.runtime.remove_container(orphan.name)
            await self._record(orphan, REMOVED, actor, None)
            return self._outcome(orphan, REMOVED, None)
        tid = self._tenant_of(orphan)
        await self._free_volume(tid, actor)
        backup = await self._backup(orphan, tid, "orphan-remove", actor)
        # The registry may have moved on while the dump ran (a tenant created again):
        # the volume is removed only if it is still a quarantined orphan.
        await self.get(name)
        await self.app.runtime.remove_volume(orphan.name)
        await self._record(orphan, REMOVED, actor, backup)
        log.warning("orphans.removed", tenant_id=tid, name=name, backup=backup["path"],
                    actor=actor)
        return self._outcome(orphan, REMOVED, backup)

    # ------------------------------------------------------------------ adopt

    async def adopt(self, name: str, *, actor: str | None) -> dict[str, Any]:
        """Register the tenant of an orphan volume as deprovisioned, backed up from it."""
        named = await self.get(name)
        tid = self._tenant_of(named)
        volume = await self.get(volume_name(tid)) if named.kind == "container" else named
        existing = await self.app.control_plane.get_tenant(tid)
        if existing is not None and existing.status not in ADOPTABLE:
            raise TenantExists(
                f"tenant {tid!r} already exists ({existing.status.value}); only an unknown, "
                f"failed, deprovisioned or purged tenant can be adopted: delete the tenant "
                f"first (`cloner tenant delete {tid}`), or `cloner orphans remove {volume.name}`"
            )
        spec = await self._spec(volume, tid)
        await self._free_volume(tid, actor)
        backup = await self._backup(volume, tid, "orphan-adopt", actor)
        backup |= {"industry": spec.industry.value, "final": True,
                   "request": volume.labels.get(constants.LABEL_REQUEST) or backup.get("request"),
                   # Taken from this volume's data: purge and restore compare the two.
                   "data_request": volume.labels.get(constants.LABEL_REQUEST, "")}
        # The manifest is what `tenant restore` reads the spec from: it gets the industry
        # found above (the archive and its checksum are unchanged).
        await asyncio.to_thread(write_manifest, _path(backup), backup)
        decision = self._decision(volume, ADOPTED, actor, backup)
        tenant = await self.app.control_plane.adopt_tenant(
            spec, volume.labels.get(constants.LABEL_REQUEST), backup, decision)
        log.warning("orphans.adopted", tenant_id=tid, name=volume.name, backup=backup["path"],
                    actor=actor)
        return self._outcome(volume, ADOPTED, backup) | {"status": tenant.status.value}

    async def _spec(self, volume: Orphan, tid: str) -> TenantSpec:
        labels = volume.labels
        try:
            engine = parse_engine(labels.get(constants.LABEL_ENGINE, ""))
            version = validate_version(labels.get(constants.LABEL_TEMPLATE_VERSION, ""))
        except InvalidInput as exc:
            raise OrphanRefused(
                f"volume {volume.name} cannot be adopted: its labels do not say what it holds "
                f"({exc.message})"
            ) from None
        return TenantSpec(tid, engine, await self._industry(tid, labels), version)

    async def _industry(self, tid: str, labels: dict[str, str]) -> Industry:
        """The industry overlay: from the label, else the tenant's newest manifest, else none."""
        folder = self.app.settings.backups_dir / tid
        candidates = [labels.get(constants.LABEL_INDUSTRY),
                      *await asyncio.to_thread(_manifest_industries, folder)]
        known = {i.value for i in Industry}
        return next((Industry(v) for v in candidates if v in known), Industry.NONE)

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _tenant_of(orphan: Orphan) -> str:
        if orphan.tenant_id is None:
            raise OrphanRefused(f"{orphan.kind} {orphan.name} names no tenant; "
                                "inspect it with docker and remove it by hand")
        return orphan.tenant_id

    async def _free_volume(self, tid: str, actor: str | None) -> None:
        """Remove the tenant's container if it too is quarantined; refuse if it is wanted."""
        name = container_name(tid)
        if await self.app.runtime.inspect(name) is None:
            return
        try:
            container = await self.get(name)
        except OrphanNotFound:
            raise OrphanRefused(
                f"container {name} uses the volume and is not an orphan; nothing was changed"
            ) from None
        # Stopping it flushes the database to the volume; its data lives there, not here.
        await self.app.runtime.remove_container(name)
        await self._record(container, REMOVED, actor, None)

    async def _backup(
        self, orphan: Orphan, tid: str, reason: str, actor: str | None
    ) -> dict[str, Any]:
        try:
            record = await backup_kept_volume(
                self.app.services, tid, reason=reason,
                request_id=orphan.labels.get(constants.LABEL_REQUEST), actor=actor)
            await asyncio.to_thread(verify_backup, self.app.settings.backups_dir, tid,
                                    str(record["path"]))
        except (BackupError, InvalidInput) as exc:
            raise OrphanRefused(
                f"cannot back up volume {orphan.name} ({exc.message}); nothing was removed"
            ) from None
        return record

    async def _record(
        self, orphan: Orphan, decision: str, actor: str | None, backup: dict[str, Any] | None
    ) -> None:
        await self.app.control_plane.record_orphan_decision(
            self._decision(orphan, decision, actor, backup))

    @staticmethod
    def _decision(
        orphan: Orphan, decision: str, actor: str | None, backup: dict[str, Any] | None
    ) -> OrphanDecision:
        return OrphanDecision(
            name=orphan.name, kind=orphan.kind, tenant_id=orphan.tenant_id, decision=decision,
            actor=actor, reason=orphan.reason, backup=backup,
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )

    @staticmethod
    def _outcome(orphan: Orphan, decision: str, backup: dict[str, Any] | None) -> dict[str, Any]:
        return {"name": orphan.name, "kind": orphan.kind, "tenant_id": orphan.tenant_id,
                "decision": decision, "backup": backup["path"] if backup else None}


def _manifest_industries(folder: Path) -> list[Any]:
    """Industries named by the tenant's backup manifests, newest first (blocking)."""
    found = []
    if folder.is_dir():
        for manifest in sorted(folder.glob(f"*{constants.MANIFEST_SUFFIX}"), reverse=True):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(manifest.read_text())
                if isinstance(data, dict):
                    found.append(data.get("industry"))
    return found


def _path(backup: dict[str, Any]) -> Path:
    return Path(str(backup["path"]))


__all__ = ["Orphan", "OrphanNotFound", "OrphanRefused", "OrphanService"]
