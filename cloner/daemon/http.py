"""HTTP surface of the daemon (Starlette, served by uvicorn inside the daemon's loop).

``/healthz``, ``/readyz`` and ``/openapi.json`` are open; ``/metrics`` needs
``CLONER_METRICS_TOKEN`` as a bearer token when that is set; every ``/v1``
route needs the admin bearer token. Tokens are compared in constant time, and
an empty or short one stops the server from being built at all (fail closed).

``OPERATIONS`` is the single description of the API: the router is built from
it and ``/openapi.json`` is generated from it plus the pydantic models of
``cloner.api_models``, so the document cannot drift from what is served.
Every error is an ``application/problem+json`` body (``Problem``). Request
metrics are labelled with the route template (``/v1/tenants/{tenant_id}``),
never the raw path, so hostile paths cannot grow label cardinality.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloner import __version__, constants
from cloner.api_models import (
    MAX_BODY_BYTES,
    SCHEMA_MODELS,
    AddUserRequest,
    CreateTenantRequest,
    RestoreTenantRequest,
    RotateTenantRequest,
    RotationAccepted,
    TenantAccepted,
)
from cloner.app import App
from cloner.domain import (
    Status,
    parse_engine,
    parse_industry,
    validate_tenant_id,
    validate_version,
)
from cloner.engines import get_engine
from cloner.errors import (
    ClonerError,
    ControlPlaneError,
    InvalidBackup,
    InvalidInput,
    RuntimeUnavailable,
    TenantExists,
    TenantNotFound,
    UserConflict,
)
from cloner.logging import get_logger
from cloner.metrics import Metrics
from cloner.secrets import SecretsError, token_problem
from cloner.tenants import TenantService
from cloner.users import EMAIL_MAX_LENGTH, EMAIL_PATTERN, normalize_email

log = get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Route label of requests that matched no route (any path: one label value).
UNMATCHED_ROUTE = "unmatched"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Refused(Exception):
    """Raised inside a handler to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field


def problem(
    status: int, title: str, detail: str, *, field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An ``application/problem+json`` response (RFC 9457), with ``field`` when known."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}
    if field is not None:
        body["field"] = field
    # ensure_ascii: a detail may quote hostile input (lone surrogates included) and must
    # still encode; JSONResponse's UTF-8 rendering would fail on those with a 500.
    return Response(
        json.dumps(body, ensure_ascii=True), status_code=status,
        media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {}),
    )


def _error_problem(exc: ClonerError, field: str | None = None) -> Response:
    status = exc.http_status
    if isinstance(exc, ControlPlaneError | RuntimeUnavailable):
        status = 503  # a dependency is down: retry later, not a bug in the request
    if status >= 500:
        log.error("http.error", error_class=type(exc).__name__, error=exc.message)
    return problem(status, type(exc).__name__, exc.message, field=field)


# ------------------------------------------------------------------ the API description


@dataclass(frozen=True)
class Reply:
    """One documented response of an operation."""

    description: str
    schema: str | None = None  # a component name in ``#/components/schemas``
    media_type: str = "application/json"


@dataclass(frozen=True)
class Param:
    """One documented path or query parameter."""

    name: str
    location: Literal["path", "query"]
    schema: dict[str, Any]
    description: str

    def as_openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        return {"name": self.name, "in": self.location, "required": self.location == "path",
                "description": self.description, "schema": self.schema}


@dataclass(frozen=True)
class Operation:
    """One route and method: routing, auth and documentation in one place."""

    operation_id: str
    method: Literal["GET", "POST", "DELETE"]
    path: str
    summary: str
    responses: Mapping[int, Reply]
    auth: bool = True
    #: Guarded by ``CLONER_METRICS_TOKEN`` when that is set (``/metrics``).
    metrics_auth: bool = False
    parameters: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    tags: tuple[str, ...] = ("tenants",)


def _problem_reply(description: str) -> Reply:
    return Reply(description, "Problem", PROBLEM_MEDIA_TYPE)


_UNAUTHORIZED = _problem_reply("Missing or wrong bearer token.")
_TENANT_ID = Param(
    "tenant_id", "path",
    {"type": "string", "pattern": constants.TENANT_ID_PATTERN, "minLength": 3, "maxLength": 40},
    "The tenant id.",
)

_EMAIL = Param(
    "email", "path",
    {"type": "string", "pattern": EMAIL_PATTERN, "maxLength": EMAIL_MAX_LENGTH},
    "The user's email (matched case-insensitively).",
)


