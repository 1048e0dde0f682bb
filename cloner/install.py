"""Which install a control plane owns, and refusing to start on one that lost its data.

Every container and volume cloner creates is labelled ``cloner.install=<id>``;
the reconciler and ``cloner orphans`` only ever look at resources carrying the
id of the control plane they opened. That id lives **inside** the control
plane (table ``install_identity``, migration 0005), so a control plane judges
only the resources of its own install: a new, empty or foreign control plane
owns none of the existing ones and cannot touch them.

The data dir's ``install.id`` file is a mirror, written once when absent. It
is read for two things only:

- upgrading a control plane from before 0005 that already holds tenants: its
  resources carry the file's id, so the control plane takes that id
  (origin ``install.id file``);
- a control plane that is missing, or new and empty: the file names the
  install whose resources may still be on this host. If Docker holds
  containers or volumes of that install, or the data dir holds sqlite tenant
  directories or backups, cloner refuses to start (``InstallMismatch``) rather
  than create an empty registry next to live data. The operator restores a
  copy made by ``cloner controlplane backup``, or sets
  ``CLONER_ADOPT_INSTALL=<id>`` so the new control plane takes over that
  install (origin ``adopted``); its tenants then show up as quarantined
  orphans for ``cloner orphans adopt``.

When the control plane and the file disagree, the control plane wins and the
file is left as it is (a warning is logged): the file must not be rewritten to
point away from resources that may still exist.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

from cloner import constants
from cloner.controlplane import ControlPlane
from cloner.domain import Engine
from cloner.errors import ClonerError, ControlPlaneError
from cloner.logging import get_logger
from cloner.runtime.docker import DockerRuntime
from cloner.secrets import write_private_file
from cloner.settings import Settings

log = get_logger(__name__)

ORIGIN_NEW = "new"
ORIGIN_FILE = "install.id file"
ORIGIN_ADOPTED = "adopted"


class InstallMismatch(ControlPlaneError):
    """The control plane does not own the data this data dir holds."""


@dataclass(frozen=True)
class DataFound:
    """What of an install a data dir (and Docker) still holds."""

    containers: int = 0
    volumes: int = 0
    sqlite_tenants: int = 0
    backed_up_tenants: int = 0

    def __bool__(self) -> bool:
        return any((self.containers, self.volumes, self.sqlite_tenants,
                    self.backed_up_tenants))

    def describe(self, install_id: str | None) -> str:
        """``2 containers and 2 volumes of install X, backups of 1 tenant``."""
        parts = []
        docker = [f"{n} {what}{'s' if n != 1 else ''}"
                  for n, what in ((self.containers, "container"), (self.volumes, "volume")) if n]
        if docker:
            parts.append(f"{' and '.join(docker)} of install {install_id}")
        if self.sqlite_tenants:
            parts.append(f"{self.sqlite_tenants} sqlite tenant "
                         f"director{'ies' if self.sqlite_tenants != 1 else 'y'}")
        if self.backed_up_tenants:
            parts.append(f"backups of {self.backed_up_tenants} "
                         f"tenant{'s' if self.backed_up_tenants != 1 else ''}")
        return ", ".join(parts)


def read_install_file(data_dir: Path) -> str | None:
    """The id in the data dir's ``install.id``, or None when there is none."""
    path = data_dir / constants.INSTALL_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


async def find_data(settings: Settings, install_id: str | None) -> DataFound:
    """Resources of ``install_id`` in Docker, and tenant data in the data dir.

    Raises ``InstallMismatch`` when Docker cannot be asked: not knowing is no
    reason to assume there is nothing.
    """
    containers = volumes = 0
    if install_id is not None:
        runtime = DockerRuntime(install_id, settings.docker_url)
        try:
            owned = await runtime.owned()
        except ClonerError as exc:
            raise InstallMismatch(
                f"control plane {settings.control_plane_path} has no install identity and "
                f"Docker cannot be asked for resources of install {install_id} ({exc.message}); "
                "start Docker first"
            ) from None
        finally:
            await runtime.close()
        containers, volumes = len(owned.containers), len(owned.volume_info)
    sqlite_tenants, backed_up = await asyncio.to_thread(_local_data, settings)
    return DataFound(containers, volumes, sqlite_tenants, backed_up)


def _local_data(settings: Settings) -> tuple[int, int]:
    tenants_dir = settings.data_dir / Engine.SQLITE.value / "tenants"
    sqlite_tenants = (sum(1 for p in tenants_dir.iterdir() if p.is_dir())
                      if tenants_dir.is_dir() else 0)
    backups = settings.backups_dir
    backed_up = (sum(1 for p in backups.iterdir()
                     if p.is_dir() and any(p.glob(f"*{constants.BACKUP_SUFFIX}")))
                 if backups.is_dir() else 0)
    return sqlite_tenants, backed_up


def refusal(settings: Settings, state: str, found: DataFound, install_id: str | None) -> str:
    """The one-line message of a refused start: what was found, and the two ways on."""
    path = settings.control_plane_path
    adopt = install_id or uuid.uuid4().hex[:12]
    return (
        f"control plane {path} is {state} but {settings.data_dir} still holds "
        f"{found.describe(install_id)}; refusing to start an empty registry next to that data: "
        f"restore the copy made by `cloner controlplane backup` to {path}, or set "
        f"CLONER_ADOPT_INSTALL={adopt} for one start to begin a new control plane that "
        "adopts that install (its tenants then show in `cloner orphans list`)"
    )


async def check_missing_control_plane(settings: Settings) -> None:
    """Before a missing control-plane file is created: refuse if its install left data."""
    if settings.adopt_install is not None:
        return
    install_id = read_install_file(settings.data_dir)
    found = await find_data(settings, install_id)
    if found:
        raise InstallMismatch(refusal(settings, "missing", found, install_id))


async def bind_install(settings: Settings, control_plane: ControlPlane) -> str:
    """The install id ``control_plane`` owns, binding an unbound one (module docstring)."""
    file_id = read_install_file(settings.data_dir)
    identity = await control_plane.install_identity()
    if identity is None:
        if await control_plane.tenant_count() > 0:
            install_id, origin = file_id or uuid.uuid4().hex[:12], ORIGIN_FILE
        elif settings.adopt_install is not None:
            if file_id is not None and settings.adopt_install != file_id:
                raise InstallMismatch(
                    f"CLONER_ADOPT_INSTALL={settings.adopt_install} but the data dir "
                    f"{settings.data_dir} belongs to install {file_id}"
                )
            install_id, origin = settings.adopt_install, ORIGIN_ADOPTED
        else:
            found = await find_data(settings, file_id)
            if found:
                raise InstallMismatch(refusal(settings, "new and empty", found, file_id))
            install_id, origin = file_id or uuid.uuid4().hex[:12], ORIGIN_NEW
        identity = await control_plane.claim_install_identity(install_id, origin)
        log.debug("install.bound", install=identity.install_id, origin=identity.origin)
        if identity.origin == ORIGIN_ADOPTED:
            log.warning("install.adopted", install=identity.install_id,
                        hint="its tenants are quarantined orphans: cloner orphans list")
    if file_id is None:
        await asyncio.to_thread(write_private_file, settings.data_dir / constants.INSTALL_ID_FILE,
                                identity.install_id)
    elif file_id != identity.install_id:
        log.warning("install.file_differs", install=identity.install_id, file_install=file_id,
                    hint=f"resources labelled cloner.install={file_id} are not this control "
                         "plane's and are left alone")
    return identity.install_id
