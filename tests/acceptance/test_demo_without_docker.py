"""The README's main command when Docker cannot be reached: it says why and runs on sqlite.

``scripts/demo.sh`` is run for real, with ``DOCKER_HOST`` pointing at a socket
that does not exist (bootstrap starts a local dockerd only for the default
socket, so this is exactly "Docker is unavailable and cannot be started").
The test waits for the tenant table, checks every demo tenant is a ready
sqlite tenant, then stops the demo with SIGINT as a person would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.acceptance.harness import CLONER, free_port

REPO = Path(__file__).resolve().parents[2]
DEMO_TENANTS = {"demo-technology", "demo-healthcare", "demo-finance", "demo-none"}


def test_demo_falls_back_to_sqlite_and_says_why(tmp_path: Path) -> None:
    """Exit 0 on Ctrl-C; stderr names the reason; four ready sqlite tenants."""
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
        "CLONER_DATA_DIR": str(data_dir),
        "CLONER_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "CLONER_LOG_FORMAT": "json",
    }
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        demo = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "demo.sh")], env=env, stdout=stdout,
            stderr=stderr, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            while "cloner is serving" not in out.read_text():
                assert demo.poll() is None, err.read_text()[-2000:]
                assert time.monotonic() < deadline, "demo never printed its table"
                time.sleep(0.5)
            listing = subprocess.run(
                [str(CLONER), "tenant", "list", "--json"], env=env, capture_output=True,
                text=True, check=True, timeout=30,
            )
        finally:
            os.killpg(demo.pid, signal.SIGINT)
            code = demo.wait(timeout=60)
    assert code in (0, 130, -signal.SIGINT), err.read_text()[-2000:]
    errors = err.read_text()
    assert "Docker is unavailable" in errors
    assert "does not answer" in errors  # the reason, not just the fact
    assert "sqlite" in errors
    tenants = {t["tenant_id"]: t for t in json.loads(listing.stdout)}
    assert set(tenants) == DEMO_TENANTS, tenants
    for tenant in tenants.values():
        assert tenant["engine"] == "sqlite" and tenant["status"] == "ready", tenant
    for tenant_id in DEMO_TENANTS:
        path = data_dir / "sqlite" / "tenants" / tenant_id / f"{tenant_id}.sqlite3"
        assert path.is_file()
        assert path.stat().st_mode & 0o777 == 0o600
