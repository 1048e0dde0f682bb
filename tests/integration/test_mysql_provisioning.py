"""Real Docker, real MariaDB: provisioning, grants, isolation, hardening, backups, failures."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomysql
import pymysql
import pytest

from cloner.app import App
from cloner.domain import Credentials, Endpoint, Engine, Industry, Status
from cloner.domain import container_name as container_of
from cloner.domain import volume_name as volume_of
from cloner.engines import TenantTarget, get_engine
from cloner.engines.mysql import MysqlEngine, grant_pattern
from cloner.errors import BackupError
from cloner.logging import configure_logging
from cloner.secrets import generate_credentials
from cloner.tenants import TenantService
from cloner.validation import validate_templates
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

INDUSTRY_TABLE = {
    "technology": "software_licenses",
    "healthcare": "medical_procedures",
    "finance": "accounts",
}


async def provision(app: App, specs: list[tuple[str, str, str | None]]) -> None:
    """Enqueue mysql tenants (id, industry, version) and run workers until all finish."""
    service = TenantService(app)
    requests = [await service.create(t, "mysql", ind, ver) for t, ind, ver in specs]
    await run_workers(app, [r.id for r in requests], workers=3)


@asynccontextmanager
async def session(
    target: TenantTarget, user: str, password: str, *, database: str | None = None,
    endpoint: Endpoint | None = None,
) -> AsyncIterator[aiomysql.Cursor]:
    """A cursor on a real connection, closed afterwards."""
    where = endpoint or target.endpoint
    conn = await aiomysql.connect(host=where.host, port=where.port, user=user,
                                  password=password, db=database, autocommit=True,
                                  connect_timeout=5)
    try:
        async with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def as_role(target: TenantTarget, role: str, **kwargs: object) -> AsyncIterator[aiomysql.Cursor]:
    """A session as one of the tenant's accounts, in its database unless told otherwise."""
    cred = target.credentials.roles[role]
    kwargs.setdefault("database", target.database)
    return session(target, cred.username, cred.password, **kwargs)  # type: ignore[arg-type]


def as_root(target: TenantTarget) -> AsyncIterator[aiomysql.Cursor]:
    """A session as the tenant server's root, with the rotated password."""
    return session(target, "root", target.credentials.superuser.password)


async def fetch(cur: aiomysql.Cursor, sql: str, args: object = None) -> list[tuple[object, ...]]:
    """Execute and fetch everything."""
    await cur.execute(sql, args)
    return list(await cur.fetchall())


def code_of(excinfo: pytest.ExceptionInfo[pymysql.err.MySQLError]) -> int:
    """The server error number of a caught error."""
    return int(excinfo.value.args[0])


