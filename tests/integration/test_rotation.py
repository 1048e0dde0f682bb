"""Real Docker, real PostgreSQL and MariaDB: credential rotation without downtime.

A steady query loop through ``TenantPools`` (every role, several tasks each)
runs across a rotation of every role and must count zero failures; afterwards
every old password is refused, every new one works, and the isolation proof
and health probe pass with the new credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import pymysql
import pytest

from cloner.app import App
from cloner.domain import Credentials, RequestStatus, RoleCredential, Status
from cloner.engines import TenantTarget, get_engine
from cloner.pools import TenantPools
from cloner.secrets import TENANT_ROLES
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import pools_of, provision_ready, run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: Short, so a test waits seconds; still many pool refreshes long.
GRACE_S = 3.0
REFRESH_S = 0.2
TASKS_PER_ROLE = 3
ENGINES = ["postgres", "mysql"]
_MY_ACCESS_DENIED = 1045


@pytest.fixture
async def rotation_app(tmp_path: Path) -> AsyncIterator[App]:
    """A real App whose rotations keep the old login for ``GRACE_S`` seconds."""
    require_docker()
    async with App.open(make_settings(tmp_path / "data", rotation_grace_s=GRACE_S)) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


async def _query(engine: str, role: str, conn: Any) -> None:
    """What an application does with ``role``: read, and write where the role may."""
    if engine == "postgres":
        assert await conn.fetchval("SELECT count(*) FROM system_settings") is not None
        if role == "app":
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO system_settings (key, value) VALUES ($1, '1'::jsonb) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", "rot_loop")
        return
    async with conn.cursor() as cur:
        await cur.execute("SELECT COUNT(*) FROM system_settings")
        assert (await cur.fetchone()) is not None
        if role == "app":
            await cur.execute(
                "REPLACE INTO system_settings (`key`, value) VALUES (%s, '1')", ("rot_loop",))
            await conn.commit()


async def _rotate(app: App, tenant_id: str, role: str = "all") -> str:
    request = await TenantService(app).rotate(tenant_id, role, actor="test")
    await run_workers(app, [request.id], workers=1, timeout_s=120)
    done = await app.control_plane.get_request(request.id)
    assert done is not None and done.status is RequestStatus.DONE, done
    return request.id


async def _credentials(app: App, tenant_id: str) -> Credentials:
    target = await target_of(app, await TenantService(app).get(tenant_id))
    return target.credentials


async def _login(engine: str, target: TenantTarget, cred: RoleCredential) -> str:
    """``ok`` when ``cred`` logs in to the tenant database, ``refused`` when refused."""
    host, port = target.endpoint.host, target.endpoint.port
    if engine == "postgres":
        try:
            conn = await asyncpg.connect(host=host, port=port, user=cred.username,
                                         password=cred.password, database=target.database,
                                         timeout=5, ssl=False)
        except (asyncpg.InvalidPasswordError,
                asyncpg.InvalidAuthorizationSpecificationError):
            return "refused"
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        return "ok"
    try:
        my = await aiomysql.connect(host=host, port=port, user=cred.username,
                                    password=cred.password, db=target.database,
                                    connect_timeout=5)
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] == _MY_ACCESS_DENIED:
            return "refused"
        raise
    my.close()
    return "ok"


@pytest.mark.parametrize("engine", ENGINES)
async def test_steady_queries_through_pools_see_no_failure_across_rotating_every_role(
    rotation_app: App, engine: str,
) -> None:
    """Queries as owner, app and readonly keep succeeding while every role is rotated."""
    tenant_id = f"rot-loop-{engine[:2]}"
    await provision_ready(rotation_app, engine, tenant_id)
    before = await _credentials(rotation_app, tenant_id)
    ok = dict.fromkeys(TENANT_ROLES, 0)
    failures: list[str] = []
    stop = asyncio.Event()

    async def loop(pools: TenantPools, role: str) -> None:
        while not stop.is_set():
            try:
                async with pools.acquire(tenant_id, role=role) as conn:
                    await _query(engine, role, conn)
                ok[role] += 1
            except Exception as exc:  # every failure counts
                failures.append(f"{role}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.005)

    async with pools_of(rotation_app, REFRESH_S) as pools:
        tasks = [asyncio.create_task(loop(pools, role))
                 for role in TENANT_ROLES for _ in range(TASKS_PER_ROLE)]
        await asyncio.sleep(0.5)
        warm = dict(ok)
        await _rotate(rotation_app, tenant_id)
        during = dict(ok)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        in_service = {role for _, role in pools.open_pools}

    after = await _credentials(rotation_app, tenant_id)
    assert failures == []
    # Every role kept being used before, during (grace included) and after the rotation.
    assert all(warm[r] > 0 and during[r] > warm[r] + 20 and ok[r] > during[r]
               for r in TENANT_ROLES), (warm, during, ok)
    assert in_service == set(TENANT_ROLES)
    for role in TENANT_ROLES:
        assert after.roles[role].username != before.roles[role].username
        assert after.roles[role].password != before.roles[role].password
        assert after.grantee(role) == before.roles[role].username
    assert not after.pending and not after.retiring


@pytest.mark.parametrize("engine", ENGINES)
async def test_old_passwords_are_refused_and_new_ones_work_after_rotation(
    rotation_app: App, engine: str,
) -> None:
    """After a rotation the old logins are refused, the new ones work, the proof passes;
    a second rotation removes the first rotation's login too."""
    tenant_id = f"rot-old-{engine[:2]}"
    await provision_ready(rotation_app, engine, tenant_id)
    service = TenantService(rotation_app)
    driver = get_engine((await service.get(tenant_id)).engine)
    original = await _credentials(rotation_app, tenant_id)
    if engine == "mysql":
        # A view the tenant's owner defined: its DEFINER is the original owner account,
        # which must keep existing (locked) after the rotation, or the view breaks.
        before = await target_of(rotation_app, await service.get(tenant_id))
        owner = await aiomysql.connect(
            host=before.endpoint.host, port=before.endpoint.port,
            user=original.roles["owner"].username, password=original.roles["owner"].password,
            db=before.database, connect_timeout=5, autocommit=True)
        try:
            async with owner.cursor() as cur:
                await cur.execute("CREATE VIEW rot_settings AS SELECT `key` FROM system_settings")
        finally:
            owner.close()

    first = await _rotate(rotation_app, tenant_id)
    tenant = await service.get(tenant_id)
    target = await target_of(rotation_app, tenant)
    rotated = target.credentials
    for role in TENANT_ROLES:
        assert await _login(engine, target, original.roles[role]) == "refused", role
        assert await _login(engine, target, rotated.roles[role]) == "ok", role
        assert rotated.rotated[role] == first
    assert tenant.status is Status.READY
    assert tenant.isolation is not None and tenant.isolation.passed, tenant.isolation
    assert await driver.probe(target, 10) >= 0
    history = await rotation_app.control_plane.events(tenant_id)
    done = [e for e in history if e["kind"] == "rotated"]
    assert done and done[-1]["detail"]["actor"] == "test"
    assert done[-1]["detail"]["request"] == first

    if engine == "postgres":
        # Objects the new owner login creates belong to the privilege role, which
        # outlives every login, and the app role can use them (default privileges).
        owner = await asyncpg.connect(
            host=target.endpoint.host, port=target.endpoint.port,
            user=rotated.roles["owner"].username, password=rotated.roles["owner"].password,
            database=target.database, timeout=5, ssl=False)
        try:
            await owner.execute("CREATE TABLE rot_made_by_new_owner (id int)")
            table_owner = await owner.fetchval(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'rot_made_by_new_owner'")
        finally:
            await owner.close()
        assert table_owner == original.roles["owner"].username

    if engine == "mysql":
        app_conn = await aiomysql.connect(
            host=target.endpoint.host, port=target.endpoint.port,
            user=rotated.roles["app"].username, password=rotated.roles["app"].password,
            db=target.database, connect_timeout=5)
        try:
            async with app_conn.cursor() as cur:
                await cur.execute("SELECT COUNT(*) FROM rot_settings")
                row = await cur.fetchone()
        finally:
            app_conn.close()
        assert row is not None and row[0] > 0
        # Locked, not dropped: still the view's definer, refused as a login (checked above).
        assert await _account_exists(rotation_app, engine, target,
                                     original.roles["owner"].username)

    second = await _rotate(rotation_app, tenant_id, "app")
    target = await target_of(rotation_app, await service.get(tenant_id))
    again = target.credentials
    assert await _login(engine, target, rotated.roles["app"]) == "refused"
    assert await _login(engine, target, again.roles["app"]) == "ok"
    assert again.roles["owner"] == rotated.roles["owner"]  # only app was asked for
    assert again.rotated["app"] == second and again.rotated["owner"] == first
    assert (await service.get(tenant_id)).isolation.passed  # type: ignore[union-attr]
    # The first rotation's app login is gone from the server, not just locked out.
    assert not await _account_exists(rotation_app, engine, target, rotated.roles["app"].username)
    # The rotation summary the CLI prints (no secrets in it).
    request = await rotation_app.control_plane.get_request(second)
    assert request is not None
    result = await service.rotation_result(request)
    assert result["logins"] == {"app": again.roles["app"].username}
    assert again.roles["app"].password not in str(result)


async def _account_exists(app: App, engine: str, target: TenantTarget, username: str) -> bool:
    su = target.credentials.superuser
    if engine == "postgres":
        conn = await asyncpg.connect(host=target.endpoint.host, port=target.endpoint.port,
                                     user=su.username, password=su.password,
                                     database="postgres", timeout=5, ssl=False)
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1",
                                            username))
        finally:
            await conn.close()
    my = await aiomysql.connect(host=target.endpoint.host, port=target.endpoint.port,
                                user="root", password=su.password, connect_timeout=5)
    try:
        async with my.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM mysql.global_priv WHERE User = %s",
                              (username,))
            row = await cur.fetchone()
    finally:
        my.close()
    del app
    return bool(row and row[0])


