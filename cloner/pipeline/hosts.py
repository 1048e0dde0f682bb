"""Where a tenant database lives, as the pipelines see it.

Container engines (postgres, mysql, mongodb) run a server in the tenant's own
container; embedded engines (sqlite) keep a file in cloner's data directory.
The steps that differ — start the database, notice it died, stop it, keep or
remove its data, prove where it sits — go through :class:`TenantHost`, so the
provisioning and deprovisioning pipelines read the same for every engine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cloner import constants
from cloner.domain import (
    CheckResult,
    Credentials,
    Endpoint,
    Engine,
    container_name,
    parse_engine,
    volume_name,
)
from cloner.engines import (
    BackupResult,
    EngineDriver,
    Placement,
    TenantTarget,
    VolumeDumpHooks,
    get_engine,
    volume_dump_hooks,
)
from cloner.errors import (
    BackupError,
    ImageError,
    NotReady,
    RuntimeFault,
    RuntimeUnavailable,
)
from cloner.logging import get_logger

if TYPE_CHECKING:
    from cloner.pipeline.context import Services

log = get_logger(__name__)

#: Names the request that created an embedded tenant's files (see ``EmbeddedHost.start``).
REQUEST_MARKER = ".request"
#: Present once an embedded tenant is deprovisioned: its file is data at rest.
STOPPED_MARKER = ".stopped"


@dataclass(frozen=True)
class Placing:
    """What ``TenantHost.start`` needs to give one tenant's database a home."""

    tenant_id: str
    request_id: str
    driver: EngineDriver
    credentials: Credentials
    labels: dict[str, str]


@dataclass(frozen=True)
class Hosted:
    """Where ``TenantHost.start`` put the database."""

    endpoint: Endpoint
    container_id: str | None = None
    container_name: str | None = None


class TenantHost(Protocol):
    """The placement-specific half of the pipelines. Every method is idempotent."""

    async def start(self, placing: Placing) -> Hosted:
        """Create (or find) the tenant's database home and say how to reach it."""

    async def watch(self, tenant_id: str) -> None:
        """Return never; raise ``NotReady`` as soon as the database process is gone."""

    async def diagnostics(self, tenant_id: str) -> str:
        """A short hint of why the database did not come up (e.g. its log tail)."""

    async def ensure_running(self, target: TenantTarget) -> None:
        """Make the database answer again (for a backup); ``BackupError`` if it cannot."""

    async def is_live(self, tenant_id: str) -> bool:
        """True while the data can still change (the container exists)."""

    async def has_data(self, tenant_id: str) -> bool:
        """True while the tenant's data exists (volume or file)."""

    async def stop(self, tenant_id: str) -> None:
        """Stop serving the tenant, keeping its data."""

    async def remove_data(self, tenant_id: str) -> None:
        """Remove the tenant's data for good."""

    async def data_request(self, tenant_id: str) -> str | None:
        """The request that created the tenant's data (volume label, directory marker);
        ``""`` when the data exists without that record, None when there is no data."""

    async def remove_created(self, tenant_id: str, request_id: str) -> list[str]:
        """Compensation: remove what ``request_id`` created, nothing else; names removed.

        Data of another request (a deprovisioned tenant's retained volume, an
        earlier incarnation's files) is left where it is.
        """

    async def checks(self, target: TenantTarget) -> list[CheckResult]:
        """The placement's part of the isolation proof."""


