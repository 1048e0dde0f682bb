"""Unit tests of cloner.catalog: versions, checksum-verified resolution and the SQL linter."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cloner.catalog import Catalog, lint_sql
from cloner.domain import Industry
from cloner.errors import InvalidInput, TemplateError, TemplateNotFound

REPO = Path(__file__).resolve().parents[2]
SHIPPED_SQL = sorted(
    [*(REPO / "templates").glob("*/v*/*.sql"), *(REPO / "industry_templates").glob("*/*.sql")]
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """A catalog over private copies of the shipped template directories."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copytree(REPO / "industry_templates", tmp_path / "industry_templates")
    return Catalog(tmp_path / "templates", tmp_path / "industry_templates")


# ---------------------------------------------------------------- versions


def test_postgres_versions_are_listed_oldest_first(catalog: Catalog) -> None:
    """The shipped postgres root template has v1.0, v1.1 and v1.2, in that order."""
    assert catalog.versions("postgres") == ["v1.0", "v1.1", "v1.2"]
    assert catalog.latest_version("postgres") == "v1.2"


def test_versions_sort_numerically_not_lexically(catalog: Catalog) -> None:
    """v1.10 sorts after v1.9 (numeric version order)."""
    manifest_path = catalog.templates_dir / "postgres" / "versions.json"
    manifest = json.loads(manifest_path.read_text())
    v11 = manifest["versions"]["v1.1"]
    manifest["versions"]["v1.9"] = v11
    manifest["versions"]["v1.10"] = v11
    manifest_path.write_text(json.dumps(manifest))
    assert catalog.versions("postgres") == ["v1.0", "v1.1", "v1.2", "v1.9", "v1.10"]
    assert catalog.latest_version("postgres") == "v1.10"


def test_engines_and_overlays(catalog: Catalog) -> None:
    """postgres and mongodb ship templates, each with an overlay for each real industry."""
    assert {"postgres", "mongodb"} <= set(catalog.engines())
    for engine in ("postgres", "mongodb"):
        assert catalog.overlays_for(engine) == ["finance", "healthcare", "technology"]


def test_list_versions_reports_recorded_checksums(catalog: Catalog) -> None:
    """`template list` data carries each version's root checksum, matching the file."""
    infos = [i for i in catalog.list_versions() if i.engine == "postgres"]
    assert [i.version for i in infos] == ["v1.0", "v1.1", "v1.2"]
    for info in infos:
        path = catalog.templates_dir / "postgres" / info.version / "schema.sql"
        assert info.checksum == _sha256(path)
        assert info.overlays == ("finance", "healthcare", "technology")
        assert info.released


# ----------------------------------------------------------------- resolve


@pytest.mark.parametrize("industry", [Industry.FINANCE, Industry.HEALTHCARE, Industry.TECHNOLOGY])
@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_resolve_returns_root_and_overlay_with_checksums(
    catalog: Catalog, version: str, industry: Industry
) -> None:
    """Root and overlay are the expected files, and their checksums are their sha256."""
    resolved = catalog.resolve("postgres", version, industry)
    root, overlay = resolved.root, resolved.overlay
    assert overlay is not None
    assert root.path == catalog.templates_dir / "postgres" / version / "schema.sql"
    assert overlay.path == catalog.industry_dir / industry.value / "postgres.sql"
    assert root.checksum == _sha256(root.path)
    assert overlay.checksum == _sha256(overlay.path)
    assert (root.kind, root.name, root.version) == ("root", "postgres", version)
    assert (overlay.kind, overlay.name, overlay.version) == ("overlay", industry.value, version)
    assert resolved.files == (root, overlay)
    assert root.read() == root.path.read_text()


def test_industry_none_has_no_overlay(catalog: Catalog) -> None:
    """Industry `none` resolves to the root template alone."""
    resolved = catalog.resolve("postgres", "v1.1", Industry.NONE)
    assert resolved.overlay is None
    assert resolved.files == (resolved.root,)


def test_unknown_version_raises_template_not_found(catalog: Catalog) -> None:
    """An unknown version is bad input (exit 2) and the message lists the known versions."""
    with pytest.raises(TemplateNotFound) as info:
        catalog.resolve("postgres", "v9.9", Industry.NONE)
    assert isinstance(info.value, InvalidInput)
    assert info.value.exit_code == 2
    assert "v1.0" in str(info.value)
    assert "v1.1" in str(info.value)


def test_malformed_version_is_invalid_input(catalog: Catalog) -> None:
    """A version that is not vX.Y is refused before any file is read."""
    with pytest.raises(InvalidInput, match="invalid template version"):
        catalog.resolve("postgres", "../v1.0", Industry.NONE)


def test_edited_root_under_unchanged_version_raises_template_error(catalog: Catalog) -> None:
    """Changing a released root file without a new version fails the checksum check."""
    path = catalog.templates_dir / "postgres" / "v1.0" / "schema.sql"
    path.write_text(path.read_text() + "\nCREATE TABLE sneaky (id int);\n")
    with pytest.raises(TemplateError) as info:
        catalog.resolve("postgres", "v1.0", Industry.NONE)
    assert not isinstance(info.value, InvalidInput)
    assert info.value.exit_code == 1
    assert "checksum" in str(info.value)
    # the other, untouched version still resolves
    assert catalog.resolve("postgres", "v1.1", Industry.NONE).root.version == "v1.1"


