"""Unit tests of the provisioning pipeline driven by a worker, on in-memory fakes.

Real control plane (SQLite on a temporary file), real catalog, vault and
metrics; ``InMemoryRuntime`` and ``FakeEngine`` from ``cloner.testing`` stand
in for Docker and PostgreSQL. No Docker, no database server.
"""

from __future__ import annotations

from pathlib import Path

from cloner import constants
from cloner.controlplane import TenantUpdate
from cloner.domain import RequestStatus, Status, container_name, volume_name
from cloner.errors import TemplateError
from cloner.pipeline import PROVISION_STEPS
from cloner.testing import FAKE_CHECKS
from tests.unit.conftest import Env, EnvFactory

REPO = Path(__file__).resolve().parents[2]
ENGINE_HOOKS = ["container_spec", "wait_ready", "apply_templates", "apply_rbac",
                "prove_isolation"]


# --------------------------------------------------------------------- happy path


async def test_happy_path_registers_ready_tenant_with_timings_metrics_and_hook_order(
    env: Env,
) -> None:
    """One claimed request runs every step: READY, per-step timings, success counted."""
    created = await env.create()
    request = await env.work_once()

    assert request.id == created.id
    assert request.status is RequestStatus.DONE
    assert request.attempts == 1
    tenant = await env.tenant()
    assert tenant.status is Status.READY
    assert tenant.request_id == created.id
    assert tenant.error is None
    assert tenant.attempts == 1
    assert set(PROVISION_STEPS) - {"register"} <= set(tenant.timings["steps"])
    assert tenant.timings["total_s"] >= 0
    assert env.engine.hooks("acme") == ENGINE_HOOKS
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="success",
                      error_class="") == 1
    assert env.metric("cloner_provision_duration_seconds_count", engine="postgres",
                      step="total") == 1


async def test_happy_path_records_container_endpoint_credentials_and_isolation(
    env: Env,
) -> None:
    """The registry points at the container's published port and stores the passing proof."""
    created = await env.create()
    await env.work_once()

    tenant = await env.tenant()
    container = env.runtime.container(container_name("acme"))
    assert container is not None and container.status == "running"
    assert container.labels[constants.LABEL_REQUEST] == created.id
    assert container.labels[constants.LABEL_INSTALL] == env.app.install_id
    assert volume_name("acme") in env.runtime.volumes
    assert tenant.endpoint is not None
    assert tenant.endpoint.port == container.host_port
    assert tenant.endpoint.host == env.app.settings.bind_host
    assert tenant.container_id == container.id
    assert tenant.has_credentials
    creds = await env.app.services.credentials("acme")
    assert creds is not None
    assert sorted(creds.roles) == ["app", "owner", "readonly"]
    assert tenant.isolation is not None and tenant.isolation.passed
    names = [c.name for c in tenant.isolation.checks]
    assert names == [*FAKE_CHECKS, "port_published_on_bind_host_only", "own_isolated_network"]
    applied = env.engine.applied["acme"]
    assert applied.overlay is not None and applied.overlay.name == "finance"
    assert env.engine.connection_limits["acme"] == env.app.settings.tenant_connection_limit


async def test_second_tenant_is_proven_against_the_first_as_neighbour(env: Env) -> None:
    """prove_isolation of a new tenant receives every live tenant of the engine as neighbour."""
    await env.create("alpha")
    await env.work_once()
    await env.create("beta")
    await env.work_once()

    alpha = await env.tenant("alpha")
    neighbours = env.engine.neighbours["beta"]
    assert [n.tenant_id for n in neighbours] == ["alpha"]
    assert neighbours[0].endpoint == alpha.endpoint
    assert neighbours[0].database == "alpha"
    assert env.engine.neighbours["alpha"] == ()


# ------------------------------------------------------------- permanent failure


