"""Real Docker: the isolation proof never hands a secret to another endpoint (audit H2),
and its cross-tenant check still fails when a neighbour would let a tenant's login in."""

from __future__ import annotations

import asyncio
import secrets

import aiomysql
import asyncpg
import docker
import pymysql
import pytest

from cloner.app import App
from cloner.daemon.health import HealthMonitor
from cloner.domain import CheckResult, Endpoint, Status, Tenant, container_name
from cloner.engines import TenantTarget
from cloner.engines.mysql import MysqlEngine
from tests.integration.helpers import provision_ready, target_of
from tests.integration.squatter import Squatter

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

CROSS_TENANT = "other_tenants_refuse_credentials"


async def _tenant(app: App, tenant_id: str) -> Tenant:
    tenant = await app.control_plane.get_tenant(tenant_id)
    assert tenant is not None
    return tenant


def _cross_tenant(tenant: Tenant) -> CheckResult:
    assert tenant.isolation is not None
    return next(c for c in tenant.isolation.checks if c.name == CROSS_TENANT)


def _stop(name: str) -> None:
    client = docker.from_env()
    try:
        client.containers.get(name).stop(timeout=10)
    finally:
        client.close()


PG_HBA = "/var/lib/postgresql/data/pg_hba.conf"
#: First line of a neighbour's pg_hba.conf: every TCP client sends its password in cleartext.
CLEARTEXT_HBA = "host all all 0.0.0.0/0 password"


def _exec(name: str, command: str) -> None:
    client = docker.from_env()
    try:
        code, output = client.containers.get(name).exec_run(["sh", "-c", command], user="999:999")
        assert code == 0, output
    finally:
        client.close()


async def _every_stored_secret(app: App) -> dict[str, str]:
    """Every password the registry holds (decrypted), keyed by where it belongs."""
    found: dict[str, str] = {}
    for tenant in await app.control_plane.list_tenants():
        creds = await app.services.credentials(tenant.tenant_id)
        assert creds is not None
        found[f"{tenant.tenant_id}/superuser"] = creds.superuser.password
        found[f"{tenant.tenant_id}/bootstrap"] = creds.bootstrap_password
        for role, cred in creds.roles.items():
            found[f"{tenant.tenant_id}/{role}"] = cred.password
        for i, secret in enumerate(creds.all_secrets()):  # whatever else it may hold
            found.setdefault(f"{tenant.tenant_id}/secret-{i}", secret)
    return found


async def _squat(app: App, tenant_id: str) -> Squatter:
    """Stop the tenant's container behind cloner's back and bind its freed port."""
    tenant = await _tenant(app, tenant_id)
    assert tenant.endpoint is not None and tenant.endpoint.port is not None
    await asyncio.to_thread(_stop, container_name(tenant_id))
    squatter = Squatter("127.0.0.1", tenant.endpoint.port)
    await squatter.start()
    return squatter


async def _postgres_superuser(target: TenantTarget) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=target.endpoint.host, port=target.endpoint.port, user="postgres",
        password=target.credentials.superuser.password, database="postgres", ssl=False,
        timeout=5,
    )


async def test_postgres_squatter_on_a_freed_port_receives_no_secret(docker_app: App) -> None:
    """A listener asking for cleartext on a stopped tenant's port gets nothing from
    provisioning a new tenant or from the health monitor's probes and re-proofs."""
    app = docker_app
    await provision_ready(app, "postgres", "prf-sq-x", "prf-sq-w")
    squatter = await _squat(app, "prf-sq-x")
    try:
        # The squatter works: a client that answers it hands over its password.
        decoy = "decoy-" + secrets.token_hex(8)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host=squatter.host, port=squatter.port, user="decoy",
                                  password=decoy, ssl=False, timeout=5)
        assert squatter.holds(decoy)

        await provision_ready(app, "postgres", "prf-sq-y")
        proof = _cross_tenant(await _tenant(app, "prf-sq-y"))
        await HealthMonitor(app).check_once(isolation=True)
    finally:
        await squatter.close()

    stored = await _every_stored_secret(app)
    leaked = sorted(where for where, secret in stored.items() if squatter.holds(secret))
    assert leaked == [], f"the squatter received {leaked} ({squatter.connections} connections)"
    # The proof asked the one neighbour cloner vouches for, and said why it skipped the other.
    assert proof.passed, proof.detail
    assert "asked prf-sq-w " in proof.detail
    assert "prf-sq-x (container cloner-prf-sq-x is exited)" in proof.detail
    # The health monitor did not trust the stale endpoint either: the tenant is degraded.
    assert (await _tenant(app, "prf-sq-x")).status is Status.DEGRADED
    assert (await _tenant(app, "prf-sq-y")).status is Status.READY


