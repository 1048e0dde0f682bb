"""Acceptance harness: one isolated cloner install driven through its CLI and daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

CLONER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cloner"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


class Cloner:
    """One isolated cloner installation: data dir, HTTP port, CLI runner and daemon handle."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
        env.update({
            "CLONER_DATA_DIR": str(self.data_dir),
            "CLONER_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "CLONER_WORKERS": "2",
        })
        if image := os.environ.get("CLONER_TEST_POSTGRES_IMAGE"):
            env["CLONER_POSTGRES_IMAGE"] = image
        if image := os.environ.get("CLONER_TEST_MYSQL_IMAGE"):
            env["CLONER_MYSQL_IMAGE"] = image
        self.env = env
        #: Every CLI stdout/stderr of the test, except those run with ``secret=True``.
        self.outputs: list[str] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_out = root / "daemon.stdout"
        self.daemon_err = root / "daemon.stderr"

    # ------------------------------------------------------------------ CLI

    def cli(self, *args: str, secret: bool = False,
            timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
        """Run ``cloner ARGS`` (cwd = the test's tmp dir, so no stray .env is read)."""
        proc = subprocess.run(
            [str(CLONER), *args], env=self.env, cwd=self.root, capture_output=True,
            text=True, timeout=timeout_s, check=False,
        )
        if not secret:
            self.outputs.extend([proc.stdout, proc.stderr])
        return proc

    def cli_json(self, *args: str, secret: bool = False) -> Any:
        """Run a ``--json`` command that must succeed; its parsed stdout."""
        proc = self.cli(*args, "--json", secret=secret)
        assert proc.returncode == 0, f"cloner {' '.join(args)} -> {proc.returncode}: {proc.stderr}"
        return json.loads(proc.stdout)

    # --------------------------------------------------------------- daemon

    def start_daemon(self) -> None:
        """Start ``cloner serve`` (debug logs: more for the leak check); wait for /healthz."""
        with self.daemon_out.open("wb") as out, self.daemon_err.open("wb") as err:
            self.daemon = subprocess.Popen(
                [str(CLONER), "serve"], env={**self.env, "CLONER_LOG_LEVEL": "debug"},
                cwd=self.root, stdout=out, stderr=err,
            )

        def healthy() -> bool:
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                pytest.fail(f"cloner serve exited with {self.daemon.returncode}: "
                            f"{self.daemon_err.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 30.0, "/healthz of cloner serve")

    def stop_daemon(self, timeout_s: float = 20.0) -> int:
        """SIGTERM the daemon; its exit code (killed and failed if it overstays)."""
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        try:
            return self.daemon.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
            pytest.fail(f"cloner serve did not exit within {timeout_s:.0f}s of SIGTERM")

    def daemon_logs(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far."""
        return self.daemon_out.read_text() + self.daemon_err.read_text()

    # ---------------------------------------------------------------- state

    @property
    def token(self) -> str:
        """The generated admin bearer token."""
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def install_id(self) -> str | None:
        """The install id, once cloner has created it."""
        path = self.data_dir / "install.id"
        return path.read_text().strip() if path.exists() else None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the SQLite control plane."""
        db = sqlite3.connect(f"file:{self.data_dir / 'control-plane.sqlite3'}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    # -------------------------------------------------------------- cleanup

    def cleanup(self) -> None:
        """Stop a still-running daemon, then remove every container/volume of this install."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        install = self.install_id
        if install is None:
            return
        client = docker.from_env(timeout=30)
        try:
            flt = {"label": [f"cloner.install={install}"]}
            for container in client.containers.list(all=True, filters=flt):
                container.remove(force=True, v=True)
            for volume in client.volumes.list(filters=flt):
                volume.remove(force=True)
        finally:
            client.close()