async def test_permanent_template_failure_fails_at_once_and_compensates(env: Env) -> None:
    """A TemplateError fails the request on attempt 1 and removes container and volume."""
    env.engine.fail["apply_templates"] = TemplateError("syntax error at or near SELEC")
    await env.create()
    request = await env.work_once()

    assert request.status is RequestStatus.FAILED
    assert request.attempts == 1
    assert request.last_error == "template: syntax error at or near SELEC"
    tenant = await env.tenant()
    assert tenant.status is Status.FAILED
    assert tenant.error == {
        "step": "template", "reason": "syntax error at or near SELEC",
        "class": "TemplateError", "attempt": 1, "transient": False,
    }
    assert env.runtime.containers == {}
    assert env.runtime.volumes == {}
    assert env.runtime.called("remove_container") == [container_name("acme")]
    assert env.runtime.called("remove_volume") == [volume_name("acme")]
    assert env.engine.hooks() == ENGINE_HOOKS[:3]
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="failure",
                      error_class="TemplateError") == 1
    assert env.metric("cloner_provisions_total", engine="postgres", outcome="success",
                      error_class="") == 0


async def test_keep_failed_leaves_container_and_volume_for_debugging(make_env: EnvFactory) -> None:
    """With keep_failed the failure is recorded but nothing is removed."""
    env = await make_env(keep_failed=True)
    env.engine.fail["apply_templates"] = TemplateError("syntax error")
    await env.create()
    request = await env.work_once()

    assert request.status is RequestStatus.FAILED
    assert (await env.tenant()).status is Status.FAILED
    assert container_name("acme") in env.runtime.containers
    assert volume_name("acme") in env.runtime.volumes
    assert env.runtime.called("remove_container") == []
    assert env.runtime.called("remove_volume") == []


async def test_step_timeout_fails_the_step_that_hung(make_env: EnvFactory) -> None:
    """A hook running past step_timeout_s fails its step with TimeoutExceeded."""
    env = await make_env(step_timeout_s=0.05)
    env.engine.delay_s["apply_rbac"] = 5.0
    await env.create()
    request = await env.work_once()

    assert request.status is RequestStatus.FAILED
    tenant = await env.tenant()
    assert tenant.status is Status.FAILED
    assert tenant.error is not None
    assert tenant.error["step"] == "rbac"
    assert tenant.error["class"] == "TimeoutExceeded"
    assert "exceeded" in tenant.error["reason"]


# ---------------------------------------------------------------- isolation proof


async def test_failing_isolation_check_fails_at_verify_and_keeps_the_report(env: Env) -> None:
    """A failed engine check is an IsolationViolation at verify; the report is stored."""
    env.engine.failing_checks = {"neighbours_refuse_tenant_credentials"}
    await env.create()
    request = await env.work_once()

    assert request.status is RequestStatus.FAILED
    tenant = await env.tenant()
    assert tenant.status is Status.FAILED
    assert tenant.error is not None
    assert tenant.error["step"] == "verify"
    assert tenant.error["class"] == "IsolationViolation"
    assert "neighbours_refuse_tenant_credentials" in tenant.error["reason"]
    assert tenant.isolation is not None
    assert not tenant.isolation.passed
    failed = [c.name for c in tenant.isolation.checks if not c.passed]
    assert failed == ["neighbours_refuse_tenant_credentials"]
    assert env.runtime.containers == {}
    assert env.metric("cloner_isolation_checks_total",
                      check="neighbours_refuse_tenant_credentials", outcome="failed") == 1


async def test_network_with_inter_container_traffic_fails_the_proof(env: Env) -> None:
    """A pre-existing tenant network with ICC enabled makes own_isolated_network fail."""
    env.runtime.networks[env.app.settings.tenant_network] = True
    await env.create()
    await env.work_once()

    tenant = await env.tenant()
    assert tenant.status is Status.FAILED
    assert tenant.isolation is not None
    failed = [c for c in tenant.isolation.checks if not c.passed]
    assert [c.name for c in failed] == ["own_isolated_network"]
    assert "ENABLED" in failed[0].detail


