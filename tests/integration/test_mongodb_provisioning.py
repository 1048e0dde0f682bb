"""Real Docker, real MongoDB: provisioning, isolation, hardening, backup and restore.

MongoDB cannot be installed on the build machines (Debian ships no server, and
the PyPI/npm helpers download binaries at run time), so these tests run only
when a local image named by ``CLONER_MONGO_IMAGE`` (default ``mongo:7``)
exists — ``docker load`` one — and are skipped, with that reason, otherwise.
Nothing here fakes a server.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from cloner.app import App
from cloner.domain import Engine, Status, container_name, volume_name
from cloner.engines import TenantTarget, get_engine
from cloner.engines.mongodb.archive import inspect_backup
from cloner.tenants import TenantService
from tests.conftest import make_settings, remove_owned, require_docker
from tests.integration.helpers import run_workers, target_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MONGO_IMAGE = os.environ.get("CLONER_MONGO_IMAGE", "mongo:7")
UNAUTHORIZED, AUTHENTICATION_FAILED, DOCUMENT_VALIDATION_FAILURE = 13, 18, 121
ENGINE_CHECKS = {
    "app_reads_and_writes_own_database", "readonly_reads_cannot_write",
    "roles_confined_to_tenant_database", "app_cannot_escalate", "owner_confined_to_database",
    "unauthenticated_access_refused", "bootstrap_password_dead",
    "other_tenants_refuse_credentials",
}


def require_mongo_image() -> None:
    """Skip — also under CI=true — unless the MongoDB image is present locally."""
    import docker
    import docker.errors

    require_docker()
    client = docker.from_env()
    try:
        client.images.get(MONGO_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"no local image CLONER_MONGO_IMAGE={MONGO_IMAGE}; MongoDB cannot be "
                    "installed on this machine ('docker load' an official mongo image to run)")
    finally:
        client.close()


@pytest.fixture
async def mongo_app(tmp_path: Path) -> AsyncIterator[App]:
    """A real App whose mongodb tenants run ``MONGO_IMAGE``; everything it made is removed."""
    require_mongo_image()
    settings = make_settings(tmp_path / "data", mongo_image=MONGO_IMAGE)
    async with App.open(settings) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


async def provision(app: App, specs: list[tuple[str, str, str | None]]) -> None:
    """Enqueue mongodb tenants (id, industry, version) and run real workers until done."""
    service = TenantService(app)
    requests = [await service.create(t, "mongodb", ind, ver) for t, ind, ver in specs]
    await run_workers(app, [r.id for r in requests], workers=2, timeout_s=300)


def client_for(target: TenantTarget, role: str, **overrides: Any) -> AsyncMongoClient[Any]:
    """A pymongo client from the DSN applications get (so the DSN is exercised too)."""
    cred = target.credentials.roles[role]
    dsn = get_engine(Engine.MONGODB).dsn(target.endpoint, cred.username, cred.password)
    return AsyncMongoClient(dsn, serverSelectionTimeoutMS=5000, **overrides)


async def refusal_code(coro: Any) -> int | None:
    """The server's error code for an awaited operation, or None if it succeeded."""
    try:
        await coro
    except OperationFailure as exc:
        return exc.code
    return None


async def test_two_tenants_are_ready_isolated_and_usable(mongo_app: App) -> None:
    """Two tenants through the real pipeline: schema, proof, app writes, readonly refused."""
    app = mongo_app
    await provision(app, [("mg-fin", "finance", "v1.1"), ("mg-tech", "technology", "v1.0")])
    service = TenantService(app)
    fin, tech = await service.get("mg-fin"), await service.get("mg-tech")
    assert (fin.status, tech.status) == (Status.READY, Status.READY), (fin.error, tech.error)
    for tenant in (fin, tech):
        assert tenant.isolation is not None and tenant.isolation.passed
        assert {c.name for c in tenant.isolation.checks} >= ENGINE_CHECKS
    a, b = await target_of(app, fin), await target_of(app, tech)

    app_client, ro_client = client_for(a, "app"), client_for(a, "readonly")
    try:
        db = app_client[a.database]
        names = set(await db.list_collection_names())
        assert {"accounts", "transactions", "orders", "schema_info"} <= names
        assert "software_licenses" not in names
        info = await db["schema_info"].find({}, {"_id": 0}).sort("applied_at", 1).to_list()
        assert [(d["kind"], d["name"], d["version"]) for d in info] == [
            ("root", "mongodb", "v1.1"), ("overlay", "finance", "v1.1")]
        assert all(len(d["checksum"]) == 64 for d in info)
        assert await db["transactions"].count_documents({}) == 7

        # app writes and reads; the validator refuses a document that breaks the schema.
        customer = {"name": "Ada", "email": "ada@example.com",
                    "created_at": info[0]["applied_at"], "updated_at": info[0]["applied_at"]}
        inserted = await db["customers"].insert_one(customer)
        assert await db["customers"].find_one({"_id": inserted.inserted_id}) is not None
        code = await refusal_code(db["customers"].insert_one({"name": "", "bogus": 1}))
        assert code == DOCUMENT_VALIDATION_FAILURE
        assert await refusal_code(app_client.admin["system.users"].find_one()) == UNAUTHORIZED

        # readonly reads what app wrote and cannot write.
        ro = ro_client[a.database]
        assert await ro["customers"].count_documents({}) == 1
        assert await refusal_code(ro["customers"].insert_one(customer | {"_id": 1})) \
            == UNAUTHORIZED
    finally:
        await app_client.close()
        await ro_client.close()

    # A's credentials are refused by B's server, whichever database they name.
    for auth_source in (a.database, b.database):
        cred = a.credentials.roles["app"]
        stranger: AsyncMongoClient[Any] = AsyncMongoClient(
            host=b.endpoint.host, port=b.endpoint.port, username=cred.username,
            password=cred.password, authSource=auth_source, serverSelectionTimeoutMS=5000,
        )
        try:
            assert await refusal_code(stranger.admin.command("ping")) == AUTHENTICATION_FAILED
        finally:
            await stranger.close()

    # v1.0 has no commerce collections.
    tech_client = client_for(b, "owner")
    try:
        names = set(await tech_client[b.database].list_collection_names())
        assert "software_licenses" in names and "orders" not in names
    finally:
        await tech_client.close()


