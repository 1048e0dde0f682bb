"""Real Docker, real PostgreSQL: resources cloner does not recognise are never destroyed (C1).

- a control plane restored from an older copy (``cloner controlplane backup``)
  does not know the tenant created after it: the reconciler quarantines that
  tenant's container and volume instead of removing them, ``cloner orphans
  list`` shows them, and ``cloner orphans adopt`` + ``cloner tenant restore``
  bring the tenant's data back;
- a missing control plane next to an install's resources refuses to start (and
  is not created); a new, empty one refuses too unless told to adopt the
  install, and even then the reconciler removes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from cloner.app import App
from cloner.cli.orphans import backup_control_plane
from cloner.controlplane import SQLiteControlPlane
from cloner.daemon.reconciler import Reconciler
from cloner.domain import Status, container_name, volume_name
from cloner.engines import TenantTarget
from cloner.install import InstallMismatch
from cloner.orphans import OrphanService
from cloner.runtime.docker import DockerRuntime
from cloner.settings import Settings
from cloner.tenants import TenantService
from tests.conftest import make_settings, require_docker
from tests.integration.helpers import connect, provision_ready, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CLONER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cloner"
KEEP, NEWER = "orph-keep", "orph-newer"


@pytest.fixture
async def settings(tmp_path: Path) -> AsyncIterator[Settings]:
    """A data dir of its own; every resource of the install it ends up with is removed after."""
    require_docker()
    configured = make_settings(tmp_path / "data")
    try:
        yield configured
    finally:
        install = (configured.data_dir / "install.id")
        if install.is_file():
            runtime = DockerRuntime(install.read_text().strip())
            try:
                owned = await runtime.owned()
                for container in owned.containers:
                    await runtime.remove_container(container.name)
                for volume in owned.volume_info:
                    await runtime.remove_volume(volume.name)
            finally:
                await runtime.close()


def eager(app: App) -> App:
    """The same app with no orphan grace: whatever a pass would ever do, it does now."""
    return dataclasses.replace(
        app, settings=app.settings.model_copy(update={"orphan_grace_s": 0.0}))


async def write_marker(target: TenantTarget, value: str) -> None:
    """A row written as the app role, as an application would."""
    conn = await connect(target, "app")
    try:
        await conn.execute(
            "INSERT INTO customers (email, name) VALUES ($1, 'marker')", value)
    finally:
        await conn.close()


async def read_marker(target: TenantTarget, value: str) -> bool:
    """True if the marker row is in the tenant database."""
    conn = await connect(target, "app")
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM customers WHERE email = $1", value))
    finally:
        await conn.close()


def docker_names() -> tuple[set[str], set[str]]:
    """Every container and volume name on the engine (any install)."""
    client = docker.from_env(timeout=30)
    try:
        return ({c.name for c in client.containers.list(all=True)},
                {v.name for v in client.volumes.list()})
    finally:
        client.close()


async def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``cloner`` command against this data dir (in a thread)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    environ |= {"CLONER_DATA_DIR": str(settings.data_dir), "CLONER_LOG_LEVEL": "warning",
                "CLONER_POSTGRES_IMAGE": settings.postgres_image, **env}
    return await asyncio.to_thread(
        subprocess.run, [str(CLONER), *args], capture_output=True, text=True, env=environ,
        timeout=300, check=False)


def replace_control_plane(settings: Settings, copy: Path) -> None:
    """What an operator does to restore a copy: daemon stopped, WAL gone, file replaced."""
    path = settings.control_plane_path
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(copy.read_bytes())


async def test_older_control_plane_quarantines_the_newer_tenant_and_adopt_restores_it(
    settings: Settings, tmp_path: Path,
) -> None:
    """Restore an older copy: nothing removed, the newer tenant listed, adopted, data back."""
    async with App.open(settings) as app:
        await provision_ready(app, "postgres", KEEP)
        copy = tmp_path / "copies"
        copy.mkdir()
        taken = await backup_control_plane(settings, copy)
        assert taken["tenants"] == 1 and taken["install_id"] == app.install_id
        assert oct(Path(taken["path"]).stat().st_mode & 0o777) == "0o600"
        await provision_ready(app, "postgres", NEWER)
        newer = await target_of(app, await TenantService(app).get(NEWER))
        await write_marker(newer, "written-after-the-copy@example.com")
        install_id = app.install_id

    replace_control_plane(settings, Path(taken["path"]))

    async with App.open(settings) as app:
        assert app.install_id == install_id  # the identity came back with the copy
        assert await app.control_plane.get_tenant(NEWER) is None
        report = await Reconciler(eager(app)).reconcile_once()

        assert report.of("orphan_removed") == (), report
        assert sorted(a.subject for a in report.of("quarantined")) == [
            container_name(NEWER), volume_name(NEWER)]
        assert app.metrics.registry.get_sample_value("cloner_orphans", {"kind": "volume"}) == 1
        containers, volumes = docker_names()
        assert container_name(NEWER) in containers and volume_name(NEWER) in volumes
        assert (await app.control_plane.get_tenant(KEEP)).status is Status.READY  # type: ignore[union-attr]

    listed = await cli(settings, "orphans", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted((r["name"], r["kind"], r["tenant_id"], r["reason"]) for r in rows) == [
        (container_name(NEWER), "container", NEWER, "no registry row"),
        (volume_name(NEWER), "volume", NEWER, "no registry row"),
    ]
    assert all(set(r) == {"name", "kind", "tenant_id", "created_at", "reason"} and r["created_at"]
               for r in rows)

    unknown = await cli(settings, "orphans", "remove", volume_name(KEEP))
    assert unknown.returncode == 2 and "no quarantined orphan" in unknown.stderr, unknown.stderr

    adopted = await cli(settings, "orphans", "adopt", volume_name(NEWER), "--json")
    assert adopted.returncode == 0, adopted.stderr
    outcome = json.loads(adopted.stdout)
    assert outcome["status"] == "deprovisioned" and outcome["tenant_id"] == NEWER
    assert outcome["backup"] and Path(outcome["backup"]).is_file()

    restored = await cli(settings, "tenant", "restore", NEWER, "--wait", "--json")
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert json.loads(restored.stdout)["status"] == "ready"
    async with App.open(settings) as app:
        tenant = await TenantService(app).get(NEWER)
        assert await read_marker(await target_of(app, tenant), "written-after-the-copy@example.com")
        decisions = await app.control_plane.orphan_decisions()
        assert [(d.name, d.decision) for d in decisions] == [
            (container_name(NEWER), "removed"), (volume_name(NEWER), "adopted")]
        assert "orphan_adopted" in [e["kind"] for e in await app.control_plane.events(NEWER)]
        assert await orphan_names(app) == []


async def orphan_names(app: App) -> list[str]:
    """``cloner orphans list``, in-process: the names only."""
    return [o.name for o in await OrphanService(app).list()]


async def test_missing_or_empty_control_plane_never_touches_the_install(
    settings: Settings, tmp_path: Path,
) -> None:
    """Missing: refused, file not created; new and empty: refused, or adopted: nothing lost."""
    async with App.open(settings) as app:
        await provision_ready(app, "postgres", KEEP)
        target = await target_of(app, await TenantService(app).get(KEEP))
        await write_marker(target, "still-here@example.com")
        install_id = app.install_id
    path = settings.control_plane_path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    # 1. The file is gone: the daemon and CLI refuse with one line, and create nothing.
    with pytest.raises(InstallMismatch) as refused:
        async with App.open(settings):
            pass
    message = refused.value.message
    assert f"1 container and 1 volume of install {install_id}" in message, message
    assert "cloner controlplane backup" in message and "CLONER_ADOPT_INSTALL" in message
    assert not path.exists()
    listed = await cli(settings, "tenant", "list")
    assert listed.returncode == 1 and len(listed.stderr.strip().splitlines()) == 1, listed.stderr
    assert "missing" in listed.stderr and not path.exists()
    served = await cli(settings, "serve", CLONER_HTTP_LISTEN="127.0.0.1:0")
    assert served.returncode == 1, served.stderr
    assert "refusing to start" in served.stderr.strip().splitlines()[-1] and not path.exists()

    # 2. A new, empty control plane (say CLONER_CONTROL_PLANE_URL points at a fresh file).
    empty = tmp_path / "elsewhere" / "control-plane.sqlite3"
    fresh = SQLiteControlPlane(empty)
    await fresh.open()
    await fresh.close()
    elsewhere = settings.model_copy(update={"control_plane_url": f"sqlite:///{empty}"})
    with pytest.raises(InstallMismatch, match="new and empty"):
        async with App.open(elsewhere):
            pass

    # 3. Told to adopt the install: it starts, sees the tenant as an orphan, removes nothing.
    adopting = elsewhere.model_copy(update={"adopt_install": install_id})
    async with App.open(adopting) as app:
        assert app.install_id == install_id
        report = await Reconciler(eager(app)).reconcile_once()
        again = await Reconciler(eager(app)).reconcile_once()
        assert report.of("orphan_removed") == () and again.of("orphan_removed") == ()
        assert sorted(a.subject for a in report.of("quarantined")) == [
            container_name(KEEP), volume_name(KEEP)]
        assert await orphan_names(app) == [container_name(KEEP), volume_name(KEEP)]

    # 4. Nothing was lost: the original control plane is put back and the tenant answers.
    containers, volumes = docker_names()
    assert container_name(KEEP) in containers and volume_name(KEEP) in volumes
    assert await read_marker(target, "still-here@example.com")


async def test_control_plane_of_another_install_sees_none_of_this_one(
    settings: Settings, tmp_path: Path,
) -> None:
    """A typo'd URL that names another install's control plane: this install is invisible."""
    async with App.open(settings) as app:
        await provision_ready(app, "postgres", KEEP)
    other: dict[str, Any] = {"data_dir": tmp_path / "other"}
    async with App.open(make_settings(**other)) as foreign:
        foreign_path = foreign.settings.control_plane_path
        foreign_id = foreign.install_id
    typo = settings.model_copy(update={"control_plane_url": f"sqlite:///{foreign_path}"})

    async with App.open(typo) as app:
        assert app.install_id == foreign_id
        report = await Reconciler(eager(app)).reconcile_once()

    assert report.actions == ()
    containers, volumes = docker_names()
    assert container_name(KEEP) in containers and volume_name(KEEP) in volumes
