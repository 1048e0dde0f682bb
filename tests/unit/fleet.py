"""A small fleet of tenants on fakes, shared by the reconciler and health monitor unit tests.

Real SQLite control plane, catalog, vault and metrics; ``InMemoryRuntime`` and
``FakeEngine`` instead of Docker and PostgreSQL. Tenants reach READY through
the real worker and pipeline, so the registry rows look exactly as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloner import constants
from cloner.app import App
from cloner.controlplane import SQLiteControlPlane
from cloner.daemon.worker import Worker
from cloner.domain import Request, RequestKind, Tenant
from cloner.runtime.base import ContainerInfo
from cloner.secrets import generate_credentials
from cloner.settings import Settings
from cloner.tenants import TenantService
from cloner.testing import FakeEngine, InMemoryRuntime, open_fake_app

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Fleet:
    """An app on fakes plus shortcuts to make tenants and read metrics."""

    app: App
    runtime: InMemoryRuntime
    engine: FakeEngine

    @property
    def cp(self) -> SQLiteControlPlane:
        """The real SQLite control plane."""
        assert isinstance(self.app.control_plane, SQLiteControlPlane)
        return self.app.control_plane

    async def claim(self, timeout_s: float = 2.0) -> Request:
        """Lease the next request as this app's owner."""
        async with asyncio.timeout(timeout_s):
            while True:
                request = await self.cp.claim(self.app.owner_id, self.app.settings.lease_ttl_s)
                if request is not None:
                    return request
                await asyncio.sleep(0.005)

    async def work_once(self) -> None:
        """Claim one request and run it to its outcome with a real worker."""
        await Worker(self.app, "w").process(await self.claim())

    async def ready(self, tenant_id: str = "acme") -> Tenant:
        """Provision a tenant to READY through the real pipeline."""
        await TenantService(self.app).create(tenant_id, "postgres", "none")
        await self.work_once()
        return await self.tenant(tenant_id)

    async def delete(self, tenant_id: str = "acme", *, purge: bool = False) -> None:
        """Deprovision a tenant through the real pipeline."""
        await self.cp.enqueue(None, RequestKind.DEPROVISION, tenant_id, {"purge": purge})
        await self.work_once()

    async def tenant(self, tenant_id: str = "acme") -> Tenant:
        """A tenant as stored."""
        found = await self.cp.get_tenant(tenant_id)
        assert found is not None
        return found

    async def stray(self, tenant_id: str, request_id: str = "r-stray") -> ContainerInfo:
        """A container + volume with our labels that no worker registered (a crash leftover)."""
        labels = {
            constants.LABEL_TENANT: tenant_id,
            constants.LABEL_REQUEST: request_id,
            constants.LABEL_ENGINE: "postgres",
            constants.LABEL_TEMPLATE_VERSION: "v1.1",
            constants.LABEL_ROLE: "tenant-database",
        }
        defaults = self.app.services.container_defaults("postgres")
        spec = self.engine.container_spec(
            tenant_id, generate_credentials("stray"), labels, defaults
        )
        await self.runtime.ensure_network(self.app.settings.tenant_network)
        return await self.runtime.ensure_container(spec)

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the app's registry, None when the series does not exist."""
        return self.app.metrics.registry.get_sample_value(name, labels)

    def count(self, name: str, **labels: str) -> float:
        """A counter sample, 0 when absent."""
        return self.metric(name, **labels) or 0.0


@asynccontextmanager
async def open_fleet(tmp_path: Path, engine: FakeEngine, **overrides: Any) -> AsyncIterator[Fleet]:
    """A Fleet with test settings (overridable); closed afterwards."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data", "templates_dir": REPO / "templates",
        "industry_templates_dir": REPO / "industry_templates",
        "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "_env_file": None,
    }
    settings = Settings(**(values | overrides))
    runtime = InMemoryRuntime()
    async with open_fake_app(settings, runtime=runtime) as app:
        yield Fleet(app, runtime, engine)