async def test_three_industries_concurrently_ready_isolated_and_least_privileged(
    docker_app: App,
) -> None:
    """Three concurrent tenants are ready with their overlay, refuse each other, and each
    account can do exactly what its role allows."""
    app = docker_app
    await provision(app, [("my-tech-a", "technology", None), ("my-health-b", "healthcare", None),
                          ("my-fin-c", "finance", "v1.0")])
    tenants = {t.tenant_id: t for t in await app.control_plane.list_tenants()}
    assert {t.status for t in tenants.values()} == {Status.READY}, [t.error for t in
                                                                    tenants.values()]
    assert all(t.isolation is not None and t.isolation.passed for t in tenants.values())
    checks = {c.name for c in tenants["my-tech-a"].isolation.checks}  # type: ignore[union-attr]
    assert {"roles_not_privileged", "app_cannot_escalate", "public_has_no_privileges",
            "other_tenants_refuse_credentials", "app_sees_own_schema_only"} <= checks
    targets = {tid: await target_of(app, t) for tid, t in tenants.items()}

    for tid, industry in (("my-tech-a", "technology"), ("my-health-b", "healthcare"),
                          ("my-fin-c", "finance")):
        async with as_role(targets[tid], "app") as cur:
            present = {str(r[0]) for r in await fetch(cur, "SHOW TABLES")}
            assert INDUSTRY_TABLE[industry] in present
            assert not (set(INDUSTRY_TABLE.values()) - {INDUSTRY_TABLE[industry]}) & present
            rows = await fetch(cur, "SELECT kind, name, version, checksum FROM schema_info "
                                    "ORDER BY id")
            assert [(r[0], r[1]) for r in rows] == [("root", "mysql"), ("overlay", industry)]
            assert rows[0][2] == tenants[tid].template_version
            assert all(len(str(r[3])) == 64 for r in rows)
            databases = {str(r[0]) for r in await fetch(cur, "SHOW DATABASES")}
            assert databases == {"information_schema", targets[tid].database}

    # v1.0 lacks the commerce tables of v1.1; the finance ledger matches its balances.
    async with as_role(targets["my-fin-c"], "owner") as cur:
        assert await fetch(cur, "SHOW TABLES LIKE 'orders'") == []
        mismatched = await fetch(
            cur, "SELECT a.account_number FROM accounts a JOIN transactions t "
                 "ON t.account_id = a.id GROUP BY a.id, a.balance HAVING a.balance <> "
                 "SUM(IF(t.kind = 'credit', t.amount, -t.amount))")
        assert mismatched == []

    # A's credentials are refused by B's endpoint (logins are server-wide in MariaDB).
    a, b = targets["my-tech-a"], targets["my-health-b"]
    for role in ("owner", "app", "readonly"):
        with pytest.raises(pymysql.err.OperationalError) as refused:
            async with as_role(a, role, database=None, endpoint=b.endpoint):
                pass
        assert code_of(refused) == 1045

    # readonly reads but cannot write.
    async with as_role(a, "readonly") as cur:
        assert (await fetch(cur, "SELECT COUNT(*) FROM software_licenses"))[0][0] == 6
        with pytest.raises(pymysql.err.OperationalError) as denied:
            await cur.execute("INSERT INTO system_settings (`key`, value) VALUES ('x', '1')")
        assert code_of(denied) == 1142

    # app writes, cannot escalate, cannot rewrite the template record.
    async with as_role(a, "app") as cur:
        await cur.execute("INSERT INTO system_settings (`key`, value) VALUES ('k', '1')")
        for statement, expected in (
            ("CREATE USER evil", 1227),
            ("CREATE DATABASE evil", 1044),
            ("SELECT * FROM mysql.global_priv", 1142),
            ("SELECT 1 INTO OUTFILE '/tmp/evil'", 1227),
            ("SET GLOBAL max_connections = @@GLOBAL.max_connections", 1227),
            ("GRANT SELECT ON *.* TO CURRENT_USER", 1045),
            ("DELETE FROM schema_info", 1142),
            ("UPDATE schema_info SET checksum = REPEAT('0', 64)", 1142),
        ):
            with pytest.raises(pymysql.err.MySQLError) as refused_stmt:
                await cur.execute(statement)
            assert code_of(refused_stmt) == expected, statement
        assert (await fetch(cur, "SELECT LOAD_FILE('/etc/passwd')"))[0][0] is None
        assert len(await fetch(cur, "SELECT kind FROM schema_info")) == 2

        # The templates' constraints hold, translated: case-sensitive patterns, JSON
        # shapes, one default profile per user, computed order lines.
        await cur.execute("INSERT INTO organizations (slug, name) VALUES ('acme', 'Acme')")
        for bad in ("INSERT INTO organizations (slug, name) VALUES ('Acme2', 'Acme')",
                    "INSERT INTO organizations (slug, name, settings) VALUES ('x', 'X', '[]')",
                    "INSERT INTO organizations (slug, name) VALUES ('y', '   ')"):
            with pytest.raises(pymysql.err.OperationalError) as violated:
                await cur.execute(bad)
            assert code_of(violated) == 4025, bad  # CONSTRAINT ... failed
        org = (await fetch(cur, "SELECT id FROM organizations WHERE slug = 'acme'"))[0][0]
        assert len(str(org)) == 36
        await cur.execute("INSERT INTO users (organization_id, email, display_name) "
                          "VALUES (%s, 'a@acme.test', 'A')", (org,))
        user = (await fetch(cur, "SELECT id FROM users"))[0][0]
        await cur.execute("INSERT INTO hdt_profiles (user_id, name, is_default) "
                          "VALUES (%s, 'one', TRUE), (%s, 'two', FALSE), (%s, 'three', FALSE)",
                          (user, user, user))
        with pytest.raises(pymysql.err.IntegrityError):
            await cur.execute("INSERT INTO hdt_profiles (user_id, name, is_default) "
                              "VALUES (%s, 'four', TRUE)", (user,))
        await cur.execute("SELECT * FROM hdt_profiles")
        columns = [d[0] for d in cur.description]
        assert "default_marker" not in columns  # invisible, like PostgreSQL's partial index

    # A table the owner creates later is usable by app (database-level grants).
    async with as_role(a, "owner") as cur:
        await cur.execute("CREATE TABLE later_added (id INT PRIMARY KEY)")
    async with as_role(a, "app") as cur:
        await cur.execute("INSERT INTO later_added VALUES (1)")


