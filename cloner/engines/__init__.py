"""Database engines behind one interface (``EngineDriver``)."""

from cloner.domain import Engine
from cloner.engines.base import (
    BackupResult,
    ContainerDefaults,
    EngineDriver,
    Neighbour,
    Placement,
    RotationHooks,
    SessionLimits,
    TenantTarget,
    VolumeDumpHooks,
    rotation_hooks,
    volume_dump_hooks,
)
from cloner.engines.mongodb import MongoEngine
from cloner.engines.mysql import MysqlEngine
from cloner.engines.postgres import PostgresEngine
from cloner.engines.sqlite import SqliteEngine
from cloner.errors import InvalidInput

_DRIVERS: dict[Engine, EngineDriver] = {
    Engine.POSTGRES: PostgresEngine(),
    Engine.MONGODB: MongoEngine(),
    Engine.MYSQL: MysqlEngine(),
    Engine.SQLITE: SqliteEngine(),
}


def get_engine(engine: Engine) -> EngineDriver:
    """The driver for an engine, or ``InvalidInput`` if not implemented yet."""
    try:
        return _DRIVERS[engine]
    except KeyError:
        supported = ", ".join(sorted(e.value for e in _DRIVERS))
        raise InvalidInput(
            f"engine {engine.value!r} is not available yet; supported: {supported}"
        ) from None


def available_engines() -> list[Engine]:
    """Engines with a driver."""
    return sorted(_DRIVERS, key=lambda e: e.value)


__all__ = [
    "BackupResult", "ContainerDefaults", "EngineDriver", "Neighbour", "Placement", "RotationHooks",
    "SessionLimits", "TenantTarget", "VolumeDumpHooks", "available_engines", "get_engine",
    "rotation_hooks", "volume_dump_hooks",
]
