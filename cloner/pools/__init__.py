"""Per-tenant connection pools for applications, fed and refreshed by the registry."""

from cloner.pools.errors import PoolExhausted, TenantNotFound, TenantUnavailable
from cloner.pools.pools import ROLES, PoolFactory, PoolLike, TenantPools

__all__ = [
    "ROLES",
    "PoolExhausted",
    "PoolFactory",
    "PoolLike",
    "TenantNotFound",
    "TenantPools",
    "TenantUnavailable",
]
