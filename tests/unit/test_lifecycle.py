"""Unit tests of the admin lifecycle on fakes: restore, on-demand backup, retention, history.

Real worker, pipelines, SQLite control plane and state machine; ``InMemoryRuntime``
and ``FakeEngine`` instead of Docker and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloner import constants
from cloner.backups import list_backups
from cloner.controlplane import TenantUpdate
from cloner.daemon.reconciler import Reconciler
from cloner.domain import (
    Engine,
    Industry,
    RequestKind,
    RequestStatus,
    Status,
    Tenant,
    TenantSpec,
    volume_name,
)
from cloner.errors import (
    BackupError,
    InvalidBackup,
    InvalidTransition,
    TenantExists,
    TenantNotFound,
)
from cloner.tenants import TenantService
from tests.unit.conftest import Env, EnvFactory, make_backup

ACTOR = "cli:alice"


async def ready(env: Env, tenant_id: str = "acme") -> Tenant:
    """Provision a tenant to READY through the real worker."""
    await env.create(tenant_id)
    assert (await env.work_once()).status is RequestStatus.DONE
    return await env.tenant(tenant_id)


async def deprovision(env: Env, tenant_id: str = "acme", *, purge: bool = False) -> Tenant:
    """Delete a tenant through the real worker; the tenant afterwards."""
    await TenantService(env.app).delete(tenant_id, purge=purge, actor=ACTOR)
    assert (await env.work_once()).status is RequestStatus.DONE
    return await env.tenant(tenant_id)


def service(env: Env) -> TenantService:
    """The service the CLI and HTTP API call."""
    return TenantService(env.app)


async def passwords(env: Env, tenant_id: str = "acme") -> set[str]:
    """Every generated password of a tenant."""
    creds = await env.app.services.credentials(tenant_id)
    assert creds is not None
    return set(creds.all_secrets())


def backups_dir(env: Env) -> Path:
    """The app's backups directory."""
    return env.app.settings.backups_dir


# --------------------------------------------------------------------- restore


async def test_purged_tenant_is_restored_through_the_provisioning_pipeline(env: Env) -> None:
    """Purged → restore: the backup is loaded instead of templates, new secrets, proof, ready."""
    await ready(env)
    old_passwords = await passwords(env)
    purged = await deprovision(env, purge=True)
    assert purged.status is Status.PURGED
    assert volume_name("acme") not in env.runtime.volumes
    final = purged.backup
    assert final is not None
    hooks_before = len(env.engine.calls)

    request = await service(env).restore("acme", actor=ACTOR)
    assert request.kind is RequestKind.RESTORE
    assert request.payload["backup"] == str(Path(final["path"]).resolve())
    assert request.payload["sha256"] == final["sha256"]
    assert (await env.tenant()).status is Status.REQUESTED
    assert await env.app.control_plane.credentials_token("acme") is None
    done = await env.work_once()

    assert done.status is RequestStatus.DONE
    tenant = await env.tenant()
    assert tenant.status is Status.READY
    assert tenant.isolation is not None and tenant.isolation.passed
    assert tenant.backup == final  # the restore takes no backup of its own
    assert tenant.created_at == purged.created_at
    hooks = env.engine.hooks()[hooks_before:]
    assert "apply_templates" not in hooks
    assert hooks.index("restore") < hooks.index("apply_rbac") < hooks.index("prove_isolation")
    assert env.engine.restored == [("acme", Path(final["path"]).resolve())]
    assert not (await passwords(env)) & old_passwords
    volume = env.runtime.volumes[volume_name("acme")]
    assert volume[constants.LABEL_REQUEST] == request.id
    events = await env.app.control_plane.events("acme")
    kinds = [e["kind"] for e in events]
    assert kinds.index("purged") < kinds.index("restore_requested") < kinds.index("restored")
    requested = next(e for e in events if e["kind"] == "restore_requested")
    assert requested["detail"]["actor"] == ACTOR
    assert requested["detail"]["backup"] == request.payload["backup"]
    assert events[-1]["kind"] == "restored" and events[-1]["detail"]["actor"] == ACTOR
    assert env.metric("cloner_restores_total", engine="postgres", outcome="success") == 1
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="success",
                      error_class="") == 1


