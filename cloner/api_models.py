"""Pydantic models of the HTTP API's bodies: what ``/v1`` accepts and answers.

They live at the edge only (STYLE.md §8): the HTTP layer validates a request
into ``CreateTenantRequest`` and hands plain strings to ``TenantService``;
responses are built by the service (``TenantService.to_json``) and these
models describe them, so ``/openapi.json`` is generated from the same code that
a unit test checks the real documents against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloner import constants
from cloner.domain import Engine, Industry, Status
from cloner.users import EMAIL_MAX_LENGTH, UserRole

#: ``vX.Y`` as ``cloner.domain.validate_version`` accepts it, or empty (= the latest).
TEMPLATE_VERSION_PATTERN = r"^(v[0-9]{1,3}\.[0-9]{1,3})?$"

#: Largest request body the API reads. A create request is a few hundred bytes; the cap
#: only keeps a hostile client from making the daemon buffer megabytes.
MAX_BODY_BYTES = 1024 * 1024


class CreateTenantRequest(BaseModel):
    """Body of ``POST /v1/tenants``: the signup's choice of engine, industry and version."""

    # Unknown fields are ignored, not refused: a newer client may send more than this
    # daemon knows, and nothing it sends beyond these four fields changes what is created.
    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: str = Field(
        pattern=constants.TENANT_ID_PATTERN, min_length=3, max_length=40,
        description="3-40 characters: lowercase letters, digits and hyphens, starting with a "
                    "letter and not ending with a hyphen (a DNS label).",
        examples=["acme"],
    )
    engine: Engine = Field(description="Database engine of the tenant.")
    industry: Industry = Field(description="Industry overlay; `none` for the root template only.")
    template_version: str | None = Field(
        default=None, pattern=TEMPLATE_VERSION_PATTERN,
        description="Root template version; omitted, null or empty means the latest one.",
        examples=["v1.1"],
    )


class RestoreTenantRequest(BaseModel):
    """Optional body of ``POST /v1/tenants/{tenant_id}/restore``: which backup to load."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    backup: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="A `.dump` in the tenant's own backup folder "
                    "(`$CLONER_DATA_DIR/backups/<tenant>/`), absolute or relative to that "
                    "folder; omitted or null means the tenant's last recorded backup.",
        examples=["acme-20260101T000000000000Z.dump"],
    )


class RotateTenantRequest(BaseModel):
    """Optional body of ``POST /v1/tenants/{tenant_id}/rotate``: which role to rotate."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["owner", "app", "readonly", "all"] = Field(
        default="all", description="The role that gets a new password; `all` for every role.",
    )


class RotationAccepted(BaseModel):
    """A rotation was queued: new logins first, the old ones refused after the grace period."""

    request_id: str = Field(description="Id of the queued `rotate` request.")
    tenant_id: str
    status: Status = Field(description="State of the tenant (stays `ready` throughout).")
    roles: list[str] = Field(description="The roles that get new passwords.")


class TenantAccepted(BaseModel):
    """A request was queued (or, for a repeated identical create, had been queued already)."""

    request_id: str = Field(description="Id of the queued request; the same for a repeat.")
    tenant_id: str
    status: Status = Field(description="State of the tenant when the answer was given.")


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = Field(default="about:blank")
    title: str = Field(description="Short name of the error class, e.g. `InvalidInput`.")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What was expected, what was seen, and a hint.")
    field: str | None = Field(
        default=None, description="The offending request field or parameter, when there is one.",
    )


class NetworkEndpoint(BaseModel):
    """Where a server-based tenant database answers."""

    host: str | None
    port: int | None
    database: str | None


class FileEndpoint(BaseModel):
    """Where a file-based (sqlite) tenant database lives."""

    path: str


class ContainerRef(BaseModel):
    """The tenant's container."""

    id: str | None
    name: str


class RoleLogin(BaseModel):
    """One database role; ``password`` only with ``reveal=true``."""

    username: str
    password: str | None


