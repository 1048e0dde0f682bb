"""``cloner template validate``: static checks, then a real apply on a scratch server.

Each (version, overlay) pair is applied to its own database of one scratch
container of the engine (or its own scratch file, for an embedded engine),
exactly as provisioning would, and the resulting catalogue is inspected for
design warnings.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from dataclasses import dataclass, field

from cloner import constants
from cloner.app import App
from cloner.catalog import ResolvedTemplates, lint_template
from cloner.domain import Endpoint, Engine, Industry, container_name, volume_name
from cloner.engines import EngineDriver, Placement, TenantTarget, get_engine
from cloner.errors import ClonerError
from cloner.pipeline.hosts import EmbeddedHost, Placing
from cloner.secrets import generate_credentials


@dataclass
class ValidationReport:
    """Findings per (engine, version, overlay)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors


async def validate_templates(
    app: App, engines: list[Engine], version: str | None
) -> ValidationReport:
    """Validate every requested engine's templates; never raises for template faults."""
    report = ValidationReport()
    for engine in engines:
        catalog = app.catalog
        versions = [version] if version else catalog.versions(engine.value)
        combos = []
        for ver in versions:
            for industry in [Industry.NONE, *map(Industry, catalog.overlays_for(engine.value))]:
                label = f"{engine.value} {ver} + {industry.value}"
                try:
                    resolved = catalog.resolve(engine.value, ver, industry)
                except ClonerError as exc:
                    report.errors.append(f"{label}: {exc.message}")
                    continue
                for template in resolved.files:
                    for problem in lint_template(engine.value, template.read()):
                        report.errors.append(f"{template.path}: {problem}")
                combos.append((label, ver, industry, resolved))
        if combos and report.ok:
            if get_engine(engine).placement is Placement.EMBEDDED:
                await _apply_embedded(app, engine, combos, report)
            elif not await app.runtime.image_exists(
                image := app.settings.image_for(engine.value)
            ):
                # No server to apply on (mongodb cannot be built offline): the static
                # checks above are all this run can prove, and it says so.
                report.warnings.append(
                    f"{engine.value}: checked statically only; image {image} is not present "
                    "(cloner images ensure)"
                )
            else:
                await _apply_on_scratch(app, engine, combos, report)
    return report


async def _apply_embedded(
    app: App, engine: Engine, combos: list[tuple[str, str, Industry, ResolvedTemplates]],
    report: ValidationReport,
) -> None:
    """One scratch file per (version, overlay) in a scratch root, removed afterwards."""
    driver = get_engine(engine)
    root = app.settings.data_dir / f".validate-{engine.value}-{secrets.token_hex(4)}"
    host = EmbeddedHost(root)
    creds = generate_credentials("scratch")
    seen: set[str] = set()
    try:
        for index, (label, _ver, _industry, resolved) in enumerate(combos):
            scratch_id = f"validate-{index}"
            hosted = await host.start(Placing(scratch_id, "validate", driver, creds, {}))
            target = TenantTarget(scratch_id, driver.database_name(scratch_id),
                                  hosted.endpoint, creds, storage_root=root)
            await _apply_and_inspect(driver, target, label, resolved, report=report, seen=seen)
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)


async def _apply_and_inspect(
    driver: EngineDriver, target: TenantTarget, label: str, resolved: ResolvedTemplates,
    *, report: ValidationReport, seen: set[str],
) -> None:
    """Apply one combination; record an error or the design warnings it produced."""
    try:
        await driver.apply_templates(target, resolved)
    except ClonerError as exc:
        report.errors.append(f"{label}: {exc.message}")
        return
    report.applied.append(label)
    for warning in await driver.template_warnings(target):
        if warning not in seen:
            seen.add(warning)
            report.warnings.append(f"{label}: {warning}")


async def _apply_on_scratch(
    app: App, engine: Engine, combos: list[tuple[str, str, Industry, ResolvedTemplates]],
    report: ValidationReport,
) -> None:
    driver = get_engine(engine)
    scratch_id = f"validate-{secrets.token_hex(4)}"
    creds = generate_credentials("scratch")
    spec = driver.container_spec(
        scratch_id, creds,
        {constants.LABEL_TENANT: scratch_id, constants.LABEL_ROLE: "scratch",
         constants.LABEL_ENGINE: engine.value},
        app.services.container_defaults(engine.value),
    )
    runtime = app.runtime
    try:
        await runtime.ensure_network(app.settings.tenant_network)
        info = await runtime.ensure_container(spec)
        # The scratch server's own database name: wait_ready only needs the server.
        scratch_db = driver.database_name(scratch_id)
        endpoint = Endpoint(host=app.settings.bind_host, port=info.host_port, database=scratch_db)
        await driver.wait_ready(
            TenantTarget(scratch_id, scratch_db, endpoint, creds), app.settings.ready_timeout_s
        )
        seen_warnings: set[str] = set()
        for index, (label, _ver, _industry, resolved) in enumerate(combos):
            database = f"validate_{index}"
            combo_creds = generate_credentials(database)
            combo_creds = type(combo_creds)(creds.superuser, creds.bootstrap_password,
                                            combo_creds.roles)
            target = TenantTarget(
                scratch_id, database, Endpoint(endpoint.host, endpoint.port, database),
                combo_creds,
            )
            await _apply_and_inspect(driver, target, label, resolved, report=report,
                                     seen=seen_warnings)
    finally:
        await runtime.remove_container(container_name(scratch_id))
        await runtime.remove_volume(volume_name(scratch_id))