async def test_deprovisioned_tenant_restore_replaces_its_stale_volume(env: Env) -> None:
    """A deprovisioned tenant's kept volume is replaced by a fresh one of the restore request."""
    created = await ready(env)
    await deprovision(env)
    assert env.runtime.volumes[volume_name("acme")][constants.LABEL_REQUEST] == \
        created.request_id

    request = await service(env).restore("acme", actor=ACTOR)
    assert (await env.work_once()).status is RequestStatus.DONE

    assert (await env.tenant()).status is Status.READY
    assert env.runtime.volumes[volume_name("acme")][constants.LABEL_REQUEST] == request.id
    container = env.runtime.containers["cloner-acme"]
    assert container.labels[constants.LABEL_REQUEST] == request.id


async def test_restore_from_an_older_backup_takes_its_manifests_spec(env: Env) -> None:
    """--from an older backup: that file is loaded, its template version and industry kept."""
    await ready(env)
    await deprovision(env, purge=True)
    older = make_backup(backups_dir(env), "acme", stamp="20250101T000000000000Z",
                        template_version="v1.0", industry="healthcare")

    request = await service(env).restore("acme", older.name, actor=ACTOR)
    assert (await env.work_once()).status is RequestStatus.DONE

    tenant = await env.tenant()
    assert tenant.status is Status.READY
    assert (tenant.template_version, tenant.industry) == ("v1.0", Industry.HEALTHCARE)
    assert env.engine.restored[-1] == ("acme", older.resolve())
    assert request.payload["template_version"] == "v1.0"
    label = env.runtime.containers["cloner-acme"].labels[constants.LABEL_TEMPLATE_VERSION]
    assert label == "v1.0"


@pytest.mark.parametrize("state", ["requested", "ready", "degraded", "deprovisioning",
                                   "failed-create"])
async def test_restore_is_refused_unless_deprovisioned_or_purged(env: Env, state: str) -> None:
    """Live, unfinished, in-deletion and failed-create tenants cannot be restored (409)."""
    make_backup(backups_dir(env), "acme")
    if state == "requested":
        await env.create()
    elif state == "failed-create":
        env.engine.fail["apply_templates"] = BackupError("broken template")
        await env.create()
        await env.work_once()
    else:
        await ready(env)
        if state != "ready":
            target = Status.DEGRADED if state == "degraded" else Status.DEPROVISIONING
            await env.cp.update_tenant("acme", TenantUpdate(status=target))
    before = await env.tenant()
    active = await env.cp.active_request("acme")

    with pytest.raises(InvalidTransition) as info:
        await service(env).restore("acme", "acme-20260101T000000000000Z.dump")

    assert info.value.http_status == 409 and info.value.exit_code == 2
    assert before.status.value in info.value.message
    assert (await env.tenant()).status is before.status
    assert await env.cp.active_request("acme") == active


async def test_restore_of_an_unknown_tenant_is_not_found(env: Env) -> None:
    """No registry row: 404 / exit 2, and nothing is enqueued."""
    with pytest.raises(TenantNotFound):
        await service(env).restore("ghost")
    assert await env.cp.active_request("ghost") is None


@pytest.mark.parametrize("value", [
    "../other/other-20260101T000000000000Z.dump",
    "/etc/passwd",
    "../../control-plane.sqlite3",
])
async def test_restore_refuses_paths_outside_the_tenants_folder(env: Env, value: str) -> None:
    """Path traversal is refused with InvalidBackup (422 / exit 2) before anything is queued."""
    await ready(env)
    await deprovision(env, purge=True)
    make_backup(backups_dir(env), "other")

    with pytest.raises(InvalidBackup, match="outside") as info:
        await service(env).restore("acme", value)

    assert (info.value.http_status, info.value.exit_code) == (422, 2)
    assert (await env.tenant()).status is Status.PURGED
    assert await env.cp.active_request("acme") is None