class ContainerHost:
    """The tenant's own container and volume, through the runtime."""

    def __init__(self, services: Services) -> None:
        self.s = services

    async def start(self, placing: Placing) -> Hosted:
        driver = placing.driver
        spec = driver.container_spec(
            placing.tenant_id, placing.credentials, placing.labels,
            self.s.container_defaults(driver.engine.value),
        )
        await self.s.runtime.ensure_network(self.s.settings.tenant_network)
        info = await self.s.runtime.ensure_container(spec)
        if info.host_port is None:
            raise NotReady(f"container {info.name} has no published port")
        endpoint = Endpoint(host=self.s.settings.bind_host, port=info.host_port,
                            database=driver.database_name(placing.tenant_id))
        return Hosted(endpoint, info.id, info.name)

    async def watch(self, tenant_id: str) -> None:
        name = container_name(tenant_id)
        while True:
            await asyncio.sleep(1.0)
            info = await self.s.runtime.inspect(name)
            if info is None or info.status in ("exited", "dead", "restarting"):
                state = "gone" if info is None else info.status
                raise NotReady(f"container {name} is {state} while starting")

    async def diagnostics(self, tenant_id: str) -> str:
        logs = await self.s.runtime.logs_tail(container_name(tenant_id), 5)
        tail = " | ".join(line for line in logs.splitlines() if line.strip())[-400:]
        return f"container log: {tail or '(empty)'}"

    async def ensure_running(self, target: TenantTarget) -> None:
        name = target.container_name or container_name(target.tenant_id)
        info = await self.s.runtime.inspect(name)
        if info is None:
            raise BackupError(
                f"container {name} is gone; its volume "
                f"{volume_name(target.tenant_id)} is kept for manual recovery"
            )
        if not info.running:
            await self.s.runtime.start(name)

    async def is_live(self, tenant_id: str) -> bool:
        return await self.s.runtime.inspect(container_name(tenant_id)) is not None

    async def has_data(self, tenant_id: str) -> bool:
        return await self.s.runtime.volume_exists(volume_name(tenant_id))

    async def dump_volume(
        self, tenant_id: str, dest: Path, *, engine: Engine | None = None,
        request_id: str | None = None,
    ) -> BackupResult:
        """The engine's normal backup, taken from the kept volume of a tenant whose container
        is gone; needs no registry row, credentials or network.

        The engine comes from ``engine`` or else the volume's ``cloner.engine``
        label (they must agree). A helper container of the engine's image is
        started on the volume (``Runtime.start_volume_helper``: hardened like
        the tenant container, no network, no port; refused while another
        container uses the volume), its server is awaited and dumped over its
        local socket (``VolumeDumpHooks``), and the helper is removed whatever
        happens. The whole run is bounded by ``step_timeout_s``. Raises
        ``BackupError`` saying why when no backup could be taken.
        """
        runtime = self.s.runtime
        volume = volume_name(tenant_id)
        info = await runtime.volume_info(volume)
        if info is None:
            raise BackupError(f"volume {volume} does not exist (or is not this install's)")
        labelled = info.labels.get(constants.LABEL_ENGINE)
        if engine is None:
            if not labelled:
                raise BackupError(f"volume {volume} has no {constants.LABEL_ENGINE} label")
            engine = parse_engine(labelled)
        elif labelled and labelled != engine.value:
            raise BackupError(f"volume {volume} is labelled {labelled}, not {engine.value}")
        driver = get_engine(engine)
        hooks = volume_dump_hooks(driver)
        if driver.placement is not Placement.CONTAINER or hooks is None:
            raise BackupError(
                f"the {engine.value} engine cannot back up a volume without its container"
            )
        name = constants.CONTAINER_PREFIX + tenant_id + constants.VOLUME_DUMP_SUFFIX
        labels = {
            constants.LABEL_TENANT: tenant_id, constants.LABEL_ENGINE: engine.value,
            constants.LABEL_ROLE: constants.ROLE_VOLUME_DUMP,
        }
        if request_id is not None:
            labels[constants.LABEL_REQUEST] = request_id
        spec = hooks.volume_dump_spec(tenant_id, name, labels,
                                      self.s.container_defaults(engine.value))
        deadline_s = self.s.settings.step_timeout_s
        log.info("volume_dump.start", tenant_id=tenant_id, volume=volume, container=name)
        try:
            async with asyncio.timeout(deadline_s):
                await runtime.start_volume_helper(spec)
                await self._await_helper(hooks, name)
                result = await hooks.dump_local(runtime, name, tenant_id, dest)
        except TimeoutError as exc:
            raise BackupError(
                f"backup from volume {volume} did not finish within {deadline_s:.0f}s"
            ) from exc
        except (RuntimeFault, RuntimeUnavailable, ImageError) as exc:
            raise BackupError(f"backup from volume {volume} failed: {exc.message}") from exc
        finally:
            # Removing the helper also ends a dump still running in it (after a timeout).
            await asyncio.shield(runtime.remove_container(name))
        log.info("volume_dump.done", tenant_id=tenant_id, path=str(result.path),
                 size_bytes=result.size_bytes)
        return result

    async def _await_helper(self, hooks: VolumeDumpHooks, name: str) -> None:
        runtime = self.s.runtime
        while True:
            info = await runtime.inspect(name)
            if info is None or not info.running:
                logs = await runtime.logs_tail(name, 5)
                tail = " | ".join(line for line in logs.splitlines() if line.strip())[-400:]
                state = "gone" if info is None else info.status
                raise BackupError(f"the server on the kept volume is {state}: {tail or '(no log)'}")
            try:
                if await hooks.local_ready(runtime, name):
                    return
            except RuntimeFault:
                pass  # it stopped between the look and the exec: the next look says why
            await asyncio.sleep(0.2)

    async def stop(self, tenant_id: str) -> None:
        await self.s.runtime.remove_container(container_name(tenant_id))

    async def remove_data(self, tenant_id: str) -> None:
        await self.s.runtime.remove_volume(volume_name(tenant_id))

    async def data_request(self, tenant_id: str) -> str | None:
        info = await self.s.runtime.volume_info(volume_name(tenant_id))
        if info is None:
            # Absent, or someone else's volume under our name: the runtime never touches it.
            return None
        return info.labels.get(constants.LABEL_REQUEST, "")

    async def remove_created(self, tenant_id: str, request_id: str) -> list[str]:
        removed: list[str] = []
        name = container_name(tenant_id)
        info = await self.s.runtime.inspect(name)
        if info is not None and info.labels.get(constants.LABEL_REQUEST) == request_id:
            await self.s.runtime.remove_container(name)
            removed.append(name)
        volume = volume_name(tenant_id)
        if await self.data_request(tenant_id) == request_id:
            await self.s.runtime.remove_volume(volume)
            removed.append(volume)
        return removed

    async def checks(self, target: TenantTarget) -> list[CheckResult]:
        """Published on the bind host only; alone on the isolated tenant network."""
        name = target.container_name
        info = await self.s.runtime.inspect(name) if name is not None else None
        network = self.s.settings.tenant_network
        if info is None:
            return [CheckResult("container_exists", False, "container vanished")]
        bind = self.s.settings.bind_host
        isolated = await self.s.runtime.network_isolated(network)
        return [
            CheckResult(
                "port_published_on_bind_host_only", info.host_ip == bind,
                f"published on {info.host_ip}:{info.host_port} (expected {bind})",
            ),
            CheckResult(
                "own_isolated_network", info.networks == (network,) and isolated,
                f"networks {list(info.networks)}; inter-container traffic "
                f"{'disabled' if isolated else 'ENABLED'} on {network}",
            ),
        ]


