"""Acceptance: the `cloner` CLI and `cloner serve` as subprocesses, the way a user runs them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.harness import Cloner, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]

NO_DAEMON = "no daemon is running"
DESIGN_KEYS = {
    "tenant_id", "status", "engine", "industry", "template_version", "endpoint", "container",
    "roles", "dsn", "isolation", "timings", "error", "created_at", "updated_at",
}
METRIC_STEPS = {"start", "ready", "template", "rbac", "verify", "total"}


def assert_no_secrets(passwords: list[str], texts: list[str]) -> None:
    """None of ``passwords`` appears in any of ``texts``."""
    assert passwords and all(len(p) >= 8 for p in passwords)
    for i, text in enumerate(texts):
        for password in passwords:
            assert password not in text, f"a revealed password leaked into output #{i}"


def passwords_of(doc: dict[str, Any]) -> list[str]:
    """The three role passwords of a revealed tenant document."""
    return [doc["roles"][r]["password"] for r in ("owner", "app", "readonly")]


async def count_licenses(dsn: str) -> int:
    """``SELECT count(*) FROM software_licenses`` through a real DSN."""
    conn = await asyncpg.connect(dsn, timeout=10, ssl=False)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM software_licenses"))
    finally:
        await conn.close()


class Scrape:
    """One /metrics scrape: the raw text, family names and samples by sample name."""

    def __init__(self, base_url: str) -> None:
        response = httpx.get(f"{base_url}/metrics", timeout=5.0)
        assert response.status_code == 200
        self.text = response.text
        self.families: set[str] = set()
        self.samples: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(self.text):
            self.families.add(family.name)
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append(sample)


# ----------------------------------------------------------------------- tests


def test_cli_against_live_daemon(cloner: Cloner) -> None:
    """The CLI enqueues, the live daemon provisions; show/list/errors behave and leak nothing."""
    cloner.start_daemon()
    assert httpx.get(f"{cloner.base_url}/readyz", timeout=10.0).status_code == 200

    created = cloner.cli("tenant", "create", "acc-one", "--engine", "postgres",
                         "--industry", "technology", "--wait", "--timeout", "60", "--json")
    assert created.returncode == 0, created.stderr
    assert NO_DAEMON not in created.stderr, "the CLI worked the request itself"
    doc = json.loads(created.stdout)
    assert set(doc) >= DESIGN_KEYS, f"missing keys: {DESIGN_KEYS - set(doc)}"
    assert doc["tenant_id"] == "acc-one"
    assert doc["status"] == "ready"
    assert doc["engine"] == "postgres"
    assert doc["industry"] == "technology"
    assert isinstance(doc["template_version"], str) and doc["template_version"].startswith("v")
    assert set(doc["endpoint"]) == {"host", "port", "database"}
    assert doc["endpoint"]["host"] == "127.0.0.1"
    assert isinstance(doc["endpoint"]["port"], int)
    assert doc["endpoint"]["database"] == "acc_one"
    assert set(doc["container"]) == {"id", "name"}
    assert doc["container"]["name"] == "cloner-acc-one" and doc["container"]["id"]
    assert set(doc["roles"]) == {"owner", "app", "readonly"}
    for role in doc["roles"].values():
        assert set(role) == {"username", "password"}
        assert role["username"] and role["password"] is None
    assert set(doc["dsn"]) == {"owner", "app", "readonly"}
    assert all(v is None for v in doc["dsn"].values())
    assert doc["isolation"]["passed"] is True
    assert doc["isolation"]["checks"]
    assert all(set(c) >= {"name", "passed", "detail"} and c["passed"]
               for c in doc["isolation"]["checks"])
    assert doc["timings"]["total_s"] > 0
    assert {"start", "ready", "template", "rbac", "verify"} <= set(doc["timings"]["steps"])
    assert doc["error"] is None
    assert doc["created_at"] and doc["updated_at"]
    # The daemon, not the CLI, did the work.
    assert "acc-one" in cloner.daemon_logs()

    shown = cloner.cli_json("tenant", "show", "acc-one")
    assert shown["status"] == "ready"
    assert all(r["password"] is None for r in shown["roles"].values())
    assert all(v is None for v in shown["dsn"].values())

    revealed = cloner.cli_json("tenant", "show", "acc-one", "--reveal", secret=True)
    passwords = passwords_of(revealed)
    assert all(isinstance(p, str) and p for p in passwords)
    assert all(revealed["dsn"][r] for r in ("owner", "app", "readonly"))
    assert asyncio.run(count_licenses(revealed["dsn"]["app"])) > 0

    listed = cloner.cli_json("tenant", "list")
    assert [t["tenant_id"] for t in listed] == ["acc-one"]
    assert listed[0]["status"] == "ready"
    table = cloner.cli("tenant", "list")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("acc-one"))
    assert "ready" in row.split()

    again = cloner.cli("tenant", "create", "acc-one", "--engine", "postgres",
                       "--industry", "technology", "--wait")
    assert again.returncode == 2
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert "acc-one" in again.stderr
    missing = cloner.cli("tenant", "delete", "nosuch")
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr

    assert cloner.stop_daemon() == 0
    assert_no_secrets(passwords, [*cloner.outputs, cloner.daemon_logs()])


def test_http_api_and_metrics(cloner: Cloner) -> None:
    """HTTP API: auth, validation, create → ready, reveal, delete → backup; /metrics follows."""
    cloner.start_daemon()
    http = httpx.Client(base_url=cloner.base_url, timeout=10.0)
    auth = {"Authorization": f"Bearer {cloner.token}"}
    seen: list[str] = []  # non-secret HTTP bodies, checked for leaks at the end
    try:
        anon = http.get("/v1/tenants")
        assert anon.status_code == 401
        assert anon.headers["content-type"].startswith("application/problem+json")
        assert anon.json()["status"] == 401 and anon.json()["title"]
        wrong = http.get("/v1/tenants", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401

        empty = http.get("/v1/tenants", headers=auth)
        assert empty.status_code == 200
        assert empty.json() == {"tenants": []}

        bad = http.post("/v1/tenants", headers=auth, json={
            "tenant_id": "Bad_Id!", "engine": "postgres", "industry": "technology"})
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "Bad_Id!" in bad.json()["detail"]
        assert http.get("/v1/tenants", headers=auth).json() == {"tenants": []}
        assert cloner.query("SELECT count(*) FROM requests") == [(0,)]

        accepted = http.post("/v1/tenants", headers=auth, json={
            "tenant_id": "acc-http", "engine": "postgres", "industry": "technology"})
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["request_id"]
        assert accepted.json()["tenant_id"] == "acc-http"

        def tenant(**params: str) -> dict[str, Any]:
            response = http.get("/v1/tenants/acc-http", headers=auth, params=params)
            assert response.status_code == 200, response.text
            if not params:
                seen.append(response.text)
            return dict(response.json())

        def reached(*states: str) -> dict[str, Any] | None:
            doc = tenant()
            assert doc["status"] != "failed", doc["error"]
            return doc if doc["status"] in states else None

        ready = wait_for(lambda: reached("ready"), 60.0, "acc-http to be ready")
        assert ready["isolation"]["passed"] is True
        assert all(r["password"] is None for r in ready["roles"].values())
        assert all(v is None for v in ready["dsn"].values())
        revealed = tenant(reveal="true")
        passwords = passwords_of(revealed)
        assert all(passwords) and all(revealed["dsn"].values())

        listed = http.get("/v1/tenants", headers=auth)
        seen.append(listed.text)
        assert [t["tenant_id"] for t in listed.json()["tenants"]] == ["acc-http"]

        # /metrics after one provision.
        metrics = Scrape(cloner.base_url)
        seen.append(metrics.text)
        counts = metrics.samples["cloner_provision_duration_seconds_count"]
        steps = {s.labels["step"] for s in counts
                 if s.labels["engine"] == "postgres" and s.value >= 1}
        assert steps >= METRIC_STEPS, f"missing steps: {METRIC_STEPS - steps}"
        assert sum(s.value for s in metrics.samples["cloner_provisions_total"]
                   if s.labels["outcome"] == "success") >= 1
        assert {"cloner_queue_depth", "cloner_tenants"} <= metrics.families

        def tenants_ready() -> bool:
            scraped = Scrape(cloner.base_url)
            seen.append(scraped.text)
            samples = scraped.samples.get("cloner_tenants", [])
            return sum(s.value for s in samples if s.labels["state"] == "ready") >= 1

        wait_for(tenants_ready, 12.0, 'cloner_tenants{state="ready"} >= 1', interval_s=0.5)

        deleted = http.delete("/v1/tenants/acc-http", headers=auth)
        assert deleted.status_code == 202, deleted.text
        assert deleted.json()["request_id"]
        gone = wait_for(lambda: reached("deprovisioned"), 60.0, "acc-http to be deprovisioned")
        backup = gone["backup"]
        assert backup and Path(backup["path"]).is_file()
        assert Path(backup["path"]).stat().st_size > 0

        spec = http.get("/openapi.json")
        assert spec.status_code == 200
        assert "/v1/tenants" in spec.json()["paths"]
    finally:
        http.close()

    assert cloner.stop_daemon() == 0
    assert_no_secrets(passwords, [*seen, cloner.daemon_logs()])


def test_sigterm_stops_idle_daemon(cloner: Cloner) -> None:
    """SIGTERM on an idle daemon: exit 0 within 20 s and its row leaves the daemons table."""
    cloner.start_daemon()
    assert cloner.daemon is not None
    pid = cloner.daemon.pid
    wait_for(lambda: cloner.query("SELECT pid FROM daemons") == [(pid,)], 10.0,
             "the daemon's heartbeat row")
    started = time.monotonic()
    assert cloner.stop_daemon(timeout_s=20.0) == 0
    assert time.monotonic() - started < 20.0
    assert cloner.query("SELECT * FROM daemons") == []
    assert "daemon.stopped" in cloner.daemon_logs()
