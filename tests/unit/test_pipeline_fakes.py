"""Unit tests of the pipeline fakes in ``cloner.testing``: they keep the contracts they fake."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from cloner import constants
from cloner.catalog import Catalog
from cloner.domain import Credentials, Endpoint, Engine, Industry, RoleCredential
from cloner.engines import ContainerDefaults, TenantTarget, get_engine
from cloner.engines.postgres import PostgresEngine
from cloner.errors import BackupError, NotReady, RuntimeFault, TemplateError
from cloner.runtime import ContainerSpec
from cloner.testing import DUMP_MAGIC, FakeEngine, InMemoryRuntime, use_engine

REPO = Path(__file__).resolve().parents[2]
CREDS = Credentials(RoleCredential("postgres", "s3cret-superuser"), "bootstrap-secret")
DEFAULTS = ContainerDefaults(
    image="postgres:15", bind_host="127.0.0.1", network="cloner-tenants",
    memory_limit_bytes=256 << 20, nano_cpus=10**9, pids_limit=256, shm_size_bytes=64 << 20,
    connection_limit=40,
)


def _spec(engine: FakeEngine, request_id: str = "r1", tenant_id: str = "acme") -> ContainerSpec:
    labels = {constants.LABEL_TENANT: tenant_id, constants.LABEL_REQUEST: request_id}
    return engine.container_spec(tenant_id, CREDS, labels, DEFAULTS)


def _target(tenant_id: str = "acme") -> TenantTarget:
    return TenantTarget(tenant_id, tenant_id, Endpoint("127.0.0.1", 49153, tenant_id), CREDS,
                        container_name=constants.CONTAINER_PREFIX + tenant_id)


def test_use_engine_swaps_the_registry_entry_and_restores_it() -> None:
    """Inside the block get_engine returns the fake; afterwards the real driver again."""
    fake = FakeEngine()
    with use_engine(fake) as registered:
        assert registered is fake
        assert get_engine(Engine.POSTGRES) is fake
    assert isinstance(get_engine(Engine.POSTGRES), PostgresEngine)


def test_use_engine_restores_even_when_the_block_raises() -> None:
    """An exception inside the block still puts the real driver back."""
    with pytest.raises(ValueError, match="boom"), use_engine(FakeEngine()):
        raise ValueError("boom")
    assert isinstance(get_engine(Engine.POSTGRES), PostgresEngine)


async def test_runtime_fail_next_raises_once_then_works_and_records_both_calls() -> None:
    """A one-shot fault fires on the next call only; both calls are recorded."""
    runtime = InMemoryRuntime()
    spec = _spec(FakeEngine())
    await runtime.ensure_network(spec.network)
    runtime.fail_next["ensure_container"] = [RuntimeFault("hiccup")]
    with pytest.raises(RuntimeFault, match="hiccup"):
        await runtime.ensure_container(spec)
    info = await runtime.ensure_container(spec)

    assert info.running
    assert info.host_ip == "127.0.0.1"
    assert info.networks == ("cloner-tenants",)
    assert runtime.called("ensure_container") == ["cloner-acme", "cloner-acme"]


async def test_runtime_adopts_same_request_and_replaces_another_requests_container() -> None:
    """Same request label: adopted; other request label: container and volume replaced."""
    runtime = InMemoryRuntime()
    engine = FakeEngine()
    await runtime.ensure_network(DEFAULTS.network)
    first = await runtime.ensure_container(_spec(engine, "r1"))
    again = await runtime.ensure_container(_spec(engine, "r1"))
    replaced = await runtime.ensure_container(_spec(engine, "r2"))

    assert again.id == first.id
    assert replaced.id != first.id
    assert runtime.volumes["cloner-acme-data"][constants.LABEL_REQUEST] == "r2"


async def test_runtime_refuses_foreign_labels_and_a_missing_network() -> None:
    """Labels outside cloner.* and an absent network are RuntimeFaults, as with Docker."""
    runtime = InMemoryRuntime()
    spec = _spec(FakeEngine())
    with pytest.raises(RuntimeFault, match="network"):
        await runtime.ensure_container(spec)
    await runtime.ensure_network(spec.network)
    bad = ContainerSpec(**{**spec.__dict__, "labels": {"com.example": "x"}})
    with pytest.raises(RuntimeFault, match="namespace"):
        await runtime.ensure_container(bad)


async def test_runtime_owned_lists_only_this_installs_resources() -> None:
    """owned() reports what carries this install id; another install's container is hidden."""
    runtime = InMemoryRuntime("mine")
    other = InMemoryRuntime("theirs")
    await runtime.ensure_network(DEFAULTS.network)
    await runtime.ensure_container(_spec(FakeEngine()))
    await other.ensure_network(DEFAULTS.network)
    await other.ensure_container(_spec(FakeEngine(), tenant_id="beta"))
    runtime.containers.update(other.containers)

    owned = await runtime.owned()
    assert [c.name for c in owned.containers] == ["cloner-acme"]
    assert owned.volumes == ("cloner-acme-data",)
    assert await runtime.inspect("cloner-beta") is None


