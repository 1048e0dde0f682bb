"""Migrations never hide lost writes, and tenants cannot fill the host (audit M7, M8, M9),
on real Docker with real MariaDB and PostgreSQL tenants.

- A MariaDB rollout SIGKILLed in the middle of a step (after its first DDL
  statement committed) leaves the tenant ``migrating`` with that step named;
  the next run restores the *dead* rollout's pre-migration backup (never a
  backup of the half-migrated database), then migrates, and says so.
- While a tenant is migrated its application logins are refused and their
  open sessions ended; afterwards they work again, and ``tenant show`` says
  when writes were fenced and for how long (PostgreSQL and MariaDB).
- A tenant container's log rotates with the configured size and count, and the
  health monitor exports the bytes its volume holds.

Tenant ids start with ``mgf-``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import docker
import pymysql
import pytest

from cloner.app import App
from cloner.daemon.health import HealthMonitor
from cloner.domain import Status, Tenant, container_name
from cloner.engines.base import TenantTarget
from cloner.migrations.status import migration_status
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import target_of
from tests.migration_support import (
    assert_same_schema,
    provision_versions,
    reach,
    rollout,
    version_in_db,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ACTOR = "cli:mgf-test"
REPO = Path(__file__).resolve().parents[2]
CLONER = Path(sys.executable).with_name("cloner")
_ER_ACCOUNT_HAS_BEEN_LOCKED = 4151


# ------------------------------------------------------------------ helpers


def set_script(templates: Path, engine: str, step: str, direction: str, text: str) -> None:
    """Replace a migration file of ``engine`` and update its manifest to match."""
    folder = templates / engine / "migrations"
    (folder / step / f"{direction}.sql").write_text(text)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["steps"][step]["files"][f"{direction}.sql"] = hashlib.sha256(
        text.encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def after_first_statement(script: str, statement: str) -> str:
    """``script`` with ``statement`` inserted after its first ``;``-terminated statement."""
    head, sep, tail = script.partition(";\n")
    assert sep, "the script has no statement"
    return f"{head};\n{statement}\n{tail}"


@pytest.fixture
async def app_on_copy(tmp_path: Path) -> AsyncIterator[App]:
    """A real App whose templates dir is a private copy the test may change."""
    require_docker()
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    settings = make_settings(tmp_path / "data", templates_dir=templates,
                             tenant_log_max_size="5m", tenant_log_max_files=2)
    async with App.open(settings) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


async def tenant_of(app: App, tenant_id: str) -> Tenant:
    """The tenant's registry row."""
    return await TenantService(app).get(tenant_id)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def mysql_login(target: TenantTarget, role: str) -> aiomysql.Connection:
    """A real connection as one of the tenant's MariaDB accounts."""
    cred = target.credentials.roles[role]
    return await aiomysql.connect(
        host=target.endpoint.host, port=target.endpoint.port, user=cred.username,
        password=cred.password, db=target.database, autocommit=True, connect_timeout=5)


async def pg_login(target: TenantTarget, role: str) -> asyncpg.Connection:
    """A real connection as one of the tenant's PostgreSQL roles."""
    cred = target.credentials.roles[role]
    return await asyncpg.connect(
        host=target.endpoint.host, port=target.endpoint.port, user=cred.username,
        password=cred.password, database=target.database, timeout=5, ssl=False)


