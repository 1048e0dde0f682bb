"""Control plane: the request queue and the tenant registry in one database."""

from cloner.controlplane.base import (
    ControlPlane,
    InstallIdentity,
    OrphanDecision,
    QueueStats,
    TenantUpdate,
)
from cloner.controlplane.fenced import AttemptControlPlane
from cloner.controlplane.sqlite import SQLiteControlPlane

__all__ = [
    "AttemptControlPlane",
    "ControlPlane",
    "InstallIdentity",
    "OrphanDecision",
    "QueueStats",
    "SQLiteControlPlane",
    "TenantUpdate",
]
