"""``cloner migrate …``: fleet schema migrations (``cloner.migrations``).

::

    cloner migrate --to vX.Y [--engine E] [--tenant T …] [--dry-run] [--concurrency N]
                   [--canary K] [--max-failures F] [--allow-destructive] [--json]
    cloner migrate status [--engine E] [--json]
    cloner migrate repair [--engine E] [--tenant T …] [--json]

Same conventions as every command (``cloner.cli.main``): one-line errors on
stderr, exit 0 ok, 1 the operation failed (a tenant failed, the rollout
halted), 2 bad usage or input (unknown version or tenant, impossible path).
The rollout runs in this process, next to a daemon if one is running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cloner.settings import Settings

if TYPE_CHECKING:
    from cloner.migrations.rollout import RolloutResult


def _validate_tenants(tenants: tuple[str, ...]) -> None:
    from cloner.cli.main import _fail
    from cloner.domain import validate_tenant_id
    from cloner.errors import ClonerError

    try:
        for tenant_id in tenants:
            validate_tenant_id(tenant_id)
    except ClonerError as exc:
        _fail(exc.message, exc.exit_code)


@click.group("migrate", invoke_without_command=True)
@click.option("--to", "target", default=None, metavar="vX.Y",
              help="Template version to bring the tenants to (up or down).")
@click.option("--engine", default="postgres", show_default=True, metavar="ENGINE",
              help="Engine whose tenants are migrated.")
@click.option("--tenant", "tenants", multiple=True, metavar="TENANT",
              help="Only this tenant (repeatable). Default: every tenant of the engine.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--concurrency", type=int, default=4, show_default=True,
              help="Tenants migrated at once.")
@click.option("--canary", type=int, default=1, show_default=True,
              help="Tenants migrated first; any of them failing halts the rollout.")
@click.option("--max-failures", type=int, default=0, show_default=True,
              help="Failed tenants tolerated before the rollout halts.")
@click.option("--allow-destructive", is_flag=True,
              help="Allow down steps that drop data (a backup is taken first anyway).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def migrate(  # noqa: PLR0917 - one parameter per CLI option
    ctx: click.Context, target: str | None, engine: str, tenants: tuple[str, ...],
    dry_run: bool, concurrency: int, canary: int, max_failures: int,
    allow_destructive: bool, as_json: bool,
) -> None:
    """Migrate tenant databases to another template version (canary first, then the rest)."""
    from cloner.cli.main import _actor, _fail, _print_json, _run
    from cloner.migrations.rollout import Rollout, RolloutOptions

    if ctx.invoked_subcommand is not None:
        if target is not None:
            raise click.UsageError(f"--to does not go with `migrate {ctx.invoked_subcommand}`")
        return
    if target is None:
        raise click.UsageError("missing --to vX.Y (or a subcommand: status, repair)")
    _validate_tenants(tenants)
    options = RolloutOptions(
        target_version=target, engine=engine, tenants=tenants, concurrency=concurrency,
        canary=canary, max_failures=max_failures, allow_destructive=allow_destructive,
        dry_run=dry_run, actor=_actor(),
    )

    async def run(settings: Settings) -> RolloutResult:
        from cloner.app import App

        async with App.open(settings) as app:
            return await Rollout(app.services, options).run()

    result = _run(run)
    if as_json:
        _print_json(result.as_dict())
    else:
        _print_rollout(result)
    if not result.ok:
        failed = [r.tenant_id for r in result.results if r.failed]
        _fail(f"rollout {result.rollout_id} {result.status}"
              + (f": {result.halted_reason}" if result.halted_reason else "")
              + (f"; failed: {', '.join(failed)}" if failed else ""), 1)


def _print_rollout(result: RolloutResult) -> None:
    plan = result.plan
    work = plan.to_migrate
    canaries = ", ".join(t.tenant_id for t in plan.canaries) or "none"
    opts = result.options
    click.echo(f"plan: {plan.engine} → {plan.target_version}: {len(work)} tenant(s) to migrate, "
               f"canary {canaries}, concurrency {opts.concurrency}, "
               f"max failures {opts.max_failures}")
    for t in plan.tenants:
        if t.skip_reason:
            click.echo(f"  {t.tenant_id:<24} {t.from_version}  skipped: {t.skip_reason}")
        elif not t.needs_work:
            click.echo(f"  {t.tenant_id:<24} {t.from_version}  up to date")
        else:
            steps = ", ".join(s.label for s in t.steps) or "adopt (read its database)"
            click.echo(f"  {t.tenant_id:<24} {t.from_version} → {t.to_version}  {steps}"
                       + ("  [canary]" if t.canary else ""))
    if opts.dry_run:
        click.echo("dry run: nothing changed")
        return
    for r in result.results:
        if r.outcome.value in {"skipped", "up_to_date"}:
            continue
        line = (f"{r.tenant_id:<24} {r.outcome.value:<12} {r.from_version} → "
                f"{r.reached_version}  {r.duration_s:.2f}s")
        if r.error:
            line += f"  ({r.error.get('step')}: {r.error.get('reason')})"
        click.echo(line)
        if r.recovery:
            rec = r.recovery
            click.echo(f"  {'':<22} recovered from rollout {rec.get('rollout')} "
                       f"(step {rec.get('interrupted_step') or '-'} cut short): "
                       f"{rec.get('action')} at {rec.get('at_version')}"
                       + (f" from {rec['backup']}" if rec.get("backup") else ""))
    summary = ", ".join(f"{k} {v}" for k, v in sorted(result.summary().items())) or "nothing"
    click.echo(f"rollout {result.rollout_id}: {result.status} in {result.seconds:.1f}s "
               f"({summary})")


@migrate.command("status")
@click.option("--engine", default=None, metavar="ENGINE", help="Only this engine's tenants.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def migrate_status(engine: str | None, as_json: bool) -> None:
    """Per-tenant template version and the last rollout's outcome."""
    from cloner.cli.main import _print_json, _run
    from cloner.domain import parse_engine
    from cloner.migrations.status import migration_status

    async def run(settings: Settings) -> dict[str, Any]:
        from cloner.app import App

        if engine is not None:
            parse_engine(engine)
        async with App.open(settings) as app:
            return await migration_status(app.control_plane, engine)

    doc = _run(run)
    if as_json:
        _print_json(doc)
        return
    header = ("TENANT", "STATUS", "ENGINE", "VERSION", "LAST_MIGRATION")
    lines = [header]
    for t in doc["tenants"]:
        last = t["last_migration"]
        shown = "-" if last is None else (
            f"{last['outcome']} ({last['from_version']} → {last['reached_version']})")
        flight = t.get("migration")
        if t["status"] == "migrating" and flight:
            shown = (f"in flight: {flight.get('phase')} {flight.get('step') or ''}".rstrip()
                     + f" (rollout {str(flight.get('rollout'))[:12]})")
        lines.append((t["tenant_id"], t["status"], t["engine"], t["template_version"], shown))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for eng, counts in doc["versions"].items():
        click.echo(f"versions: {eng} " + " ".join(f"{v}={n}" for v, n in counts.items()))
    rollout = doc["last_rollout"]
    if rollout is None:
        click.echo("last rollout: none")
    else:
        summary = ", ".join(f"{k} {v}" for k, v in sorted(rollout["summary"].items()))
        click.echo(f"last rollout: {rollout['id']} {rollout['engine']} → "
                   f"{rollout['target_version']}: {rollout['status']} ({summary or '-'}), "
                   f"started {rollout['started_at']}, finished {rollout['finished_at'] or '-'}")