async def mysql_rows(target: TenantTarget, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run as the tenant's owner account."""
    conn = await mysql_login(target, "owner")
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return [tuple(r) for r in await cur.fetchall()]
    finally:
        conn.close()


def age_running_rollouts(control_plane: Path) -> None:
    """Let the heartbeat of every running rollout go stale, as 30 s after its process died."""
    with sqlite3.connect(control_plane) as db:
        db.execute("UPDATE rollouts SET heartbeat_at = heartbeat_at - 3600 "
                   "WHERE status = 'running'")


def cli_env(app: App) -> dict[str, str]:
    """Environment for `cloner …` subprocesses on this app's data dir and templates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env.update({
        "CLONER_DATA_DIR": str(app.settings.data_dir),
        "CLONER_TEMPLATES_DIR": str(app.settings.templates_dir),
        "CLONER_MYSQL_IMAGE": app.settings.mysql_image,
        "CLONER_POSTGRES_IMAGE": app.settings.postgres_image,
        "CLONER_LOG_FORMAT": "json",
    })
    return env


# -------------------------------------------------------------------- M7


async def test_mysql_rollout_killed_mid_step_restores_its_own_backup_next_run(
    app_on_copy: App,
) -> None:
    """SIGKILL while v1.0-v1.1 up sleeps after its first CREATE TABLE committed: the
    tenant stays migrating with the step named and its logins fenced; the next rollout
    restores the dead rollout's backup (the one taken before the step), migrates to v1.1
    and reports `restored` as its recovery. On the old code the next run backed up the
    half-migrated database, failed on the existing table and "restored" that copy."""
    app = app_on_copy
    templates = app.settings.templates_dir
    good_up = (templates / "mysql/migrations/v1.0-v1.1/up.sql").read_text()
    set_script(templates, "mysql", "v1.0-v1.1", "up",
               after_first_statement(good_up, "DO SLEEP(120);"))
    await provision_versions(app, "mysql", [("mgf-kill", "v1.0", "finance"),
                                            ("mgf-fresh", "v1.1", "finance")], ACTOR)
    _hooks, target = await reach(app, "mgf-kill")
    app_conn = await mysql_login(target, "app")
    async with app_conn.cursor() as cur:
        await cur.execute("INSERT INTO organizations (slug, name) VALUES ('kept', 'Kept')")
    app_conn.close()

    proc = await asyncio.create_subprocess_exec(
        str(CLONER), "migrate", "--to", "v1.1", "--engine", "mysql", "--tenant", "mgf-kill",
        "--json", env=cli_env(app), cwd=app.settings.data_dir,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async def half_applied() -> bool:
            tenant = await tenant_of(app, "mgf-kill")
            if not tenant.migration or tenant.migration.get("phase") != "step":
                return False
            return bool(await mysql_rows(
                target, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                        f"'{target.database}' AND TABLE_NAME = 'customers'"))
        await until(half_applied, 120, "the first statement of the step to commit")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    dead = await tenant_of(app, "mgf-kill")
    assert dead.status is Status.MIGRATING
    assert dead.migration is not None
    assert (dead.migration["phase"], dead.migration["step"]) == ("step", "v1.0-v1.1 up")
    dead_backup = dead.migration["backup"]["path"]
    assert Path(dead_backup).is_file()
    assert dead.logins_fenced
    hooks, target = await reach(app, "mgf-kill")
    state = await hooks.migration_state(target)
    assert (state.current_version, state.in_progress) == ("v1.0", "v1.0-v1.1:up")
    with pytest.raises(pymysql.err.OperationalError) as refused:
        await mysql_login(target, "app")
    assert refused.value.args[0] == _ER_ACCOUNT_HAS_BEEN_LOCKED

    # The process is gone; its heartbeat stops. A fixed script, and the next run.
    set_script(templates, "mysql", "v1.0-v1.1", "up", good_up)
    await asyncio.to_thread(age_running_rollouts, app.settings.control_plane_path)
    result = await rollout(app, "mysql", "v1.1", "mgf-kill", actor=ACTOR)

    [done] = result.results
    assert done.outcome.value == "migrated", done.as_dict()
    assert done.recovery is not None
    assert done.recovery["action"] == "restored"
    assert done.recovery["interrupted_step"] == "v1.0-v1.1 up"
    assert done.recovery["backup"] == dead_backup
    assert [(s["step"], s["direction"]) for s in done.steps] == [
        ("backup", "restore"), ("v1.0-v1.1", "up")]
    tenant = await tenant_of(app, "mgf-kill")
    assert (tenant.status, tenant.template_version, tenant.migration) == (
        Status.READY, "v1.1", None)
    assert not tenant.logins_fenced
    assert await version_in_db(app, "mgf-kill") == "v1.1"
    await assert_same_schema(app, "mgf-fresh", "mgf-kill")
    app_conn = await mysql_login(target, "app")
    async with app_conn.cursor() as cur:
        await cur.execute("SELECT name FROM organizations WHERE slug = 'kept'")
        assert await cur.fetchall() == (("Kept",),)
    app_conn.close()

    steps = await app.control_plane.migrations.steps_of("mgf-kill")
    restore = next(s for s in steps if s["direction"] == "restore")
    assert restore["detail"]["backup"] == dead_backup
    assert restore["detail"]["interrupted_step"] == "v1.0-v1.1 up"
    status = await migration_status(app.control_plane, "mysql")
    row = next(t for t in status["tenants"] if t["tenant_id"] == "mgf-kill")
    assert row["last_migration"]["recovery"]["action"] == "restored"
    kinds = [e["kind"] for e in await app.control_plane.events("mgf-kill")]
    assert "migration_recovered" in kinds


# -------------------------------------------------------------------- M8


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
async def test_app_logins_are_fenced_while_a_tenant_is_migrated(
    app_on_copy: App, engine: str,
) -> None:
    """During a step (which sleeps) an open app session has been ended and a new app
    login is refused; after the migration app logins work again and `tenant show` says
    when writes were fenced and for how long."""
    app = app_on_copy
    templates = app.settings.templates_dir
    tenant_id = f"mgf-fence-{'pg' if engine == 'postgres' else 'my'}"
    sleep = "SELECT pg_sleep(4);" if engine == "postgres" else "DO SLEEP(4);"
    up = (templates / engine / "migrations/v1.0-v1.1/up.sql").read_text()
    set_script(templates, engine, "v1.0-v1.1", "up", after_first_statement(up, sleep))
    await provision_versions(app, engine, [(tenant_id, "v1.0", "none")], ACTOR)
    target = await target_of(app, await tenant_of(app, tenant_id))

    if engine == "postgres":
        session: Any = await pg_login(target, "app")
        assert await session.fetchval("SELECT 1") == 1
    else:
        session = await mysql_login(target, "app")
        async with session.cursor() as cur:
            await cur.execute("SELECT 1")

    migrating = asyncio.create_task(rollout(app, engine, "v1.1", tenant_id, actor=ACTOR))

    async def in_step() -> bool:
        flight = (await tenant_of(app, tenant_id)).migration or {}
        return flight.get("phase") == "step"
    await until(in_step, 60, "the migration step")
    fenced = await tenant_of(app, tenant_id)
    assert fenced.logins_fenced and fenced.status is Status.MIGRATING

    if engine == "postgres":
        # Terminated by the server (asyncpg may have noticed the closed socket already).
        with pytest.raises((asyncpg.exceptions.AdminShutdownError,
                            asyncpg.exceptions.ConnectionDoesNotExistError,
                            asyncpg.exceptions.InterfaceError)):
            await session.fetchval("SELECT 1")
        with pytest.raises(asyncpg.exceptions.InvalidAuthorizationSpecificationError,
                           match="not permitted to log in"):
            await pg_login(target, "app")
        with pytest.raises(asyncpg.exceptions.InvalidAuthorizationSpecificationError):
            await pg_login(target, "readonly")
        await session.close()
    else:
        with pytest.raises(pymysql.err.OperationalError):
            async with session.cursor() as cur:
                await cur.execute("SELECT 1")
        for role in ("app", "readonly"):
            with pytest.raises(pymysql.err.OperationalError) as refused:
                await mysql_login(target, role)
            assert refused.value.args[0] == _ER_ACCOUNT_HAS_BEEN_LOCKED
        session.close()

    result = await migrating
    assert [r.outcome.value for r in result.results] == ["migrated"]
    if engine == "postgres":
        after = await pg_login(target, "app")
        assert await after.fetchval("SELECT count(*) FROM customers") == 0
        await after.close()
    else:
        after = await mysql_login(target, "app")
        async with after.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM customers")
            assert await cur.fetchall() == ((0,),)
        after.close()

    service = TenantService(app)
    shown = await service.to_json(await service.get(tenant_id), reveal=False, events=True)
    fence = shown["writes_fenced"]
    assert fence["since"] and fence["until"] and fence["rollout"] == result.rollout_id
    assert fence["seconds"] >= 4
    assert shown["migration"] is None
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds.index("writes_fenced") < kinds.index("backup") < kinds.index("writes_unfenced")


# -------------------------------------------------------------------- M9


async def test_container_log_rotates_and_volume_bytes_are_exported(app_on_copy: App) -> None:
    """The tenant container's json-file log has the configured max-size/max-file, and one
    health pass exports the bytes its volume holds and the data dir's free space."""
    app = app_on_copy
    await provision_versions(app, "postgres", [("mgf-disk", "v1.0", "none")], ACTOR)

    def log_config() -> dict[str, Any]:
        client = docker.from_env()
        try:
            attrs = client.api.inspect_container(container_name("mgf-disk"))
        finally:
            client.close()
        return dict(attrs["HostConfig"]["LogConfig"])

    assert await asyncio.to_thread(log_config) == {
        "Type": "json-file", "Config": {"max-size": "5m", "max-file": "2"}}

    await HealthMonitor(app).check_once()
    registry = app.metrics.registry
    used = registry.get_sample_value("cloner_tenant_volume_bytes",
                                     {"tenant": "mgf-disk", "engine": "postgres"})
    assert used is not None and used > 10 * 1024 * 1024  # a PostgreSQL cluster, at least
    assert registry.get_sample_value("cloner_tenant_volume_quota_bytes") == (
        app.settings.tenant_volume_quota_bytes)
    free = registry.get_sample_value("cloner_data_dir_free_bytes")
    assert free is not None and free > 0
