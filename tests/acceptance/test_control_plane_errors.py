"""Acceptance: the `cloner` CLI facing a control plane it cannot use (locked, a directory, junk).

No Docker: every command here stops at the control plane. The contract is
DESIGN.md's: exit 1 for an operation that failed, exactly one line on stderr,
never a traceback, and no hang.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CLONER_SCRIPT = Path(sys.executable).with_name("cloner")
COMMAND = [str(CLONER_SCRIPT)] if CLONER_SCRIPT.exists() else [sys.executable, "-m", "cloner"]
CONTROL_PLANE_FILE = "control-plane.sqlite3"
CREATE_LOCKT = ("tenant", "create", "lockt", "--engine", "postgres", "--industry", "none")
#: The control plane waits 5 s for a lock (busy timeout); the refusal must come well within this.
LOCKED_WITHIN_S = 10.0


@dataclass(frozen=True)
class Result:
    """What one CLI run produced; ``code`` is None when it had to be killed."""

    code: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        """Non-empty stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


class Cli:
    """`cloner ARGS…` against one private data dir, without inherited CLONER_* settings."""

    def __init__(self, root: Path, **settings: str) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
        self.env["CLONER_DATA_DIR"] = str(self.data_dir)
        self.env.update(settings)

    @property
    def control_plane(self) -> Path:
        """The default SQLite control-plane file."""
        return self.data_dir / CONTROL_PLANE_FILE

    def __call__(self, *args: str, timeout_s: float = 30.0) -> Result:
        started = time.monotonic()
        try:
            # cwd=root: no stray .env file is picked up by the settings.
            proc = subprocess.run([*COMMAND, *args], cwd=self.root, env=self.env,
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it by now
            return Result(None, _text(exc.stdout), _text(exc.stderr), time.monotonic() - started)
        return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def _assert_one_line_failure(result: Result, code: int, *fragments: str) -> None:
    """Exit ``code``, exactly one ``cloner: error:`` line naming ``fragments``, no traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("cloner: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert result.stdout == ""


@contextmanager
def exclusive_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold SQLite's write lock on ``path`` (``BEGIN EXCLUSIVE``) until the block ends."""
    db = sqlite3.connect(path, isolation_level=None, timeout=1.0)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield db
        db.execute("ROLLBACK")
    finally:
        db.close()


@pytest.fixture
def cloner(tmp_path: Path) -> Cli:
    """A CLI whose control plane has been initialised once by `cloner tenant list`."""
    cli = Cli(tmp_path)
    first = cli("tenant", "list", "--json")
    assert first.code == 0, first
    assert json.loads(first.stdout) == []
    assert cli.control_plane.is_file()
    return cli


# ------------------------------------------------------------------ locked


@pytest.mark.slow
def test_locked_control_plane_fails_within_seconds_then_create_works_once_released(
    cloner: Cli,
) -> None:
    """With the write lock held elsewhere, create exits 1 with one 'locked' line; later it works."""
    # The timeout is the regression guard: a lock met during migration once left the
    # aiosqlite thread running, and the CLI printed its error and then never exited.
    with exclusive_lock(cloner.control_plane):
        locked = cloner(*CREATE_LOCKT, timeout_s=LOCKED_WITHIN_S + 5)

    assert locked.code is not None, f"still running after {locked.seconds:.0f}s: {locked}"
    assert locked.seconds < LOCKED_WITHIN_S, locked
    _assert_one_line_failure(locked, 1, "control plane", "locked")

    created = cloner(*CREATE_LOCKT)
    assert created.code == 0, created
    assert created.stdout.startswith("lockt: requested (request ")
    listed = json.loads(cloner("tenant", "list", "--json").stdout)
    assert [(t["tenant_id"], t["status"]) for t in listed] == [("lockt", "requested")]


def test_briefly_locked_control_plane_is_waited_out_and_create_is_queued(cloner: Cli) -> None:
    """A lock released within the busy timeout only delays create: exit 0, tenant queued."""
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with exclusive_lock(cloner.control_plane):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        timer = threading.Timer(1.5, release.set)
        timer.start()
        created = cloner(*CREATE_LOCKT, timeout_s=20)
    finally:
        release.set()
        holder.join(10)

    assert created.code == 0, created
    assert created.seconds >= 1.5, "the lock was not in the way"
    assert created.stdout.startswith("lockt: requested (request ")
    assert created.error_lines == []
    listed = json.loads(cloner("tenant", "list", "--json").stdout)
    assert [(t["tenant_id"], t["status"]) for t in listed] == [("lockt", "requested")]


# ------------------------------------------------------------------ unusable files

#: Runs per case, four at a time: one clean run proves little when a failure is a race.
RUNS = 12


def _run_many(cli: Cli, *args: str) -> list[Result]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: cli(*args, timeout_s=20), range(RUNS)))


def _make_directory(root: Path) -> Path:
    path = root / "a-directory"
    path.mkdir()
    return path


def _make_random_bytes(root: Path) -> Path:
    path = root / "random.sqlite3"
    path.write_bytes(os.urandom(4096))
    return path


def _make_text(root: Path) -> Path:
    path = root / "notes.sqlite3"
    path.write_text("this is not a database\n" * 50)
    return path


def _make_sqlite_header_then_junk(root: Path) -> Path:
    path = root / "truncated.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4080))
    return path


def _make_parent_is_a_file(root: Path) -> Path:
    parent = root / "plain-file"
    parent.write_text("x")
    return parent / CONTROL_PLANE_FILE


@pytest.mark.parametrize(
    "make",
    [
        # A failed aiosqlite.connect once left its thread printing "Event loop is closed"
        # tracebacks after the one-line error, in most runs under load: hence RUNS.
        pytest.param(_make_directory, id="directory"),
        pytest.param(_make_random_bytes, id="random-bytes"),
        pytest.param(_make_text, id="text-file"),
        pytest.param(_make_sqlite_header_then_junk, id="sqlite-header-then-junk"),
        pytest.param(_make_parent_is_a_file, id="parent-is-a-file"),
    ],
)
def test_unusable_control_plane_file_is_one_line_exit_1(
    tmp_path: Path, make: Callable[[Path], Path],
) -> None:
    """A control-plane path that is a directory or junk: exit 1, one line, never a traceback."""
    path = make(tmp_path)
    cli = Cli(tmp_path, CLONER_CONTROL_PLANE_URL=f"sqlite:///{path}")
    before = path.read_bytes() if path.is_file() else None

    results = _run_many(cli, "tenant", "list", "--json")

    for result in results:
        _assert_one_line_failure(result, 1, "cannot open control plane", str(path))
    # A junk file is reported, never "repaired" by overwriting it.
    if before is not None:
        assert path.read_bytes() == before


@pytest.mark.parametrize("url", ["postgresql://cloner@db/cloner", "sqlite://relative.db"])
def test_unsupported_control_plane_url_is_one_line_exit_2(tmp_path: Path, url: str) -> None:
    """CLONER_CONTROL_PLANE_URL with a scheme cloner cannot open: exit 2 (bad setting), one line."""
    cli = Cli(tmp_path, CLONER_CONTROL_PLANE_URL=url)

    result = cli("tenant", "list", "--json")

    _assert_one_line_failure(result, 2, "CLONER_CONTROL_PLANE_URL")
