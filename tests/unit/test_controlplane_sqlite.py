"""Unit tests of the SQLite control plane: queue leases, registry transitions, file safety."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloner.controlplane import SQLiteControlPlane, TenantUpdate
from cloner.domain import (
    CheckResult,
    Endpoint,
    Engine,
    Industry,
    IsolationReport,
    Lease,
    Request,
    RequestKind,
    RequestStatus,
    Status,
    TenantSpec,
)
from cloner.errors import (
    ControlPlaneError,
    InvalidTransition,
    LeaseLost,
    TenantExists,
    TenantNotFound,
)

TTL_S = 30.0
SHORT_TTL_S = 0.01


def _spec(tenant_id: str = "acme", engine: Engine = Engine.POSTGRES) -> TenantSpec:
    return TenantSpec(tenant_id, engine, Industry.FINANCE, "v1.1")


async def _provision(cp: SQLiteControlPlane, tenant_id: str = "acme",
                     engine: Engine = Engine.POSTGRES) -> Request:
    return await cp.enqueue(
        _spec(tenant_id, engine), RequestKind.PROVISION, tenant_id,
        {"engine": engine.value, "industry": "finance", "template_version": "v1.1"},
    )


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[SQLiteControlPlane]:
    """An open control plane on a fresh file."""
    plane = SQLiteControlPlane(tmp_path / "cp.sqlite3")
    await plane.open()
    try:
        yield plane
    finally:
        await plane.close()


# ------------------------------------------------------------------ enqueue


async def test_enqueue_provision_creates_requested_tenant_and_queued_request(
    cp: SQLiteControlPlane,
) -> None:
    """Enqueueing a provision records the tenant as requested and one queued request."""
    request = await _provision(cp)
    assert request.status is RequestStatus.QUEUED
    assert request.kind is RequestKind.PROVISION
    assert request.attempts == 0
    assert request.payload["template_version"] == "v1.1"
    tenant = await cp.get_tenant("acme")
    assert tenant is not None
    assert tenant.status is Status.REQUESTED
    assert (tenant.engine, tenant.industry, tenant.template_version) == (
        Engine.POSTGRES, Industry.FINANCE, "v1.1")
    assert tenant.request_id == request.id
    assert tenant.has_credentials is False
    active = await cp.active_request("acme")
    assert active is not None
    assert active.id == request.id
    assert [e["kind"] for e in await cp.events("acme")] == ["provision_requested"]


async def test_second_enqueue_for_same_tenant_raises_tenant_exists(cp: SQLiteControlPlane) -> None:
    """A tenant that is not failed or purged cannot be requested twice."""
    first = await _provision(cp)
    with pytest.raises(TenantExists, match="already exists"):
        await _provision(cp)
    tenant = await cp.get_tenant("acme")
    assert tenant is not None
    assert tenant.request_id == first.id
    assert (await cp.queue_stats()).queued == 1


async def test_deprovision_of_unknown_tenant_raises_tenant_not_found(
    cp: SQLiteControlPlane,
) -> None:
    """A deprovision request needs an existing tenant row."""
    with pytest.raises(TenantNotFound):
        await cp.enqueue(None, RequestKind.DEPROVISION, "ghost", {"purge": False})
    assert (await cp.queue_stats()).queued == 0


# ------------------------------------------------------------------- leases


async def test_claim_leases_the_request_once(cp: SQLiteControlPlane) -> None:
    """claim returns the request running with attempts=1; a second claim finds nothing."""
    request = await _provision(cp)
    claimed = await cp.claim("worker-a", TTL_S)
    assert claimed is not None
    assert claimed.id == request.id
    assert claimed.status is RequestStatus.RUNNING
    assert claimed.attempts == 1
    assert await cp.claim("worker-b", TTL_S) is None
    assert await cp.claim("worker-a", TTL_S) is None


async def test_claim_on_empty_queue_returns_none(cp: SQLiteControlPlane) -> None:
    """An empty queue yields no request."""
    assert await cp.claim("worker-a", TTL_S) is None


async def _claim(cp: SQLiteControlPlane, owner: str, ttl_s: float = TTL_S) -> Lease:
    claimed = await cp.claim(owner, ttl_s)
    assert claimed is not None and claimed.lease is not None
    return claimed.lease


async def test_renew_only_by_the_lease_holder(cp: SQLiteControlPlane) -> None:
    """The attempt holding the lease can renew it; a made-up token cannot."""
    request = await _provision(cp)
    lease = await _claim(cp, "worker-a")
    assert lease.request_id == request.id
    assert lease.token.startswith("worker-a.")
    assert await cp.renew(lease, TTL_S) is True
    assert await cp.renew(Lease(request.id, "worker-a"), TTL_S) is False
    assert await cp.renew(Lease(request.id, "worker-b.0000"), TTL_S) is False


async def test_each_claim_gets_its_own_token_even_for_the_same_owner(
    cp: SQLiteControlPlane,
) -> None:
    """Two claims by one owner (two workers of one daemon) are two attempts, two tokens."""
    request = await _provision(cp)
    first = await _claim(cp, "daemon-1", SHORT_TTL_S)
    await asyncio.sleep(0.05)
    second = await _claim(cp, "daemon-1", TTL_S)
    assert first.token != second.token
    assert await cp.renew(first, TTL_S) is False
    assert await cp.renew(second, TTL_S) is True
    # The token is handed to the claimer only: reads of the request never carry it.
    read = await cp.get_request(request.id)
    assert read is not None and read.lease is None


async def test_expired_lease_is_retaken_without_any_daemon_row(cp: SQLiteControlPlane) -> None:
    """After the TTL another attempt claims it (attempts=2) and the old attempt is fenced off."""
    request = await _provision(cp)
    assert await cp.live_daemons(within_s=3600) == []
    first = await _claim(cp, "worker-a", SHORT_TTL_S)
    await asyncio.sleep(0.05)
    second = await cp.claim("worker-b", TTL_S)
    assert second is not None and second.lease is not None
    assert second.id == request.id
    assert second.attempts == 2
    assert second.status is RequestStatus.RUNNING
    assert await cp.renew(first, TTL_S) is False
    assert await cp.renew(second.lease, TTL_S) is True
    # the old attempt can no longer finish it either
    with pytest.raises(LeaseLost, match="no longer held"):
        await cp.complete(first)
    current = await cp.get_request(request.id)
    assert current is not None
    assert current.status is RequestStatus.RUNNING


async def test_stale_attempt_of_the_same_owner_cannot_write_anything(
    cp: SQLiteControlPlane,
) -> None:
    """Same owner, re-claimed after expiry: the first attempt's every write is refused."""
    request = await _provision(cp)
    stale = await _claim(cp, "daemon-1", SHORT_TTL_S)
    await asyncio.sleep(0.05)
    current = await _claim(cp, "daemon-1", TTL_S)
    counter = await cp.registry_change_counter()
    events = await cp.events("acme")

    with pytest.raises(LeaseLost):
        await cp.update_tenant("acme", TenantUpdate(status=Status.PROVISIONING,
                                                    container_name="stale"), lease=stale)
    for write in (cp.complete(stale), cp.fail(stale, "boom"), cp.retry(stale, "boom", 0.0),
                  cp.release(stale)):
        with pytest.raises(LeaseLost):
            await write

    # Nothing of the refused writes landed: row, history, change counter, request.
    tenant = await cp.get_tenant("acme")
    assert tenant is not None
    assert tenant.status is Status.REQUESTED and tenant.container_name is None
    assert await cp.events("acme") == events
    assert await cp.registry_change_counter() == counter
    row = await cp.get_request(request.id)
    assert row is not None
    assert row.status is RequestStatus.RUNNING and row.last_error is None
    # The current attempt writes as usual.
    updated = await cp.update_tenant("acme", TenantUpdate(status=Status.PROVISIONING),
                                     lease=current)
    assert updated.status is Status.PROVISIONING
    await cp.complete(current)
    done = await cp.get_request(request.id)
    assert done is not None and done.status is RequestStatus.DONE
    # A finished request fences its own last attempt too.
    with pytest.raises(LeaseLost):
        await cp.update_tenant("acme", TenantUpdate(error=None), lease=current)


