"""Helpers the migration tests of every engine share (real tenants, real databases)."""

from __future__ import annotations

from typing import Any

from cloner.app import App
from cloner.domain import Status
from cloner.engines.base import MigrationHooks, TenantTarget
from cloner.migrations.catalogue import diff_catalogues
from cloner.migrations.rollout import Rollout, RolloutOptions, RolloutResult
from cloner.migrations.runner import migration_hooks
from cloner.tenants import TenantService
from tests.integration.helpers import run_workers


async def provision_versions(
    app: App, engine: str, specs: list[tuple[str, str, str]], actor: str
) -> None:
    """Provision (tenant, version, industry) triples with three workers; all must be ready."""
    service = TenantService(app)
    requests = [await service.create(t, engine, industry, version, actor=actor)
                for t, version, industry in specs]
    await run_workers(app, [r.id for r in requests], workers=3)
    for tenant_id, version, _industry in specs:
        tenant = await service.get(tenant_id)
        assert (tenant.status, tenant.template_version) == (Status.READY, version), tenant.error


async def rollout(
    app: App, engine: str, target: str, *tenants: str, actor: str, **options: Any
) -> RolloutResult:
    """Run a rollout of ``engine``'s tenants in-process."""
    return await Rollout(app.services, RolloutOptions(
        target_version=target, engine=engine, tenants=tenants, actor=actor, **options)).run()


async def reach(app: App, tenant_id: str) -> tuple[MigrationHooks, TenantTarget]:
    """Migration hooks and connection target of a tenant."""
    tenant = await TenantService(app).get(tenant_id)
    engine, target = await app.services.target(tenant)
    return migration_hooks(engine), target


async def catalogue(app: App, tenant_id: str) -> dict[str, Any]:
    """The tenant's schema catalogue, read from its database."""
    hooks, target = await reach(app, tenant_id)
    return await hooks.schema_catalogue(target)


async def assert_same_schema(app: App, fresh: str, migrated: str) -> None:
    """Fail with the list of differences unless both tenants have the same catalogue."""
    expected, actual = await catalogue(app, fresh), await catalogue(app, migrated)
    differences = diff_catalogues(expected, actual)
    assert differences == [], f"{migrated} differs from {fresh}:\n" + "\n".join(differences)
    assert expected == actual


async def version_in_db(app: App, tenant_id: str) -> str:
    """What the tenant database's schema_info says."""
    hooks, target = await reach(app, tenant_id)
    return (await hooks.migration_state(target)).current_version
