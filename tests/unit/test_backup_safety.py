"""Unit tests of the safety rules around final backups, on in-memory fakes.

The helper container of ``ContainerHost.dump_volume`` is always removed; the
final backup is the only one that lets a volume go; compensation removes only
what the failed request created. (Real containers: tests/integration/test_backup_safety.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloner import constants
from cloner.controlplane import TenantUpdate
from cloner.daemon.reconciler import Reconciler
from cloner.domain import Engine, RequestKind, RequestStatus, Status, container_name, volume_name
from cloner.engines.mysql import MysqlEngine
from cloner.engines.postgres import PostgresEngine
from cloner.errors import BackupError, InvalidTransition, RuntimeFault
from cloner.pipeline.hosts import ContainerHost
from cloner.tenants import TenantService
from tests.unit.conftest import Env, EnvFactory

HELPER = "cloner-vol-t" + constants.VOLUME_DUMP_SUFFIX


def _kept_volume(env: Env, tenant_id: str = "vol-t", engine: str = "mysql") -> None:
    env.runtime.volumes[volume_name(tenant_id)] = {
        constants.LABEL_MANAGED: "true", constants.LABEL_INSTALL: env.runtime.install_id,
        constants.LABEL_TENANT: tenant_id, constants.LABEL_ENGINE: engine,
        constants.LABEL_REQUEST: "r-old",
    }


async def test_volume_dump_helper_is_removed_when_the_dump_fails(env: Env, tmp_path: Path) -> None:
    """The server answers but the dump fails: BackupError, and the helper is gone."""
    _kept_volume(env)
    env.runtime.exec_result = (0, "")  # ready, but the table count reads nothing
    with pytest.raises(BackupError, match="cannot count the tables"):
        await ContainerHost(env.app.services).dump_volume("vol-t", tmp_path / "x.dump")
    assert env.runtime.called("start_volume_helper") == [HELPER]
    assert HELPER in env.runtime.called("remove_container")
    assert HELPER not in env.runtime.containers
    assert {name for name, _user, _cmd in env.runtime.exec_commands} == {HELPER}


async def test_volume_dump_is_bounded_in_time(make_env: EnvFactory, tmp_path: Path) -> None:
    """A server that never becomes ready: the run ends at step_timeout_s, helper removed."""
    env = await make_env(step_timeout_s=0.5)
    _kept_volume(env)
    env.runtime.exec_result = (1, "starting")
    with pytest.raises(BackupError, match=r"did not finish within 0s|did not finish within 1s"):
        await ContainerHost(env.app.services).dump_volume("vol-t", tmp_path / "x.dump")
    assert HELPER not in env.runtime.containers


async def test_volume_dump_helper_has_no_network_and_no_secret(env: Env, tmp_path: Path) -> None:
    """The helper spec: the tenant container's hardening, no password in its environment."""
    _kept_volume(env, engine="postgres")
    with pytest.raises(BackupError, match="cannot back up a volume"):  # FakeEngine has no hooks
        await ContainerHost(env.app.services).dump_volume("vol-t", tmp_path / "x.dump")
    defaults = env.app.services.container_defaults("postgres")
    for driver in (PostgresEngine(), MysqlEngine()):
        spec = driver.volume_dump_spec("vol-t", HELPER, {}, defaults)
        assert spec.name == HELPER and spec.volume_name == volume_name("vol-t")
        assert spec.read_only and spec.user == "999:999"
        assert not any("PASSWORD" in key for key in spec.env)
        assert "listen_addresses=" in spec.command or "--skip-networking" in spec.command


async def test_volume_helper_refuses_a_volume_in_use(env: Env) -> None:
    """A tenant container on the volume: no helper is started next to it."""
    await env.create("vol-t")
    assert (await env.work_once()).status is RequestStatus.DONE
    spec = PostgresEngine().volume_dump_spec(
        "vol-t", HELPER, {constants.LABEL_ROLE: constants.ROLE_VOLUME_DUMP},
        env.app.services.container_defaults("postgres"))
    with pytest.raises(RuntimeFault, match="in use by cloner-vol-t"):
        await env.runtime.start_volume_helper(spec)
    assert container_name("vol-t") in env.runtime.containers
    assert HELPER not in env.runtime.containers


