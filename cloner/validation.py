"""``cloner template validate``: static checks, then a real apply on a scratch server.

Each (version, overlay) pair is applied to its own database of one scratch
container of the engine, exactly as provisioning would, and the resulting
catalogue is inspected for design warnings.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from cloner import constants
from cloner.app import App
from cloner.catalog import ResolvedTemplates, lint_sql
from cloner.domain import Endpoint, Engine, Industry, container_name, volume_name
from cloner.engines import TenantTarget, get_engine
from cloner.errors import ClonerError
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
                    for problem in lint_sql(template.read()):
                        report.errors.append(f"{template.path}: {problem}")
                combos.append((label, ver, industry, resolved))
        if combos and report.ok:
            await _apply_on_scratch(app, engine, combos, report)
    return report


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
        endpoint = Endpoint(host=app.settings.bind_host, port=info.host_port, database="postgres")
        await driver.wait_ready(
            TenantTarget(scratch_id, "postgres", endpoint, creds), app.settings.ready_timeout_s
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
            try:
                await driver.apply_templates(target, resolved)
            except ClonerError as exc:
                report.errors.append(f"{label}: {exc.message}")
                continue
            report.applied.append(label)
            for warning in await driver.template_warnings(target):
                if warning not in seen_warnings:
                    seen_warnings.add(warning)
                    report.warnings.append(f"{label}: {warning}")
    finally:
        await runtime.remove_container(container_name(scratch_id))
        await runtime.remove_volume(volume_name(scratch_id))
