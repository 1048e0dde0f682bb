"""Composition root: builds settings-derived services once and hands them down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cloner import constants
from cloner.catalog import Catalog
from cloner.controlplane import ControlPlane, SQLiteControlPlane
from cloner.install import bind_install, check_missing_control_plane
from cloner.metrics import Metrics
from cloner.pipeline import Deprovisioner, Provisioner
from cloner.pipeline.context import Services
from cloner.pipeline.harden import Hardener
from cloner.pipeline.rotate import Rotator
from cloner.runtime.docker import DockerRuntime
from cloner.secrets import (
    SecretsError,
    Vault,
    generate_token,
    read_secret_file,
    token_problem,
)
from cloner.settings import Settings


def _has_control_plane_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


@dataclass
class App:
    """Everything a daemon or CLI command needs, opened together and closed together."""

    settings: Settings
    control_plane: ControlPlane
    runtime: DockerRuntime
    catalog: Catalog
    vault: Vault
    metrics: Metrics
    install_id: str
    admin_token: str
    #: Fresh per process start: a restarted daemon never inherits its old leases.
    owner_id: str

    @property
    def services(self) -> Services:
        """The collaborators pipelines use."""
        return Services(
            settings=self.settings, control_plane=self.control_plane, runtime=self.runtime,
            catalog=self.catalog, vault=self.vault, metrics=self.metrics,
            install_id=self.install_id,
        )

    @property
    def provisioner(self) -> Provisioner:
        """A provisioning pipeline bound to this app."""
        return Provisioner(self.services)

    @property
    def deprovisioner(self) -> Deprovisioner:
        """A deprovisioning pipeline bound to this app."""
        return Deprovisioner(self.services)

    @property
    def rotator(self) -> Rotator:
        """A credential-rotation pipeline bound to this app."""
        return Rotator(self.services)

    @property
    def hardener(self) -> Hardener:
        """Re-applies a newer engine hardening to an older tenant (``harden`` requests)."""
        return Hardener(self.services)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, control_plane: ControlPlane | None = None
    ) -> AsyncIterator[App]:
        """Prepare the data dir (0700), keys (0600), control plane and runtime."""
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data_dir.chmod(0o700)
        settings.backups_dir.mkdir(exist_ok=True, mode=0o700)
        vault = (
            Vault(settings.secret_key.get_secret_value()) if settings.secret_key
            else Vault.from_key_file(data_dir / constants.SECRET_KEY_FILE, create=True)
        )
        # Fail closed: an empty, short or world-readable token stops the process here
        # (Settings already refused a bad CLONER_ADMIN_TOKEN).
        admin_token = (
            settings.admin_token.get_secret_value() if settings.admin_token
            else admin_token_from_file(data_dir / constants.ADMIN_TOKEN_FILE)
        )
        if control_plane is None and not await asyncio.to_thread(
            _has_control_plane_file, settings.control_plane_path
        ):
            # Before open() creates the file: an empty registry must not appear next to
            # the data of the install it replaces (cloner.install).
            await check_missing_control_plane(settings)
        cp = control_plane or SQLiteControlPlane(settings.control_plane_path)
        await cp.open()
        try:
            install_id = await bind_install(settings, cp)
        except BaseException:
            await cp.close()
            raise
        runtime = DockerRuntime(install_id, settings.docker_url,
                                exec_timeout_s=settings.exec_timeout_s)
        app = cls(
            settings=settings, control_plane=cp, runtime=runtime,
            catalog=Catalog(settings.templates_dir, settings.industry_templates_dir),
            vault=vault, metrics=Metrics(), install_id=install_id,
            admin_token=admin_token, owner_id=uuid.uuid4().hex,
        )
        try:
            yield app
        finally:
            await runtime.close()
            await cp.close()


def admin_token_from_file(path: Path) -> str:
    """The admin token file's token, generated (256 bits) when absent; refused when unusable."""
    token = read_secret_file(path, generate_token(), "admin token file")
    problem = token_problem(token)
    if problem:
        raise SecretsError(
            f"the admin token in {path} {problem}; delete the file to have a new one "
            "generated, or set CLONER_ADMIN_TOKEN"
        )
    return token