class IsolationCheck(BaseModel):
    """One line of the isolation proof."""

    name: str
    passed: bool
    detail: str


class IsolationProof(BaseModel):
    """The stored isolation proof of a tenant."""

    passed: bool
    checks: list[IsolationCheck]


class TenantEvent(BaseModel):
    """One entry of a tenant's history."""

    at: datetime
    kind: str = Field(description="e.g. `provision_requested`, `ready`, `deprovisioned`, "
                                  "`backup`, `restore_requested`, `restored`, `purged`.")
    detail: dict[str, Any] = Field(description="What happened; `actor` says who asked.")


class TenantDocument(BaseModel):
    """One tenant, as ``cloner tenant show --json`` prints it (DESIGN.md)."""

    tenant_id: str
    status: Status
    engine: Engine
    industry: Industry
    template_version: str
    endpoint: NetworkEndpoint | FileEndpoint | None
    container: ContainerRef | None
    roles: dict[str, RoleLogin] = Field(description="owner / app / readonly; empty for sqlite.")
    dsn: dict[str, str | None] = Field(description="Connection strings, only with reveal=true.")
    isolation: IsolationProof | None
    timings: dict[str, Any] | None = Field(description="`total_s` and seconds per `steps`.")
    error: dict[str, Any] | None = Field(description="`step`, `reason`, `class` of a failure.")
    attempts: int
    backup: dict[str, Any] | None = Field(description="The last backup, once one was taken.")
    created_at: datetime
    updated_at: datetime
    migration: dict[str, Any] | None = Field(
        default=None, description="The schema migration in flight: `rollout`, `start_version`, "
        "`phase` (backup, step, restore), `step`, pre-migration `backup`; null when none.")
    writes_fenced: dict[str, Any] | None = Field(
        default=None, description="The latest time a migration fenced the application logins: "
        "`since`, `until` (null while still fenced), `seconds`, `rollout`.")
    events: list[TenantEvent] | None = Field(
        default=None, description="The newest history entries (showing one tenant only).",
    )


class TenantList(BaseModel):
    """Answer of ``GET /v1/tenants``."""

    tenants: list[TenantDocument]


class Liveness(BaseModel):
    """Answer of ``GET /healthz``: the process serves HTTP."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Answer of ``GET /readyz``: the control plane and the runtime answer."""

    status: Literal["ready", "unavailable"]
    problems: list[str] = Field(default_factory=list)


class AddUserRequest(BaseModel):
    """Body of ``POST /v1/tenants/{tenant_id}/users``: who, and with which role."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    email: str = Field(
        min_length=3, max_length=EMAIL_MAX_LENGTH,
        description="The user's address; stored lowercased. One user belongs to one tenant.",
        examples=["ada@example.com"],
    )
    role: UserRole = Field(description="`admin` and `member` connect read-write (`app` role), "
                                       "`analyst` read-only (`readonly` role).")


class UserDocument(BaseModel):
    """One application user of a tenant."""

    email: str
    tenant_id: str
    role: UserRole
    created_at: datetime


class UserList(BaseModel):
    """Answer of ``GET /v1/tenants/{tenant_id}/users``."""

    users: list[UserDocument]


#: Every model that appears in ``/openapi.json``, with the direction it travels in.
SCHEMA_MODELS: tuple[tuple[type[BaseModel], Literal["validation", "serialization"]], ...] = (
    (CreateTenantRequest, "validation"),
    (RestoreTenantRequest, "validation"),
    (RotateTenantRequest, "validation"),
    (RotationAccepted, "serialization"),
    (TenantAccepted, "serialization"),
    (Problem, "serialization"),
    (TenantDocument, "serialization"),
    (TenantList, "serialization"),
    (Liveness, "serialization"),
    (Readiness, "serialization"),
    (AddUserRequest, "validation"),
    (UserDocument, "serialization"),
    (UserList, "serialization"),
)
