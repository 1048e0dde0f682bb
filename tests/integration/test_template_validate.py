"""`cloner template validate` against a real scratch PostgreSQL container."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cloner.app import App
from cloner.domain import Engine
from cloner.validation import validate_templates
from tests.conftest import make_settings, remove_owned, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

SMELLY = """
CREATE TABLE schema_info (
    id bigserial PRIMARY KEY, kind text NOT NULL, name text NOT NULL, version text NOT NULL,
    checksum char(64) NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer, UNIQUE (kind, name, version));
CREATE TABLE system_settings (key text PRIMARY KEY, value jsonb NOT NULL);
CREATE TABLE organizations (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
CREATE TABLE audit_trail (happened_at timestamptz, what text);
CREATE TABLE members (id int PRIMARY KEY, org_id uuid REFERENCES organizations (id),
                      password text);
"""


def _write_version(root: Path, version: str, sql: str) -> None:
    folder = root / "postgres" / version
    folder.mkdir(parents=True)
    (folder / "schema.sql").write_text(sql)
    manifest_path = root / "postgres" / "versions.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["versions"][version] = {
        "description": "test", "released": "2026-11-27",
        "files": {"schema.sql": hashlib.sha256(sql.encode()).hexdigest()},
    }
    manifest_path.write_text(json.dumps(manifest))


async def test_validate_reports_design_warnings_and_errors(tmp_path: Path) -> None:
    """No-PK tables, unindexed FKs and password columns warn; a syntax error is an error."""
    require_docker()
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    _write_version(templates, "v8.0", SMELLY)
    _write_version(templates, "v8.1", SMELLY + "\nCREATE TABLE broken (id int,, x int);\n")
    settings = make_settings(tmp_path / "data", templates_dir=templates)
    async with App.open(settings) as app:
        try:
            shipped = await validate_templates(app, [Engine.POSTGRES], "v1.1")
            smelly = await validate_templates(app, [Engine.POSTGRES], "v8.0")
            broken = await validate_templates(app, [Engine.POSTGRES], "v8.1")
            leftovers = await app.runtime.owned()
        finally:
            await remove_owned(app)
    assert shipped.ok and shipped.warnings == []
    assert len(shipped.applied) == 4  # none + three overlays
    assert smelly.ok
    joined = "\n".join(smelly.warnings)
    assert "table audit_trail has no primary key" in joined
    assert "foreign key members_org_id_fkey on members has no index" in joined
    assert "column members.password looks like a plaintext secret" in joined
    assert not broken.ok
    assert any("syntax error" in e for e in broken.errors)
    assert leftovers.containers == ()  # the scratch server is gone
