"""Control plane: the request queue and the tenant registry in one database."""

from cloner.controlplane.base import ControlPlane, QueueStats, TenantUpdate
from cloner.controlplane.sqlite import SQLiteControlPlane

__all__ = ["ControlPlane", "QueueStats", "SQLiteControlPlane", "TenantUpdate"]
