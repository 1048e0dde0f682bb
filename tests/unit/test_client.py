"""Unit tests of ``cloner.client.Client`` against the in-process ASGI app, on fakes.

A ``Worker`` from ``cloner.daemon.worker`` runs on the same fake app in the
background, so tenants really move ``requested → ready`` (or ``failed``)
while the client polls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cloner.app import App
from cloner.client import (
    Client,
    ClientError,
    Conflict,
    InvalidRequest,
    NotFound,
    ProvisioningFailed,
    Unauthorized,
    WaitTimeout,
)
from cloner.daemon.http import build_http_app
from cloner.daemon.worker import Worker
from cloner.errors import TemplateError
from cloner.settings import Settings
from cloner.testing import FakeEngine, InMemoryRuntime, open_fake_app, use_engine

REPO = Path(__file__).resolve().parents[2]
BASE_URL = "http://cloner.test"


@dataclass
class Setup:
    """A fake app, its ASGI transport and the fake engine."""

    app: App
    transport: httpx.ASGITransport
    engine: FakeEngine
    runtime: InMemoryRuntime

    def client(self, token: str | None = None) -> Client:
        """A client on the ASGI app, with the admin token unless told otherwise."""
        return Client(BASE_URL, self.app.admin_token if token is None else token,
                      transport=self.transport)

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """Run one worker on the app's queue for the duration of the block."""
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(self.app, "test-worker").run(stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=5)


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    """A server-less PostgreSQL driver for the duration of the test."""
    with use_engine(FakeEngine()) as fake:
        yield fake


@pytest.fixture
async def setup(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Setup]:
    """A fake app (fast polling) behind an ASGI transport."""
    settings = Settings(
        data_dir=tmp_path / "data", templates_dir=REPO / "templates",
        industry_templates_dir=REPO / "industry_templates", poll_interval_s=0.02,
        _env_file=None,  # type: ignore[call-arg]
    )
    runtime = InMemoryRuntime()
    async with open_fake_app(settings, runtime=runtime) as app:
        transport = httpx.ASGITransport(app=build_http_app(app))
        yield Setup(app, transport, engine, runtime)


async def test_create_then_wait_ready_returns_the_ready_document(setup: Setup) -> None:
    """create_tenant queues, a worker provisions, wait_ready returns the ready tenant."""
    async with setup.client() as client, setup.worker():
        accepted = await client.create_tenant("acme", engine="postgres", industry="finance")
        ready = await client.wait_ready("acme", timeout_s=10, interval_s=0.02)

    assert accepted["tenant_id"] == "acme"
    assert accepted["status"] == "requested"
    assert isinstance(accepted["request_id"], str) and accepted["request_id"]
    assert ready["status"] == "ready"
    assert ready["isolation"]["passed"] is True
    assert ready["roles"]["app"]["password"] is None


async def test_create_is_idempotent_through_the_client(setup: Setup) -> None:
    """Retrying create_tenant with the same arguments returns the same request id."""
    async with setup.client() as client:
        first = await client.create_tenant("acme", engine="postgres", industry="none",
                                           template_version="v1.1")
        second = await client.create_tenant("acme", engine="postgres", industry="none",
                                            template_version="v1.1")

    assert second["request_id"] == first["request_id"]


async def test_get_list_and_delete_round_trip(setup: Setup) -> None:
    """get_tenant(reveal), list_tenants(status) and delete_tenant(purge) speak the API."""
    async with setup.client() as client, setup.worker():
        await client.create_tenant("acme", engine="postgres", industry="technology")
        await client.wait_ready("acme", timeout_s=10, interval_s=0.02)
        revealed = await client.get_tenant("acme", reveal=True)
        ready = await client.list_tenants(status="ready")
        failed = await client.list_tenants(status="failed")
        everyone = await client.list_tenants()
        deleted = await client.delete_tenant("acme", purge=True)

    assert all(revealed["roles"][r]["password"] for r in ("owner", "app", "readonly"))
    assert [t["tenant_id"] for t in ready] == ["acme"]
    assert failed == []
    assert [t["tenant_id"] for t in everyone] == ["acme"]
    assert deleted["status"] == "deprovisioning"
    assert deleted["request_id"]


async def test_wait_ready_raises_provisioning_failed_with_the_step(setup: Setup) -> None:
    """A permanent failure surfaces as ProvisioningFailed carrying step and reason."""
    setup.engine.fail["apply_templates"] = TemplateError("syntax error at line 3")
    async with setup.client() as client, setup.worker():
        await client.create_tenant("acme", engine="postgres", industry="finance")
        with pytest.raises(ProvisioningFailed) as caught:
            await client.wait_ready("acme", timeout_s=10, interval_s=0.02)

    assert caught.value.problem["step"] == "template"
    assert "syntax error at line 3" in caught.value.detail
    assert isinstance(caught.value, ClientError)


async def test_wait_ready_times_out_while_nothing_works_the_queue(setup: Setup) -> None:
    """Without a worker the tenant stays requested and wait_ready raises WaitTimeout."""
    async with setup.client() as client:
        await client.create_tenant("acme", engine="postgres", industry="finance")
        with pytest.raises(WaitTimeout) as caught:
            await client.wait_ready("acme", timeout_s=0.1, interval_s=0.02)

    assert "still requested" in caught.value.detail


async def test_wait_ready_on_a_tenant_being_deleted_is_a_conflict(setup: Setup) -> None:
    """Waiting for a tenant that is deprovisioned raises Conflict instead of timing out."""
    async with setup.client() as client, setup.worker():
        await client.create_tenant("acme", engine="postgres", industry="finance")
        await client.wait_ready("acme", timeout_s=10, interval_s=0.02)
        await client.delete_tenant("acme")
        for _ in range(500):
            if (await client.get_tenant("acme"))["status"] == "deprovisioned":
                break
            await asyncio.sleep(0.02)
        with pytest.raises(Conflict) as caught:
            await client.wait_ready("acme", timeout_s=1)

    assert "deprovisioned" in caught.value.detail


