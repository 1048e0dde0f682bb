"""Real Docker: backups are real before anything is removed (issue 11, audit H3, H4, M1).

- a final backup is taken from the kept volume when the tenant container is gone
  (``ContainerHost.dump_volume``: a helper container on the volume, no network);
- a restore that fails never removes a volume it did not create;
- purge re-verifies the final backup's checksum and refuses a corrupted one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import aiomysql
import docker
import docker.errors
import pytest

from cloner import constants
from cloner.app import App
from cloner.backups import list_backups, verify_backup
from cloner.controlplane import TenantUpdate
from cloner.domain import RequestKind, Status, container_name, volume_name
from cloner.engines import TenantTarget
from cloner.engines.postgres import PostgresEngine
from cloner.errors import BackupError, InvalidTransition, RuntimeFault
from cloner.pipeline.deprovision import backup_kept_volume
from cloner.tenants import TenantService
from tests.integration.helpers import connect, run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ACTOR = "cli:integration"


async def provision(app: App, tenant_id: str, engine: str = "postgres") -> TenantTarget:
    """A ready technology tenant and its real connection target."""
    request = await TenantService(app).create(tenant_id, engine, "technology", actor=ACTOR)
    await run_workers(app, [request.id], workers=1)
    tenant = await TenantService(app).get(tenant_id)
    assert tenant.status is Status.READY, tenant.error
    return await target_of(app, tenant)


async def run(app: App, request_id: str) -> None:
    """A worker until one request has finished."""
    await run_workers(app, [request_id], workers=1)


async def add_marker(target: TenantTarget, email: str) -> None:
    """One customer row, written as the app role (what an application does)."""
    conn = await connect(target, "app")
    try:
        await conn.execute("INSERT INTO customers (email, name) VALUES ($1, 'marker')", email)
    finally:
        await conn.close()


async def has_marker(target: TenantTarget, email: str) -> bool:
    """True if the customer row is there, read as the app role."""
    conn = await connect(target, "app")
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM customers WHERE email = $1", email))
    finally:
        await conn.close()


def docker_rm_f(name: str) -> None:
    """What an operator's `docker rm -f NAME` does: SIGKILL, then remove."""
    client = docker.from_env(timeout=30)
    try:
        client.containers.get(name).remove(force=True)
    finally:
        client.close()


def containers_on(volume: str) -> list[str]:
    """Names of every container (any state) using ``volume``."""
    client = docker.from_env(timeout=30)
    try:
        return [c.name or "" for c in client.containers.list(all=True, filters={"volume": volume})]
    finally:
        client.close()


def volume_labels(name: str) -> dict[str, str] | None:
    """The labels of a volume as Docker reports them, None if it does not exist."""
    client = docker.from_env(timeout=30)
    try:
        return dict(client.volumes.get(name).attrs.get("Labels") or {})
    except docker.errors.NotFound:
        return None
    finally:
        client.close()


def forget_row(app: App, tenant_id: str) -> None:
    """The registry row is lost (an older control-plane copy): delete it behind cloner's back."""
    with contextlib.closing(sqlite3.connect(app.settings.data_dir / "control-plane.sqlite3")) as db:
        db.execute("DELETE FROM tenants WHERE tenant_id = ?", (tenant_id,))
        db.commit()