async def test_grant_on_my_a_does_not_reach_lookalike_schema_my_x_a(docker_app: App) -> None:
    """`_` in a grant is a wildcard: the tenant's grant is escaped, and the isolation proof
    catches an unescaped one."""
    app = docker_app
    await provision(app, [("my-a", "none", None)])
    tenant = await TenantService(app).get("my-a")
    target = await target_of(app, tenant)
    assert target.database == "my_a"
    driver = get_engine(Engine.MYSQL)

    async with as_root(target) as cur:
        grants = await fetch(cur, "SELECT DISTINCT Db FROM mysql.db WHERE User LIKE 'my\\_a\\_%'")
        assert grants == [("my\\_a",)]
        await cur.execute("CREATE DATABASE myXa")
        await cur.execute("CREATE TABLE myXa.secrets (v TEXT)")
        await cur.execute("INSERT INTO myXa.secrets VALUES ('lookalike data')")

    for role in ("owner", "app", "readonly"):
        async with as_role(target, role) as cur:
            with pytest.raises(pymysql.err.OperationalError) as denied:
                await cur.execute("SELECT v FROM myXa.secrets")
            assert code_of(denied) == 1142, role
            databases = {str(r[0]) for r in await fetch(cur, "SHOW DATABASES")}
            assert "myXa" not in databases
        with pytest.raises(pymysql.err.OperationalError) as no_db:
            async with as_role(target, role, database="myXa"):
                pass
        assert code_of(no_db) == 1044

    # The same grant unescaped (what a naive GRANT ON `my_a`.* does) opens myXa.
    async with as_root(target) as cur:
        await cur.execute("CREATE USER 'my_probe'@'%' IDENTIFIED BY 'probe-password-1'")
        await cur.execute("GRANT SELECT ON `my_a`.* TO 'my_probe'@'%'")
    async with session(target, "my_probe", "probe-password-1") as cur:
        assert await fetch(cur, "SELECT v FROM myXa.secrets") == [("lookalike data",)]
    # ...and the isolation proof sees that grant pattern reach the tenant database.
    checks = {c.name: c for c in await driver.prove_isolation(target, [])}
    assert not checks["public_has_no_privileges"].passed
    assert "my_probe" in checks["public_has_no_privileges"].detail
    async with as_root(target) as cur:
        await cur.execute("DROP USER 'my_probe'@'%'")
    checks = {c.name: c for c in await driver.prove_isolation(target, [])}
    assert all(c.passed for c in checks.values()), checks
    assert grant_pattern(target.database) == "`my\\_a`"


