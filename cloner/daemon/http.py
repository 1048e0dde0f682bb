"""HTTP surface of the daemon (Starlette, served by uvicorn inside the daemon's loop).

``/healthz``, ``/readyz``, ``/metrics`` are open; every ``/v1`` route needs the
admin bearer token, compared in constant time.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloner.app import App
from cloner.errors import ClonerError, InvalidInput
from cloner.tenants import TenantService

Handler = Callable[[Request], Awaitable[Response]]


def _problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
        status_code=status, media_type="application/problem+json",
    )


def build_http_app(app: App) -> Starlette:
    """The ASGI app for one cloner ``App``."""
    service = TenantService(app)
    token = app.admin_token.encode()

    def authed(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), token):
                return _problem(401, "Unauthorized", "a valid bearer token is required")
            try:
                return await handler(request)
            except ClonerError as exc:
                return _problem(exc.http_status, type(exc).__name__, exc.message)
        return wrapper

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        problems = []
        try:
            await app.control_plane.queue_stats()
        except ClonerError as exc:
            problems.append(f"control plane: {exc.message}")
        try:
            await app.runtime.ping()
        except ClonerError as exc:
            problems.append(f"runtime: {exc.message}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(app.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def create_tenant(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _problem(422, "InvalidInput", "body must be JSON")
        if not isinstance(body, dict):
            return _problem(422, "InvalidInput", "body must be a JSON object")
        fields = {}
        for name in ("tenant_id", "engine", "industry"):
            value = body.get(name)
            if not isinstance(value, str):
                return _problem(422, "InvalidInput", f"{name} is required (string)", field=name)
            fields[name] = value
        version = body.get("template_version")
        if version is not None and not isinstance(version, str):
            raise InvalidInput("template_version must be a string")
        queued = await service.create(
            fields["tenant_id"], fields["engine"], fields["industry"], version
        )
        return JSONResponse(
            {"request_id": queued.id, "tenant_id": queued.tenant_id, "status": "requested"},
            status_code=202,
        )

    async def list_tenants(request: Request) -> Response:
        status = request.query_params.get("status")
        tenants = await service.list(status)
        return JSONResponse(
            {"tenants": [await service.to_json(t, reveal=False) for t in tenants]}
        )

    async def show_tenant(request: Request) -> Response:
        tenant = await service.get(request.path_params["tenant_id"])
        reveal = request.query_params.get("reveal", "").lower() == "true"
        return JSONResponse(await service.to_json(tenant, reveal=reveal))

    async def delete_tenant(request: Request) -> Response:
        purge = request.query_params.get("purge", "").lower() == "true"
        queued = await service.delete(request.path_params["tenant_id"], purge=purge)
        return JSONResponse(
            {"request_id": queued.id, "tenant_id": queued.tenant_id, "status": "deprovisioning"},
            status_code=202,
        )

    async def openapi(_request: Request) -> Response:
        return JSONResponse(OPENAPI)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Route("/v1/tenants", authed(create_tenant), methods=["POST"]),
        Route("/v1/tenants", authed(list_tenants), methods=["GET"]),
        Route("/v1/tenants/{tenant_id}", authed(show_tenant), methods=["GET"]),
        Route("/v1/tenants/{tenant_id}", authed(delete_tenant), methods=["DELETE"]),
    ])


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


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "cloner", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/v1/tenants": {
            "post": {"summary": "Enqueue a tenant", "security": [{"bearer": []}],
                     "responses": {"202": {"description": "queued"}}},
            "get": {"summary": "List tenants", "security": [{"bearer": []}],
                    "responses": {"200": {"description": "tenants"}}},
        },
        "/v1/tenants/{tenant_id}": {
            "get": {"summary": "Show a tenant", "security": [{"bearer": []}],
                    "responses": {"200": {"description": "tenant"}}},
            "delete": {"summary": "Deprovision a tenant", "security": [{"bearer": []}],
                       "responses": {"202": {"description": "queued"}}},
        },
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "metrics"}}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "Readiness",
                            "responses": {"200": {"description": "ready"}}}},
    },
}
