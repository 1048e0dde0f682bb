"""Real Docker, real PostgreSQL: delete → purge → restore, on-demand backups, retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from cloner.app import App
from cloner.backups import verify_backup
from cloner.daemon.reconciler import Reconciler
from cloner.domain import RequestKind, Status, volume_name
from cloner.engines import TenantTarget
from cloner.errors import InvalidTransition
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import connect, run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CLONER = Path(sys.executable).with_name("cloner")
ACTOR = "cli:integration"


async def provision(app: App, tenant_id: str) -> TenantTarget:
    """Create a technology tenant on the latest template and run a worker until it is ready."""
    request = await TenantService(app).create(tenant_id, "postgres", "technology", actor=ACTOR)
    await run_workers(app, [request.id], workers=1)
    tenant = await TenantService(app).get(tenant_id)
    assert tenant.status is Status.READY, tenant.error
    return await target_of(app, tenant)


async def run(app: App, request_id: str) -> None:
    """Run a worker until one request has finished."""
    await run_workers(app, [request_id], workers=1)


async def add_customers(target: TenantTarget, prefix: str, count: int) -> None:
    """Insert ``count`` customers as the app role (what an application would do)."""
    conn = await connect(target, "app")
    try:
        await conn.execute(
            "INSERT INTO customers (email, name) SELECT $1 || g || '@example.com', "
            "'Customer ' || g FROM generate_series(1, $2::int) g", prefix, count,
        )
    finally:
        await conn.close()


async def count_customers(target: TenantTarget, prefix: str, role: str = "app") -> int:
    """Customers whose email starts with ``prefix``, read with one of the tenant's roles."""
    conn = await connect(target, role)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM customers WHERE email LIKE $1 || '%'", prefix))
    finally:
        await conn.close()


def backup_list(app: App, tenant_id: str) -> list[dict[str, object]]:
    """`cloner backup list TENANT --json` against the app's data dir, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env["CLONER_DATA_DIR"] = str(app.settings.data_dir)
    proc = subprocess.run(
        [str(CLONER), "backup", "list", tenant_id, "--json"], env=env,
        cwd=app.settings.data_dir, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, object]] = json.loads(proc.stdout)
    return rows


async def test_purged_tenant_comes_back_with_its_rows_and_new_credentials(
    docker_app: App,
) -> None:
    """123 rows → delete → purge (volume gone) → restore: rows readable with NEW credentials."""
    app = docker_app
    service = TenantService(app)
    old = await provision(app, "life-a")
    await add_customers(old, "life", 123)

    deleted = await service.delete("life-a", purge=False, actor=ACTOR)
    await run(app, deleted.id)
    assert (await service.get("life-a")).status is Status.DEPROVISIONED
    purged = await service.delete("life-a", purge=True, actor=ACTOR)
    await run(app, purged.id)
    tenant = await service.get("life-a")
    assert tenant.status is Status.PURGED
    assert not await app.runtime.volume_exists(volume_name("life-a"))
    assert tenant.backup is not None

    restore = await service.restore("life-a", actor=ACTOR)
    await run(app, restore.id)

    restored = await service.get("life-a")
    assert restored.status is Status.READY, restored.error
    assert restored.isolation is not None and restored.isolation.passed
    assert restored.template_version == tenant.template_version
    new = await target_of(app, restored)
    assert await count_customers(new, "life") == 123
    assert await count_customers(new, "life", role="readonly") == 123
    # RBAC was re-granted on the restored tables: app writes (sequences too), readonly cannot.
    await add_customers(new, "after", 1)
    ro = await connect(new, "readonly")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ro.execute("DELETE FROM customers")
    finally:
        await ro.close()
    for role in ("owner", "app", "readonly"):
        assert new.credentials.roles[role].password != old.credentials.roles[role].password
    with pytest.raises(asyncpg.InvalidPasswordError):
        await connect(old, "app", host_port=(new.endpoint.host, new.endpoint.port))  # type: ignore[arg-type]
    assert await app.runtime.volume_exists(volume_name("life-a"))
    kinds = [e["kind"] for e in await app.control_plane.events("life-a")]
    assert kinds[-1] == "restored" and "restore_requested" in kinds
    assert app.metrics.restores.labels(engine="postgres", outcome="success")._value.get() == 1


async def test_on_demand_backup_then_restore_from_that_older_backup(docker_app: App) -> None:
    """Backup at 123 rows, grow to 200, delete; restore --from the older backup → 123 rows."""
    app = docker_app
    service = TenantService(app)
    target = await provision(app, "life-b")
    await add_customers(target, "old", 123)

    with pytest.raises(InvalidTransition, match="is ready"):
        await service.restore("life-b")
    request = await service.backup("life-b", actor=ACTOR)
    assert request.kind is RequestKind.BACKUP
    await run(app, request.id)
    older = (await service.get("life-b")).backup
    assert older is not None and older["reason"] == "on-demand" and older["actor"] == ACTOR
    listed = backup_list(app, "life-b")
    assert [(r["path"], r["verified"], r["reason"]) for r in listed] == [
        (older["path"], True, "on-demand")]

    await add_customers(target, "new", 77)
    deleted = await service.delete("life-b", purge=False, actor=ACTOR)
    await run(app, deleted.id)
    final = (await service.get("life-b")).backup
    assert final is not None and final["path"] != older["path"]
    assert [r["verified"] for r in backup_list(app, "life-b")] == [True, True]

    restore = await service.restore("life-b", older["path"], actor=ACTOR)
    await run(app, restore.id)

    restored = await service.get("life-b")
    assert restored.status is Status.READY, restored.error
    new = await target_of(app, restored)
    assert await count_customers(new, "old") == 123
    assert await count_customers(new, "new") == 0
    # The final backup (200 rows) is still there to restore later.
    assert verify_backup(app.settings.backups_dir, "life-b", final["path"]).verified


async def test_retention_zero_purges_the_volume_and_keeps_the_backup(tmp_path: Path) -> None:
    """retention_days=0: one reconciler pass + a worker purge a deprovisioned tenant's volume."""
    require_docker()
    settings = make_settings(tmp_path / "data", retention_days=0)
    async with App.open(settings) as app:
        try:
            await provision(app, "life-c")
            deleted = await TenantService(app).delete("life-c", purge=False, actor=ACTOR)
            await run(app, deleted.id)
            tenant = await TenantService(app).get("life-c")
            assert tenant.status is Status.DEPROVISIONED and tenant.backup is not None
            assert await app.runtime.volume_exists(volume_name("life-c"))

            report = await Reconciler(app).reconcile_once()

            assert [a.tenant_id for a in report.of("retention_queued")] == ["life-c"]
            active = await app.control_plane.active_request("life-c")
            assert active is not None and active.payload["actor"] == "retention"
            await run(app, active.id)
            purged = await TenantService(app).get("life-c")
            assert purged.status is Status.PURGED
            assert not await app.runtime.volume_exists(volume_name("life-c"))
            assert verify_backup(settings.backups_dir, "life-c", tenant.backup["path"]).verified
            retention = app.metrics.reconcile_actions.labels(action="retention_purged")
            assert retention._value.get() == 1
            event = (await app.control_plane.events("life-c"))[-1]
            assert (event["kind"], event["detail"]["actor"]) == ("purged", "retention")
        finally:
            await remove_owned(app)
