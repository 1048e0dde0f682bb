"""What a tenant database records about its own migrations, read the same way by every engine.

Each engine reads its ``schema_info`` rows with its own client; turning them
into a ``MigrationState`` and deciding whether a step may run are the same
everywhere, so they live here. Import-light: engine modules import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cloner.catalog.migrations import AppliedMigration, MigrationScript, MigrationState
from cloner.migrations.errors import MigrationConflict, MigrationError


def state_from_rows(tenant_id: str, rows: Iterable[Mapping[str, Any]]) -> MigrationState:
    """A ``MigrationState`` from ``schema_info`` rows (oldest first).

    Each row has ``kind``, ``name``, ``version``, ``checksum``, ``applied_at``
    (a datetime or None) and ``duration_ms``.
    """
    rows = list(rows)
    root = next((r for r in rows if r["kind"] == "root"), None)
    if root is None:
        raise MigrationError(
            f"tenant {tenant_id}: schema_info records no root template; "
            "the database was not provisioned by cloner"
        )
    applied = tuple(
        AppliedMigration.from_record(r["name"], r["version"], r["checksum"], r["applied_at"],
                                     r["duration_ms"])
        for r in rows if r["kind"] == "migration"
    )
    return MigrationState(str(root["version"]), applied)


def already_applied(
    state: MigrationState, script: MigrationScript, tenant_id: str
) -> AppliedMigration | None:
    """The record of ``script`` if it is the last step applied, else None.

    A step is run again only by a rollout resumed after a crash, and then it is
    the last one recorded; a database at any other version than the step's
    source is a ``MigrationConflict``.
    """
    last = state.applied[-1] if state.applied else None
    if (last is not None and last.record_name == script.record_name
            and last.version == script.to_version):
        return last  # applied by an earlier, interrupted run of the same rollout
    if state.current_version != script.from_version:
        raise MigrationConflict(
            f"tenant {tenant_id}: {script.label} starts from {script.from_version} "
            f"but the database is at {state.current_version}"
        )
    return None