def _flag(name: str, description: str) -> Param:
    return Param(name, "query", {"type": "boolean", "default": False}, description)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "createTenant", "POST", "/v1/tenants",
        "Enqueue provisioning of a tenant; repeating the same body is idempotent.",
        {
            202: Reply("Queued, or already queued by an identical earlier request (same "
                       "request_id).", "TenantAccepted"),
            401: _UNAUTHORIZED,
            409: _problem_reply("The tenant exists with a different spec, or is being "
                                "deprovisioned."),
            413: _problem_reply(f"Body larger than {MAX_BODY_BYTES} bytes."),
            422: _problem_reply("Invalid body; `field` names the offending field."),
        },
        body=CreateTenantRequest,
    ),
    Operation(
        "listTenants", "GET", "/v1/tenants", "List tenants, optionally by state.",
        {200: Reply("The tenants (no secrets).", "TenantList"), 401: _UNAUTHORIZED,
         422: _problem_reply("Unknown state.")},
        parameters=(Param("status", "query",
                          {"type": "string", "enum": [s.value for s in Status]},
                          "Only tenants in this state."),),
    ),
    Operation(
        "showTenant", "GET", "/v1/tenants/{tenant_id}", "Show one tenant.",
        {200: Reply("The tenant document of DESIGN.md.", "TenantDocument"),
         401: _UNAUTHORIZED, 404: _problem_reply("No such tenant."),
         422: _problem_reply("Invalid tenant id.")},
        parameters=(_TENANT_ID, _flag("reveal", "Include passwords and DSNs (`true`).")),
    ),
    Operation(
        "deleteTenant", "DELETE", "/v1/tenants/{tenant_id}",
        "Enqueue deprovisioning: final backup, container removed, volume kept unless purge.",
        {202: Reply("Queued.", "TenantAccepted"), 401: _UNAUTHORIZED,
         404: _problem_reply("No such tenant."),
         409: _problem_reply("The tenant's state does not allow deletion now, or a purge "
                             "is refused because the final backup does not verify."),
         422: _problem_reply("Invalid tenant id.")},
        parameters=(_TENANT_ID, _flag("purge", "Also remove the data volume (`true`).")),
    ),
    Operation(
        "restoreTenant", "POST", "/v1/tenants/{tenant_id}/restore",
        "Enqueue a restore of a deprovisioned or purged tenant from a verified backup: new "
        "credentials, a fresh container, a new isolation proof.",
        {202: Reply("Queued.", "TenantAccepted"), 401: _UNAUTHORIZED,
         404: _problem_reply("No such tenant."),
         409: _problem_reply("The tenant is not deprovisioned or purged (or a request of it "
                             "is already queued or running)."),
         413: _problem_reply(f"Body larger than {MAX_BODY_BYTES} bytes."),
         422: _problem_reply("Invalid tenant id or body, or the backup is outside the tenant's "
                             "backup folder or fails verification (`field` = `backup`).")},
        parameters=(_TENANT_ID,), body=RestoreTenantRequest, body_required=False,
    ),
    Operation(
        "rotateTenant", "POST", "/v1/tenants/{tenant_id}/rotate",
        "Enqueue new passwords for a ready tenant's roles without downtime: a new login per "
        "role is handed out through the registry before the old one is refused (after "
        "CLONER_ROTATION_GRACE_S). The role comes from the body or the `role` query parameter.",
        {202: Reply("Queued.", "RotationAccepted"), 401: _UNAUTHORIZED,
         404: _problem_reply("No such tenant."),
         409: _problem_reply("The tenant is not ready (or a request of it is already queued "
                             "or running)."),
         413: _problem_reply(f"Body larger than {MAX_BODY_BYTES} bytes."),
         422: _problem_reply("Invalid tenant id, unknown role (`field` = `role`), or an "
                             "engine without logins (sqlite).")},
        parameters=(_TENANT_ID, Param(
            "role", "query", {"type": "string", "enum": ["owner", "app", "readonly", "all"]},
            "The role that gets a new password (default `all`; a body's `role` wins).")),
        body=RotateTenantRequest, body_required=False,
    ),
    Operation(
        "listUsers", "GET", "/v1/tenants/{tenant_id}/users",
        "List the application users of a tenant.",
        {200: Reply("The users, by email.", "UserList"), 401: _UNAUTHORIZED,
         404: _problem_reply("No such tenant."), 422: _problem_reply("Invalid tenant id.")},
        parameters=(_TENANT_ID,), tags=("users",),
    ),
    Operation(
        "addUser", "POST", "/v1/tenants/{tenant_id}/users",
        "Map a user (email, lowercased) to this tenant with a role; repeating it sets the role.",
        {201: Reply("The user as stored.", "UserDocument"), 401: _UNAUTHORIZED,
         404: _problem_reply("No such tenant."),
         409: _problem_reply("The email already belongs to another tenant."),
         413: _problem_reply(f"Body larger than {MAX_BODY_BYTES} bytes."),
         422: _problem_reply("Invalid tenant id or body; `field` names the offending field.")},
        parameters=(_TENANT_ID,), body=AddUserRequest, tags=("users",),
    ),
    Operation(
        "removeUser", "DELETE", "/v1/tenants/{tenant_id}/users/{email}",
        "Remove a user of this tenant.",
        {204: Reply("Removed.", None, ""), 401: _UNAUTHORIZED,
         404: _problem_reply("No such user in this tenant (or no such tenant)."),
         422: _problem_reply("Invalid tenant id or email.")},
        parameters=(_TENANT_ID, _EMAIL), tags=("users",),
    ),
    Operation(
        "metrics", "GET", "/metrics",
        "Prometheus metrics (text exposition format); needs CLONER_METRICS_TOKEN as a bearer "
        "token when that is set.",
        {200: Reply("Metrics.", None, "text/plain"),
         401: _problem_reply("CLONER_METRICS_TOKEN is set and the bearer token is missing or "
                             "wrong.")},
        auth=False, metrics_auth=True, tags=("operations",),
    ),
    Operation(
        "healthz", "GET", "/healthz", "Liveness: the process serves HTTP.",
        {200: Reply("Alive.", "Liveness")}, auth=False, tags=("operations",),
    ),
    Operation(
        "readyz", "GET", "/readyz", "Readiness: the control plane and the runtime answer.",
        {200: Reply("Ready.", "Readiness"),
         503: Reply("A dependency is unavailable; `problems` says which.", "Readiness")},
        auth=False, tags=("operations",),
    ),
    Operation(
        "openapi", "GET", "/openapi.json", "This OpenAPI 3.1 document.",
        {200: Reply("The document.", "OpenAPIDocument")}, auth=False, tags=("operations",),
    ),
)


