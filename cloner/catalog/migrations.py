"""Schema migrations between adjacent template versions: the manifest, its checksums, and
what an engine records about the steps it applied.

Layout::

    templates/<engine>/migrations/manifest.json
        {"steps": {"v1.0-v1.1": {"from": "v1.0", "to": "v1.1", "description": "…",
                                 "destructive_down": true,
                                 "files": {"up.sql": sha256, "down.sql": sha256}}}}
    templates/<engine>/migrations/<from>-<to>/up.sql     (down.sql is optional)

Like a released template, a migration file whose bytes no longer match its
manifest is refused, and so is one the template linter rejects. A step without
``down.sql`` can still be rolled back, from the backup taken before the
migration. A tenant database records each step it applied
(``AppliedMigration``) with the checksum of the file it ran; comparing those
with the manifest is how an edited, already-applied migration is caught
(``validate_applied``), as Flyway's ``validate`` does.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cloner.backups import sha256_of
from cloner.catalog.lint import lint_template
from cloner.domain import validate_version
from cloner.errors import InvalidInput, TemplateError

MANIFEST = "manifest.json"
MIGRATIONS_DIR = "migrations"
#: Separates step and direction in a recorded migration name: ``v1.0-v1.1:up``.
_NAME_SEP = ":"


class Direction(enum.StrEnum):
    """Which way a migration script moves a database."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class MigrationScript:
    """One verified migration file: a step, in one direction."""

    engine: str
    step: str
    direction: Direction
    from_version: str
    to_version: str
    path: Path
    checksum: str
    #: True for a down step that drops data (a planned downgrade through it must say so).
    destructive: bool = False

    @property
    def record_name(self) -> str:
        """The name the engine records in the tenant database (``v1.0-v1.1:up``)."""
        return f"{self.step}{_NAME_SEP}{self.direction.value}"

    @property
    def label(self) -> str:
        """``v1.0-v1.1 up`` for messages."""
        return f"{self.step} {self.direction.value}"

    def read(self) -> str:
        """The file's text (blocking: async callers use ``asyncio.to_thread``)."""
        return self.path.read_text()


@dataclass(frozen=True)
class MigrationStep:
    """A step between two adjacent versions, with its up and (optional) down script."""

    name: str
    from_version: str
    to_version: str
    description: str
    up: MigrationScript
    down: MigrationScript | None

    def script(self, direction: Direction) -> MigrationScript | None:
        """The script for ``direction`` (None for a missing down)."""
        return self.up if direction is Direction.UP else self.down


@dataclass(frozen=True)
class AppliedMigration:
    """A migration step as a tenant database recorded it."""

    step: str
    direction: Direction
    #: The version the database was at once the step had run.
    version: str
    checksum: str
    applied_at: datetime | None = None
    duration_ms: int | None = None

    @property
    def record_name(self) -> str:
        """``v1.0-v1.1:up``."""
        return f"{self.step}{_NAME_SEP}{self.direction.value}"

    @classmethod
    def from_record(
        cls, name: str, version: str, checksum: str, applied_at: datetime | None = None,
        duration_ms: int | None = None,
    ) -> AppliedMigration:
        """Parse a recorded ``step:direction`` name; ``TemplateError`` for anything else."""
        step, sep, direction = name.partition(_NAME_SEP)
        if not sep or direction not in {d.value for d in Direction}:
            raise TemplateError(f"unrecognised migration record {name[:60]!r} in schema_info")
        return cls(step, Direction(direction), version, checksum.strip(), applied_at,
                   duration_ms)


@dataclass(frozen=True)
class MigrationState:
    """What a tenant database says about its schema: the root version it was created at
    and every migration step applied since, oldest first (latest application per step)."""

    root_version: str
    applied: tuple[AppliedMigration, ...] = ()
    #: A step that started and never finished (``v1.0-v1.1:up``), as marked by an engine
    #: whose DDL is not transactional: the schema is between two versions.
    in_progress: str | None = None

    @property
    def current_version(self) -> str:
        """The version the schema is at: the last step's, or the root's when none ran."""
        return self.applied[-1].version if self.applied else self.root_version


@dataclass(frozen=True)
class ChecksumProblem:
    """An applied migration that no longer matches the catalog."""

    applied: AppliedMigration
    #: The checksum the manifest records now (None: the step is not in the catalog).
    expected: str | None

    def describe(self) -> str:
        """One line for messages and ``migrate repair``."""
        a = self.applied
        if self.expected is None:
            return f"{a.step} {a.direction.value} was applied but is not in the catalog"
        return (f"{a.step} {a.direction.value} was applied with checksum {a.checksum[:12]}…, "
                f"the file now has {self.expected[:12]}…")


