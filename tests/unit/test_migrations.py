"""Unit tests of schema migrations: catalog, planner, registry, runner and rollout on fakes.

The control plane is the real SQLite one; the engine is ``FakeEngine`` (its
migration hooks keep a fake ``schema_info`` per tenant), the runtime is
``InMemoryRuntime``. Real PostgreSQL is exercised in
``tests/integration/test_migrations_pg.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloner.catalog import Catalog, lint_sql
from cloner.catalog.migrations import (
    AppliedMigration,
    Direction,
    MigrationCatalog,
    MigrationState,
)
from cloner.controlplane import SQLiteControlPlane, TenantUpdate
from cloner.controlplane import sqlite as sqlite_module
from cloner.controlplane.migrations import StepRecord, TenantOutcome
from cloner.daemon.health import HealthMonitor
from cloner.daemon.reconciler import Reconciler
from cloner.domain import (
    Engine,
    Industry,
    RequestKind,
    Status,
    TenantSpec,
    check_transition,
    container_name,
)
from cloner.errors import (
    InvalidInput,
    InvalidTransition,
    TemplateError,
    TemplateNotFound,
    TenantNotFound,
)
from cloner.migrations.catalogue import diff_catalogues
from cloner.migrations.errors import MigrationPathError, RolloutInProgress
from cloner.migrations.plan import build_plan, plan_path
from cloner.migrations.rollout import Rollout, RolloutOptions, RolloutResult
from cloner.migrations.status import migration_status, repair, sync_migration_metrics
from cloner.pools import TenantUnavailable
from cloner.tenants import TenantService
from tests.unit.conftest import REPO, Env, EnvFactory
from tests.unit.test_pools import FakeFactory, _env, _eventually
from tests.unit.test_users import _schema, _versions, add_tenant

MIGRATIONS = REPO / "templates" / "postgres" / "migrations"
SHIPPED_MIGRATION_SQL = sorted(MIGRATIONS.glob("*/*.sql"))
VERSIONS = ["v1.0", "v1.1", "v1.2"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A private copy of the shipped templates that a test may edit."""
    copy = tmp_path / "templates"
    shutil.copytree(REPO / "templates", copy)
    return copy


