"""Application connection pools: the engine hook ``cloner.pools`` opens them through.

Each server engine (placement ``container``) implements ``PoolFactory`` next to
its ``EngineDriver`` hooks: ``open_pool`` returns the engine's native pool
behind the small ``PoolLike`` shape, and ``pool_connect_errors`` names what its
client library raises when a server is unreachable or refuses a login. A
separate protocol, like ``MigrationHooks``, so an engine without logins
(sqlite, opened in-process by path) need not pretend to have pools.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from cloner.domain import Endpoint
from cloner.engines.base import EngineDriver


@dataclass(frozen=True)
class PoolOptions:
    """Size and patience of one application pool (the ``pool_*`` settings)."""

    min_size: int
    max_size: int
    #: Bound on opening one connection (TCP, handshake and login).
    connect_timeout_s: float
    #: Bound on one statement, where the engine can enforce it.
    command_timeout_s: float
    #: How the pool's sessions name themselves to the server.
    application_name: str = "cloner-pools"


class PoolLike(Protocol):
    """The part of a native pool that ``TenantPools`` uses (``asyncpg.Pool``'s shape)."""

    def acquire(self, *, timeout: float | None = None) -> Awaitable[Any]:
        """A connection, waiting at most ``timeout`` seconds (``TimeoutError`` after)."""

    def release(self, connection: Any) -> Awaitable[None]:
        """Give a connection back."""

    def close(self) -> Awaitable[None]:
        """Close gracefully: waits for acquired connections to be released."""

    def terminate(self) -> None:
        """Close every connection at once."""

    def get_idle_size(self) -> int:
        """Open connections not handed out."""


class PoolFactory(Protocol):
    """Opens application pools of one engine (its driver, or a fake in unit tests)."""

    #: Client-library errors meaning "server unreachable or login refused" when
    #: opening, acquiring from or closing a pool (OSError and TimeoutError always are).
    pool_connect_errors: tuple[type[BaseException], ...]

    async def open_pool(
        self, endpoint: Endpoint, username: str, password: str, options: PoolOptions
    ) -> PoolLike:
        """A pool of ``username``'s connections to ``endpoint.database`` at host:port.

        Opens ``options.min_size`` connections before returning, so a refused
        login fails here rather than at the first acquire.
        """


def pool_factory_of(driver: EngineDriver) -> PoolFactory | None:
    """The engine's ``PoolFactory``, or None when its tenants have no server to pool."""
    if hasattr(driver, "open_pool") and hasattr(driver, "pool_connect_errors"):
        return cast("PoolFactory", driver)
    return None
