"""``cloner …`` commands (DESIGN.md, "Outside contract").

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input. Errors are
one line on stderr. Every read command takes ``--json``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from cloner import constants
from cloner.app import App
from cloner.domain import (
    Engine,
    Request,
    RequestStatus,
    Status,
    parse_engine,
    validate_tenant_id,
)
from cloner.errors import ClonerError, InvalidInput, TenantNotFound
from cloner.logging import REDACTOR, configure_logging
from cloner.settings import Settings, load_settings

if TYPE_CHECKING:
    from cloner.tenants import TenantService

T = TypeVar("T")
ENGINES = "{postgres,mysql,mongodb,sqlite}"
INDUSTRIES = "{technology,healthcare,finance,none}"
LIVE_DAEMON_WITHIN_S = 15.0
#: History lines ``tenant show`` prints without --json (the JSON has more).
SHOWN_IN_TEXT = 10


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"cloner: error: {REDACTOR.redact(message)}", err=True)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        _fail(f"invalid setting CLONER_{where.upper()}: {first['msg']}", 2)
    except ValueError as exc:  # CLONER_ENV_FILE names no file
        _fail(str(exc), 2)


def _run(coro_fn: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(coro_fn(settings))
    except ClonerError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 1)


def _actor() -> str:
    """``cli:<unix user>``: recorded with every request this command enqueues."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = str(os.getuid())
    return constants.ACTOR_CLI_PREFIX + user


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cloner")
def cli() -> None:
    """cloner: a dedicated, isolated database per tenant."""


@cli.command()
def serve() -> None:
    """Run the daemon: workers, HTTP API and /metrics."""
    from cloner.daemon.service import serve as serve_daemon

    _run(serve_daemon)


# ----------------------------------------------------------------- images


@cli.group()
def images() -> None:
    """Engine images."""