def _manifest(templates: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((templates / "postgres/migrations/manifest.json").read_text())
    return data


def _write_manifest(templates: Path, data: dict[str, Any]) -> None:
    (templates / "postgres/migrations/manifest.json").write_text(json.dumps(data, indent=2))


def edit_script(templates: Path, step: str, direction: str, text: str) -> None:
    """Replace one migration file and record its new checksum, as a maintainer would."""
    path = templates / "postgres/migrations" / step / f"{direction}.sql"
    path.write_text(text)
    data = _manifest(templates)
    data["steps"][step]["files"][f"{direction}.sql"] = _sha256(path)
    _write_manifest(templates, data)


def drop_down(templates: Path, step: str) -> None:
    """Remove the down step of ``step`` from the catalog copy."""
    data = _manifest(templates)
    del data["steps"][step]["files"]["down.sql"]
    _write_manifest(templates, data)
    (templates / "postgres/migrations" / step / "down.sql").unlink()


# ------------------------------------------------------------------- catalog


def test_shipped_migrations_verify_and_chain_the_versions() -> None:
    """The shipped manifest verifies and has up and down steps v1.0→v1.1→v1.2."""
    steps = MigrationCatalog(REPO / "templates").steps("postgres")
    assert [(s.name, s.from_version, s.to_version) for s in steps] == [
        ("v1.0-v1.1", "v1.0", "v1.1"), ("v1.1-v1.2", "v1.1", "v1.2")]
    for step in steps:
        assert step.down is not None
        assert step.up.checksum == _sha256(step.up.path)
        assert (step.down.from_version, step.down.to_version) == (step.to_version,
                                                                  step.from_version)
    assert steps[0].down is not None and steps[0].down.destructive
    assert steps[1].down is not None and not steps[1].down.destructive


@pytest.mark.parametrize("path", SHIPPED_MIGRATION_SQL,
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_shipped_migrations_lint_clean(path: Path) -> None:
    """Migration files follow the template rules (no transaction control, grants, roles)."""
    assert lint_sql(path.read_text()) == []


def test_shipped_v1_2_is_the_latest_version() -> None:
    """Adding v1.2 made it the default for new tenants."""
    catalog = Catalog(REPO / "templates", REPO / "industry_templates")
    assert catalog.versions("postgres") == VERSIONS
    assert catalog.latest_version("postgres") == "v1.2"


def test_edited_migration_file_is_refused_until_the_manifest_says_so(templates: Path) -> None:
    """An edited file with the old checksum in the manifest is a TemplateError."""
    path = templates / "postgres/migrations/v1.1-v1.2/up.sql"
    path.write_text(path.read_text() + "\n-- edited\n")
    with pytest.raises(TemplateError, match="does not match its manifest"):
        MigrationCatalog(templates).steps("postgres")
    edit_script(templates, "v1.1-v1.2", "up", path.read_text())
    assert MigrationCatalog(templates).steps("postgres")[1].up.checksum == _sha256(path)


def test_migration_with_transaction_control_is_refused(templates: Path) -> None:
    """Migrations follow the template rules: a COMMIT inside one is a TemplateError."""
    edit_script(templates, "v1.1-v1.2", "up", "CREATE TABLE t (id int);\nCOMMIT;\n")
    with pytest.raises(TemplateError, match="transaction control"):
        MigrationCatalog(templates).steps("postgres")


def test_manifest_entry_must_name_adjacent_versions_it_connects(templates: Path) -> None:
    """A step whose name disagrees with from/to is refused."""
    data = _manifest(templates)
    data["steps"]["v1.0-v1.1"]["to"] = "v1.2"
    _write_manifest(templates, data)
    with pytest.raises(TemplateError, match="name must be"):
        MigrationCatalog(templates).steps("postgres")


def test_engine_without_migrations_has_no_steps(tmp_path: Path) -> None:
    """No migrations folder: no steps, no error (a path through it is refused later)."""
    assert MigrationCatalog(tmp_path).steps("postgres") == []


def test_validate_applied_reports_edited_and_unknown_steps() -> None:
    """Recorded checksums are compared with the manifest; unknown steps are reported too."""
    catalog = MigrationCatalog(REPO / "templates")
    up = catalog.steps("postgres")[0].up
    good = AppliedMigration(up.step, Direction.UP, "v1.1", up.checksum)
    edited = AppliedMigration("v1.1-v1.2", Direction.UP, "v1.2", "0" * 64)
    unknown = AppliedMigration("v1.2-v1.3", Direction.UP, "v1.3", "1" * 64)
    problems = catalog.validate_applied(
        "postgres", MigrationState("v1.0", (good, edited, unknown)))
    assert [p.applied for p in problems] == [edited, unknown]
    assert "was applied with checksum 000000000000" in problems[0].describe()
    assert "not in the catalog" in problems[1].describe()


def test_recorded_name_round_trips_and_garbage_is_refused() -> None:
    """``step:direction`` parses back; anything else in schema_info is an error."""
    parsed = AppliedMigration.from_record("v1.0-v1.1:down", "v1.0", "a" * 64 + " ")
    assert (parsed.step, parsed.direction, parsed.checksum) == ("v1.0-v1.1", Direction.DOWN,
                                                                "a" * 64)
    with pytest.raises(TemplateError):
        AppliedMigration.from_record("v1.0-v1.1", "v1.1", "a" * 64)


# ------------------------------------------------------------------ planning


def test_path_up_is_every_adjacent_step_in_order() -> None:
    """v1.0 → v1.2 is two up steps; the same version is no step."""
    catalog = MigrationCatalog(REPO / "templates")
    path = plan_path(catalog, VERSIONS, "postgres", "v1.0", "v1.2")
    assert [s.label for s in path] == ["v1.0-v1.1 up", "v1.1-v1.2 up"]
    assert plan_path(catalog, VERSIONS, "postgres", "v1.1", "v1.1") == ()


def test_path_down_needs_allow_destructive_through_a_data_dropping_step() -> None:
    """v1.2 → v1.1 is fine; v1.2 → v1.0 drops the commerce tables and must be allowed."""
    catalog = MigrationCatalog(REPO / "templates")
    assert [s.label for s in plan_path(catalog, VERSIONS, "postgres", "v1.2", "v1.1")] == [
        "v1.1-v1.2 down"]
    with pytest.raises(MigrationPathError, match="--allow-destructive"):
        plan_path(catalog, VERSIONS, "postgres", "v1.2", "v1.0")
    path = plan_path(catalog, VERSIONS, "postgres", "v1.2", "v1.0", allow_destructive=True)
    assert [(s.label, s.to_version) for s in path] == [("v1.1-v1.2 down", "v1.1"),
                                                       ("v1.0-v1.1 down", "v1.0")]


def test_path_refuses_missing_steps_and_unknown_versions(templates: Path) -> None:
    """No step between two versions, no down step, or an unknown version: refused."""
    drop_down(templates, "v1.1-v1.2")
    catalog = MigrationCatalog(templates)
    with pytest.raises(MigrationPathError, match="has no down step"):
        plan_path(catalog, VERSIONS, "postgres", "v1.2", "v1.1")
    with pytest.raises(MigrationPathError, match=r"no migration between v1\.2 and v1\.3"):
        plan_path(catalog, [*VERSIONS, "v1.3"], "postgres", "v1.2", "v1.3")
    with pytest.raises(MigrationPathError, match=r"no template version v2\.0"):
        plan_path(catalog, VERSIONS, "postgres", "v1.0", "v2.0")


# --------------------------------------------------------------- on the fakes


async def provision(env: Env, tenant_id: str, version: str = "v1.0") -> None:
    """Create a tenant at ``version`` and run it to READY through the real pipeline."""
    await TenantService(env.app).create(tenant_id, "postgres", "none", version)
    await env.work_once()
    assert (await env.tenant(tenant_id)).status is Status.READY


async def rollout(env: Env, target: str = "v1.2", **options: Any) -> RolloutResult:
    """Run a rollout on the env's app."""
    return await Rollout(env.app.services,
                         RolloutOptions(target_version=target, **options)).run()


def outcomes(result: RolloutResult) -> dict[str, str]:
    """tenant id → outcome value."""
    return {r.tenant_id: r.outcome.value for r in result.results}


@pytest.fixture
async def fleet(make_env: EnvFactory, templates: Path) -> Env:
    """An env on a private templates copy with five READY v1.0 tenants, ten1 … ten5."""
    env = await make_env(templates_dir=templates)
    for n in range(1, 6):
        await provision(env, f"ten{n}")
    return env


async def test_rollout_takes_every_tenant_up_two_steps_with_backups(fleet: Env) -> None:
    """All five go v1.0 → v1.2: steps recorded, versions in the registry, backups first."""
    result = await rollout(fleet, concurrency=2)
    assert result.status == "succeeded" and result.ok
    assert outcomes(result) == dict.fromkeys(["ten1", "ten2", "ten3", "ten4", "ten5"], "migrated")
    assert [t.tenant_id for t in result.plan.canaries] == ["ten1"]
    assert result.results[0].tenant_id == "ten1"  # the canary ran first, alone
    for n in range(1, 6):
        tenant = await fleet.tenant(f"ten{n}")
        assert (tenant.status, tenant.template_version) == (Status.READY, "v1.2")
        assert tenant.previous_versions == ("v1.0", "v1.1")
        assert fleet.engine.schemas[f"ten{n}"].current_version == "v1.2"
        assert tenant.backup is not None and tenant.backup["reason"] == "pre-migration"
        assert tenant.backup["template_version"] == "v1.0"
        steps = await fleet.cp.migrations.steps_of(f"ten{n}")
        assert [(s["step"], s["direction"], s["to_version"]) for s in steps] == [
            ("v1.0-v1.1", "up", "v1.1"), ("v1.1-v1.2", "up", "v1.2")]
    # Backup before any step: the engine was asked for the dump first.
    hooks = fleet.engine.hooks("ten3")
    assert hooks.index("backup") < hooks.index("apply_migration_step")


async def test_rollout_metrics_follow_the_registry(fleet: Env) -> None:
    """Outcomes, step durations and tenants per version are exported (and not twice)."""
    await rollout(fleet)
    assert fleet.metric("cloner_migrations_total", engine="postgres", outcome="migrated") == 5
    assert fleet.metric("cloner_migration_step_duration_seconds_count", engine="postgres",
                        step="v1.1-v1.2", direction="up") == 5
    assert fleet.metric("cloner_tenants_by_version", engine="postgres", version="v1.2") == 5
    assert fleet.metric("cloner_tenants_by_version", engine="postgres", version="v1.0") == 0
    await sync_migration_metrics(fleet.app.control_plane, fleet.app.metrics)
    assert fleet.metric("cloner_migrations_total", engine="postgres", outcome="migrated") == 5


async def test_dry_run_plans_and_changes_nothing(fleet: Env) -> None:
    """--dry-run: the plan lists tenants and steps; no state, step or rollout is recorded."""
    before = {t.tenant_id: (t.status, t.template_version, t.updated_at)
              for t in await fleet.cp.list_tenants()}
    result = await rollout(fleet, dry_run=True, canary=2)
    assert result.status == "planned" and result.rollout_id is None and result.results == []
    assert [t["tenant_id"] for t in result.as_dict()["plan"]] == [f"ten{n}" for n in range(1, 6)]
    assert [t.canary for t in result.plan.tenants] == [True, True, False, False, False]
    assert [s.label for s in result.plan.tenants[0].steps] == ["v1.0-v1.1 up", "v1.1-v1.2 up"]
    after = {t.tenant_id: (t.status, t.template_version, t.updated_at)
             for t in await fleet.cp.list_tenants()}
    assert after == before
    assert await fleet.cp.migrations.last_rollout() is None
    assert "apply_migration_step" not in fleet.engine.hooks()


async def test_failing_canary_is_rolled_back_and_halts_the_rollout(fleet: Env) -> None:
    """The canary's second step fails: its first is reverted by its down step, it is left
    READY on v1.0 with the error, and no other tenant is started."""
    fleet.engine.failing_steps.add("v1.1-v1.2 up")
    result = await rollout(fleet, concurrency=3)
    assert result.status == "halted" and not result.ok
    assert result.halted_reason is not None and "canary ten1" in result.halted_reason
    assert outcomes(result) == {"ten1": "rolled_back", "ten2": "not_started", "ten3": "not_started",
                                "ten4": "not_started", "ten5": "not_started"}
    canary = await fleet.tenant("ten1")
    assert (canary.status, canary.template_version) == (Status.READY, "v1.0")
    assert canary.error is not None and canary.error["step"] == "v1.1-v1.2 up"
    assert fleet.engine.schemas["ten1"].current_version == "v1.0"
    steps = await fleet.cp.migrations.steps_of("ten1")
    assert [(s["step"], s["direction"]) for s in steps] == [("v1.0-v1.1", "up"),
                                                            ("v1.0-v1.1", "down")]
    for n in range(2, 6):
        tenant = await fleet.tenant(f"ten{n}")
        assert (tenant.status, tenant.template_version, tenant.error) == (
            Status.READY, "v1.0", None)
        assert "apply_migration_step" not in fleet.engine.hooks(f"ten{n}")
    last = await fleet.cp.migrations.last_rollout()
    assert last is not None and last["status"] == "halted"
    assert last["summary"] == {"rolled_back": 1, "not_started": 4}


async def test_failures_beyond_max_failures_halt_the_rest(fleet: Env) -> None:
    """With no canary and --max-failures 1, the second failure stops new tenants."""
    fleet.engine.failing_steps.add("v1.0-v1.1 up")
    result = await rollout(fleet, canary=0, max_failures=1, concurrency=1)
    assert outcomes(result) == {"ten1": "rolled_back", "ten2": "rolled_back",
                                "ten3": "not_started", "ten4": "not_started", "ten5": "not_started"}
    assert result.halted_reason == "2 failed tenants > --max-failures 1"


async def test_failures_within_max_failures_let_the_rollout_finish(fleet: Env) -> None:
    """Failures up to --max-failures are tolerated; the rollout then reports failed."""
    fleet.engine.fail_next["apply_migration_step"] = [TemplateError("boom")]
    result = await rollout(fleet, canary=0, max_failures=1, concurrency=1)
    assert result.status == "failed"
    assert sorted(outcomes(result).values()) == ["migrated"] * 4 + ["rolled_back"]


async def test_step_without_down_is_rolled_back_from_the_backup(
    make_env: EnvFactory, templates: Path
) -> None:
    """The first step has no down: a failure of the second restores the pre-migration backup."""
    drop_down(templates, "v1.0-v1.1")
    env = await make_env(templates_dir=templates)
    await provision(env, "acme")
    env.engine.failing_steps.add("v1.1-v1.2 up")
    result = await rollout(env)
    assert outcomes(result) == {"acme": "restored"}
    tenant = await env.tenant("acme")
    assert (tenant.status, tenant.template_version) == (Status.READY, "v1.0")
    assert tenant.error is not None and "has no down step" in tenant.error["restored"]
    hooks = env.engine.hooks("acme")
    assert hooks.index("drop_database") < hooks.index("restore") < len(hooks) - 1
    assert hooks[hooks.index("restore") + 1] == "apply_rbac"  # grants put back on the dump
    [(restored_tenant, source)] = env.engine.restored
    assert restored_tenant == "acme" and str(source) == result.results[0].backup
    assert env.engine.schemas["acme"].current_version == "v1.0"
    steps = await env.cp.migrations.steps_of("acme")
    assert [(s["step"], s["direction"], s["to_version"]) for s in steps] == [
        ("v1.0-v1.1", "up", "v1.1"), ("backup", "restore", "v1.0")]


async def test_non_transactional_engine_is_restored_not_reverted(env: Env) -> None:
    """Without transactional DDL a failed step may be half-applied: down steps are not
    trusted, the backup is restored (the half-changed schema is gone)."""
    await provision(env, "acme")
    env.engine.transactional_ddl = False
    env.engine.failing_steps.add("v1.1-v1.2 up")
    result = await rollout(env)
    assert outcomes(result) == {"acme": "restored"}
    assert "acme" not in env.engine.dirty
    assert env.engine.schemas["acme"].current_version == "v1.0"
    assert "not transactional" in (result.results[0].error or {})["restored"]


async def test_tenant_that_cannot_be_restored_stays_migrating_and_is_adopted_later(
    env: Env,
) -> None:
    """Rollback and restore both fail: outcome stuck, the tenant stays MIGRATING (pools keep
    refusing it); the next rollout adopts it, reads its real version and finishes."""
    await provision(env, "acme")
    env.engine.failing_steps.add("v1.1-v1.2 up")
    env.engine.fail["apply_rbac"] = TemplateError("rbac refused")
    env.engine.transactional_ddl = False
    result = await rollout(env)
    assert outcomes(result) == {"acme": "stuck"}
    stuck = await env.tenant("acme")
    assert stuck.status is Status.MIGRATING
    assert stuck.error is not None and "rbac refused" in stuck.error["restore"]

    del env.engine.fail["apply_rbac"]
    env.engine.failing_steps.clear()
    env.engine.transactional_ddl = True
    again = await rollout(env)
    assert again.plan.tenants[0].adopt
    assert outcomes(again) == {"acme": "migrated"}
    tenant = await env.tenant("acme")
    assert (tenant.status, tenant.template_version, tenant.error) == (Status.READY, "v1.2", None)
    events = [e["kind"] for e in await env.cp.events("acme")]
    assert "migration_adopted" in events


async def test_registry_behind_the_database_is_corrected_from_schema_info(env: Env) -> None:
    """A crash after a step's commit but before its registry record: the database wins."""
    await provision(env, "acme")
    step = MigrationCatalog(env.app.settings.templates_dir).steps("postgres")[0].up
    env.engine.schemas["acme"] = MigrationState("v1.0", (
        AppliedMigration(step.step, Direction.UP, "v1.1", step.checksum),))
    result = await rollout(env)
    assert outcomes(result) == {"acme": "migrated"}
    assert result.results[0].from_version == "v1.1"
    steps = await env.cp.migrations.steps_of("acme")
    assert [(s["direction"], s["from_version"], s["to_version"]) for s in steps] == [
        ("sync", "v1.0", "v1.1"), ("up", "v1.1", "v1.2")]


async def test_edited_applied_migration_is_refused_until_repaired(
    make_env: EnvFactory, templates: Path
) -> None:
    """A tenant that ran v1.0-v1.1 up before the file changed is refused untouched; repair
    records the new checksum (and the old one in the registry), then it migrates."""
    env = await make_env(templates_dir=templates)
    await provision(env, "acme")
    await provision(env, "fresh")
    assert (await rollout(env, "v1.1", tenants=("acme",))).status == "succeeded"
    up = templates / "postgres/migrations/v1.0-v1.1/up.sql"
    edit_script(templates, "v1.0-v1.1", "up", up.read_text() + "\n-- comment added later\n")

    backup_before = (await env.tenant("acme")).backup
    result = await rollout(env, "v1.2", canary=0, max_failures=5)
    assert outcomes(result) == {"acme": "refused", "fresh": "migrated"}
    tenant = await env.tenant("acme")
    assert (tenant.status, tenant.template_version) == (Status.READY, "v1.1")
    assert tenant.error is not None
    assert "cloner migrate repair --tenant acme" in tenant.error["reason"]
    assert tenant.backup == backup_before  # refused before its backup: nothing was touched

    repaired = await repair(env.app.services, actor="cli:test")
    by_tenant = {r.tenant_id: r for r in repaired}
    assert len(by_tenant["acme"].repaired) == 1 and by_tenant["acme"].problems == ()
    assert by_tenant["fresh"].repaired == ()  # ran the new file: nothing to repair
    [applied] = env.engine.schemas["acme"].applied
    assert applied.checksum == _sha256(up)
    record = (await env.cp.migrations.steps_of("acme"))[-1]
    assert record["direction"] == "repair" and record["detail"]["actor"] == "cli:test"
    assert record["detail"]["old_checksum"] != _sha256(up)

    assert outcomes(await rollout(env, "v1.2")) == {"acme": "migrated", "fresh": "up_to_date"}


async def test_downgrade_runs_down_steps_and_needs_allow_destructive(env: Env) -> None:
    """v1.2 → v1.0 is refused without --allow-destructive, then runs both down steps."""
    await provision(env, "acme", "v1.2")
    with pytest.raises(MigrationPathError, match="allow-destructive"):
        await rollout(env, "v1.0")
    result = await rollout(env, "v1.0", allow_destructive=True)
    assert outcomes(result) == {"acme": "migrated"}
    assert [(s["step"], s["direction"]) for s in result.results[0].steps] == [
        ("v1.1-v1.2", "down"), ("v1.0-v1.1", "down")]
    assert (await env.tenant("acme")).template_version == "v1.0"


async def test_scope_lists_skipped_tenants_and_leaves_others_alone(env: Env) -> None:
    """Degraded tenants are listed as skipped; deprovisioned ones are out of scope; tenants
    already at the target are up to date and never marked migrating."""
    await provision(env, "old")
    await provision(env, "sick")
    await provision(env, "new", "v1.2")
    await provision(env, "gone")
    await env.cp.update_tenant("sick", TenantUpdate(status=Status.DEGRADED))
    await TenantService(env.app).delete("gone", purge=False)
    await env.work_once()
    result = await rollout(env)
    assert outcomes(result) == {"old": "migrated", "sick": "skipped", "new": "up_to_date"}
    events = [e["kind"] for e in await env.cp.events("new")]
    assert "migration_started" not in events
    assert (await env.tenant("sick")).template_version == "v1.0"


async def test_named_tenants_are_checked_before_anything_runs(env: Env) -> None:
    """Unknown, not-ready and other-engine tenants are refused with exit-2 errors."""
    await provision(env, "acme")
    await provision(env, "sick")
    await env.cp.update_tenant("sick", TenantUpdate(status=Status.DEGRADED))
    with pytest.raises(TenantNotFound):
        await rollout(env, tenants=("nosuch",))
    with pytest.raises(InvalidTransition, match="degraded"):
        await rollout(env, tenants=("sick",))
    with pytest.raises(TemplateNotFound, match=r"v9\.9"):
        await rollout(env, "v9.9")
    with pytest.raises(InvalidInput, match="concurrency"):
        await rollout(env, concurrency=0)
    tenants = await env.cp.list_tenants()
    other = next(t for t in tenants if t.tenant_id == "acme")
    mysql_tenant = type(other)(**{**other.__dict__, "engine": Engine.MYSQL})
    catalog = env.app.catalog
    with pytest.raises(InvalidInput, match="runs mysql"):
        build_plan([mysql_tenant], catalog=catalog,
                   migrations=MigrationCatalog(env.app.settings.templates_dir),
                   engine=Engine.POSTGRES, target_version="v1.2", named=["acme"])
    assert all(t.status is not Status.MIGRATING for t in await env.cp.list_tenants())


async def test_tenant_with_an_active_request_is_skipped_not_migrated(env: Env) -> None:
    """A delete queued before the rollout reached the tenant wins: the tenant is skipped."""
    await provision(env, "acme")
    await env.cp.enqueue(None, RequestKind.BACKUP, "acme", {})
    result = await rollout(env)
    assert outcomes(result) == {"acme": "skipped"}
    assert result.results[0].error is not None
    assert "backup request in progress" in result.results[0].error["reason"]
    assert (await env.tenant("acme")).status is Status.READY


async def test_second_rollout_is_refused_while_one_is_alive(env: Env) -> None:
    """A rollout with a fresh heartbeat blocks another; a stale one is interrupted."""
    migrations = env.cp.migrations
    await migrations.start_rollout("r-live", "postgres", "v1.2", actor=None, options={},
                                   plan=[])
    with pytest.raises(RolloutInProgress, match="r-live"):
        await rollout(env)
    with pytest.raises(RolloutInProgress):
        await repair(env.app.services)
    await migrations.start_rollout("r-next", "postgres", "v1.2", actor=None, options={},
                                   plan=[], stale_after_s=0.0)
    last = await migrations.last_rollout()
    assert last is not None and last["id"] == "r-next"
    assert (await migration_status(env.app.control_plane))["running"] is True
    rows = {r["id"]: r for r in [await env.cp.migrations.live_rollout()] if r}
    assert list(rows) == ["r-next"]


async def test_status_document_shows_versions_and_the_last_rollout(fleet: Env) -> None:
    """`migrate status --json`: per-tenant versions, counts per version, last outcomes."""
    await rollout(fleet, tenants=("ten1", "ten2"))
    doc = await migration_status(fleet.app.control_plane, "postgres")
    versions = {t["tenant_id"]: t["template_version"] for t in doc["tenants"]}
    assert versions == {"ten1": "v1.2", "ten2": "v1.2", "ten3": "v1.0", "ten4": "v1.0",
                        "ten5": "v1.0"}
    assert doc["versions"] == {"postgres": {"v1.0": 3, "v1.2": 2}}
    assert doc["last_rollout"]["status"] == "succeeded"
    assert [t["outcome"] for t in doc["last_rollout"]["tenants"]] == ["migrated", "migrated"]
    by_id = {t["tenant_id"]: t for t in doc["tenants"]}
    assert by_id["ten1"]["last_migration"]["outcome"] == "migrated"
    assert by_id["ten3"]["last_migration"] is None
    assert doc["running"] is False


# ------------------------------------------------------------------- registry


async def test_begin_migration_is_atomic_with_its_checks(env: Env) -> None:
    """READY → MIGRATING; refused for other states; a live rollout's tenant is not taken."""
    await provision(env, "acme")
    migrations = env.cp.migrations
    await migrations.start_rollout("r1", "postgres", "v1.2", actor=None, options={}, plan=[])
    tenant = await migrations.begin_migration("acme", "r1")
    assert tenant.status is Status.MIGRATING
    assert (await migrations.begin_migration("acme", "r1")).status is Status.MIGRATING
    with pytest.raises(InvalidTransition, match="being migrated by rollout r1"):
        await migrations.begin_migration("acme", "r2")
    with pytest.raises(InvalidTransition):  # the state machine: no delete while migrating
        await env.cp.update_tenant("acme", TenantUpdate(status=Status.DEPROVISIONING))
    with pytest.raises(InvalidTransition, match="migrating"):
        await TenantService(env.app).delete("acme", purge=False)
    with pytest.raises(InvalidTransition, match="migrating"):
        await TenantService(env.app).backup("acme")
    # r1 dies: after its heartbeat is stale, r2 adopts the tenant.
    adopted = await migrations.begin_migration("acme", "r2", stale_after_s=0.0)
    assert adopted.status is Status.MIGRATING
    with pytest.raises(TenantNotFound):
        await migrations.begin_migration("nosuch", "r2")


async def test_record_step_moves_the_version_and_keeps_history(env: Env) -> None:
    """A step's record and the tenant's version change land together."""
    await provision(env, "acme")
    migrations = env.cp.migrations
    before = await env.cp.registry_change_counter()
    tenant = await migrations.record_step(StepRecord(
        "acme", "postgres", "v1.0-v1.1", "up", "v1.0", "v1.1", "c" * 64, 12))
    assert (tenant.template_version, tenant.previous_versions) == ("v1.1", ("v1.0",))
    assert await env.cp.registry_change_counter() > before
    tenant = await migrations.record_step(StepRecord(
        "acme", "postgres", "v1.0-v1.1", "down", "v1.1", "v1.0", "d" * 64, 3))
    assert (tenant.template_version, tenant.previous_versions) == ("v1.0", ("v1.1",))
    repaired = await migrations.record_step(StepRecord(
        "acme", "postgres", "v1.0-v1.1", "repair", "v1.0", "v1.0", "e" * 64))
    assert repaired.template_version == "v1.0"
    assert [s["direction"] for s in await migrations.steps_of("acme")] == ["up", "down",
                                                                          "repair"]


async def test_re_created_tenant_forgets_versions_of_its_earlier_incarnation(env: Env) -> None:
    """previous_versions belong to the request that made the tenant."""
    await provision(env, "acme")
    await env.cp.migrations.record_step(StepRecord(
        "acme", "postgres", "v1.0-v1.1", "up", "v1.0", "v1.1", "c" * 64))
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.DEPROVISIONING))
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.FAILED))
    await env.cp.enqueue(TenantSpec("acme", Engine.POSTGRES, Industry.NONE, "v1.0"),
                         RequestKind.PROVISION, "acme", {})
    assert (await env.tenant("acme")).previous_versions == ()


