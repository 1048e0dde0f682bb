"""Unit tests of the `cloner` CLI run as a subprocess: validation, exit codes, one-line errors.

Nothing here touches Docker: every bad command fails in validation before
anything is enqueued, and the one good `create` only writes to the local queue.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import make_backup

CLONER_SCRIPT = Path(sys.executable).with_name("cloner")
COMMAND = [str(CLONER_SCRIPT)] if CLONER_SCRIPT.exists() else [sys.executable, "-m", "cloner"]


@dataclass(frozen=True)
class Result:
    """What a CLI run produced."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """Non-empty stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


Runner = Callable[..., Result]


def _runner(work_dir: Path, data_dir: Path) -> Runner:
    """`cloner ARGS…` against ``data_dir``, without inherited CLONER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env["CLONER_DATA_DIR"] = str(data_dir)
    env["CLONER_LOG_FORMAT"] = "json"

    def run(*args: str) -> Result:
        # cwd=work_dir: no stray .env file is picked up by the settings.
        proc = subprocess.run(
            [*COMMAND, *args], cwd=work_dir, env=env, capture_output=True, text=True,
            timeout=30, check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A private CLONER_DATA_DIR for one test."""
    return tmp_path / "data"


@pytest.fixture
def cloner(tmp_path: Path, data_dir: Path) -> Runner:
    """Run the CLI against this test's private data dir."""
    return _runner(tmp_path, data_dir)


def _assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.code == 2, result
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("cloner: error:"), line
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line, line


BAD_CREATES: dict[str, tuple[list[str], str]] = {
    "bad-id": (["Bad_ID", "--engine", "postgres", "--industry", "none"], "invalid tenant id"),
    "sql-injection": (["acme'; drop", "--engine", "postgres", "--industry", "none"],
                      "invalid tenant id"),
    "engine": (["acme", "--engine", "oracle", "--industry", "none"], "unknown engine"),
    "industry": (["acme", "--engine", "postgres", "--industry", "retail"], "unknown industry"),
    "version": (["acme", "--engine", "postgres", "--industry", "none",
                 "--template-version", "v9.9"], "unknown template version"),
    "version-shape": (["acme", "--engine", "postgres", "--industry", "none",
                       "--template-version", "latest"], "invalid template version"),
}


@pytest.fixture(scope="module")
def bad_create_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Result, Result]]:
    """Each bad create, then `tenant list --json`, each case in its own data dir (in parallel)."""
    root = tmp_path_factory.mktemp("bad-creates")
    runners = {case: _runner(root, root / case) for case in BAD_CREATES}

    def one(case: str) -> tuple[Result, Result]:
        run = runners[case]
        return run("tenant", "create", *BAD_CREATES[case][0]), run("tenant", "list", "--json")

    with ThreadPoolExecutor(max_workers=len(BAD_CREATES)) as pool:
        return dict(zip(BAD_CREATES, pool.map(one, BAD_CREATES), strict=True))


@pytest.mark.parametrize("case", list(BAD_CREATES))
def test_bad_create_exits_2_and_enqueues_nothing(
    bad_create_results: dict[str, tuple[Result, Result]], case: str
) -> None:
    """A create with bad input exits 2 with one stderr line and leaves the registry empty."""
    created, listing = bad_create_results[case]
    _assert_usage_error(created, BAD_CREATES[case][1])
    assert created.stdout == ""
    assert listing.code == 0, listing
    assert listing.json() == []


def test_missing_required_option_exits_2_with_one_line(cloner: Runner) -> None:
    """Leaving out --engine is a usage error naming the option."""
    _assert_usage_error(cloner("tenant", "create", "acme", "--industry", "none"), "--engine")


def test_missing_argument_exits_2_with_one_line(cloner: Runner) -> None:
    """Leaving out the tenant id is a usage error."""
    _assert_usage_error(
        cloner("tenant", "create", "--engine", "postgres", "--industry", "none"), "TENANT"
    )


def test_unknown_command_exits_2_with_one_line(cloner: Runner) -> None:
    """An unknown subcommand is a usage error."""
    _assert_usage_error(cloner("tenant", "explode"), "explode")


def test_template_list_json_lists_postgres_versions(cloner: Runner) -> None:
    """`template list --json` shows postgres v1.0, v1.1 and v1.2 with checksums and overlays."""
    result = cloner("template", "list", "--json")
    assert result.code == 0, result
    rows = result.json()
    postgres = [r for r in rows if r["engine"] == "postgres"]
    assert [r["version"] for r in postgres] == ["v1.0", "v1.1", "v1.2"]
    for row in postgres:
        assert len(row["checksum"]) == 64
        assert set(row["checksum"]) <= set("0123456789abcdef")
        assert row["overlays"] == ["finance", "healthcare", "technology"]


def test_show_unknown_tenant_exits_2(cloner: Runner) -> None:
    """`tenant show` of a tenant that does not exist exits 2 with one line."""
    _assert_usage_error(cloner("tenant", "show", "nosuch"), "nosuch")


def test_show_invalid_tenant_id_exits_2(cloner: Runner) -> None:
    """`tenant show` validates the id before reading the registry."""
    _assert_usage_error(cloner("tenant", "show", "No_Such"), "invalid tenant id")


def test_list_with_unknown_status_exits_2(cloner: Runner) -> None:
    """`tenant list --status bogus` exits 2 and names the valid states."""
    _assert_usage_error(cloner("tenant", "list", "--status", "bogus"), "bogus", "ready")


