"""Docker runtime: the only module that calls the Docker SDK.

The SDK is blocking, so every call runs in a worker thread
(``asyncio.to_thread``). Everything created carries our labels; a container
or volume with our name but not our labels is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import LogConfig

from cloner import constants
from cloner.errors import ImageError, RuntimeFault, RuntimeUnavailable, TimeoutExceeded
from cloner.logging import get_logger
from cloner.runtime.base import (
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    OwnedResources,
    VolumeInfo,
)

P = ParamSpec("P")
T = TypeVar("T")
log = get_logger(__name__)

#: Threads reserved for slow sampling calls (Docker stats), apart from the default pool.
SLOW_CALL_THREADS = 2

_CONNECTION_ERRORS = (ConnectionError, OSError)

#: Environment variable that marks every process of one exec (children inherit it).
EXEC_MARKER_VAR = "CLONER_EXEC"
#: How long killing a timed-out exec (and its reader thread winding down) may take.
EXEC_KILL_TIMEOUT_S = 10.0
#: Kills, inside the container, every process whose environment carries the marker
#: given as $1 (readable for processes of the same user, which the kill runs as).
_KILL_BY_MARKER = (
    'for p in /proc/[0-9]*; do '
    'if tr "\\0" "\\n" < "$p/environ" 2>/dev/null | grep -qx "' + EXEC_MARKER_VAR + '=$1"; '
    'then kill -KILL "${p#/proc/}" 2>/dev/null; fi; done; exit 0'
)


def _wrap(fn: Callable[P, T]) -> Callable[P, T]:
    """Map SDK and connection errors onto cloner's transient runtime errors."""

    @functools.wraps(fn)
    def inner(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError as exc:
            raise RuntimeFault(f"docker refused {fn.__name__}: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            raise RuntimeUnavailable(f"docker is not reachable: {exc}") from exc
        except _CONNECTION_ERRORS as exc:
            raise RuntimeUnavailable(f"docker is not reachable: {exc}") from exc

    return inner


class DockerRuntime:
    """Tenant containers on a local (or ``docker_url``) Docker engine."""

    def __init__(
        self, install_id: str, docker_url: str | None = None,
        exec_timeout_s: float = constants.EXEC_TIMEOUT_S,
    ) -> None:
        self.install_id = install_id
        #: Deadline of an exec whose caller names none.
        self.exec_timeout_s = exec_timeout_s
        self._docker_url = docker_url
        self._client: docker.DockerClient | None = None
        self._network_lock = asyncio.Lock()
        self._slow_executor: ThreadPoolExecutor | None = None

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client, created on first use."""
        if self._client is None:
            try:
                if self._docker_url:
                    self._client = docker.DockerClient(base_url=self._docker_url, timeout=60)
                else:
                    self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as exc:
                raise RuntimeUnavailable(f"docker is not reachable: {exc}") from exc
        return self._client

    def _ours(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return (
            labels.get(constants.LABEL_MANAGED) == "true"
            and labels.get(constants.LABEL_INSTALL) == self.install_id
        )

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(_wrap(fn), *args, **kwargs)

    async def _run_slow(self, fn: Callable[[], T]) -> T:
        # Stats calls block about a second each. On the default executor (cpu+4
        # threads) a health pass would starve the workers' Docker calls; they get
        # two threads of their own instead.
        if self._slow_executor is None:
            self._slow_executor = ThreadPoolExecutor(
                max_workers=SLOW_CALL_THREADS, thread_name_prefix="cloner-docker-stats"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._slow_executor, _wrap(fn))

    async def close(self) -> None:
        """Close the SDK client (and the stats threads)."""
        if self._slow_executor is not None:
            executor, self._slow_executor = self._slow_executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)

    async def ping(self) -> None:
        """Raise unless Docker answers."""
        await self._run(self._ping)

    async def engine_facts(self) -> dict[str, object]:
        """Docker engine settings operators should know about (reported, never assumed)."""
        info: dict[str, object] = await self._run(self._info_raw)
        return {
            "version": info.get("ServerVersion"),
            "live_restore": bool(info.get("LiveRestoreEnabled")),
            "storage_driver": info.get("Driver"),
            "cgroup_version": info.get("CgroupVersion"),
        }

    def _info_raw(self) -> dict[str, object]:
        info: dict[str, object] = self.client.info()
        return info

    def _ping(self) -> None:
        self.client.ping()

    # ---------------------------------------------------------------- network

    async def ensure_network(self, name: str) -> None:
        """One bridge for all tenants with inter-container traffic disabled.

        A network per tenant would exhaust Docker's default address pools at
        ~30 tenants; one ICC-less bridge scales to thousands and still keeps
        tenant containers from reaching each other.
        """
        async with self._network_lock:
            await self._run(self._ensure_network, name)

    def _ensure_network(self, name: str) -> None:
        existing = self.client.networks.list(names=[name])
        if any(n.name == name for n in existing):
            return
        self.client.networks.create(
            name,
            driver="bridge",
            options={"com.docker.network.bridge.enable_icc": "false"},
            # Shared by every install on this engine, so it carries no install label:
            # no install's orphan sweep may ever count it as its own.
            labels={constants.LABEL_MANAGED: "true", constants.LABEL_ROLE: "tenant-network"},
            check_duplicate=True,
        )

    async def network_isolated(self, name: str) -> bool:
        """True when the network exists and has ICC disabled."""
        def check() -> bool:
            try:
                net = self.client.networks.get(name)
            except docker.errors.NotFound:
                return False
            options = net.attrs.get("Options") or {}
            return bool(options.get("com.docker.network.bridge.enable_icc") == "false")

        return await self._run(check)

    # ------------------------------------------------------------- containers

    def _labels(self, extra: dict[str, str]) -> dict[str, str]:
        return {
            constants.LABEL_MANAGED: "true",
            constants.LABEL_INSTALL: self.install_id,
            **extra,
        }

    async def ensure_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create-or-adopt, then start. See ``Runtime.ensure_container``."""
        for key in spec.labels:
            if not key.startswith(constants.LABEL_PREFIX):
                raise RuntimeFault(f"label {key!r} is outside the cloner. namespace")
        return await self._run(self._ensure_container, spec)

    def _ensure_container(self, spec: ContainerSpec) -> ContainerInfo:
        request = spec.labels.get(constants.LABEL_REQUEST)
        container = self._get_container(spec.name)
        if container is not None:
            if not self._ours(container.labels):
                raise RuntimeFault(
                    f"container {spec.name} exists but is not managed by this cloner install; "
                    "remove or rename it"
                )
            if container.labels.get(constants.LABEL_REQUEST) != request:
                log.info("runtime.replace_stale_container", container=spec.name)
                container.remove(force=True)
                container = None
        volume_labels = self._labels(
            {k: v for k, v in spec.labels.items() if k != constants.LABEL_MANAGED}
        )
        if container is None:
            dumping = self.client.containers.list(all=True, filters={
                "volume": spec.volume_name,
                "label": [f"{constants.LABEL_ROLE}={constants.ROLE_VOLUME_DUMP}"],
            })
            if dumping:
                # Two servers on one data directory would corrupt it; the dump is short.
                raise RuntimeFault(f"volume {spec.volume_name} is being backed up by "
                                   f"{dumping[0].name}; try again when it is done")
            self._ensure_volume(spec.volume_name, volume_labels, request,
                                spec.volume_size_bytes)
            container = self._create(spec)
        if container.status != "running":
            container.start()
            container.reload()
        return self._info(container)

    def _ensure_volume(
        self, name: str, labels: dict[str, str], request: str | None,
        size_bytes: int | None = None,
    ) -> None:
        # The local driver enforces ``size`` only on XFS with project quotas (pquota);
        # elsewhere Docker refuses the option, so it is asked for only when configured.
        opts = {"size": str(size_bytes)} if size_bytes else None
        try:
            volume = self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(name, labels=labels, driver_opts=opts)
            return
        vol_labels = volume.attrs.get("Labels") or {}
        if not self._ours(vol_labels):
            raise RuntimeFault(f"volume {name} exists but is not managed by this cloner install")
        if vol_labels.get(constants.LABEL_REQUEST) != request:
            # Data of an earlier incarnation of this tenant id (a failed attempt kept
            # for debugging): a new request always starts from an empty volume.
            volume.remove(force=True)
            self.client.volumes.create(name, labels=labels, driver_opts=opts)

    def _hardened_kwargs(self, spec: ContainerSpec, restart: str) -> dict[str, Any]:
        """Create arguments every container of ours gets: identity, data volume, and the
        hardening (no capabilities, no new privileges, read-only root, limits)."""
        kwargs: dict[str, Any] = {
            "name": spec.name,
            "image": spec.image,
            "command": list(spec.command) or None,
            "environment": spec.env,
            "labels": self._labels(spec.labels),
            "user": spec.user,
            "detach": True,
            "volumes": {spec.volume_name: {"bind": spec.volume_mount, "mode": "rw"}},
            "tmpfs": spec.tmpfs,
            "read_only": spec.read_only,
            "cap_drop": ["ALL"],
            "cap_add": list(spec.cap_add) or None,
            "security_opt": ["no-new-privileges"],
            "mem_limit": spec.memory_limit_bytes,
            "memswap_limit": spec.memory_limit_bytes,
            "nano_cpus": spec.nano_cpus,
            "pids_limit": spec.pids_limit,
            "restart_policy": {"Name": restart},
            "hostname": spec.name,
        }
        if spec.shm_size_bytes:
            kwargs["shm_size"] = spec.shm_size_bytes
        return kwargs

    def _create(self, spec: ContainerSpec) -> Container:
        kwargs = self._hardened_kwargs(spec, restart="unless-stopped")
        kwargs["ports"] = {f"{spec.port}/tcp": (spec.bind_host,)}
        kwargs["network"] = spec.network
        if spec.log_max_size:
            # Rotated whatever the daemon's default: tenant input reaches error lines.
            kwargs["log_config"] = LogConfig(type=LogConfig.types.JSON, config={
                "max-size": spec.log_max_size, "max-file": str(spec.log_max_files or 1),
            })
        try:
            return self.client.containers.create(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise ImageError(
                f"image {spec.image} is not present; run 'cloner images ensure'"
            ) from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                # Another worker created it between our get and create: adopt it.
                existing = self._get_container(spec.name)
                if existing is not None and self._ours(existing.labels):
                    return existing
            raise

    def _get_container(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def _info(self, container: Container) -> ContainerInfo:
        attrs = container.attrs
        ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
        host_ip = host_port = None
        for bindings in ports.values():
            if bindings:
                host_ip = bindings[0].get("HostIp")
                host_port = int(bindings[0]["HostPort"])
                break
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
        return ContainerInfo(
            id=container.id or "",
            name=container.name or "",
            status=container.status,
            labels=dict(container.labels or {}),
            image=(attrs.get("Config") or {}).get("Image", ""),
            host_ip=host_ip,
            host_port=host_port,
            networks=tuple(sorted(networks)),
            ip_address=ip,
            created_at=_parse_time(attrs.get("Created")),
        )

    async def inspect(self, name: str) -> ContainerInfo | None:
        """The container, if it exists and is ours."""
        def get() -> ContainerInfo | None:
            container = self._get_container(name)
            if container is None or not self._ours(container.labels):
                return None
            return self._info(container)

        return await self._run(get)

    async def start(self, name: str) -> ContainerInfo:
        """Start a stopped container of ours."""
        def start() -> ContainerInfo:
            container = self.client.containers.get(name)
            if container.status != "running":
                container.start()
                container.reload()
            return self._info(container)

        return await self._run(start)

    async def remove_container(self, name: str) -> None:
        """Stop gracefully, then remove; only ours, absent is fine."""
        def remove() -> None:
            container = self._get_container(name)
            if container is None or not self._ours(container.labels):
                return
            if container.status == "running":
                container.stop(timeout=10)
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

        await self._run(remove)

    async def remove_volume(self, name: str) -> None:
        """Remove one of our volumes; absent is fine."""
        def remove() -> None:
            try:
                volume = self.client.volumes.get(name)
            except docker.errors.NotFound:
                return
            if self._ours(volume.attrs.get("Labels")):
                volume.remove(force=True)

        await self._run(remove)

    async def volume_exists(self, name: str) -> bool:
        """True if the volume exists."""
        def exists() -> bool:
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                return False
            return True

        return await self._run(exists)

    async def volume_info(self, name: str) -> VolumeInfo | None:
        """The volume and its labels, if it exists and is ours."""
        def get() -> VolumeInfo | None:
            try:
                volume = self.client.volumes.get(name)
            except docker.errors.NotFound:
                return None
            labels = dict(volume.attrs.get("Labels") or {})
            if not self._ours(labels):
                return None
            return VolumeInfo(volume.name, labels, _parse_time(volume.attrs.get("CreatedAt")))

        return await self._run(get)

    async def start_volume_helper(self, spec: ContainerSpec) -> ContainerInfo:
        """See ``Runtime.start_volume_helper``."""
        for key in spec.labels:
            if not key.startswith(constants.LABEL_PREFIX):
                raise RuntimeFault(f"label {key!r} is outside the cloner. namespace")
        return await self._run(self._start_volume_helper, spec)

    def _volume_users(self, volume: str, besides: str) -> list[str]:
        users = self.client.containers.list(all=True, filters={"volume": volume})
        return sorted(c.name or c.id or "?" for c in users if c.name != besides)

    def _start_volume_helper(self, spec: ContainerSpec) -> ContainerInfo:
        try:
            volume = self.client.volumes.get(spec.volume_name)
        except docker.errors.NotFound:
            raise RuntimeFault(f"volume {spec.volume_name} does not exist") from None
        if not self._ours(volume.attrs.get("Labels")):
            raise RuntimeFault(
                f"volume {spec.volume_name} exists but is not managed by this cloner install"
            )
        stale = self._get_container(spec.name)
        if stale is not None:
            role = spec.labels.get(constants.LABEL_ROLE)
            if not self._ours(stale.labels) or stale.labels.get(constants.LABEL_ROLE) != role:
                raise RuntimeFault(
                    f"container {spec.name} exists and is not a {role} helper of this install"
                )
            stale.remove(force=True)  # left by a crash mid-dump: its process is ours to end
        busy = self._volume_users(spec.volume_name, spec.name)
        if busy:
            raise RuntimeFault(
                f"volume {spec.volume_name} is in use by {', '.join(busy)}; "
                "a second server on the same data would corrupt it"
            )
        kwargs = self._hardened_kwargs(spec, restart="no")
        # No network at all: the dump runs over the server's local socket.
        kwargs["network_mode"] = "none"
        try:
            container = self.client.containers.create(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise ImageError(
                f"image {spec.image} is not present; run 'cloner images ensure'"
            ) from exc
        # A tenant container created between the check and ours (the reconciler):
        # back off rather than run two servers on one data directory.
        busy = self._volume_users(spec.volume_name, spec.name)
        if busy:
            container.remove(force=True)
            raise RuntimeFault(f"volume {spec.volume_name} came into use by {', '.join(busy)}")
        container.start()
        container.reload()
        return self._info(container)

    # ------------------------------------------------------------------- exec
    #
    # docker-py turns the socket timeout off for exec streams, so a command that never
    # ends (a dump waiting on a tenant's lock) would block its thread forever. Each exec
    # therefore has a deadline enforced here: the process is found inside the container
    # by a marker in its environment (children inherit it) and killed, which ends the
    # stream; the stream is closed as well in case the kill could not run.

    async def _bounded_exec(
        self, name: str, cmd: list[str], user: str, timeout_s: float | None,
        body: Callable[[_ExecHandle], T],
    ) -> T:
        limit = self.exec_timeout_s if timeout_s is None else timeout_s
        handle = _ExecHandle(secrets.token_hex(8))
        task = asyncio.ensure_future(self._run(body, handle))
        try:
            done, _pending = await asyncio.wait({task}, timeout=limit)
        except asyncio.CancelledError:
            # The caller gave up (step deadline, lost lease, shutdown): nothing may linger.
            await asyncio.shield(self._stop_exec(name, user, handle, task))
            raise
        if done:
            return task.result()
        log.warning("runtime.exec_timeout", container=name, command=cmd[0],
                    timeout_s=limit)
        await asyncio.shield(self._stop_exec(name, user, handle, task))
        raise TimeoutExceeded(
            f"{cmd[0]} in {name} did not finish within {limit:g}s; it was killed"
        )

    async def _stop_exec(
        self, name: str, user: str, handle: _ExecHandle, task: asyncio.Future[Any]
    ) -> None:
        def kill() -> None:
            api = self.client.api
            exec_id = api.exec_create(
                name, ["sh", "-c", _KILL_BY_MARKER, "cloner-kill", handle.marker],
                user=user, stdout=True, stderr=True,
            )["Id"]
            api.exec_start(exec_id)

        try:
            await asyncio.wait_for(self._run(kill), EXEC_KILL_TIMEOUT_S)
        except Exception as exc:  # the container may be gone or frozen: close the stream
            log.warning("runtime.exec_kill_failed", container=name,
                        error=f"{type(exc).__name__}: {exc}")
        handle.close()
        _done, pending = await asyncio.wait({task}, timeout=EXEC_KILL_TIMEOUT_S)
        if pending:
            log.warning("runtime.exec_thread_stuck", container=name)
        elif not task.cancelled():
            task.exception()  # retrieved: the exec's own error is not the one to report

    def _create_exec(
        self, handle: _ExecHandle, name: str, cmd: list[str], user: str, *, stdin: bool = False
    ) -> str:
        exec_id: str = self.client.api.exec_create(
            name, cmd, user=user, stdin=stdin, stdout=True, stderr=True,
            environment={EXEC_MARKER_VAR: handle.marker},
        )["Id"]
        return exec_id

    async def exec_to_file(
        self, name: str, cmd: list[str], dest: Path, user: str, *,
        timeout_s: float | None = None,
    ) -> int:
        """Stream the command's stdout into ``dest``; raise with stderr on failure."""
        def run(handle: _ExecHandle) -> int:
            api = self.client.api
            exec_id = self._create_exec(handle, name, cmd, user)
            written = 0
            errors: list[bytes] = []
            stream = api.exec_start(exec_id, stream=True, demux=True)
            handle.closers.append(stream.close)
            try:
                with dest.open("wb") as handle_out:
                    for out, err in stream:
                        if out:
                            handle_out.write(out)
                            written += len(out)
                        if err:
                            errors.append(err)
                    handle_out.flush()
            finally:
                stream.close()
                # CancellableStream.close() shuts the socket but leaves the HTTP response
                # (and its file object holding the fd) open: close that too.
                response = getattr(stream, "_response", None)
                if response is not None:
                    response.close()
            code = api.exec_inspect(exec_id).get("ExitCode")
            if code != 0:
                tail = b"".join(errors).decode(errors="replace").strip()[-500:]
                raise RuntimeFault(f"{cmd[0]} exited with {code}: {tail}")
            return written

        return await self._bounded_exec(name, cmd, user, timeout_s, run)

    async def exec_with_stdin(
        self, name: str, cmd: list[str], source: Path, user: str, *,
        timeout_s: float | None = None,
    ) -> tuple[int, str]:
        """Upload ``source`` through the exec's stdin: no file lands in the container."""
        def run(handle: _ExecHandle) -> tuple[int, str]:
            api = self.client.api
            exec_id = self._create_exec(handle, name, cmd, user, stdin=True)
            sock = api.exec_start(exec_id, socket=True)
            raw = getattr(sock, "_sock", sock)
            handle.closers.append(functools.partial(_shutdown, raw))
            try:
                with source.open("rb") as handle_in:
                    for chunk in iter(lambda: handle_in.read(1 << 16), b""):
                        raw.sendall(chunk)
                raw.shutdown(socket.SHUT_WR)
                output = bytearray()
                while chunk := raw.recv(1 << 16):
                    output.extend(chunk)
            finally:
                sock.close()
                raw.close()  # closing the SocketIO wrapper alone leaves the socket open
            code = api.exec_inspect(exec_id).get("ExitCode")
            return int(code if code is not None else -1), _strip_stream_headers(bytes(output))

        return await self._bounded_exec(name, cmd, user, timeout_s, run)

    async def exec(
        self, name: str, cmd: list[str], user: str, *, timeout_s: float | None = None
    ) -> tuple[int, str]:
        """Run a command, return exit code and output."""
        def run(handle: _ExecHandle) -> tuple[int, str]:
            api = self.client.api
            exec_id = self._create_exec(handle, name, cmd, user)
            stream = api.exec_start(exec_id, stream=True)
            handle.closers.append(stream.close)
            output = bytearray()
            try:
                for chunk in stream:
                    output.extend(chunk)
            finally:
                stream.close()
                response = getattr(stream, "_response", None)
                if response is not None:
                    response.close()
            code = api.exec_inspect(exec_id).get("ExitCode")
            return int(code if code is not None else -1), output.decode(errors="replace")

        return await self._bounded_exec(name, cmd, user, timeout_s, run)

    async def logs_tail(self, name: str, lines: int = 20) -> str:
        """Last log lines, or '' when unavailable."""
        def tail() -> str:
            container = self._get_container(name)
            if container is None:
                return ""
            return bytes(container.logs(tail=lines)).decode(errors="replace")

        try:
            return await self._run(tail)
        except (RuntimeFault, RuntimeUnavailable):
            return ""

    # --------------------------------------------------------------- listing

    async def owned(self) -> OwnedResources:
        """Everything labelled with this install id."""
        def collect() -> OwnedResources:
            flt = {"label": [f"{constants.LABEL_INSTALL}={self.install_id}"]}
            containers = self.client.containers.list(all=True, filters=flt)
            volumes = self.client.volumes.list(filters=flt)
            networks = self.client.networks.list(filters=flt)
            return OwnedResources(
                containers=tuple(self._info(c) for c in containers),
                volumes=tuple(v.name for v in volumes),
                networks=tuple(n.name for n in networks),
                volume_info=tuple(
                    VolumeInfo(
                        name=v.name, labels=dict(v.attrs.get("Labels") or {}),
                        created_at=_parse_time(v.attrs.get("CreatedAt")),
                    )
                    for v in volumes
                ),
            )

        return await self._run(collect)

    # ----------------------------------------------------------------- stats

    async def stats(self, name: str) -> ContainerStats | None:
        """One sample from the Docker stats API; None unless the container is ours and running.

        ``stream=False`` makes Docker take two readings about a second apart, so
        ``precpu_stats`` is filled and the CPU rate can be computed; the call
        therefore blocks for that second (in a worker thread).
        """
        def sample() -> ContainerStats | None:
            container = self._get_container(name)
            if container is None or not self._ours(container.labels):
                return None
            if container.status != "running":
                return None
            raw = container.stats(stream=False)
            return _container_stats(raw) if isinstance(raw, dict) else None

        return await self._run_slow(sample)

    async def volume_sizes(self) -> dict[str, int]:
        """``docker system df``'s volume sizes, ours only: one call for every tenant.

        Docker walks each volume to size it, so this is called once per health
        pass at most (``volume_sample_interval_s``), on the slow-call threads.
        """
        def listing() -> dict[str, int]:
            volumes = self.client.df().get("Volumes") or []
            return {
                str(v["Name"]): int((v.get("UsageData") or {}).get("Size", -1))
                for v in volumes
                if self._ours(v.get("Labels")) and (v.get("UsageData") or {}).get("Size", -1) >= 0
            }

        return await self._run_slow(listing)

    # ----------------------------------------------------------------- images

    async def image_exists(self, image: str) -> bool:
        """True if present locally."""
        def exists() -> bool:
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                return False
            return True

        return await self._run(exists)

    async def pull(self, image: str, timeout_s: float) -> None:
        """Pull with a deadline; any failure is an ``ImageError``."""
        repository, _, tag = image.partition(":")
        try:
            await asyncio.wait_for(
                self._run(lambda: self.client.images.pull(repository, tag=tag or "latest")),
                timeout=timeout_s,
            )
        except (TimeoutError, RuntimeFault, RuntimeUnavailable) as exc:
            raise ImageError(f"cannot pull {image}: {exc}") from exc


def _parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, ``Z``) as aware datetimes; None if unreadable."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python wants at most six fractional digits; Docker sends nine.
    head, dot, rest = text.partition(".")
    if dot:
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _container_stats(raw: dict[str, Any]) -> ContainerStats:
    """Memory minus reclaimable cache and CPU in cores, computed as ``docker stats`` does."""
    memory = raw.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    detail = memory.get("stats") or {}
    # cgroup v1 reports total_inactive_file, v2 inactive_file: both are page cache the
    # kernel can drop, so counting them would make every busy database look bloated.
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    used = usage - int(inactive) if int(inactive) < usage else usage
    cpu = raw.get("cpu_stats") or {}
    pre = raw.get("precpu_stats") or {}
    cpu_delta = ((cpu.get("cpu_usage") or {}).get("total_usage") or 0) - (
        (pre.get("cpu_usage") or {}).get("total_usage") or 0)
    system_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or ())
    cores: float | None = None
    if pre.get("system_cpu_usage") and system_delta > 0 and online:
        cores = max(0.0, cpu_delta / system_delta * online)
    limit = memory.get("limit")
    return ContainerStats(
        memory_bytes=max(0, used), cpu_cores=cores,
        memory_limit_bytes=int(limit) if limit else None,
    )


class _ExecHandle:
    """One exec's marker and how to unblock the thread reading its stream."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.closers: list[Callable[[], object]] = []

    def close(self) -> None:
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()


def _shutdown(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_RDWR)


def _strip_stream_headers(data: bytes) -> str:
    """Decode Docker's multiplexed stream (8-byte frame headers) into text."""
    out = bytearray()
    while len(data) >= 8 and data[0] in (0, 1, 2) and data[1:4] == b"\0\0\0":
        (size,) = struct.unpack(">I", data[4:8])
        out.extend(data[8 : 8 + size])
        data = data[8 + size :]
    out.extend(data)
    return out.decode(errors="replace")
