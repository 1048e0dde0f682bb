"""Unit tests of the HTTP API on fakes: problems, idempotent create, request metrics, OpenAPI.

The ASGI app is driven in-process through ``httpx.ASGITransport``; the control
plane is the real SQLite one on a temporary file, the runtime and engine are
the in-memory fakes of ``cloner.testing``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from starlette.routing import Route

from cloner.api_models import MAX_BODY_BYTES, TenantDocument
from cloner.app import App
from cloner.daemon.http import UNMATCHED_ROUTE, build_http_app, openapi_document
from cloner.daemon.worker import drain_until_done
from cloner.domain import container_name
from cloner.errors import TemplateError
from cloner.settings import Settings
from cloner.tenants import TenantService
from cloner.testing import FakeEngine, InMemoryRuntime, open_fake_app, use_engine

REPO = Path(__file__).resolve().parents[2]
ACME = {"tenant_id": "acme", "engine": "postgres", "industry": "finance"}
PROBLEM = "application/problem+json"


@dataclass
class Api:
    """The ASGI app of a fake ``App``, an authenticated client and shortcuts."""

    app: App
    runtime: InMemoryRuntime
    engine: FakeEngine
    client: httpx.AsyncClient

    @property
    def auth(self) -> dict[str, str]:
        """The admin bearer header."""
        return {"Authorization": f"Bearer {self.app.admin_token}"}

    async def post(self, body: Any) -> httpx.Response:
        """POST /v1/tenants with ``body`` as JSON."""
        return await self.client.post("/v1/tenants", json=body, headers=self.auth)

    def rows(self, table: str) -> int:
        """Rows of ``tenants`` or ``requests`` in the control plane."""
        assert table in {"tenants", "requests"}
        with sqlite3.connect(self.app.settings.control_plane_path) as db:
            (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(count)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the app's registry (0 when absent)."""
        return self.app.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    """A server-less PostgreSQL driver for the duration of the test."""
    with use_engine(FakeEngine()) as fake:
        yield fake


@pytest.fixture
async def api(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Api]:
    """A fake app behind its ASGI app; app exceptions surface as 500s, not test errors."""
    settings = Settings(
        data_dir=tmp_path / "data", templates_dir=REPO / "templates",
        industry_templates_dir=REPO / "industry_templates",
        _env_file=None,  # type: ignore[call-arg]
    )
    runtime = InMemoryRuntime()
    async with open_fake_app(settings, runtime=runtime) as app:
        transport = httpx.ASGITransport(app=build_http_app(app), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloner") as client:
            yield Api(app, runtime, engine, client)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return dict(body)


def schema_validator(component: str) -> Any:
    """A JSON Schema validator for one component of ``/openapi.json`` (refs resolved)."""
    document = openapi_document()
    return jsonschema_rs.validator_for({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{component}",
        "components": document["components"],
    })


# ------------------------------------------------------------------------------- 401


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/tenants"), ("GET", "/v1/tenants"), ("GET", "/v1/tenants/acme"),
    ("DELETE", "/v1/tenants/acme"), ("POST", "/v1/tenants/acme/restore"),
])
@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic dXNlcjpwYXNz", "Bearer"])
async def test_v1_routes_without_the_token_are_401_problems(
    api: Api, method: str, path: str, header: str | None,
) -> None:
    """Every /v1 route answers a 401 problem with WWW-Authenticate and touches nothing."""
    headers = {} if header is None else {"Authorization": header}
    response = await api.client.request(method, path, json=ACME, headers=headers)

    body = assert_problem(response, 401)
    assert body["title"] == "Unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert api.app.admin_token not in response.text
    assert api.rows("tenants") == 0


async def test_open_routes_need_no_token(api: Api) -> None:
    """/healthz, /readyz, /metrics and /openapi.json answer without a token."""
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200
    assert "cloner_build_info" in metrics.text
    assert (await api.client.get("/openapi.json")).json()["openapi"] == "3.1.0"


async def test_readyz_is_503_with_the_reason_when_the_runtime_is_down(api: Api) -> None:
    """/readyz says which dependency is down, with 503."""
    api.runtime.available = False
    response = await api.client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert any(p.startswith("runtime:") for p in response.json()["problems"])


async def test_control_plane_down_is_a_503_problem(api: Api) -> None:
    """A dependency failure is 503 (retry later), still a problem document."""
    await api.app.control_plane.close()
    response = await api.client.get("/v1/tenants", headers=api.auth)

    body = assert_problem(response, 503)
    assert body["title"] == "ControlPlaneError"


