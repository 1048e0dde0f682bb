"""Real Docker: tenants hardened by an older cloner are brought up to today's rbac.

Each test provisions a tenant, puts it back into the shape an older cloner
left (PostgreSQL: the owner role owns the database; MariaDB: root-defined
schema_info guard triggers) with its recorded hardening level at 0, and runs
a reconciler pass and the worker: the legacy state is gone, the tenant stays
READY with the same credentials and data, the ``hardened`` event is recorded,
and a second pass does nothing. Once hardened, the same legacy state fails the
proof.
"""

from __future__ import annotations

import aiomysql
import asyncpg
import pytest

from cloner.app import App
from cloner.controlplane import TenantUpdate
from cloner.daemon.reconciler import Reconciler
from cloner.daemon.worker import drain_until_done
from cloner.domain import CheckResult, Engine, RequestKind, Status
from cloner.engines import TenantTarget, get_engine
from cloner.pipeline.verify import prove_isolation
from cloner.tenants import TenantService
from tests.integration.helpers import connect, mysql_cursor, provision_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _check(checks: tuple[CheckResult, ...] | list[CheckResult], name: str) -> CheckResult:
    found = [c for c in checks if c.name == name]
    assert found, f"the proof has no check {name}: {[c.name for c in checks]}"
    return found[0]


async def _pass_and_work(app: App, tenant_id: str) -> str:
    """One reconciler pass that queues the tenant's harden request, then the worker runs it."""
    report = await Reconciler(app).reconcile_once()
    assert [a.tenant_id for a in report.of("harden_queued")] == [tenant_id]
    request = await app.control_plane.active_request(tenant_id)
    assert request is not None and request.kind is RequestKind.HARDEN
    await drain_until_done(app, request.id, 120)
    done = await app.control_plane.get_request(request.id)
    assert done is not None and done.status.value == "done", done
    return request.id


async def _assert_hardened_once(app: App, tenant_id: str, token: str | None) -> None:
    tenant = await TenantService(app).get(tenant_id)
    assert tenant.status is Status.READY
    assert tenant.hardening_level == get_engine(tenant.engine).hardening_level == 1
    assert tenant.isolation is not None and tenant.isolation.passed, tenant.isolation
    # Same credentials: the stored token was not rewritten.
    assert await app.control_plane.credentials_token(tenant_id) == token
    hardened = [e for e in await app.control_plane.events(tenant_id) if e["kind"] == "hardened"]
    assert [(e["detail"]["from"], e["detail"]["to"]) for e in hardened] == [(0, 1)]
    # A second pass finds nothing to do.
    report = await Reconciler(app).reconcile_once()
    assert report.of("harden_queued") == ()
    assert await app.control_plane.active_request(tenant_id) is None


async def _superuser(target: TenantTarget) -> asyncpg.Connection:
    su = target.credentials.superuser
    return await asyncpg.connect(host=target.endpoint.host, port=target.endpoint.port,
                                 user=su.username, password=su.password,
                                 database=target.database, timeout=5, ssl=False)


