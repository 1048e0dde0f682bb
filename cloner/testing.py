"""In-memory fakes for fast unit tests of orchestration logic (no Docker, no database server).

``InMemoryRuntime`` implements the ``Runtime`` protocol with dictionaries and
``FakeEngine`` implements ``EngineDriver`` without a server behind it. Both
record what was asked of them and can be told to fail, hang or pause, so a
test can drive the pipeline and the worker through every branch in
milliseconds. The control plane needs no fake: the real
``SQLiteControlPlane`` on a temporary file is fast enough.

These fakes are for logic only. They never stand in for Docker or a real
engine in integration tests: they do not enforce resource limits, networking
or SQL, and their isolation checks pass because they are told to.

Typical use::

    runtime = InMemoryRuntime()
    engine = FakeEngine(fail={"apply_templates": TemplateError("syntax error")})
    with use_engine(engine):
        async with open_fake_app(settings, runtime=runtime) as app:
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote

from cloner import constants
from cloner import engines as _engines
from cloner.app import App
from cloner.catalog import Catalog, ResolvedTemplates
from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.controlplane import SQLiteControlPlane
from cloner.domain import (
    CheckResult,
    Credentials,
    Endpoint,
    Engine,
    RoleCredential,
    sql_identifier,
)
from cloner.engines.base import (
    BackupResult,
    ContainerDefaults,
    EngineDriver,
    MigrationHooks,
    Neighbour,
    Placement,
    TenantTarget,
)
from cloner.errors import BackupError, NotReady, RuntimeFault, RuntimeUnavailable
from cloner.metrics import Metrics
from cloner.migrations.errors import MigrationConflict, MigrationError
from cloner.runtime.base import (
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    OwnedResources,
    Runtime,
    VolumeInfo,
)
from cloner.secrets import TENANT_ROLES, Vault
from cloner.settings import Settings

if TYPE_CHECKING:
    from cloner.runtime.docker import DockerRuntime

__all__ = [
    "DEFAULT_STATS",
    "DUMP_MAGIC",
    "FAKE_CHECKS",
    "FakeContainer",
    "FakeEngine",
    "InMemoryRuntime",
    "open_fake_app",
    "use_engine",
]

#: First bytes of a PostgreSQL custom-format archive; fake dumps start with them too.
DUMP_MAGIC = b"PGDMP"

#: Names of the checks ``FakeEngine.prove_isolation`` reports, in order.
FAKE_CHECKS = (
    "app_reads_and_writes_own_database",
    "readonly_reads_cannot_write",
    "roles_not_privileged",
    "app_cannot_escalate",
    "public_has_no_privileges",
    "neighbours_refuse_tenant_credentials",
)

_FIRST_HOST_PORT = 49153

#: What ``InMemoryRuntime.stats`` answers for a running container unless told otherwise.
DEFAULT_STATS = ContainerStats(memory_bytes=32 * 1024 * 1024, cpu_cores=0.02,
                               memory_limit_bytes=256 * 1024 * 1024)

D = TypeVar("D", bound=EngineDriver)


def _raise_injected(
    name: str, fail_next: dict[str, list[BaseException]], fail: dict[str, BaseException]
) -> None:
    """Raise the next one-shot fault for ``name``, else its standing fault, if any."""
    queued = fail_next.get(name)
    if queued:
        raise queued.pop(0)
    if name in fail:
        raise fail[name]


# ---------------------------------------------------------------------- runtime


@dataclass
class FakeContainer:
    """One container held by ``InMemoryRuntime`` (mutable, so tests can crash it)."""

    id: str
    name: str
    image: str
    labels: dict[str, str]
    status: str
    host_ip: str | None
    host_port: int | None
    networks: tuple[str, ...]
    volume_name: str
    spec: ContainerSpec
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def info(self) -> ContainerInfo:
        """What a runtime reports about this container."""
        return ContainerInfo(
            id=self.id, name=self.name, status=self.status, labels=dict(self.labels),
            image=self.image, host_ip=self.host_ip, host_port=self.host_port,
            networks=self.networks, ip_address=None, created_at=self.created_at,
        )


class InMemoryRuntime:
    """A ``Runtime`` backed by dictionaries, with call recording and fault injection.

    It behaves like ``DockerRuntime`` where the pipeline can tell the
    difference: labels outside ``cloner.`` are refused, a container of an
    earlier request is replaced (and its volume recreated), absent names are
    fine to remove, and only resources labelled with this install's id are
    "ours".

    Fault injection: ``fail_next["ensure_container"] = [RuntimeFault("hiccup")]``
    makes the next call raise once; ``fail["exec_to_file"] = exc`` makes every
    call raise until removed. Every call is appended to ``calls`` as
    ``(method, subject)`` before any fault is raised.

    Containers and volumes are stamped with their creation time
    (``FakeContainer.created_at``, ``volume_created``); ``backdate`` ages them
    so orphan-grace logic can be tested without sleeping. ``stats`` answers
    ``stats_result`` for running containers (a small default sample otherwise).
    """

    def __init__(self, install_id: str = "test-install") -> None:
        self.install_id = install_id
        self.containers: dict[str, FakeContainer] = {}
        #: volume name → labels
        self.volumes: dict[str, dict[str, str]] = {}
        #: volume name → creation time (kept in step with ``volumes``)
        self.volume_created: dict[str, datetime] = {}
        #: container name → what ``stats`` answers while it runs (default: ``DEFAULT_STATS``)
        self.stats_result: dict[str, ContainerStats] = {}
        #: volume name → what ``volume_sizes`` reports for it (default 0)
        self.volume_bytes: dict[str, int] = {}
        #: network name → inter-container traffic enabled (``False`` is the isolated kind)
        self.networks: dict[str, bool] = {}
        self.images: set[str] = set()
        self.logs: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        #: (container, user, command) of every exec
        self.exec_commands: list[tuple[str, str, list[str]]] = []
        self.fail_next: dict[str, list[BaseException]] = {}
        self.fail: dict[str, BaseException] = {}
        #: What ``exec`` and ``exec_with_stdin`` answer.
        self.exec_result: tuple[int, str] = (0, "")
        #: Bytes ``exec_to_file`` writes; ``None`` writes ``DUMP_MAGIC`` + the container name.
        self.dump_payload: bytes | None = None
        self.available = True
        self.closed = False
        self._next_port = _FIRST_HOST_PORT

    # -------------------------------------------------------------- helpers

    def _enter(self, method: str, subject: str = "") -> None:
        self.calls.append((method, subject))
        _raise_injected(method, self.fail_next, self.fail)

    def _labels(self, extra: dict[str, str]) -> dict[str, str]:
        return {constants.LABEL_MANAGED: "true", constants.LABEL_INSTALL: self.install_id,
                **extra}

    def _ours(self, labels: dict[str, str]) -> bool:
        return (labels.get(constants.LABEL_MANAGED) == "true"
                and labels.get(constants.LABEL_INSTALL) == self.install_id)

    def called(self, method: str) -> list[str]:
        """Subjects (container, volume, network or image names) of every call to ``method``."""
        return [subject for name, subject in self.calls if name == method]

    def container(self, name: str) -> FakeContainer | None:
        """The container called ``name``, or None."""
        return self.containers.get(name)

    def set_status(self, name: str, status: str) -> None:
        """Simulate a container changing state behind our back (``exited``, ``dead`` …)."""
        self.containers[name].status = status

    def backdate(self, name: str, seconds: float) -> None:
        """Make the container and/or volume called ``name`` ``seconds`` older."""
        delta = timedelta(seconds=seconds)
        if name in self.containers:
            self.containers[name].created_at -= delta
        if name in self.volume_created:
            self.volume_created[name] -= delta

    # ------------------------------------------------------------- protocol

    async def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` when ``available`` is False."""
        self._enter("ping")
        if not self.available:
            raise RuntimeUnavailable("in-memory runtime marked unavailable")

    async def ensure_network(self, name: str) -> None:
        """Create the network with inter-container traffic disabled, if absent."""
        self._enter("ensure_network", name)
        self.networks.setdefault(name, False)

    async def network_isolated(self, name: str) -> bool:
        """True when the network exists and inter-container traffic is disabled."""
        self._enter("network_isolated", name)
        return name in self.networks and not self.networks[name]

    async def ensure_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create-or-adopt and start; a container of another request is replaced."""
        self._enter("ensure_container", spec.name)
        for key in spec.labels:
            if not key.startswith(constants.LABEL_PREFIX):
                raise RuntimeFault(f"label {key!r} is outside the cloner. namespace")
        request = spec.labels.get(constants.LABEL_REQUEST)
        existing = self.containers.get(spec.name)
        if existing is not None:
            if not self._ours(existing.labels):
                raise RuntimeFault(f"container {spec.name} exists but is not managed by us")
            if existing.labels.get(constants.LABEL_REQUEST) != request:
                del self.containers[spec.name]
                existing = None
        if existing is None:
            if spec.network not in self.networks:
                raise RuntimeFault(f"network {spec.network} not found")
            if any(c.volume_name == spec.volume_name
                   and c.labels.get(constants.LABEL_ROLE) == constants.ROLE_VOLUME_DUMP
                   for c in self.containers.values()):
                raise RuntimeFault(f"volume {spec.volume_name} is being backed up")
            self._ensure_volume(spec.volume_name, spec.labels, request)
            existing = FakeContainer(
                id=uuid.uuid4().hex, name=spec.name, image=spec.image,
                labels=self._labels(spec.labels), status="created",
                host_ip=spec.bind_host, host_port=self._next_port,
                networks=(spec.network,), volume_name=spec.volume_name, spec=spec,
            )
            self._next_port += 1
            self.containers[spec.name] = existing
        existing.status = "running"
        return existing.info()

    def _ensure_volume(self, name: str, labels: dict[str, str], request: str | None) -> None:
        current = self.volumes.get(name)
        if current is not None:
            if not self._ours(current):
                raise RuntimeFault(f"volume {name} exists but is not managed by us")
            if current.get(constants.LABEL_REQUEST) == request:
                return
        # Absent, or left over from an earlier request: a new request starts empty.
        self.volumes[name] = self._labels(labels)
        self.volume_created[name] = datetime.now(UTC)

    async def inspect(self, name: str) -> ContainerInfo | None:
        """The container if it exists and is ours."""
        self._enter("inspect", name)
        container = self.containers.get(name)
        if container is None or not self._ours(container.labels):
            return None
        return container.info()

    async def start(self, name: str) -> ContainerInfo:
        """Mark a container running; ``RuntimeFault`` if absent."""
        self._enter("start", name)
        container = self.containers.get(name)
        if container is None:
            raise RuntimeFault(f"no container {name}")
        container.status = "running"
        return container.info()

    async def remove_container(self, name: str) -> None:
        """Forget a container of ours; absent is fine."""
        self._enter("remove_container", name)
        container = self.containers.get(name)
        if container is not None and self._ours(container.labels):
            del self.containers[name]

    async def remove_volume(self, name: str) -> None:
        """Forget a volume of ours; absent is fine."""
        self._enter("remove_volume", name)
        labels = self.volumes.get(name)
        if labels is not None and self._ours(labels):
            del self.volumes[name]
            self.volume_created.pop(name, None)

    async def volume_exists(self, name: str) -> bool:
        """True if the volume exists (ours or not, as with Docker)."""
        self._enter("volume_exists", name)
        return name in self.volumes

    async def volume_info(self, name: str) -> VolumeInfo | None:
        """The volume and its labels if it exists and is ours."""
        self._enter("volume_info", name)
        labels = self.volumes.get(name)
        if labels is None or not self._ours(labels):
            return None
        return VolumeInfo(name, dict(labels), self.volume_created.get(name))

    async def start_volume_helper(self, spec: ContainerSpec) -> ContainerInfo:
        """Run a network-less helper on an existing volume of ours no other container uses."""
        self._enter("start_volume_helper", spec.name)
        labels = self.volumes.get(spec.volume_name)
        if labels is None or not self._ours(labels):
            raise RuntimeFault(f"volume {spec.volume_name} does not exist")
        stale = self.containers.get(spec.name)
        if stale is not None:
            role = spec.labels.get(constants.LABEL_ROLE)
            if not self._ours(stale.labels) or stale.labels.get(constants.LABEL_ROLE) != role:
                raise RuntimeFault(f"container {spec.name} is not a {role} helper")
            del self.containers[spec.name]
        busy = sorted(c.name for c in self.containers.values()
                      if c.volume_name == spec.volume_name)
        if busy:
            raise RuntimeFault(f"volume {spec.volume_name} is in use by {', '.join(busy)}")
        helper = FakeContainer(
            id=uuid.uuid4().hex, name=spec.name, image=spec.image,
            labels=self._labels(spec.labels), status="running", host_ip=None, host_port=None,
            networks=(), volume_name=spec.volume_name, spec=spec,
        )
        self.containers[spec.name] = helper
        return helper.info()

    def _running(self, name: str) -> FakeContainer:
        container = self.containers.get(name)
        if container is None or container.status != "running":
            raise RuntimeFault(f"container {name} is not running")
        return container

    async def exec_to_file(
        self, name: str, cmd: list[str], dest: Path, user: str, *,
        timeout_s: float | None = None,  # noqa: ARG002 - instant here
    ) -> int:
        """Write ``dump_payload`` (default: ``DUMP_MAGIC`` + name) to ``dest``; bytes written."""
        self._enter("exec_to_file", name)
        self.exec_commands.append((name, user, list(cmd)))
        self._running(name)
        payload = self.dump_payload
        if payload is None:
            payload = DUMP_MAGIC + b"\x00fake dump of " + name.encode()
        await asyncio.to_thread(dest.write_bytes, payload)
        return len(payload)

    async def exec_with_stdin(
        self, name: str, cmd: list[str], source: Path, user: str, *,
        timeout_s: float | None = None,  # noqa: ARG002 - instant here
    ) -> tuple[int, str]:
        """Read ``source`` (it must exist) and answer ``exec_result``."""
        self._enter("exec_with_stdin", name)
        self.exec_commands.append((name, user, list(cmd)))
        self._running(name)
        await asyncio.to_thread(source.read_bytes)
        return self.exec_result

    async def exec(
        self, name: str, cmd: list[str], user: str, *,
        timeout_s: float | None = None,  # noqa: ARG002 - instant here
    ) -> tuple[int, str]:
        """Answer ``exec_result`` for a running container."""
        self._enter("exec", name)
        self.exec_commands.append((name, user, list(cmd)))
        self._running(name)
        return self.exec_result

    async def logs_tail(self, name: str, lines: int = 20) -> str:
        """The last ``lines`` of ``logs[name]``, or ''."""
        self._enter("logs_tail", name)
        return "\n".join(self.logs.get(name, "").splitlines()[-lines:])

    async def owned(self) -> OwnedResources:
        """Containers and volumes labelled with this install id, and the networks."""
        self._enter("owned")
        volumes = [(n, labels) for n, labels in self.volumes.items() if self._ours(labels)]
        return OwnedResources(
            containers=tuple(c.info() for c in self.containers.values() if self._ours(c.labels)),
            volumes=tuple(n for n, _labels in volumes),
            networks=tuple(self.networks),
            volume_info=tuple(
                VolumeInfo(n, dict(labels), self.volume_created.get(n)) for n, labels in volumes
            ),
        )

    async def stats(self, name: str) -> ContainerStats | None:
        """``stats_result[name]`` (or ``DEFAULT_STATS``) for a running container of ours."""
        self._enter("stats", name)
        container = self.containers.get(name)
        if container is None or not self._ours(container.labels) or container.status != "running":
            return None
        return self.stats_result.get(name, DEFAULT_STATS)

    async def volume_sizes(self) -> dict[str, int]:
        """``volume_bytes[name]`` (0 when unset) for every volume of ours."""
        self._enter("volume_sizes")
        return {n: self.volume_bytes.get(n, 0)
                for n, labels in self.volumes.items() if self._ours(labels)}

    async def image_exists(self, image: str) -> bool:
        """True if the image was pulled (or added to ``images``)."""
        self._enter("image_exists", image)
        return image in self.images

    async def pull(self, image: str, timeout_s: float) -> None:  # noqa: ARG002 - instant here
        """Add the image to ``images``."""
        self._enter("pull", image)
        self.images.add(image)

    async def close(self) -> None:
        """Mark the runtime closed."""
        self._enter("close")
        self.closed = True


# ----------------------------------------------------------------------- engine


class FakeEngine:
    """An ``EngineDriver`` without a server: records hook calls and fails on demand.

    Knobs (all plain attributes, change them between steps of a test):

    - ``fail[hook] = exc`` raises ``exc`` on every call of ``hook``;
      ``fail_next[hook] = [exc1, exc2]`` raises each once, in order.
    - ``delay_s[hook]`` sleeps before the hook acts; ``hold[hook]`` (an
      ``asyncio.Event``) blocks it until set. ``await wait_entered(hook)``
      returns once a hook has started.
    - ``failing_checks`` names checks of ``FAKE_CHECKS`` that ``prove_isolation``
      reports as failed.
    - ``probe_seconds`` is what a successful ``probe`` answers (fail it like any
      other hook: ``fail["probe"] = NotReady(...)``); ``probed`` records the
      endpoint each tenant was last probed at.

    ``calls`` lists ``(hook, tenant_id)`` in call order; ``backup`` dumps through
    the runtime's ``exec_to_file`` and checks the ``PGDMP`` magic like the real
    PostgreSQL driver.
    """

    placement = Placement.CONTAINER
    roles: tuple[str, ...] = TENANT_ROLES
    superuser = "postgres"
    container_port: int = 5432
    #: Tests raise it to make registered tenants due for a ``harden`` request.
    hardening_level: int = 1
    transient_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        engine: Engine = Engine.POSTGRES,
        *,
        fail: dict[str, BaseException] | None = None,
        fail_next: dict[str, list[BaseException]] | None = None,
        failing_checks: Sequence[str] = (),
    ) -> None:
        self.engine = engine
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, BaseException] = dict(fail or {})
        self.fail_next: dict[str, list[BaseException]] = {
            hook: list(excs) for hook, excs in (fail_next or {}).items()
        }
        self.failing_checks: set[str] = set(failing_checks)
        self.delay_s: dict[str, float] = {}
        self.hold: dict[str, asyncio.Event] = {}
        #: tenant id → neighbours its last ``prove_isolation`` was given
        self.neighbours: dict[str, tuple[Neighbour, ...]] = {}
        #: tenant id → templates applied to it
        self.applied: dict[str, ResolvedTemplates] = {}
        #: tenant id → what ``row_counts`` answers
        self.rows: dict[str, dict[str, int]] = {}
        #: tenant id → connection limit passed to ``apply_rbac``
        self.connection_limits: dict[str, int] = {}
        self.warnings: list[str] = []
        self.restored: list[tuple[str, Path]] = []
        #: Credential rotation: tenant id → logins created and not yet retired → role.
        self.logins: dict[str, dict[str, str]] = {}
        #: Schema migrations: tenant id → what its schema_info says (set from the applied
        #: root template on first use); backup path → that state when it was taken.
        self.schemas: dict[str, MigrationState] = {}
        self.snapshots: dict[Path, MigrationState] = {}
        #: Labels of migration steps (``v1.1-v1.2 up``) that fail when applied.
        self.failing_steps: set[str] = set()
        #: False makes a failing step leave the schema half-changed (``dirty``), like MySQL.
        self.transactional_ddl = True
        #: tenants whose schema a failed non-transactional step left half-changed
        self.dirty: set[str] = set()
        #: tenant id → the step a failed non-transactional step marked in progress
        self.in_progress: dict[str, str] = {}
        #: tenants whose application logins are fenced (``fence_logins``)
        self.fenced: set[str] = set()
        #: what ``probe`` answers (seconds) when it does not fail
        self.probe_seconds = 0.001
        #: tenant id → endpoint its last successful ``probe`` reached
        self.probed: dict[str, Endpoint] = {}
        self._entered: dict[str, asyncio.Event] = {}

    def hooks(self, tenant_id: str | None = None) -> list[str]:
        """Hook names called so far, optionally for one tenant only."""
        return [hook for hook, tid in self.calls if tenant_id is None or tid == tenant_id]

    def _entered_event(self, hook: str) -> asyncio.Event:
        return self._entered.setdefault(hook, asyncio.Event())

    async def wait_entered(self, hook: str, timeout_s: float = 5.0) -> None:
        """Return once ``hook`` has been called (at least once) since this engine was made."""
        async with asyncio.timeout(timeout_s):
            await self._entered_event(hook).wait()

    def _enter_sync(self, hook: str, tenant_id: str) -> None:
        self.calls.append((hook, tenant_id))
        self._entered_event(hook).set()
        _raise_injected(hook, self.fail_next, self.fail)

    async def _enter(self, hook: str, tenant_id: str) -> None:
        # Recorded and signalled first so a test can see a hook that then hangs or fails.
        self.calls.append((hook, tenant_id))
        self._entered_event(hook).set()
        if hook in self.delay_s:
            await asyncio.sleep(self.delay_s[hook])
        if hook in self.hold:
            await self.hold[hook].wait()
        _raise_injected(hook, self.fail_next, self.fail)

    # ------------------------------------------------------------- protocol

    def database_name(self, tenant_id: str) -> str:
        """``acme-corp`` → ``acme_corp``, as for PostgreSQL."""
        return sql_identifier(tenant_id)

    def container_spec(
        self, tenant_id: str, credentials: Credentials, labels: dict[str, str],
        defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """A minimal spec honouring the defaults (image, bind host, network, limits)."""
        self._enter_sync("container_spec", tenant_id)
        return defaults.tenant_spec(
            tenant_id, dict(labels), uid=999, port=self.container_port, volume_mount="/data",
            env={"BOOTSTRAP_PASSWORD": credentials.bootstrap_password}, command=(),
            private_dirs={},
        )

    async def _enter_within(
        self, hook: str, tenant_id: str, timeout_s: float, message: str
    ) -> None:
        # Our own deadline becomes NotReady, as the real driver reports it; a timeout
        # from an enclosing scope propagates untouched.
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                await self._enter(hook, tenant_id)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise NotReady(message) from exc

    async def wait_ready(self, target: TenantTarget, timeout_s: float) -> None:
        """Ready at once unless a delay, hold or fault is configured; ``NotReady`` past timeout."""
        await self._enter_within("wait_ready", target.tenant_id, timeout_s,
                                 f"fake server not ready after {timeout_s:g}s")

    async def probe(self, target: TenantTarget, timeout_s: float) -> float:
        """``probe_seconds`` unless delayed, held or failing; ``NotReady`` past ``timeout_s``."""
        await self._enter_within("probe", target.tenant_id, timeout_s,
                                 f"fake server did not answer the probe within {timeout_s:g}s")
        self.probed[target.tenant_id] = target.endpoint
        return self.probe_seconds

    async def apply_templates(self, target: TenantTarget, templates: ResolvedTemplates) -> None:
        """Remember which templates were applied."""
        await self._enter("apply_templates", target.tenant_id)
        self.applied[target.tenant_id] = templates

    async def apply_rbac(self, target: TenantTarget, connection_limit: int) -> None:
        """Remember the connection limit the roles were given."""
        await self._enter("apply_rbac", target.tenant_id)
        self.connection_limits[target.tenant_id] = connection_limit

    async def create_login(
        self, target: TenantTarget, role: str, login: RoleCredential, connection_limit: int
    ) -> None:
        """Remember the login a rotation created (``logins``: tenant → username → role)."""
        del connection_limit
        await self._enter("create_login", target.tenant_id)
        self.logins.setdefault(target.tenant_id, {})[login.username] = role

    async def retire_login(self, target: TenantTarget, role: str, login: RoleCredential) -> None:
        """Forget a login a rotation retired."""
        del role
        await self._enter("retire_login", target.tenant_id)
        self.logins.setdefault(target.tenant_id, {}).pop(login.username, None)

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        """``FAKE_CHECKS``, passing unless named in ``failing_checks``."""
        await self._enter("prove_isolation", target.tenant_id)
        self.neighbours[target.tenant_id] = tuple(neighbours)
        return [
            CheckResult(name, name not in self.failing_checks,
                        "fake check failed" if name in self.failing_checks else "fake check")
            for name in FAKE_CHECKS
        ]

    async def backup(
        self, runtime: Runtime, target: TenantTarget, dest: Path, *,
        lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,  # noqa: ARG002 - no lock to wait for here
    ) -> BackupResult:
        """Dump through ``runtime.exec_to_file``, verify the magic, checksum, move into place."""
        await self._enter("backup", target.tenant_id)
        if target.container_name is None:
            raise BackupError("fake backup needs the tenant container")
        partial = dest.with_suffix(dest.suffix + ".partial")
        try:
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
            size = await runtime.exec_to_file(
                target.container_name, ["pg_dump", "-Fc", "-d", target.database], partial,
                user="999:999",
            )
            data = await asyncio.to_thread(partial.read_bytes)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise BackupError(f"fake dump of {target.tenant_id} failed: {exc}") from exc
        if not data.startswith(DUMP_MAGIC):
            partial.unlink(missing_ok=True)
            raise BackupError(f"fake dump of {target.tenant_id} produced no valid archive")
        await asyncio.to_thread(partial.chmod, 0o600)
        await asyncio.to_thread(partial.replace, dest)
        with contextlib.suppress(MigrationError):  # no schema yet: nothing to snapshot
            self.snapshots[dest] = self._schema(target.tenant_id)
        return BackupResult(dest, size, hashlib.sha256(data).hexdigest(), "pg_dump-custom")

    async def restore(self, runtime: Runtime, target: TenantTarget, source: Path) -> None:
        """Feed ``source`` through ``runtime.exec_with_stdin``; ``BackupError`` on non-zero."""
        await self._enter("restore", target.tenant_id)
        if target.container_name is None:
            raise BackupError("fake restore needs the tenant container")
        code, output = await runtime.exec_with_stdin(
            target.container_name, ["pg_restore", "-d", target.database], source,
            user="999:999",
        )
        if code != 0:
            raise BackupError(f"fake restore into {target.tenant_id} failed: {output[-300:]}")
        self.restored.append((target.tenant_id, source))
        if source in self.snapshots:
            self.schemas[target.tenant_id] = self.snapshots[source]

    async def row_counts(self, target: TenantTarget) -> dict[str, int]:
        """``rows[tenant_id]`` (empty by default)."""
        await self._enter("row_counts", target.tenant_id)
        return dict(self.rows.get(target.tenant_id, {}))

    async def template_warnings(self, target: TenantTarget) -> list[str]:
        """``warnings`` (empty by default)."""
        await self._enter("template_warnings", target.tenant_id)
        return list(self.warnings)

    # ------------------------------------------------------------ migrations

    def _schema(self, tenant_id: str) -> MigrationState:
        if tenant_id not in self.schemas:
            if tenant_id not in self.applied:
                raise MigrationError(f"fake tenant {tenant_id} has no schema")
            self.schemas[tenant_id] = MigrationState(self.applied[tenant_id].root.version)
        return self.schemas[tenant_id]

    async def migration_state(self, target: TenantTarget) -> MigrationState:
        """The tenant's fake ``schema_info``: its root template version and applied steps."""
        await self._enter("migration_state", target.tenant_id)
        state = self._schema(target.tenant_id)
        return replace(state, in_progress=self.in_progress.get(target.tenant_id))

    async def apply_migration_step(
        self, target: TenantTarget, script: MigrationScript, lock_timeout_s: float,  # noqa: ARG002
    ) -> AppliedMigration:
        """Like the real engine: conflicts refused, a repeated last step skipped, and
        ``failing_steps`` fail (leaving the tenant ``dirty`` without transactional DDL)."""
        tenant_id = target.tenant_id
        await self._enter("apply_migration_step", tenant_id)
        state = self._schema(tenant_id)
        last = state.applied[-1] if state.applied else None
        if (last is not None and last.record_name == script.record_name
                and last.version == script.to_version):
            return last
        if state.current_version != script.from_version:
            raise MigrationConflict(
                f"fake tenant {tenant_id} is at {state.current_version}, "
                f"{script.label} starts from {script.from_version}"
            )
        if script.label in self.failing_steps:
            if not self.transactional_ddl:
                self.dirty.add(tenant_id)
                self.in_progress[tenant_id] = script.record_name
            raise MigrationError(f"fake step {script.label} failed on {tenant_id}")
        applied = AppliedMigration(script.step, script.direction, script.to_version,
                                   script.checksum, datetime.now(UTC), 1)
        kept = tuple(a for a in state.applied
                     if (a.record_name, a.version) != (applied.record_name, applied.version))
        self.schemas[tenant_id] = MigrationState(state.root_version, (*kept, applied))
        return applied

    async def realign_migration_checksum(
        self, target: TenantTarget, applied: AppliedMigration, checksum: str
    ) -> None:
        """Replace the checksum recorded for one applied step."""
        await self._enter("realign_migration_checksum", target.tenant_id)
        state = self._schema(target.tenant_id)
        self.schemas[target.tenant_id] = MigrationState(state.root_version, tuple(
            replace(a, checksum=checksum)
            if (a.record_name, a.version) == (applied.record_name, applied.version) else a
            for a in state.applied
        ))

    async def schema_catalogue(self, target: TenantTarget) -> dict[str, Any]:
        """A stand-in catalogue: the version the schema is at, and whether it is half-changed."""
        await self._enter("schema_catalogue", target.tenant_id)
        return {"version": self._schema(target.tenant_id).current_version,
                "dirty": target.tenant_id in self.dirty}

    async def drop_database(self, target: TenantTarget) -> None:
        """Forget the tenant's schema (``restore`` brings back a snapshot)."""
        await self._enter("drop_database", target.tenant_id)
        self.schemas.pop(target.tenant_id, None)
        self.applied.pop(target.tenant_id, None)
        self.dirty.discard(target.tenant_id)
        self.in_progress.pop(target.tenant_id, None)

    async def fence_logins(self, target: TenantTarget, fenced: bool) -> None:
        """Remember whether the tenant's application logins are fenced."""
        await self._enter("fence_logins", target.tenant_id)
        (self.fenced.add if fenced else self.fenced.discard)(target.tenant_id)

    def dsn(self, endpoint: Endpoint, username: str, password: str) -> str:
        """``postgresql://user:password@host:port/database``."""
        return (
            f"postgresql://{quote(username, safe='')}:{quote(password, safe='')}"
            f"@{endpoint.host}:{endpoint.port}/{endpoint.database}"
        )