def test_create_enqueues_then_duplicate_is_refused(cloner: Runner, data_dir: Path) -> None:
    """A valid create (no --wait) only enqueues; a second create of the same id exits 2."""
    created = cloner("tenant", "create", "acme", "--engine", "postgres", "--industry",
                     "finance", "--json")
    assert created.code == 0, created
    body = created.json()
    assert body["tenant_id"] == "acme"
    assert body["status"] == "requested"
    assert body["request_id"]

    shown = cloner("tenant", "show", "acme", "--json")
    assert shown.code == 0, shown
    tenant = shown.json()
    assert (tenant["status"], tenant["engine"], tenant["industry"],
            tenant["template_version"]) == ("requested", "postgres", "finance", "v1.2")
    assert tenant["container"] is None

    _assert_usage_error(
        cloner("tenant", "create", "acme", "--engine", "postgres", "--industry", "none"),
        "already exists",
    )
    listing = cloner("tenant", "list", "--status", "requested", "--json")
    assert listing.code == 0, listing
    assert [t["tenant_id"] for t in listing.json()] == ["acme"]

    # local state is private
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("secret.key", "admin.token", "control-plane.sqlite3"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


# ------------------------------------------------------------------- lifecycle


def _purged_with_backup(cloner: Runner, data_dir: Path) -> Path:
    """Enqueue `acme`, mark it purged in the registry, and write one verified backup."""
    assert cloner("tenant", "create", "acme", "--engine", "postgres", "--industry",
                  "finance").code == 0
    with sqlite3.connect(data_dir / "control-plane.sqlite3") as db:
        db.execute("UPDATE tenants SET status = 'purged' WHERE tenant_id = 'acme'")
        db.execute("UPDATE requests SET status = 'done' WHERE tenant_id = 'acme'")
    return make_backup(data_dir / "backups", "acme", template_version="v1.0")


def test_restore_of_an_unknown_tenant_exits_2(cloner: Runner) -> None:
    """`tenant restore` of a tenant that does not exist exits 2 with one line."""
    _assert_usage_error(cloner("tenant", "restore", "nosuch"), "no tenant", "nosuch")


def test_restore_of_a_tenant_that_is_not_deprovisioned_exits_2(cloner: Runner) -> None:
    """A requested (not deprovisioned or purged) tenant is refused with exit 2."""
    assert cloner("tenant", "create", "acme", "--engine", "postgres", "--industry",
                  "none").code == 0
    _assert_usage_error(cloner("tenant", "restore", "acme"), "is requested",
                        "deprovisioned or purged")


@pytest.mark.parametrize("source", ["../data/secret.key", "/etc/passwd",
                                    "data/backups/other/x.dump"])
def test_restore_from_outside_the_backup_folder_exits_2(
    cloner: Runner, data_dir: Path, source: str
) -> None:
    """--from outside $CLONER_DATA_DIR/backups/TENANT/ exits 2 and enqueues nothing."""
    _purged_with_backup(cloner, data_dir)

    _assert_usage_error(cloner("tenant", "restore", "acme", "--from", source), "outside")

    shown = cloner("tenant", "show", "acme", "--json").json()
    assert shown["status"] == "purged"


def test_restore_from_a_verified_backup_enqueues_with_its_spec(
    cloner: Runner, data_dir: Path
) -> None:
    """--from a verified backup (relative to the cwd) enqueues a restore; history has the actor."""
    dump = _purged_with_backup(cloner, data_dir)

    result = cloner("tenant", "restore", "acme", "--from",
                    str(dump.relative_to(data_dir.parent)), "--json")

    assert result.code == 0, result
    body = result.json()
    assert (body["tenant_id"], body["status"]) == ("acme", "requested")
    assert body["backup"] == str(dump.resolve())
    shown = cloner("tenant", "show", "acme", "--json").json()
    assert (shown["status"], shown["template_version"]) == ("requested", "v1.0")
    (event,) = [e for e in shown["events"] if e["kind"] == "restore_requested"]
    assert event["detail"]["actor"].startswith("cli:")


def test_backup_list_shows_each_backup_and_whether_it_verifies(
    cloner: Runner, data_dir: Path
) -> None:
    """`backup list --json` re-verifies every backup; a tampered one says so."""
    good = make_backup(data_dir / "backups", "acme")
    bad = make_backup(data_dir / "backups", "acme", stamp="20260102T000000000000Z")
    bad.write_bytes(bad.read_bytes()[::-1])

    rows = cloner("backup", "list", "acme", "--json").json()
    text = cloner("backup", "list")

    assert [(r["path"], r["verified"]) for r in rows] == [(str(good), True), (str(bad), False)]
    assert rows[0]["reason"] == "deprovision" and rows[0]["size_bytes"] == good.stat().st_size
    assert text.code == 0 and "NO (sha256" in text.stdout
    _assert_usage_error(cloner("backup", "list", "Bad_Id"), "invalid tenant id")


def test_on_demand_backup_of_a_tenant_that_is_not_ready_exits_2(cloner: Runner) -> None:
    """`tenant backup` of a requested tenant is refused with exit 2 before anything is queued."""
    assert cloner("tenant", "create", "acme", "--engine", "postgres", "--industry",
                  "none").code == 0
    _assert_usage_error(cloner("tenant", "backup", "acme"), "only a ready tenant")