def flip_first_byte(path: Path) -> None:
    """Bit rot: same size, different content."""
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_delete_of_tenant_without_container_backs_up_the_latest_data(
    docker_app: App,
) -> None:
    """An on-demand backup, then a marker row, then `docker rm -f`: delete --purge takes the
    final backup from the volume, and restoring it brings back the marker row."""
    app = docker_app
    service = TenantService(app)
    target = await provision(app, "bks-gone")
    old_backup = await service.backup("bks-gone", actor=ACTOR)
    await run(app, old_backup.id)
    older = (await service.get("bks-gone")).backup
    assert older is not None and older["reason"] == "on-demand" and not older.get("final")

    await add_marker(target, "written-last@example.com")
    await asyncio.to_thread(docker_rm_f, container_name("bks-gone"))

    deleted = await service.delete("bks-gone", purge=True, actor=ACTOR)
    await run(app, deleted.id)
    tenant = await service.get("bks-gone")
    assert tenant.status is Status.PURGED, tenant.error
    final = tenant.backup
    assert final is not None
    assert final["final"] is True and final["request"] == deleted.id
    assert final["reason"] == "deprovision" and final["source"] == "volume"
    assert final["path"] != older["path"]
    await asyncio.to_thread(verify_backup, app.settings.backups_dir, "bks-gone", final["path"])
    # The helper container is gone again; nothing uses (or holds) the purged volume.
    assert await app.runtime.inspect(
        container_name("bks-gone") + constants.VOLUME_DUMP_SUFFIX) is None
    assert not await app.runtime.volume_exists(volume_name("bks-gone"))

    restore = await service.restore("bks-gone", actor=ACTOR)  # no --from: the final backup
    await run(app, restore.id)
    restored = await service.get("bks-gone")
    assert restored.status is Status.READY, restored.error
    assert await has_marker(await target_of(app, restored), "written-last@example.com")


async def test_volume_backup_from_labels_alone(docker_app: App) -> None:
    """With no registry row at all, the kept volume is dumped from its labels: the manifest
    names the engine and template version, the archive verifies like any other backup."""
    app = docker_app
    target = await provision(app, "bks-orphan")
    await add_marker(target, "orphan@example.com")
    tenant = await TenantService(app).get("bks-orphan")
    await app.runtime.remove_container(container_name("bks-orphan"))
    await asyncio.to_thread(forget_row, app, "bks-orphan")  # the row is lost, not the volume
    assert await app.control_plane.get_tenant("bks-orphan") is None

    record = await backup_kept_volume(app.services, "bks-orphan", reason="orphan", actor=ACTOR)
    assert record["engine"] == "postgres"
    assert record["template_version"] == tenant.template_version
    assert record["source"] == "volume" and record["final"] is False
    listed = await asyncio.to_thread(list_backups, app.settings.backups_dir, "bks-orphan")
    assert [b.verified for b in listed] == [True]
    assert listed[0].manifest["restorable_entries"] > 0
    assert containers_on(volume_name("bks-orphan")) == []


async def test_volume_backup_refuses_while_a_container_uses_the_volume(docker_app: App) -> None:
    """Two servers on one data directory would corrupt it: the helper is never started."""
    app = docker_app
    await provision(app, "bks-busy")
    with pytest.raises(BackupError, match="in use by cloner-bks-busy"):
        await backup_kept_volume(app.services, "bks-busy", reason="test")
    assert containers_on(volume_name("bks-busy")) == ["cloner-bks-busy"]
    assert await asyncio.to_thread(list_backups, app.settings.backups_dir, "bks-busy") == []


async def test_failed_restore_keeps_the_retained_volume(docker_app: App) -> None:
    """Delete (volume kept), restore queued, the backup rots before the worker loads it:
    the restore fails at `resolve` and the deprovisioned tenant's volume is still there."""
    app = docker_app
    service = TenantService(app)
    target = await provision(app, "bks-keep")
    await add_marker(target, "kept@example.com")
    deleted = await service.delete("bks-keep", purge=False, actor=ACTOR)
    await run(app, deleted.id)
    tenant = await service.get("bks-keep")
    assert tenant.status is Status.DEPROVISIONED and tenant.backup is not None
    labels = await asyncio.to_thread(volume_labels, volume_name("bks-keep"))
    assert labels is not None

    restore = await service.restore("bks-keep", actor=ACTOR)
    await asyncio.to_thread(flip_first_byte, Path(tenant.backup["path"]))
    await run(app, restore.id)

    failed = await app.control_plane.get_request(restore.id)
    assert failed is not None and failed.status.value == "failed"
    assert (await service.get("bks-keep")).error["step"] == "resolve"  # type: ignore[index]
    # The same volume, untouched (a re-created one would carry the restore's request id).
    assert await asyncio.to_thread(volume_labels, volume_name("bks-keep")) == labels
    # A second restore from the rotted backup is refused up front, volume still kept.
    with pytest.raises(Exception, match="failed verification"):
        await service.restore("bks-keep", actor=ACTOR)
    assert await app.runtime.volume_exists(volume_name("bks-keep"))