def _operation_doc(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, reply in sorted(op.responses.items()):
        doc: dict[str, Any] = {"description": reply.description}
        schema = (
            {"$ref": f"#/components/schemas/{reply.schema}"} if reply.schema
            else {"type": "string"}
        )
        if reply.media_type:  # an empty media type documents a response without a body
            doc["content"] = {reply.media_type: {"schema": schema}}
        if status == 401:
            doc["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        responses[str(status)] = doc
    # Anything else (a dependency down, a bug) is still a problem document.
    responses["default"] = {
        "description": "Unexpected error (503: a dependency is unavailable).",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    doc = {
        "operationId": op.operation_id, "summary": op.summary, "tags": list(op.tags),
        # The metrics token is optional: either it or nothing, depending on configuration.
        "security": ([{"bearer": []}] if op.auth
                     else [{"metricsBearer": []}, {}] if op.metrics_auth else []),
        "responses": responses,
    }
    if op.parameters:
        doc["parameters"] = [p.as_openapi() for p in op.parameters]
    if op.body is not None:
        doc["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.body.__name__}"},
            }},
        }
    return doc


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``OPERATIONS``, schemas generated from ``api_models``."""
    _, top = models_json_schema(SCHEMA_MODELS, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["OpenAPIDocument"] = {
        "type": "object", "required": ["openapi", "info", "paths"],
        "properties": {"openapi": {"type": "string"}, "info": {"type": "object"},
                       "paths": {"type": "object"}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation_doc(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cloner",
            "version": __version__,
            "description": "Provision a dedicated, isolated database per tenant. Errors are "
                           "RFC 9457 problem documents.",
        },
        "tags": [{"name": "tenants"}, {"name": "users"}, {"name": "operations"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "The admin token (CLONER_ADMIN_TOKEN or <data dir>/admin.token).",
            }, "metricsBearer": {
                "type": "http", "scheme": "bearer",
                "description": "CLONER_METRICS_TOKEN, when set.",
            }},
        },
    }


# ------------------------------------------------------------------------ middleware


class RequestMetrics:
    """Pure ASGI middleware: ``cloner_http_requests_total`` and request latency per route.

    The route label is the matched route's template; paths that match no route
    share ``UNMATCHED_ROUTE``, and unusual methods share ``OTHER``, so no
    client can create label values at will.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and count it once its status is known."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped the app

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = self.route_template(scope)
            method = str(scope.get("method", "")).upper()
            self.metrics.http_requests.labels(
                route=route, method=method if method in _KNOWN_METHODS else "OTHER",
                status=str(status),
            ).inc()
            self.metrics.http_duration.labels(route=route).observe(
                time.perf_counter() - started
            )

    def route_template(self, scope: Scope) -> str:
        """The path template of the route that serves ``scope``, or ``UNMATCHED_ROUTE``."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE and isinstance(path := getattr(route, "path", None), str):
                return path
        return UNMATCHED_ROUTE


# ---------------------------------------------------------------------------- handlers


def _flag_value(request: Request, name: str) -> bool:
    # Only "true" (any case) turns a flag on; anything else is off, as the CLI's --reveal
    # and --purge are off unless given.
    return request.query_params.get(name, "").lower() == "true"


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Refused(413, "ContentTooLarge", f"body is {declared} bytes; at most "
                       f"{MAX_BODY_BYTES} are accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Refused(413, "ContentTooLarge", f"body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_DOMAIN_CHECKS: dict[str, Callable[[str], object]] = {
    "tenant_id": validate_tenant_id, "engine": parse_engine, "industry": parse_industry,
    "template_version": validate_version,
}


_CREATE_BODY = "a JSON object with tenant_id, engine and industry"
_RESTORE_BODY = "empty, or a JSON object with an optional backup"
_ROTATE_BODY = "empty, or a JSON object with an optional role"
_USER_BODY = "a JSON object with email and role"


def _invalid_body(exc: ValidationError, expected: str = _CREATE_BODY) -> _Refused:
    """The first validation error as a problem, in the domain's words where it has them."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part)[:60] for part in error["loc"]]
    where = ".".join(loc) or None
    value = error.get("input")
    detail: str | None = None
    if where is None:
        detail = f"body must be {expected}"
    elif error["type"] == "missing":
        detail = f"{where} is required"
    elif where in _DOMAIN_CHECKS and isinstance(value, str):
        try:
            _DOMAIN_CHECKS[where](value)
        except InvalidInput as domain:
            detail = domain.message
    if detail is None:
        detail = f"{where}: {error['msg']}"
    return _Refused(422, "InvalidInput", detail, where)


