"""Unit tests of the reconciler on fakes: orphans, repairs, drift, Docker outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cloner import constants
from cloner.controlplane import TenantUpdate
from cloner.daemon.reconciler import Reconciler, ReconcileReport, Resource, orphan_verdict
from cloner.domain import (
    Engine,
    Industry,
    Request,
    RequestKind,
    RequestStatus,
    Status,
    Tenant,
    container_name,
    volume_name,
)
from cloner.errors import NotReady, RuntimeFault
from cloner.tenants import TenantService
from cloner.testing import FakeEngine
from tests.unit.fleet import Fleet, open_fleet

GRACE_S = 60.0


@pytest.fixture
async def fleet(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Fleet]:
    """A fleet with the default orphan grace (60 s)."""
    async with open_fleet(tmp_path, engine, orphan_grace_s=GRACE_S) as opened:
        yield opened


def actions(fleet: Fleet, action: str) -> float:
    """How often the reconciler counted ``action``."""
    return fleet.metric("cloner_reconcile_actions_total", action=action)


# ------------------------------------------------------------------ orphans


def age(reconciler: Reconciler, seconds: float) -> None:
    """Pretend this reconciler first saw every resource ``seconds`` earlier."""
    reconciler._first_seen = {k: v - seconds for k, v in reconciler._first_seen.items()}


async def failed_leftovers(fleet: Fleet, tenant_id: str) -> str:
    """A FAILED tenant whose compensation left its own container and volume behind."""
    request = await TenantService(fleet.app).create(tenant_id, "postgres", "none")
    await fleet.cp.update_tenant(tenant_id, TenantUpdate(status=Status.FAILED))
    claimed = await fleet.claim()
    assert claimed.id == request.id and claimed.lease is not None
    await fleet.cp.fail(claimed.lease, "boom")
    await fleet.stray(tenant_id, request_id=request.id)
    return request.id


async def test_unknown_resources_are_quarantined_never_removed(fleet: Fleet) -> None:
    """No registry row: after the grace (from first sight) both are reported, neither removed."""
    await fleet.stray("ghost")
    # Created long ago (as after a control-plane restore): that alone makes nothing due.
    fleet.runtime.backdate(container_name("ghost"), 100 * GRACE_S)
    fleet.runtime.backdate(volume_name("ghost"), 100 * GRACE_S)
    reconciler = Reconciler(fleet.app)

    first = await reconciler.reconcile_once()
    assert first.actions == ()
    assert fleet.sample("cloner_orphans", kind="volume") == 0

    age(reconciler, GRACE_S + 1)
    with capture_logs() as logs:
        report = await reconciler.reconcile_once()
        again = await reconciler.reconcile_once()

    assert report.runtime_up
    assert [a.subject for a in report.of("quarantined")] == [
        container_name("ghost"), volume_name("ghost")]
    assert report.of("orphan_removed") == () and again.of("orphan_removed") == ()
    assert container_name("ghost") in fleet.runtime.containers
    assert volume_name("ghost") in fleet.runtime.volumes
    assert fleet.runtime.called("remove_container") == []
    assert fleet.runtime.called("remove_volume") == []
    assert fleet.sample("cloner_orphans", kind="container") == 1
    assert fleet.sample("cloner_orphans", kind="volume") == 1
    # A standing quarantine is logged and counted once, not every pass.
    assert actions(fleet, "quarantined") == 2
    warned = [e for e in logs if e["event"] == "reconcile.quarantined"]
    assert [(e["tenant_id"], e["log_level"]) for e in warned] == [("ghost", "warning")] * 2
    assert fleet.sample("cloner_reconcile_last_success_timestamp_seconds")
    assert fleet.sample("cloner_runtime_up") == 1


async def test_failed_tenants_own_container_goes_after_grace_its_volume_stays(
    fleet: Fleet,
) -> None:
    """A FAILED tenant's leftover container is removed; its volume is only quarantined."""
    await failed_leftovers(fleet, "oops")
    reconciler = Reconciler(fleet.app)
    assert (await reconciler.reconcile_once()).actions == ()  # first sight: within grace

    age(reconciler, GRACE_S + 1)
    report = await reconciler.reconcile_once()

    assert [a.subject for a in report.of("orphan_removed")] == [container_name("oops")]
    assert [a.subject for a in report.of("quarantined")] == [volume_name("oops")]
    assert fleet.runtime.containers == {}
    assert volume_name("oops") in fleet.runtime.volumes
    assert fleet.runtime.called("remove_volume") == []
    assert fleet.sample("cloner_orphans", kind="volume") == 1
    assert fleet.sample("cloner_orphans", kind="container") == 0