async def test_purge_with_corrupted_final_backup_is_refused(docker_app: App) -> None:
    """A final backup with one flipped byte (same size): purge is refused, volume kept."""
    app = docker_app
    service = TenantService(app)
    await provision(app, "bks-rot")
    deleted = await service.delete("bks-rot", purge=False, actor=ACTOR)
    await run(app, deleted.id)
    tenant = await service.get("bks-rot")
    assert tenant.backup is not None and tenant.backup["final"] is True
    await asyncio.to_thread(flip_first_byte, Path(tenant.backup["path"]))

    # Refused when asked (CLI exit 2 / HTTP 409) ...
    with pytest.raises(InvalidTransition, match="final backup does not verify"):
        await service.delete("bks-rot", purge=True, actor=ACTOR)
    assert await app.runtime.volume_exists(volume_name("bks-rot"))
    # ... and by the worker itself, which reads it back right before removing the volume
    # (a purge enqueued while the backup was still good, e.g. by retention).
    request = await app.control_plane.enqueue(
        None, RequestKind.DEPROVISION, "bks-rot", {"purge": True, "actor": ACTOR})
    await run(app, request.id)
    done = await app.control_plane.get_request(request.id)
    assert done is not None and done.status.value == "failed"
    assert "refusing to purge bks-rot" in (done.last_error or "")
    assert await app.runtime.volume_exists(volume_name("bks-rot"))
    assert (await service.get("bks-rot")).status is not Status.PURGED


async def test_mysql_delete_of_tenant_without_container_backs_up_the_latest_data(
    docker_app: App,
) -> None:
    """The same volume dump for MariaDB: the marker row survives `docker rm -f` + purge."""
    app = docker_app
    service = TenantService(app)
    target = await provision(app, "bks-my", "mysql")
    await _mysql_insert(target, "mysql-last@example.com")
    await asyncio.to_thread(docker_rm_f, container_name("bks-my"))

    deleted = await service.delete("bks-my", purge=True, actor=ACTOR)
    await run(app, deleted.id)
    tenant = await service.get("bks-my")
    assert tenant.status is Status.PURGED, tenant.error
    assert tenant.backup is not None and tenant.backup["final"] is True

    restore = await service.restore("bks-my", actor=ACTOR)
    await run(app, restore.id)
    restored = await service.get("bks-my")
    assert restored.status is Status.READY, restored.error
    assert await _mysql_count(await target_of(app, restored), "mysql-last@example.com") == 1


