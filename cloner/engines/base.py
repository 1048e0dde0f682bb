"""The engine interface: the hooks the pipeline calls, in order, for one tenant database.

``container_spec`` → ``wait_ready`` → ``apply_templates`` → ``apply_rbac`` →
``prove_isolation``; ``backup`` when deprovisioning or on demand, and ``restore``
in place of ``apply_templates`` when a tenant is restored from a backup. Every
hook is idempotent: after a crash the pipeline calls it again and it finishes
or does nothing. The health monitor calls ``probe`` and ``prove_isolation``
again on live tenants.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from cloner import constants
from cloner.catalog import ResolvedTemplates
from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.domain import (
    CheckResult,
    Credentials,
    Endpoint,
    Engine,
    RoleCredential,
    container_name,
    volume_name,
)
from cloner.runtime.base import ContainerSpec, Runtime

if TYPE_CHECKING:
    from cloner.settings import Settings


class Placement(enum.StrEnum):
    """Where an engine's tenant databases live."""

    #: A server in the tenant's own container, reached over TCP on the bind host.
    CONTAINER = "container"
    #: A file in cloner's data directory, opened in-process (no server, no logins).
    EMBEDDED = "embedded"


class EndpointGuard(Protocol):
    """Vouches that an endpoint still leads to the tenant's own server.

    Called just before cloner sends one of the tenant's secrets there: a port
    freed by a stopped container can be bound by anyone on the host, and a
    password must never reach such a squatter (``pipeline/endpoints.py``).
    """

    async def confirm(self, endpoint: Endpoint) -> None:
        """Return if ``endpoint`` is vouched for; raise ``EndpointNotVouched`` otherwise."""

    async def problem(self, endpoint: Endpoint) -> str | None:
        """Why ``endpoint`` is not vouched for, or None when it is."""


#: The logins a migration fences: the applications' accounts. cloner's own (owner,
#: superuser) keep working, because the migration runs through them.
FENCED_ROLES = ("app", "readonly")


def fenced_logins(credentials: Credentials) -> tuple[str, ...]:
    """Login names ``MigrationHooks.fence_logins`` locks: every login the tenant's
    credentials hold for the application roles, whatever their names are now (a
    credential rotation's ``pending`` and ``retiring`` logins too, where present)."""
    names: dict[str, None] = {}
    for field_name in ("roles", "pending", "retiring"):
        held = getattr(credentials, field_name, None) or {}
        for role in FENCED_ROLES:
            if role in held:
                names[held[role].username] = None
    return tuple(names)


@dataclass(frozen=True)
class SessionLimits:
    """Per-statement limits every session cloner opens on a tenant server carries.

    Applied at connect time (PostgreSQL: the startup packet, which outranks any
    ``ALTER DATABASE/ROLE … SET`` a tenant made; MariaDB: ``SET SESSION`` before
    the first statement), so a tenant's lock or slow object cannot stall
    cloner's own sessions without bound. MongoDB operations are bounded by the
    client's socket timeout instead.
    """

    statement_timeout_s: float = constants.ADMIN_STATEMENT_TIMEOUT_S
    lock_timeout_s: float = constants.ADMIN_LOCK_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        """``CLONER_ADMIN_STATEMENT_TIMEOUT_S`` and ``CLONER_ADMIN_LOCK_TIMEOUT_S``."""
        return cls(settings.admin_statement_timeout_s, settings.admin_lock_timeout_s)