async def test_lease_fences_writes_to_its_own_tenant_only(cp: SQLiteControlPlane) -> None:
    """A held lease of one tenant's request does not license writes to another tenant."""
    await _provision(cp)
    await cp.enqueue(TenantSpec("other", Engine.POSTGRES, Industry.TECHNOLOGY, "v1.0"),
                     RequestKind.PROVISION, "other", {})
    lease = await _claim(cp, "worker-a")
    claimed = await cp.get_request(lease.request_id)
    assert claimed is not None
    neighbour = "other" if claimed.tenant_id == "acme" else "acme"
    with pytest.raises(LeaseLost):
        await cp.update_tenant(neighbour, TenantUpdate(error={"x": 1}), lease=lease)
    tenant = await cp.get_tenant(neighbour)
    assert tenant is not None and tenant.error is None


async def test_unexpired_lease_is_not_retaken(cp: SQLiteControlPlane) -> None:
    """A renewed lease keeps the request away from other workers."""
    await _provision(cp)
    lease = await _claim(cp, "worker-a", 0.2)
    assert await cp.renew(lease, TTL_S) is True
    await asyncio.sleep(0.25)
    assert await cp.claim("worker-b", TTL_S) is None


async def test_retry_with_delay_is_not_claimable_until_delay_passed(
    cp: SQLiteControlPlane,
) -> None:
    """retry requeues with backoff: invisible until the delay passed, then attempts=2."""
    request = await _provision(cp)
    lease = await _claim(cp, "worker-a")
    await cp.retry(lease, "docker hiccup", delay_s=0.4)
    queued = await cp.get_request(request.id)
    assert queued is not None
    assert queued.status is RequestStatus.QUEUED
    assert queued.last_error == "docker hiccup"
    assert await cp.claim("worker-b", TTL_S) is None
    await asyncio.sleep(0.45)
    again = await cp.claim("worker-b", TTL_S)
    assert again is not None
    assert again.id == request.id
    assert again.attempts == 2