async def test_restore_refuses_a_tampered_default_backup(env: Env) -> None:
    """The recorded backup is hashed again; a changed file is refused and nothing queued."""
    await ready(env)
    tenant = await deprovision(env, purge=True)
    assert tenant.backup is not None
    path = Path(tenant.backup["path"])
    path.write_bytes(path.read_bytes()[:-1] + b"!")

    with pytest.raises(InvalidBackup, match="failed verification"):
        await service(env).restore("acme")
    assert await env.cp.active_request("acme") is None


async def test_restore_without_any_recorded_backup_names_the_way_out(env: Env) -> None:
    """No recorded backup and no --from: the error points at `backup list` and --from."""
    await ready(env)
    await deprovision(env, purge=True)
    await env.cp.update_tenant("acme", TenantUpdate(backup=None))

    with pytest.raises(InvalidBackup, match=r"no recorded backup.*--from"):
        await service(env).restore("acme")


async def test_restore_refuses_to_replace_an_unbacked_deprovisioned_volume(env: Env) -> None:
    """--from another backup while the kept volume's final backup does not verify: refused."""
    await ready(env)
    tenant = await deprovision(env)
    assert tenant.backup is not None
    Path(tenant.backup["path"]).unlink()
    other = make_backup(backups_dir(env), "acme", stamp="20250101T000000000000Z")

    with pytest.raises(InvalidTransition, match="still has its data volume"):
        await service(env).restore("acme", other.name)

    # Once the volume is gone there is nothing left to protect.
    await env.runtime.remove_volume(volume_name("acme"))
    request = await service(env).restore("acme", other.name)
    assert request.kind is RequestKind.RESTORE


async def test_backup_changed_after_enqueue_fails_the_restore_at_resolve(env: Env) -> None:
    """The worker verifies the file again; a swapped archive fails the request, not the data."""
    await ready(env)
    tenant = await deprovision(env, purge=True)
    assert tenant.backup is not None
    await service(env).restore("acme", actor=ACTOR)
    path = Path(tenant.backup["path"])
    path.write_bytes(path.read_bytes() + b"appended")

    done = await env.work_once()

    assert done.status is RequestStatus.FAILED
    failed = await env.tenant()
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error["step"] == "resolve"
    assert failed.error["class"] == "InvalidBackup"
    assert "restore" not in env.engine.hooks()
    event = (await env.cp.events("acme"))[-1]
    assert (event["kind"], event["detail"]["actor"]) == ("restore_failed", ACTOR)
    assert env.metric("cloner_restores_total", engine="postgres", outcome="failure") == 1
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="failure",
                      error_class="InvalidBackup") == 0


async def test_a_failed_restore_can_be_restored_again(env: Env) -> None:
    """A restore that failed leaves the tenant failed; restoring again is allowed and works."""
    await ready(env)
    await deprovision(env, purge=True)
    env.engine.fail_next["restore"] = [BackupError("pg_restore: out of disk")]
    await service(env).restore("acme")
    assert (await env.work_once()).status is RequestStatus.FAILED
    failed = await env.tenant()
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error["step"] == "template"
    assert volume_name("acme") not in env.runtime.volumes  # compensated

    await service(env).restore("acme")
    assert (await env.work_once()).status is RequestStatus.DONE
    assert (await env.tenant()).status is Status.READY


async def test_identical_create_during_a_restore_is_refused(env: Env) -> None:
    """A signup retry must not mistake a queued restore for its own create."""
    await ready(env)
    await deprovision(env, purge=True)
    await service(env).restore("acme")

    with pytest.raises(TenantExists, match="being restored"):
        await service(env).create_or_get("acme", "postgres", "finance")


