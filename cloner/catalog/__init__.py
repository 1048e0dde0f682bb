"""Template catalog: root templates per (engine, version), industry overlays, checksums."""

from cloner.catalog.catalog import Catalog, ResolvedTemplates, TemplateFile, VersionInfo
from cloner.catalog.lint import lint_sql, lint_template

__all__ = ["Catalog", "ResolvedTemplates", "TemplateFile", "VersionInfo", "lint_sql",
           "lint_template"]