async def test_retry_by_non_holder_is_refused(cp: SQLiteControlPlane) -> None:
    """A worker without the lease cannot requeue the request."""
    request = await _provision(cp)
    await _claim(cp, "worker-a")
    with pytest.raises(LeaseLost):
        await cp.retry(Lease(request.id, "worker-b.1234"), "not mine", delay_s=0)
    current = await cp.get_request(request.id)
    assert current is not None
    assert current.status is RequestStatus.RUNNING
    assert current.last_error is None


async def test_release_returns_request_without_charging_an_attempt(
    cp: SQLiteControlPlane,
) -> None:
    """A released request is queued again and the next claim is still attempt 1."""
    request = await _provision(cp)
    await cp.release(await _claim(cp, "worker-a"))
    released = await cp.get_request(request.id)
    assert released is not None
    assert released.status is RequestStatus.QUEUED
    assert released.attempts == 0
    again = await cp.claim("worker-b", TTL_S)
    assert again is not None
    assert again.attempts == 1


async def test_release_by_non_holder_is_refused(cp: SQLiteControlPlane) -> None:
    """Only the attempt holding the lease can hand a request back."""
    request = await _provision(cp)
    await _claim(cp, "worker-a")
    with pytest.raises(LeaseLost):
        await cp.release(Lease(request.id, "worker-b.1234"))
    current = await cp.get_request(request.id)
    assert current is not None
    assert current.status is RequestStatus.RUNNING
    assert current.attempts == 1


async def test_complete_is_terminal_and_allows_a_new_request(cp: SQLiteControlPlane) -> None:
    """A done request is never claimed again, and the tenant can take a new request."""
    request = await _provision(cp)
    lease = await _claim(cp, "worker-a", SHORT_TTL_S)
    await cp.complete(lease)
    done = await cp.get_request(request.id)
    assert done is not None
    assert done.status is RequestStatus.DONE
    await asyncio.sleep(0.05)
    assert await cp.claim("worker-b", TTL_S) is None
    assert await cp.active_request("acme") is None
    assert await cp.renew(lease, TTL_S) is False
    follow_up = await cp.enqueue(None, RequestKind.DEPROVISION, "acme", {"purge": False})
    assert follow_up.status is RequestStatus.QUEUED
    assert follow_up.id != request.id


