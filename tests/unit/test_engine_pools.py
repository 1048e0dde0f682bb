"""Unit tests of the engines' pool factories that need no database server.

MongoDB has no server on these machines: its pool is checked against a TCP
listener that accepts and never answers (enough for a client that connects
lazily) and against a closed port. The aiomysql and asyncpg pools are
exercised for real in tests/integration/test_pools*.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from cloner.domain import Endpoint
from cloner.engines.mongodb import MongoEngine
from cloner.engines.pooling import PoolOptions

OPTIONS = PoolOptions(min_size=0, max_size=2, connect_timeout_s=0.3, command_timeout_s=5.0)


@pytest.fixture
async def silent_server() -> AsyncIterator[Endpoint]:
    """A loopback port that accepts connections and never says anything."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Endpoint(host="127.0.0.1", port=port, database="acme_corp")
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_mongo_pool_lends_the_tenant_database_as_its_role(silent_server: Endpoint) -> None:
    """acquire yields an AsyncDatabase of the tenant database, logged in as the given user."""
    pool = await MongoEngine().open_pool(silent_server, "acme_corp_app", "s3cret", OPTIONS)
    try:
        db = await pool.acquire(timeout=1.0)
        assert isinstance(db, AsyncDatabase)
        assert db.name == "acme_corp"
        client_options = db.client.options
        assert client_options.pool_options.max_pool_size == OPTIONS.max_size
        assert client_options.pool_options.min_pool_size == 0
        creds = client_options.pool_options._credentials
        assert creds is not None
        assert (creds.username, creds.source) == ("acme_corp_app", "acme_corp")
        assert pool.get_idle_size() == 1
        await pool.release(db)
        assert pool.get_idle_size() == 2
    finally:
        await pool.close()


async def test_mongo_pool_bounds_leases_and_times_out(silent_server: Endpoint) -> None:
    """With max_size leases out, the next acquire raises TimeoutError after its timeout."""
    pool = await MongoEngine().open_pool(silent_server, "acme_corp_app", "s3cret", OPTIONS)
    try:
        held = [await pool.acquire(timeout=1.0) for _ in range(OPTIONS.max_size)]
        with pytest.raises(TimeoutError):
            await pool.acquire(timeout=0.05)
        await pool.release(held.pop())
        held.append(await pool.acquire(timeout=0.05))
        for db in held:
            await pool.release(db)
    finally:
        await pool.close()


async def test_mongo_pool_close_waits_for_leases(silent_server: Endpoint) -> None:
    """close() finishes only after every lease came back."""
    pool = await MongoEngine().open_pool(silent_server, "acme_corp_app", "s3cret", OPTIONS)
    db = await pool.acquire(timeout=1.0)

    async def close() -> None:
        await pool.close()

    closing = asyncio.create_task(close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    await pool.release(db)
    async with asyncio.timeout(2.0):
        await closing


async def test_mongo_pool_with_min_size_proves_the_server_answers(
    silent_server: Endpoint,
) -> None:
    """min_size > 0 pings before returning: a server that never answers is a timeout."""
    options = PoolOptions(min_size=1, max_size=2, connect_timeout_s=0.3, command_timeout_s=5.0)
    with pytest.raises((TimeoutError, PyMongoError)):
        await MongoEngine().open_pool(silent_server, "acme_corp_app", "s3cret", options)


async def test_mongo_pool_refused_port_raises_a_pool_connect_error() -> None:
    """Nothing listening is one of the engine's pool_connect_errors, raised at once."""
    engine = MongoEngine()
    endpoint = Endpoint(host="127.0.0.1", port=_closed_port(), database="acme_corp")
    with pytest.raises(engine.pool_connect_errors):
        await engine.open_pool(endpoint, "acme_corp_app", "s3cret", OPTIONS)
