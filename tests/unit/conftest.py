"""Shared unit-test fixtures: an app on fakes (real SQLite control plane, catalog, vault)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloner.app import App
from cloner.backups import write_manifest
from cloner.controlplane import SQLiteControlPlane
from cloner.daemon.worker import Worker
from cloner.domain import Request, Tenant
from cloner.settings import Settings
from cloner.tenants import TenantService
from cloner.testing import DUMP_MAGIC, FakeEngine, InMemoryRuntime, open_fake_app, use_engine

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    """An app on fakes plus shortcuts for enqueue → claim → process."""

    app: App
    runtime: InMemoryRuntime
    engine: FakeEngine

    @property
    def cp(self) -> SQLiteControlPlane:
        """The real SQLite control plane."""
        assert isinstance(self.app.control_plane, SQLiteControlPlane)
        return self.app.control_plane

    async def create(self, tenant_id: str = "acme", industry: str = "finance") -> Request:
        """Enqueue a provisioning request the way the CLI and HTTP API do."""
        return await TenantService(self.app).create(tenant_id, "postgres", industry)

    async def claim(self, timeout_s: float = 2.0) -> Request:
        """Lease the next request as this app's owner, waiting out a backoff if needed."""
        async with asyncio.timeout(timeout_s):
            while True:
                request = await self.cp.claim(self.app.owner_id, self.app.settings.lease_ttl_s)
                if request is not None:
                    return request
                await asyncio.sleep(0.005)

    async def work_once(self) -> Request:
        """Claim one request, process it with a worker, return it as the queue now sees it."""
        request = await self.claim()
        await Worker(self.app, "w").process(request)
        return await self.request(request.id)

    async def request(self, request_id: str) -> Request:
        """A request as stored."""
        found = await self.cp.get_request(request_id)
        assert found is not None
        return found

    async def tenant(self, tenant_id: str = "acme") -> Tenant:
        """A tenant as stored."""
        found = await self.cp.get_tenant(tenant_id)
        assert found is not None
        return found

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the app's registry (0 when absent)."""
        return self.app.metrics.registry.get_sample_value(name, labels) or 0.0


EnvFactory = Callable[..., Awaitable[Env]]


def make_backup(backups_dir: Path, tenant_id: str, stamp: str = "20260101T000000000000Z",
                data: bytes | None = None, **manifest: Any) -> Path:
    """Write a dump, its manifest and its .sha256 the way the deprovisioner does."""
    folder = backups_dir / tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{tenant_id}-{stamp}.dump"
    payload = data if data is not None else DUMP_MAGIC + f" {tenant_id} {stamp}".encode()
    path.write_bytes(payload)
    record = {
        "path": str(path), "size_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(), "engine": "postgres",
        "template_version": "v1.1", "industry": "finance", "reason": "deprovision",
        "taken_at": "2026-01-01T00:00:00+00:00", "label": f"cloner-{tenant_id}",
        "actor": "cli:alice",
    } | manifest
    write_manifest(path, record)
    return path


def unit_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for unit tests: repo templates, a tmp data dir, fast backoff."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data", "templates_dir": REPO / "templates",
        "industry_templates_dir": REPO / "industry_templates",
        "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "_env_file": None,
    }
    # A stalled worker is simulated with a heartbeat slower than its lease, which
    # Settings refuses on purpose: those two fields bypass validation here.
    timing = {k: overrides.pop(k) for k in ("lease_ttl_s", "heartbeat_interval_s")
              if k in overrides}
    return Settings(**(values | overrides)).model_copy(update=timing)


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    """A fake PostgreSQL driver, registered for the duration of the test."""
    with use_engine(FakeEngine()) as fake:
        yield fake


@pytest.fixture
async def make_env(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[EnvFactory]:
    """Build an Env with settings overrides; everything is closed after the test."""
    async with AsyncExitStack() as stack:
        async def make(**overrides: Any) -> Env:
            settings = unit_settings(tmp_path, **overrides)
            runtime = InMemoryRuntime()
            app = await stack.enter_async_context(open_fake_app(settings, runtime=runtime))
            return Env(app, runtime, engine)

        yield make


@pytest.fixture
async def env(make_env: EnvFactory) -> Env:
    """An Env with the default test settings."""
    return await make_env()