async def test_postgres_proof_fails_when_a_neighbour_would_let_the_tenant_in(
    docker_app: App,
) -> None:
    """A's owner name created on B, then B asking TCP clients for cleartext passwords:
    A's proof fails each time (naming B and why), and passes again once B is clean."""
    app = docker_app
    monitor = HealthMonitor(app)
    await provision_ready(app, "postgres", "prf-dt-a", "prf-dt-b")
    mine = await target_of(app, await _tenant(app, "prf-dt-a"))
    theirs = await target_of(app, await _tenant(app, "prf-dt-b"))
    owner = mine.credentials.roles["owner"].username
    conn = await _postgres_superuser(theirs)
    try:
        await conn.execute(f"CREATE ROLE \"{owner}\" LOGIN PASSWORD 'not-the-real-one'")
        await monitor.check_once(isolation=True)
        a = await _tenant(app, "prf-dt-a")
        check = _cross_tenant(a)
        assert not check.passed
        assert check.detail.startswith("prf-dt-b: ") and f"has a role named {owner}" in check.detail
        assert a.status is Status.DEGRADED

        await conn.execute(f'DROP ROLE "{owner}"')
        await asyncio.to_thread(_exec, container_name("prf-dt-b"),
                                f"sed -i '1i {CLEARTEXT_HBA}' {PG_HBA}")
        await monitor.check_once(isolation=True)
        check = _cross_tenant(await _tenant(app, "prf-dt-a"))
        assert not check.passed
        assert "prf-dt-b: " in check.detail and "host 0.0.0.0 uses password" in check.detail

        await asyncio.to_thread(_exec, container_name("prf-dt-b"), f"sed -i '1d' {PG_HBA}")
        await monitor.check_once(isolation=True)
        a = await _tenant(app, "prf-dt-a")
        assert _cross_tenant(a).passed, _cross_tenant(a).detail
        assert a.status is Status.READY
    finally:
        await conn.close()


async def test_mariadb_squatter_gets_nothing_and_a_foreign_account_fails_the_proof(
    docker_app: App,
) -> None:
    """MariaDB: a mysql_clear_password squatter on a freed port receives no secret; an
    account named like Y's app login on Y's neighbour fails Y's proof."""
    app = docker_app
    await provision_ready(app, "mysql", "prf-my-x", "prf-my-w")
    squatter = await _squat(app, "prf-my-x")
    try:
        decoy = "decoy-" + secrets.token_hex(8)
        with pytest.raises(pymysql.err.OperationalError):
            await aiomysql.connect(host=squatter.host, port=squatter.port, user="decoy",
                                   password=decoy, connect_timeout=5)
        assert squatter.holds(decoy)
        # cloner's own MariaDB client refuses the switch to cleartext: even a squatter
        # that slipped in after the endpoint guard's look gets no password from it.
        refused = "decoy-" + secrets.token_hex(8)
        with pytest.raises(pymysql.err.OperationalError, match="mysql_clear_password"):
            await MysqlEngine._raw_connect(Endpoint(squatter.host, squatter.port), "decoy",
                                           refused, None)
        assert not squatter.holds(refused)

        await provision_ready(app, "mysql", "prf-my-y")
        proof = _cross_tenant(await _tenant(app, "prf-my-y"))
        await HealthMonitor(app).check_once(isolation=True)
    finally:
        await squatter.close()

    stored = await _every_stored_secret(app)
    leaked = sorted(where for where, secret in stored.items() if squatter.holds(secret))
    assert leaked == [], f"the squatter received {leaked} ({squatter.connections} connections)"
    assert proof.passed and "asked prf-my-w " in proof.detail, proof.detail

    mine = await target_of(app, await _tenant(app, "prf-my-y"))
    theirs = await target_of(app, await _tenant(app, "prf-my-w"))
    app_login = mine.credentials.roles["app"].username
    conn = await aiomysql.connect(host=theirs.endpoint.host, port=theirs.endpoint.port,
                                  user="root", password=theirs.credentials.superuser.password,
                                  autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE USER '{app_login}'@'%' IDENTIFIED BY 'not-the-real-one'")
        await HealthMonitor(app).check_once(isolation=True)
    finally:
        conn.close()
    check = _cross_tenant(await _tenant(app, "prf-my-y"))
    assert not check.passed
    assert f"prf-my-w: has an account named {app_login}@%" in check.detail