async def test_finish_migration_refuses_to_move_a_tenant_it_did_not_start(env: Env) -> None:
    """Only a MIGRATING tenant is moved; an unstarted one only gets an outcome row."""
    await provision(env, "acme")
    outcome = TenantOutcome("r1", "acme", "postgres", "v1.0", "v1.2", "v1.0", "not_started")
    await env.cp.migrations.start_rollout("r1", "postgres", "v1.2", actor=None, options={},
                                          plan=[])
    with pytest.raises(InvalidTransition):
        await env.cp.migrations.finish_migration(outcome, status=Status.READY, error=None)
    tenant = await env.cp.migrations.finish_migration(outcome, status=None, error=None)
    assert tenant.status is Status.READY
    assert (await env.cp.migrations.last_outcome("acme") or {})["outcome"] == "not_started"


# ------------------------------------------------- daemon parts leave it alone


async def _migrating(env: Env, tenant_id: str = "acme") -> None:
    await env.cp.migrations.start_rollout("r1", "postgres", "v1.2", actor=None, options={},
                                          plan=[])
    await env.cp.migrations.begin_migration(tenant_id, "r1")


async def test_health_monitor_does_not_probe_or_move_a_migrating_tenant(env: Env) -> None:
    """A migrating tenant whose probe would fail is neither probed nor degraded."""
    await provision(env, "acme")
    await _migrating(env)
    env.engine.fail["probe"] = TemplateError("locked by the migration")
    report = await HealthMonitor(env.app).check_once(isolation=True)
    assert report.get("acme") is None
    assert "probe" not in env.engine.hooks("acme")
    assert (await env.tenant("acme")).status is Status.MIGRATING