async def _mysql_insert(target: TenantTarget, email: str) -> None:
    cred = target.credentials.roles["app"]
    conn = await aiomysql.connect(host=target.endpoint.host, port=target.endpoint.port,
                                  user=cred.username, password=cred.password,
                                  db=target.database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("INSERT INTO customers (email, name) VALUES (%s, 'marker')",
                              (email,))
    finally:
        conn.close()


async def _mysql_count(target: TenantTarget, email: str) -> int:
    cred = target.credentials.roles["app"]
    conn = await aiomysql.connect(host=target.endpoint.host, port=target.endpoint.port,
                                  user=cred.username, password=cred.password,
                                  db=target.database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM customers WHERE email = %s", (email,))
            row = await cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


async def test_volume_backup_of_a_volume_without_a_server_fails_and_cleans_up(
    docker_app: App,
) -> None:
    """An empty (never initialised) volume: the helper's server refuses to start without a
    password; the dump fails with the container's own words and the helper is removed."""
    app = docker_app
    name = volume_name("bks-empty")
    labels = {constants.LABEL_MANAGED: "true", constants.LABEL_INSTALL: app.install_id,
              constants.LABEL_TENANT: "bks-empty", constants.LABEL_ENGINE: "postgres"}
    await asyncio.to_thread(create_volume, name, labels)
    with pytest.raises(BackupError, match="no superuser password"):
        await backup_kept_volume(app.services, "bks-empty", reason="test")
    assert containers_on(name) == []
    assert await asyncio.to_thread(list_backups, app.settings.backups_dir, "bks-empty") == []


def inspect_host_config(name: str) -> dict[str, Any]:
    """``docker inspect``'s HostConfig of a container."""
    client = docker.from_env(timeout=30)
    try:
        config: dict[str, Any] = client.api.inspect_container(name)["HostConfig"]
        return config
    finally:
        client.close()


def create_volume(name: str, labels: dict[str, str]) -> None:
    """A volume carrying this install's labels, as if cloner had created it."""
    client = docker.from_env(timeout=30)
    try:
        client.volumes.create(name, labels=labels)
    finally:
        client.close()


async def test_no_tenant_container_starts_on_a_volume_being_dumped(docker_app: App) -> None:
    """While a dump helper runs on a kept volume, the runtime refuses to put the tenant's own
    container (e.g. a reconciler repair) on the same data directory."""
    app = docker_app
    service = TenantService(app)
    await provision(app, "bks-race")
    deleted = await service.delete("bks-race", purge=False, actor=ACTOR)
    await run(app, deleted.id)
    tenant = await service.get("bks-race")
    creds = await app.services.credentials("bks-race")
    assert creds is not None
    driver = PostgresEngine()
    defaults = app.services.container_defaults("postgres")
    helper = driver.volume_dump_spec(
        "bks-race", "cloner-bks-race" + constants.VOLUME_DUMP_SUFFIX,
        {constants.LABEL_ROLE: constants.ROLE_VOLUME_DUMP}, defaults)
    await app.runtime.start_volume_helper(helper)
    try:
        labels = {constants.LABEL_TENANT: "bks-race",
                  constants.LABEL_REQUEST: tenant.request_id or ""}
        with pytest.raises(RuntimeFault, match="is being backed up"):
            await app.runtime.ensure_container(
                driver.container_spec("bks-race", creds, labels, defaults))
        assert containers_on(volume_name("bks-race")) == [helper.name]
        host_config = await asyncio.to_thread(inspect_host_config, helper.name)
        assert host_config["NetworkMode"] == "none" and not host_config.get("PortBindings")
        assert host_config["ReadonlyRootfs"] is True and host_config["CapDrop"] == ["ALL"]
        assert host_config["SecurityOpt"] == ["no-new-privileges"]
        assert host_config["Memory"] == app.settings.tenant_memory_limit_bytes
        assert host_config["RestartPolicy"]["Name"] in ("no", "")
    finally:
        await app.runtime.remove_container(helper.name)
    assert containers_on(volume_name("bks-race")) == []


async def test_restore_guard_never_takes_an_older_backup_for_the_final_one(
    docker_app: App,
) -> None:
    """A deprovisioned tenant whose recorded backup is an older on-demand one (what 891e6ad
    left after deleting a tenant without container): restore is refused while the volume
    holds newer data; `tenant delete` takes the final backup from the volume; the restore
    then brings back the newest row."""
    app = docker_app
    service = TenantService(app)
    target = await provision(app, "bks-guard")
    on_demand = await service.backup("bks-guard", actor=ACTOR)
    await run(app, on_demand.id)
    older = (await service.get("bks-guard")).backup
    assert older is not None
    await add_marker(target, "newer@example.com")
    deleted = await service.delete("bks-guard", purge=False, actor=ACTOR)
    await run(app, deleted.id)
    await app.control_plane.update_tenant("bks-guard", TenantUpdate(backup=older))

    with pytest.raises(InvalidTransition, match="not the final one"):
        await service.restore("bks-guard", actor=ACTOR)
    again = await service.delete("bks-guard", purge=False, actor=ACTOR)
    await run(app, again.id)
    final = (await service.get("bks-guard")).backup
    assert final is not None and final["final"] is True and final["source"] == "volume"

    restore = await service.restore("bks-guard", actor=ACTOR)
    await run(app, restore.id)
    restored = await service.get("bks-guard")
    assert restored.status is Status.READY, restored.error
    assert await has_marker(await target_of(app, restored), "newer@example.com")
