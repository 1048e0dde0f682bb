"""Unit tests of the hardening upgrade: which tenants a pass picks, and the harden request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloner.controlplane import TenantUpdate
from cloner.daemon.harden import HardenSweep, due_for_hardening
from cloner.daemon.reconciler import Reconciler
from cloner.domain import (
    Engine,
    Industry,
    Request,
    RequestKind,
    RequestStatus,
    Status,
    Tenant,
)
from cloner.tenants import TenantService
from cloner.testing import FakeEngine
from tests.unit.fleet import Fleet, open_fleet

NOW = datetime(2026, 12, 8, tzinfo=UTC)


def _tenant(tid: str, *, level: int = 0, status: Status = Status.READY,
            engine: Engine = Engine.POSTGRES) -> Tenant:
    return Tenant(tid, status, engine, Industry.NONE, "v1.1", None, None, None, None, {}, None,
                  1, NOW, NOW, "r1", hardening_level=level)


def _request(tid: str, kind: RequestKind) -> Request:
    return Request(f"q-{tid}", tid, kind, {}, RequestStatus.QUEUED, 0, None, NOW, NOW)


LEVELS = {Engine.POSTGRES: 2, Engine.MYSQL: 1}


def _ids(tenants: list[Tenant]) -> list[str]:
    return [t.tenant_id for t in tenants]


def test_picks_ready_tenants_below_their_engines_level_lowest_first_bounded() -> None:
    tenants = [_tenant("d", level=1), _tenant("c"), _tenant("b"), _tenant("a", level=2),
               _tenant("m", engine=Engine.MYSQL), _tenant("n", level=1, engine=Engine.MYSQL),
               _tenant("s", engine=Engine.SQLITE)]  # no level declared: never picked

    assert _ids(due_for_hardening(tenants, {}, LEVELS, limit=10)) == ["b", "c", "m", "d"]
    assert _ids(due_for_hardening(tenants, {}, LEVELS, limit=2)) == ["b", "c"]
    assert due_for_hardening(tenants, {}, LEVELS, limit=0) == []


def test_skips_tenants_with_an_active_request_and_not_ready_ones() -> None:
    tenants = [_tenant("a"), _tenant("b"), _tenant("c", status=Status.DEGRADED),
               _tenant("d", status=Status.MIGRATING), _tenant("e", status=Status.PROVISIONING),
               _tenant("f")]
    tenants += [replace(_tenant("g"), migration={"rollout": "r9", "phase": "step"}),
                replace(_tenant("h"), writes_fenced={"since": "t0", "until": None})]
    active = {"a": _request("a", RequestKind.BACKUP), "b": None}

    assert _ids(due_for_hardening(tenants, active, LEVELS, limit=5)) == ["b", "f"]


def test_active_harden_requests_count_against_the_bound() -> None:
    tenants = [_tenant(t) for t in "abcde"]
    active = {"a": _request("a", RequestKind.HARDEN), "b": _request("b", RequestKind.HARDEN)}

    assert _ids(due_for_hardening(tenants, active, LEVELS, limit=3)) == ["c"]
    assert due_for_hardening(tenants, active, LEVELS, limit=2) == []
    # Cooling tenants (a recent failure) make room for the next in line.
    assert _ids(due_for_hardening(tenants, {}, LEVELS, limit=2, cooling={"a"})) == ["b", "c"]


# ------------------------------------------------------------ through the queue


@pytest.fixture
async def fleet(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Fleet]:
    """A fleet that may queue two harden requests at a time."""
    async with open_fleet(tmp_path, engine, harden_per_pass=2) as opened:
        yield opened


async def _harden_requests(fleet: Fleet) -> list[Request]:
    found = []
    for tenant in await fleet.cp.list_tenants():
        active = await fleet.cp.active_request(tenant.tenant_id)
        if active is not None and active.kind is RequestKind.HARDEN:
            found.append(active)
    return found


async def test_provisioning_records_the_engines_level(fleet: Fleet) -> None:
    tenant = await fleet.ready("hd-new")

    assert tenant.hardening_level == fleet.engine.hardening_level == 1
    assert await Reconciler(fleet.app).reconcile_once() is not None
    assert await _harden_requests(fleet) == []


async def test_pass_queues_a_bounded_number_and_the_worker_hardens(fleet: Fleet) -> None:
    for tid in ("hd-a", "hd-b", "hd-c", "hd-d"):
        await fleet.ready(tid)
    # hd-a is busy with an on-demand backup: never hardened concurrently with it.
    await TenantService(fleet.app).backup("hd-a")
    fleet.engine.hardening_level = 2  # an upgrade bumped the engine's hardening
    reconciler = Reconciler(fleet.app)

    report = await reconciler.reconcile_once()

    assert sorted(a.tenant_id or "" for a in report.of("harden_queued")) == ["hd-b", "hd-c"]
    assert sorted(r.tenant_id for r in await _harden_requests(fleet)) == ["hd-b", "hd-c"]
    # The two queued ones fill the bound: the next pass queues nothing more.
    assert (await reconciler.reconcile_once()).of("harden_queued") == ()

    rbac_before = fleet.engine.hooks().count("apply_rbac")
    await fleet.work_once()  # the backup of hd-a
    for _ in range(2):
        assert (await fleet.work_once()).status is RequestStatus.DONE
    assert fleet.engine.hooks().count("apply_rbac") == rbac_before + 2
    for tid in ("hd-b", "hd-c"):
        tenant = await fleet.tenant(tid)
        assert (tenant.status, tenant.hardening_level) == (Status.READY, 2)
        hardened = [e for e in await fleet.cp.events(tid) if e["kind"] == "hardened"]
        assert [(e["detail"]["from"], e["detail"]["to"]) for e in hardened] == [(1, 2)]
        assert tenant.isolation is not None and tenant.isolation.passed

    report = await reconciler.reconcile_once()
    assert sorted(a.tenant_id or "" for a in report.of("harden_queued")) == ["hd-a", "hd-d"]
    for _ in range(2):
        await fleet.work_once()
    assert (await reconciler.reconcile_once()).of("harden_queued") == ()
    assert {t.hardening_level for t in await fleet.cp.list_tenants()} == {2}


async def test_failed_harden_keeps_the_tenant_and_is_retried_later(
    tmp_path: Path, engine: FakeEngine
) -> None:
    async with open_fleet(tmp_path, engine, harden_per_pass=1, harden_retry_s=3600.0,
                          max_attempts=1) as fleet:
        before = await fleet.ready("hd-fail")
        engine.hardening_level = 2
        engine.fail["apply_rbac"] = RuntimeError("server said no")
        reconciler = Reconciler(fleet.app)
        await reconciler.reconcile_once()

        assert (await fleet.work_once()).status is RequestStatus.FAILED
        tenant = await fleet.tenant("hd-fail")
        assert (tenant.status, tenant.hardening_level, tenant.error) == (Status.READY, 1, None)
        assert await fleet.cp.credentials_token("hd-fail") is not None
        assert tenant.request_id == before.request_id
        failed = [e for e in await fleet.cp.events("hd-fail") if e["kind"] == "harden_failed"]
        assert len(failed) == 1 and "server said no" in failed[0]["detail"]["reason"]
        # Within harden_retry_s it is not queued again …
        assert (await reconciler.reconcile_once()).of("harden_queued") == ()

        # … after it, it is, and succeeds once the cause is gone.
        del engine.fail["apply_rbac"]
        tenants = {t.tenant_id: t for t in await fleet.cp.list_tenants()}
        later = time.time() + 3601.0
        assert len(await HardenSweep(fleet.app).sweep(tenants, {"hd-fail": None}, later)) == 1
        assert (await fleet.work_once()).status is RequestStatus.DONE
        assert (await fleet.tenant("hd-fail")).hardening_level == 2


async def test_failed_proof_after_rbac_does_not_record_the_level(fleet: Fleet) -> None:
    await fleet.ready("hd-proof")
    fleet.engine.hardening_level = 2
    fleet.engine.failing_checks = {"roles_not_privileged"}
    await Reconciler(fleet.app).reconcile_once()

    await fleet.work_once()

    tenant = await fleet.tenant("hd-proof")
    assert (tenant.status, tenant.hardening_level) == (Status.READY, 1)
    assert not [e for e in await fleet.cp.events("hd-proof") if e["kind"] == "hardened"]


async def test_redelivered_or_moved_on_request_does_nothing(fleet: Fleet) -> None:
    await fleet.ready("hd-gone")
    fleet.engine.hardening_level = 2
    await Reconciler(fleet.app).reconcile_once()
    await fleet.cp.update_tenant("hd-gone", TenantUpdate(status=Status.DEGRADED))
    rbac_before = fleet.engine.hooks().count("apply_rbac")

    assert (await fleet.work_once()).status is RequestStatus.DONE

    assert fleet.engine.hooks().count("apply_rbac") == rbac_before
    assert (await fleet.tenant("hd-gone")).hardening_level == 1


async def test_new_control_plane_rows_start_at_level_zero(fleet: Fleet) -> None:
    """Migration 0011's default: a row written without a level (an older cloner) is 0."""
    await fleet.cp.db.execute(
        "INSERT INTO tenants (tenant_id, status, engine, industry, template_version, "
        "attempts, created_at, updated_at) VALUES "
        "('hd-old', 'ready', 'postgres', 'none', 'v1.1', 0, '2026-01-01', '2026-01-01')"
    )

    assert (await fleet.tenant("hd-old")).hardening_level == 0