async def test_reconciler_leaves_a_migrating_tenant_alone(env: Env) -> None:
    """No repair, no degrade, no orphan removal for a migrating tenant whose container is
    stopped (a restore in progress may stop it)."""
    await provision(env, "acme")
    await _migrating(env)
    env.runtime.set_status(container_name("acme"), "exited")
    env.runtime.backdate(container_name("acme"), 3600)
    report = await Reconciler(env.app).reconcile_once()
    assert [a for a in report.actions if a.tenant_id == "acme"] == []
    assert env.runtime.container(container_name("acme")) is not None
    assert (await env.tenant("acme")).status is Status.MIGRATING


async def test_reconciler_reports_no_drift_after_a_migration(env: Env) -> None:
    """The container keeps its v1.0 label after the migration: that is not drift."""
    await provision(env, "acme")
    await rollout(env)
    assert (await env.tenant("acme")).template_version == "v1.2"
    report = await Reconciler(env.app).reconcile_once()
    assert [a.detail for a in report.actions if a.action == "drift"] == []


@pytest.fixture
async def pool_env(tmp_path: Path) -> AsyncIterator[Any]:
    """TenantPools over a real control plane with fake asyncpg pools."""
    e = await _env(tmp_path, FakeFactory())
    try:
        yield e
    finally:
        await e.pools.close()
        await e.cp.close()