async def test_container_hardened_bootstrap_secret_dead_and_socket_login_in_container_only(
    tmp_path: Path,
) -> None:
    """Non-root, read-only, capless, limited, 127.0.0.1 only; the bootstrap password opens
    nothing, over TCP or inside; no generated secret reaches the logs."""
    import docker

    require_docker()
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    settings = make_settings(tmp_path / "data")
    async with App.open(settings) as app:
        try:
            await provision(app, [("my-hard-a", "none", None), ("my-hard-b", "none", None)])
            tenant = await app.control_plane.get_tenant("my-hard-a")
            assert tenant is not None and tenant.status is Status.READY, tenant
            target = await target_of(app, tenant)
            creds = await app.services.credentials("my-hard-a")
            assert creds is not None
            client = docker.from_env()
            try:
                container = client.containers.get(container_of("my-hard-a"))
                attrs = container.attrs
                host = attrs["HostConfig"]
                assert attrs["Config"]["User"] == "999:999"
                assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
                assert host["SecurityOpt"] == ["no-new-privileges"]
                assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
                assert host["Memory"] == settings.tenant_memory_limit_bytes
                assert host["MemorySwap"] == settings.tenant_memory_limit_bytes
                assert host["PidsLimit"] == settings.tenant_pids_limit
                assert host["NanoCpus"] == settings.tenant_nano_cpus
                bindings = [b for bs in host["PortBindings"].values() for b in bs]
                assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
                assert list(attrs["NetworkSettings"]["Networks"]) == [settings.tenant_network]
                assert [(m["Type"], m["Name"]) for m in attrs["Mounts"]] == [
                    ("volume", volume_of("my-hard-a"))]
                assert attrs["Config"]["Labels"]["cloner.install"] == app.install_id
                for cred in creds.roles.values():
                    assert cred.password not in json.dumps(attrs)
                assert creds.superuser.password not in json.dumps(attrs)

                # The bootstrap password in `docker inspect` is dead over TCP...
                env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
                bootstrap = env["MARIADB_ROOT_PASSWORD"]
                assert bootstrap == creds.bootstrap_password
                with pytest.raises(pymysql.err.OperationalError) as dead:
                    async with session(target, "root", bootstrap):
                        pass
                assert dead.value.args[0] == 1045
                # ...and inside the container, where root@localhost had it too.
                inside = container.exec_run(
                    ["mariadb", "--protocol=socket", "-uroot", f"-p{bootstrap}", "-e", "SELECT 1"],
                    user="999:999")
                assert inside.exit_code != 0 and b"Access denied" in inside.output
                # The socket account answers to the server's own uid only.
                own = container.exec_run(["mariadb", "--protocol=socket", "-umysql", "-N", "-e",
                                          "SELECT CURRENT_USER()"], user="999:999")
                assert own.exit_code == 0 and own.output.strip() == b"mysql@localhost"
                other = container.exec_run(["mariadb", "--protocol=socket", "-umysql", "-e",
                                            "SELECT 1"], user="1234:1234")
                assert other.exit_code != 0

                # Sized for density: the buffer pool the settings ask for, no perf schema.
                async with as_root(target) as cur:
                    pool, perf = (await fetch(
                        cur, "SELECT @@innodb_buffer_pool_size, @@performance_schema"))[0]
                assert int(pool) == settings.mysql_innodb_buffer_pool_mb * 2**20
                assert int(perf) == 0

                # Inter-container traffic is off: my-hard-a cannot reach my-hard-b's port.
                other_ip = client.containers.get(container_of("my-hard-b")).attrs[
                    "NetworkSettings"]["Networks"][settings.tenant_network]["IPAddress"]
                probe = container.exec_run(
                    ["bash", "-c",
                     f"timeout 3 bash -c 'echo > /dev/tcp/{other_ip}/3306' && echo OPEN"],
                    user="999:999")
                assert b"OPEN" not in probe.output
            finally:
                client.close()
            request = await TenantService(app).delete("my-hard-a", purge=True)
            await run_workers(app, [request.id], workers=1)
        finally:
            await remove_owned(app)
    output = stream.getvalue()
    assert "provision.ready" in output
    for secret in creds.all_secrets():
        assert secret not in output


