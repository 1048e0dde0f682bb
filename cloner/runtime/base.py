"""The runtime interface: where a tenant database runs. Docker today, Kubernetes later."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to run one tenant's database container."""

    name: str
    image: str
    labels: dict[str, str]
    volume_name: str
    volume_mount: str
    port: int
    bind_host: str
    network: str
    user: str
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    tmpfs: dict[str, str] = field(default_factory=dict)
    read_only: bool = True
    cap_add: tuple[str, ...] = ()
    memory_limit_bytes: int = 256 * 1024 * 1024
    nano_cpus: int = 1_000_000_000
    pids_limit: int = 256
    shm_size_bytes: int | None = None
    #: Docker json-file log rotation; None leaves the daemon's default (unbounded).
    log_max_size: str | None = None
    log_max_files: int | None = None
    #: Asked of the volume driver as its ``size`` option (XFS project quotas); None: no limit.
    volume_size_bytes: int | None = None

    def __repr__(self) -> str:  # env may carry a bootstrap secret
        return f"ContainerSpec(name={self.name!r}, image={self.image!r})"


@dataclass(frozen=True)
class ContainerInfo:
    """What the runtime reports about a container."""

    id: str
    name: str
    status: str
    labels: dict[str, str]
    image: str
    host_ip: str | None
    host_port: int | None
    networks: tuple[str, ...]
    ip_address: str | None = None
    #: When the runtime created it (timezone-aware); None if the runtime did not say.
    created_at: datetime | None = None

    @property
    def running(self) -> bool:
        """True when the container is running."""
        return self.status == "running"


@dataclass(frozen=True)
class VolumeInfo:
    """What the runtime reports about a data volume."""

    name: str
    labels: dict[str, str]
    #: When the runtime created it (timezone-aware); None if the runtime did not say.
    created_at: datetime | None = None


@dataclass(frozen=True)
class OwnedResources:
    """Containers, volumes and networks carrying our labels.

    ``volumes`` names the volumes; ``volume_info`` carries the same volumes
    with their labels and creation times (what the reconciler judges by).
    """

    containers: tuple[ContainerInfo, ...]
    volumes: tuple[str, ...]
    networks: tuple[str, ...]
    volume_info: tuple[VolumeInfo, ...] = ()


@dataclass(frozen=True)
class ContainerStats:
    """One resource-usage sample of a running container."""

    #: Memory in use minus reclaimable page cache (what ``docker stats`` shows).
    memory_bytes: int
    #: CPU in use, in cores (1.0 = one core busy); None when the runtime had no prior sample.
    cpu_cores: float | None
    memory_limit_bytes: int | None = None


class Runtime(Protocol):
    """Runs tenant containers. Every method is safe to call again after a crash."""

    async def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the runtime answers."""

    async def ensure_network(self, name: str) -> None:
        """Create the tenant network (inter-container traffic disabled) if absent."""

    async def network_isolated(self, name: str) -> bool:
        """True if containers on that network cannot talk to each other."""

    async def ensure_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create-or-adopt and start the container; stale ones of ours are replaced."""

    async def inspect(self, name: str) -> ContainerInfo | None:
        """The container, or None."""

    async def start(self, name: str) -> ContainerInfo:
        """Start a stopped container."""

    async def remove_container(self, name: str) -> None:
        """Stop and remove a container; absent is fine."""

    async def remove_volume(self, name: str) -> None:
        """Remove a volume; absent is fine."""

    async def volume_exists(self, name: str) -> bool:
        """True if the volume exists."""

    async def volume_info(self, name: str) -> VolumeInfo | None:
        """The volume with its labels, if it exists and is ours."""

    async def start_volume_helper(self, spec: ContainerSpec) -> ContainerInfo:
        """Start a short-lived container on an existing volume of ours (e.g. to dump it).

        Hardened like a tenant container (``spec``'s user, read-only root,
        tmpfs, limits, no capabilities) but with no network at all, no
        published port and no restart policy. Refuses (``RuntimeFault``) when
        the volume is missing or not ours, or while any other container uses
        it: two servers on one data directory would corrupt it. A leftover
        helper of the same name (a crash mid-dump) is replaced. While it runs,
        ``ensure_container`` refuses (transient ``RuntimeFault``) to create a
        container on that volume. The caller removes it with ``remove_container``.
        """

    async def exec_to_file(
        self, name: str, cmd: list[str], dest: Path, user: str, *,
        timeout_s: float | None = None,
    ) -> int:
        """Run ``cmd`` in the container, stream its stdout into ``dest``; bytes written.

        Every exec has an overall deadline (``timeout_s``, else the runtime's
        default): past it, or when the caller is cancelled, the exec'd process
        is killed inside the container and ``TimeoutExceeded`` is raised.
        """

    async def exec_with_stdin(
        self, name: str, cmd: list[str], source: Path, user: str, *,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        """Run ``cmd`` with ``source`` streamed to its stdin; exit code and output (bounded
        like ``exec_to_file``)."""

    async def exec(
        self, name: str, cmd: list[str], user: str, *, timeout_s: float | None = None
    ) -> tuple[int, str]:
        """Run ``cmd`` in the container; exit code and combined output (bounded like
        ``exec_to_file``)."""

    async def logs_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of the container log."""

    async def owned(self) -> OwnedResources:
        """Everything labelled as ours by this install."""

    async def stats(self, name: str) -> ContainerStats | None:
        """A resource-usage sample of a running container of ours; None if absent or stopped."""

    async def volume_sizes(self) -> dict[str, int]:
        """Bytes used by each volume of ours (volume name → bytes), in one listing."""

    async def image_exists(self, image: str) -> bool:
        """True if the image is present locally."""

    async def pull(self, image: str, timeout_s: float) -> None:
        """Pull an image; raise ``ImageError`` on failure."""

    async def close(self) -> None:
        """Release the client."""
