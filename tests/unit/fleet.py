"""A small fleet of tenants on fakes, shared by the reconciler and health monitor unit tests.

Real SQLite control plane, catalog, vault and metrics; ``InMemoryRuntime`` and
``FakeEngine`` instead of Docker and PostgreSQL. Tenants reach READY through
the real worker and pipeline, so the registry rows look exactly as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloner import constants
from cloner.domain import RequestKind, Tenant
from cloner.runtime.base import ContainerInfo
from cloner.secrets import generate_credentials
from cloner.tenants import TenantService
from cloner.testing import FakeEngine, InMemoryRuntime, open_fake_app
from tests.unit.conftest import Env, unit_settings


@dataclass
class Fleet(Env):
    """An app on fakes plus shortcuts to make tenants and read metrics."""

    async def ready(self, tenant_id: str = "acme") -> Tenant:
        """Provision a tenant to READY through the real pipeline."""
        await TenantService(self.app).create(tenant_id, "postgres", "none")
        await self.work_once()
        return await self.tenant(tenant_id)

    async def delete(self, tenant_id: str = "acme", *, purge: bool = False) -> None:
        """Deprovision a tenant through the real pipeline."""
        await self.cp.enqueue(None, RequestKind.DEPROVISION, tenant_id, {"purge": purge})
        await self.work_once()

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

    def sample(self, name: str, **labels: str) -> float | None:
        """A sample of the app's registry, None when the series does not exist."""
        return self.app.metrics.registry.get_sample_value(name, labels)


@asynccontextmanager
async def open_fleet(tmp_path: Path, engine: FakeEngine, **overrides: Any) -> AsyncIterator[Fleet]:
    """A Fleet with test settings (overridable); closed afterwards."""
    settings = unit_settings(tmp_path, **overrides)
    runtime = InMemoryRuntime()
    async with open_fake_app(settings, runtime=runtime) as app:
        yield Fleet(app, runtime, engine)