async def test_control_plane_refuses_a_restore_of_a_ready_tenant(env: Env) -> None:
    """The state machine is checked inside the enqueue transaction too, not only by callers."""
    tenant = await ready(env)

    with pytest.raises(InvalidTransition):
        await env.cp.enqueue(tenant.spec, RequestKind.RESTORE, "acme", {"backup": "x"})

    assert (await env.tenant()).status is Status.READY
    assert await env.cp.active_request("acme") is None
    assert await env.cp.credentials_token("acme") is not None


async def test_restore_enqueue_takes_the_spec_and_clears_the_old_incarnation(env: Env) -> None:
    """Enqueue moves a purged row to requested with the backup's spec and no stale fields."""
    await ready(env)
    purged = await deprovision(env, purge=True)
    spec = TenantSpec("acme", Engine.POSTGRES, Industry.TECHNOLOGY, "v1.0")

    request = await env.cp.enqueue(spec, RequestKind.RESTORE, "acme", {"actor": ACTOR})

    row = await env.tenant()
    assert (row.status, row.spec, row.request_id) == (Status.REQUESTED, spec, request.id)
    assert (row.endpoint, row.container_id, row.isolation, row.error) == (None,) * 4
    assert not row.has_credentials and row.attempts == 0
    assert row.backup == purged.backup and row.created_at == purged.created_at


# ------------------------------------------------------------ on-demand backup


async def test_on_demand_backup_of_a_ready_tenant_is_recorded_and_listed(env: Env) -> None:
    """`tenant backup`: queued, run by a worker, recorded with actor; `backup list` verifies."""
    await ready(env)
    env.runtime.dump_payload = b"PGDMP on-demand contents"

    request = await service(env).backup("acme", actor=ACTOR)
    assert request.kind is RequestKind.BACKUP
    assert (await env.work_once()).status is RequestStatus.DONE

    tenant = await env.tenant()
    assert tenant.status is Status.READY
    assert tenant.backup is not None
    assert (tenant.backup["reason"], tenant.backup["request"], tenant.backup["actor"]) == (
        "on-demand", request.id, ACTOR)
    assert tenant.backup["sha256"] == hashlib.sha256(b"PGDMP on-demand contents").hexdigest()
    (listed,) = list_backups(backups_dir(env), "acme")
    assert listed.verified and listed.manifest["actor"] == ACTOR
    assert str(listed.path) == tenant.backup["path"]
    assert env.metric("cloner_backups_total", engine="postgres", outcome="success") == 1
    assert (await env.cp.events("acme"))[-1]["kind"] == "backup"


@pytest.mark.parametrize("state", ["requested", "deprovisioned"])
async def test_on_demand_backup_needs_a_ready_tenant(env: Env, state: str) -> None:
    """Only a ready tenant is backed up on demand (409 / exit 2 otherwise)."""
    if state == "requested":
        await env.create()
    else:
        await ready(env)
        await deprovision(env)

    with pytest.raises(InvalidTransition, match="only a ready tenant"):
        await service(env).backup("acme")


async def test_failed_on_demand_backup_leaves_the_tenant_ready(env: Env) -> None:
    """A failing backup fails its request and is in the history; the tenant stays ready."""
    await ready(env)
    env.engine.fail["backup"] = BackupError("disk full")

    await service(env).backup("acme", actor=ACTOR)
    done = await env.work_once()

    assert done.status is RequestStatus.FAILED
    assert done.last_error is not None and "disk full" in done.last_error
    tenant = await env.tenant()
    assert (tenant.status, tenant.error) == (Status.READY, None)
    event = (await env.cp.events("acme"))[-1]
    assert (event["kind"], event["detail"]["actor"]) == ("backup_failed", ACTOR)


# ------------------------------------------------------------------- retention