async def test_registry_is_reread_before_deleting(fleet: Fleet, monkeypatch: Any) -> None:
    """A tenant enqueued after the snapshot but before the delete keeps its container."""
    await failed_leftovers(fleet, "ghost")
    reconciler = Reconciler(fleet.app)
    await reconciler.reconcile_once()
    age(reconciler, GRACE_S + 1)
    original = fleet.cp.active_request
    created: list[Request] = []

    async def snapshot_then_signup(tenant_id: str) -> Request | None:
        found = await original(tenant_id)
        if tenant_id == "ghost" and not created:
            # The signup lands right after the reconciler read the registry.
            created.append(await TenantService(fleet.app).create("ghost", "postgres", "none"))
        return found

    monkeypatch.setattr(fleet.cp, "active_request", snapshot_then_signup)
    report = await reconciler.reconcile_once()

    assert created
    assert report.of("orphan_removed") == ()
    assert [a.subject for a in report.of("orphan_spared")] == [container_name("ghost")]
    assert container_name("ghost") in fleet.runtime.containers
    assert volume_name("ghost") in fleet.runtime.volumes
    assert fleet.runtime.called("remove_container") == []


async def test_container_replaced_since_the_snapshot_is_spared(
    fleet: Fleet, monkeypatch: Any
) -> None:
    """The container is re-inspected: one with the same name but a new id is not removed."""
    await failed_leftovers(fleet, "ghost")
    reconciler = Reconciler(fleet.app)
    await reconciler.reconcile_once()
    age(reconciler, GRACE_S + 1)
    original = fleet.runtime.inspect

    async def replaced(name: str) -> Any:
        info = await original(name)
        fleet.runtime.containers[name].id = "new-id"
        return await original(name) if info else None

    monkeypatch.setattr(fleet.runtime, "inspect", replaced)
    report = await reconciler.reconcile_once()

    assert [a.subject for a in report.of("orphan_spared")] == [container_name("ghost")]
    assert container_name("ghost") in fleet.runtime.containers


async def test_deprovisioned_tenant_keeps_its_volume_forever(fleet: Fleet) -> None:
    """Retained data is never an orphan; a container left behind by it is."""
    tenant = await fleet.ready()
    await fleet.delete()
    assert (await fleet.tenant()).status is Status.DEPROVISIONED
    # A leftover container of the same request (e.g. a repair raced the delete).
    await fleet.stray("acme", request_id=tenant.request_id or "")
    reconciler = Reconciler(fleet.app)
    await reconciler.reconcile_once()
    age(reconciler, 10 * GRACE_S)

    report = await reconciler.reconcile_once()

    assert [a.subject for a in report.of("orphan_removed")] == [container_name("acme")]
    assert report.of("quarantined") == ()
    assert volume_name("acme") in fleet.runtime.volumes
    assert fleet.runtime.called("remove_volume") == []


async def test_tenant_with_an_active_request_is_untouched(fleet: Fleet) -> None:
    """Queued signup: its (old) resources and its missing container are the worker's business."""
    # A READY tenant whose container vanished while its delete waits in the queue …
    await fleet.ready("leaving")
    del fleet.runtime.containers[container_name("leaving")]
    await TenantService(fleet.app).delete("leaving", purge=False)
    # … and a signup whose worker created its container long ago, then stalled.
    request = await TenantService(fleet.app).create("busy", "postgres", "none")
    await fleet.stray("busy", request_id=request.id)
    reconciler = Reconciler(fleet.app)
    await reconciler.reconcile_once()
    age(reconciler, 10 * GRACE_S)

    report = await reconciler.reconcile_once()

    assert report.actions == ()
    assert container_name("busy") in fleet.runtime.containers
    assert (await fleet.tenant("busy")).status is Status.REQUESTED
    assert (await fleet.tenant("leaving")).status is Status.READY
    assert fleet.runtime.called("ensure_container").count(container_name("leaving")) == 1


