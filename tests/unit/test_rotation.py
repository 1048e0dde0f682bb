"""Unit tests of credential rotation on fakes: the phases, crash-safe re-runs, refusals,
the HTTP route and the CLI's JSON (``cloner tenant rotate``).

The real logins (PostgreSQL roles, MariaDB accounts) are proven in
tests/integration/test_rotation.py; here the engine is ``FakeEngine``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from cloner.app import App
from cloner.cli.main import cli
from cloner.daemon.http import build_http_app
from cloner.domain import Credentials, RequestKind, RequestStatus, RoleCredential, Status
from cloner.errors import InvalidInput, InvalidTransition, TenantExists, TenantNotFound
from cloner.secrets import Vault, own_login_pattern, rotated_login
from cloner.settings import Settings
from cloner.tenants import TenantService
from cloner.testing import FakeEngine, InMemoryRuntime, open_fake_app, use_engine
from tests.unit.conftest import Env, EnvFactory, unit_settings
from tests.unit.test_http_api import assert_problem, schema_validator

ROLES = ("owner", "app", "readonly")


async def ready_env(make_env: EnvFactory) -> Env:
    """An Env (no grace period) with tenant ``acme`` provisioned and ready."""
    env = await make_env(rotation_grace_s=0)
    await env.create()
    assert (await env.work_once()).status is RequestStatus.DONE
    assert (await env.tenant()).status is Status.READY
    return env


async def creds_of(env: Env, tenant_id: str = "acme") -> Credentials:
    found = await env.app.services.credentials(tenant_id)
    assert found is not None
    return found


# ------------------------------------------------------------------ naming


def test_rotated_logins_count_generations_of_their_privilege_role() -> None:
    """`x_app` → `x_app_r1` → `x_app_r2`; every generation matches the tenant's own pattern."""
    assert rotated_login("acme_app", "acme_app") == "acme_app_r1"
    assert rotated_login("acme_app", "acme_app_r1") == "acme_app_r2"
    assert rotated_login("acme_app", "acme_app_r9") == "acme_app_r10"
    pattern = own_login_pattern(["acme_owner", "acme_app"])
    assert all(re.fullmatch(pattern, n) for n in ("acme_app", "acme_app_r3", "acme_owner_r1"))
    assert not any(re.fullmatch(pattern, n) for n in ("acme_readonly", "acme_app_rx", "xacme_app"))


def test_sealed_credentials_keep_rotation_state_and_old_tokens_still_open() -> None:
    """The vault round-trips grantees/pending/retiring; a pre-rotation token opens as before."""
    vault = Vault(Vault.new_key())
    plain = Credentials(RoleCredential("postgres", "su"), "boot",
                        {"app": RoleCredential("acme_app", "pw")})
    rotated = Credentials(
        RoleCredential("postgres", "su"), "boot", {"app": RoleCredential("acme_app_r1", "new")},
        grantees={"app": "acme_app"}, retiring={"app": RoleCredential("acme_app", "pw")},
        pending={}, retire_after=12.5, rotation_request="r1", rotated={"owner": "r0"},
    )
    assert vault.open_credentials(vault.seal_credentials(rotated)) == rotated
    legacy = vault.encrypt(json.dumps({"superuser": {"username": "postgres", "password": "su"},
                                       "bootstrap_password": "boot",
                                       "roles": {"app": {"username": "acme_app",
                                                         "password": "pw"}}}))
    assert vault.open_credentials(legacy) == plain
    assert plain.grantee("app") == "acme_app" and rotated.grantee("app") == "acme_app"
    assert {"new", "pw"} <= set(rotated.all_secrets())


# ------------------------------------------------------------------ pipeline


async def test_rotating_every_role_switches_the_registry_then_retires_the_old_logins(
    make_env: EnvFactory,
) -> None:
    """three create_login calls, then three retire_login; new logins current, old ones gone; the
    event names the actor; the isolation proof is run again with the new credentials."""
    env = await ready_env(make_env)
    before = await creds_of(env)
    request = await TenantService(env.app).rotate("acme", "all", actor="cli:alice")
    assert request.kind is RequestKind.ROTATE
    assert request.payload == {"roles": list(ROLES), "actor": "cli:alice"}
    env.engine.calls.clear()
    assert (await env.work_once()).status is RequestStatus.DONE

    hooks = [h for h, _ in env.engine.calls if h in {"create_login", "retire_login"}]
    assert hooks == ["create_login"] * 3 + ["retire_login"] * 3
    assert ("prove_isolation", "acme") in env.engine.calls
    after = await creds_of(env)
    for role in ROLES:
        assert after.roles[role].username == f"acme_{role}_r1"
        assert after.roles[role].password != before.roles[role].password
        assert after.grantee(role) == before.roles[role].username
        assert after.rotated[role] == request.id
    assert not after.pending and not after.retiring and after.rotation_request is None
    assert env.engine.logins["acme"] == {f"acme_{r}_r1": r for r in ROLES}
    kinds = [e["kind"] for e in await env.cp.events("acme")]
    assert kinds.index("rotate_requested") < kinds.index("rotation_switched") \
        < kinds.index("rotated")
    rotated = [e for e in await env.cp.events("acme") if e["kind"] == "rotated"][-1]
    assert rotated["detail"]["actor"] == "cli:alice"
    assert rotated["detail"]["logins"] == {r: f"acme_{r}_r1" for r in ROLES}
    assert (await env.tenant()).status is Status.READY
    shown = await TenantService(env.app).to_json(await env.tenant(), reveal=False)
    assert shown["roles"]["app"] == {"username": "acme_app_r1", "password": None}