async def test_engine_standing_and_one_shot_faults() -> None:
    """fail raises on every call, fail_next once per queued exception, in order."""
    engine = FakeEngine(fail={"apply_templates": TemplateError("bad")},
                        fail_next={"wait_ready": [NotReady("one"), NotReady("two")]})
    for expected in ("one", "two"):
        with pytest.raises(NotReady, match=expected):
            await engine.wait_ready(_target(), 1.0)
    await engine.wait_ready(_target(), 1.0)
    templates = Catalog(REPO / "templates", REPO / "industry_templates").resolve(
        "postgres", "v1.1", Industry.NONE
    )
    for _ in range(2):
        with pytest.raises(TemplateError):
            await engine.apply_templates(_target(), templates)
    assert engine.hooks() == ["wait_ready"] * 3 + ["apply_templates"] * 2


async def test_engine_wait_ready_held_past_its_timeout_is_not_ready() -> None:
    """A held probe gives up after timeout_s with NotReady, like the real driver."""
    engine = FakeEngine()
    engine.hold["wait_ready"] = asyncio.Event()
    with pytest.raises(NotReady, match=r"not ready after 0\.02s"):
        await engine.wait_ready(_target(), 0.02)


async def test_engine_isolation_checks_pass_unless_named_failing() -> None:
    """prove_isolation passes by default and fails exactly the configured checks."""
    engine = FakeEngine()
    assert all(c.passed for c in await engine.prove_isolation(_target(), []))
    engine.failing_checks = {"app_cannot_escalate"}
    failed = [c.name for c in await engine.prove_isolation(_target(), []) if not c.passed]
    assert failed == ["app_cannot_escalate"]


async def test_engine_backup_dumps_through_the_runtime_with_a_real_checksum(
    tmp_path: Path,
) -> None:
    """backup writes the runtime's PGDMP payload to dest and returns its sha256."""
    runtime = InMemoryRuntime()
    engine = FakeEngine()
    await runtime.ensure_network(DEFAULTS.network)
    await runtime.ensure_container(_spec(engine))
    dest = tmp_path / "b" / "acme.dump"
    result = await engine.backup(runtime, _target(), dest)

    data = dest.read_bytes()
    assert data.startswith(DUMP_MAGIC)
    assert result.size_bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert runtime.exec_commands[0][2][0] == "pg_dump"


async def test_engine_backup_rejects_a_dump_without_the_magic(tmp_path: Path) -> None:
    """A payload that is not a PGDMP archive is a BackupError and leaves no file behind."""
    runtime = InMemoryRuntime()
    runtime.dump_payload = b"ERROR: out of memory"
    engine = FakeEngine()
    await runtime.ensure_network(DEFAULTS.network)
    await runtime.ensure_container(_spec(engine))
    with pytest.raises(BackupError, match="no valid archive"):
        await engine.backup(runtime, _target(), tmp_path / "acme.dump")
    assert list(tmp_path.iterdir()) == []