class EmbeddedHost:
    """A private directory per tenant under ``<data_dir>/<engine>/tenants``.

    The directory is 0700 and everything in it 0600: the only process that
    may open the file is cloner (and what it hands connections to). There is
    no server to start or stop: ``stop`` marks the file as data at rest and
    keeps it, the way a container engine keeps its volume, and only
    ``remove_data`` deletes it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tenants_dir = root / "tenants"

    def tenant_dir(self, tenant_id: str) -> Path:
        """The tenant's private directory."""
        return self.tenants_dir / tenant_id

    async def start(self, placing: Placing) -> Hosted:
        folder = self.tenant_dir(placing.tenant_id)
        await asyncio.to_thread(self._prepare, folder, placing.request_id)
        return Hosted(Endpoint(path=str(folder / placing.driver.database_name(placing.tenant_id))))

    def _prepare(self, folder: Path, request_id: str) -> None:
        marker = folder / REQUEST_MARKER
        if folder.exists() and (not marker.is_file() or marker.read_text() != request_id):
            # Files of an earlier incarnation (a deprovisioned tenant being restored or
            # re-created): like a container engine's stale volume, they are replaced;
            # a restore's verified backup, or the final backup, holds that data.
            shutil.rmtree(folder)
        self.tenants_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(mode=0o700, exist_ok=True)
        for made in (self.root, self.tenants_dir, folder):  # mkdir's mode obeys the umask
            made.chmod(0o700)
        if not marker.is_file():
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(request_id)

    async def watch(self, tenant_id: str) -> None:
        # No process can die; only the directory can vanish (an operator's rm).
        folder = self.tenant_dir(tenant_id)
        while await asyncio.to_thread(folder.is_dir):  # noqa: ASYNC110 - polls the disk
            await asyncio.sleep(1.0)
        raise NotReady(f"directory {folder} vanished while starting")

    async def diagnostics(self, tenant_id: str) -> str:
        folder = self.tenant_dir(tenant_id)
        there = await asyncio.to_thread(folder.is_dir)
        return f"directory {folder} {'exists' if there else 'is missing'}"

    async def ensure_running(self, target: TenantTarget) -> None:
        path = target.endpoint.path
        if path is None or not await asyncio.to_thread(Path(path).is_file):
            raise BackupError(f"database file of {target.tenant_id} is missing")

    async def is_live(self, tenant_id: str) -> bool:
        folder = self.tenant_dir(tenant_id)
        return await asyncio.to_thread(
            lambda: folder.is_dir() and not (folder / STOPPED_MARKER).exists()
        )

    async def has_data(self, tenant_id: str) -> bool:
        return await asyncio.to_thread(self.tenant_dir(tenant_id).is_dir)

    async def stop(self, tenant_id: str) -> None:
        folder = self.tenant_dir(tenant_id)
        if await asyncio.to_thread(folder.is_dir):
            await asyncio.to_thread((folder / STOPPED_MARKER).touch, 0o600)

    async def remove_data(self, tenant_id: str) -> None:
        folder = self.tenant_dir(tenant_id)
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def data_request(self, tenant_id: str) -> str | None:
        return await asyncio.to_thread(self._data_request, self.tenant_dir(tenant_id))

    @staticmethod
    def _data_request(folder: Path) -> str | None:
        if not folder.is_dir():
            return None
        marker = folder / REQUEST_MARKER
        return marker.read_text() if marker.is_file() else ""

    async def remove_created(self, tenant_id: str, request_id: str) -> list[str]:
        if await self.data_request(tenant_id) != request_id:
            return []
        await self.remove_data(tenant_id)
        return [str(self.tenant_dir(tenant_id))]

    async def checks(self, target: TenantTarget) -> list[CheckResult]:
        """Private directory and file, inside this data directory, not a link elsewhere."""
        return await asyncio.to_thread(self._checks, target)

    def _checks(self, target: TenantTarget) -> list[CheckResult]:
        folder = self.tenant_dir(target.tenant_id)
        if target.endpoint.path is None:
            return [CheckResult("database_file_exists", False, "endpoint has no path")]
        path = Path(target.endpoint.path)
        if not path.is_file():
            return [CheckResult("database_file_exists", False, f"{path} is missing")]
        root = self.tenants_dir.resolve()
        resolved = path.resolve()
        contained = resolved.parent == (root / target.tenant_id) and not path.is_symlink()
        loose = [p.name for p in folder.iterdir()
                 if stat.S_IMODE(p.lstat().st_mode) & 0o077]
        dir_mode = stat.S_IMODE(folder.stat().st_mode)
        return [
            CheckResult(
                "path_contained_in_data_dir", contained,
                f"{resolved} {'is' if contained else 'is NOT'} inside {root / target.tenant_id}",
            ),
            CheckResult(
                "private_file_permissions", dir_mode == 0o700 and not loose,
                f"directory {dir_mode:o}; files open to group/others: {loose or 'none'}",
            ),
        ]


def host_for(services: Services, driver: EngineDriver) -> TenantHost:
    """The host of ``driver``'s tenants."""
    if driver.placement is Placement.EMBEDDED:
        return EmbeddedHost(services.settings.data_dir / driver.engine.value)
    return ContainerHost(services)


__all__ = ["REQUEST_MARKER", "STOPPED_MARKER", "ContainerHost", "EmbeddedHost", "Hosted",
           "Placing", "TenantHost", "host_for"]