async def test_unexpected_exception_is_a_500_problem_and_counted(
    api: Api, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in a handler answers a 500 problem (no traceback) and is counted as 500."""
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(TenantService, "list", broken)
    transport = httpx.ASGITransport(app=build_http_app(api.app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloner") as client:
        response = await client.get("/v1/tenants", headers=api.auth)

    body = assert_problem(response, 500)
    assert "secret internals" not in response.text
    assert body["title"] == "InternalError"
    assert api.metric("cloner_http_requests_total", route="/v1/tenants", method="GET",
                      status="500") == 1


# ------------------------------------------------------------------------- 404 / 405


async def test_unknown_tenant_is_a_404_problem_naming_the_field(api: Api) -> None:
    """GET and DELETE of an unknown tenant: 404 problem with field=tenant_id."""
    for method in ("GET", "DELETE"):
        response = await api.client.request(method, "/v1/tenants/nobody", headers=api.auth)
        body = assert_problem(response, 404)
        assert body["title"] == "TenantNotFound"
        assert body["field"] == "tenant_id"
        assert "nobody" in body["detail"]


async def test_invalid_tenant_id_in_the_path_is_a_422_problem(api: Api) -> None:
    """A path id that cannot be a tenant id is refused before any lookup."""
    response = await api.client.get("/v1/tenants/Not_An_Id", headers=api.auth)

    body = assert_problem(response, 422)
    assert body["field"] == "tenant_id"
    assert "Not_An_Id" in body["detail"]


async def test_unknown_path_and_method_are_problems_too(api: Api) -> None:
    """Router 404 and 405 are problem documents; 405 lists the allowed methods."""
    missing = await api.client.get("/v2/nothing", headers=api.auth)
    assert_problem(missing, 404)

    wrong = await api.client.put("/v1/tenants", headers=api.auth)
    assert_problem(wrong, 405)
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


# ------------------------------------------------------------------------------- 422


@pytest.mark.parametrize(("body", "field", "needle"), [
    ({**ACME, "tenant_id": "Bad_Id!"}, "tenant_id", "Bad_Id!"),
    ({**ACME, "tenant_id": 42}, "tenant_id", "string"),
    ({**ACME, "engine": "oracle"}, "engine", "oracle"),
    ({**ACME, "industry": "retail"}, "industry", "retail"),
    ({"tenant_id": "acme", "engine": "postgres"}, "industry", "required"),
    ({**ACME, "template_version": "1.1"}, "template_version", "vX.Y"),
    ({**ACME, "template_version": "v9.9"}, "template_version", "v9.9"),
    ({**ACME, "template_version": ["v1.1"]}, "template_version", "string"),
])
async def test_invalid_create_bodies_are_422_problems_naming_the_field(
    api: Api, body: dict[str, Any], field: str, needle: str,
) -> None:
    """Each bad field is refused with a 422 problem whose `field` names it; nothing queued."""
    response = await api.post(body)

    problem = assert_problem(response, 422)
    assert problem["field"] == field
    assert needle in problem["detail"]
    assert api.rows("tenants") == 0
    assert api.rows("requests") == 0


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 50_000])
async def test_create_bodies_that_are_not_json_objects_are_422_problems(
    api: Api, raw: bytes,
) -> None:
    """Empty, non-JSON, non-object and absurdly nested bodies: 422 problem, never a 500."""
    response = await api.client.post("/v1/tenants", content=raw, headers=api.auth)

    problem = assert_problem(response, 422)
    assert "JSON object" in problem["detail"]
    assert api.rows("requests") == 0


async def test_oversized_create_body_is_a_413_problem(api: Api) -> None:
    """A body over MAX_BODY_BYTES is refused before it is parsed."""
    raw = json.dumps({**ACME, "padding": "x" * MAX_BODY_BYTES}).encode()
    response = await api.client.post("/v1/tenants", content=raw, headers=api.auth)

    assert_problem(response, 413)
    assert api.rows("requests") == 0


async def test_unknown_state_filter_is_a_422_problem(api: Api) -> None:
    """GET /v1/tenants?status=bogus names the parameter and the allowed states."""
    response = await api.client.get("/v1/tenants", params={"status": "bogus"},
                                    headers=api.auth)

    problem = assert_problem(response, 422)
    assert problem["field"] == "status"
    assert "ready" in problem["detail"]


# ---------------------------------------------------------------- idempotent create


async def test_repeated_identical_create_returns_the_same_request_and_queues_once(
    api: Api,
) -> None:
    """The same body twice (version implicit, then explicit latest): one request, same id."""
    first = await api.post(ACME)
    assert first.status_code == 202, first.text
    latest = api.app.catalog.latest_version("postgres")
    second = await api.post({**ACME, "template_version": latest})
    third = await api.post(ACME)

    assert second.status_code == third.status_code == 202
    assert first.json()["request_id"] == second.json()["request_id"] == third.json()[
        "request_id"]
    assert third.json() == {"request_id": first.json()["request_id"], "tenant_id": "acme",
                            "status": "requested"}
    assert api.rows("tenants") == 1
    assert api.rows("requests") == 1


async def test_repeated_create_of_a_ready_tenant_starts_no_second_container(api: Api) -> None:
    """Once ready, the same body again is 202 with the original id and status ready."""
    first = await api.post(ACME)
    request_id = first.json()["request_id"]
    await drain_until_done(api.app, request_id, timeout_s=10)
    again = await api.post(ACME)

    assert again.status_code == 202
    assert again.json() == {"request_id": request_id, "tenant_id": "acme", "status": "ready"}
    assert api.runtime.called("ensure_container") == [container_name("acme")]
    assert list(api.runtime.containers) == [container_name("acme")]
    assert api.rows("requests") == 1


async def test_concurrent_identical_creates_queue_one_request(api: Api) -> None:
    """Five identical creates at once: all 202 with one request id, one request row."""
    responses = await asyncio.gather(*(api.post(ACME) for _ in range(5)))

    assert [r.status_code for r in responses] == [202] * 5
    assert len({r.json()["request_id"] for r in responses}) == 1
    assert api.rows("requests") == 1


@pytest.mark.parametrize("change", [
    {"industry": "healthcare"}, {"engine": "postgres", "template_version": "v1.0"},
])
async def test_create_with_a_different_body_for_a_live_tenant_is_a_409_problem(
    api: Api, change: dict[str, str],
) -> None:
    """Same id, different industry or version: 409 saying what exists; nothing changes."""
    first = await api.post(ACME)
    response = await api.post({**ACME, **change})

    problem = assert_problem(response, 409)
    assert problem["title"] == "TenantExists"
    assert problem["field"] == "tenant_id"
    assert "industry=finance" in problem["detail"]
    assert api.rows("requests") == 1
    shown = await api.client.get("/v1/tenants/acme", headers=api.auth)
    assert shown.json()["industry"] == "finance"
    assert first.json()["request_id"]


async def test_create_after_a_failure_queues_a_new_request(api: Api) -> None:
    """A failed tenant is not 'live': the same body again retries with a new request id."""
    api.engine.fail["apply_templates"] = TemplateError("syntax error at line 1")
    first = await api.post(ACME)
    await drain_until_done(api.app, first.json()["request_id"], timeout_s=10)
    failed = await api.client.get("/v1/tenants/acme", headers=api.auth)
    assert failed.json()["status"] == "failed"

    retry = await api.post(ACME)

    assert retry.status_code == 202
    assert retry.json()["request_id"] != first.json()["request_id"]
    assert api.rows("requests") == 2


async def test_create_while_deprovisioning_is_a_409_problem(api: Api) -> None:
    """A tenant being deleted is not recreated by a create with its old body."""
    first = await api.post(ACME)
    await drain_until_done(api.app, first.json()["request_id"], timeout_s=10)
    deleted = await api.client.delete("/v1/tenants/acme", headers=api.auth)
    assert deleted.status_code == 202
    assert deleted.json()["status"] == "deprovisioning"

    response = await api.post(ACME)

    assert "being deleted" in assert_problem(response, 409)["detail"]
    assert api.rows("requests") == 2


async def test_purge_with_a_corrupted_final_backup_is_a_409_problem(api: Api) -> None:
    """DELETE ?purge=true of a deprovisioned tenant whose final backup no longer verifies:
    409 problem, one line, nothing queued, the volume kept."""
    created = await api.post(ACME)
    await drain_until_done(api.app, created.json()["request_id"], timeout_s=10)
    deleted = await api.client.delete("/v1/tenants/acme", headers=api.auth)
    await drain_until_done(api.app, deleted.json()["request_id"], timeout_s=10)
    (dump,) = (api.app.settings.backups_dir / "acme").glob("*.dump")
    dump.write_bytes(bytes([dump.read_bytes()[0] ^ 0xFF]) + dump.read_bytes()[1:])

    response = await api.client.delete("/v1/tenants/acme", params={"purge": "true"},
                                       headers=api.auth)

    detail = assert_problem(response, 409)["detail"]
    assert "refusing to purge 'acme'" in detail and "\n" not in detail
    assert api.rows("requests") == 2
    assert "cloner-acme-data" in api.runtime.volumes


# ------------------------------------------------------------------------ restore


async def _purged(api: Api) -> None:
    """Create and purge `acme` over HTTP, with a worker in between."""
    created = await api.post(ACME)
    await drain_until_done(api.app, created.json()["request_id"], timeout_s=10)
    deleted = await api.client.delete("/v1/tenants/acme", params={"purge": "true"},
                                      headers=api.auth)
    await drain_until_done(api.app, deleted.json()["request_id"], timeout_s=10)


async def test_restore_of_a_purged_tenant_is_accepted_and_brings_it_back(api: Api) -> None:
    """POST …/restore (no body) → 202 with a request id; the worker makes the tenant ready."""
    await _purged(api)

    response = await api.client.post("/v1/tenants/acme/restore", headers=api.auth)

    assert response.status_code == 202, response.text
    body = response.json()
    schema_validator("TenantAccepted").validate(body)
    assert (body["tenant_id"], body["status"]) == ("acme", "requested")
    await drain_until_done(api.app, body["request_id"], timeout_s=10)
    shown = (await api.client.get("/v1/tenants/acme", headers=api.auth)).json()
    schema_validator("TenantDocument").validate(shown)
    assert shown["status"] == "ready"
    restore_events = [e for e in shown["events"] if e["kind"] == "restore_requested"]
    assert [e["detail"]["actor"] for e in restore_events] == ["http"]
    assert shown["events"][-1]["kind"] == "restored"


async def test_restore_with_an_explicit_backup_body_is_accepted(api: Api) -> None:
    """`{"backup": "<name>"}` relative to the tenant's folder selects that backup."""
    await _purged(api)
    (dump,) = (api.app.settings.backups_dir / "acme").glob("*.dump")

    response = await api.client.post("/v1/tenants/acme/restore", json={"backup": dump.name},
                                     headers=api.auth)

    assert response.status_code == 202, response.text


async def test_restore_of_an_unknown_tenant_is_a_404_problem(api: Api) -> None:
    """An unknown tenant is 404 with field tenant_id."""
    body = assert_problem(
        await api.client.post("/v1/tenants/ghost/restore", headers=api.auth), 404)
    assert body["field"] == "tenant_id"


async def test_restore_of_a_ready_tenant_is_a_409_problem(api: Api) -> None:
    """A ready tenant is not restorable: 409, nothing queued."""
    created = await api.post(ACME)
    await drain_until_done(api.app, created.json()["request_id"], timeout_s=10)

    response = await api.client.post("/v1/tenants/acme/restore", headers=api.auth)

    assert "is ready" in assert_problem(response, 409)["detail"]
    assert api.rows("requests") == 1


@pytest.mark.parametrize("backup", ["../../control-plane.sqlite3", "/etc/passwd",
                                    "../other/x.dump", "nul\x00byte.dump"])
async def test_restore_from_outside_the_tenant_folder_is_a_422_on_backup(
    api: Api, backup: str,
) -> None:
    """Path traversal (and unusable names) are 422 problems naming the `backup` field."""
    await _purged(api)

    response = await api.client.post("/v1/tenants/acme/restore", json={"backup": backup},
                                     headers=api.auth)

    body = assert_problem(response, 422)
    assert body["field"] == "backup"
    assert api.rows("requests") == 2


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'{"backup": 5}', b'{"backup": ""}'])
async def test_restore_with_a_malformed_body_is_a_422_problem(api: Api, raw: bytes) -> None:
    """A body that is not an object with an optional string `backup` is refused with 422."""
    await _purged(api)

    response = await api.client.post(
        "/v1/tenants/acme/restore", content=raw,
        headers={**api.auth, "content-type": "application/json"},
    )

    assert_problem(response, 422)
    assert api.rows("requests") == 2