async def test_an_on_demand_backup_never_lets_retention_purge(make_env: EnvFactory) -> None:
    """A deprovisioned tenant whose recorded backup is not the final one is blocked."""
    env = await make_env(retention_days=0)
    await env.create()
    await env.work_once()
    await TenantService(env.app).delete("acme", purge=False)
    await env.work_once()
    tenant = await env.tenant()
    assert tenant.backup is not None and tenant.backup["final"] is True
    older = tenant.backup | {"final": False, "reason": "on-demand"}
    await env.cp.update_tenant("acme", TenantUpdate(backup=older))

    report = await Reconciler(env.app).reconcile_once()
    assert [o.detail for o in report.of("retention_blocked")] == [
        "the recorded backup is a on-demand backup, not a final one; the volume is kept "
        "(a purge by hand takes the final backup from it first)"]
    # A purge by hand does not take the on-demand backup for the final one: it dumps
    # the kept volume first (which the fake engine cannot), so it fails and keeps it.
    await TenantService(env.app).delete("acme", purge=True)
    request = await env.work_once()
    assert request.status is RequestStatus.FAILED
    assert "cannot back up a volume without its container" in (request.last_error or "")
    assert volume_name("acme") in env.runtime.volumes
    assert env.runtime.called("remove_volume") == []


async def test_failed_provision_compensates_only_its_own_resources(env: Env) -> None:
    """A volume of another request under the tenant's name survives compensation."""
    env.engine.fail["wait_ready"] = BackupError("never ready")  # permanent
    await env.create("comp-t")
    request = await env.work_once()
    assert request.status is RequestStatus.FAILED
    assert volume_name("comp-t") not in env.runtime.volumes  # its own volume: removed
    events = await env.cp.events("comp-t")
    assert events[-1]["detail"]["compensation"]["removed"] == [
        container_name("comp-t"), volume_name("comp-t")]

    # The same failure with a kept volume of an earlier request: it stays.
    env.runtime.volumes[volume_name("comp-t")] = env.runtime._labels(
        {constants.LABEL_REQUEST: "r-earlier"})
    await env.app.provisioner.compensate("comp-t", request.id, Engine.POSTGRES)
    assert env.runtime.volumes[volume_name("comp-t")][constants.LABEL_REQUEST] == "r-earlier"
    assert Status.FAILED is (await env.tenant("comp-t")).status
    assert RequestKind.PROVISION is request.kind


async def test_purge_refuses_data_the_final_backup_was_not_taken_from(
    make_env: EnvFactory,
) -> None:
    """The kept volume now holds data of another request than the final backup's (an older
    control-plane copy after a later restore): purge, retention and restore all refuse."""
    env = await make_env(retention_days=0)
    await env.create()
    await env.work_once()
    await TenantService(env.app).delete("acme", purge=False)
    await env.work_once()
    tenant = await env.tenant()
    assert tenant.backup is not None and tenant.backup["data_request"] == tenant.request_id
    env.runtime.volumes[volume_name("acme")][constants.LABEL_REQUEST] = "r-newer"

    with pytest.raises(InvalidTransition, match="not from the data kept now"):
        await TenantService(env.app).delete("acme", purge=True)
    with pytest.raises(InvalidTransition, match="not from the data kept now"):
        await TenantService(env.app).restore("acme")
    report = await Reconciler(env.app).reconcile_once()
    assert "not the one the final backup was taken from" in report.of(
        "retention_blocked")[0].detail
    await env.cp.enqueue(None, RequestKind.DEPROVISION, "acme", {"purge": True})
    request = await env.work_once()
    assert request.status is RequestStatus.FAILED
    assert "may belong to a newer incarnation" in (request.last_error or "")
    assert (await env.tenant()).status is Status.DEPROVISIONED
    assert env.runtime.called("remove_volume") == []