@migrate.command("repair")
@click.option("--engine", default="postgres", show_default=True, metavar="ENGINE")
@click.option("--tenant", "tenants", multiple=True, metavar="TENANT",
              help="Only this tenant (repeatable). Default: every ready tenant of the engine.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def migrate_repair(engine: str, tenants: tuple[str, ...], as_json: bool) -> None:
    """Accept edited, already-applied migrations: record the files' current checksums."""
    from cloner.cli.main import _actor, _fail, _print_json, _run
    from cloner.migrations.status import RepairResult, repair

    _validate_tenants(tenants)

    async def run(settings: Settings) -> list[RepairResult]:
        from cloner.app import App

        async with App.open(settings) as app:
            return await repair(app.services, engine=engine, tenants=tenants, actor=_actor())

    results = _run(run)
    if as_json:
        _print_json([r.as_dict() for r in results])
    else:
        for r in results:
            for line in r.repaired:
                click.echo(f"{r.tenant_id}: repaired {line}")
            for line in r.problems:
                click.echo(f"{r.tenant_id}: NOT repaired: {line}")
        repaired = sum(bool(r.repaired) for r in results)
        click.echo(f"{repaired} tenant(s) repaired, {len(results)} checked")
    problems = [r.tenant_id for r in results if r.problems]
    if problems:
        _fail(f"could not repair: {', '.join(problems)}", 1)
