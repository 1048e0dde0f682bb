"""Real Docker, real PostgreSQL: a burst of 50 signups at once, worked by the default pool.

Correctness only: every tenant ends ready, isolated, on its own port and in
its own container. How long the burst takes is recorded in the test's
output (``-s`` or ``--durations``), never asserted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cloner import constants
from cloner.app import App
from cloner.domain import RequestStatus, Status, container_name, sql_identifier
from cloner.tenants import TenantService
from tests.integration.helpers import run_workers

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

BURST = 50
INDUSTRIES = ("technology", "healthcare", "finance", "none")


async def _tenant_containers(app: App) -> list[dict[str, Any]]:
    """Name and labels of every tenant container carrying this install's label, from Docker."""
    def read() -> list[dict[str, Any]]:
        found = app.runtime.client.containers.list(
            all=True,
            filters={"label": [f"{constants.LABEL_INSTALL}={app.install_id}",
                               f"{constants.LABEL_ROLE}=tenant-database"]},
        )
        return [{"name": c.name, "labels": dict(c.labels), "status": c.status} for c in found]

    return await asyncio.to_thread(read)


async def test_fifty_tenants_at_once_all_ready_isolated_and_distinct(docker_app: App) -> None:
    """50 simultaneous creates on the default workers: all READY, isolated, distinct ports."""
    app = docker_app
    service = TenantService(app)
    ids = [f"burst-{i:02d}" for i in range(BURST)]
    started = time.monotonic()
    requests = [await service.create(tid, "postgres", INDUSTRIES[i % len(INDUSTRIES)])
                for i, tid in enumerate(ids)]
    await run_workers(app, [r.id for r in requests], workers=app.settings.workers,
                      timeout_s=600)
    elapsed_s = time.monotonic() - started
    print(f"\nburst: {BURST} tenants with {app.settings.workers} workers in {elapsed_s:.1f}s")

    finished = [await app.control_plane.get_request(r.id) for r in requests]
    assert [r.status for r in finished if r is not None] == [RequestStatus.DONE] * BURST

    tenants = {t.tenant_id: t for t in await app.control_plane.list_tenants()}
    assert sorted(tenants) == ids
    not_ready = {tid: (t.status.value, t.error) for tid, t in tenants.items()
                 if t.status is not Status.READY}
    assert not_ready == {}
    assert not [t for t in tenants.values() if t.status is Status.FAILED]
    for tid, tenant in tenants.items():
        assert tenant.isolation is not None, tid
        assert tenant.isolation.passed, (tid, tenant.isolation.as_dict())
        assert tenant.container_name == container_name(tid)
        assert tenant.endpoint is not None
        assert tenant.endpoint.host == app.settings.bind_host
        assert tenant.endpoint.database == sql_identifier(tid)

    ports = [t.endpoint.port for t in tenants.values() if t.endpoint is not None]
    assert None not in ports
    assert len(set(ports)) == BURST

    containers = await _tenant_containers(app)
    assert len(containers) == BURST
    assert sorted(str(c["name"]) for c in containers) == sorted(container_name(t) for t in ids)
    assert {c["labels"][constants.LABEL_TENANT] for c in containers} == set(ids)
    assert {c["status"] for c in containers} == {"running"}
