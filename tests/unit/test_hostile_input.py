"""Hostile input at every edge (Python service, HTTP API, CLI) is refused before anything happens.

The oracle is restated here from DESIGN.md and the template directories, not
imported from the code under test: a tenant id matches the documented regex,
the engine has a driver and templates, the industry is one of the four and
ships an overlay for that engine, and the version is listed in the engine's
``versions.json``. A create either succeeds exactly when all of that holds, or
is refused with ``InvalidInput`` (exit code 2, HTTP 4xx) leaving no tenant row,
no request row and no runtime call behind. Over HTTP an identical repeat of a
create is answered with the original request and enqueues nothing.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from cloner.app import App
from cloner.catalog.catalog import OVERLAY_SUFFIX
from cloner.daemon.http import build_http_app
from cloner.daemon.worker import drain_until_done
from cloner.domain import Request, Status
from cloner.engines import available_engines
from cloner.errors import InvalidInput, TenantExists
from cloner.settings import Settings
from cloner.tenants import TenantService
from cloner.testing import FakeEngine, InMemoryRuntime, open_fake_app, use_engine

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
INDUSTRY_TEMPLATES = REPO / "industry_templates"

# ------------------------------------------------------------------ the oracle

TENANT_ID = re.compile(r"[a-z][a-z0-9-]{1,38}[a-z0-9]")  # DESIGN.md, "Tenant ids and states"
INDUSTRIES = ("technology", "healthcare", "finance", "none")
ALL_ENGINES = ("postgres", "mysql", "mongodb", "sqlite")


def _known_versions() -> dict[str, frozenset[str]]:
    """Engine → released versions, read straight from ``templates/<engine>/versions.json``."""
    found = {}
    for manifest in TEMPLATES.glob("*/versions.json"):
        found[manifest.parent.name] = frozenset(json.loads(manifest.read_text())["versions"])
    return found


def _overlays() -> dict[str, frozenset[str]]:
    """Industry → files it ships, read straight from ``industries.json``."""
    data = json.loads((INDUSTRY_TEMPLATES / "industries.json").read_text())["industries"]
    return {name: frozenset(meta.get("files", {})) for name, meta in data.items()}


KNOWN_VERSIONS = _known_versions()
OVERLAYS = _overlays()
# An engine is usable when it has a driver *and* released templates.
USABLE_ENGINES = frozenset(e.value for e in available_engines()) & frozenset(KNOWN_VERSIONS)


def is_valid_create(tenant_id: object, engine: object, industry: object,
                    version: object) -> bool:
    """True when every field of a create request is acceptable, by DESIGN.md and the catalog.

    ``None`` and ``""`` both mean "the latest version", as the HTTP contract
    documents (``CreateTenantRequest.template_version``) and the service does.
    """
    if not (isinstance(tenant_id, str) and TENANT_ID.fullmatch(tenant_id)):
        return False
    if not (isinstance(engine, str) and engine in USABLE_ENGINES):
        return False
    if not (isinstance(industry, str) and industry in INDUSTRIES):
        return False
    overlay = f"{engine}.{OVERLAY_SUFFIX[engine]}"  # mongodb overlays are .json
    if industry != "none" and overlay not in OVERLAYS.get(industry, frozenset()):
        return False
    if version is None or version == "":
        return True
    return isinstance(version, str) and version in KNOWN_VERSIONS[engine]


# ------------------------------------------------------------------ strategies

SQL_INJECTION = (
    "acme'; DROP TABLE tenants;--", "acme\"; DROP TABLE requests;--", "' OR '1'='1",
    "acme) OR 1=1 --", "acme/*", "acme; SELECT pg_sleep(10)", "$$; DROP DATABASE x; $$",
    "acme\\", "acme%", "acme_", "robert'); DROP TABLE students;--",
)
UNICODE = (
    "ácme", "\u0430cme",  # Cyrillic a
    "acme\u200b", "\uff41\uff43\uff4d\uff45", "acme\u0301", "\ud800acme", "acme\U0001f600",
    "٣acme", "acmeⅷ",
    "ACME", "Acme", "acme\u00a0", "\ufeffacme", "acme\u2028x",
)
CONTROL = ("acme\x00", "\x00", "ac\x00me", "acme\n", "\nacme", "ac\tme", "acme\r\n", " acme",
           "acme ", "ac me", "")
VERSION_HOSTILE = (
    "v1.1; DROP", "../v1.0", "v01.1", "v1.01", "v1.1\n", "V1.1", "1.1", "v1", "v1.1.1",
    "v1.0/../../etc", "v9.9", "v999.999", "v1000.0", "v\u0661.\u0661", "v1.1\x00", " v1.1", "v1.1 ",
    "v-1.1", "v1.-1", "v1,1", "v1.1' OR 1=1", "%76%31%2e%31", "",
)
ENGINE_HOSTILE = ("Postgres", "POSTGRES", "postgres ", " postgres", "postgres\x00", "postgresql",
                  "pg", "postgres;", "sqlite3", "mongo", "mariadb", "", "\x00")
INDUSTRY_HOSTILE = ("None", "NONE", "null", "none ", "tech", "technology\x00", "finance'",
                    "healthcare;--", "", "\x00", "../none")


def _near_valid_ids() -> st.SearchStrategy[str]:
    """Valid ids pushed just over an edge of the pattern."""
    valid = st.from_regex(TENANT_ID, fullmatch=True)
    return st.one_of(
        valid.map(lambda s: s + "-"),                  # trailing hyphen
        valid.map(lambda s: "1" + s),                  # leading digit
        valid.map(lambda s: "-" + s),                  # leading hyphen
        valid.map(lambda s: s.upper()),                # upper case
        valid.map(lambda s: s[:1] + "_" + s[1:]),      # underscore
        valid.map(lambda s: s + "\n"),                 # trailing newline ($ vs fullmatch)
        valid.map(lambda s: (s * 41)[:41]),            # one over the length limit
        st.from_regex(r"[a-z][a-z0-9]", fullmatch=True),  # one under
        st.text(alphabet="abcz019-_.A", min_size=0, max_size=45),
    )


IDS = st.one_of(
    st.from_regex(TENANT_ID, fullmatch=True),
    _near_valid_ids(),
    st.sampled_from(SQL_INJECTION + UNICODE + CONTROL),
    st.text(),
    st.text(min_size=200, max_size=5000),
)
ENGINES = st.one_of(st.sampled_from(ALL_ENGINES), st.sampled_from(ENGINE_HOSTILE), st.text())
INDUSTRY_VALUES = st.one_of(st.sampled_from(INDUSTRIES), st.sampled_from(INDUSTRY_HOSTILE),
                            st.text())
VERSIONS = st.one_of(
    st.none(),
    st.sampled_from(sorted(set().union(*KNOWN_VERSIONS.values()))),
    st.sampled_from(VERSION_HOSTILE),
    st.from_regex(r"v[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
    st.text(),
)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text())
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def _one_field_off(draw: st.DrawFn) -> tuple[str, str, str, str | None]:
    """A valid create request with (usually) one field replaced by a hostile value."""
    fields: list[Any] = [
        draw(st.from_regex(TENANT_ID, fullmatch=True)),
        draw(st.sampled_from(sorted(USABLE_ENGINES))),
        draw(st.sampled_from(INDUSTRIES)),
        draw(st.one_of(st.none(), st.sampled_from(sorted(set().union(*KNOWN_VERSIONS.values()))))),
    ]
    index = draw(st.integers(min_value=0, max_value=4))
    if index < 4:  # 4: leave it valid
        fields[index] = draw((IDS, ENGINES, INDUSTRY_VALUES, VERSIONS)[index])
    return fields[0], fields[1], fields[2], fields[3]


CREATE_ARGS = st.one_of(st.tuples(IDS, ENGINES, INDUSTRY_VALUES, VERSIONS), _one_field_off())
CREATE_BODIES = st.one_of(
    CREATE_ARGS.map(lambda f: {"tenant_id": f[0], "engine": f[1], "industry": f[2],
                               "template_version": f[3]}),
    st.fixed_dictionaries(
        {"tenant_id": st.one_of(IDS, JSON), "engine": st.one_of(ENGINES, JSON),
         "industry": st.one_of(INDUSTRY_VALUES, JSON)},
        optional={"template_version": st.one_of(VERSIONS, JSON), "extra": JSON,
                  "status": st.sampled_from(["ready", "failed"])},
    ),
)


def latest_version(engine: str) -> str:
    """The newest released version of an engine's root template."""
    return max(KNOWN_VERSIONS[engine], key=lambda v: tuple(int(p) for p in v[1:].split(".")))