def test_edited_overlay_raises_template_error(catalog: Catalog) -> None:
    """Changing an overlay file without recording its new checksum is refused."""
    path = catalog.industry_dir / "finance" / "postgres.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n", 1))
    with pytest.raises(TemplateError, match="checksum"):
        catalog.resolve("postgres", "v1.1", Industry.FINANCE)
    assert catalog.resolve("postgres", "v1.1", Industry.HEALTHCARE).overlay is not None


def test_missing_root_file_raises_template_error(catalog: Catalog) -> None:
    """A version listed in the manifest whose file is gone is a broken template."""
    (catalog.templates_dir / "postgres" / "v1.1" / "schema.sql").unlink()
    with pytest.raises(TemplateError, match="missing"):
        catalog.resolve("postgres", "v1.1", Industry.NONE)


def test_engine_without_templates_raises_template_not_found(catalog: Catalog) -> None:
    """An engine without templates: versions and resolve raise TemplateNotFound."""
    shutil.rmtree(catalog.templates_dir / "mysql")
    with pytest.raises(TemplateNotFound):
        catalog.versions("mysql")
    with pytest.raises(TemplateNotFound):
        catalog.latest_version("mysql")
    with pytest.raises(TemplateNotFound):
        catalog.resolve("mysql", "v1.0", Industry.NONE)


def test_overlay_missing_for_engine_raises_template_not_found(catalog: Catalog) -> None:
    """An industry without an overlay for the engine raises TemplateNotFound naming both."""
    manifest_path = catalog.industry_dir / "industries.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["industries"]["finance"]["files"]["mysql.sql"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TemplateNotFound) as info:
        catalog.overlay("mysql", Industry.FINANCE, "v1.0")
    assert "finance" in str(info.value)
    assert "mysql" in str(info.value)


def test_malformed_manifest_raises_template_error(catalog: Catalog) -> None:
    """A versions.json that is not JSON is a broken template, not bad input."""
    (catalog.templates_dir / "postgres" / "versions.json").write_text("{not json")
    with pytest.raises(TemplateError, match="not valid JSON"):
        catalog.versions("postgres")


# -------------------------------------------------------------------- lint


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;", "transaction"),
        ("CREATE TABLE t (id int);\nCOMMIT;", "transaction"),
        ("START TRANSACTION;\nCREATE TABLE t (id int);", "transaction"),
        ("CREATE TABLE t (id int);\nGRANT SELECT ON t TO PUBLIC;", "privileges"),
        ("CREATE TABLE t (id int);\nrevoke all on t from public;", "privileges"),
        ("CREATE ROLE intruder LOGIN;", "roles"),
        ("ALTER USER postgres PASSWORD 'x';", "roles"),
        ("DROP DATABASE other;", "roles"),
        ('CREATE EXTENSION IF NOT EXISTS "uuid-ossp";', "extensions"),
        ("\\connect other\nCREATE TABLE t (id int);", "meta-commands"),
        ("  \\i /etc/passwd", "meta-commands"),
        ("ALTER TABLE t OWNER TO postgres;", "ownership"),
        ("INSERT INTO t VALUES ('unterminated);", "single quote"),
        ("CREATE TABLE t (id int;", "parentheses"),
        ("-- only a comment\n/* and another */", "empty"),
    ],
)
def test_lint_flags_forbidden_sql(sql: str, expected: str) -> None:
    """Statements cloner must own, and malformed SQL, are reported."""
    errors = lint_sql(sql)
    assert errors, sql
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL);",
        "-- GRANT is done by cloner\nCREATE TABLE t (id int);",
        "/* BEGIN;\nCOMMIT; */\nCREATE TABLE t (id int);",
        "INSERT INTO t (name) VALUES ('it''s fine'), ('GRANT me a wish');",
        "CREATE TABLE roles_catalog (role text);",
    ],
)
def test_lint_passes_clean_sql(sql: str) -> None:
    """Ordinary DDL/DML, keywords in comments or strings, and doubled quotes are fine."""
    assert lint_sql(sql) == []


def test_lint_reports_every_distinct_problem() -> None:
    """Several problems in one template are all reported."""
    errors = lint_sql("BEGIN;\nCREATE ROLE r;\nGRANT ALL ON t TO r;\nCOMMIT;")
    assert len(errors) == 3


def test_shipped_templates_exist() -> None:
    """The repository ships the root and overlay SQL files the linter test reads."""
    names = {p.relative_to(REPO).as_posix() for p in SHIPPED_SQL}
    assert {"templates/postgres/v1.0/schema.sql", "templates/postgres/v1.1/schema.sql",
            "industry_templates/finance/postgres.sql"} <= names


@pytest.mark.parametrize("path", SHIPPED_SQL, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shipped_templates_lint_clean(path: Path) -> None:
    """Every shipped template passes the static checks."""
    assert lint_sql(path.read_text()) == []