async def test_pg_legacy_tenant_is_hardened_by_the_pass(docker_app: App) -> None:
    app = docker_app
    tid = "hd-pg-legacy"
    await provision_ready(app, "postgres", tid)
    service = TenantService(app)
    _driver, target = await app.services.target(await service.get(tid))
    db, owner_name = target.database, target.credentials.roles["owner"].username
    superuser = target.credentials.superuser.username
    token = await app.control_plane.credentials_token(tid)

    owner = await connect(target, "owner")
    su = await _superuser(target)
    try:
        await owner.execute("CREATE TABLE hd_data (v text)")
        await owner.execute("INSERT INTO hd_data VALUES ('kept')")
        # What an older cloner left: the owner role owns the database, level 0.
        await su.execute(f'ALTER DATABASE "{db}" OWNER TO "{owner_name}"')
        await app.control_plane.update_tenant(tid, TenantUpdate(hardening_level=0))
        legacy_driver, legacy = await app.services.target(await service.get(tid))
        assert legacy.legacy_hardening
        report = await prove_isolation(app.services, Engine.POSTGRES, legacy_driver, legacy)
        settings = _check(report.checks, "no_tenant_session_settings")
        assert settings.passed and "tolerated" in settings.detail, settings
        # The weakness is real: the owner can steer every session of its database.
        await owner.execute(f'ALTER DATABASE "{db}" SET work_mem = \'8MB\'')

        request_id = await _pass_and_work(app, tid)

        assert await su.fetchval(
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database "
            "WHERE datname = $1", db) == superuser
        assert await su.fetchval(
            "SELECT count(*) FROM pg_catalog.pg_db_role_setting s "
            "JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1",
            db) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await owner.execute(f'ALTER DATABASE "{db}" SET work_mem = \'8MB\'')
        events = await app.control_plane.events(tid)
        assert any(e["kind"] == "hardened" and e["detail"]["request"] == request_id
                   for e in events)
        await _assert_hardened_once(app, tid, token)
        # The application still logs in with the password it always had; data intact.
        app_conn = await connect(target, "app")
        try:
            assert await app_conn.fetchval("SELECT v FROM hd_data") == "kept"
            await app_conn.execute("INSERT INTO hd_data VALUES ('after')")
        finally:
            await app_conn.close()

        # Hardened: the same legacy ownership now fails the proof.
        await su.execute(f'ALTER DATABASE "{db}" OWNER TO "{owner_name}"')
        strict_driver, strict = await app.services.target(await service.get(tid))
        assert not strict.legacy_hardening
        checks = await strict_driver.prove_isolation(strict, [])
        settings = _check(checks, "no_tenant_session_settings")
        assert not settings.passed and f"owned by {owner_name}" in settings.detail
    finally:
        await owner.close()
        await su.close()


async def _root_guard(cur: aiomysql.Cursor) -> None:
    """The insert guard as releases before the owner-defined ones created it: root's."""
    await cur.execute(
        "CREATE OR REPLACE DEFINER = root@localhost TRIGGER schema_info_guard_insert "
        "BEFORE INSERT ON schema_info FOR EACH ROW SET @cloner_guard = 1")


async def _guard_definers(cur: aiomysql.Cursor, database: str) -> set[str]:
    await cur.execute("SELECT DISTINCT DEFINER FROM information_schema.TRIGGERS "
                      "WHERE TRIGGER_SCHEMA = %s", (database,))
    return {str(row[0]).partition("@")[0] for row in await cur.fetchall()}


async def test_mysql_legacy_guard_triggers_are_redefined_by_the_pass(docker_app: App) -> None:
    app = docker_app
    tid = "hd-my-legacy"
    await provision_ready(app, "mysql", tid)
    service = TenantService(app)
    _driver, target = await app.services.target(await service.get(tid))
    owner_name = target.credentials.roles["owner"].username
    token = await app.control_plane.credentials_token(tid)

    async with mysql_cursor(target, "owner") as cur:
        await cur.execute("CREATE TABLE hd_data (v VARCHAR(20))")
        await cur.execute("INSERT INTO hd_data VALUES ('kept')")
    async with mysql_cursor(target, None) as cur:
        await _root_guard(cur)
        assert "root" in await _guard_definers(cur, target.database)
    await app.control_plane.update_tenant(tid, TenantUpdate(hardening_level=0))
    legacy_driver, legacy = await app.services.target(await service.get(tid))
    assert _check(await legacy_driver.prove_isolation(legacy, []),
                  "no_privileged_definers").passed

    await _pass_and_work(app, tid)

    async with mysql_cursor(target, None) as cur:
        assert await _guard_definers(cur, target.database) == {owner_name}
    await _assert_hardened_once(app, tid, token)
    async with mysql_cursor(target, "app") as cur:
        await cur.execute("SELECT v FROM hd_data")
        assert [row[0] for row in await cur.fetchall()] == ["kept"]

    # Hardened: a root-defined guard is no longer tolerated.
    async with mysql_cursor(target, None) as cur:
        await _root_guard(cur)
    strict_driver, strict = await app.services.target(await service.get(tid))
    definers = _check(await strict_driver.prove_isolation(strict, []), "no_privileged_definers")
    assert not definers.passed and "schema_info_guard_insert" in definers.detail