async def test_a_crash_after_the_switch_resumes_without_a_new_generation(
    make_env: EnvFactory,
) -> None:
    """retire_login fails once (transient): the retry retires the same old login and keeps
    the logins the first attempt handed out; a crash before the switch reuses the pending one."""
    env = await ready_env(make_env)
    env.engine.fail_next["retire_login"] = [OSError("server went away")]
    env.engine.fail_next["create_login"] = [OSError("connection reset")]
    request = await TenantService(env.app).rotate("acme", "app", actor="test")

    first = await env.work_once()
    assert first.status is RequestStatus.QUEUED  # create failed: retried with backoff
    pending = (await creds_of(env)).pending["app"]
    assert (await creds_of(env)).roles["app"].username == "acme_app"

    second = await env.work_once()
    assert second.status is RequestStatus.QUEUED  # switched, then retire failed
    midway = await creds_of(env)
    assert midway.roles["app"] == pending
    assert midway.retiring["app"].username == "acme_app"

    third = await env.work_once()
    assert third.status is RequestStatus.DONE
    done = await creds_of(env)
    assert done.roles["app"] == pending and done.rotated["app"] == request.id
    assert not done.retiring and not done.pending
    assert env.engine.logins["acme"] == {"acme_app_r1": "app"}
    assert (await env.tenant()).error is None  # a failed attempt never marks the tenant


async def test_a_second_rotation_goes_to_the_next_generation_and_retires_the_first(
    make_env: EnvFactory,
) -> None:
    """r1 → r2 for the role asked; the other roles keep their logins."""
    env = await ready_env(make_env)
    service = TenantService(env.app)
    await service.rotate("acme", "all")
    await env.work_once()
    await service.rotate("acme", "readonly")
    assert (await env.work_once()).status is RequestStatus.DONE
    creds = await creds_of(env)
    assert creds.roles["readonly"].username == "acme_readonly_r2"
    assert creds.roles["app"].username == "acme_app_r1"
    assert creds.grantee("readonly") == "acme_readonly"
    assert "acme_readonly_r1" not in env.engine.logins["acme"]


async def test_rotation_refusals_are_clear_and_enqueue_nothing(make_env: EnvFactory) -> None:
    """Unknown role → InvalidInput; unknown tenant → TenantNotFound; not ready →
    InvalidTransition; a request in progress → TenantExists (one active request)."""
    env = await make_env(rotation_grace_s=0)
    service = TenantService(env.app)
    await env.create()
    with pytest.raises(InvalidTransition, match="only a ready tenant"):
        await service.rotate("acme")
    await env.work_once()
    with pytest.raises(InvalidInput, match="unknown role 'root'"):
        await service.rotate("acme", "root")
    with pytest.raises(TenantNotFound):
        await service.rotate("nobody")
    await service.backup("acme")
    with pytest.raises(TenantExists, match="in progress"):
        await service.rotate("acme")


# ---------------------------------------------------------------------- HTTP