@contextmanager
def use_engine(driver: D) -> Iterator[D]:
    """Make ``get_engine(driver.engine)`` return ``driver`` inside the block, then restore.

    Every lookup (``TenantService``, the pipelines, ``Services.target``) goes
    through ``cloner.engines.get_engine``, so swapping its registry entry is
    enough. Not safe for tests running concurrently in one process.
    """
    registry = _engines._DRIVERS
    previous = registry.get(driver.engine)
    registry[driver.engine] = driver
    try:
        yield driver
    finally:
        if previous is None:
            registry.pop(driver.engine, None)
        else:
            registry[driver.engine] = previous


@asynccontextmanager
async def open_fake_app(
    settings: Settings,
    *,
    runtime: InMemoryRuntime | None = None,
    install_id: str = "test-install",
) -> AsyncIterator[App]:
    """An ``App`` with the real control plane, catalog, vault and metrics and a fake runtime.

    Like ``App.open`` but without Docker and without key files: the data and
    backups directories are created, the SQLite control plane is opened on
    ``settings.control_plane_path``, the vault gets a fresh key. Engines come
    from the registry; wrap the call in ``use_engine(FakeEngine())`` for a
    server-less engine.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.backups_dir.mkdir(exist_ok=True, mode=0o700)
    control_plane = SQLiteControlPlane(settings.control_plane_path)
    await control_plane.open()
    fake_runtime = runtime if runtime is not None else InMemoryRuntime(install_id)
    app = App(
        settings=settings,
        control_plane=control_plane,
        # App names DockerRuntime (the CLI hands it to the image builder); everything the
        # pipelines and workers call on it is the Runtime protocol the fake implements.
        runtime=cast("DockerRuntime", fake_runtime),
        catalog=Catalog(settings.templates_dir, settings.industry_templates_dir),
        vault=Vault(Vault.new_key()),
        metrics=Metrics(),
        install_id=install_id,
        admin_token=secrets.token_urlsafe(32),
        owner_id=uuid.uuid4().hex,
    )
    try:
        yield app
    finally:
        await fake_runtime.close()
        await control_plane.close()


def _check_protocols(runtime: InMemoryRuntime, engine: FakeEngine) -> None:
    """Never called: lets mypy prove the fakes satisfy the protocols they stand in for."""
    _runtime: Runtime = runtime
    _driver: EngineDriver = engine
    _hooks: MigrationHooks = engine
    del _runtime, _driver, _hooks
