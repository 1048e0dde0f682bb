"""Real Docker: a tenant cannot steer cloner's privileged sessions (audit H1, M3 sessions).

The PostgreSQL test replays the audit's trojan: the tenant's owner shadows
``aclexplode`` (a function that makes it SUPERUSER when a superuser calls it)
and forges ``pg_roles``, then puts its schema first on the search path of the
database and of its role. Provisioning's proof and the health monitor's
re-proof run; the owner must never become superuser and the proof must name
the tampering. The MariaDB test replaces ``schema_info`` with an SQL SECURITY
INVOKER view over a function that records who runs it: cloner must never run
it as root.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from cloner.app import App
from cloner.daemon.health import HealthMonitor
from cloner.domain import CheckResult, Engine, Status
from cloner.engines import TenantTarget, get_engine
from cloner.pipeline.verify import prove_isolation
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import connect, mysql_cursor, provision_ready, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def _superuser(target: TenantTarget) -> asyncpg.Connection:
    """A plain superuser session (nothing pinned: the test plays the attacker's setup)."""
    su = target.credentials.superuser
    return await asyncpg.connect(host=target.endpoint.host, port=target.endpoint.port,
                                 user=su.username, password=su.password,
                                 database=target.database, timeout=5, ssl=False)


def _check(checks: tuple[CheckResult, ...] | list[CheckResult], name: str) -> CheckResult:
    found = [c for c in checks if c.name == name]
    assert found, f"the proof has no check {name}: {[c.name for c in checks]}"
    return found[0]


async def test_pg_trojan_cannot_steer_cloner_and_is_reported(docker_app: App) -> None:
    """The audit's search_path trojan: owner never becomes superuser, the proof names it."""
    app = docker_app
    tid = "pin-trojan"
    await provision_ready(app, "postgres", tid)
    service = TenantService(app)
    target = await target_of(app, await service.get(tid))
    owner_name = target.credentials.roles["owner"].username
    db = target.database

    owner = await connect(target, "owner")
    su = await _superuser(target)
    try:
        # A tenant provisioned before the fix owns its database: play that one (a no-op
        # there), so the owner itself can set the database default, as in the audit.
        await su.execute(f'ALTER DATABASE "{db}" OWNER TO "{owner_name}"')
        await owner.execute(f'ALTER DATABASE "{db}" SET search_path = public, pg_catalog')
        await owner.execute(f'ALTER ROLE "{owner_name}" SET search_path = public, pg_catalog')
        await owner.execute(f"""
            CREATE FUNCTION public.aclexplode(acl aclitem[], OUT grantor oid, OUT grantee oid,
                                              OUT privilege_type text, OUT is_grantable boolean)
            RETURNS SETOF record LANGUAGE plpgsql AS $$
            BEGIN
                BEGIN
                    EXECUTE 'ALTER ROLE "{owner_name}" SUPERUSER';
                EXCEPTION WHEN insufficient_privilege THEN NULL;
                END;
                RETURN;
            END $$""")
        await owner.execute("""
            CREATE VIEW public.pg_roles AS
            SELECT oid, rolname, false AS rolsuper, false AS rolcreaterole,
                   false AS rolcreatedb, false AS rolreplication, false AS rolbypassrls
              FROM pg_catalog.pg_roles""")
        # The trojan is armed: a session that takes the database default runs it.
        probe = await _superuser(target)
        try:
            assert await probe.fetchval("SHOW search_path") == "public, pg_catalog"
        finally:
            await probe.close()

        engine = get_engine(Engine.POSTGRES)
        driver, target = await app.services.target(await service.get(tid))
        provisioning = await prove_isolation(app.services, Engine.POSTGRES, driver, target)
        health = await HealthMonitor(app).check_once(isolation=True)

        assert not await su.fetchval(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1", owner_name
        ), "the owner became superuser through cloner's sessions"
        for report in (provisioning, (await service.get(tid)).isolation):
            assert report is not None and not report.passed
            settings = _check(report.checks, "no_tenant_session_settings")
            assert not settings.passed
            assert "search_path=public, pg_catalog for role * in database" in settings.detail
            assert f"search_path=public, pg_catalog for role {owner_name}" in settings.detail
            assert f"owned by {owner_name}" in settings.detail
            shadowing = _check(report.checks, "no_catalog_shadowing")
            assert not shadowing.passed
            assert "function public.aclexplode" in shadowing.detail
            assert "relation public.pg_roles" in shadowing.detail
            # Role attributes come from the real catalog, not the forged view.
            assert _check(report.checks, "roles_not_privileged").passed
        checked = health.get(tid)
        assert checked is not None and checked.isolation_passed is False
        assert (await service.get(tid)).status is Status.DEGRADED

        # A re-run of rbac (what an upgrade runs for older tenants) restores the shape:
        # database owned by the superuser, no settings but cloner's own.
        await engine.apply_rbac(target, app.settings.tenant_connection_limit)
        assert await su.fetchval(
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database "
            "WHERE datname = $1", db) == target.credentials.superuser.username
        after = await engine.prove_isolation(target, [])
        assert _check(after, "no_tenant_session_settings").passed
        assert not _check(after, "no_catalog_shadowing").passed
        assert not await su.fetchval(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1", owner_name)
        # ... and the owner, which owns schema public only, cannot set it again.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await owner.execute(f'ALTER DATABASE "{db}" SET search_path = public, pg_catalog')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await owner.execute("CREATE SCHEMA trojan")
    finally:
        await owner.close()
        await su.close()


async def test_pg_tenant_lock_cannot_stall_the_proof(tmp_path: Path) -> None:
    """App holds ACCESS EXCLUSIVE on the probe table: the proof ends, failing that check."""
    require_docker()
    settings = make_settings(tmp_path / "data", admin_lock_timeout_s=1.0,
                             admin_statement_timeout_s=5.0)
    async with App.open(settings) as app:
        try:
            tid = "pin-lock"
            await provision_ready(app, "postgres", tid)
            driver, target = await app.services.target(await TenantService(app).get(tid))
            holder = await connect(target, "app")
            try:
                tx = holder.transaction()
                await tx.start()
                await holder.execute("LOCK TABLE system_settings IN ACCESS EXCLUSIVE MODE")
                async with asyncio.timeout(60):
                    checks = await driver.prove_isolation(target, [])
                await tx.rollback()
            finally:
                await holder.close()
            assert not _check(checks, "app_reads_and_writes_own_database").passed
            assert "LockNotAvailable" in _check(checks, "app_reads_and_writes_own_database").detail
        finally:
            await remove_owned(app)


async def test_mysql_tenant_objects_never_run_as_root(docker_app: App) -> None:
    """schema_info swapped for an invoker view over a recording function: never run as root."""
    app = docker_app
    tid = "pin-my"
    await provision_ready(app, "mysql", tid)
    driver, target = await app.services.target(await TenantService(app).get(tid))

    async with mysql_cursor(target, "owner") as cur:
        await cur.execute("CREATE TABLE loot (who VARCHAR(300))")
        await cur.execute(
            "CREATE FUNCTION steal() RETURNS INT SQL SECURITY INVOKER MODIFIES SQL DATA "
            "BEGIN INSERT INTO loot VALUES (CURRENT_USER()); RETURN 1; END")
        await cur.execute("RENAME TABLE schema_info TO schema_info_real")
        await cur.execute(
            "CREATE SQL SECURITY INVOKER VIEW schema_info AS "
            "SELECT * FROM schema_info_real WHERE steal() = 1")

    state = await driver.migration_state(target)
    assert state.root_version
    await driver.row_counts(target)
    checks = await driver.prove_isolation(target, [])

    async with mysql_cursor(target, None) as cur:
        await cur.execute("SELECT who FROM loot")
        runners = {str(row[0]).partition("@")[0] for row in await cur.fetchall()}
        assert runners, "the trojan function never ran: the test proves nothing"
        assert "root" not in runners, f"tenant code ran as {runners}"
        # cloner's own guard triggers are defined by the tenant's owner, never by root.
        assert _check(checks, "no_privileged_definers").passed, checks
        await cur.execute("SELECT DISTINCT DEFINER FROM information_schema.TRIGGERS "
                          "WHERE TRIGGER_SCHEMA = %s", (target.database,))
        definers = {str(row[0]).partition("@")[0] for row in await cur.fetchall()}
        assert definers == {target.credentials.roles["owner"].username}
        # An object lending root's rights is what the proof reports ...
        await cur.execute("CREATE DEFINER = root@localhost SQL SECURITY DEFINER VIEW "
                          "lent AS SELECT 1 AS one")
        # ... but not a guard trigger as older releases defined it (root, by cloner).
        await cur.execute("CREATE OR REPLACE DEFINER = root@localhost TRIGGER "
                          "schema_info_guard_insert BEFORE INSERT ON schema_info_real "
                          "FOR EACH ROW SET @cloner_guard = 1")
    checks = await driver.prove_isolation(replace(target, legacy_hardening=True), [])
    definers = _check(checks, "no_privileged_definers")
    assert not definers.passed
    assert "view lent (DEFINER=root@localhost)" in definers.detail
    # (tolerated only for a tenant hardened below the engine's level: tests/integration/
    # test_harden.py covers a hardened tenant, where the root-defined guard fails too)
    assert "schema_info_guard" not in definers.detail