async def test_container_is_hardened_and_bootstrap_password_dead(mongo_app: App) -> None:
    """Non-root, read-only, capless, 127.0.0.1 only, one volume; the inspect password is dead."""
    import docker

    app = mongo_app
    await provision(app, [("mg-hard", "none", None)])
    tenant = await TenantService(app).get("mg-hard")
    assert tenant.status is Status.READY, tenant.error
    target = await target_of(app, tenant)
    client = docker.from_env()
    try:
        attrs = client.containers.get(container_name("mg-hard")).attrs
    finally:
        client.close()
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "999:999"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["ReadonlyRootfs"] is True
    assert host["Memory"] == app.settings.tenant_memory_limit_bytes
    bindings = [b for bs in host["PortBindings"].values() for b in bs]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
    # Only the labelled data volume: /data/configdb is a tmpfs, not an anonymous volume.
    assert [(m["Type"], m["Name"]) for m in attrs["Mounts"]] == [
        ("volume", volume_name("mg-hard"))]

    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    root = target.credentials.superuser
    for password, expected in ((env["MONGO_INITDB_ROOT_PASSWORD"], AUTHENTICATION_FAILED),
                               (root.password, None)):
        probe: AsyncMongoClient[Any] = AsyncMongoClient(
            host=target.endpoint.host, port=target.endpoint.port, username=root.username,
            password=password, authSource="admin", serverSelectionTimeoutMS=5000,
        )
        try:
            assert await refusal_code(probe.admin.command("ping")) == expected
        finally:
            await probe.close()
    for cred in target.credentials.roles.values():
        assert cred.password not in json.dumps(attrs)


async def test_delete_backs_up_and_restore_brings_back_the_same_documents(
    mongo_app: App,
) -> None:
    """delete → verified mongodump archive; the restore pipeline brings back equal counts."""
    app = mongo_app
    service = TenantService(app)
    await provision(app, [("mg-back", "healthcare", None)])
    tenant = await service.get("mg-back")
    assert tenant.status is Status.READY, tenant.error
    target = await target_of(app, tenant)
    writer = client_for(target, "app")
    try:
        stamp = (await writer[target.database]["schema_info"].find_one())["applied_at"]
        await writer[target.database]["customers"].insert_many([
            {"name": f"Customer {i}", "email": f"c{i}@example.com", "created_at": stamp,
             "updated_at": stamp} for i in range(250)
        ])
    finally:
        await writer.close()
    engine = get_engine(Engine.MONGODB)
    before = await engine.row_counts(target)
    assert before["customers"] == 250 and before["medical_procedures"] == 10

    request = await service.delete("mg-back", purge=False)
    await run_workers(app, [request.id], workers=1, timeout_s=300)
    tenant = await service.get("mg-back")
    assert tenant.status is Status.DEPROVISIONED and tenant.backup is not None
    archive = Path(tenant.backup["path"])
    assert archive.stat().st_mode & 0o777 == 0o600
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == tenant.backup["sha256"]
    assert tenant.backup["format"] == "mongodump-archive-gzip"
    assert tenant.backup["restorable_entries"] == len(before)
    assert inspect_backup(archive).counts(target.database) == before

    request = await service.restore("mg-back")
    await run_workers(app, [request.id], workers=1, timeout_s=300)
    restored = await service.get("mg-back")
    assert restored.status is Status.READY, restored.error
    assert restored.isolation is not None and restored.isolation.passed
    assert await engine.row_counts(await target_of(app, restored)) == before
