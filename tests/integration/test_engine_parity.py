"""One scenario, every engine on this machine, real servers and real clients.

Provision two tenants through the queue → both isolation proofs pass and each
tenant's credentials are refused by the other → the app role writes, the
readonly role reads and cannot write → delete (final verified backup) →
restore that backup into a fresh instance → the same rows per table.

Each engine contributes a small client adapter (its own driver library,
the way an application would connect); the scenario itself is shared.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiomysql
import asyncpg
import pymysql
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from cloner.app import App
from cloner.domain import Endpoint, Engine, Status
from cloner.engines import TenantTarget, get_engine
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import connect, run_workers, target_of
from tests.integration.test_mongodb_provisioning import MONGO_IMAGE, require_mongo_image

pytestmark = [pytest.mark.slow]

#: Server error codes (docs: "Error Codes"): not authorized, authentication failed.
MONGO_UNAUTHORIZED, MONGO_AUTHENTICATION_FAILED = 13, 18
VERSION = "v1.1"  # every engine ships it; the scenario writes to its customers table
ROWS = 7


class Client(Protocol):
    """How an application of one engine writes and reads a tenant's customers."""

    async def add_customers(self, target: TenantTarget, count: int) -> None:
        """Insert ``count`` customers as the app role."""

    async def count_customers(self, target: TenantTarget, role: str) -> int:
        """Customers visible to ``role``."""

    async def readonly_write_refused(self, target: TenantTarget) -> bool:
        """True when the readonly role's insert is refused."""

    async def refused_elsewhere(self, target: TenantTarget, other: TenantTarget) -> bool:
        """True when ``target``'s app credentials cannot open ``other``'s database."""


class PostgresClient:
    """asyncpg, as the tenant's roles."""

    async def add_customers(self, target: TenantTarget, count: int) -> None:
        conn = await connect(target, "app")
        try:
            await conn.executemany(
                "INSERT INTO customers (name, email) VALUES ($1, $2)",
                [(f"c{i}", f"c{i}@parity.example") for i in range(count)],
            )
        finally:
            await conn.close()

    async def count_customers(self, target: TenantTarget, role: str) -> int:
        conn = await connect(target, role)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM customers"))
        finally:
            await conn.close()

    async def readonly_write_refused(self, target: TenantTarget) -> bool:
        conn = await connect(target, "readonly")
        try:
            await conn.execute("INSERT INTO customers (name) VALUES ('nope')")
        except asyncpg.InsufficientPrivilegeError:
            return True
        finally:
            await conn.close()
        return False

    async def refused_elsewhere(self, target: TenantTarget, other: TenantTarget) -> bool:
        assert other.endpoint.host and other.endpoint.port
        try:
            conn = await connect(target, "app", database=other.database,
                                 host_port=(other.endpoint.host, other.endpoint.port))
        except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
            return True
        await conn.close()
        return False


class SqliteClient:
    """The stdlib sqlite3 module on the tenant's file; readonly opens with ``mode=ro``."""

    @staticmethod
    def _open(target: TenantTarget, role: str) -> sqlite3.Connection:
        path = target.endpoint.path
        assert path is not None
        if role == "readonly":
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        return sqlite3.connect(path)

    async def add_customers(self, target: TenantTarget, count: int) -> None:
        with self._open(target, "app") as conn:
            conn.executemany("INSERT INTO customers (name, email) VALUES (?, ?)",
                             [(f"c{i}", f"c{i}@parity.example") for i in range(count)])
        conn.close()

    async def count_customers(self, target: TenantTarget, role: str) -> int:
        conn = self._open(target, role)
        try:
            return int(conn.execute("SELECT count(*) FROM customers").fetchone()[0])
        finally:
            conn.close()

    async def readonly_write_refused(self, target: TenantTarget) -> bool:
        conn = self._open(target, "readonly")
        try:
            conn.execute("INSERT INTO customers (name) VALUES ('nope')")
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()
        return False

    async def refused_elsewhere(self, target: TenantTarget, other: TenantTarget) -> bool:
        # No credentials exist: separation is the path. The two files must differ.
        mine, theirs = Path(target.endpoint.path or ""), Path(other.endpoint.path or "")
        return mine.stat().st_ino != theirs.stat().st_ino and mine.parent != theirs.parent


class MysqlClient:
    """aiomysql, as the tenant's accounts."""

    @staticmethod
    async def _connect(target: TenantTarget, role: str, *, endpoint: Endpoint | None = None,
                       database: str | None = None) -> aiomysql.Connection:
        cred = target.credentials.roles[role]
        where = endpoint or target.endpoint
        return await aiomysql.connect(host=where.host, port=where.port, user=cred.username,
                                      password=cred.password, db=database or target.database,
                                      autocommit=True, connect_timeout=5)

    async def add_customers(self, target: TenantTarget, count: int) -> None:
        conn = await self._connect(target, "app")
        try:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO customers (name, email) VALUES (%s, %s)",
                    [(f"c{i}", f"c{i}@parity.example") for i in range(count)],
                )
        finally:
            conn.close()

    async def count_customers(self, target: TenantTarget, role: str) -> int:
        conn = await self._connect(target, role)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT COUNT(*) FROM customers")
                return int((await cur.fetchone())[0])
        finally:
            conn.close()

    async def readonly_write_refused(self, target: TenantTarget) -> bool:
        conn = await self._connect(target, "readonly")
        try:
            async with conn.cursor() as cur:
                await cur.execute("INSERT INTO customers (name) VALUES ('nope')")
        except pymysql.err.OperationalError as exc:
            return bool(exc.args[0] == 1142)  # INSERT command denied
        finally:
            conn.close()
        return False

    async def refused_elsewhere(self, target: TenantTarget, other: TenantTarget) -> bool:
        try:
            conn = await self._connect(target, "app", endpoint=other.endpoint,
                                       database=other.database)
        except pymysql.err.OperationalError as exc:
            return bool(exc.args[0] == 1045)  # access denied: no such login there
        conn.close()
        return False