async def test_fail_is_terminal_and_allows_a_new_request(cp: SQLiteControlPlane) -> None:
    """A failed request keeps its error, is never re-claimed, and frees the tenant's slot."""
    request = await _provision(cp)
    await cp.fail(await _claim(cp, "worker-a", SHORT_TTL_S), "template broken")
    failed = await cp.get_request(request.id)
    assert failed is not None
    assert failed.status is RequestStatus.FAILED
    assert failed.last_error == "template broken"
    await asyncio.sleep(0.05)
    assert await cp.claim("worker-b", TTL_S) is None
    assert await cp.active_request("acme") is None
    await cp.update_tenant("acme", TenantUpdate(status=Status.FAILED))
    again = await _provision(cp)
    assert again.id != request.id


async def test_one_active_request_per_tenant(cp: SQLiteControlPlane) -> None:
    """A deprovision cannot be queued while the tenant's provision is still active."""
    await _provision(cp)
    with pytest.raises(TenantExists, match="in progress"):
        await cp.enqueue(None, RequestKind.DEPROVISION, "acme", {"purge": False})


# ---------------------------------------------------------------- registry


async def test_update_tenant_enforces_transitions(cp: SQLiteControlPlane) -> None:
    """REQUESTED→READY is refused and leaves the row untouched."""
    await _provision(cp)
    with pytest.raises(InvalidTransition):
        await cp.update_tenant(
            "acme", TenantUpdate(status=Status.READY, container_name="cloner-acme")
        )
    tenant = await cp.get_tenant("acme")
    assert tenant is not None
    assert tenant.status is Status.REQUESTED
    assert tenant.container_name is None


async def test_update_tenant_applies_fields_and_records_events(cp: SQLiteControlPlane) -> None:
    """Allowed updates change the row and append status events in order."""
    await _provision(cp)
    await cp.update_tenant("acme", TenantUpdate(status=Status.PROVISIONING))
    report = IsolationReport((CheckResult("own_db", True, "ok"),))
    tenant = await cp.update_tenant(
        "acme",
        TenantUpdate(
            status=Status.READY,
            endpoint=Endpoint(host="127.0.0.1", port=49153, database="acme"),
            container_id="c0ffee",
            container_name="cloner-acme",
            credentials_token="gAAAA-token",
            isolation=report,
            timings={"total_s": 1.5},
        ),
    )
    assert tenant.status is Status.READY
    assert tenant.endpoint == Endpoint(host="127.0.0.1", port=49153, database="acme")
    assert tenant.container_name == "cloner-acme"
    assert tenant.isolation == report
    assert tenant.timings == {"total_s": 1.5}
    assert tenant.has_credentials is True
    assert await cp.credentials_token("acme") == "gAAAA-token"
    await cp.update_tenant("acme", TenantUpdate(event="health_checked", event_detail={"ok": 1}))
    events = await cp.events("acme")
    assert [e["kind"] for e in events] == [
        "provision_requested", "status_provisioning", "status_ready", "health_checked",
    ]
    assert events[-1]["detail"] == {"ok": 1}


async def test_update_unknown_tenant_raises_tenant_not_found(cp: SQLiteControlPlane) -> None:
    """Updating a tenant that does not exist is an error, not a silent no-op."""
    with pytest.raises(TenantNotFound):
        await cp.update_tenant("ghost", TenantUpdate(status=Status.PROVISIONING))


async def test_failed_tenant_can_be_recreated(cp: SQLiteControlPlane) -> None:
    """Enqueueing a failed tenant again resets its row to a fresh `requested` state."""
    first = await _provision(cp)
    lease = await _claim(cp, "worker-a")
    await cp.update_tenant("acme", TenantUpdate(status=Status.PROVISIONING,
                                                container_name="cloner-acme"))
    await cp.update_tenant("acme", TenantUpdate(
        status=Status.FAILED, error={"step": "ready", "reason": "timeout"}))
    await cp.fail(lease, "timeout")

    second = await cp.enqueue(
        TenantSpec("acme", Engine.POSTGRES, Industry.NONE, "v1.0"),
        RequestKind.PROVISION, "acme", {"engine": "postgres"},
    )
    tenant = await cp.get_tenant("acme")
    assert tenant is not None
    assert tenant.status is Status.REQUESTED
    assert tenant.error is None
    assert tenant.container_name is None
    assert (tenant.industry, tenant.template_version) == (Industry.NONE, "v1.0")
    assert tenant.request_id == second.id
    assert second.id != first.id