async def test_retention_zero_purges_a_deprovisioned_tenant_and_keeps_its_backup(
    make_env: EnvFactory,
) -> None:
    """retention_days=0: the pass queues a purge; the worker removes the volume, keeps backups."""
    env = await make_env(retention_days=0)
    await ready(env)
    tenant = await deprovision(env)
    assert volume_name("acme") in env.runtime.volumes

    report = await Reconciler(env.app).reconcile_once()

    (queued,) = report.of("retention_queued")
    assert queued.tenant_id == "acme"
    active = await env.cp.active_request("acme")
    assert active is not None and active.kind is RequestKind.DEPROVISION
    assert active.payload == {"purge": True, "actor": "retention", "reason": "retention"}
    assert (await env.work_once()).status is RequestStatus.DONE
    purged = await env.tenant()
    assert purged.status is Status.PURGED
    assert volume_name("acme") not in env.runtime.volumes
    assert tenant.backup is not None and Path(tenant.backup["path"]).is_file()
    event = (await env.cp.events("acme"))[-1]
    assert (event["kind"], event["detail"]["actor"]) == ("purged", "retention")
    assert env.metric("cloner_reconcile_actions_total", action="retention_purged") == 1
    assert env.metric("cloner_reconcile_actions_total", action="retention_queued") == 1


async def test_retention_waits_until_the_deprovisioning_is_old_enough(
    make_env: EnvFactory,
) -> None:
    """Within retention nothing happens; once the deprovisioned event is older, a purge is due."""
    env = await make_env(retention_days=1)
    await ready(env)
    await deprovision(env)
    reconciler = Reconciler(env.app)

    assert not (await reconciler.reconcile_once()).of("retention_queued")
    assert await env.cp.active_request("acme") is None

    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat(timespec="milliseconds")
    with sqlite3.connect(env.app.settings.control_plane_path) as db:
        db.execute("UPDATE events SET at = ? WHERE tenant_id = 'acme' AND kind = 'deprovisioned'",
                   (two_days_ago,))
    assert len((await reconciler.reconcile_once()).of("retention_queued")) == 1


async def test_retention_never_purges_without_a_verified_backup(make_env: EnvFactory) -> None:
    """A due tenant whose backup fails verification keeps its volume; reported once."""
    env = await make_env(retention_days=0)
    await ready(env)
    tenant = await deprovision(env)
    assert tenant.backup is not None
    Path(tenant.backup["path"]).write_bytes(b"PGDMP not what was backed up")
    reconciler = Reconciler(env.app)

    first = await reconciler.reconcile_once()
    second = await reconciler.reconcile_once()

    assert len(first.of("retention_blocked")) == 1 and len(second.of("retention_blocked")) == 1
    assert "does not verify" in first.of("retention_blocked")[0].detail
    assert env.metric("cloner_reconcile_actions_total", action="retention_blocked") == 1
    assert await env.cp.active_request("acme") is None
    assert volume_name("acme") in env.runtime.volumes
    assert (await env.tenant()).status is Status.DEPROVISIONED


# --------------------------------------------------------------------- history


async def test_tenant_document_lists_events_with_who_asked(env: Env) -> None:
    """`tenant show --json` carries the history; deprovision events name their actor."""
    await ready(env)
    await deprovision(env)

    doc = await service(env).to_json(await env.tenant(), reveal=False, events=True)
    plain = await service(env).to_json(await env.tenant(), reveal=False)

    assert "events" not in plain
    by_kind = {e["kind"]: e for e in doc["events"]}
    assert by_kind["deprovision_requested"]["detail"]["actor"] == ACTOR
    assert by_kind["deprovision_started"]["detail"]["actor"] == ACTOR
    assert by_kind["deprovisioned"]["detail"]["actor"] == ACTOR
    assert by_kind["backup"]["detail"]["actor"] == ACTOR
    assert [e["at"] for e in doc["events"]] == sorted(e["at"] for e in doc["events"])
