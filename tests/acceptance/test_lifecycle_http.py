"""Acceptance: a tenant's whole admin lifecycle over HTTP against a real `cloner serve`."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from tests.acceptance.harness import Cloner, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]

ROWS = 123


class Api:
    """The daemon's HTTP API with the admin token."""

    def __init__(self, cloner: Cloner) -> None:
        self.base = f"{cloner.base_url}/v1/tenants"
        self.headers = {"Authorization": f"Bearer {cloner.token}"}

    def call(self, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """One request to ``/v1/tenants{path}``."""
        return httpx.request(method, self.base + path, headers=self.headers, timeout=10.0,
                             **kwargs)

    def show(self, tenant_id: str, *, reveal: bool = False) -> dict[str, Any]:
        """GET one tenant document."""
        params = {"reveal": "true"} if reveal else None
        response = self.call("GET", f"/{tenant_id}", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_status(self, tenant_id: str, status: str, timeout_s: float = 90.0) -> None:
        """Poll until the tenant is in ``status``; fail early if it fails."""
        def reached() -> bool:
            doc = self.show(tenant_id)
            assert doc["status"] != "failed", doc["error"]
            return bool(doc["status"] == status)

        wait_for(reached, timeout_s, f"{tenant_id} to be {status}")


async def write_rows(dsn: str, count: int) -> None:
    """Insert ``count`` customers through an application DSN."""
    conn = await asyncpg.connect(dsn, timeout=10, ssl=False)
    try:
        await conn.execute(
            "INSERT INTO customers (email, name) SELECT 'http' || g || '@example.com', "
            "'Customer ' || g FROM generate_series(1, $1::int) g", count)
    finally:
        await conn.close()


async def read_rows(dsn: str) -> int:
    """Customers written by ``write_rows``, read through an application DSN."""
    conn = await asyncpg.connect(dsn, timeout=10, ssl=False)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM customers WHERE email LIKE 'http%'"))
    finally:
        await conn.close()


def test_create_delete_restore_over_http_keeps_the_data(cloner: Cloner) -> None:
    """POST create → DELETE → POST restore: ready again, rows kept, old credentials dead."""
    cloner.start_daemon()
    api = Api(cloner)

    created = api.call("POST", json={"tenant_id": "life-http", "engine": "postgres",
                                     "industry": "technology"})
    assert created.status_code == 202, created.text
    api.wait_status("life-http", "ready")
    old_dsn = api.show("life-http", reveal=True)["dsn"]["app"]
    asyncio.run(write_rows(old_dsn, ROWS))

    early = api.call("POST", "/life-http/restore")
    assert early.status_code == 409, early.text
    deleted = api.call("DELETE", "/life-http")
    assert deleted.status_code == 202, deleted.text
    api.wait_status("life-http", "deprovisioned")
    outside = api.call("POST", "/life-http/restore", json={"backup": "../../secret.key"})
    assert outside.status_code == 422 and outside.json()["field"] == "backup"

    restored = api.call("POST", "/life-http/restore")
    assert restored.status_code == 202, restored.text
    assert restored.json()["status"] == "requested"
    api.wait_status("life-http", "ready")

    doc = api.show("life-http", reveal=True)
    assert doc["isolation"]["passed"] is True
    new_dsn = doc["dsn"]["app"]
    assert new_dsn != old_dsn
    assert asyncio.run(read_rows(new_dsn)) == ROWS
    port = doc["endpoint"]["port"]
    old_on_new_port = old_dsn.rsplit("@", 1)[0] + f"@127.0.0.1:{port}/life_http"
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(read_rows(old_on_new_port))
    actors = {e["kind"]: e["detail"].get("actor") for e in doc["events"]}
    assert actors["deprovision_requested"] == "http"
    assert actors["restore_requested"] == "http"
    assert actors["restored"] == "http"
    metrics = httpx.get(f"{cloner.base_url}/metrics", timeout=5.0).text
    assert 'cloner_restores_total{engine="postgres",outcome="success"} 1.0' in metrics
    assert cloner.stop_daemon() == 0
