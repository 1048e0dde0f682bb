"""``cloner orphans …`` and ``cloner controlplane backup`` (``cloner.orphans``, ``cloner.install``).

::

    cloner orphans list [--json]
    cloner orphans remove NAME [--json]
    cloner orphans adopt NAME [--json]
    cloner controlplane backup [PATH] [--json]

Same conventions as every command (``cloner.cli.main``): one-line errors on
stderr, exit 0 ok, 1 the operation failed (no backup could be taken: nothing
removed), 2 bad usage or input (no such orphan, PATH exists).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cloner.settings import Settings

#: Where ``controlplane backup`` writes without PATH (inside the data dir, 0700).
CONTROL_PLANE_BACKUPS = "control-plane-backups"


@click.group("orphans")
def orphans() -> None:
    """Resources labelled with this install that no registry row wants (quarantined)."""


@orphans.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def orphans_list(as_json: bool) -> None:
    """List quarantined containers and volumes, with why each is an orphan."""
    from cloner.app import App
    from cloner.cli.main import _print_json, _run
    from cloner.orphans import OrphanService

    async def run(settings: Settings) -> list[dict[str, Any]]:
        async with App.open(settings) as app:
            return [o.as_dict() for o in await OrphanService(app).list()]

    rows = _run(run)
    if as_json:
        _print_json(rows)
        return
    header = ("NAME", "KIND", "TENANT", "CREATED_AT", "REASON")
    lines = [header] + [(r["name"], r["kind"], r["tenant_id"] or "-", r["created_at"] or "-",
                         r["reason"]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


@orphans.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def orphans_remove(name: str, as_json: bool) -> None:
    """Remove an orphan; a volume is backed up (and verified) first, or kept."""
    from cloner.app import App
    from cloner.cli.main import _actor, _print_json, _run
    from cloner.orphans import OrphanService

    async def run(settings: Settings) -> dict[str, Any]:
        async with App.open(settings) as app:
            return await OrphanService(app).remove(name, actor=_actor())

    outcome = _run(run)
    if as_json:
        _print_json(outcome)
    else:
        backup = f"; backup {outcome['backup']}" if outcome["backup"] else ""
        click.echo(f"{outcome['name']}: {outcome['kind']} removed{backup}")


@orphans.command("adopt")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def orphans_adopt(name: str, as_json: bool) -> None:
    """Register the tenant of an orphan volume as deprovisioned (then `tenant restore` it)."""
    from cloner.app import App
    from cloner.cli.main import _actor, _print_json, _run
    from cloner.orphans import OrphanService

    async def run(settings: Settings) -> dict[str, Any]:
        async with App.open(settings) as app:
            return await OrphanService(app).adopt(name, actor=_actor())

    outcome = _run(run)
    if as_json:
        _print_json(outcome)
    else:
        click.echo(f"{outcome['tenant_id']}: adopted as {outcome['status']} from "
                   f"{outcome['name']}; backup {outcome['backup']}; bring it back with "
                   f"`cloner tenant restore {outcome['tenant_id']}`")


@click.group("controlplane")
def controlplane() -> None:
    """The control-plane database itself."""


@controlplane.command("backup")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def controlplane_backup(path: Path | None, as_json: bool) -> None:
    """Write a consistent copy of the control plane (SQLite online backup, mode 0600)."""
    from cloner.cli.main import _print_json, _run

    # A relative PATH means what it means in any shell: relative to the current directory.
    target = path.absolute() if path is not None else None

    async def run(settings: Settings) -> dict[str, Any]:
        return await backup_control_plane(settings, target)

    outcome = _run(run)
    if as_json:
        _print_json(outcome)
    else:
        click.echo(f"control plane of install {outcome['install_id']} "
                   f"({outcome['tenants']} tenants) copied to {outcome['path']}")


async def backup_control_plane(settings: Settings, path: Path | None) -> dict[str, Any]:
    """Copy the control plane to ``path`` (an absolute file or directory; None: the default)."""
    import asyncio

    from cloner.app import App
    from cloner.backups import sha256_of
    from cloner.errors import ControlPlaneError, InvalidInput

    source = settings.control_plane_path
    if not await asyncio.to_thread(source.is_file):
        raise ControlPlaneError(f"no control plane at {source}: nothing to back up")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"control-plane-{stamp}.sqlite3"
    if path is None:
        folder = settings.data_dir / CONTROL_PLANE_BACKUPS
        await asyncio.to_thread(folder.mkdir, mode=0o700, exist_ok=True)
        dest = folder / name
    else:
        dest = path
        if await asyncio.to_thread(dest.is_dir):
            dest = dest / name
        if await asyncio.to_thread(dest.exists):
            raise InvalidInput(f"{dest} already exists; choose another path")
        if not await asyncio.to_thread(dest.parent.is_dir):
            raise InvalidInput(f"{dest.parent} is not a directory")
    async with App.open(settings) as app:
        try:
            await app.control_plane.backup_to(dest)
        except FileExistsError:
            raise InvalidInput(f"{dest} already exists; choose another path") from None
        tenants = await app.control_plane.tenant_count()
        install_id = app.install_id
    return {
        "path": str(dest), "size_bytes": (await asyncio.to_thread(dest.stat)).st_size,
        "sha256": await asyncio.to_thread(sha256_of, dest), "install_id": install_id,
        "tenants": tenants, "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
