"""Errors of tenant connection pools. Each carries the tenant id, never a secret."""

from __future__ import annotations

from cloner import errors


class TenantNotFound(errors.TenantNotFound):
    """No such tenant in the registry."""

    def __init__(self, tenant_id: str, message: str | None = None) -> None:
        super().__init__(message or f"no tenant {tenant_id!r} in the registry")
        self.tenant_id = tenant_id


class TenantUnavailable(errors.ClonerError):
    """The tenant database cannot serve connections (not ready, or unreachable)."""

    http_status = 503
    transient = True

    def __init__(self, tenant_id: str, message: str | None = None) -> None:
        super().__init__(message or f"tenant {tenant_id!r} is not available")
        self.tenant_id = tenant_id


class PoolsNotSupported(TenantUnavailable):
    """The tenant's engine has no connection pools (sqlite: opened in-process by path)."""

    http_status = 409
    #: Retrying cannot help: the engine, not the tenant's state, is the reason.
    transient = False


class PoolExhausted(errors.ClonerError):
    """Every pooled connection of the tenant stayed busy for the whole acquire timeout."""

    http_status = 503
    transient = True

    def __init__(self, tenant_id: str, message: str | None = None) -> None:
        super().__init__(message or f"no free connection for tenant {tenant_id!r}")
        self.tenant_id = tenant_id
