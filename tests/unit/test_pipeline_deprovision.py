"""Unit tests of deprovisioning through the worker, on in-memory fakes.

Backup first, then the container goes; the volume stays unless purged, and a
purge is refused without a verified backup on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from cloner.daemon.worker import Worker
from cloner.domain import (
    Request,
    RequestKind,
    RequestStatus,
    Status,
    Tenant,
    container_name,
    volume_name,
)
from cloner.errors import InvalidTransition, RuntimeFault
from cloner.tenants import TenantService
from cloner.testing import DUMP_MAGIC
from tests.unit.conftest import Env

REPO = Path(__file__).resolve().parents[2]


async def _ready_tenant(env: Env, tenant_id: str = "acme") -> Tenant:
    await env.create(tenant_id)
    request = await env.work_once()
    assert request.status is RequestStatus.DONE
    return await env.tenant(tenant_id)


async def _delete(env: Env, tenant_id: str = "acme", *, purge: bool = False) -> Request:
    await TenantService(env.app).delete(tenant_id, purge=purge)
    return await env.work_once()


async def test_delete_takes_verified_backup_removes_container_and_keeps_volume(env: Env) -> None:
    """Deprovision: a PGDMP dump with matching sha256, container gone, volume kept."""
    await _ready_tenant(env)
    calls_before = len(env.engine.calls)
    request = await _delete(env)

    assert request.status is RequestStatus.DONE
    tenant = await env.tenant()
    assert tenant.status is Status.DEPROVISIONED
    assert container_name("acme") not in env.runtime.containers
    assert volume_name("acme") in env.runtime.volumes
    backup = tenant.backup
    assert backup is not None
    assert backup["request"] == request.id
    assert backup["reason"] == "deprovision"
    path = Path(backup["path"])
    assert path.parent == env.app.settings.backups_dir / "acme"
    data = path.read_bytes()
    assert data.startswith(DUMP_MAGIC)
    assert backup["size_bytes"] == len(data)
    assert backup["sha256"] == hashlib.sha256(data).hexdigest()
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["sha256"] == backup["sha256"]
    assert path.with_suffix(".dump.sha256").read_text().split()[0] == backup["sha256"]
    assert env.engine.hooks()[calls_before:] == ["wait_ready", "backup"]
    assert env.metric("cloner_deprovisions_total", outcome="success") == 1
    assert env.metric("cloner_backups_total", engine="postgres", outcome="success") == 1


async def test_purge_after_delete_removes_volume_without_a_new_backup(env: Env) -> None:
    """Purging a deprovisioned tenant reuses the final backup and removes the volume."""
    await _ready_tenant(env)
    await _delete(env)
    backup = (await env.tenant()).backup
    request = await _delete(env, purge=True)

    assert request.status is RequestStatus.DONE
    tenant = await env.tenant()
    assert tenant.status is Status.PURGED
    assert volume_name("acme") not in env.runtime.volumes
    assert tenant.backup == backup
    assert env.engine.hooks().count("backup") == 1
    assert Path(tenant.backup["path"]).is_file()  # type: ignore[index]


async def test_purge_is_refused_when_the_recorded_backup_is_gone(env: Env) -> None:
    """Without the backup file on disk, purge is refused when asked and by the worker
    (a purge enqueued before the file went); the volume is kept."""
    await _ready_tenant(env)
    await _delete(env)
    backup = (await env.tenant()).backup
    assert backup is not None
    Path(backup["path"]).unlink()
    with pytest.raises(InvalidTransition, match="refusing to purge 'acme'"):
        await TenantService(env.app).delete("acme", purge=True)
    await env.app.control_plane.enqueue(None, RequestKind.DEPROVISION, "acme", {"purge": True})
    request = await env.work_once()

    assert request.status is RequestStatus.FAILED
    assert request.attempts == 1
    assert "refusing to purge" in (request.last_error or "")
    assert volume_name("acme") in env.runtime.volumes
    assert env.runtime.called("remove_volume") == []
    tenant = await env.tenant()
    assert tenant.status is Status.DEPROVISIONING
    assert tenant.error is not None
    assert tenant.error["step"] == "purge"
    assert tenant.error["class"] == "BackupError"
    assert env.metric("cloner_deprovisions_total", outcome="failure") == 1


async def test_delete_with_purge_from_ready_backs_up_then_removes_everything(env: Env) -> None:
    """One purge request on a READY tenant: backup, container and volume removed, PURGED."""
    await _ready_tenant(env)
    request = await _delete(env, purge=True)

    assert request.status is RequestStatus.DONE
    tenant = await env.tenant()
    assert tenant.status is Status.PURGED
    assert tenant.backup is not None
    assert Path(tenant.backup["path"]).read_bytes().startswith(DUMP_MAGIC)
    assert env.runtime.containers == {}
    assert env.runtime.volumes == {}
    removed = [name for name, _ in env.runtime.calls
               if name in ("exec_to_file", "remove_container", "remove_volume")]
    assert removed == ["exec_to_file", "remove_container", "remove_volume"]


async def test_failed_backup_keeps_container_and_volume(env: Env) -> None:
    """If pg_dump fails nothing is removed: data never goes before a verified backup."""
    await _ready_tenant(env)
    env.runtime.fail["exec_to_file"] = RuntimeFault("pg_dump exited with 1: disk full")
    request = await _delete(env, purge=True)

    assert request.status is RequestStatus.FAILED
    tenant = await env.tenant()
    assert tenant.status is Status.DEPROVISIONING
    assert tenant.error is not None
    assert tenant.error["step"] == "backup"
    assert "disk full" in tenant.error["reason"]
    assert container_name("acme") in env.runtime.containers
    assert volume_name("acme") in env.runtime.volumes
    assert list((env.app.settings.backups_dir / "acme").glob("*")) == []  # no partial left
    assert env.metric("cloner_backups_total", engine="postgres", outcome="failure") == 1


async def test_delete_starts_a_stopped_container_for_the_backup(env: Env) -> None:
    """A stopped tenant container is started so its final backup can be taken."""
    await _ready_tenant(env)
    env.runtime.set_status(container_name("acme"), "exited")
    request = await _delete(env)

    assert request.status is RequestStatus.DONE
    assert env.runtime.called("start") == [container_name("acme")]
    assert (await env.tenant()).backup is not None


async def test_delete_of_failed_tenant_without_data_needs_no_backup(env: Env) -> None:
    """A FAILED tenant whose resources were compensated is deprovisioned without a backup."""
    env.engine.fail["apply_rbac"] = RuntimeError("boom")
    await env.create()
    await env.work_once()
    assert (await env.tenant()).status is Status.FAILED
    request = await _delete(env, purge=True)

    assert request.status is RequestStatus.DONE
    tenant = await env.tenant()
    assert tenant.status is Status.PURGED
    assert tenant.backup is None
    assert "backup" not in env.engine.hooks()


async def test_concurrent_backups_of_two_tenants_do_not_mix(env: Env) -> None:
    """Each tenant's dump lands in its own folder with its own checksum."""
    await _ready_tenant(env, "alpha")
    await _ready_tenant(env, "beta")
    svc = TenantService(env.app)
    await svc.delete("alpha", purge=False)
    await svc.delete("beta", purge=False)
    first, second = await env.claim(), await env.claim()
    await asyncio.gather(Worker(env.app, "w1").process(first),
                         Worker(env.app, "w2").process(second))

    alpha, beta = await env.tenant("alpha"), await env.tenant("beta")
    assert alpha.backup is not None and beta.backup is not None
    assert Path(alpha.backup["path"]).parent.name == "alpha"
    assert Path(beta.backup["path"]).parent.name == "beta"
    assert alpha.backup["sha256"] != beta.backup["sha256"]
    assert {alpha.status, beta.status} == {Status.DEPROVISIONED}


async def test_transient_fault_during_delete_is_retried_and_then_completes(env: Env) -> None:
    """A RuntimeFault while deprovisioning requeues the request; the retry finishes the job."""
    await _ready_tenant(env)
    env.runtime.fail_next["volume_exists"] = [RuntimeFault("docker timed out")]
    first = await _delete(env)

    assert first.status is RequestStatus.QUEUED
    tenant = await env.tenant()
    assert tenant.status is Status.DEPROVISIONING
    assert tenant.error is not None
    assert tenant.error["transient"] is True
    assert container_name("acme") in env.runtime.containers

    second = await env.work_once()
    assert second.id == first.id
    assert second.status is RequestStatus.DONE
    assert second.attempts == 2
    tenant = await env.tenant()
    assert tenant.status is Status.DEPROVISIONED
    assert tenant.backup is not None
    assert container_name("acme") not in env.runtime.containers
    assert volume_name("acme") in env.runtime.volumes