# -------------------------------------------------------------------- redelivery


async def test_redelivered_request_of_ready_tenant_finishes_without_rerunning_hooks(
    env: Env,
) -> None:
    """Crash after READY but before the queue heard: the redelivery only completes it."""
    created = await env.create()
    first = await env.cp.claim("crashed-daemon", 30.0)
    assert first is not None
    await env.app.provisioner.run(first)  # registry says READY, queue still "running"
    assert (await env.tenant()).status is Status.READY
    hooks_before = list(env.engine.calls)
    runtime_calls_before = len(env.runtime.calls)

    await env.cp.db.execute(
        "UPDATE requests SET lease_expires_at = 0 WHERE id = ?", (created.id,)
    )
    request = await env.work_once()

    assert request.id == created.id
    assert request.status is RequestStatus.DONE
    assert request.attempts == 2
    assert env.engine.calls == hooks_before
    assert env.runtime.calls[runtime_calls_before:] == []
    assert container_name("acme") in env.runtime.containers
    assert volume_name("acme") in env.runtime.volumes
    assert (await env.tenant()).status is Status.READY


async def test_redelivered_request_of_failed_tenant_is_failed_without_rerunning(
    env: Env,
) -> None:
    """Crash after FAILED was recorded: the redelivery marks the request failed, nothing else."""
    env.engine.fail["apply_templates"] = TemplateError("syntax error")
    created = await env.create()
    await env.work_once()
    hooks_before = list(env.engine.calls)
    # The queue "missed" the outcome: the request is running again under a dead lease.
    await env.cp.db.execute(
        "UPDATE requests SET status = 'running', lease_owner = 'dead', lease_expires_at = 0,"
        " finished_at = NULL WHERE id = ?", (created.id,),
    )
    request = await env.work_once()

    assert request.status is RequestStatus.FAILED
    assert "template" in (request.last_error or "")
    assert env.engine.calls == hooks_before
    assert (await env.tenant()).status is Status.FAILED


async def test_recreate_after_kept_failure_replaces_container_and_secrets(
    make_env: EnvFactory,
) -> None:
    """A new request for a FAILED id (kept resources) gets a new container and new secrets."""
    env = await make_env(keep_failed=True)
    env.engine.fail["apply_templates"] = TemplateError("syntax error")
    first = await env.create()
    await env.work_once()
    kept = env.runtime.container(container_name("acme"))
    assert kept is not None
    del env.engine.fail["apply_templates"]
    second = await env.create()
    request = await env.work_once()

    assert request.id == second.id != first.id
    assert request.status is RequestStatus.DONE
    tenant = await env.tenant()
    assert tenant.status is Status.READY
    assert tenant.request_id == second.id
    assert tenant.attempts == 1
    container = env.runtime.container(container_name("acme"))
    assert container is not None
    assert container.id != kept.id
    assert container.labels[constants.LABEL_REQUEST] == second.id
    assert container.spec.env != kept.spec.env  # bootstrap secret generated afresh
    assert env.runtime.volumes[volume_name("acme")][constants.LABEL_REQUEST] == second.id


async def test_redelivered_request_of_degraded_tenant_keeps_its_data(env: Env) -> None:
    """Crash after READY, health marks it DEGRADED, then redelivery: the data must survive."""
    created = await env.create()
    first = await env.cp.claim("crashed-daemon", 30.0)
    assert first is not None
    await env.app.provisioner.run(first)
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.DEGRADED))
    await env.cp.db.execute(
        "UPDATE requests SET lease_expires_at = 0 WHERE id = ?", (created.id,)
    )
    hooks_before = list(env.engine.calls)
    request = await env.work_once()

    assert request.status is RequestStatus.DONE
    assert env.engine.calls == hooks_before
    assert volume_name("acme") in env.runtime.volumes
    assert container_name("acme") in env.runtime.containers
    tenant = await env.tenant()
    assert tenant.status is Status.DEGRADED
    assert tenant.error is None