async def test_ready_tenant_of_another_incarnation_is_quarantined(fleet: Fleet) -> None:
    """Resources whose request the READY row does not know (an older registry) stay put."""
    await fleet.ready("acme")
    labels_before = dict(fleet.runtime.volumes[volume_name("acme")])
    # The registry was restored from a copy taken before the tenant was re-created: the
    # row names request r-old, the live container and volume carry the newer request.
    await fleet.cp.db.execute("UPDATE tenants SET request_id = 'r-old' WHERE tenant_id = 'acme'")
    reconciler = Reconciler(fleet.app)
    await reconciler.reconcile_once()
    age(reconciler, GRACE_S + 1)

    report = await reconciler.reconcile_once()

    assert sorted(a.subject for a in report.of("quarantined")) == [
        container_name("acme"), volume_name("acme")]
    assert report.of("orphan_removed") == ()
    assert fleet.runtime.volumes[volume_name("acme")] == labels_before
    assert fleet.runtime.called("remove_volume") == []


async def test_abandoned_provisioning_is_failed_and_cleaned(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """PROVISIONING with no active request: marked FAILED, its container removed, volume kept."""
    async with open_fleet(tmp_path, engine, orphan_grace_s=0) as fleet:
        request = await TenantService(fleet.app).create("stuck", "postgres", "none")
        claimed = await fleet.claim()
        await fleet.cp.update_tenant("stuck", TenantUpdate(status=Status.PROVISIONING))
        await fleet.stray("stuck", request_id=request.id)
        # The request failed but the tenant's own FAILED write was lost.
        assert claimed.lease is not None
        await fleet.cp.fail(claimed.lease, "start: boom")

        report = await Reconciler(fleet.app).reconcile_once()

        tenant = await fleet.tenant("stuck")
        assert tenant.status is Status.FAILED
        assert tenant.error is not None and tenant.error["step"] == "reconcile"
        assert [a.tenant_id for a in report.of("abandoned")] == ["stuck"]
        assert [a.subject for a in report.of("orphan_removed")] == [container_name("stuck")]
        assert [a.subject for a in report.of("quarantined")] == [volume_name("stuck")]
        assert fleet.runtime.containers == {}


async def test_keep_failed_keeps_the_failed_requests_resources(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """keep_failed promises the failed container and volume survive for debugging."""
    async with open_fleet(tmp_path, engine, orphan_grace_s=0, keep_failed=True) as fleet:
        engine.fail["apply_templates"] = RuntimeError("broken template")
        await TenantService(fleet.app).create("debug-me", "postgres", "none")
        await fleet.work_once()
        assert (await fleet.tenant("debug-me")).status is Status.FAILED

        report = await Reconciler(fleet.app).reconcile_once()

        assert report.of("orphan_removed") == ()
        assert report.of("quarantined") == ()
        assert container_name("debug-me") in fleet.runtime.containers


def _tenant(status: Status, request_id: str = "r1") -> Tenant:
    now = datetime.now(UTC)
    return Tenant("t-1", status, Engine.POSTGRES, Industry.NONE, "v1.1", None, None, None, None,
                  {}, None, 0, now, now, request_id)


def _resource(kind: str, request_id: str = "r1", **extra: str) -> Resource:
    name = volume_name("t-1") if kind == "volume" else container_name("t-1")
    labels = {constants.LABEL_TENANT: "t-1", constants.LABEL_REQUEST: request_id, **extra}
    return Resource(kind, name, labels, None)


_ACTIVE = Request("q", "t-1", RequestKind.PROVISION, {}, RequestStatus.QUEUED, 0, None,
                  datetime.now(UTC))

KEEP, REMOVE, QUARANTINE = "keep", "remove", "quarantine"
#: (tenant status or None for no row, kind, request label, active request?, keep_failed, verdict)
Case = tuple[Status | None, str, str, bool, bool, str]


@pytest.mark.parametrize(
    "case",
    [
        (None, "volume", "r1", False, False, QUARANTINE),        # no registry row
        (None, "container", "r1", False, False, QUARANTINE),
        (None, "volume", "r1", True, False, QUARANTINE),         # a request, no row: unknown
        (Status.READY, "container", "r1", False, False, KEEP),
        (Status.READY, "volume", "r0", False, False, QUARANTINE),  # another incarnation
        (Status.READY, "container", "r0", False, False, QUARANTINE),
        (Status.DEGRADED, "volume", "r1", False, False, KEEP),
        (Status.PROVISIONING, "container", "r1", True, False, KEEP),
        (Status.PROVISIONING, "container", "r1", False, False, REMOVE),
        (Status.PROVISIONING, "volume", "r1", False, False, QUARANTINE),
        (Status.FAILED, "container", "r1", False, False, REMOVE),
        (Status.FAILED, "volume", "r1", False, False, QUARANTINE),
        (Status.FAILED, "volume", "r1", False, True, KEEP),       # keep_failed honoured
        (Status.FAILED, "volume", "r0", False, True, QUARANTINE),
        (Status.FAILED, "container", "r0", False, False, QUARANTINE),  # e.g. a failed restore
        (Status.FAILED, "volume", "r1", True, False, KEEP),       # re-create in flight
        (Status.PURGED, "container", "r1", False, False, REMOVE),
        (Status.PURGED, "volume", "r1", False, False, QUARANTINE),
        (Status.DEPROVISIONING, "container", "r1", False, False, KEEP),
        (Status.DEPROVISIONING, "volume", "r0", False, False, KEEP),
        (Status.MIGRATING, "container", "r0", False, False, KEEP),
        (Status.DEPROVISIONED, "container", "r1", False, False, REMOVE),
        (Status.DEPROVISIONED, "volume", "r1", False, False, KEEP),   # retained data
        (Status.DEPROVISIONED, "volume", "r0", False, False, QUARANTINE),
        (Status.DEPROVISIONED, "container", "r0", False, False, QUARANTINE),
    ],
)
def test_orphan_rules(case: Case) -> None:
    """The rule table of the module docstring: a volume is never removed by the reconciler."""
    status, kind, request_id, active, keep_failed, expected = case
    tenant = _tenant(status) if status is not None else None
    verdict = orphan_verdict(_resource(kind, request_id), tenant, _ACTIVE if active else None,
                             keep_failed=keep_failed)
    found = KEEP if verdict is None else QUARANTINE if verdict.quarantine else REMOVE
    assert found == expected, verdict


def test_volume_dump_helpers_are_left_to_the_backup_that_started_them() -> None:
    """The backups' short-lived helper container is never an orphan, with or without a row."""
    helper = Resource("container", "cloner-t-1.volume-dump",
                      {constants.LABEL_TENANT: "t-1",
                       constants.LABEL_ROLE: constants.ROLE_VOLUME_DUMP}, None)
    assert orphan_verdict(helper, None, None, keep_failed=False) is None
    assert orphan_verdict(helper, _tenant(Status.DEPROVISIONED), None, keep_failed=False) is None


def test_scratch_servers_and_unlabelled_names() -> None:
    """Scratch servers never have a row and are removable; names give the tenant id."""
    scratch = Resource("container", "cloner-validate-1", {constants.LABEL_ROLE: "scratch"}, None)
    verdict = orphan_verdict(scratch, None, None, keep_failed=False)
    assert verdict is not None and not verdict.quarantine
    assert Resource("volume", volume_name("t-1"), {}, None).tenant_id == "t-1"
    assert Resource("container", container_name("t-1"), {}, None).tenant_id == "t-1"
    assert Resource("volume", "elsewhere", {}, None).tenant_id is None


# ------------------------------------------------------------------ repairs


async def test_ready_tenant_with_missing_container_is_recreated_on_its_volume(
    fleet: Fleet,
) -> None:
    """Container gone: DEGRADED, recreated with the same request label, new port, READY again."""
    before = await fleet.ready()
    volume_labels = dict(fleet.runtime.volumes[volume_name("acme")])
    volume_born = fleet.runtime.volume_created[volume_name("acme")]
    del fleet.runtime.containers[container_name("acme")]

    with capture_logs() as logs:
        report = await Reconciler(fleet.app).reconcile_once()

    after = await fleet.tenant()
    assert after.status is Status.READY
    assert [a.action for a in report.actions] == ["degraded", "recreated", "ready"]
    assert after.endpoint is not None and before.endpoint is not None
    assert after.endpoint.port != before.endpoint.port
    container = fleet.runtime.containers[container_name("acme")]
    assert after.container_id == container.id != before.container_id
    assert container.labels[constants.LABEL_REQUEST] == before.request_id
    # The volume was adopted, not replaced: same labels, same creation time.
    assert fleet.runtime.volumes[volume_name("acme")] == volume_labels
    assert fleet.runtime.volume_created[volume_name("acme")] == volume_born
    assert fleet.engine.hooks("acme")[-2:] == ["wait_ready", "prove_isolation"]
    assert after.isolation is not None and after.isolation.passed
    assert fleet.metric("cloner_health_transitions_total", to="degraded") == 1
    assert fleet.metric("cloner_health_transitions_total", to="ready") == 1
    assert actions(fleet, "recreated") == 1
    kinds = [e["kind"] for e in await fleet.cp.events("acme")]
    assert kinds[-3:] == ["degraded", "reconcile_recreated", "ready"]
    assert {"reconcile.degraded", "reconcile.recreated", "reconcile.recovered"} <= {
        e["event"] for e in logs}


async def test_stopped_container_is_restarted_in_place(fleet: Fleet) -> None:
    """Container exited: started again, same id and port, READY."""
    before = await fleet.ready()
    fleet.runtime.set_status(container_name("acme"), "exited")

    report = await Reconciler(fleet.app).reconcile_once()

    after = await fleet.tenant()
    assert [a.action for a in report.actions] == ["degraded", "restarted", "ready"]
    assert after.status is Status.READY
    assert after.endpoint == before.endpoint
    assert after.container_id == before.container_id
    assert fleet.runtime.called("start") == [container_name("acme")]


async def test_container_that_will_not_start_is_recreated(fleet: Fleet) -> None:
    """A dead container that refuses to start is replaced from the volume."""
    await fleet.ready()
    fleet.runtime.set_status(container_name("acme"), "dead")
    fleet.runtime.fail_next["start"] = [RuntimeFault("cannot start dead container")]

    report = await Reconciler(fleet.app).reconcile_once()

    assert [a.action for a in report.actions] == ["degraded", "recreated", "ready"]
    assert (await fleet.tenant()).status is Status.READY


async def test_missing_volume_is_unrecoverable_and_reported_once(fleet: Fleet) -> None:
    """Container and volume gone: DEGRADED stays, 'unrecoverable' counted once, nothing made."""
    await fleet.ready()
    del fleet.runtime.containers[container_name("acme")]
    del fleet.runtime.volumes[volume_name("acme")]
    reconciler = Reconciler(fleet.app)

    first = await reconciler.reconcile_once()
    second = await reconciler.reconcile_once()

    assert [a.action for a in first.actions] == ["degraded", "unrecoverable"]
    assert [a.action for a in second.actions] == ["unrecoverable"]
    assert actions(fleet, "unrecoverable") == 1
    assert (await fleet.tenant()).status is Status.DEGRADED
    assert container_name("acme") not in fleet.runtime.containers


async def test_volume_of_another_request_is_not_adopted(fleet: Fleet) -> None:
    """Adopting a volume labelled for another request would wipe it: unrecoverable instead."""
    await fleet.ready()
    del fleet.runtime.containers[container_name("acme")]
    fleet.runtime.volumes[volume_name("acme")][constants.LABEL_REQUEST] = "someone-else"

    report = await Reconciler(fleet.app).reconcile_once()

    assert [a.action for a in report.actions] == ["degraded", "unrecoverable"]
    assert fleet.runtime.volumes[volume_name("acme")][constants.LABEL_REQUEST] == "someone-else"


async def test_failed_wait_ready_leaves_tenant_degraded_on_the_new_endpoint(
    fleet: Fleet,
) -> None:
    """A repair that fails is counted; the registry already points at the new container."""
    await fleet.ready()
    del fleet.runtime.containers[container_name("acme")]
    fleet.engine.fail_next["wait_ready"] = [NotReady("still starting")]
    reconciler = Reconciler(fleet.app)

    first = await reconciler.reconcile_once()

    assert [a.action for a in first.actions] == ["degraded", "recreated", "repair_failed"]
    tenant = await fleet.tenant()
    assert tenant.status is Status.DEGRADED
    container = fleet.runtime.containers[container_name("acme")]
    assert tenant.endpoint is not None and tenant.endpoint.port == container.host_port
    assert tenant.container_id == container.id
    # Running on the registered port: nothing left for the reconciler; health takes over.
    assert (await reconciler.reconcile_once()).actions == ()


async def test_moved_port_is_reregistered(fleet: Fleet) -> None:
    """Docker restarted the container on another host port: the endpoint follows it."""
    await fleet.ready()
    fleet.runtime.containers[container_name("acme")].host_port = 60001

    report = await Reconciler(fleet.app).reconcile_once()

    assert [a.action for a in report.actions] == ["endpoint_updated"]
    tenant = await fleet.tenant()
    assert tenant.endpoint is not None and tenant.endpoint.port == 60001


# -------------------------------------------------------------------- drift


async def test_drift_is_logged_and_counted_not_acted_upon(fleet: Fleet) -> None:
    """Another image or template version label: reported (once), nothing changes."""
    await fleet.ready()
    container = fleet.runtime.containers[container_name("acme")]
    container.image = "postgres:14"
    container.labels[constants.LABEL_TEMPLATE_VERSION] = "v0.9"
    reconciler = Reconciler(fleet.app)

    with capture_logs() as logs:
        first = await reconciler.reconcile_once()
        second = await reconciler.reconcile_once()

    assert len(first.of("drift")) == 2 and len(second.of("drift")) == 2
    assert actions(fleet, "drift") == 2
    drift_logs = [e for e in logs if e["event"] == "reconcile.drift"]
    assert len(drift_logs) == 2 and {e["tenant_id"] for e in drift_logs} == {"acme"}
    assert fleet.runtime.containers[container_name("acme")] is container
    assert (await fleet.tenant()).status is Status.READY


# ------------------------------------------------------------ runtime outage


async def test_docker_down_sets_runtime_up_zero_and_does_not_raise(fleet: Fleet) -> None:
    """Docker unreachable: one warning, runtime_up 0, no success stamp; back up: 1 again."""
    await fleet.ready()
    fleet.runtime.available = False
    reconciler = Reconciler(fleet.app)

    with capture_logs() as logs:
        report = await reconciler.reconcile_once()

    assert not report.runtime_up and report.actions == ()
    assert fleet.sample("cloner_runtime_up") == 0
    assert actions(fleet, "runtime_unavailable") == 1
    assert fleet.sample("cloner_reconcile_last_success_timestamp_seconds") == 0
    assert [e["event"] for e in logs] == ["reconcile.runtime_unavailable"]
    assert (await fleet.tenant()).status is Status.READY

    fleet.runtime.available = True
    assert (await reconciler.reconcile_once()).runtime_up
    assert fleet.sample("cloner_runtime_up") == 1


async def test_run_passes_at_once_and_returns_when_stopped(
    fleet: Fleet, monkeypatch: Any
) -> None:
    """run() reconciles at startup (not after an interval) and returns once stop is set."""
    await fleet.stray("ghost")
    reconciler = Reconciler(fleet.app)
    passed = asyncio.Event()
    original = reconciler.reconcile_once

    async def observed() -> ReconcileReport:
        report = await original()
        passed.set()
        return report

    monkeypatch.setattr(reconciler, "reconcile_once", observed)
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    await asyncio.wait_for(passed.wait(), 2)
    stop.set()
    await asyncio.wait_for(task, 2)
    # The pass ran at once: it has first seen the stray (its grace starts now).
    assert sorted(kind for kind, _name in reconciler._first_seen) == ["container", "volume"]