async def test_pools_close_and_refuse_a_migrating_tenant_with_a_clear_error(
    pool_env: Any,
) -> None:
    """An open pool is closed at the next refresh; acquires name the migration."""
    await pool_env.ready("acme")
    async with pool_env.pools.acquire("acme"):
        pass
    # (Its provisioning request never finished here, so the state is set directly.)
    await pool_env.cp.update_tenant("acme", TenantUpdate(status=Status.MIGRATING))
    await pool_env.pools.refresh()
    [pool] = pool_env.factory.pools
    await _eventually(lambda: pool.closed)
    with pytest.raises(TenantUnavailable, match="migrating to a new schema version") as caught:
        async with pool_env.pools.acquire("acme"):
            pass
    assert caught.value.tenant_id == "acme"
    assert len(pool_env.factory.pools) == 1  # no pool was opened for a migrating tenant


async def test_new_tenants_can_be_provisioned_while_a_rollout_runs(env: Env) -> None:
    """A slow rollout does not block provisioning at any supported version."""
    await provision(env, "acme")
    env.engine.delay_s["apply_migration_step"] = 0.2
    started = time.monotonic()
    running = asyncio.create_task(rollout(env))
    await env.engine.wait_entered("apply_migration_step")
    await provision(env, "newcomer", "v1.1")
    assert not running.done()
    result = await running
    assert outcomes(result) == {"acme": "migrated"}
    assert (await env.tenant("newcomer")).template_version == "v1.1"
    assert time.monotonic() - started >= 0.4


