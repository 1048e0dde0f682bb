"""Domain types: tenant ids, states and their transitions, requests and tenant records.

Frozen dataclasses and enums inside the package; pydantic only at the edges.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from cloner import constants
from cloner.errors import InvalidInput, InvalidTransition

ChoiceT = TypeVar("ChoiceT", bound=enum.StrEnum)

_TENANT_ID = re.compile(constants.TENANT_ID_PATTERN)
_VERSION = re.compile(r"^v[0-9]{1,3}\.[0-9]{1,3}$")


class Engine(enum.StrEnum):
    """Database engines a tenant can ask for."""

    POSTGRES = "postgres"
    MYSQL = "mysql"
    MONGODB = "mongodb"
    SQLITE = "sqlite"


class Industry(enum.StrEnum):
    """Industry overlays; ``none`` applies the root template alone."""

    TECHNOLOGY = "technology"
    HEALTHCARE = "healthcare"
    FINANCE = "finance"
    NONE = "none"


class Status(enum.StrEnum):
    """Tenant lifecycle states (DESIGN.md, "Tenant ids and states")."""

    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"
    DEGRADED = "degraded"
    DEPROVISIONING = "deprovisioning"
    DEPROVISIONED = "deprovisioned"
    PURGED = "purged"
    #: A schema migration (``cloner migrate``) is changing the tenant's database: pools
    #: refuse it, the health monitor and the reconciler leave it alone.
    MIGRATING = "migrating"


_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.REQUESTED: frozenset({Status.PROVISIONING, Status.FAILED}),
    Status.PROVISIONING: frozenset({Status.PROVISIONING, Status.READY, Status.FAILED}),
    Status.READY: frozenset({Status.DEGRADED, Status.DEPROVISIONING, Status.MIGRATING}),
    Status.DEGRADED: frozenset({Status.READY, Status.DEPROVISIONING}),
    Status.FAILED: frozenset({Status.REQUESTED, Status.DEPROVISIONING}),
    Status.DEPROVISIONING: frozenset(
        {Status.DEPROVISIONING, Status.DEPROVISIONED, Status.PURGED, Status.FAILED}
    ),
    # → REQUESTED: a restore re-provisions the tenant from a backup (``RESTORABLE``).
    Status.DEPROVISIONED: frozenset({Status.PURGED, Status.DEPROVISIONING, Status.REQUESTED}),
    Status.PURGED: frozenset({Status.REQUESTED}),
    # → READY: migrated, or rolled back to its old version. → MIGRATING: a later rollout
    # adopts a tenant whose rollout died mid-way (each step is recorded in the database).
    Status.MIGRATING: frozenset({Status.READY, Status.MIGRATING}),
}

#: States in which a new ``tenant create`` for the same id is accepted.
RECREATABLE = frozenset({Status.FAILED, Status.PURGED})

#: States from which ``tenant restore`` brings a tenant back from a backup. A deprovisioned
#: tenant is never re-created empty (its volume holds data); it can only be restored.
RESTORABLE = frozenset({Status.DEPROVISIONED, Status.PURGED})

#: States ``cloner orphans adopt`` may replace with a tenant adopted from an orphan volume:
#: none has a volume of its own under that name (the orphan occupies it); backups stay on disk.
ADOPTABLE = frozenset({Status.FAILED, Status.PURGED, Status.DEPROVISIONED})


def check_transition(current: Status, target: Status) -> None:
    """Raise ``InvalidTransition`` unless ``current → target`` is allowed."""
    if target not in _TRANSITIONS[current]:
        raise InvalidTransition(f"tenant is {current.value}; cannot move to {target.value}")


class RequestKind(enum.StrEnum):
    """What a queued request asks the worker to do."""

    PROVISION = "provision"
    DEPROVISION = "deprovision"
    #: Provisioning again from a backup: same pipeline, the template step loads the backup.
    RESTORE = "restore"
    #: An on-demand backup of a ready tenant (queued so it never races a delete or restore).
    BACKUP = "backup"
    #: New passwords for a ready tenant's roles, without downtime (``cloner tenant rotate``).
    ROTATE = "rotate"
    #: Re-applying an engine's newer rbac/hardening to a ready tenant (queued by the
    #: reconciler, so it never races another request of the tenant).
    HARDEN = "harden"


#: Request kinds that run the provisioning pipeline (and compensate when they fail).
PROVISIONING_KINDS = frozenset({RequestKind.PROVISION, RequestKind.RESTORE})


class RequestStatus(enum.StrEnum):
    """Queue item states."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def validate_tenant_id(value: str) -> str:
    """Return ``value`` if it is a valid tenant id, else raise ``InvalidInput``."""
    if not isinstance(value, str) or not _TENANT_ID.fullmatch(value):
        shown = repr(value)[:60]
        raise InvalidInput(
            f"invalid tenant id {shown}: expected 3-40 characters, lowercase letters, "
            "digits and hyphens, starting with a letter and not ending with a hyphen"
        )
    return value


def validate_version(value: str) -> str:
    """Return ``value`` if it looks like a template version (``vX.Y``)."""
    if not _VERSION.fullmatch(value):
        raise InvalidInput(f"invalid template version {value[:20]!r}: expected vX.Y, e.g. v1.1")
    return value


def parse_choice(choices: type[ChoiceT], value: str, noun: str) -> ChoiceT:
    """``value`` as a member of the string enum ``choices``, else ``InvalidInput`` listing them."""
    try:
        return choices(value)
    except ValueError:
        listed = ", ".join(c.value for c in choices)
        raise InvalidInput(
            f"unknown {noun} {str(value)[:30]!r}: choose one of {listed}"
        ) from None