@pytest.fixture
async def mongo_rotation_app(tmp_path: Path) -> AsyncIterator[App]:
    """Like ``rotation_app`` for mongodb tenants; skipped where no mongo image exists."""
    from tests.integration.test_mongodb_provisioning import MONGO_IMAGE, require_mongo_image

    require_mongo_image()
    settings = make_settings(tmp_path / "data", rotation_grace_s=GRACE_S, mongo_image=MONGO_IMAGE)
    async with App.open(settings) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


async def test_mongodb_rotation_keeps_pools_working_and_refuses_old_passwords(
    mongo_rotation_app: App,
) -> None:
    """MongoDB: createUser for the new login, registry switch, dropUser after the grace."""
    from pymongo import AsyncMongoClient
    from pymongo.errors import OperationFailure

    app = mongo_rotation_app
    tenant_id = "rot-mongo"
    await provision_ready(app, "mongodb", tenant_id)
    before = await _credentials(app, tenant_id)
    failures: list[str] = []
    stop = asyncio.Event()

    async def loop(pools: TenantPools, role: str) -> None:
        while not stop.is_set():
            try:
                async with pools.acquire(tenant_id, role=role) as db:
                    await db["system_settings"].find_one({})
            except Exception as exc:  # every failure counts
                failures.append(f"{role}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.01)

    async with pools_of(app, REFRESH_S) as pools:
        tasks = [asyncio.create_task(loop(pools, role)) for role in TENANT_ROLES]
        await asyncio.sleep(0.5)
        await _rotate(app, tenant_id)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []
    tenant = await TenantService(app).get(tenant_id)
    target = await target_of(app, tenant)
    engine = get_engine(tenant.engine)
    for role in TENANT_ROLES:
        for cred, works in ((before.roles[role], False), (target.credentials.roles[role], True)):
            dsn = engine.dsn(target.endpoint, cred.username, cred.password)
            client: AsyncMongoClient[Any] = AsyncMongoClient(dsn, serverSelectionTimeoutMS=5000)
            try:
                await client[target.database].command({"ping": 1})
                assert works, f"old {role} password still accepted"
            except OperationFailure:
                assert not works, f"new {role} password refused"
            finally:
                await client.close()