def test_diff_catalogues_names_each_difference() -> None:
    """Equal catalogues give no lines; a changed, added, removed or moved column is one each."""
    base = {"columns": {"t": [{"name": "a", "type": "int"}, {"name": "b", "type": "text"}]},
            "indexes": [{"relation": "t", "name": "t_a_idx", "definition": "… (a)"}]}
    assert diff_catalogues(base, json.loads(json.dumps(base))) == []
    changed = {"columns": {"t": [{"name": "b", "type": "text"}, {"name": "a", "type": "bigint"},
                                 {"name": "c", "type": "int"}]},
               "indexes": []}
    lines = diff_catalogues(base, changed)
    assert "~ columns.t[a].type: \"int\" → \"bigint\"" in lines
    assert "~ columns.t[a].position: 0 → 1" in lines
    assert "+ columns.t[c].type = \"int\"" in lines
    assert "- indexes[t.t_a_idx].definition = \"… (a)\"" in lines


async def test_control_plane_from_before_0004_migrates_to_the_fresh_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file made before 0004 gains the migration tables and columns, keeps its tenants,
    and ends with exactly the schema of a fresh file."""
    old = tmp_path / "old.sqlite"
    real = sqlite_module._migrations
    monkeypatch.setattr(sqlite_module, "_migrations",
                        lambda: [(v, sql) for v, sql in real() if v < 4])
    control_plane = SQLiteControlPlane(old)
    await control_plane.open()
    await add_tenant(control_plane, "acme")
    await control_plane.close()
    assert 4 not in _versions(old)

    monkeypatch.setattr(sqlite_module, "_migrations", real)
    control_plane = SQLiteControlPlane(old)
    await control_plane.open()
    try:
        tenant = await control_plane.get_tenant("acme")
        record = await control_plane.migrations.record_step(StepRecord(
            "acme", "postgres", "v1.0-v1.1", "up", "v1.0", "v1.1", "c" * 64, 5))
    finally:
        await control_plane.close()
    fresh = tmp_path / "fresh.sqlite"
    reference = SQLiteControlPlane(fresh)
    await reference.open()
    await reference.close()
    assert tenant is not None and tenant.previous_versions == ()
    assert (record.template_version, record.previous_versions) == ("v1.1", ("v1.0",))
    assert _versions(old) == _versions(fresh)
    assert _schema(old) == _schema(fresh)


@pytest.mark.parametrize(("source", "target", "allowed"), [
    (Status.READY, Status.MIGRATING, True),
    (Status.MIGRATING, Status.READY, True),
    (Status.MIGRATING, Status.MIGRATING, True),
    (Status.DEGRADED, Status.MIGRATING, False),
    (Status.MIGRATING, Status.DEGRADED, False),
    (Status.MIGRATING, Status.DEPROVISIONING, False),
    (Status.MIGRATING, Status.FAILED, False),
])
def test_migrating_transitions(source: Status, target: Status, allowed: bool) -> None:
    """ready ⇄ migrating (and adoption), nothing else in or out of migrating."""
    if allowed:
        check_transition(source, target)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(source, target)


# ------------------------------------------------ fenced writes, interrupted rollouts (M7, M8)


async def test_logins_are_fenced_from_before_the_backup_until_the_tenant_is_ready(
    env: Env,
) -> None:
    """fence_logins(True) before the pre-migration backup, (False) once migrated; the
    registry records the period (since, until, seconds) with an event at each end."""
    await provision(env, "acme")
    result = await rollout(env)
    assert outcomes(result) == {"acme": "migrated"}
    hooks = env.engine.hooks("acme")
    assert hooks.count("fence_logins") == 2
    assert hooks.index("fence_logins") < hooks.index("backup")
    assert "acme" not in env.engine.fenced
    tenant = await env.tenant("acme")
    assert not tenant.logins_fenced and tenant.migration is None
    assert tenant.writes_fenced is not None
    assert tenant.writes_fenced["rollout"] == result.rollout_id
    assert tenant.writes_fenced["seconds"] >= 0 and tenant.writes_fenced["until"]
    kinds = [e["kind"] for e in await env.cp.events("acme")]
    assert kinds.index("writes_fenced") < kinds.index("backup") < kinds.index("writes_unfenced")


async def test_stuck_tenant_keeps_its_fence_until_a_later_run_recovers_it(env: Env) -> None:
    """Step and restore both fail: stuck, logins stay fenced (the database is not at a step
    boundary); the next run restores that run's backup, migrates, then lets them in."""
    await provision(env, "acme")
    env.engine.transactional_ddl = False
    env.engine.failing_steps.add("v1.1-v1.2 up")
    env.engine.fail["apply_rbac"] = TemplateError("rbac refused")
    first = await rollout(env)
    assert outcomes(first) == {"acme": "stuck"}
    stuck = await env.tenant("acme")
    assert stuck.logins_fenced and "acme" in env.engine.fenced
    assert stuck.migration is not None and stuck.migration["phase"] == "restore"

    del env.engine.fail["apply_rbac"]
    env.engine.failing_steps.clear()
    again = await rollout(env)
    assert outcomes(again) == {"acme": "migrated"}
    recovery = again.results[0].recovery
    assert recovery is not None and recovery["action"] == "restored"
    assert recovery["backup"] == stuck.migration["backup"]["path"]
    assert "acme" not in env.engine.fenced
    assert not (await env.tenant("acme")).logins_fenced