def parse_engine(value: str) -> Engine:
    """Parse an engine name or raise ``InvalidInput`` listing the choices."""
    return parse_choice(Engine, value, "engine")


def parse_industry(value: str) -> Industry:
    """Parse an industry name or raise ``InvalidInput`` listing the choices."""
    return parse_choice(Industry, value, "industry")


def sql_identifier(tenant_id: str) -> str:
    """The unquoted SQL identifier derived from a validated tenant id (``-`` → ``_``)."""
    return validate_tenant_id(tenant_id).replace("-", "_")


def container_name(tenant_id: str) -> str:
    """Deterministic container name for a tenant."""
    return constants.CONTAINER_PREFIX + tenant_id


def volume_name(tenant_id: str) -> str:
    """Deterministic data-volume name for a tenant."""
    return constants.CONTAINER_PREFIX + tenant_id + constants.VOLUME_SUFFIX


@dataclass(frozen=True)
class TenantSpec:
    """What a signup asked for."""

    tenant_id: str
    engine: Engine
    industry: Industry
    template_version: str


@dataclass(frozen=True)
class Lease:
    """One attempt's hold on a request, handed out by ``ControlPlane.claim``.

    ``token`` is the daemon's owner id plus a nonce of this claim: every write
    of the attempt names it, so an attempt whose lease was taken over by a
    later claim (of this daemon or another) can no longer write anything.
    """

    request_id: str
    token: str


@dataclass(frozen=True)
class Request:
    """A queued unit of work, as leased by a worker."""

    id: str
    tenant_id: str
    kind: RequestKind
    payload: dict[str, Any]
    status: RequestStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    not_before: datetime | None = None
    #: Set on the request a claim returned (the attempt's lease), None otherwise.
    lease: Lease | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where a tenant database answers."""

    host: str | None = None
    port: int | None = None
    database: str | None = None
    path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON shape of DESIGN.md (``path`` only for sqlite)."""
        if self.path is not None:
            return {"path": self.path}
        return {"host": self.host, "port": self.port, "database": self.database}


@dataclass(frozen=True)
class RoleCredential:
    """One database login."""

    username: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log via repr()
        return f"RoleCredential(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class Credentials:
    """Every secret generated for one tenant. Only ever stored encrypted."""

    superuser: RoleCredential
    bootstrap_password: str
    #: The current login of each tenant role: what applications, pools and probes use.
    roles: dict[str, RoleCredential] = field(default_factory=dict)
    #: The role that holds a tenant role's privileges (and, for owner, its objects) when a
    #: rotation gave it a separate login; absent = the login itself (never rotated).
    grantees: dict[str, str] = field(default_factory=dict)
    #: Logins a rotation has generated but not yet handed out (crash-safe re-run).
    pending: dict[str, RoleCredential] = field(default_factory=dict)
    #: Logins a rotation replaced; still valid until its grace period has passed.
    retiring: dict[str, RoleCredential] = field(default_factory=dict)
    #: Unix time after which the ``retiring`` logins are removed.
    retire_after: float | None = None
    #: The rotate request ``pending``/``retiring`` belong to.
    rotation_request: str | None = None
    #: Role → id of the rotate request that last finished rotating it.
    rotated: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Credentials(roles={sorted(self.roles)!r})"

    def grantee(self, role: str) -> str:
        """The role holding ``role``'s privileges: grants, ownership, ``SET ROLE`` go here."""
        return self.grantees.get(role) or self.roles[role].username

    def all_secrets(self) -> list[str]:
        """Every password in here, for log redaction."""
        return [
            self.superuser.password,
            self.bootstrap_password,
            *(r.password for r in self.roles.values()),
            *(r.password for r in self.pending.values()),
            *(r.password for r in self.retiring.values()),
        ]


@dataclass(frozen=True)
class CheckResult:
    """One line of an isolation report."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class IsolationReport:
    """The stored isolation proof of one tenant."""

    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when every check passed (and there was at least one)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """JSON shape of DESIGN.md."""
        return {
            "passed": self.passed,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsolationReport:
        """Inverse of ``as_dict``."""
        return cls(
            tuple(
                CheckResult(str(c["name"]), bool(c["passed"]), str(c["detail"]))
                for c in data.get("checks", [])
            )
        )


@dataclass(frozen=True)
class Tenant:
    """A registry row, decrypted credentials excluded."""

    tenant_id: str
    status: Status
    engine: Engine
    industry: Industry
    template_version: str
    endpoint: Endpoint | None
    container_id: str | None
    container_name: str | None
    isolation: IsolationReport | None
    timings: dict[str, Any]
    error: dict[str, Any] | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    request_id: str | None
    backup: dict[str, Any] | None = None
    has_credentials: bool = False
    #: Template versions the tenant was at before schema migrations moved it on (oldest
    #: first): a container keeps the version label it was created with.
    previous_versions: tuple[str, ...] = ()
    #: The migration in flight (rollout, start version, backup, step, phase); None when none.
    #: Left behind by a rollout that died, for the next run to recover from deliberately.
    migration: dict[str, Any] | None = None
    #: The latest fence of application logins for a migration: ``{since, until, seconds,
    #: rollout}``, ``until`` None while still fenced.
    writes_fenced: dict[str, Any] | None = None

    @property
    def logins_fenced(self) -> bool:
        """True while a migration keeps the application logins fenced."""
        fence = self.writes_fenced
        return fence is not None and fence.get("until") is None
    #: The engine hardening level its rbac was last applied at (0: before levels existed).
    hardening_level: int = 0

    @property
    def spec(self) -> TenantSpec:
        """The request this tenant was created from."""
        return TenantSpec(self.tenant_id, self.engine, self.industry, self.template_version)
