"""Real Docker, real PostgreSQL: the reconciler and health monitor repair what crashes break."""

from __future__ import annotations

import asyncio
import dataclasses

import docker
import pytest

from cloner import constants
from cloner.app import App
from cloner.daemon.health import HealthMonitor
from cloner.daemon.reconciler import Reconciler
from cloner.domain import Endpoint, Engine, Status, Tenant, container_name, volume_name
from cloner.engines import TenantTarget, get_engine
from cloner.secrets import generate_credentials
from cloner.tenants import TenantService
from tests.integration.helpers import connect, run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MARKER = "reconcile_marker"


async def _tenant(app: App, tenant_id: str) -> Tenant:
    tenant = await app.control_plane.get_tenant(tenant_id)
    assert tenant is not None
    return tenant


async def _marker(app: App, tenant: Tenant) -> str | None:
    conn = await connect(await target_of(app, tenant), "app")
    try:
        value: str | None = await conn.fetchval(
            "SELECT value #>> '{}' FROM system_settings WHERE key = $1", MARKER)
        return value
    finally:
        await conn.close()


def _docker(action: str, name: str) -> None:
    client = docker.from_env()
    try:
        container = client.containers.get(name)
        if action == "rm":
            container.remove(force=True)
        else:
            container.stop(timeout=10)
    finally:
        client.close()


async def test_lost_and_stopped_containers_come_back_with_their_data(docker_app: App) -> None:
    """docker rm -f → recreated on its volume, data intact; docker stop → degraded → ready."""
    app = docker_app
    request = await TenantService(app).create("phoenix", "postgres", "none")
    await run_workers(app, [request.id], workers=1, timeout_s=60)
    before = await _tenant(app, "phoenix")
    assert before.status is Status.READY and before.endpoint is not None
    conn = await connect(await target_of(app, before), "app")
    try:
        await conn.execute(
            "INSERT INTO system_settings (key, value) VALUES ($1, to_jsonb($2::text))",
            MARKER, "survives")
    finally:
        await conn.close()
    reconciler = Reconciler(app)
    health = HealthMonitor(app)

    # 1. The container is removed behind our back: recreated from its volume.
    await asyncio.to_thread(_docker, "rm", container_name("phoenix"))
    report = await reconciler.reconcile_once()

    assert [a.action for a in report.actions] == ["degraded", "recreated", "ready"], report
    after = await _tenant(app, "phoenix")
    assert after.status is Status.READY
    assert after.container_id != before.container_id
    assert after.endpoint is not None and after.endpoint.host == before.endpoint.host
    assert await _marker(app, after) == "survives"  # the data lived on the volume
    assert after.isolation is not None and after.isolation.passed, after.isolation
    info = await app.runtime.inspect(container_name("phoenix"))
    assert info is not None and info.labels[constants.LABEL_REQUEST] == before.request_id

    # 2. The container is stopped: health degrades it, the reconciler restarts it.
    await asyncio.to_thread(_docker, "stop", container_name("phoenix"))
    probe = (await health.check_once()).get("phoenix")
    assert probe is not None and not probe.up and probe.transition == "degraded"
    assert (await _tenant(app, "phoenix")).status is Status.DEGRADED

    report = await reconciler.reconcile_once()
    assert [a.action for a in report.actions] == ["restarted", "ready"], report

    probe = (await health.check_once(isolation=True)).get("phoenix")
    assert probe is not None and probe.up and probe.isolation_passed
    final = await _tenant(app, "phoenix")
    assert final.status is Status.READY
    assert await _marker(app, final) == "survives"
    labels = {"tenant": "phoenix", "engine": "postgres"}
    sample = app.metrics.registry.get_sample_value
    assert sample("cloner_tenant_up", labels) == 1
    assert (sample("cloner_tenant_memory_bytes", labels) or 0) > 1_000_000
    assert sample("cloner_tenant_cpu_ratio", labels) is not None
    assert sample("cloner_health_transitions_total", {"to": "degraded"}) == 2
    assert sample("cloner_runtime_up", {}) == 1


async def test_orphan_container_and_volume_are_quarantined(docker_app: App) -> None:
    """A container + volume of ours that no registry row wants: reported, never removed."""
    app = docker_app
    driver = get_engine(Engine.POSTGRES)
    labels = {
        constants.LABEL_TENANT: "nobody",
        constants.LABEL_REQUEST: "r-crashed",
        constants.LABEL_ENGINE: "postgres",
        constants.LABEL_TEMPLATE_VERSION: "v1.1",
        constants.LABEL_ROLE: "tenant-database",
    }
    creds = generate_credentials("nobody")
    spec = driver.container_spec("nobody", creds, labels,
                                 app.services.container_defaults("postgres"))
    await app.runtime.ensure_network(app.settings.tenant_network)
    info = await app.runtime.ensure_container(spec)
    # Up and serving, as a worker killed between `start` and `register` would leave it.
    endpoint = Endpoint(app.settings.bind_host, info.host_port, "postgres")
    await driver.wait_ready(TenantTarget("nobody", "postgres", endpoint, creds), 60)
    owned = await app.runtime.owned()
    assert all(c.created_at is not None for c in owned.containers)
    assert [v.name for v in owned.volume_info] == [volume_name("nobody")]
    assert all(v.created_at is not None for v in owned.volume_info)

    # Within the grace (from first sight) nothing is reported; after it, both are quarantined.
    assert (await Reconciler(app).reconcile_once()).actions == ()
    eager = dataclasses.replace(
        app, settings=app.settings.model_copy(update={"orphan_grace_s": 0.0}))
    report = await Reconciler(eager).reconcile_once()

    assert report.of("orphan_removed") == ()
    assert sorted(a.subject for a in report.of("quarantined")) == [
        container_name("nobody"), volume_name("nobody")]
    assert await app.runtime.inspect(container_name("nobody")) is not None
    assert await app.runtime.volume_exists(volume_name("nobody"))

