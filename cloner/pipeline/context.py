"""Shared collaborators of the pipelines (built by the app, passed in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloner.catalog import Catalog
from cloner.controlplane import ControlPlane
from cloner.domain import Credentials, Tenant, container_name
from cloner.engines import (
    ContainerDefaults,
    EngineDriver,
    Placement,
    SessionLimits,
    TenantTarget,
    get_engine,
)
from cloner.engines.base import EndpointGuard
from cloner.errors import ClonerError
from cloner.logging import REDACTOR
from cloner.metrics import Metrics
from cloner.runtime import Runtime
from cloner.secrets import Vault
from cloner.settings import Settings

if TYPE_CHECKING:
    from cloner.pipeline.hosts import TenantHost


@dataclass(frozen=True)
class Services:
    """What a pipeline step may talk to."""

    settings: Settings
    control_plane: ControlPlane
    runtime: Runtime
    catalog: Catalog
    vault: Vault
    metrics: Metrics
    install_id: str

    def container_defaults(self, engine: str) -> ContainerDefaults:
        """Container shaping from settings, for one engine."""
        s = self.settings
        return ContainerDefaults(
            image=s.image_for(engine), bind_host=s.bind_host, network=s.tenant_network,
            memory_limit_bytes=s.tenant_memory_limit_bytes, nano_cpus=s.tenant_nano_cpus,
            pids_limit=s.tenant_pids_limit, shm_size_bytes=s.tenant_shm_size_bytes,
            connection_limit=s.tenant_connection_limit,
            mysql_innodb_buffer_pool_mb=s.mysql_innodb_buffer_pool_mb,
            log_max_size=s.tenant_log_max_size, log_max_files=s.tenant_log_max_files,
            volume_size_bytes=(s.tenant_volume_quota_bytes or None)
            if s.tenant_volume_size_limit else None,
        )

    def host(self, driver: EngineDriver) -> TenantHost:
        """Where ``driver``'s tenant databases live (container or data-dir file)."""
        from cloner.pipeline.hosts import host_for

        return host_for(self, driver)

    def storage_root(self, driver: EngineDriver) -> Path | None:
        """The directory an embedded engine keeps its files in (None for containers)."""
        if driver.placement is Placement.EMBEDDED:
            return self.settings.data_dir / driver.engine.value
        return None

    async def credentials(self, tenant_id: str) -> Credentials | None:
        """Decrypted credentials of a tenant (also registered for log redaction)."""
        token = await self.control_plane.credentials_token(tenant_id)
        if token is None:
            return None
        creds = self.vault.open_credentials(token)
        REDACTOR.add(creds.all_secrets())
        return creds

    async def target(self, tenant: Tenant) -> tuple[EngineDriver, TenantTarget]:
        """Engine driver and connection target of a registered tenant."""
        engine = get_engine(tenant.engine)
        creds = await self.credentials(tenant.tenant_id)
        if creds is None or tenant.endpoint is None:
            raise ClonerError(f"tenant {tenant.tenant_id} has no endpoint or credentials")
        name = (tenant.container_name or container_name(tenant.tenant_id)
                if engine.placement is Placement.CONTAINER else None)
        return engine, TenantTarget(
            tenant_id=tenant.tenant_id,
            database=engine.database_name(tenant.tenant_id),
            endpoint=tenant.endpoint,
            credentials=creds,
            container_name=name,
            storage_root=self.storage_root(engine),
            session=SessionLimits.from_settings(self.settings),
            guard=self.endpoint_guard(tenant.tenant_id, name, tenant.container_id),
            legacy_hardening=tenant.hardening_level < engine.hardening_level,
        )

    def endpoint_guard(
        self, tenant_id: str, name: str | None, container_id: str | None
    ) -> EndpointGuard | None:
        """What vouches for a container tenant's endpoint before a secret goes there."""
        from cloner.pipeline.endpoints import ContainerEndpointGuard

        if name is None:
            return None  # embedded: a file in the data dir, no endpoint to squat
        return ContainerEndpointGuard(self.runtime, tenant_id, name, container_id)
