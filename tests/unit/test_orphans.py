"""Unit tests of C1 without Docker: install identity, orphan decisions, control-plane copy."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cloner import constants
from cloner.app import App
from cloner.cli.orphans import backup_control_plane
from cloner.controlplane import SQLiteControlPlane
from cloner.domain import Status, container_name, volume_name
from cloner.errors import InvalidInput, TenantExists
from cloner.install import ORIGIN_FILE, ORIGIN_NEW, InstallMismatch, read_install_file
from cloner.orphans import OrphanNotFound, OrphanRefused, OrphanService
from cloner.settings import Settings
from cloner.tenants import TenantService
from cloner.testing import FakeEngine
from tests.unit.conftest import make_backup, unit_settings
from tests.unit.fleet import Fleet, open_fleet

# ------------------------------------------------------------ install identity


async def test_a_new_install_binds_its_control_plane_and_mirrors_the_id(tmp_path: Path) -> None:
    """First open: a new id stored in the control plane and in install.id; later opens agree."""
    settings = unit_settings(tmp_path)
    async with App.open(settings) as app:
        identity = await app.control_plane.install_identity()
        assert identity is not None and identity.origin == ORIGIN_NEW
        assert identity.install_id == app.install_id == read_install_file(settings.data_dir)
    async with App.open(settings) as again:
        assert again.install_id == app.install_id


async def test_an_upgraded_control_plane_takes_the_install_id_file(tmp_path: Path) -> None:
    """A pre-0005 control plane that holds tenants gets the id its resources carry."""
    settings = unit_settings(tmp_path)
    async with App.open(settings) as app:
        await TenantService(app).create("acme", "sqlite", "none")
        await app.control_plane.db.execute("DELETE FROM install_identity")  # type: ignore[attr-defined]
    (settings.data_dir / constants.INSTALL_ID_FILE).write_text("legacy-0001\n")

    async with App.open(settings) as app:
        identity = await app.control_plane.install_identity()
        assert app.install_id == "legacy-0001"
        assert identity is not None and identity.origin == ORIGIN_FILE


async def test_the_control_plane_wins_over_a_different_install_file(tmp_path: Path) -> None:
    """The file is a mirror: it is neither trusted nor rewritten when they differ."""
    settings = unit_settings(tmp_path)
    async with App.open(settings) as app:
        bound = app.install_id
    (settings.data_dir / constants.INSTALL_ID_FILE).write_text("someone-else\n")

    with capture_logs() as logs:
        async with App.open(settings) as app:
            assert app.install_id == bound
    assert read_install_file(settings.data_dir) == "someone-else"
    assert "install.file_differs" in [e["event"] for e in logs]


def _sqlite_tenant_dir(settings: Settings) -> None:
    folder = settings.data_dir / "sqlite" / "tenants" / "acme"
    folder.mkdir(parents=True)
    (folder / "acme.sqlite3").write_bytes(b"data")


async def test_a_missing_control_plane_next_to_tenant_data_is_not_created(tmp_path: Path) -> None:
    """sqlite tenant files and backups, no control plane: refused, one line, no file made."""
    settings = unit_settings(tmp_path)
    _sqlite_tenant_dir(settings)
    make_backup(settings.backups_dir, "globex")

    with pytest.raises(InstallMismatch) as refused:
        async with App.open(settings):
            pass

    message = refused.value.message
    assert "is missing" in message and "1 sqlite tenant directory" in message
    assert "backups of 1 tenant" in message and "cloner controlplane backup" in message
    assert "\n" not in str(refused.value) and refused.value.exit_code == 1
    assert not settings.control_plane_path.exists()
    assert read_install_file(settings.data_dir) is None


async def test_a_new_empty_control_plane_is_refused_unless_told_to_adopt(tmp_path: Path) -> None:
    """An existing but unbound, empty control plane next to backups: refused; adopt opts in."""
    settings = unit_settings(tmp_path)
    make_backup(settings.backups_dir, "globex")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    empty = SQLiteControlPlane(settings.control_plane_path)
    await empty.open()
    await empty.close()

    with pytest.raises(InstallMismatch, match="new and empty"):
        async with App.open(settings):
            pass
    adopting = settings.model_copy(update={"adopt_install": "adopted-0001"})
    with capture_logs() as logs:
        async with App.open(adopting) as app:
            assert app.install_id == "adopted-0001"
    assert "install.adopted" in [e["event"] for e in logs]


async def test_adopting_an_install_the_data_dir_does_not_name_is_refused(tmp_path: Path) -> None:
    """CLONER_ADOPT_INSTALL must name the install the data dir belongs to."""
    settings = unit_settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / constants.INSTALL_ID_FILE).write_text("mine-0001\n")

    with pytest.raises(InstallMismatch, match="belongs to install mine-0001"):
        async with App.open(settings.model_copy(update={"adopt_install": "theirs-0001"})):
            pass


# ------------------------------------------------------- control-plane backup


async def test_control_plane_backup_is_a_private_consistent_copy(tmp_path: Path) -> None:
    """The copy holds the tenants and the install identity, mode 0600, never overwritten."""
    settings = unit_settings(tmp_path)
    async with App.open(settings) as app:
        await TenantService(app).create("acme", "sqlite", "none")
        install_id = app.install_id

    taken = await backup_control_plane(settings, None)

    copy = Path(taken["path"])
    assert copy.parent == settings.data_dir / "control-plane-backups"
    assert copy.stat().st_mode & 0o777 == 0o600
    assert taken["tenants"] == 1 and taken["install_id"] == install_id
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT tenant_id FROM tenants").fetchall() == [("acme",)]
        assert db.execute("SELECT install_id FROM install_identity").fetchone() == (install_id,)
    with pytest.raises(InvalidInput, match="already exists"):
        await backup_control_plane(settings, copy)


# ------------------------------------------------------------------- orphans


@pytest.fixture
async def fleet(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Fleet]:
    """A fleet on fakes (the fake engine cannot dump a volume: backups of one fail)."""
    async with open_fleet(tmp_path, engine) as opened:
        yield opened


async def test_list_shows_quarantined_resources_in_the_design_shape(fleet: Fleet) -> None:
    """A stray container and volume: listed with tenant and reason; a READY tenant's are not."""
    await fleet.ready("acme")
    await fleet.stray("ghost")

    rows = [o.as_dict() for o in await OrphanService(fleet.app).list()]

    assert [(r["name"], r["kind"], r["tenant_id"], r["reason"]) for r in rows] == [
        (container_name("ghost"), "container", "ghost", "no registry row"),
        (volume_name("ghost"), "volume", "ghost", "no registry row"),
    ]
    assert all(list(r) == ["name", "kind", "tenant_id", "created_at", "reason"] for r in rows)


