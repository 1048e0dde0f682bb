"""Real Docker, real PostgreSQL: provisioning, isolation, hardening, backups, failures."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
from pathlib import Path

import asyncpg
import pytest

from cloner.app import App
from cloner.catalog import Catalog
from cloner.domain import Status, container_name, volume_name
from cloner.engines import TenantTarget, get_engine
from cloner.logging import configure_logging
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import connect, run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INDUSTRY_TABLE = {
    "technology": "software_licenses",
    "healthcare": "medical_procedures",
    "finance": "accounts",
}


async def provision(app: App, specs: list[tuple[str, str, str | None]]) -> None:
    """Enqueue tenants (id, industry, version) and run workers until all finish."""
    service = TenantService(app)
    requests = [await service.create(t, "postgres", ind, ver) for t, ind, ver in specs]
    await run_workers(app, [r.id for r in requests], workers=3)


async def test_three_industries_concurrently_ready_and_isolated(docker_app: App) -> None:
    """Three concurrent tenants are ready, carry their own overlay and refuse each other."""
    app = docker_app
    await provision(app, [("tech-a", "technology", None), ("health-b", "healthcare", None),
                          ("fin-c", "finance", "v1.0")])
    tenants = {t.tenant_id: t for t in await app.control_plane.list_tenants()}
    assert {t.status for t in tenants.values()} == {Status.READY}
    targets = {tid: await target_of(app, t) for tid, t in tenants.items()}
    assert all(t.isolation is not None and t.isolation.passed for t in tenants.values())

    # Each tenant has its own overlay table and only its own.
    for tid, industry in (("tech-a", "technology"), ("health-b", "healthcare"),
                          ("fin-c", "finance")):
        conn = await connect(targets[tid], "app")
        try:
            present = {
                r["tablename"] for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
            assert INDUSTRY_TABLE[industry] in present
            assert not (set(INDUSTRY_TABLE.values()) - {INDUSTRY_TABLE[industry]}) & present
            rows = await conn.fetch("SELECT kind, name, version, checksum FROM schema_info "
                                    "ORDER BY id")
            assert [(r["kind"], r["name"]) for r in rows] == [("root", "postgres"),
                                                               ("overlay", industry)]
            assert rows[0]["version"] == tenants[tid].template_version
            assert all(len(r["checksum"]) == 64 for r in rows)
        finally:
            await conn.close()

    # v1.0 lacks the commerce tables of v1.1.
    conn = await connect(targets["fin-c"], "owner")
    try:
        assert await conn.fetchval("SELECT to_regclass('public.orders')") is None
    finally:
        await conn.close()

    # A's app credentials are refused by B's endpoint, for B's database and A's.
    a, b = targets["tech-a"], targets["health-b"]
    for database in (b.database, a.database):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await connect(a, "app", database=database,
                          host_port=(b.endpoint.host, b.endpoint.port))

    # readonly reads but cannot write; app cannot escalate.
    ro = await connect(a, "readonly")
    try:
        assert await ro.fetchval("SELECT count(*) FROM software_licenses") > 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ro.execute("INSERT INTO system_settings (key, value) VALUES ('x', '1')")
    finally:
        await ro.close()
    app_conn = await connect(a, "app")
    try:
        await app_conn.execute("INSERT INTO system_settings (key, value) VALUES ('k', '1')")
        for statement in ("CREATE ROLE evil", "SELECT * FROM pg_authid",
                          "CREATE DATABASE evil", "SELECT pg_read_file('/etc/passwd')"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app_conn.execute(statement)
        # A table the owner creates later is usable by app (default privileges).
        owner = await connect(a, "owner")
        try:
            await owner.execute("CREATE TABLE later_added (id int PRIMARY KEY)")
        finally:
            await owner.close()
        await app_conn.execute("INSERT INTO later_added VALUES (1)")
    finally:
        await app_conn.close()


async def test_container_is_hardened_and_bootstrap_secret_dead(docker_app: App) -> None:
    """The tenant container runs non-root, read-only, capless, limited, on 127.0.0.1 only."""
    import docker

    app = docker_app
    await provision(app, [("hard-a", "none", None), ("hard-b", "none", None)])
    tenant = await app.control_plane.get_tenant("hard-a")
    assert tenant is not None and tenant.status is Status.READY
    client = docker.from_env()
    try:
        attrs = client.containers.get(container_name("hard-a")).attrs
        host = attrs["HostConfig"]
        assert attrs["Config"]["User"] == "999:999"
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["ReadonlyRootfs"] is True
        assert host["Privileged"] is False
        assert host["Memory"] == app.settings.tenant_memory_limit_bytes
        assert host["MemorySwap"] == app.settings.tenant_memory_limit_bytes
        assert host["PidsLimit"] == app.settings.tenant_pids_limit
        assert host["NanoCpus"] == app.settings.tenant_nano_cpus
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        bindings = [b for bs in host["PortBindings"].values() for b in bs]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
        assert list(attrs["NetworkSettings"]["Networks"]) == [app.settings.tenant_network]
        mounts = attrs["Mounts"]
        assert [m["Type"] for m in mounts] == ["volume"]
        assert mounts[0]["Name"] == volume_name("hard-a")
        labels = attrs["Config"]["Labels"]
        assert labels["cloner.tenant"] == "hard-a" and labels["cloner.install"] == app.install_id

        # The bootstrap password visible in `docker inspect` no longer opens the server.
        env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host="127.0.0.1", port=tenant.endpoint.port,  # type: ignore[union-attr]
                                  user="postgres", password=env["POSTGRES_PASSWORD"],
                                  database="postgres", timeout=5, ssl=False)
        target = await target_of(app, tenant)
        for cred in target.credentials.roles.values():
            assert cred.password not in json.dumps(attrs)

        # Inter-container traffic is off: hard-a cannot reach hard-b's server port.
        other_ip = client.containers.get(container_name("hard-b")).attrs[
            "NetworkSettings"]["Networks"][app.settings.tenant_network]["IPAddress"]
        probe = client.containers.get(container_name("hard-a")).exec_run(
            ["bash", "-c", f"timeout 3 bash -c 'echo > /dev/tcp/{other_ip}/5432' && echo OPEN"],
            user="999:999",
        )
        assert b"OPEN" not in probe.output
        net = client.networks.get(app.settings.tenant_network)
        assert net.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    finally:
        client.close()


async def test_delete_takes_backup_that_restores_with_same_rows(docker_app: App) -> None:
    """delete → verified pg_dump backup; restoring it elsewhere gives the same row counts."""
    app = docker_app
    service = TenantService(app)
    await provision(app, [("back-a", "healthcare", None)])
    tenant = await service.get("back-a")
    target = await target_of(app, tenant)
    conn = await connect(target, "app")
    try:
        await conn.execute(
            "INSERT INTO customers (email, name) "
            "SELECT 'c' || g || '@example.com', 'Customer ' || g FROM generate_series(1, 250) g"
        )
    finally:
        await conn.close()
    engine = get_engine(tenant.engine)
    before = await engine.row_counts(target)
    assert before["customers"] == 250

    request = await service.delete("back-a", purge=False)
    await run_workers(app, [request.id], workers=1)
    tenant = await service.get("back-a")
    assert tenant.status is Status.DEPROVISIONED
    assert tenant.backup is not None
    dump = Path(tenant.backup["path"])
    assert dump.stat().st_mode & 0o777 == 0o600
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == tenant.backup["sha256"]
    # pg_restore --list read it back: one table-data entry per table at least.
    assert tenant.backup["restorable_entries"] >= len(before)
    assert await app.runtime.inspect(container_name("back-a")) is None
    assert await app.runtime.volume_exists(volume_name("back-a"))

    # Restore into a scratch tenant provisioned from the same template.
    await provision(app, [("restore-a", "none", tenant.template_version)])
    scratch = await target_of(app, await service.get("restore-a"))
    su = scratch.credentials.superuser
    admin = await asyncpg.connect(host=scratch.endpoint.host, port=scratch.endpoint.port,
                                  user=su.username, password=su.password,
                                  database=scratch.database, timeout=5, ssl=False)
    try:  # restore needs an empty schema: drop what the template created (the owner role
        # owns schema public, not the database, so it cannot re-create the schema itself)
        await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await admin.close()
    scratch_super = TenantTarget(scratch.tenant_id, scratch.database, scratch.endpoint,
                                 scratch.credentials, scratch.container_name)
    await engine.restore(app.runtime, scratch_super, dump)
    after = await engine.row_counts(scratch_super)
    assert after == before

    # purge removes the volume, keeps the backup.
    request = await service.delete("back-a", purge=True)
    await run_workers(app, [request.id], workers=1)
    assert (await service.get("back-a")).status is Status.PURGED
    assert not await app.runtime.volume_exists(volume_name("back-a"))
    assert dump.exists()


async def test_broken_template_fails_cleanly_and_leaves_nothing(tmp_path: Path) -> None:
    """A template with a syntax error fails at `template`; no container or volume remains."""
    require_docker()
    templates = tmp_path / "templates"
    shutil.copytree(Path(__file__).parents[2] / "templates", templates)
    broken = templates / "postgres" / "v9.0"
    broken.mkdir()
    (broken / "schema.sql").write_text(
        (templates / "postgres" / "v1.0" / "schema.sql").read_text()
        + "\nCREATE TABLE oops (id int PRIMARY KEY,, name text);\n"
    )
    manifest_path = templates / "postgres" / "versions.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["versions"]["v9.0"] = {
        "description": "broken on purpose", "released": "2026-11-27",
        "files": {"schema.sql": hashlib.sha256((broken / "schema.sql").read_bytes()).hexdigest()},
    }
    manifest_path.write_text(json.dumps(manifest))
    settings = make_settings(tmp_path / "data", templates_dir=templates)
    async with App.open(settings) as app:
        try:
            assert Catalog(templates, settings.industry_templates_dir).versions("postgres")[-1] \
                == "v9.0"
            request = await TenantService(app).create("broken-t", "postgres", "none", "v9.0")
            await run_workers(app, [request.id], workers=1)
            tenant = await app.control_plane.get_tenant("broken-t")
            assert tenant is not None and tenant.status is Status.FAILED
            assert tenant.error is not None and tenant.error["step"] == "template"
            assert "syntax error" in tenant.error["reason"]
            finished = await app.control_plane.get_request(request.id)
            assert finished is not None and finished.attempts == 1  # permanent: no retry
            owned = await app.runtime.owned()
            assert owned.containers == () and owned.volumes == ()
            failures = app.metrics.provisions.labels(
                engine="postgres", outcome="failure", error_class="TemplateError")
            assert failures._value.get() == 1
        finally:
            await remove_owned(app)


async def test_no_generated_secret_in_logs_or_registry_file(tmp_path: Path) -> None:
    """With debug logging, no generated password reaches the log or the control-plane file."""
    require_docker()
    stream = io.StringIO()
    settings = make_settings(tmp_path / "data")
    configure_logging("debug", "json", stream)
    async with App.open(settings) as app:
        try:
            await provision(app, [("secret-a", "finance", None)])
            tenant = await app.control_plane.get_tenant("secret-a")
            assert tenant is not None and tenant.status is Status.READY
            creds = await app.services.credentials("secret-a")
            assert creds is not None
            request = await TenantService(app).delete("secret-a", purge=True)
            await run_workers(app, [request.id], workers=1)
        finally:
            await remove_owned(app)
    output = stream.getvalue()
    assert "provision.ready" in output
    registry = await asyncio.to_thread(settings.control_plane_path.read_bytes)
    wal = settings.control_plane_path.with_name(settings.control_plane_path.name + "-wal")
    registry += wal.read_bytes() if wal.exists() else b""
    for secret in creds.all_secrets():
        assert secret not in output
        assert secret.encode() not in registry
