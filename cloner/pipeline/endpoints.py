"""Vouching for a tenant endpoint before one of its secrets is sent there (audit H2).

A tenant endpoint is ``<bind host>:<ephemeral port>`` published by Docker.
When the tenant's container stops (crash, ``docker stop``, a restart that
picks a new port) the port is free: any local user can bind it, and the
registry still names it until the reconciler or the health monitor notices.
PostgreSQL and MySQL clients answer a server's cleartext-password request, so
whatever listens there would collect every password cloner presents.

So, just before cloner connects with a secret, the guard asks the runtime
whether the endpoint is still the tenant's own container: same name, same id
as registered, labelled with the tenant id, running, and publishing exactly
that host address and port. A mismatch raises ``EndpointNotVouched`` and
nothing is sent. What remains is the window between that inspect and the
TCP connect (milliseconds; the container would have to stop and the port be
re-bound inside it); ``docs/architecture.md`` ("Isolation proof") says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloner import constants
from cloner.domain import Endpoint
from cloner.errors import EndpointNotVouched
from cloner.runtime.base import Runtime


@dataclass(frozen=True)
class ContainerEndpointGuard:
    """``EndpointGuard`` of a container engine's tenant, checked against the runtime."""

    runtime: Runtime
    tenant_id: str
    container_name: str
    #: The container id the registry (or the running pipeline) knows; None when never
    #: recorded, and then name, tenant label and published port alone decide.
    container_id: str | None

    async def confirm(self, endpoint: Endpoint) -> None:
        """Raise ``EndpointNotVouched`` unless ``endpoint`` is the tenant's running container."""
        problem = await self.problem(endpoint)
        if problem is not None:
            raise EndpointNotVouched(
                f"endpoint {endpoint.host}:{endpoint.port} of tenant {self.tenant_id} is not "
                f"vouched for ({problem}); no credentials were sent to it"
            )

    async def problem(self, endpoint: Endpoint) -> str | None:
        """Why ``endpoint`` is not vouched for, or None when it is."""
        info = await self.runtime.inspect(self.container_name)
        name = self.container_name
        if info is None:
            return f"container {name} is gone"
        owner = info.labels.get(constants.LABEL_TENANT)
        if owner != self.tenant_id:
            return f"container {name} is labelled for tenant {owner!r}"
        if self.container_id and info.id != self.container_id:
            return (f"container {name} is {info.id[:12]}, the registry knows "
                    f"{self.container_id[:12]}")
        if not info.running:
            return f"container {name} is {info.status}"
        if info.host_ip != endpoint.host or info.host_port != endpoint.port:
            return f"container {name} publishes {info.host_ip}:{info.host_port}"
        return None


__all__ = ["ContainerEndpointGuard"]