@pytest.fixture
async def client(make_env: EnvFactory) -> AsyncIterator[tuple[Env, httpx.AsyncClient]]:
    env = await ready_env(make_env)
    transport = httpx.ASGITransport(app=build_http_app(env.app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloner",
                                 headers={"Authorization": f"Bearer {env.app.admin_token}"}) as c:
        yield env, c


async def test_http_rotate_queues_the_roles_from_body_or_query(
    client: tuple[Env, httpx.AsyncClient],
) -> None:
    """202 with the documented shape; `role` from the body, else the query, else `all`."""
    env, http = client
    validator = schema_validator("RotationAccepted")
    response = await http.post("/v1/tenants/acme/rotate", json={"role": "app"})
    assert response.status_code == 202, response.text
    body = response.json()
    validator.validate(body)
    assert body["tenant_id"] == "acme" and body["status"] == "ready" and body["roles"] == ["app"]
    queued = await env.request(body["request_id"])
    assert queued.kind is RequestKind.ROTATE and queued.payload["actor"] == "http"
    await env.work_once()

    response = await http.post("/v1/tenants/acme/rotate?role=readonly")
    assert response.status_code == 202 and response.json()["roles"] == ["readonly"]
    await env.work_once()
    response = await http.post("/v1/tenants/acme/rotate", content=b"")
    assert response.status_code == 202 and response.json()["roles"] == list(ROLES)


@pytest.mark.parametrize(("path", "kwargs", "status", "field"), [
    ("/v1/tenants/acme/rotate", {"json": {"role": "root"}}, 422, "role"),
    ("/v1/tenants/acme/rotate?role=superuser", {}, 422, "role"),
    ("/v1/tenants/acme/rotate", {"content": b"[1]"}, 422, None),
    ("/v1/tenants/nobody/rotate", {}, 404, None),
    ("/v1/tenants/Bad_Id/rotate", {}, 422, "tenant_id"),
])
async def test_http_rotate_refuses_bad_input_with_problems(
    client: tuple[Env, httpx.AsyncClient], path: str, kwargs: dict[str, Any], status: int,
    field: str | None,
) -> None:
    """Unknown role, a body that is not an object, unknown or invalid tenant: problem+json."""
    _env, http = client
    body = assert_problem(await http.post(path, **kwargs), status)
    if field is not None:
        assert body["field"] == field


async def test_http_rotate_of_a_tenant_that_is_not_ready_is_a_409(
    client: tuple[Env, httpx.AsyncClient],
) -> None:
    """A requested tenant (and a tenant with a request in progress) is a 409 problem."""
    env, http = client
    await TenantService(env.app).create("beta", "postgres", "none")
    body = assert_problem(await http.post("/v1/tenants/beta/rotate"), 409)
    assert "only a ready tenant" in body["detail"]
    assert (await http.post("/v1/tenants/acme/rotate")).status_code == 202
    assert_problem(await http.post("/v1/tenants/acme/rotate"), 409)


# ----------------------------------------------------------------------- CLI


def test_cli_rotate_json_names_the_new_logins_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`tenant rotate acme --role app --json` (worked in-process: no daemon) prints
    {tenant_id, request_id, roles, logins, finished_at}; a bad role exits 2."""
    runtime = InMemoryRuntime()
    key = Vault.new_key()

    @asynccontextmanager
    async def fake_open(
        cls: type[App], settings: Settings, control_plane: Any = None,
    ) -> AsyncIterator[App]:
        del cls, control_plane
        async with open_fake_app(settings, runtime=runtime) as app:
            app.vault = Vault(key)  # the same key for every command, as on disk
            yield app

    monkeypatch.setattr(App, "open", classmethod(fake_open))
    settings = unit_settings(tmp_path)
    for name, value in {"DATA_DIR": settings.data_dir, "TEMPLATES_DIR": settings.templates_dir,
                        "INDUSTRY_TEMPLATES_DIR": settings.industry_templates_dir,
                        "ROTATION_GRACE_S": 0, "LOG_FORMAT": "json"}.items():
        monkeypatch.setenv(f"CLONER_{name}", str(value))
    runner = CliRunner()
    with use_engine(FakeEngine()):
        created = runner.invoke(cli, ["tenant", "create", "acme", "--engine", "postgres",
                                      "--industry", "none", "--wait", "--json"])
        assert created.exit_code == 0, created.output
        result = runner.invoke(cli, ["tenant", "rotate", "acme", "--role", "app", "--json"])
        assert result.exit_code == 0, result.output
        bad = runner.invoke(cli, ["tenant", "rotate", "acme", "--role", "root"])
    data = json.loads(result.stdout)
    assert set(data) == {"tenant_id", "request_id", "roles", "logins", "finished_at"}
    assert data["tenant_id"] == "acme" and data["roles"] == ["app"]
    assert data["logins"] == {"app": "acme_app_r1"}
    assert "password" not in result.stdout
    assert bad.exit_code == 2
    assert "unknown role 'root'" in bad.stderr


async def test_a_tenant_that_stopped_being_ready_before_the_worker_ran_is_not_rotated(
    make_env: EnvFactory,
) -> None:
    """Degraded between enqueue and work: the request fails (`rotate_failed`, with the actor),
    no login is created and the tenant gets no error of its own."""
    from cloner.controlplane import TenantUpdate

    env = await ready_env(make_env)
    before = await creds_of(env)
    await TenantService(env.app).rotate("acme", actor="cli:bob")
    await env.cp.update_tenant("acme", TenantUpdate(status=Status.DEGRADED))
    env.engine.calls.clear()
    assert (await env.work_once()).status is RequestStatus.FAILED
    assert not [h for h, _ in env.engine.calls if h in {"create_login", "retire_login"}]
    assert await creds_of(env) == before
    failed = [e for e in await env.cp.events("acme") if e["kind"] == "rotate_failed"]
    assert failed and failed[-1]["detail"]["actor"] == "cli:bob"
    assert failed[-1]["detail"]["step"] == "validate"
    assert (await env.tenant()).error is None
