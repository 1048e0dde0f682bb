"""Per-tenant connection pools for applications, fed and refreshed by the registry."""

from cloner.engines.pooling import PoolFactory, PoolLike, PoolOptions
from cloner.pools.errors import (
    PoolExhausted,
    PoolsNotSupported,
    TenantNotFound,
    TenantUnavailable,
)
from cloner.pools.pools import ROLES, TenantPools

__all__ = [
    "ROLES",
    "PoolExhausted",
    "PoolFactory",
    "PoolLike",
    "PoolOptions",
    "PoolsNotSupported",
    "TenantNotFound",
    "TenantPools",
    "TenantUnavailable",
]