@dataclass(frozen=True)
class TenantTarget:
    """How to reach one tenant's database, with its secrets (never logged)."""

    tenant_id: str
    database: str
    endpoint: Endpoint
    credentials: Credentials
    container_name: str | None = None
    #: Where an embedded engine keeps its files (``<data_dir>/<engine>``); None otherwise.
    storage_root: Path | None = None
    #: Statement and lock timeouts of every session opened for this target.
    session: SessionLimits = SessionLimits()
    #: Confirms the endpoint is the tenant's own container before a secret is sent.
    #: The daemon's targets always carry one; None (tests, scratch servers) skips it.
    guard: EndpointGuard | None = None
    #: The tenant's recorded hardening level is below the engine's: the proof tolerates
    #: the state an older ``apply_rbac`` left (and says so) until a ``harden`` re-applies it.
    legacy_hardening: bool = False

    def __repr__(self) -> str:
        return f"TenantTarget(tenant_id={self.tenant_id!r}, endpoint={self.endpoint!r})"

    async def vouch(self) -> None:
        """Raise ``EndpointNotVouched`` unless the endpoint is still this tenant's own.

        Engines call it right before every connection that carries one of the
        tenant's secrets (readiness, probe, sessions).
        """
        if self.guard is not None:
            await self.guard.confirm(self.endpoint)


@dataclass(frozen=True)
class Neighbour:
    """Another tenant on the same host, for the cross-tenant refusal check.

    Only tenants cloner currently vouches for are neighbours (READY, container
    identity and published port matched against the runtime): see
    ``pipeline/verify.py``.
    """

    tenant_id: str
    endpoint: Endpoint
    database: str
    #: The neighbour's own target (its credentials and endpoint guard): the check opens
    #: the neighbour's privileged session with it. None for embedded engines.
    target: TenantTarget | None = None


@dataclass(frozen=True)
class BackupResult:
    """A finished logical backup."""

    path: Path
    size_bytes: int
    sha256: str
    format: str
    #: Entries the engine's own restore tool read back from the archive (0 = not checked).
    restorable_entries: int = 0


@dataclass(frozen=True)
class ContainerDefaults:
    """Settings an engine needs to shape its container."""

    image: str
    bind_host: str
    network: str
    memory_limit_bytes: int
    nano_cpus: int
    pids_limit: int
    shm_size_bytes: int
    connection_limit: int
    #: ``Settings.mysql_innodb_buffer_pool_mb``; only the mysql engine reads it.
    mysql_innodb_buffer_pool_mb: int = constants.MYSQL_INNODB_BUFFER_POOL_MB
    #: ``Settings.tenant_log_max_size`` / ``tenant_log_max_files``: every container's log rotates.
    log_max_size: str = constants.TENANT_LOG_MAX_SIZE
    log_max_files: int = constants.TENANT_LOG_MAX_FILES
    #: Volume size limit asked of the volume driver (``Settings.tenant_volume_size_limit``).
    volume_size_bytes: int | None = None

    def tenant_spec(
        self, tenant_id: str, labels: dict[str, str], *, uid: int, port: int,
        volume_mount: str, env: dict[str, str], command: tuple[str, ...],
        private_dirs: dict[str, str],
    ) -> ContainerSpec:
        """A tenant container the way cloner runs every engine.

        Its own name, volume and labels; the port published on the bind host
        only, on the tenant network; running as ``uid`` on a read-only root with
        a private ``/tmp``; the configured memory, CPU, pid and shm limits. The
        engine adds its data directory, environment, command and
        ``private_dirs`` (path → mode): small tmpfs owned by ``uid``, because
        Docker mounts a tmpfs root-owned and servers keep sockets and pid files
        there. The container log rotates (json-file ``max-size``/``max-file``):
        a tenant's error lines must not fill the host disk.
        """
        tmpfs = {"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"}  # noqa: S108 - in the container
        tmpfs.update({
            path: f"rw,nosuid,nodev,size=1m,uid={uid},gid={uid},mode={mode}"
            for path, mode in private_dirs.items()
        })
        return ContainerSpec(
            name=container_name(tenant_id), image=self.image, labels=labels,
            volume_name=volume_name(tenant_id), volume_mount=volume_mount, port=port,
            bind_host=self.bind_host, network=self.network, user=f"{uid}:{uid}",
            env=env, command=command, tmpfs=tmpfs, read_only=True,
            memory_limit_bytes=self.memory_limit_bytes, nano_cpus=self.nano_cpus,
            pids_limit=self.pids_limit, shm_size_bytes=self.shm_size_bytes,
            log_max_size=self.log_max_size, log_max_files=self.log_max_files,
            volume_size_bytes=self.volume_size_bytes,
        )