class MigrationCatalog:
    """Read-only, checksum-verified view of ``templates/<engine>/migrations/``."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir

    def _manifest(self, engine: str) -> dict[str, Any]:
        path = self.templates_dir / engine / MIGRATIONS_DIR / MANIFEST
        if not path.is_file():
            return {"steps": {}}
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
            raise TemplateError(f"{path} has no \"steps\" object")
        return data

    def steps(self, engine: str) -> list[MigrationStep]:
        """Every step of ``engine``, each file verified against the manifest, oldest first."""
        folder = self.templates_dir / engine / MIGRATIONS_DIR
        found = []
        for name, meta in self._manifest(engine)["steps"].items():
            found.append(self._step(engine, folder, name, meta))
        return sorted(found, key=lambda s: _version_key(s.from_version))

    def step_between(self, engine: str, from_version: str, to_version: str) -> MigrationStep | None:
        """The step from ``from_version`` to ``to_version`` (either order), if there is one."""
        for step in self.steps(engine):
            if {step.from_version, step.to_version} == {from_version, to_version}:
                return step
        return None

    def expected_checksum(self, engine: str, step: str, direction: Direction) -> str | None:
        """The manifest's checksum of one script (None if the catalog has no such script).

        Reads the manifest only: it is what the files are verified against, so a
        tenant's recorded checksum is compared with what the catalog stands for.
        """
        meta = self._manifest(engine)["steps"].get(step)
        if not isinstance(meta, dict):
            return None
        value = (meta.get("files") or {}).get(f"{direction.value}.sql")
        return str(value) if value else None

    def validate_applied(self, engine: str, state: MigrationState) -> list[ChecksumProblem]:
        """Applied steps whose recorded checksum differs from the catalog (or that it lacks).

        A down step removed from a step that is still in the catalog is history, not a
        problem: the schema it left was built again by the steps applied after it.
        """
        steps = self._manifest(engine)["steps"]
        problems = []
        for applied in state.applied:
            expected = self.expected_checksum(engine, applied.step, applied.direction)
            if (expected is None and applied.direction is Direction.DOWN
                    and applied.step in steps):
                continue
            if expected != applied.checksum:
                problems.append(ChecksumProblem(applied, expected))
        return problems

    def _step(self, engine: str, folder: Path, name: str, meta: Any) -> MigrationStep:
        where = f"{engine} migration {name!r}"
        if not isinstance(meta, dict):
            raise TemplateError(f"{where}: manifest entry is not an object")
        try:
            source = validate_version(str(meta.get("from", "")))
            target = validate_version(str(meta.get("to", "")))
        except InvalidInput as exc:
            raise TemplateError(f"{where}: {exc.message}") from None
        if name != f"{source}-{target}":
            raise TemplateError(f"{where}: name must be \"{source}-{target}\"")
        if _version_key(source) >= _version_key(target):
            raise TemplateError(f"{where}: \"from\" must be older than \"to\"")
        files = meta.get("files") or {}
        if "up.sql" not in files:
            raise TemplateError(f"{where}: manifest lists no up.sql")
        unknown = set(files) - {"up.sql", "down.sql"}
        if unknown:
            raise TemplateError(f"{where}: unexpected files {sorted(unknown)}")

        def script(direction: Direction) -> MigrationScript:
            filename = f"{direction.value}.sql"
            path = folder / name / filename
            checksum = _verified(path, files[filename])
            # The same rules as templates: it runs in the engine's transaction as the owner.
            problems = lint_template(engine, path.read_text())
            if problems:
                raise TemplateError(f"{path}: {'; '.join(problems)}")
            up = direction is Direction.UP
            return MigrationScript(
                engine=engine, step=name, direction=direction,
                from_version=source if up else target, to_version=target if up else source,
                path=path, checksum=checksum,
                destructive=not up and bool(meta.get("destructive_down", False)),
            )

        return MigrationStep(
            name=name, from_version=source, to_version=target,
            description=str(meta.get("description", "")),
            up=script(Direction.UP),
            down=script(Direction.DOWN) if "down.sql" in files else None,
        )


def _verified(path: Path, expected: object) -> str:
    if not path.is_file():
        raise TemplateError(f"migration file {path} is missing")
    actual = sha256_of(path)
    if not isinstance(expected, str) or actual != expected:
        raise TemplateError(
            f"{path} does not match its manifest: checksum {actual[:12]}… ≠ recorded "
            f"{str(expected)[:12]}…; a released migration is never edited silently "
            "(update the manifest on purpose, then `cloner migrate repair` the tenants "
            "that ran the old file)"
        )
    return actual


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))
