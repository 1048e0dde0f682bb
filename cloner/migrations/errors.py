"""Errors of schema migrations. Messages name the tenant, step and versions, never a secret."""

from __future__ import annotations

from cloner.errors import ClonerError, InvalidInput


class MigrationError(ClonerError):
    """A schema migration failed."""


class MigrationPathError(InvalidInput):
    """There is no migration path between these versions."""


class ChecksumMismatch(MigrationError):
    """An applied migration no longer matches the catalog (edited after it ran)."""


class MigrationConflict(MigrationError):
    """The tenant database is not at the version the migration step starts from."""


class RolloutInProgress(ClonerError):
    """Another rollout is running."""

    http_status = 409