async def _interrupt_mid_step(env: Env, *, half_applied: bool) -> dict[str, Any]:
    """Ctrl-C while the first step runs (its first statement committed when
    ``half_applied``); the tenant's migration record after it."""
    gate = asyncio.Event()
    env.engine.hold["apply_migration_step"] = gate
    task = asyncio.create_task(rollout(env))
    await env.engine.wait_entered("apply_migration_step")
    if half_applied:
        env.engine.in_progress["acme"] = "v1.0-v1.1:up"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del env.engine.hold["apply_migration_step"]
    tenant = await env.tenant("acme")
    assert tenant.status is Status.MIGRATING
    assert tenant.logins_fenced and "acme" in env.engine.fenced
    assert tenant.migration is not None
    assert (tenant.migration["phase"], tenant.migration["step"]) == ("step", "v1.0-v1.1 up")
    return tenant.migration


async def test_half_applied_step_of_a_dead_rollout_is_restored_from_its_backup(
    env: Env,
) -> None:
    """The next run restores the dead rollout's backup (no new backup of the half-migrated
    database first), then migrates and reports the recovery."""
    await provision(env, "acme")
    env.engine.transactional_ddl = False
    dead = await _interrupt_mid_step(env, half_applied=True)
    seen = len(env.engine.hooks("acme"))

    result = await rollout(env)
    assert outcomes(result) == {"acme": "migrated"}
    recovery = result.results[0].recovery
    assert recovery is not None
    assert (recovery["action"], recovery["interrupted_step"], recovery["backup"]) == (
        "restored", "v1.0-v1.1 up", dead["backup"]["path"])
    # Restored first (never a backup of the half-migrated database), then a fresh backup.
    after = env.engine.hooks("acme")[seen:]
    assert after.index("restore") < after.index("backup")
    tenant = await env.tenant("acme")
    assert (tenant.status, tenant.template_version, tenant.migration) == (
        Status.READY, "v1.2", None)
    assert "acme" not in env.engine.fenced
    status = await migration_status(env.cp)
    assert status["tenants"][0]["last_migration"]["recovery"]["action"] == "restored"
    assert "migration_recovered" in [e["kind"] for e in await env.cp.events("acme")]


