"""Loads and verifies templates.

Layout::

    templates/<engine>/versions.json           {"versions": {"v1.0": {"files": {name: sha256}}}}
    templates/<engine>/<version>/schema.sql    (root.json for mongodb)
    industry_templates/industries.json         {"industries": {name: {"files": {file: sha256}}}}
    industry_templates/<industry>/<engine>.sql

A file whose bytes no longer match the checksum recorded for its version is
an error: a released version never changes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloner.backups import sha256_of
from cloner.domain import Engine, Industry, validate_version
from cloner.errors import TemplateError, TemplateNotFound

ROOT_FILES = {"postgres": "schema.sql", "mysql": "schema.sql", "sqlite": "schema.sql",
              "mongodb": "root.json"}
OVERLAY_SUFFIX = {"postgres": "sql", "mysql": "sql", "sqlite": "sql", "mongodb": "json"}


@dataclass(frozen=True)
class TemplateFile:
    """One verified template file."""

    kind: str          # "root" or "overlay"
    name: str          # engine for root, industry for overlay
    version: str       # template version the file is applied under
    path: Path
    checksum: str

    def read(self) -> str:
        """The file's text."""
        return self.path.read_text()


@dataclass(frozen=True)
class ResolvedTemplates:
    """Root plus optional overlay for one tenant."""

    root: TemplateFile
    overlay: TemplateFile | None

    @property
    def files(self) -> tuple[TemplateFile, ...]:
        """Root first, then the overlay."""
        return (self.root,) if self.overlay is None else (self.root, self.overlay)


@dataclass(frozen=True)
class VersionInfo:
    """A root template version as listed by ``cloner template list``."""

    engine: str
    version: str
    description: str
    released: str
    checksum: str
    overlays: tuple[str, ...]


class Catalog:
    """Read-only view of the template directories."""

    def __init__(self, templates_dir: Path, industry_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.industry_dir = industry_dir

    def _manifest(self, engine: str) -> dict[str, Any]:
        path = self.templates_dir / engine / "versions.json"
        if not path.is_file():
            raise TemplateNotFound(f"no templates for engine {engine!r} in {self.templates_dir}")
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path} is not valid JSON: {exc}") from exc
        return data

    def _industries(self) -> dict[str, Any]:
        path = self.industry_dir / "industries.json"
        if not path.is_file():
            return {}
        try:
            data: dict[str, Any] = json.loads(path.read_text())["industries"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise TemplateError(f"{path} is malformed: {exc}") from exc
        return data

    def engines(self) -> list[str]:
        """Engines that have templates."""
        return sorted(e.value for e in Engine if (self.templates_dir / e.value).is_dir())

    def versions(self, engine: str) -> list[str]:
        """Versions of an engine's root template, oldest first."""
        return sorted(self._manifest(engine)["versions"], key=_version_key)

    def latest_version(self, engine: str) -> str:
        """The newest version (the default for new tenants)."""
        versions = self.versions(engine)
        if not versions:
            raise TemplateNotFound(f"engine {engine!r} has no template versions")
        return versions[-1]

    def overlays_for(self, engine: str) -> list[str]:
        """Industries that ship an overlay for ``engine``."""
        return sorted(
            name for name, meta in self._industries().items()
            if f"{engine}.{OVERLAY_SUFFIX[engine]}" in meta.get("files", {})
        )

    def root(self, engine: str, version: str) -> TemplateFile:
        """The verified root template file."""
        validate_version(version)
        manifest = self._manifest(engine)
        meta = manifest["versions"].get(version)
        if meta is None:
            known = ", ".join(self.versions(engine))
            raise TemplateNotFound(
                f"unknown template version {version!r} for {engine}: known {known}"
            )
        filename = ROOT_FILES[engine]
        expected = meta.get("files", {}).get(filename)
        path = self.templates_dir / engine / version / filename
        return self._verified("root", engine, version, path, expected)

    def overlay(self, engine: str, industry: Industry, version: str) -> TemplateFile | None:
        """The verified overlay, or None for industry ``none``."""
        if industry is Industry.NONE:
            return None
        meta = self._industries().get(industry.value)
        filename = f"{engine}.{OVERLAY_SUFFIX[engine]}"
        if meta is None or filename not in meta.get("files", {}):
            raise TemplateNotFound(
                f"industry {industry.value!r} has no overlay for engine {engine}"
            )
        path = self.industry_dir / industry.value / filename
        return self._verified("overlay", industry.value, version, path, meta["files"][filename])

    def resolve(self, engine: str, version: str, industry: Industry) -> ResolvedTemplates:
        """Root + overlay for a tenant, both checksum-verified."""
        return ResolvedTemplates(
            self.root(engine, version), self.overlay(engine, industry, version)
        )

    def list_versions(self) -> list[VersionInfo]:
        """Every (engine, version) with its metadata."""
        result = []
        for engine in self.engines():
            manifest = self._manifest(engine)
            for version in self.versions(engine):
                meta = manifest["versions"][version]
                result.append(VersionInfo(
                    engine=engine, version=version,
                    description=str(meta.get("description", "")),
                    released=str(meta.get("released", "")),
                    checksum=str(meta.get("files", {}).get(ROOT_FILES[engine], "")),
                    overlays=tuple(self.overlays_for(engine)),
                ))
        return result

    @staticmethod
    def _verified(
        kind: str, name: str, version: str, path: Path, expected: str | None
    ) -> TemplateFile:
        if not path.is_file():
            raise TemplateError(f"template file {path} is missing")
        actual = sha256_of(path)
        if expected is None:
            raise TemplateError(f"{path} has no recorded checksum")
        if actual != expected:
            raise TemplateError(
                f"{path} changed under an unchanged version: checksum {actual[:12]}… "
                f"≠ recorded {expected[:12]}…; release a new version instead of editing"
            )
        return TemplateFile(kind, name, version, path, actual)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))