# ---------------------------------------------------------------------- documents


async def test_tenant_documents_conform_to_the_published_schemas(api: Api) -> None:
    """Real create/show/list/delete answers validate against /openapi.json's components."""
    accepted = await api.post(ACME)
    schema_validator("TenantAccepted").validate(accepted.json())
    await drain_until_done(api.app, accepted.json()["request_id"], timeout_s=10)

    shown = await api.client.get("/v1/tenants/acme", headers=api.auth)
    revealed = await api.client.get("/v1/tenants/acme", params={"reveal": "true"},
                                    headers=api.auth)
    listed = await api.client.get("/v1/tenants", headers=api.auth)

    document = schema_validator("TenantDocument")
    document.validate(shown.json())
    document.validate(revealed.json())
    schema_validator("TenantList").validate(listed.json())
    assert TenantDocument.model_validate(revealed.json()).roles["app"].password
    assert shown.json()["roles"]["app"]["password"] is None
    problem = await api.client.get("/v1/tenants/nobody", headers=api.auth)
    schema_validator("Problem").validate(problem.json())


# ------------------------------------------------------------------------- metrics


async def test_request_metrics_use_route_templates_not_raw_paths(api: Api) -> None:
    """Counters and latency are labelled by route template; odd paths/methods share one label."""
    await api.post(ACME)
    await api.client.get("/v1/tenants/acme", headers=api.auth)
    await api.client.get("/v1/tenants/nobody", headers=api.auth)
    await api.client.get("/v1/tenants/acme")
    await api.client.get("/no/such/path/12345")
    await api.client.request("BREW", "/v1/tenants", headers=api.auth)
    await api.client.get("/healthz")

    template = "/v1/tenants/{tenant_id}"
    assert api.metric("cloner_http_requests_total", route="/v1/tenants", method="POST",
                      status="202") == 1
    assert api.metric("cloner_http_requests_total", route=template, method="GET",
                      status="200") == 1
    assert api.metric("cloner_http_requests_total", route=template, method="GET",
                      status="404") == 1
    assert api.metric("cloner_http_requests_total", route=template, method="GET",
                      status="401") == 1
    assert api.metric("cloner_http_requests_total", route=UNMATCHED_ROUTE, method="GET",
                      status="404") == 1
    assert api.metric("cloner_http_requests_total", route="/v1/tenants", method="OTHER",
                      status="405") == 1
    assert api.metric("cloner_http_request_duration_seconds_count", route=template) == 3
    assert api.metric("cloner_http_request_duration_seconds_count", route="/healthz") == 1

    routes = {s.labels["route"] for family in api.app.metrics.registry.collect()
              if family.name == "cloner_http_requests" for s in family.samples}
    assert routes == {"/v1/tenants", template, UNMATCHED_ROUTE, "/healthz"}


