"""A small async client for the signup flow, over the daemon's HTTP API (httpx).

Typical use::

    async with Client("http://127.0.0.1:8080", token) as client:
        await client.create_tenant("acme", engine="postgres", industry="finance")
        tenant = await client.wait_ready("acme", timeout_s=120)

``create_tenant`` is safe to retry: the daemon answers a repeated identical
create with the original request id. Errors are typed by HTTP status
(``Unauthorized``, ``NotFound``, ``Conflict``, ``InvalidRequest``); every one
is a ``ClientError`` carrying the status and the problem document's detail.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

__all__ = [
    "Client",
    "ClientError",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "ProvisioningFailed",
    "Unauthorized",
    "WaitTimeout",
]

#: States a tenant passes through on its way to ``ready``; ``degraded`` may recover.
_ON_THE_WAY = frozenset({"requested", "provisioning", "degraded"})


class ClientError(Exception):
    """The daemon refused a request or could not be reached.

    ``status`` is the HTTP status (``None`` when no answer came back),
    ``detail`` the problem document's explanation, ``problem`` the whole
    document when there was one.
    """

    def __init__(
        self, status: int | None, detail: str, *, title: str | None = None,
        field: str | None = None, problem: dict[str, Any] | None = None,
    ) -> None:
        prefix = " ".join(part for part in (str(status or ""), title or "") if part)
        super().__init__(f"{prefix}: {detail}" if prefix else detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.field = field
        self.problem = problem or {}


class Unauthorized(ClientError):
    """401: the bearer token is missing or wrong."""


class NotFound(ClientError):
    """404: no such tenant."""


class Conflict(ClientError):
    """409: the tenant exists with another spec, or its state forbids the operation."""


class InvalidRequest(ClientError):
    """422 (or 400/413): the request was refused as invalid; ``field`` says which part."""


class ProvisioningFailed(ClientError):
    """The tenant's provisioning failed; ``problem`` holds its ``error`` (step, reason)."""


class WaitTimeout(ClientError):
    """The tenant did not become ready in time (it keeps provisioning in the daemon)."""


_BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: InvalidRequest,
    422: InvalidRequest,
}


class Client:
    """Async client for ``/v1/tenants``; use as an async context manager or call ``aclose``.

    ``transport`` lets tests talk to the ASGI app in-process
    (``httpx.ASGITransport``); ``timeout_s`` bounds each HTTP request.
    """

    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport, timeout=timeout_s,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )

    async def __aenter__(self) -> Self:
        """The client itself."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection pool."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def create_tenant(
        self, tenant_id: str, *, engine: str, industry: str,
        template_version: str | None = None,
    ) -> dict[str, Any]:
        """Enqueue provisioning; ``{"request_id", "tenant_id", "status"}``. Safe to retry."""
        body: dict[str, Any] = {"tenant_id": tenant_id, "engine": engine, "industry": industry}
        if template_version is not None:
            body["template_version"] = template_version
        return dict(await self._call("POST", "/v1/tenants", json=body))

    async def get_tenant(self, tenant_id: str, *, reveal: bool = False) -> dict[str, Any]:
        """The tenant document (passwords and DSNs only with ``reveal=True``)."""
        params = {"reveal": "true"} if reveal else None
        return dict(await self._call("GET", _tenant_path(tenant_id), params=params))

    async def list_tenants(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every tenant, or those in one state."""
        params = {"status": status} if status is not None else None
        answer = await self._call("GET", "/v1/tenants", params=params)
        return list(answer["tenants"])

    async def delete_tenant(self, tenant_id: str, *, purge: bool = False) -> dict[str, Any]:
        """Enqueue deprovisioning (backup first; the volume is kept unless ``purge``)."""
        params = {"purge": "true"} if purge else None
        return dict(await self._call("DELETE", _tenant_path(tenant_id), params=params))

    async def restore_tenant(
        self, tenant_id: str, *, backup: str | None = None
    ) -> dict[str, Any]:
        """Enqueue a restore of a deprovisioned or purged tenant (default: its last backup)."""
        body = {"backup": backup} if backup is not None else {}
        return dict(await self._call("POST", _tenant_path(tenant_id) + "/restore", json=body))

    async def rotate_tenant(self, tenant_id: str, *, role: str = "all") -> dict[str, Any]:
        """Enqueue new passwords for a ready tenant's roles (``owner``, ``app``,
        ``readonly`` or ``all``), without downtime. Answers ``{"request_id",
        "tenant_id", "status", "roles"}``; the new credentials are in
        ``get_tenant(tenant_id, reveal=True)`` once the registry switched."""
        return dict(await self._call(
            "POST", _tenant_path(tenant_id) + "/rotate", json={"role": role}
        ))

    async def wait_ready(
        self, tenant_id: str, *, timeout_s: float = 120.0, interval_s: float = 0.5,
    ) -> dict[str, Any]:
        """Poll until the tenant is ``ready`` (``degraded`` is waited out); its document.

        Raises ``ProvisioningFailed`` when it failed, ``Conflict`` when it is
        being deleted (it will never be ready), ``WaitTimeout`` past
        ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            doc = await self.get_tenant(tenant_id)
            status = doc.get("status")
            if status == "ready":
                return doc
            if status == "failed":
                error = doc.get("error") or {}
                raise ProvisioningFailed(
                    None, f"tenant {tenant_id!r} failed at step {error.get('step')}: "
                          f"{error.get('reason')}",
                    title="ProvisioningFailed", problem=error,
                )
            if status not in _ON_THE_WAY:
                raise Conflict(None, f"tenant {tenant_id!r} is {status}; it will not become "
                                     "ready", title="Conflict")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    None, f"tenant {tenant_id!r} still {status} after {timeout_s:g}s; it "
                          "keeps provisioning in the daemon", title="WaitTimeout",
                )
            await asyncio.sleep(min(interval_s, remaining))

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(None, f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.is_success:
            return response.json()
        raise _error(response)


def _tenant_path(tenant_id: str) -> str:
    # The daemon validates ids; quoting keeps a bad one ("../x", "a/b") from changing route.
    return "/v1/tenants/" + quote(tenant_id, safe="", errors="replace")


def _error(response: httpx.Response) -> ClientError:
    problem: dict[str, Any] | None = None
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        problem = parsed
    detail = str(problem.get("detail")) if problem and problem.get("detail") else (
        response.text[:300] or response.reason_phrase
    )
    title = str(problem["title"]) if problem and problem.get("title") else None
    field = str(problem["field"]) if problem and problem.get("field") else None
    cls = _BY_STATUS.get(response.status_code, ClientError)
    return cls(response.status_code, detail, title=title, field=field, problem=problem)