async def test_removing_a_container_is_recorded(fleet: Fleet) -> None:
    """A quarantined container goes (its data is on the volume); the decision is recorded."""
    await fleet.stray("ghost")

    outcome = await OrphanService(fleet.app).remove(container_name("ghost"), actor="cli:ops")

    assert outcome["decision"] == "removed" and outcome["backup"] is None
    assert container_name("ghost") not in fleet.runtime.containers
    assert volume_name("ghost") in fleet.runtime.volumes
    decisions = await fleet.cp.orphan_decisions()
    assert [(d.name, d.decision, d.actor) for d in decisions] == [
        (container_name("ghost"), "removed", "cli:ops")]
    assert [e["kind"] for e in await fleet.cp.events("ghost")] == ["orphan_removed"]


async def test_a_volume_that_cannot_be_backed_up_is_not_removed(fleet: Fleet) -> None:
    """No backup, no removal: the volume, and the container using it, stay; nothing recorded."""
    await fleet.stray("ghost")
    fleet.runtime.containers.pop(container_name("ghost"))

    with pytest.raises(OrphanRefused, match=r"cannot back up volume .*nothing was removed"):
        await OrphanService(fleet.app).remove(volume_name("ghost"), actor="cli:ops")

    assert volume_name("ghost") in fleet.runtime.volumes
    assert fleet.runtime.called("remove_volume") == []
    assert await fleet.cp.orphan_decisions() == []


async def test_only_quarantined_orphans_can_be_removed_or_adopted(fleet: Fleet) -> None:
    """A READY tenant's volume is no orphan (exit 2); adopting over a live tenant is refused."""
    tenant = await fleet.ready("acme")
    service = OrphanService(fleet.app)

    with pytest.raises(OrphanNotFound) as missing:
        await service.remove(volume_name("acme"), actor=None)
    assert missing.value.exit_code == 2
    # Another incarnation's volume under the READY tenant's name: quarantined, not adoptable.
    fleet.runtime.volumes[volume_name("acme")][constants.LABEL_REQUEST] = "r-elsewhere"
    with pytest.raises(TenantExists, match="already exists"):
        await service.adopt(volume_name("acme"), actor=None)
    assert (await fleet.tenant("acme")).status is Status.READY
    assert tenant.request_id != "r-elsewhere"
    assert fleet.runtime.called("remove_volume") == []


async def test_create_refuses_to_start_over_an_unknown_volume(fleet: Fleet) -> None:
    """Re-creating an id whose volume the registry does not know would wipe it: refused."""
    await fleet.stray("ghost")

    with pytest.raises(TenantExists, match="quarantined orphan"):
        await TenantService(fleet.app).create("ghost", "postgres", "none")

    assert await fleet.cp.get_tenant("ghost") is None
    assert volume_name("ghost") in fleet.runtime.volumes