def _offending_field(app: App, body: CreateTenantRequest) -> str | None:
    """Which field a catalog-level refusal (engine without driver, unknown version) is about."""
    try:
        get_engine(body.engine)
    except InvalidInput:
        return "engine"
    engine = body.engine.value
    try:
        version = body.template_version or app.catalog.latest_version(engine)
        app.catalog.root(engine, version)
    except ClonerError:
        return "template_version" if body.template_version else "engine"
    try:
        app.catalog.overlay(engine, body.industry, version)
    except ClonerError:
        return "industry"
    return None


class _Handlers:
    """The endpoint functions of one ``App``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.service = TenantService(app)

    async def createTenant(self, request: Request) -> Response:  # noqa: N802 - operation id
        """POST /v1/tenants."""
        data = _parse_json(await _read_body(request), _CREATE_BODY)
        try:
            body = CreateTenantRequest.model_validate(data)
        except ValidationError as exc:
            raise _invalid_body(exc) from None
        try:
            accepted = await self.service.create_or_get(
                body.tenant_id, body.engine.value, body.industry.value,
                body.template_version or None, actor=constants.ACTOR_HTTP,
            )
        except TenantExists as exc:
            return _error_problem(exc, field="tenant_id")
        except InvalidInput as exc:
            return _error_problem(exc, field=_offending_field(self.app, body))
        log.info("http.tenant_create", tenant_id=accepted.tenant_id,
                 request_id=accepted.request_id, created=accepted.created)
        return _model_response(TenantAccepted(
            request_id=accepted.request_id, tenant_id=accepted.tenant_id,
            status=accepted.status,
        ), 202)

    async def listTenants(self, request: Request) -> Response:  # noqa: N802 - operation id
        """GET /v1/tenants."""
        try:
            tenants = await self.service.list(request.query_params.get("status"))
        except InvalidInput as exc:
            return _error_problem(exc, field="status")
        return JSONResponse(
            {"tenants": [await self.service.to_json(t, reveal=False) for t in tenants]}
        )

    async def showTenant(self, request: Request) -> Response:  # noqa: N802 - operation id
        """GET /v1/tenants/{tenant_id}."""
        tenant = await self.service.get(_tenant_id(request))
        doc = await self.service.to_json(tenant, reveal=_flag_value(request, "reveal"),
                                         events=True)
        return JSONResponse(doc)

    async def deleteTenant(self, request: Request) -> Response:  # noqa: N802 - operation id
        """DELETE /v1/tenants/{tenant_id}."""
        queued = await self.service.delete(_tenant_id(request),
                                           purge=_flag_value(request, "purge"),
                                           actor=constants.ACTOR_HTTP)
        return _model_response(TenantAccepted(
            request_id=queued.id, tenant_id=queued.tenant_id, status=Status.DEPROVISIONING,
        ), 202)

    async def restoreTenant(self, request: Request) -> Response:  # noqa: N802 - operation id
        """POST /v1/tenants/{tenant_id}/restore."""
        tenant_id = _tenant_id(request)
        raw = await _read_body(request)
        body = RestoreTenantRequest()
        if raw.strip():
            try:
                body = RestoreTenantRequest.model_validate(_parse_json(raw, _RESTORE_BODY))
            except ValidationError as exc:
                raise _invalid_body(exc, _RESTORE_BODY) from None
        try:
            queued = await self.service.restore(tenant_id, body.backup,
                                                actor=constants.ACTOR_HTTP)
        except InvalidBackup as exc:
            return _error_problem(exc, field="backup")
        log.info("http.tenant_restore", tenant_id=tenant_id, request_id=queued.id)
        return _model_response(TenantAccepted(
            request_id=queued.id, tenant_id=queued.tenant_id, status=Status.REQUESTED,
        ), 202)

    async def rotateTenant(self, request: Request) -> Response:  # noqa: N802 - operation id
        """POST /v1/tenants/{tenant_id}/rotate."""
        tenant_id = _tenant_id(request)
        raw = await _read_body(request)
        data: Any = {}
        if raw.strip():
            data = _parse_json(raw, _ROTATE_BODY)
        if isinstance(data, dict) and "role" not in data and "role" in request.query_params:
            data = {**data, "role": request.query_params["role"]}
        try:
            body = RotateTenantRequest.model_validate(data)
        except ValidationError as exc:
            raise _invalid_body(exc, _ROTATE_BODY) from None
        try:
            queued = await self.service.rotate(tenant_id, body.role, actor=constants.ACTOR_HTTP)
        except InvalidInput as exc:
            return _error_problem(exc, field="role" if "role" in exc.message else None)
        log.info("http.tenant_rotate", tenant_id=tenant_id, request_id=queued.id)
        return _model_response(RotationAccepted(
            request_id=queued.id, tenant_id=queued.tenant_id, status=Status.READY,
            roles=[str(r) for r in queued.payload.get("roles", [])],
        ), 202)

    async def listUsers(self, request: Request) -> Response:  # noqa: N802 - operation id
        """GET /v1/tenants/{tenant_id}/users."""
        tenant = await self.service.get(_tenant_id(request))
        users = await self.app.control_plane.list_users(tenant.tenant_id)
        return JSONResponse({"users": [u.as_dict() for u in users]})

    async def addUser(self, request: Request) -> Response:  # noqa: N802 - operation id
        """POST /v1/tenants/{tenant_id}/users."""
        tenant_id = _tenant_id(request)
        data = _parse_json(await _read_body(request), _USER_BODY)
        try:
            body = AddUserRequest.model_validate(data)
        except ValidationError as exc:
            raise _invalid_body(exc, _USER_BODY) from None
        try:
            user = await self.app.control_plane.add_user(body.email, tenant_id, body.role)
        except UserConflict as exc:
            return _error_problem(exc, field="email")
        except TenantNotFound:
            raise
        except InvalidInput as exc:
            return _error_problem(exc, field="email")
        log.info("http.user_add", tenant_id=tenant_id, email=user.email, role=user.role.value)
        return JSONResponse(user.as_dict(), status_code=201)

    async def removeUser(self, request: Request) -> Response:  # noqa: N802 - operation id
        """DELETE /v1/tenants/{tenant_id}/users/{email}."""
        tenant_id = _tenant_id(request)
        try:
            email = normalize_email(str(request.path_params["email"]))
        except InvalidInput as exc:
            raise _Refused(422, "InvalidInput", exc.message, "email") from None
        # Only this tenant's user is removed; another tenant's is "not found" here, so a
        # caller cannot tell which tenant an address belongs to.
        removed = await self.app.control_plane.remove_user(email, tenant_id=tenant_id)
        log.info("http.user_remove", tenant_id=tenant_id, email=removed.email)
        return Response(status_code=204)

    async def metrics(self, _request: Request) -> Response:
        """GET /metrics."""
        return Response(generate_latest(self.app.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, _request: Request) -> Response:
        """GET /healthz."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        """GET /readyz."""
        problems = []
        try:
            await self.app.control_plane.queue_stats()
        except ClonerError as exc:
            problems.append(f"control plane: {exc.message}")
        try:
            await self.app.runtime.ping()
        except ClonerError as exc:
            problems.append(f"runtime: {exc.message}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def openapi(self, _request: Request) -> Response:
        """GET /openapi.json."""
        return JSONResponse(openapi_document())


def _parse_json(raw: bytes, expected: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested JSON exhausts the parser's stack.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        raise _Refused(422, "InvalidInput", f"body is {reason}; expected {expected}") from None


def _tenant_id(request: Request) -> str:
    tenant_id = str(request.path_params["tenant_id"])
    try:
        return validate_tenant_id(tenant_id)
    except InvalidInput as exc:
        raise _Refused(422, "InvalidInput", exc.message, "tenant_id") from None


def _model_response(model: BaseModel, status: int) -> Response:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


def _guarded(handler: Handler, token: bytes | None) -> Handler:
    """Check the bearer token (when ``token``), then map refusals and domain errors."""

    async def guarded(request: Request) -> Response:
        if token is not None:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            # compare_digest: the time taken must not reveal how much of the token matched.
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), token):
                return problem(401, "Unauthorized", "a valid bearer token is required",
                               headers={"WWW-Authenticate": 'Bearer realm="cloner"'})
        try:
            return await handler(request)
        except _Refused as refused:
            return problem(refused.status, refused.title, refused.detail, field=refused.field)
        except TenantNotFound as exc:
            return _error_problem(exc, field="tenant_id")
        except ClonerError as exc:
            return _error_problem(exc)

    return guarded


def _dispatch(table: Mapping[str, Handler]) -> Handler:
    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return dispatch


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, _reason(exc.status_code), str(exc.detail),
                   headers=exc.headers)


async def _unhandled(_request: Request, exc: Exception) -> Response:
    log.error("http.unhandled", error_class=type(exc).__name__, error=str(exc)[:300])
    return problem(500, "InternalError", "the daemon hit an unexpected error; see its log")


def _reason(status: int) -> str:
    return {404: "NotFound", 405: "MethodNotAllowed"}.get(status, "HTTPError")


def build_http_app(app: App) -> Starlette:
    """The ASGI app for one cloner ``App``."""
    handlers = _Handlers(app)
    # Settings and App.open refuse these already; an App built any other way must not
    # serve /v1 behind an empty token (`Authorization: Bearer` would match it).
    token_issue = token_problem(app.admin_token)
    if token_issue:
        raise SecretsError(f"the admin token {token_issue}; refusing to serve the API")
    token = app.admin_token.encode()
    metrics_secret = app.settings.metrics_token
    metrics_token = metrics_secret.get_secret_value().encode() if metrics_secret else None
    tables: dict[str, dict[str, Handler]] = {}
    for op in OPERATIONS:
        handler: Handler = getattr(handlers, op.operation_id)
        table = tables.setdefault(op.path, {})
        guard = token if op.auth else metrics_token if op.metrics_auth else None
        table[op.method] = _guarded(handler, guard)
        if op.method == "GET":
            table["HEAD"] = table["GET"]
    routes: list[BaseRoute] = [
        Route(path, _dispatch(table), methods=sorted(table)) for path, table in tables.items()
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestMetrics, metrics=app.metrics, routes=routes)],
        exception_handlers={HTTPException: _http_exception, Exception: _unhandled},
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        """Leave signals to the daemon."""
        yield


def make_server(app: App) -> EmbeddedServer:
    """A uvicorn server for the daemon's HTTP listen address."""
    host, port = app.settings.http_host_port
    config = uvicorn.Config(
        build_http_app(app), host=host, port=port, log_config=None, access_log=False,
        lifespan="off",
    )
    return EmbeddedServer(config)