async def test_restore_tenant_brings_a_deleted_tenant_back(setup: Setup) -> None:
    """restore_tenant on a ready tenant is a Conflict; after a delete it makes it ready again."""
    async with setup.client() as client, setup.worker():
        await client.create_tenant("acme", engine="postgres", industry="finance")
        await client.wait_ready("acme", timeout_s=10, interval_s=0.02)
        with pytest.raises(Conflict):
            await client.restore_tenant("acme")
        await client.delete_tenant("acme")
        for _ in range(500):
            if (await client.get_tenant("acme"))["status"] == "deprovisioned":
                break
            await asyncio.sleep(0.02)
        with pytest.raises(InvalidRequest) as outside:
            await client.restore_tenant("acme", backup="../../secret.key")
        accepted = await client.restore_tenant("acme")
        restored = await client.wait_ready("acme", timeout_s=10, interval_s=0.02)

    assert outside.value.field == "backup"
    assert accepted["status"] == "requested" and accepted["request_id"]
    assert restored["events"][-1]["kind"] == "restored"


async def test_rotate_tenant_queues_new_passwords_that_the_tenant_then_shows(
    setup: Setup,
) -> None:
    """rotate_tenant answers the queued request; once worked, reveal shows the new login;
    an unknown role is InvalidRequest on `role`, an unknown tenant NotFound."""
    setup.app.settings = setup.app.settings.model_copy(update={"rotation_grace_s": 0})
    async with setup.client() as client, setup.worker():
        await client.create_tenant("acme", engine="postgres", industry="finance")
        await client.wait_ready("acme", timeout_s=10, interval_s=0.02)
        with pytest.raises(InvalidRequest) as bad_role:
            await client.rotate_tenant("acme", role="root")
        with pytest.raises(NotFound):
            await client.rotate_tenant("nobody")
        accepted = await client.rotate_tenant("acme", role="app")
        for _ in range(500):
            shown = await client.get_tenant("acme", reveal=True)
            if shown["roles"]["app"]["username"] == "acme_app_r1":
                break
            await asyncio.sleep(0.02)

    assert bad_role.value.field == "role"
    assert accepted["roles"] == ["app"] and accepted["status"] == "ready"
    assert shown["roles"]["app"]["username"] == "acme_app_r1"
    assert shown["roles"]["owner"]["username"] == "acme_owner"


async def test_wrong_token_raises_unauthorized(setup: Setup) -> None:
    """A 401 answer becomes Unauthorized with status and the problem's detail."""
    async with setup.client(token="not-the-token") as client:
        with pytest.raises(Unauthorized) as caught:
            await client.list_tenants()

    assert caught.value.status == 401
    assert "bearer token" in caught.value.detail
    assert caught.value.title == "Unauthorized"


async def test_unknown_tenant_raises_not_found(setup: Setup) -> None:
    """A 404 from get or delete becomes NotFound naming the tenant."""
    async with setup.client() as client:
        with pytest.raises(NotFound) as shown:
            await client.get_tenant("nobody")
        with pytest.raises(NotFound):
            await client.delete_tenant("nobody")

    assert shown.value.status == 404
    assert "nobody" in shown.value.detail
    assert shown.value.field == "tenant_id"


async def test_different_spec_for_an_existing_tenant_raises_conflict(setup: Setup) -> None:
    """Same id with another industry: Conflict (409) explaining what exists."""
    async with setup.client() as client:
        await client.create_tenant("acme", engine="postgres", industry="finance")
        with pytest.raises(Conflict) as caught:
            await client.create_tenant("acme", engine="postgres", industry="healthcare")

    assert caught.value.status == 409
    assert "industry=finance" in caught.value.detail


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"tenant_id": "Bad Id", "engine": "postgres", "industry": "none"}, "tenant_id"),
    ({"tenant_id": "acme", "engine": "oracle", "industry": "none"}, "engine"),
    ({"tenant_id": "acme", "engine": "postgres", "industry": "none",
      "template_version": "v9.9"}, "template_version"),
])
async def test_invalid_create_raises_invalid_request_with_the_field(
    setup: Setup, kwargs: dict[str, str], field: str,
) -> None:
    """A 422 becomes InvalidRequest whose ``field`` names the offending argument."""
    tenant_id = kwargs.pop("tenant_id")
    async with setup.client() as client:
        with pytest.raises(InvalidRequest) as caught:
            await client.create_tenant(tenant_id, **kwargs)

    assert caught.value.status == 422
    assert caught.value.field == field


async def test_path_characters_in_an_id_cannot_change_the_route(setup: Setup) -> None:
    """Ids with '/' or '?' stay one quoted path segment: refused, never another route."""
    async with setup.client() as client:
        with pytest.raises(InvalidRequest) as query:
            await client.get_tenant("acme?reveal=true")
        with pytest.raises(NotFound) as traversal:
            await client.get_tenant("../metrics")

    assert query.value.field == "tenant_id"
    assert "acme?reveal=true" in query.value.detail
    # The router's 404 for the decoded path, not the open /metrics page.
    assert traversal.value.title == "NotFound"


async def test_unreachable_daemon_raises_client_error_without_status() -> None:
    """A transport failure is a ClientError with status None and the URL in the detail."""
    async with Client("http://127.0.0.1:9", "token", timeout_s=2.0) as client:
        with pytest.raises(ClientError) as caught:
            await client.list_tenants()

    assert caught.value.status is None
    assert "127.0.0.1:9" in caught.value.detail
    assert type(caught.value) is ClientError