async def test_recreate_is_refused_atomically_while_a_request_is_active(
    cp: SQLiteControlPlane,
) -> None:
    """A failed tenant whose request is still running cannot be re-created, and is not reset."""
    await _provision(cp)
    assert await cp.claim("worker-a", TTL_S) is not None
    await cp.update_tenant("acme", TenantUpdate(
        status=Status.FAILED, error={"step": "start", "reason": "boom"}))
    with pytest.raises(TenantExists):
        await _provision(cp)
    tenant = await cp.get_tenant("acme")
    assert tenant is not None
    assert tenant.status is Status.FAILED
    assert tenant.error == {"step": "start", "reason": "boom"}


async def test_queue_stats_counts_queued_and_running(cp: SQLiteControlPlane) -> None:
    """queue_stats reports queued and running depth and the oldest queued age."""
    empty = await cp.queue_stats()
    assert (empty.queued, empty.running, empty.oldest_queued_age_s) == (0, 0, None)
    for tenant_id in ("one", "two", "three"):
        await _provision(cp, tenant_id)
    assert await cp.claim("worker-a", TTL_S) is not None
    stats = await cp.queue_stats()
    assert (stats.queued, stats.running) == (2, 1)
    assert stats.oldest_queued_age_s is not None
    assert 0 <= stats.oldest_queued_age_s < 60


async def test_tenant_counts_by_status_and_engine(cp: SQLiteControlPlane) -> None:
    """tenant_counts groups tenants by (status, engine)."""
    await _provision(cp, "one")
    await _provision(cp, "two")
    await _provision(cp, "three", Engine.SQLITE)
    await cp.update_tenant("two", TenantUpdate(status=Status.PROVISIONING))
    assert await cp.tenant_counts() == {
        ("requested", "postgres"): 1,
        ("provisioning", "postgres"): 1,
        ("requested", "sqlite"): 1,
    }


async def test_list_tenants_filters_by_status(cp: SQLiteControlPlane) -> None:
    """list_tenants returns all rows, or only those in the asked state."""
    await _provision(cp, "one")
    await _provision(cp, "two")
    await cp.update_tenant("two", TenantUpdate(status=Status.PROVISIONING))
    assert sorted(t.tenant_id for t in await cp.list_tenants()) == ["one", "two"]
    assert [t.tenant_id for t in await cp.list_tenants(Status.PROVISIONING)] == ["two"]
    assert await cp.list_tenants(Status.READY) == []


# -------------------------------------------------------------------- file