# ------------------------------------------------------------------------- OpenAPI


async def test_openapi_documents_every_served_route_and_method(api: Api) -> None:
    """Each route/method the app serves is in /openapi.json, with its statuses and schemas."""
    document = (await api.client.get("/openapi.json")).json()
    served = build_http_app(api.app).routes

    assert document["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, ops in document["paths"].items()
                  for method in ops}
    expected = {(route.path, method) for route in served if isinstance(route, Route)
                for method in route.methods or () if method != "HEAD"}
    assert documented == expected
    assert {path for path, _ in documented} == {
        "/v1/tenants", "/v1/tenants/{tenant_id}", "/v1/tenants/{tenant_id}/restore",
        "/v1/tenants/{tenant_id}/rotate", "/v1/tenants/{tenant_id}/users",
        "/v1/tenants/{tenant_id}/users/{email}",
        "/metrics", "/healthz", "/readyz", "/openapi.json",
    }
    paths = document["paths"]
    assert set(paths["/v1/tenants"]["post"]["responses"]) >= {"202", "401", "409", "413",
                                                              "422", "default"}
    assert set(paths["/v1/tenants/{tenant_id}"]["get"]["responses"]) >= {"200", "401", "404",
                                                                        "422"}
    assert set(paths["/v1/tenants/{tenant_id}"]["delete"]["responses"]) >= {"202", "404",
                                                                           "409"}
    assert set(paths["/v1/tenants/{tenant_id}/restore"]["post"]["responses"]) >= {
        "202", "404", "409", "422"}
    assert paths["/v1/tenants/{tenant_id}/restore"]["post"]["requestBody"]["required"] is False
    assert set(paths["/readyz"]["get"]["responses"]) >= {"200", "503"}
    body = paths["/v1/tenants"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/CreateTenantRequest"}
    unauthorized = paths["/v1/tenants"]["get"]["responses"]["401"]["content"]
    assert unauthorized[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for path, ops in paths.items():
        for method, op in ops.items():
            secured = op["security"] == [{"bearer": []}]
            assert secured == path.startswith("/v1/"), (method, path)


def test_openapi_schemas_are_valid_json_schema_and_every_ref_resolves() -> None:
    """Every component compiles as JSON Schema 2020-12 and every $ref points at a component."""
    document = openapi_document()
    components = document["components"]["schemas"]
    for name in components:
        schema_validator(name)  # raises on a bad schema or an unresolvable reference
    text = json.dumps(document)
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs and refs <= set(components)
    create = components["CreateTenantRequest"]
    assert create["required"] == ["tenant_id", "engine", "industry"]
    assert components["Engine"]["enum"] == ["postgres", "mysql", "mongodb", "sqlite"]
    assert set(components["Problem"]["required"]) == {"title", "status", "detail"}