@images.command("ensure")
@click.option("--engine", "engine_name", metavar=ENGINES, default=None,
              help="Only this engine (default: every container engine).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def images_ensure(engine_name: str | None, as_json: bool) -> None:
    """Pull the engine images, or build them offline from Debian packages."""
    from cloner.runtime.image_store import CONTAINER_ENGINES, ensure_image

    async def run(settings: Settings) -> list[dict[str, Any]]:
        engines = [parse_engine(engine_name)] if engine_name else list(CONTAINER_ENGINES)
        for engine in engines:
            if engine not in CONTAINER_ENGINES:
                raise InvalidInput(f"engine {engine.value} has no container image")
        async with App.open(settings) as app:
            await app.runtime.ping()
            results = []
            for engine in engines:
                outcome = await ensure_image(
                    app.runtime, engine, settings.image_for(engine.value),
                    pull_timeout_s=settings.image_pull_timeout_s,
                    work_dir=settings.data_dir / "build", skip_unbuildable=engine_name is None,
                )
                results.append({"engine": outcome.engine, "image": outcome.image,
                                "action": outcome.action, "seconds": round(outcome.seconds, 1),
                                "note": outcome.note})
            return results

    results = _run(run)
    if as_json:
        _print_json(results)
    else:
        for r in results:
            click.echo(f"{r['engine']:<10} {r['image']:<30} {r['action']:<8} {r['seconds']}s")
            if r["note"]:
                click.echo(f"cloner: note: {r['note']}", err=True)


# ----------------------------------------------------------------- tenants


@cli.group()
def tenant() -> None:
    """Create, inspect, delete, back up and restore tenants."""


async def _wait(app: App, request_id: str, timeout_s: float) -> None:
    """Wait for a request; work it in-process when no daemon is alive."""
    from cloner.daemon.worker import drain_until_done
    from cloner.tenants import TenantService

    if not await app.control_plane.live_daemons(LIVE_DAEMON_WITHIN_S):
        click.echo("cloner: no daemon is running; working the request in this process",
                   err=True)
        try:
            await drain_until_done(app, request_id, timeout_s)
        except TimeoutError:
            raise ClonerError(
                f"request {request_id} did not finish within {timeout_s:.0f}s"
            ) from None
        return
    await TenantService(app).wait(request_id, timeout_s)


async def _outcome(
    app: App, service: TenantService, request: Request, queued_status: Status, *,
    wait_: bool, timeout_s: float, queued_extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """What a queued tenant command prints: the request, or (with --wait) the tenant."""
    if not wait_:
        return {"request_id": request.id, "tenant_id": request.tenant_id,
                "status": queued_status.value, **(queued_extra or {})}, True
    await _wait(app, request.id, timeout_s)
    finished = await app.control_plane.get_request(request.id)
    ok = finished is not None and finished.status is RequestStatus.DONE
    return await service.to_json(await service.get(request.tenant_id), reveal=False), ok


@tenant.command("create")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--engine", required=True, metavar=ENGINES)
@click.option("--industry", required=True, metavar=INDUSTRIES)
@click.option("--template-version", default=None, metavar="vX.Y",
              help="Root template version (default: the latest).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until ready or failed.")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True,
              help="Seconds to wait with --wait.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenant_create(  # noqa: PLR0917 - one parameter per CLI option
    tenant_id: str, engine: str, industry: str, template_version: str | None,
                  wait_: bool, timeout_s: float, as_json: bool) -> None:
    """Enqueue a new tenant database."""
    from cloner.tenants import TenantService

    async def run(settings: Settings) -> tuple[dict[str, Any], bool]:
        async with App.open(settings) as app:
            service = TenantService(app)
            request = await service.create(tenant_id, engine, industry, template_version,
                                           actor=_actor())
            return await _outcome(app, service, request, Status.REQUESTED,
                                  wait_=wait_, timeout_s=timeout_s)

    data, ok = _run(run)
    if as_json:
        _print_json(data)
    elif "request_id" in data:
        click.echo(f"{data['tenant_id']}: requested (request {data['request_id']})")
    else:
        click.echo(_describe(data))
    if not ok:
        error = data.get("error") or {}
        _fail(f"tenant {tenant_id} failed at {error.get('step')}: {error.get('reason')}", 1)


@tenant.command("list")
@click.option("--status", default=None, metavar="STATE",
              help="Only tenants in this state.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenant_list(status: str | None, as_json: bool) -> None:
    """List tenants."""
    from cloner.tenants import TenantService

    if status is not None and status not in {s.value for s in Status}:
        _fail(f"unknown state {status!r}: choose one of "
              f"{', '.join(s.value for s in Status)}", 2)

    async def run(settings: Settings) -> list[dict[str, Any]]:
        async with App.open(settings) as app:
            service = TenantService(app)
            return [await service.to_json(t, reveal=False) for t in await service.list(status)]

    rows = _run(run)
    if as_json:
        _print_json(rows)
        return
    click.echo(format_table(rows))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The human table of ``tenant list``: state, endpoint and timings."""
    header = ("TENANT", "STATUS", "ENGINE", "INDUSTRY", "VERSION", "ENDPOINT", "READY_S",
              "ISOLATION")
    lines = [header]
    for r in rows:
        ep = r.get("endpoint") or {}
        endpoint = ep.get("path") or (f"{ep.get('host')}:{ep.get('port')}/{ep.get('database')}"
                                      if ep.get("port") else "-")
        timings = r.get("timings") or {}
        isolation = r.get("isolation")
        lines.append((
            r["tenant_id"], r["status"], r["engine"], r["industry"], r["template_version"],
            endpoint, f"{timings['total_s']:.2f}" if timings.get("total_s") else "-",
            "-" if isolation is None else ("passed" if isolation["passed"] else "FAILED"),
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _describe(data: dict[str, Any]) -> str:
    ep = data.get("endpoint") or {}
    timings = data.get("timings") or {}
    lines = [
        f"tenant:     {data['tenant_id']}",
        f"status:     {data['status']}",
        f"engine:     {data['engine']} ({data['template_version']}, {data['industry']})",
    ]
    if ep:
        lines.append("endpoint:   " + (ep.get("path") or
                                       f"{ep['host']}:{ep['port']}/{ep['database']}"))
    if data.get("container"):
        lines.append(f"container:  {data['container']['name']}")
    for role, cred in (data.get("roles") or {}).items():
        shown = cred["password"] if cred.get("password") else "(hidden; --reveal)"
        lines.append(f"role {role + ':':<9} {cred['username']}  {shown}")
    if data.get("isolation"):
        iso = data["isolation"]
        lines.append(f"isolation:  {'passed' if iso['passed'] else 'FAILED'} "
                     f"({sum(c['passed'] for c in iso['checks'])}/{len(iso['checks'])} checks)")
    if timings.get("total_s"):
        steps = ", ".join(f"{k} {v:.2f}" for k, v in timings.get("steps", {}).items())
        lines.append(f"timings:    {timings['total_s']:.2f}s ({steps})")
    if data.get("error"):
        lines.append(f"error:      {data['error'].get('step')}: {data['error'].get('reason')}")
    flight = data.get("migration")
    if flight:
        lines.append(f"migration:  {flight.get('phase')} {flight.get('step') or ''} "
                     f"(from {flight.get('start_version')}, rollout {flight.get('rollout')})")
    fence = data.get("writes_fenced")
    if fence:
        lines.append(f"writes:     fenced since {fence['since']}" if fence.get("until") is None
                     else f"writes:     last fenced {fence['since']} for {fence['seconds']}s")
    return "\n".join(lines)


@tenant.command("show")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--reveal", is_flag=True, help="Include passwords and DSNs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenant_show(tenant_id: str, reveal: bool, as_json: bool) -> None:
    """Show one tenant (secrets only with --reveal)."""
    from cloner.tenants import TenantService

    async def run(settings: Settings) -> dict[str, Any]:
        async with App.open(settings) as app:
            service = TenantService(app)
            return await service.to_json(await service.get(tenant_id), reveal=reveal,
                                         events=True)

    data = _run(run)
    if as_json:
        _print_json(data)
    else:
        click.echo(_describe(data))
        for event in data.get("events", [])[-SHOWN_IN_TEXT:]:
            actor = event["detail"].get("actor")
            click.echo(f"event:      {event['at']}  {event['kind']}"
                       + (f"  by {actor}" if actor else ""))


@tenant.command("delete")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--purge", is_flag=True, help="Also remove the data volume (after the backup).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until done.")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenant_delete(tenant_id: str, purge: bool, wait_: bool, timeout_s: float,
                  as_json: bool) -> None:
    """Deprovision a tenant: final backup, container removed, volume kept unless --purge."""
    from cloner.tenants import TenantService

    async def run(settings: Settings) -> tuple[dict[str, Any], bool]:
        async with App.open(settings) as app:
            service = TenantService(app)
            request = await service.delete(tenant_id, purge=purge, actor=_actor())
            return await _outcome(app, service, request, Status.DEPROVISIONING,
                                  wait_=wait_, timeout_s=timeout_s)

    data, ok = _run(run)
    if as_json:
        _print_json(data)
    elif "request_id" in data:
        click.echo(f"{tenant_id}: deprovisioning (request {data['request_id']})")
    else:
        backup = data.get("backup") or {}
        click.echo(f"{tenant_id}: {data['status']}; backup {backup.get('path', '-')}")
    if not ok:
        error = data.get("error") or {}
        _fail(f"deleting {tenant_id} failed at {error.get('step')}: {error.get('reason')}", 1)


@tenant.command("restore")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--from", "backup", default=None, metavar="BACKUP",
              help="A .dump in $CLONER_DATA_DIR/backups/TENANT/ (default: the tenant's last "
                   "recorded backup).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until ready or failed.")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True,
              help="Seconds to wait with --wait.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenant_restore(tenant_id: str, backup: str | None, wait_: bool, timeout_s: float,
                   as_json: bool) -> None:
    """Bring a deprovisioned or purged tenant back from a verified backup (new credentials)."""
    from cloner.tenants import TenantService

    # A relative --from means what it means in any shell: relative to the current directory.
    source = str(Path(backup).absolute()) if backup else None

    async def run(settings: Settings) -> tuple[dict[str, Any], bool]:
        async with App.open(settings) as app:
            service = TenantService(app)
            request = await service.restore(tenant_id, source, actor=_actor())
            return await _outcome(app, service, request, Status.REQUESTED,
                                  wait_=wait_, timeout_s=timeout_s,
                                  queued_extra={"backup": request.payload.get("backup")})

    data, ok = _run(run)
    if as_json:
        _print_json(data)
    elif "request_id" in data:
        click.echo(f"{tenant_id}: restore requested from {data['backup']} "
                   f"(request {data['request_id']})")
    else:
        click.echo(_describe(data))
    if not ok:
        error = data.get("error") or {}
        _fail(f"restoring {tenant_id} failed at {error.get('step')}: {error.get('reason')}", 1)


@tenant.command("backup")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True,
              help="Seconds to wait for the backup.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenant_backup(tenant_id: str, timeout_s: float, as_json: bool) -> None:
    """Take a verified backup of a ready tenant now (queued; waits for it)."""
    from cloner.tenants import TenantService

    async def run(settings: Settings) -> tuple[dict[str, Any], str | None]:
        async with App.open(settings) as app:
            service = TenantService(app)
            request = await service.backup(tenant_id, actor=_actor())
            await _wait(app, request.id, timeout_s)
            finished = await app.control_plane.get_request(request.id)
            if finished is None or finished.status is not RequestStatus.DONE:
                return {}, (finished.last_error if finished else None) or "unknown error"
            record = (await service.get(tenant_id)).backup or {}
            return record, None

    record, error = _run(run)
    if error is not None:
        _fail(f"backing up {tenant_id} failed at {error}", 1)
    if as_json:
        _print_json(record)
    else:
        click.echo(f"{tenant_id}: backup {record.get('path')} ({record.get('size_bytes')} bytes, "
                   f"sha256 {str(record.get('sha256'))[:12]}…)")


@tenant.command("rotate")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--role", default="all", show_default=True, metavar="owner|app|readonly|all",
              help="Which role gets a new password.")
@click.option("--timeout", "timeout_s", type=float, default=900.0, show_default=True,
              help="Seconds to wait for the rotation (it includes CLONER_ROTATION_GRACE_S).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenant_rotate(tenant_id: str, role: str, timeout_s: float, as_json: bool) -> None:
    """New passwords for a ready tenant's roles, without downtime (queued; waits for it).

    A new login is created and handed out through the registry before the old one
    is refused, after CLONER_ROTATION_GRACE_S. Passwords: `tenant show --reveal`.
    """
    from cloner.tenants import TenantService

    async def run(settings: Settings) -> tuple[dict[str, Any], str | None]:
        async with App.open(settings) as app:
            service = TenantService(app)
            request = await service.rotate(tenant_id, role, actor=_actor())
            await _wait(app, request.id, timeout_s)
            finished = await app.control_plane.get_request(request.id)
            if finished is None or finished.status is not RequestStatus.DONE:
                return {}, (finished.last_error if finished else None) or "unknown error"
            return await service.rotation_result(request), None

    data, error = _run(run)
    if error is not None:
        _fail(f"rotating {tenant_id} failed at {error}", 1)
    if as_json:
        _print_json(data)
    else:
        logins = ", ".join(f"{r} → {u}" for r, u in data["logins"].items())
        click.echo(f"{tenant_id}: rotated {logins}; old passwords refused")


# ------------------------------------------------------------------- users


@cli.group()
def user() -> None:
    """Application users: an email mapped to one tenant with a role."""


ROLES = ("admin", "member", "analyst")


@user.command("add")
@click.argument("email")
@click.option("--tenant", "tenant_id", required=True, metavar="TENANT")
@click.option("--role", required=True, type=click.Choice(ROLES),
              help="admin/member connect read-write, analyst read-only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def user_add(email: str, tenant_id: str, role: str, as_json: bool) -> None:
    """Map EMAIL to a tenant with a role (again for the same tenant: change the role)."""
    from cloner.users import normalize_email

    try:
        validate_tenant_id(tenant_id)
        normalize_email(email)
    except ClonerError as exc:
        _fail(exc.message, exc.exit_code)

    async def run(settings: Settings) -> dict[str, str]:
        async with App.open(settings) as app:
            return (await app.control_plane.add_user(email, tenant_id, role)).as_dict()

    added = _run(run)
    if as_json:
        _print_json(added)
    else:
        click.echo(f"{added['email']}: {added['role']} of {added['tenant_id']}")


@user.command("list")
@click.option("--tenant", "tenant_id", default=None, metavar="TENANT",
              help="Only this tenant's users.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def user_list(tenant_id: str | None, as_json: bool) -> None:
    """List users, by tenant then email."""
    if tenant_id is not None:
        try:
            validate_tenant_id(tenant_id)
        except ClonerError as exc:
            _fail(exc.message, exc.exit_code)

    async def run(settings: Settings) -> list[dict[str, str]]:
        async with App.open(settings) as app:
            if tenant_id is not None and await app.control_plane.get_tenant(tenant_id) is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            return [u.as_dict() for u in await app.control_plane.list_users(tenant_id)]

    rows = _run(run)
    if as_json:
        _print_json(rows)
        return
    header = ("EMAIL", "TENANT", "ROLE", "CREATED_AT")
    lines = [header] + [(r["email"], r["tenant_id"], r["role"], r["created_at"]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


@user.command("remove")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def user_remove(email: str, as_json: bool) -> None:
    """Remove a user (it can then be added to another tenant)."""
    from cloner.users import normalize_email

    try:
        normalize_email(email)
    except ClonerError as exc:
        _fail(exc.message, exc.exit_code)

    async def run(settings: Settings) -> dict[str, str]:
        async with App.open(settings) as app:
            return (await app.control_plane.remove_user(email)).as_dict()

    removed = _run(run)
    if as_json:
        _print_json(removed)
    else:
        click.echo(f"{removed['email']}: removed from {removed['tenant_id']}")


# ----------------------------------------------------------------- keys


@cli.group()
def keys() -> None:
    """The secret key that encrypts stored credentials."""


@keys.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_rotate(as_json: bool) -> None:
    """Put a new CLONER_SECRET_KEY first and re-encrypt every stored credential.

    With the key file, the old key is removed at the end; an interrupted run
    resumes when run again. With CLONER_SECRET_KEY=NEW,OLD, remove OLD afterwards.
    """
    from cloner.keys import rotate_keys

    async def run(settings: Settings) -> dict[str, Any]:
        async with App.open(settings) as app:
            return (await rotate_keys(settings, app.control_plane)).as_dict()

    report = _run(run)
    if as_json:
        _print_json(report)
        return
    click.echo(f"re-encrypted {report['reencrypted']} of {report['tenants']} tenants' "
               f"credentials under key {report['key_id']}"
               + (" (resumed an interrupted rotation)" if report["resumed"] else ""))
    if report["source"] == "file":
        click.echo(f"old keys removed from {report['key_file']}")
    else:
        click.echo("now remove every key but the first from CLONER_SECRET_KEY and restart "
                   "cloner processes")


# ----------------------------------------------------------------- backups


@cli.group()
def backup() -> None:
    """Backups on disk ($CLONER_DATA_DIR/backups/<tenant>/)."""


@backup.command("list")
@click.argument("tenant_id", metavar="[TENANT]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backup_list(tenant_id: str | None, as_json: bool) -> None:
    """List backups from their manifests, each checksum computed again (verified)."""
    from cloner.backups import list_backups

    settings = _settings()
    try:
        if tenant_id is not None:
            validate_tenant_id(tenant_id)
        found = list_backups(settings.backups_dir, tenant_id)
    except ClonerError as exc:
        _fail(exc.message, exc.exit_code)
    except OSError as exc:
        _fail(f"cannot read {settings.backups_dir}: {exc}", 1)
    rows = [b.as_dict() for b in found]
    if as_json:
        _print_json(rows)
        return
    header = ("TENANT", "TAKEN_AT", "REASON", "SIZE_BYTES", "VERIFIED", "PATH")
    lines = [header] + [
        (r["tenant"], r["taken_at"] or "-", r["reason"] or "-", str(r["size_bytes"]),
         "yes" if r["verified"] else f"NO ({r['problem']})", r["path"])
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


# --------------------------------------------------------------- templates


@cli.group()
def template() -> None:
    """Root templates and industry overlays."""


@template.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def template_list(as_json: bool) -> None:
    """List template versions per engine, with checksums and overlays."""
    from cloner.catalog import Catalog

    settings = _settings()
    try:
        catalog = Catalog(settings.templates_dir, settings.industry_templates_dir)
        versions = catalog.list_versions()
    except ClonerError as exc:
        _fail(exc.message, exc.exit_code)
    rows = [{"engine": v.engine, "version": v.version, "released": v.released,
             "checksum": v.checksum, "overlays": list(v.overlays),
             "description": v.description} for v in versions]
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        click.echo(f"{r['engine']:<9} {r['version']:<6} {r['released']:<11} "
                   f"{r['checksum'][:12]}  overlays: {', '.join(r['overlays']) or '-'}")


@template.command("validate")
@click.option("--engine", "engine_name", default=None, metavar=ENGINES)
@click.option("--template-version", default=None, metavar="vX.Y")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def template_validate(engine_name: str | None, template_version: str | None,
                      as_json: bool) -> None:
    """Check templates statically, then apply each to a scratch database."""
    from cloner.domain import validate_version
    from cloner.engines import available_engines
    from cloner.validation import validate_templates

    async def run(settings: Settings) -> Any:
        engines: list[Engine] = (
            [parse_engine(engine_name)] if engine_name else available_engines()
        )
        if template_version:
            validate_version(template_version)
        async with App.open(settings) as app:
            return await validate_templates(app, engines, template_version)

    report = _run(run)
    if as_json:
        _print_json({"ok": report.ok, "applied": report.applied, "errors": report.errors,
                     "warnings": report.warnings})
    else:
        for line in report.applied:
            click.echo(f"ok       {line}")
        for line in report.warnings:
            click.echo(f"warning  {line}")
        for line in report.errors:
            click.echo(f"error    {line}")
    if not report.ok:
        _fail(f"{len(report.errors)} template error(s)", 1)


# ----------------------------------------------------------------- migrate

from cloner.cli.migrate import migrate  # noqa: E402 - its commands use the helpers above

cli.add_command(migrate)

from cloner.cli.orphans import controlplane, orphans  # noqa: E402 - same reason as migrate

cli.add_command(orphans)
cli.add_command(controlplane)


def main() -> None:
    """Console entry point: one-line errors, exit 2 for usage errors."""
    try:
        cli.main(standalone_mode=False)
    except click.UsageError as exc:
        _fail(exc.format_message().replace("\n", " "), 2)
    except click.exceptions.Abort:
        _fail("aborted", 1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