async def test_file_is_private_and_in_wal_mode(cp: SQLiteControlPlane) -> None:
    """The control-plane file is mode 0600 and uses WAL journaling."""
    assert stat.S_IMODE(cp.path.stat().st_mode) == 0o600
    with sqlite3.connect(cp.path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


async def test_two_instances_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    """A CLI and a daemon process sharing the file observe each other's changes."""
    path = tmp_path / "shared.sqlite3"
    cli, daemon = SQLiteControlPlane(path), SQLiteControlPlane(path)
    await cli.open()
    await daemon.open()
    try:
        request = await _provision(cli)
        seen = await daemon.get_tenant("acme")
        assert seen is not None
        assert seen.status is Status.REQUESTED
        claimed = await daemon.claim("daemon", TTL_S)
        assert claimed is not None
        assert claimed.id == request.id
        assert await cli.claim("cli", TTL_S) is None
        await daemon.update_tenant("acme", TenantUpdate(status=Status.PROVISIONING))
        via_cli = await cli.get_tenant("acme")
        assert via_cli is not None
        assert via_cli.status is Status.PROVISIONING
        current = await cli.get_request(request.id)
        assert current is not None
        assert current.status is RequestStatus.RUNNING
    finally:
        await cli.close()
        await daemon.close()


async def test_reopen_keeps_data_and_schema(tmp_path: Path) -> None:
    """Opening an existing control plane again migrates nothing and keeps its rows."""
    path = tmp_path / "cp.sqlite3"
    first = SQLiteControlPlane(path)
    await first.open()
    await _provision(first)
    await first.close()
    second = SQLiteControlPlane(path)
    await second.open()
    try:
        tenant = await second.get_tenant("acme")
        assert tenant is not None
        assert tenant.status is Status.REQUESTED
    finally:
        await second.close()


async def test_opening_a_directory_raises_control_plane_error(tmp_path: Path) -> None:
    """A path that is a directory gives a one-line ControlPlaneError."""
    target = tmp_path / "a-dir"
    target.mkdir()
    plane = SQLiteControlPlane(target)
    with pytest.raises(ControlPlaneError) as info:
        await plane.open()
    assert "\n" not in str(info.value)
    assert str(target) in str(info.value)


async def test_opening_a_non_sqlite_file_raises_control_plane_error(tmp_path: Path) -> None:
    """A file that is not an SQLite database gives a one-line ControlPlaneError."""
    target = tmp_path / "garbage.sqlite3"
    target.write_bytes(b"this is definitely not an sqlite database\n" * 100)
    plane = SQLiteControlPlane(target)
    with pytest.raises(ControlPlaneError) as info:
        await plane.open()
    assert "\n" not in str(info.value)
    assert str(target) in str(info.value)


async def test_a_second_open_keeps_the_first_connections_locks(tmp_path: Path) -> None:
    """Opening the control plane again in one process must not drop the first one's locks.

    Were the file read with a plain handle (closing it drops every POSIX lock the
    process holds on it), another process could take the database as its own and
    checkpoint and delete the WAL while the first connection still uses it.
    """
    path = tmp_path / "cp.sqlite3"
    first = SQLiteControlPlane(path)
    await first.open()
    try:
        await first.heartbeat_daemon("first", 1, "host")
        second = SQLiteControlPlane(path)
        await second.open()
        await second.close()
        child = (
            "import asyncio, sys\n"
            "from pathlib import Path\n"
            "from cloner.controlplane import SQLiteControlPlane\n"
            "async def main() -> None:\n"
            "    plane = SQLiteControlPlane(Path(sys.argv[1]))\n"
            "    await plane.open()\n"
            "    await plane.close()\n"
            "asyncio.run(main())\n"
        )
        await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", child, str(path)], check=True, timeout=60
        )
        assert path.with_name("cp.sqlite3-wal").exists(), "another process deleted the WAL"
        await first.heartbeat_daemon("first", 1, "host")
        assert [d["owner"] for d in await first.live_daemons(60)] == ["first"]
    finally:
        await first.close()


async def test_use_before_open_raises_control_plane_error(tmp_path: Path) -> None:
    """Calling the control plane before open() is a ControlPlaneError, not AttributeError."""
    plane = SQLiteControlPlane(tmp_path / "cp.sqlite3")
    with pytest.raises(ControlPlaneError, match="not open"):
        await plane.get_tenant("acme")


async def _write_raw(path: Path, sql: str, *params: object) -> None:
    """Change the file behind cloner's back, as a newer cloner or a hand edit would."""
    def write() -> None:
        with sqlite3.connect(path) as db:
            db.execute(sql, params)
    await asyncio.to_thread(write)


async def test_a_request_kind_this_cloner_does_not_know_is_left_for_a_newer_one(
    cp: SQLiteControlPlane,
) -> None:
    """A newer cloner's request kind is never claimed (it stays queued); others still are."""
    future = await _provision(cp, "future")
    await _write_raw(cp.path, "UPDATE requests SET kind = 'hibernate' WHERE id = ?", future.id)
    known = await _provision(cp, "known")
    claimed = await cp.claim("owner", TTL_S)
    assert claimed is not None and claimed.id == known.id
    assert await cp.claim("owner", TTL_S) is None
    with pytest.raises(ControlPlaneError, match=f"request '{future.id}'.*newer cloner"):
        await cp.get_request(future.id)


async def test_an_unreadable_tenant_row_is_a_one_line_control_plane_error(
    cp: SQLiteControlPlane,
) -> None:
    """A state this cloner does not know is a ControlPlaneError naming the tenant, not a
    ValueError that would kill a worker (and, restarted, kill it again)."""
    await _provision(cp, "acme")
    await _write_raw(cp.path, "UPDATE tenants SET status = 'hibernated' WHERE tenant_id = ?",
                     "acme")
    with pytest.raises(ControlPlaneError) as info:
        await cp.get_tenant("acme")
    assert "tenant 'acme'" in str(info.value) and "\n" not in str(info.value)