class EngineDriver(Protocol):
    """One database engine. Adding an engine = one module implementing this + templates."""

    engine: Engine
    placement: Placement
    #: The logins ``apply_rbac`` creates (empty for an engine without logins).
    roles: tuple[str, ...]
    #: The server's administrative login, whose password cloner alone holds.
    superuser: str
    #: The version of what ``apply_rbac`` enforces. Bump it whenever rbac or the
    #: hardening it applies changes: READY tenants recorded below it get ``apply_rbac``
    #: re-run by a ``harden`` request (``pipeline/harden.py``), and until then the proof
    #: tolerates the older shape it names (``TenantTarget.legacy_hardening``).
    hardening_level: int
    container_port: int
    #: Client-library errors that mean "not yet" (server settling, connection
    #: refused, too many connections): the pipeline retries them.
    transient_errors: tuple[type[BaseException], ...]

    def database_name(self, tenant_id: str) -> str:
        """The tenant's database name inside its server."""

    def container_spec(
        self, tenant_id: str, credentials: Credentials, labels: dict[str, str],
        defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """Image, environment, mounts and limits of the tenant container."""

    async def wait_ready(self, target: TenantTarget, timeout_s: float) -> None:
        """Probe over the real protocol until it answers; rotate the bootstrap secret."""

    async def probe(self, target: TenantTarget, timeout_s: float) -> float:
        """One health probe as the app role (connect + trivial query); seconds it took.

        Raises ``NotReady`` when the database does not answer within ``timeout_s``
        or refuses the app credentials: either way applications cannot use it.
        """

    async def apply_templates(self, target: TenantTarget, templates: ResolvedTemplates) -> None:
        """Root then overlay, in one transaction, recorded in ``schema_info``."""

    async def apply_rbac(self, target: TenantTarget, connection_limit: int) -> None:
        """Owner / app / readonly roles; nothing for PUBLIC."""

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        """The engine's part of the isolation proof."""

    async def backup(
        self, runtime: Runtime, target: TenantTarget, dest: Path, *,
        lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,
    ) -> BackupResult:
        """A compressed logical backup written to ``dest``.

        ``lock_wait_s`` bounds how long the dump waits for a table lock the
        tenant holds (``BackupError`` then): a tenant may fail its own backup,
        never pin the worker.
        """

    async def restore(self, runtime: Runtime, target: TenantTarget, source: Path) -> None:
        """Load a backup taken by ``backup`` into the tenant database, creating it if needed.

        Idempotent like every hook: a database that already holds the restored
        schema (an earlier attempt of the same request) is left as it is.
        """

    async def row_counts(self, target: TenantTarget) -> dict[str, int]:
        """Rows per table, read as the owner (for verification and tests)."""

    async def template_warnings(self, target: TenantTarget) -> list[str]:
        """Design warnings about the applied schema (no PK, unindexed FK, password columns)."""

    def dsn(self, endpoint: Endpoint, username: str, password: str) -> str:
        """A connection string for applications."""


class VolumeDumpHooks(Protocol):
    """Dump a kept volume whose tenant container is gone, with no credential at all.

    ``ContainerHost.dump_volume`` starts the engine's image on the volume as
    a short-lived helper (``Runtime.start_volume_helper``: no network, no
    port) shaped by ``volume_dump_spec``, polls ``local_ready`` and calls
    ``dump_local``, which produces exactly what ``backup`` produces, over the
    server's local socket that trusts the OS user the dump runs as (as
    ``backup`` already does). An engine without these hooks cannot take a
    final backup from a volume; ``volume_dump_hooks`` says so.
    """

    def volume_dump_spec(
        self, tenant_id: str, name: str, labels: dict[str, str], defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """The helper container: the tenant container's shape, no secret in its environment."""

    async def local_ready(self, runtime: Runtime, container: str) -> bool:
        """True once the helper's server accepts local connections."""

    async def dump_local(
        self, runtime: Runtime, container: str, tenant_id: str, dest: Path,
    ) -> BackupResult:
        """The engine's normal backup of the tenant database, written to ``dest``."""


_VOLUME_DUMP_HOOKS = ("volume_dump_spec", "local_ready", "dump_local")


def volume_dump_hooks(driver: EngineDriver) -> VolumeDumpHooks | None:
    """The engine's ``VolumeDumpHooks``, or None if it cannot dump a volume without credentials."""
    if all(hasattr(driver, name) for name in _VOLUME_DUMP_HOOKS):
        return cast("VolumeDumpHooks", driver)
    return None


class MigrationHooks(Protocol):
    """Schema-migration hooks (``cloner migrate``), next to ``EngineDriver``.

    A separate protocol so an engine gains fleet migrations when it implements
    these, without every engine having to at once; ``cloner.migrations`` asks
    for them with ``migration_hooks(driver)``. The tenant database is the
    source of truth for its own version: each step is recorded inside it, in
    the same transaction as the step where the engine allows.

    ``transactional_ddl`` says whether a step is all or nothing. When it is
    False (MySQL/MariaDB commit every DDL statement on their own), a step that
    fails part-way leaves the schema between two versions and the down steps,
    written for a complete up step, cannot be trusted: the rollout then
    restores the tenant from the backup it took before migrating instead
    (``drop_database`` + ``restore`` + ``apply_rbac``). The step is recorded
    only after it has fully run, so an interrupted step is never taken for an
    applied one.
    """

    transactional_ddl: bool

    async def migration_state(self, target: TenantTarget) -> MigrationState:
        """Root version and applied steps, as recorded inside the tenant database."""

    async def apply_migration_step(
        self, target: TenantTarget, script: MigrationScript, lock_timeout_s: float
    ) -> AppliedMigration:
        """Run one step (in a transaction where the engine allows) and record it.

        Refuses (``MigrationConflict``) unless the database is at the step's
        source version; a step already recorded as the last one applied is not
        run again (a rollout resumed after a crash). Waits at most
        ``lock_timeout_s`` for locks held by application sessions.
        """

    async def realign_migration_checksum(
        self, target: TenantTarget, applied: AppliedMigration, checksum: str
    ) -> None:
        """Record ``checksum`` for an applied step (``cloner migrate repair``)."""

    async def schema_catalogue(self, target: TenantTarget) -> dict[str, Any]:
        """The schema as data (tables, columns, types, nullability, defaults, constraints,
        indexes, privileges by role kind), JSON-serialisable and order-stable, so two
        databases can be compared for equality."""

    async def drop_database(self, target: TenantTarget) -> None:
        """Drop the tenant database (before ``restore`` puts a backup back in its place)."""

    async def fence_logins(self, target: TenantTarget, fenced: bool) -> None:
        """Refuse (``fenced``) or allow again the application logins (``fenced_logins``).

        Fencing also ends the sessions those logins already have, so nothing
        writes between the pre-migration backup and a restore of it. Both ways
        are idempotent; an engine without logins does nothing.
        """

class RotationHooks(Protocol):
    """Credential rotation (``cloner tenant rotate``), next to ``EngineDriver``.

    None of the server engines has dual passwords, so a rotation gives a role a
    second login: ``create_login`` makes it valid while the current login keeps
    working, the registry switches to it, and after a grace period
    ``retire_login`` makes the old one unusable. Both are idempotent: a rotation
    interrupted anywhere is run again from what the registry recorded.
    ``target.credentials.grantee(role)`` names the role holding the privileges.
    """

    async def create_login(
        self, target: TenantTarget, role: str, login: RoleCredential, connection_limit: int
    ) -> None:
        """Create (or reset) ``login`` with ``role``'s privileges; nothing else changes."""

    async def retire_login(self, target: TenantTarget, role: str, login: RoleCredential) -> None:
        """Refuse ``login`` from now on and end its open sessions."""


def rotation_hooks(driver: EngineDriver) -> RotationHooks | None:
    """The engine's ``RotationHooks``, or None for an engine without logins to rotate."""
    if driver.roles and hasattr(driver, "create_login") and hasattr(driver, "retire_login"):
        return cast("RotationHooks", driver)
    return None
