"""Chaos: SIGKILL the daemon at every provisioning step, restart it, and check it converges."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import docker
import pytest

from tests.acceptance.harness import CLONER, Cloner, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(420)]

# Kill right after the step before the target one is logged done: the SIGKILL
# lands as the target step starts (start, ready, template, rbac, verify, register).
KILL_AFTER = ["resolve", "start", "ready", "template", "rbac", "verify"]
KILLS = 12
CHAOS_ENV = {
    "CLONER_LOG_LEVEL": "debug",
    "CLONER_LEASE_TTL_S": "3",
    "CLONER_HEARTBEAT_INTERVAL_S": "1",
    "CLONER_RECONCILE_INTERVAL_S": "2",
    "CLONER_ORPHAN_GRACE_S": "6",
    "CLONER_BACKOFF_BASE_S": "0.2",
    "CLONER_BACKOFF_CAP_S": "2",
    "CLONER_WORKERS": "2",
}


def start(cloner: Cloner, log: Path) -> subprocess.Popen[bytes]:
    """Start ``cloner serve`` writing JSON logs to ``log`` (appending across restarts)."""
    with log.open("ab") as sink:
        return subprocess.Popen([str(CLONER), "serve"], env={**cloner.env, **CHAOS_ENV},
                                cwd=cloner.root, stdout=sink, stderr=sink)


def step_done(log: Path, tenant: str, step: str) -> bool:
    """True once the daemon logged ``step`` finished for ``tenant``."""
    for line in log.read_text(errors="replace").splitlines():
        if f'"{tenant}"' not in line or "provision.step_done" not in line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("tenant_id") == tenant and event.get("step") == step:
            return True
    return False


def test_sigkill_at_every_step_converges(cloner: Cloner, tmp_path: Path) -> None:
    """12 SIGKILLs across start…register; after restarts every tenant is ready or failed."""
    log = tmp_path / "daemon.log"
    killed: dict[str, str] = {}
    for n in range(KILLS):
        after = KILL_AFTER[n % len(KILL_AFTER)]
        tenant = f"crash-{n:02d}"
        daemon = start(cloner, log)
        proc = cloner.cli("tenant", "create", tenant, "--engine", "postgres",
                          "--industry", ["technology", "healthcare", "finance", "none"][n % 4])
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda t=tenant, a=after, d=daemon: step_done(log, t, a) or d.poll() is not None,
                 90.0, f"{tenant} to finish {after}", interval_s=0.02)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        killed[tenant] = after

    # A last, undisturbed daemon finishes the work and reconciles.
    cloner.daemon = start(cloner, log)  # stopped by the fixture's cleanup

    def settled() -> bool:
        rows = cloner.query("SELECT count(*) FROM requests WHERE status IN "
                            "('queued', 'running')")
        return rows[0][0] == 0
    wait_for(settled, 180.0, "every request to finish")
    time.sleep(float(CHAOS_ENV["CLONER_ORPHAN_GRACE_S"]) + 3 *
               float(CHAOS_ENV["CLONER_RECONCILE_INTERVAL_S"]))
    tenants: list[dict[str, Any]] = json.loads(
        cloner.cli("tenant", "list", "--json").stdout)
    assert {t["tenant_id"] for t in tenants} == set(killed)
    for t in tenants:
        assert t["status"] in ("ready", "failed"), t
        if t["status"] == "failed":
            assert t["error"] and t["error"]["step"] and t["error"]["reason"], t
    ready = [t for t in tenants if t["status"] == "ready"]
    # Each kill only delays its tenant: with retries every one of them gets there.
    assert len(ready) == KILLS, [(t["tenant_id"], t["error"]) for t in tenants]

    client = docker.from_env(timeout=30)
    try:
        flt = {"label": [f"cloner.install={cloner.install_id}"]}
        containers = client.containers.list(all=True, filters=flt)
        volumes = client.volumes.list(filters=flt)
        per_tenant: dict[str, int] = {}
        for c in containers:
            per_tenant[c.labels["cloner.tenant"]] = per_tenant.get(
                c.labels["cloner.tenant"], 0) + 1
        assert all(n == 1 for n in per_tenant.values()), per_tenant
        ready_ids = {t["tenant_id"] for t in ready}
        assert set(per_tenant) == ready_ids, "orphan or missing containers"
        assert {v.attrs["Labels"]["cloner.tenant"] for v in volumes} == ready_ids
        assert len(volumes) == len(ready_ids)
    finally:
        client.close()

    # No ready row without a working, isolated database.
    for t in ready:
        assert t["isolation"]["passed"] is True
        shown = cloner.cli_json("tenant", "show", t["tenant_id"], "--reveal", secret=True)
        rows = _run(_count_settings(shown["dsn"]["app"]))
        assert rows > 0


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


async def _count_settings(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10, ssl=False)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM system_settings"))
    finally:
        await conn.close()
