"""`cloner migrate …` run as a subprocess: usage errors exit 2 with one line, reads work
on an empty registry. Nothing here needs Docker (the Docker-backed runs are in
tests/integration/test_migrations_pg.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli import Result, Runner, _runner


@pytest.fixture
def cloner(tmp_path: Path) -> Runner:
    """The CLI against a private, empty data dir."""
    return _runner(tmp_path, tmp_path / "data")


def _usage_error(result: Result, fragment: str) -> None:
    assert result.code == 2, result
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("cloner: error: "), result.stderr
    assert fragment in result.error_lines[0], result.stderr


@pytest.mark.parametrize(("args", "fragment"), [
    ((), "missing --to"),
    (("--to", "v9.9"), "unknown template version 'v9.9'"),
    (("--to", "latest"), "invalid template version"),
    (("--to", "v1.2", "--tenant", "Bad_Id"), "invalid tenant id"),
    (("--to", "v1.2", "--tenant", "nosuch"), "no tenant 'nosuch'"),
    (("--to", "v1.2", "--concurrency", "0"), "--concurrency must be at least 1"),
    (("--to", "v1.2", "--engine", "oracle"), "unknown engine"),
    (("--to", "v1.2", "status"), "--to does not go with `migrate status`"),
])
def test_bad_migrate_invocations_exit_2_with_one_line(
    cloner: Runner, args: tuple[str, ...], fragment: str
) -> None:
    """Each bad invocation is refused before anything runs."""
    _usage_error(cloner("migrate", *args), fragment)


def test_dry_run_json_on_an_empty_registry_plans_nothing(cloner: Runner) -> None:
    """`migrate --to v1.2 --dry-run --json`: an empty plan, status planned, exit 0."""
    result = cloner("migrate", "--to", "v1.2", "--dry-run", "--json")
    assert result.code == 0, result
    doc = result.json()
    assert (doc["status"], doc["dry_run"], doc["plan"], doc["tenants"]) == (
        "planned", True, [], [])
    assert doc["options"]["concurrency"] == 4 and doc["options"]["canary"] == 1


def test_status_json_on_an_empty_registry(cloner: Runner) -> None:
    """`migrate status --json` answers with no tenants and no rollout."""
    result = cloner("migrate", "status", "--json")
    assert result.code == 0, result
    assert result.json() == {"tenants": [], "versions": {}, "last_rollout": None,
                             "running": False}
    text = cloner("migrate", "status")
    assert text.code == 0 and "last rollout: none" in text.stdout


def test_repair_with_nothing_to_repair_exits_0(cloner: Runner) -> None:
    """`migrate repair --json` on an empty registry repairs nothing and succeeds."""
    result = cloner("migrate", "repair", "--json")
    assert result.code == 0, result
    assert result.json() == []