class MongoClient:
    """pymongo's AsyncMongoClient from the DSN applications get (authSource = tenant db)."""

    @staticmethod
    def _client(target: TenantTarget, role: str) -> AsyncMongoClient[Any]:
        cred = target.credentials.roles[role]
        dsn = get_engine(Engine.MONGODB).dsn(target.endpoint, cred.username, cred.password)
        return AsyncMongoClient(dsn, serverSelectionTimeoutMS=5000)

    @staticmethod
    def _customer(i: int) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {"name": f"c{i}", "email": f"c{i}@parity.example", "created_at": now,
                "updated_at": now}

    async def add_customers(self, target: TenantTarget, count: int) -> None:
        client = self._client(target, "app")
        try:
            await client[target.database].customers.insert_many(
                [self._customer(i) for i in range(count)])
        finally:
            await client.close()

    async def count_customers(self, target: TenantTarget, role: str) -> int:
        client = self._client(target, role)
        try:
            return int(await client[target.database].customers.count_documents({}))
        finally:
            await client.close()

    async def readonly_write_refused(self, target: TenantTarget) -> bool:
        client = self._client(target, "readonly")
        try:
            await client[target.database].customers.insert_one(self._customer(-1))
        except OperationFailure as exc:
            return exc.code == MONGO_UNAUTHORIZED
        finally:
            await client.close()
        return False

    async def refused_elsewhere(self, target: TenantTarget, other: TenantTarget) -> bool:
        cred = target.credentials.roles["app"]
        client: AsyncMongoClient[Any] = AsyncMongoClient(
            host=other.endpoint.host, port=other.endpoint.port, username=cred.username,
            password=cred.password, authSource=other.database, serverSelectionTimeoutMS=5000,
        )
        try:
            await client[other.database].command("ping")
        except OperationFailure as exc:
            return exc.code == MONGO_AUTHENTICATION_FAILED
        finally:
            await client.close()
        return False


CLIENTS: dict[str, Client] = {"postgres": PostgresClient(), "sqlite": SqliteClient(),
                              "mysql": MysqlClient(), "mongodb": MongoClient()}
NEEDS_DOCKER = {"postgres", "mysql", "mongodb"}


@pytest.fixture(params=sorted(CLIENTS))
async def engine_app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[
        tuple[str, App]]:
    """(engine, App) for every engine with a client adapter that this machine can run."""
    engine = str(request.param)
    if engine == "mongodb":
        require_mongo_image()  # skips, saying why, where no mongo image can exist
    elif engine in NEEDS_DOCKER:
        require_docker()
    settings = make_settings(tmp_path / "data", mongo_image=MONGO_IMAGE)
    async with App.open(settings) as app:
        try:
            yield engine, app
        finally:
            if engine in NEEDS_DOCKER:
                await remove_owned(app)


async def _provision(app: App, engine: str, tenant_ids: list[str]) -> list[TenantTarget]:
    service = TenantService(app)
    requests = [await service.create(t, engine, "technology", VERSION, actor="test:parity")
                for t in tenant_ids]
    await run_workers(app, [r.id for r in requests], workers=2)
    targets = []
    for tenant_id in tenant_ids:
        tenant = await service.get(tenant_id)
        assert tenant.status is Status.READY, tenant.error
        assert tenant.isolation is not None and tenant.isolation.passed, tenant.isolation
        targets.append(await target_of(app, tenant))
    return targets


async def test_same_guarantees_on_every_engine(engine_app: tuple[str, App]) -> None:
    """Provision two → isolation → app writes / readonly reads → delete → restore → same rows."""
    engine, app = engine_app
    client = CLIENTS[engine]
    prefix = {"postgres": "pg", "sqlite": "sq", "mysql": "my", "mongodb": "mg"}[engine]
    a_id, b_id = f"{prefix}-parity-a", f"{prefix}-parity-b"
    a, b = await _provision(app, engine, [a_id, b_id])

    assert await client.refused_elsewhere(a, b)
    assert await client.refused_elsewhere(b, a)
    await client.add_customers(a, ROWS)
    assert await client.count_customers(a, "readonly") == ROWS
    assert await client.count_customers(b, "readonly") == 0  # b never saw a's rows
    assert await client.readonly_write_refused(a)
    driver, owner_target = await app.services.target(await TenantService(app).get(a_id))
    before = await driver.row_counts(owner_target)
    assert before["customers"] == ROWS

    service = TenantService(app)
    delete = await service.delete(a_id, purge=False, actor="test:parity")
    await run_workers(app, [delete.id], workers=1)
    gone = await service.get(a_id)
    assert gone.status is Status.DEPROVISIONED, gone.error
    assert gone.backup is not None and gone.backup["sha256"]
    assert Path(gone.backup["path"]).is_file()
    assert gone.backup["restorable_entries"] > 0

    restore = await service.restore(a_id, actor="test:parity")
    await run_workers(app, [restore.id], workers=1)
    back = await service.get(a_id)
    assert back.status is Status.READY, back.error
    assert back.isolation is not None and back.isolation.passed
    restored = await target_of(app, back)
    assert await driver.row_counts(restored) == before
    assert await client.count_customers(restored, "app") == ROWS


def test_parity_covers_every_engine_this_machine_can_run() -> None:
    """A driver without a parity client would silently escape the scenario."""
    from cloner.engines import available_engines

    runnable = {e.value for e in available_engines()}
    assert runnable <= set(CLIENTS), f"no parity client for {sorted(runnable - set(CLIENTS))}"