async def test_delete_backup_restores_with_same_rows_and_restore_is_idempotent(
    docker_app: App,
) -> None:
    """delete → verified gzip mariadb-dump; restoring it elsewhere gives the same rows; a
    second restore is a no-op; a database with foreign tables is refused."""
    app = docker_app
    service = TenantService(app)
    await provision(app, [("my-back-a", "healthcare", None)])
    tenant = await service.get("my-back-a")
    target = await target_of(app, tenant)
    async with as_role(target, "app") as cur:
        await cur.executemany(
            "INSERT INTO customers (email, name) VALUES (%s, %s)",
            [(f"c{i}@example.com", f"Customer {i}") for i in range(250)])
        await cur.execute("INSERT INTO organizations (slug, name) VALUES ('org', 'Org')")
        await cur.execute("INSERT INTO users (organization_id, email, display_name) "
                          "SELECT id, 'u@org.test', 'U' FROM organizations")
        await cur.execute("INSERT INTO hdt_profiles (user_id, name, is_default) "
                          "SELECT id, 'p', TRUE FROM users")
    engine = get_engine(tenant.engine)
    before = await engine.row_counts(target)
    assert before["customers"] == 250 and before["hdt_profiles"] == 1

    request = await service.delete("my-back-a", purge=False)
    await run_workers(app, [request.id], workers=1)
    tenant = await service.get("my-back-a")
    assert tenant.status is Status.DEPROVISIONED, tenant.error
    assert tenant.backup is not None
    dump = Path(tenant.backup["path"])
    assert dump.stat().st_mode & 0o777 == 0o600
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == tenant.backup["sha256"]
    assert dump.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    assert tenant.backup["restorable_entries"] == len(before)
    text = gzip.decompress(dump.read_bytes()).decode()
    assert "CREATE TABLE `customers`" in text and text.rstrip().splitlines()[-1].startswith(
        "-- Dump completed")
    assert await app.runtime.inspect(container_of("my-back-a")) is None
    assert await app.runtime.volume_exists(volume_of("my-back-a"))

    # Restore into a scratch tenant of the same version, emptied first.
    await provision(app, [("my-restore-a", "none", tenant.template_version)])
    scratch = await target_of(app, await service.get("my-restore-a"))
    with pytest.raises(BackupError, match="already holds tables"):
        await engine.restore(app.runtime, scratch, dump)
    async with as_root(scratch) as cur:
        await cur.execute(f"DROP DATABASE {scratch.database}")
    await engine.restore(app.runtime, scratch, dump)
    after = await engine.row_counts(scratch)
    assert after == before
    # A second run of the same restore finds it done and leaves the data alone.
    async with as_root(scratch) as cur:
        await cur.execute(f"INSERT INTO {scratch.database}.customers (name) VALUES ('later')")
    await engine.restore(app.runtime, scratch, dump)
    assert (await engine.row_counts(scratch))["customers"] == 251
    # The restored template record is intact; the generated column came back computed.
    async with as_root(scratch) as cur:
        rows = await fetch(cur, f"SELECT kind, name FROM {scratch.database}.schema_info "
                                "ORDER BY id")
        assert rows == [("root", "mysql"), ("overlay", "healthcare")]
        marker = await fetch(cur, f"SELECT default_marker FROM {scratch.database}.hdt_profiles")
        assert marker == [(1,)]

    # purge removes the volume, keeps the backup.
    request = await service.delete("my-back-a", purge=True)
    await run_workers(app, [request.id], workers=1)
    assert (await service.get("my-back-a")).status is Status.PURGED
    assert not await app.runtime.volume_exists(volume_of("my-back-a"))
    assert dump.exists()


async def test_interrupted_template_apply_is_started_over(docker_app: App) -> None:
    """A database left half-built (no complete schema_info) is rebuilt from scratch."""
    app = docker_app
    await provision(app, [("my-partial", "none", "v1.0")])
    base = await target_of(app, await TenantService(app).get("my-partial"))
    driver = MysqlEngine()
    roles = generate_credentials("my_partial_2").roles
    target = TenantTarget(base.tenant_id, "my_partial_2",
                          Endpoint(base.endpoint.host, base.endpoint.port, "my_partial_2"),
                          Credentials(base.credentials.superuser,
                                      base.credentials.bootstrap_password, roles),
                          base.container_name)
    async with as_root(target) as cur:
        await cur.execute("CREATE DATABASE my_partial_2")
        await cur.execute("CREATE TABLE my_partial_2.organizations (id INT PRIMARY KEY)")
        await cur.execute("CREATE TABLE my_partial_2.leftover (id INT PRIMARY KEY)")
    templates = app.catalog.resolve("mysql", "v1.1", Industry.FINANCE)
    await driver.apply_templates(target, templates)
    counts = await driver.row_counts(target)
    assert "leftover" not in counts and counts["accounts"] == 5 and counts["transactions"] == 7
    assert counts["schema_info"] == 2
    await driver.apply_templates(target, templates)  # applied: nothing happens
    assert await driver.row_counts(target) == counts


