"""The provisioning pipeline of DESIGN.md: validate → … → register.

Each step is idempotent: a request redelivered after a crash runs the
pipeline from the top, and every step either finds its work done or
finishes it. Steps never talk to Docker or a database directly; they call
the runtime and the engine driver.

A restore (``RequestKind.RESTORE``) is this same pipeline with two steps
changed: ``resolve`` re-verifies the backup file instead of resolving
templates, and ``template`` loads the backup instead of applying templates.
Everything else is what a new tenant gets, on purpose: new credentials
(the enqueue cleared the old ones), a fresh container and volume (the new
request id makes the runtime replace a deprovisioned tenant's kept volume,
but only once the final backup that holds its data verifies again, right
before ``start``), RBAC re-granted on the restored tables, and a new
isolation proof before the tenant is ``ready``.

A failed request is compensated by removing only what it created (the
resources labelled with its request id): a restore that fails before
``start`` leaves the kept volume exactly as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from cloner import constants
from cloner.backups import BackupInfo, final_backup_problem, verify_backup
from cloner.catalog import ResolvedTemplates
from cloner.controlplane import TenantUpdate
from cloner.domain import (
    Credentials,
    Endpoint,
    Engine,
    IsolationReport,
    Request,
    RequestKind,
    Status,
    Tenant,
    TenantSpec,
    parse_engine,
    parse_industry,
    sql_identifier,
    validate_tenant_id,
)
from cloner.engines import (
    EngineDriver,
    SessionLimits,
    TenantTarget,
    available_engines,
    get_engine,
)
from cloner.engines.base import EndpointGuard
from cloner.errors import (
    ClonerError,
    ControlPlaneError,
    InvalidBackup,
    InvalidInput,
    IsolationViolation,
    LeaseLost,
    NotReady,
    TimeoutExceeded,
)
from cloner.logging import REDACTOR, get_logger
from cloner.pipeline.context import Services
from cloner.pipeline.hosts import ContainerHost, Placing, TenantHost
from cloner.pipeline.verify import prove_isolation
from cloner.secrets import generate_credentials

log = get_logger(__name__)

#: Called between steps; raises to stop the run (e.g. the lease was lost).
Checkpoint = Callable[[], Awaitable[None]]

PROVISION_STEPS = (
    "validate", "reserve", "resolve", "start", "ready", "template", "rbac", "verify", "register",
)

# Connection-level faults while a fresh server settles are worth another attempt;
# each engine adds its client library's own (``EngineDriver.transient_errors``).
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def _all_transient_errors() -> tuple[type[BaseException], ...]:
    found = list(_TRANSIENT_ERRORS)
    for engine in available_engines():
        found.extend(get_engine(engine).transient_errors)
    return tuple(found)


async def run_checkpoint(checkpoint: Checkpoint, step: str) -> None:
    """Run ``checkpoint`` before ``step``: ``LeaseLost`` stops the run as it is, any other
    error (the control plane busy) fails the step transiently."""
    try:
        await checkpoint()
    except (LeaseLost, StepFailed):
        raise
    except Exception as exc:
        raise StepFailed(step, exc) from exc


class StepFailed(Exception):
    """A pipeline step failed; carries the step and whether a retry may help.

    A control-plane error (busy, locked) is transient: the step's work is
    idempotent, and the next attempt finds the registry answering again.
    ``LeaseLost`` is never wrapped: the attempt stops instead of failing.
    """

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        self.transient = isinstance(cause, (*_all_transient_errors(), ControlPlaneError)) or (
            isinstance(cause, ClonerError) and cause.transient
        )
        self.error_class = type(cause).__name__
        super().__init__(f"{step}: {self.reason}")

    @property
    def reason(self) -> str:
        """One line, redacted."""
        text = str(self.cause) or type(self.cause).__name__
        if isinstance(self.cause, ClonerError):
            text = self.cause.message
        return REDACTOR.redact(" ".join(text.split()))[:500]


@dataclass
class ProvisionRun:
    """State carried from step to step for one request."""

    request: Request
    spec: TenantSpec | None = None
    engine: EngineDriver | None = None
    templates: ResolvedTemplates | None = None
    credentials: Credentials | None = None
    container_name: str | None = None
    #: The container ``start`` created or adopted: what vouches for ``endpoint``.
    container_id: str | None = None
    storage_root: Path | None = None
    endpoint: Endpoint | None = None
    #: Set by ``start`` for container engines (``pipeline/endpoints.py``).
    guard: EndpointGuard | None = None
    isolation: IsolationReport | None = None
    #: The verified backup a restore loads (set by ``resolve``; None when provisioning).
    backup: BackupInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: Statement/lock timeouts of the run's database sessions (from settings).
    session: SessionLimits = field(default_factory=SessionLimits)

    @property
    def tenant_id(self) -> str:
        """The tenant this run provisions."""
        return self.request.tenant_id

    @property
    def restoring(self) -> bool:
        """True when this run restores a backup instead of applying templates."""
        return self.request.kind is RequestKind.RESTORE

    def target(self) -> TenantTarget:
        """Connection target once start has run."""
        assert self.engine and self.endpoint and self.credentials
        return TenantTarget(
            tenant_id=self.tenant_id,
            database=self.engine.database_name(self.tenant_id),
            endpoint=self.endpoint,
            credentials=self.credentials,
            container_name=self.container_name,
            storage_root=self.storage_root,
            session=self.session,
            guard=self.guard,
        )


class Provisioner:
    """Runs the provisioning steps for one request and compensates failures."""

    def __init__(self, services: Services) -> None:
        self.s = services

    async def run(self, request: Request, checkpoint: Checkpoint | None = None) -> Tenant:
        """Provision the tenant of ``request``; raise ``StepFailed`` on failure.

        ``checkpoint`` runs before every step: the worker uses it to confirm it
        still holds the lease, so a worker whose lease was re-taken stops at the
        next step boundary instead of writing over its successor.
        """
        run = ProvisionRun(request, session=SessionLimits.from_settings(self.s.settings))
        existing = await self.s.control_plane.get_tenant(request.tenant_id)
        if existing and existing.request_id == request.id and existing.status not in (
            Status.REQUESTED, Status.PROVISIONING
        ):
            # Redelivered after this request reached its outcome (ready, and maybe
            # degraded or deprovisioned since) but before the queue heard of it: running
            # the steps again could only fail and compensate away a live tenant's data.
            return existing
        started = time.monotonic()
        for step in PROVISION_STEPS:
            if checkpoint is not None:
                await run_checkpoint(checkpoint, step)
            with structlog.contextvars.bound_contextvars(step=step):
                step_started = time.monotonic()
                try:
                    async with asyncio.timeout(self.s.settings.step_timeout_s):
                        await getattr(self, f"_{step}")(run)
                except TimeoutError as exc:
                    raise StepFailed(step, TimeoutExceeded(
                        f"step {step} exceeded {self.s.settings.step_timeout_s:.0f}s"
                    )) from exc
                except (StepFailed, LeaseLost):
                    raise
                except Exception as exc:
                    raise StepFailed(step, exc) from exc
                elapsed = time.monotonic() - step_started
                run.timings[step] = round(elapsed, 4)
                # Restores stay out of the provisioning histogram: their template step
                # loads data, and its duration would skew the template-step figures.
                if run.spec is not None and not run.restoring:
                    self.s.metrics.provision_duration.labels(
                        engine=run.spec.engine.value, step=step
                    ).observe(elapsed)
                log.debug("provision.step_done", seconds=round(elapsed, 4))
        total = time.monotonic() - started
        assert run.spec is not None
        engine = run.spec.engine.value
        if run.restoring:
            self.s.metrics.restore_duration.labels(engine=engine).observe(total)
            self.s.metrics.restores.labels(engine=engine, outcome="success").inc()
        else:
            self.s.metrics.provision_duration.labels(engine=engine, step="total").observe(total)
            self.s.metrics.provisions.labels(
                engine=engine, outcome="success", error_class=""
            ).inc()
        tenant = await self.s.control_plane.get_tenant(run.tenant_id)
        assert tenant is not None
        log.info("provision.restored" if run.restoring else "provision.ready",
                 seconds=round(total, 3), port=run.endpoint.port if run.endpoint else None)
        return tenant

    # ------------------------------------------------------------------ steps

    async def _validate(self, run: ProvisionRun) -> None:
        payload = run.request.payload
        tenant_id = validate_tenant_id(run.request.tenant_id)
        engine = parse_engine(str(payload.get("engine")))
        run.spec = TenantSpec(
            tenant_id=tenant_id,
            engine=engine,
            industry=parse_industry(str(payload.get("industry"))),
            template_version=str(payload.get("template_version")),
        )
        run.engine = get_engine(engine)
        run.storage_root = self.s.storage_root(run.engine)

    async def _reserve(self, run: ProvisionRun) -> None:
        assert run.engine is not None
        creds = await self.s.credentials(run.tenant_id)
        update = TenantUpdate(status=Status.PROVISIONING, attempts=run.request.attempts,
                              error=None)
        if creds is None:
            # Secrets are generated once per request and stored before any container
            # exists, so a crash after `start` resumes with the same passwords.
            creds = generate_credentials(sql_identifier(run.tenant_id), run.engine.superuser)
            update = TenantUpdate(
                status=Status.PROVISIONING, attempts=run.request.attempts, error=None,
                credentials_token=self.s.vault.seal_credentials(creds),
            )
        REDACTOR.add(creds.all_secrets())
        run.credentials = creds
        await self.s.control_plane.update_tenant(run.tenant_id, update)

    async def _resolve(self, run: ProvisionRun) -> None:
        assert run.spec is not None
        if run.restoring:
            run.backup = await self._verified_backup(run)
            return
        run.templates = self.s.catalog.resolve(
            run.spec.engine.value, run.spec.template_version, run.spec.industry
        )

    async def _start(self, run: ProvisionRun) -> None:
        assert run.spec and run.engine and run.credentials
        labels = {
            constants.LABEL_TENANT: run.tenant_id,
            constants.LABEL_REQUEST: run.request.id,
            constants.LABEL_ENGINE: run.spec.engine.value,
            constants.LABEL_TEMPLATE_VERSION: run.spec.template_version,
            constants.LABEL_INDUSTRY: run.spec.industry.value,
            constants.LABEL_ROLE: "tenant-database",
        }
        host = self.s.host(run.engine)
        if run.restoring:
            await self._check_replaceable(run, host)
        hosted = await host.start(Placing(
            run.tenant_id, run.request.id, run.engine, run.credentials, labels
        ))
        run.endpoint = hosted.endpoint
        run.container_name = hosted.container_name
        run.container_id = hosted.container_id
        run.guard = self.s.endpoint_guard(run.tenant_id, hosted.container_name,
                                          hosted.container_id)
        await self.s.control_plane.update_tenant(run.tenant_id, TenantUpdate(
            container_id=hosted.container_id, container_name=hosted.container_name,
            endpoint=run.endpoint,
        ))

    async def _check_replaceable(self, run: ProvisionRun, host: TenantHost) -> None:
        """Refuse to let ``start`` replace data of another request unless its final backup
        verifies now: restoring replaces a kept volume, whose data then lives on only in
        that backup (checked at enqueue too, but it may have rotted while queued)."""
        owner = await host.data_request(run.tenant_id)
        if owner is None or owner == run.request.id:
            return
        tenant = await self.s.control_plane.get_tenant(run.tenant_id)
        problem = await asyncio.to_thread(
            partial(final_backup_problem, data_of=owner), self.s.settings.backups_dir,
            run.tenant_id, tenant.backup if tenant is not None else None,
        )
        if problem is not None:
            raise InvalidBackup(
                f"the kept data of {run.tenant_id} would be replaced and {problem}; "
                "it is left as it is"
            )

    async def _ready(self, run: ProvisionRun) -> None:
        assert run.engine is not None
        host = self.s.host(run.engine)
        probe = asyncio.create_task(
            run.engine.wait_ready(run.target(), self.s.settings.ready_timeout_s)
        )
        watchdog = asyncio.create_task(host.watch(run.tenant_id))
        try:
            done, _ = await asyncio.wait({probe, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if probe not in done:
                probe.cancel()
            (await next(iter(done)))  # re-raises the probe's or the watchdog's error
        except NotReady as exc:
            hint = await host.diagnostics(run.tenant_id)
            raise NotReady(f"{exc.message}; {hint}") from exc
        finally:
            for task in (probe, watchdog):
                task.cancel()
            await asyncio.gather(probe, watchdog, return_exceptions=True)

    async def _verified_backup(self, run: ProvisionRun) -> BackupInfo:
        """The backup named by the request, checked again: it may have changed since enqueue."""
        payload = run.request.payload
        source = payload.get("backup")
        if not isinstance(source, str) or not source:
            raise InvalidBackup("restore request names no backup")
        info = await asyncio.to_thread(
            verify_backup, self.s.settings.backups_dir, run.tenant_id, source
        )
        if info.sha256 != payload.get("sha256"):
            raise InvalidBackup(
                f"backup {info.path.name} changed since the restore was requested "
                f"(sha256 {str(info.sha256)[:12]}…, expected {str(payload.get('sha256'))[:12]}…)"
            )
        return info

    async def _template(self, run: ProvisionRun) -> None:
        assert run.engine is not None
        if run.restoring:
            assert run.backup is not None
            await run.engine.restore(self.s.runtime, run.target(), run.backup.path)
            return
        assert run.templates is not None
        await run.engine.apply_templates(run.target(), run.templates)

    async def _rbac(self, run: ProvisionRun) -> None:
        assert run.engine is not None
        await run.engine.apply_rbac(run.target(), self.s.settings.tenant_connection_limit)
        # Recorded with the rbac itself: the reconciler never queues a `harden` for it.
        await self.s.control_plane.update_tenant(
            run.tenant_id, TenantUpdate(hardening_level=run.engine.hardening_level))

    async def _verify(self, run: ProvisionRun) -> None:
        assert run.engine and run.spec
        report = await prove_isolation(self.s, run.spec.engine, run.engine, run.target())
        run.isolation = report
        if not report.passed:
            failed = ", ".join(c.name for c in report.checks if not c.passed)
            raise IsolationViolation(f"isolation proof failed: {failed}")

    async def _register(self, run: ProvisionRun) -> None:
        total = round(sum(run.timings.values()), 4)
        timings: dict[str, Any] = {"total_s": total, "steps": dict(run.timings)}
        detail: dict[str, Any] = {"request": run.request.id,
                                  "actor": run.request.payload.get("actor")}
        if run.backup is not None:
            detail["backup"] = str(run.backup.path)
        await self.s.control_plane.update_tenant(run.tenant_id, TenantUpdate(
            status=Status.READY, timings=timings, error=None, endpoint=run.endpoint,
            event="restored" if run.restoring else "ready", event_detail=detail,
        ))

    # ----------------------------------------------------------- compensation

    async def compensate(
        self, tenant_id: str, request_id: str, engine: Engine | None = None,
    ) -> dict[str, Any]:
        """Remove what the failed request ``request_id`` created (unless ``keep_failed``).

        Only resources that record this request as their creator go: the
        container and volume labelled ``cloner.request=<request_id>``, the
        embedded directory whose ``.request`` marker names it. Anything else
        under the tenant's name (above all a deprovisioned tenant's retained
        volume, which a restore failing before ``start`` never touched) stays.
        ``engine`` is the tenant's engine when known; without it (a request so
        malformed it never named one) only container resources can exist.
        Returns what was removed and what was kept, for the tenant's history.
        """
        driver = _driver_or_none(engine)
        host = self.s.host(driver) if driver is not None else ContainerHost(self.s)
        if self.s.settings.keep_failed:
            log.warning("provision.kept_failed_resources", tenant_id=tenant_id)
            return {"removed": [], "kept_failed": True}
        removed = await host.remove_created(tenant_id, request_id)
        other = await host.data_request(tenant_id)
        detail: dict[str, Any] = {"removed": removed}
        if other is not None:
            detail["kept_data_of_request"] = other or "unknown"
        log.info("provision.compensated", tenant_id=tenant_id, **detail)
        return detail


def _driver_or_none(engine: Engine | None) -> EngineDriver | None:
    if engine is None:
        return None
    try:
        return get_engine(engine)
    except InvalidInput:
        return None