HYPOTHESIS = settings(
    max_examples=120, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Created:
    """What a tenant this test created asked for, and the request that queued it."""

    engine: str
    industry: str
    version: str
    request_id: str


@dataclass
class Env:
    """A fake app, its runtime, and the tenants this test created so far."""

    app: App
    runtime: InMemoryRuntime
    path: Path
    created: dict[str, Created] = field(default_factory=dict)

    def remember(self, tenant_id: str, args: tuple[str, str, str | None], request_id: str) -> None:
        """Record a tenant this test created (``args``: engine, industry, version or None)."""
        engine, industry, version = args
        self.created[tenant_id] = Created(engine, industry, version or latest_version(engine),
                                          request_id)

    def rows(self, table: str, tenant_id: str | None = None) -> int:
        """Rows in ``tenants`` or ``requests`` (for one tenant id, or all)."""
        assert table in {"tenants", "requests"}
        with sqlite3.connect(self.path) as db:
            if tenant_id is None:
                (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            else:
                (count,) = db.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE tenant_id = ?", (tenant_id,)
                ).fetchone()
        return int(count)

    def counts(self) -> tuple[int, int]:
        """(tenant rows, request rows)."""
        return self.rows("tenants"), self.rows("requests")


def _sqlite_can_bind(text: str) -> bool:
    """SQLite binds UTF-8 only: a lone surrogate cannot even be looked up (counts still can)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir, templates_dir=TEMPLATES, industry_templates_dir=INDUSTRY_TEMPLATES,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    """A server-less PostgreSQL driver for the duration of the test."""
    with use_engine(FakeEngine()) as engine:
        yield engine


@pytest.fixture
async def env(tmp_path: Path, fake_engine: FakeEngine) -> AsyncIterator[Env]:
    """A fake app on a fresh SQLite control plane, with an in-memory runtime."""
    runtime = InMemoryRuntime()
    settings = _settings(tmp_path / "data")
    async with open_fake_app(settings, runtime=runtime) as app:
        yield Env(app, runtime, settings.control_plane_path)


@pytest.fixture
async def http_env(env: Env) -> AsyncIterator[tuple[Env, httpx.AsyncClient]]:
    """``env`` plus an ASGI client; seeded with 'acme' (requested) and 'ready-one' (ready)."""
    service = TenantService(env.app)
    ready = await service.create("ready-one", "postgres", "finance")
    await drain_until_done(env.app, ready.id, timeout_s=10)
    assert (await service.get("ready-one")).status is Status.READY
    # Enqueued after the drain, so it stays requested: nothing works the queue from here on.
    acme = await service.create("acme", "postgres", "none")
    env.remember("ready-one", ("postgres", "finance", None), ready.id)
    env.remember("acme", ("postgres", "none", None), acme.id)
    transport = httpx.ASGITransport(app=build_http_app(env.app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield env, client


def _auth(env: Env) -> dict[str, str]:
    return {"authorization": f"Bearer {env.app.admin_token}"}


def _assert_problem(response: httpx.Response) -> dict[str, Any]:
    """A 4xx ``application/problem+json`` body with ``status`` and ``detail``."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response
    problem = response.json()
    assert problem["status"] == response.status_code
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    return problem


# ------------------------------------------------------------------ service


@HYPOTHESIS
@given(args=CREATE_ARGS)
@example(args=("acme", "postgres", "none", "v1.1; DROP"))
@example(args=("acme", "postgres", "none", "../v1.0"))
@example(args=("acme", "postgres", "none", "v01.1"))
@example(args=("acme\x00", "postgres", "none", None))
@example(args=("acme", "postgres", "healthcare", "v1.0"))
@example(args=("acme", "postgres", "healthcare", "v1.0"))  # the same again: a duplicate
async def test_service_create_succeeds_only_on_valid_input_else_invalid_input(
    env: Env, args: tuple[str, str, str, str | None],
) -> None:
    """TenantService.create queues valid requests only; anything else is InvalidInput, no trace."""
    tenant_id, engine, industry, version = args
    before = env.counts()
    valid = is_valid_create(tenant_id, engine, industry, version)
    outcome: Request | Exception
    try:
        outcome = await TenantService(env.app).create(tenant_id, engine, industry, version)
    except Exception as exc:  # the property: whatever is raised must be InvalidInput
        outcome = exc
    event(f"outcome: {type(outcome).__name__}")
    if isinstance(outcome, Exception):
        assert isinstance(outcome, InvalidInput), f"{type(outcome).__name__}: {outcome}"
        assert outcome.exit_code == 2
        assert outcome.message
        if valid:
            # The only refusal of a valid request is a duplicate id.
            assert isinstance(outcome, TenantExists)
            assert tenant_id in env.created
        elif tenant_id not in env.created and _sqlite_can_bind(tenant_id):
            assert await env.app.control_plane.get_tenant(tenant_id) is None
            assert env.rows("requests", tenant_id) == 0
        assert env.counts() == before
    else:
        assert valid, (tenant_id, engine, industry, version)
        assert tenant_id not in env.created
        env.remember(tenant_id, (engine, industry, version), outcome.id)
        assert outcome.tenant_id == tenant_id
        assert outcome.payload["engine"] == engine
        tenant = await env.app.control_plane.get_tenant(tenant_id)
        assert tenant is not None
        assert tenant.status is Status.REQUESTED
        assert tenant.template_version == (version or latest_version(engine))
        assert env.counts() == (before[0] + 1, before[1] + 1)
    # Only a read: whether the id's volume holds an unknown incarnation (a quarantined orphan).
    assert {method for method, _subject in env.runtime.calls} <= {"volume_info"}


# ------------------------------------------------------------------ HTTP


def _expected_create(body: object, created: dict[str, Created]) -> tuple[int, Created | None]:
    """The documented answer to a create body: status, and the earlier create it repeats.

    202 for a valid new tenant, 202 with the earlier request for an identical
    repeat (idempotent create), 409 for a live tenant with another spec, else 422.
    """
    if not isinstance(body, dict):
        return 422, None
    tenant_id, engine, industry = (body.get(k) for k in ("tenant_id", "engine", "industry"))
    version = body.get("template_version")
    if not is_valid_create(tenant_id, engine, industry, version):
        return 422, None
    assert isinstance(tenant_id, str) and isinstance(engine, str)
    prior = created.get(tenant_id)
    if prior is None:
        return 202, None
    if (prior.engine, prior.industry, prior.version) == (
            engine, industry, version or latest_version(engine)):
        return 202, prior
    return 409, None


@HYPOTHESIS
@given(body=st.one_of(JSON, CREATE_BODIES))
@example(body={"tenant_id": "acme", "engine": "postgres", "industry": "none"})
@example(body={"tenant_id": "acme", "engine": "postgres", "industry": "finance"})
@example(body={"tenant_id": "ready-one", "engine": "postgres", "industry": "finance",
               "template_version": ""})
@example(body={"tenant_id": "new-one", "engine": "postgres", "industry": "none",
               "template_version": ["v1.1"]})
@example(body={"tenant_id": "x'); DROP TABLE tenants;--", "engine": "postgres",
               "industry": "none"})
async def test_http_create_with_arbitrary_json_is_202_or_problem_never_5xx(
    http_env: tuple[Env, httpx.AsyncClient], body: Any,
) -> None:
    """POST /v1/tenants with any JSON: 202 for valid new or identical repeats, else 4xx problem."""
    env, client = http_env
    before = env.counts()
    calls_before = len(env.runtime.calls)
    expected, repeats = _expected_create(body, env.created)
    response = await client.post("/v1/tenants", content=json.dumps(body), headers=_auth(env))
    event(f"status: {response.status_code}{' (repeat)' if repeats else ''}")

    assert response.status_code == expected, (body, response.text)
    if repeats is not None:
        assert response.json()["request_id"] == repeats.request_id
        assert env.counts() == before
    elif expected == 202:
        accepted = response.json()
        assert accepted["tenant_id"] == body["tenant_id"]
        assert accepted["status"] == "requested"
        env.remember(body["tenant_id"], (body["engine"], body["industry"],
                                         body.get("template_version")), accepted["request_id"])
        assert env.counts() == (before[0] + 1, before[1] + 1)
    else:
        _assert_problem(response)
        assert env.counts() == before
    # Only reads: whether the id's volume holds an unknown incarnation (a quarantined orphan).
    assert {m for m, _s in env.runtime.calls[calls_before:]} <= {"volume_info"}


@HYPOTHESIS
@given(body=st.binary(max_size=300))
@example(body=b"\xff\xfe\x00")
@example(body=b"")
@example(body=b'{"tenant_id": "acme"')
@example(body=b"NaN")
async def test_http_create_with_arbitrary_bytes_is_a_problem_never_5xx(
    http_env: tuple[Env, httpx.AsyncClient], body: bytes,
) -> None:
    """POST /v1/tenants with raw bytes (invalid UTF-8, truncated JSON): 4xx problem, no row."""
    env, client = http_env
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    assume(_expected_create(parsed, env.created)[0] != 202)
    before = env.counts()
    response = await client.post("/v1/tenants", content=body, headers=_auth(env))

    _assert_problem(response)
    assert env.counts() == before


async def test_http_create_with_deeply_nested_json_is_a_problem_not_500(
    http_env: tuple[Env, httpx.AsyncClient],
) -> None:
    """A body nested 100 000 levels deep is refused as bad JSON (4xx), not a server error."""
    env, client = http_env
    response = await client.post("/v1/tenants", content=b"[" * 100_000, headers=_auth(env))

    _assert_problem(response)


# st.booleans() first: one_of would flatten IDS and leave the seeded tenants a 1-in-6 branch.
PATH_SEGMENTS = st.booleans().flatmap(
    lambda seeded: st.sampled_from(["acme", "ready-one", "nobody-here"]) if seeded else IDS
).filter(lambda s: s not in {"", ".", ".."})
QUERY = st.fixed_dictionaries({}, optional={
    "status": st.one_of(st.sampled_from([s.value for s in Status]), st.text()),
    "reveal": st.one_of(st.sampled_from(["true", "TRUE", "1", "yes"]), st.text()),
    "purge": st.one_of(st.sampled_from(["true", "false"]), st.text()),
})


@HYPOTHESIS
@given(segment=PATH_SEGMENTS, method=st.sampled_from(["GET", "DELETE"]), params=QUERY)
@example(segment="ready-one", method="DELETE", params={"purge": "true"})
@example(segment="ready-one", method="GET", params={"reveal": "true"})
@example(segment="acme\x00", method="GET", params={})
@example(segment="a" * 5000, method="DELETE", params={})
async def test_http_tenant_path_and_query_never_5xx(
    http_env: tuple[Env, httpx.AsyncClient], segment: str, method: str,
    params: dict[str, str],
) -> None:
    """GET/DELETE /v1/tenants/{any}: 200/202 for real tenants, else a 4xx problem; no stray rows."""
    env, client = http_env
    before = env.counts()
    calls_before = len(env.runtime.calls)
    # Lone surrogates cannot be percent-encoded as UTF-8; send their replacement like a client.
    path = "/v1/tenants/" + quote(segment.encode("utf-8", "replace"), safe="")
    response = await client.request(method, path, params=params, headers=_auth(env))
    event(f"{method} {response.status_code}")

    assert response.status_code < 500, (segment, response.text)
    if "/" in segment:
        # A decoded slash leaves the route: the router's 404, still a problem document.
        assert _assert_problem(response)["status"] == 404
    elif segment not in env.created:
        problem = _assert_problem(response)
        assert problem["status"] in {404, 422}
    elif method == "GET":
        assert response.status_code == 200
        shown = response.json()
        assert shown["tenant_id"] == segment
        revealed = params.get("reveal", "").lower() == "true"
        passwords = [role["password"] for role in shown["roles"].values()]
        if segment == "ready-one":
            assert len(passwords) == 3
            assert all((p is not None) == revealed for p in passwords)
        else:
            assert passwords == []
    elif response.status_code == 202:
        assert segment == "ready-one"
        assert env.counts() == (before[0], before[1] + 1)
    else:
        problem = _assert_problem(response)
        assert problem["status"] == 409
    if response.status_code != 202:
        assert env.counts() == before
    assert len(env.runtime.calls) == calls_before


@HYPOTHESIS
@given(status=st.one_of(st.sampled_from([s.value for s in Status]), st.text()))
async def test_http_list_status_filter_is_200_or_422(
    http_env: tuple[Env, httpx.AsyncClient], status: str,
) -> None:
    """GET /v1/tenants?status=… lists for a known state and is a 422 problem for anything else."""
    env, client = http_env
    response = await client.get("/v1/tenants", params={"status": status}, headers=_auth(env))

    if status in {s.value for s in Status}:
        assert response.status_code == 200
        assert all(t["status"] == status for t in response.json()["tenants"])
    else:
        assert _assert_problem(response)["status"] == 422


AUTH_HEADERS = st.one_of(
    st.none(),
    st.sampled_from(["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "bearer",
                     "Bearer null", "Bearer undefined", "Bearer ' OR '1'='1"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
    .map(lambda t: "Bearer " + t),
)


@settings(HYPOTHESIS, max_examples=80)
@given(header=AUTH_HEADERS, body=st.one_of(JSON, CREATE_BODIES),
       route=st.sampled_from([("POST", "/v1/tenants"), ("GET", "/v1/tenants"),
                              ("GET", "/v1/tenants/acme"), ("DELETE", "/v1/tenants/ready-one"),
                              ("GET", "/v1/tenants/nobody-here")]),
       mangle=st.sampled_from(["none", "suffix", "prefix", "space", "case"]))
async def test_http_without_the_right_token_is_401_whatever_the_body(
    http_env: tuple[Env, httpx.AsyncClient], header: str | None, body: Any,
    route: tuple[str, str], mangle: str,
) -> None:
    """Every /v1 route answers 401 problem+json to a missing, malformed or wrong token."""
    env, client = http_env
    token = env.app.admin_token
    # Near misses of the real token, or whatever the strategy drew.
    near = {"suffix": f"Bearer {token}x", "prefix": f"Bearer x{token}",
            "space": f"Bearer  {token}", "case": f"Bearer {token.swapcase()}"}
    value = near.get(mangle, header)
    assume(value is None or value.partition(" ")[2] != token)
    headers = {} if value is None else {"authorization": value.encode("latin-1")}
    before = env.counts()
    method, path = route
    response = await client.request(method, path, content=json.dumps(body), headers=headers)

    problem = _assert_problem(response)
    assert problem["status"] == 401
    assert token not in response.text
    assert env.counts() == before


# ------------------------------------------------------------------ CLI

CLONER_SCRIPT = Path(sys.executable).with_name("cloner")
COMMAND = [str(CLONER_SCRIPT)] if CLONER_SCRIPT.exists() else [sys.executable, "-m", "cloner"]
CREATE = ("tenant", "create")
OK = ("--engine", "postgres", "--industry", "none")
HOSTILE_ARGV: tuple[tuple[str, ...], ...] = (
    (*CREATE, "acme'", *OK),
    (*CREATE, 'ac"me', *OK),
    (*CREATE, "acme'; DROP TABLE tenants;--", *OK),
    (*CREATE, "acme", *OK, "--template-version", "v1.0' OR 1=1"),
    (*CREATE, "acme", *OK, "--template-version", "../v1.0"),
    (*CREATE, "acme", *OK, "--template-version", "v1.1; DROP"),
    (*CREATE, "a" * 10_000, *OK),
    (*CREATE, "ünïcödé-tenant", *OK),
    (*CREATE, "acme\u200b", *OK),
    (*CREATE, "acme\nsecond-line", *OK),
    (*CREATE, "acme", "--engine", "postgres'--", "--industry", "none"),
    (*CREATE, "acme", "--engine", "postgres", "--industry", "none\" OR \"1\"=\"1"),
    (*CREATE, "-acme", *OK),
    ("tenant", "show", "x'); DROP TABLE requests;--"),
    ("tenant", "show", "acme", "--reveal", "--json", "--bogus"),
    ("tenant", "delete", "../../etc/passwd"),
    ("tenant", "list", "--status", "ready' OR '1'='1"),
)


def _cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env["CLONER_DATA_DIR"] = str(data_dir)
    return env


def _cli(
    work_dir: Path, env: dict[str, str], argv: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    # cwd=work_dir: no stray .env file is picked up by the settings.
    return subprocess.run([*COMMAND, *argv], cwd=work_dir, env=env, capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.slow  # 18 CLI processes: 4 s on an idle machine, 8-10 s under load
def test_cli_hostile_arguments_exit_2_with_one_line_and_leave_nothing(tmp_path: Path) -> None:
    """Quotes, SQL, huge and unicode ids or versions: exit 2, one stderr line, no tenant row."""
    env = _cli_env(tmp_path / "data")
    # Initialise the control plane once so the parallel runs below do not race to migrate it.
    assert _cli(tmp_path, env, ("tenant", "list", "--json")).returncode == 0

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda argv: (argv, _cli(tmp_path, env, argv)), HOSTILE_ARGV))

    problems = []
    for argv, proc in results:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        shown = tuple(a[:40] for a in argv)
        if proc.returncode != 2:
            problems.append(f"{shown}: exit {proc.returncode}")
        if len(lines) != 1 or not lines[0].startswith("cloner: error: "):
            problems.append(f"{shown}: stderr {proc.stderr[:300]!r}")
        if "Traceback" in proc.stderr:
            problems.append(f"{shown}: traceback")
        if proc.stdout:
            problems.append(f"{shown}: stdout {proc.stdout[:100]!r}")
    assert problems == []
    listed = _cli(tmp_path, env, ("tenant", "list", "--json"))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