async def test_broken_template_fails_cleanly_and_leaves_nothing(tmp_path: Path) -> None:
    """A template with a syntax error fails at `template`, with the line; nothing remains."""
    require_docker()
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    broken = templates / "mysql" / "v9.0"
    broken.mkdir()
    (broken / "schema.sql").write_text(
        (templates / "mysql" / "v1.0" / "schema.sql").read_text()
        + "\nCREATE TABLE oops (id INT PRIMARY KEY,, name TEXT);\n"
    )
    manifest_path = templates / "mysql" / "versions.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["versions"]["v9.0"] = {
        "description": "broken on purpose", "released": "2026-11-27",
        "files": {"schema.sql": hashlib.sha256((broken / "schema.sql").read_bytes()).hexdigest()},
    }
    manifest_path.write_text(json.dumps(manifest))
    settings = make_settings(tmp_path / "data", templates_dir=templates)
    async with App.open(settings) as app:
        try:
            request = await TenantService(app).create("my-broken", "mysql", "none", "v9.0")
            await run_workers(app, [request.id], workers=1)
            tenant = await app.control_plane.get_tenant("my-broken")
            assert tenant is not None and tenant.status is Status.FAILED
            assert tenant.error is not None and tenant.error["step"] == "template"
            assert "syntax" in tenant.error["reason"] and "CREATE TABLE oops" in \
                tenant.error["reason"]
            finished = await app.control_plane.get_request(request.id)
            assert finished is not None and finished.attempts == 1  # permanent: no retry
            owned = await app.runtime.owned()
            assert owned.containers == () and owned.volumes == ()
        finally:
            await remove_owned(app)


SMELLY = """
CREATE TABLE schema_info (
    id BIGINT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(16) NOT NULL, name VARCHAR(64) NOT NULL,
    version VARCHAR(16) NOT NULL, checksum CHAR(64) NOT NULL,
    applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), duration_ms INT,
    UNIQUE (kind, name, version));
CREATE TABLE system_settings (`key` VARCHAR(255) PRIMARY KEY, value JSON NOT NULL);
CREATE TABLE organizations (id CHAR(36) NOT NULL DEFAULT (UUID()) PRIMARY KEY);
CREATE TABLE audit_trail (happened_at TIMESTAMP(6) NULL, what TEXT);
CREATE TABLE members (id INT PRIMARY KEY, api_key VARCHAR(64), password TEXT);
"""


async def test_template_validate_applies_mysql_and_reports(tmp_path: Path) -> None:
    """`template validate --engine mysql` applies every shipped combination on a scratch
    MariaDB cleanly, warns about design smells, and reports a broken version as an error."""
    require_docker()
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    manifest_path = templates / "mysql" / "versions.json"
    manifest = json.loads(manifest_path.read_text())
    broken_sql = SMELLY + "\nCREATE TABLE b (id INT,, x INT);\n"
    for version, sql in (("v8.0", SMELLY), ("v8.1", broken_sql)):
        (templates / "mysql" / version).mkdir()
        (templates / "mysql" / version / "schema.sql").write_text(sql)
        manifest["versions"][version] = {
            "description": "test", "released": "2026-11-27",
            "files": {"schema.sql": hashlib.sha256(sql.encode()).hexdigest()},
        }
    manifest_path.write_text(json.dumps(manifest))
    settings = make_settings(tmp_path / "data", templates_dir=templates)
    async with App.open(settings) as app:
        try:
            shipped = [await validate_templates(app, [Engine.MYSQL], v)
                       for v in ("v1.0", "v1.1", "v1.2")]
            smelly = await validate_templates(app, [Engine.MYSQL], "v8.0")
            broken = await validate_templates(app, [Engine.MYSQL], "v8.1")
            leftovers = await app.runtime.owned()
        finally:
            await remove_owned(app)
    for report in shipped:
        assert report.ok, report.errors
        assert report.warnings == []
        assert len(report.applied) == 4  # none + three overlays
    assert smelly.ok
    joined = "\n".join(smelly.warnings)
    assert "table audit_trail has no primary key" in joined
    assert "column members.password looks like a plaintext secret" in joined
    assert "column members.api_key looks like a plaintext secret" in joined
    assert not broken.ok
    assert any("syntax" in e for e in broken.errors)
    assert leftovers.containers == ()

