"""Acceptance: schemathesis fuzzes a real ``cloner serve`` from its own ``/openapi.json``.

The daemon runs as a subprocess through the acceptance harness, as in
``test_daemon_e2e.py`` (own data dir, free port, one worker). Schemathesis
(its CLI, bounded) generates requests for GET + POST ``/v1/tenants`` and GET
on every other route, and checks two things of every answer: no 5xx, and the
body matches the schema the daemon publishes. Valid creates do happen (real
PostgreSQL containers): the ``cloner`` fixture removes every container and
volume labelled with the install id.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import Cloner

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]

SCHEMATHESIS = Path(sys.executable).with_name("st")
#: Per operation and phase; enough to cover every documented status, small enough for < 90 s.
MAX_EXAMPLES = 10


@pytest.fixture
def daemon(cloner: Cloner) -> Cloner:
    """A running ``cloner serve`` with one worker (``cloner`` removes its containers after)."""
    # One worker keeps the few valid creates serial; a short grace keeps shutdown quick.
    cloner.env.update({"CLONER_WORKERS": "1", "CLONER_SHUTDOWN_GRACE_S": "2"})
    cloner.start_daemon()
    return cloner


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    daemon: Cloner, tmp_path: Path,
) -> None:
    """Generated requests never get a 5xx and every answer conforms to /openapi.json."""
    assert SCHEMATHESIS.exists(), "schemathesis is a dev dependency: pip install -e '.[dev]'"
    junit = tmp_path / "schemathesis.xml"
    proc = subprocess.run(
        [
            str(SCHEMATHESIS), "--no-color", "run", f"{daemon.base_url}/openapi.json",
            "--header", f"Authorization: Bearer {daemon.token}",
            "--checks", "not_a_server_error,response_schema_conformance",
            "--exclude-method", "DELETE",
            "--max-examples", str(MAX_EXAMPLES),
            "--workers", "1",
            "--request-timeout", "10",
            "--report", "junit", "--report-junit-path", str(junit),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    output = proc.stdout[-6000:] + proc.stderr[-2000:]

    assert proc.returncode == 0, output
    cases = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 - our own report
    tested = {case.get("name", "") for case in cases}
    assert {"POST /v1/tenants", "GET /v1/tenants", "GET /v1/tenants/{tenant_id}",
            "GET /metrics", "GET /healthz", "GET /readyz"} <= tested, tested
    assert not any("DELETE" in name for name in tested)
    # The daemon survived the run, answers, and logged no unhandled error.
    assert daemon.daemon is not None and daemon.daemon.poll() is None
    assert httpx.get(f"{daemon.base_url}/healthz", timeout=5.0).status_code == 200
    assert "http.unhandled" not in daemon.daemon_logs()
    assert daemon.stop_daemon() == 0