async def test_dead_rollout_at_a_step_boundary_is_resumed(env: Env) -> None:
    """A transactional step cut short left nothing behind: the next run resumes."""
    await provision(env, "acme")
    await _interrupt_mid_step(env, half_applied=False)
    result = await rollout(env)
    assert outcomes(result) == {"acme": "migrated"}
    recovery = result.results[0].recovery
    assert recovery is not None and recovery["action"] == "resumed"
    assert "restore" not in env.engine.hooks("acme")
    assert "acme" not in env.engine.fenced


async def test_half_applied_step_without_a_recorded_backup_stays_stuck(env: Env) -> None:
    """No backup to restore from: the tenant stays migrating and fenced, nothing is backed
    up or restored."""
    await provision(env, "acme")
    env.engine.transactional_ddl = False
    await _interrupt_mid_step(env, half_applied=True)
    tenant = await env.tenant("acme")
    assert tenant.migration is not None
    await env.cp.migrations.note_migration("acme", tenant.migration | {"backup": None})
    backups = env.engine.hooks("acme").count("backup")
    result = await rollout(env)
    assert outcomes(result) == {"acme": "stuck"}
    assert "no pre-migration backup" in (result.results[0].error or {})["reason"]
    assert env.engine.hooks("acme").count("backup") == backups
    assert "restore" not in env.engine.hooks("acme")
    assert (await env.tenant("acme")).logins_fenced


async def test_repair_recovers_a_stranded_tenant_and_lifts_leftover_fences(env: Env) -> None:
    """`migrate repair` restores the dead rollout's backup (without migrating further) and
    lets in the logins of a ready tenant a crash left fenced."""
    await provision(env, "acme")
    await provision(env, "other")
    env.engine.transactional_ddl = False
    await _interrupt_mid_step(env, half_applied=True)
    await env.cp.migrations.set_writes_fenced("other", True, "crashed")
    env.engine.fenced.add("other")

    results = {r.tenant_id: r for r in await repair(env.app.services, engine="postgres")}
    assert results["acme"].repaired and results["acme"].repaired[0].startswith(
        "recovered: restored at v1.0")
    acme = await env.tenant("acme")
    assert (acme.status, acme.template_version, acme.logins_fenced) == (
        Status.READY, "v1.0", False)
    assert env.engine.fenced == set()
    assert not (await env.tenant("other")).logins_fenced


async def test_re_created_tenant_does_not_inherit_a_migration_record_or_fence(env: Env) -> None:
    """The migration in flight and the fence belong to the incarnation: a tenant id made
    again never restores its predecessor's backup or reports its fence."""
    await provision(env, "acme")
    await env.cp.migrations.note_migration("acme", {
        "rollout": "dead", "phase": "step", "step": "v1.0-v1.1 up", "start_version": "v1.0",
        "backup": {"path": "/old/acme.dump"}})
    await env.cp.migrations.set_writes_fenced("acme", True, "dead")
    before = await env.tenant("acme")
    assert before.migration is not None and before.logins_fenced
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.DEPROVISIONING))
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.FAILED))
    await env.cp.enqueue(TenantSpec("acme", Engine.POSTGRES, Industry.NONE, "v1.0"),
                         RequestKind.PROVISION, "acme", {})
    again = await env.tenant("acme")
    assert (again.migration, again.writes_fenced) == (None, None)
