"""Unit tests of application users: control-plane methods, migration 0003, CLI and HTTP routes.

The control plane is the real SQLite one on a temporary file; the CLI runs as
a subprocess against a private data dir; HTTP goes through
``httpx.ASGITransport`` to an app on the fakes of ``cloner.testing``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloner.app import App
from cloner.controlplane import SQLiteControlPlane
from cloner.controlplane import sqlite as sqlite_module
from cloner.daemon.http import build_http_app, openapi_document
from cloner.domain import Engine, Industry, RequestKind, TenantSpec
from cloner.errors import InvalidInput, TenantNotFound, UserConflict, UserNotFound
from cloner.settings import Settings
from cloner.testing import FakeEngine, open_fake_app, use_engine
from cloner.users import UserRole, normalize_email
from tests.unit.test_cli import COMMAND, Result

REPO = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"


async def add_tenant(control_plane: SQLiteControlPlane, tenant_id: str) -> None:
    """Create a registry row for ``tenant_id`` (a queued provisioning request)."""
    spec = TenantSpec(tenant_id, Engine.POSTGRES, Industry.FINANCE, "v1.0")
    await control_plane.enqueue(spec, RequestKind.PROVISION, tenant_id, {})


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[SQLiteControlPlane]:
    """An open control plane with tenants ``acme`` and ``globex``."""
    control_plane = SQLiteControlPlane(tmp_path / "cp.sqlite")
    await control_plane.open()
    await add_tenant(control_plane, "acme")
    await add_tenant(control_plane, "globex")
    try:
        yield control_plane
    finally:
        await control_plane.close()


# ------------------------------------------------------------------ control plane


async def test_add_get_list_remove_round_trip(cp: SQLiteControlPlane) -> None:
    """A user is stored lowercased, found case-insensitively, listed per tenant and removed."""
    added = await cp.add_user("Ada.Lovelace@Example.COM", "acme", "admin")
    await cp.add_user("bob@example.com", "acme", UserRole.ANALYST)
    await cp.add_user("carol@example.com", "globex", "member")

    assert (added.email, added.tenant_id, added.role) == ("ada.lovelace@example.com", "acme",
                                                          UserRole.ADMIN)
    found = await cp.get_user("ADA.LOVELACE@example.com")
    assert found is not None and found.email == "ada.lovelace@example.com"
    assert [u.email for u in await cp.list_users("acme")] == ["ada.lovelace@example.com",
                                                              "bob@example.com"]
    assert [u.tenant_id for u in await cp.list_users()] == ["acme", "acme", "globex"]

    removed = await cp.remove_user("bob@example.com")
    assert removed.role is UserRole.ANALYST
    assert await cp.get_user("bob@example.com") is None
    kinds = [e["kind"] for e in await cp.events("acme")]
    assert kinds.count("user_added") == 2 and kinds.count("user_removed") == 1


async def test_unknown_tenant_is_tenant_not_found(cp: SQLiteControlPlane) -> None:
    """Adding a user to a tenant that does not exist fails and stores nothing."""
    with pytest.raises(TenantNotFound, match="nope"):
        await cp.add_user("ada@example.com", "nope", "member")
    assert await cp.list_users() == []


async def test_email_of_another_tenant_is_a_conflict(cp: SQLiteControlPlane) -> None:
    """An email of one tenant cannot join another (409, exit 2); the same tenant updates it."""
    await cp.add_user("ada@example.com", "acme", "member")

    with pytest.raises(UserConflict, match="already belongs to tenant 'acme'") as caught:
        await cp.add_user("ADA@example.com", "globex", "admin")
    assert (caught.value.http_status, caught.value.exit_code) == (409, 2)

    updated = await cp.add_user("ada@example.com", "acme", "analyst")
    assert (updated.tenant_id, updated.role) == ("acme", UserRole.ANALYST)
    assert len(await cp.list_users()) == 1


@pytest.mark.parametrize("email", [
    "", "ada", "ada@", "@example.com", "ada@example", "ada@@example.com", "ada @example.com",
    ".ada@example.com", "ada@-example.com", "ada@example.c0m", "\u00e5da@example.com",
    "\u0430da@example.com",
    "\u212aate@example.com", "a" * 250 + "@example.com", "ada@example.com\n",
])
async def test_invalid_emails_are_refused(cp: SQLiteControlPlane, email: str) -> None:
    """Malformed, non-ASCII or overlong addresses are refused as invalid input."""
    with pytest.raises(InvalidInput, match="invalid email"):
        await cp.add_user(email, "acme", "member")
    assert await cp.list_users() == []


async def test_unknown_role_is_refused(cp: SQLiteControlPlane) -> None:
    """A role outside admin/member/analyst is refused naming the choices."""
    with pytest.raises(InvalidInput, match="admin, member, analyst"):
        await cp.add_user("ada@example.com", "acme", "owner")


async def test_remove_unknown_or_other_tenants_user(cp: SQLiteControlPlane) -> None:
    """Removing an unknown user, or one of another tenant, is UserNotFound and keeps the row."""
    await cp.add_user("ada@example.com", "acme", "member")
    with pytest.raises(UserNotFound):
        await cp.remove_user("nobody@example.com")
    with pytest.raises(UserNotFound, match="globex"):
        await cp.remove_user("ada@example.com", tenant_id="globex")
    assert await cp.get_user("ada@example.com") is not None


def test_normalize_email_lowercases_valid_addresses() -> None:
    """Valid addresses come back lowercased and otherwise unchanged."""
    assert normalize_email("First.Last+tag@Sub.Example.ORG") == "first.last+tag@sub.example.org"


# --------------------------------------------------------------------- migration


def _schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
    return [(str(name), str(sql)) for name, sql in rows]


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [int(v) for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]


async def test_fresh_file_gets_every_migration(tmp_path: Path) -> None:
    """A new control-plane file records all migrations (0001-0003) and has the users table."""
    path = tmp_path / "fresh.sqlite"
    control_plane = SQLiteControlPlane(path)
    await control_plane.open()
    await control_plane.close()

    available = [version for version, _ in sqlite_module._migrations()]
    assert _versions(path) == available
    assert available[:3] == [1, 2, 3]
    assert any(name == "users" for name, _ in _schema(path))


async def test_file_from_before_0003_migrates_to_the_fresh_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file created before 0003 existed gains version 3 and ends with the fresh schema."""
    old = tmp_path / "old.sqlite"
    real = sqlite_module._migrations
    monkeypatch.setattr(sqlite_module, "_migrations",
                        lambda: [(v, sql) for v, sql in real() if v < 3])
    control_plane = SQLiteControlPlane(old)
    await control_plane.open()
    await add_tenant(control_plane, "acme")
    await control_plane.close()
    assert 3 not in _versions(old)
    assert not any(name == "users" for name, _ in _schema(old))

    monkeypatch.setattr(sqlite_module, "_migrations", real)
    control_plane = SQLiteControlPlane(old)
    await control_plane.open()
    try:
        user = await control_plane.add_user("ada@example.com", "acme", "member")
    finally:
        await control_plane.close()
    fresh = tmp_path / "fresh.sqlite"
    reference = SQLiteControlPlane(fresh)
    await reference.open()
    await reference.close()

    assert user.tenant_id == "acme"
    assert _versions(old)[:3] == [1, 2, 3]
    assert _versions(old) == _versions(fresh)
    assert _schema(old) == _schema(fresh)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """Run `cloner ARGS…` against a private data dir, without inherited CLONER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env["CLONER_DATA_DIR"] = str(tmp_path / "data")
    env["CLONER_LOG_FORMAT"] = "json"

    def run(*args: str) -> Result:
        proc = subprocess.run([*COMMAND, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=30, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    created = run("tenant", "create", "acme", "--engine", "postgres", "--industry", "finance")
    assert created.code == 0, created
    assert run("tenant", "create", "globex", "--engine", "postgres",
               "--industry", "none").code == 0
    return run


def _one_line_error(result: Result, code: int, fragment: str) -> None:
    assert result.code == code, result
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("cloner: error: ")
    assert fragment in result.error_lines[0]


def test_cli_user_add_list_remove(cli: Any) -> None:
    """`user add/list/remove` work end to end, with --json and the human table."""
    added = cli("user", "add", "Ada@Example.com", "--tenant", "acme", "--role", "analyst",
                "--json")
    assert added.code == 0, added
    assert added.json()["email"] == "ada@example.com"
    assert added.json()["role"] == "analyst"
    assert cli("user", "add", "bob@example.com", "--tenant", "globex", "--role",
               "member").code == 0

    listed = cli("user", "list", "--tenant", "acme", "--json")
    assert [u["email"] for u in listed.json()] == ["ada@example.com"]
    table = cli("user", "list")
    assert table.code == 0
    assert table.stdout.splitlines()[0].split() == ["EMAIL", "TENANT", "ROLE", "CREATED_AT"]
    assert len(table.stdout.splitlines()) == 3

    removed = cli("user", "remove", "ADA@example.com", "--json")
    assert removed.code == 0, removed
    assert removed.json()["tenant_id"] == "acme"
    assert cli("user", "list", "--json").json()[0]["email"] == "bob@example.com"


@pytest.mark.parametrize(("args", "fragment"), [
    (("user", "add", "not-an-email", "--tenant", "acme", "--role", "member"), "invalid email"),
    (("user", "add", "ada@example.com", "--tenant", "Bad_Id", "--role", "member"),
     "invalid tenant id"),
    (("user", "add", "ada@example.com", "--tenant", "acme", "--role", "owner"), "owner"),
    (("user", "add", "ada@example.com", "--tenant", "nope", "--role", "member"), "nope"),
    (("user", "remove", "ghost@example.com"), "no user ghost@example.com"),
    (("user", "list", "--tenant", "nope"), "no tenant 'nope'"),
])
def test_cli_user_bad_input_is_exit_2(cli: Any, args: tuple[str, ...], fragment: str) -> None:
    """Bad emails, ids, roles and unknown tenants/users are one-line errors with exit 2."""
    _one_line_error(cli(*args), 2, fragment)


def test_cli_user_of_another_tenant_is_exit_2(cli: Any) -> None:
    """Adding an email already mapped to another tenant is a one-line conflict, exit 2."""
    assert cli("user", "add", "ada@example.com", "--tenant", "acme", "--role",
               "member").code == 0
    result = cli("user", "add", "ada@example.com", "--tenant", "globex", "--role", "admin")
    _one_line_error(result, 2, "already belongs to tenant 'acme'")


# -------------------------------------------------------------------------- HTTP


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    """A server-less PostgreSQL driver for the duration of the test."""
    with use_engine(FakeEngine()) as fake:
        yield fake


@pytest.fixture
async def api(tmp_path: Path, fake_engine: FakeEngine) -> AsyncIterator[tuple[App, Any]]:
    """A fake app with tenants acme and globex, and an authenticated ASGI client."""
    settings = Settings(
        data_dir=tmp_path / "data", templates_dir=REPO / "templates",
        industry_templates_dir=REPO / "industry_templates",
        _env_file=None,  # type: ignore[call-arg]
    )
    async with open_fake_app(settings) as app:
        await add_tenant(app.control_plane, "acme")
        await add_tenant(app.control_plane, "globex")
        transport = httpx.ASGITransport(app=build_http_app(app), raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://cloner",
            headers={"Authorization": f"Bearer {app.admin_token}"},
        ) as client:
            yield app, client


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_http_add_and_list_users(api: tuple[App, Any]) -> None:
    """POST answers 201 with the stored user; GET lists only that tenant's users."""
    app, client = api
    created = await client.post("/v1/tenants/acme/users",
                                json={"email": "Ada@Example.com", "role": "member"})
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "ada@example.com"
    await app.control_plane.add_user("carol@example.com", "globex", "admin")

    listed = await client.get("/v1/tenants/acme/users")
    assert listed.status_code == 200
    assert [(u["email"], u["role"]) for u in listed.json()["users"]] == [
        ("ada@example.com", "member")]


async def test_http_user_errors_are_problems(api: tuple[App, Any]) -> None:
    """Unknown tenant 404, other tenant's email 409, bad email/role 422, each with a field."""
    app, client = api
    await app.control_plane.add_user("ada@example.com", "acme", "member")

    assert _problem(await client.get("/v1/tenants/nope/users"), 404)["field"] == "tenant_id"
    assert _problem(await client.post("/v1/tenants/nope/users",
                                      json={"email": "x@example.com", "role": "member"}),
                    404)["field"] == "tenant_id"
    conflict = _problem(await client.post("/v1/tenants/globex/users",
                                          json={"email": "ada@example.com", "role": "admin"}),
                        409)
    assert conflict["field"] == "email"
    bad_email = _problem(await client.post("/v1/tenants/acme/users",
                                           json={"email": "nope", "role": "admin"}), 422)
    assert bad_email["field"] == "email"
    bad_role = _problem(await client.post("/v1/tenants/acme/users",
                                          json={"email": "z@example.com", "role": "root"}),
                        422)
    assert bad_role["field"] == "role"
    assert _problem(await client.post("/v1/tenants/acme/users", content=b"{"),
                    422)["title"] == "InvalidInput"
    assert [u.email for u in await app.control_plane.list_users()] == ["ada@example.com"]


async def test_http_delete_user(api: tuple[App, Any]) -> None:
    """DELETE is 204 for the tenant's user, 404 for another tenant's (which stays) or none."""
    app, client = api
    await app.control_plane.add_user("ada@example.com", "acme", "member")
    await app.control_plane.add_user("carol@example.com", "globex", "admin")

    gone = await client.delete("/v1/tenants/acme/users/ADA%40example.com")
    assert gone.status_code == 204
    assert gone.content == b""
    assert await app.control_plane.get_user("ada@example.com") is None
    _problem(await client.delete("/v1/tenants/acme/users/ada@example.com"), 404)
    _problem(await client.delete("/v1/tenants/acme/users/carol@example.com"), 404)
    assert await app.control_plane.get_user("carol@example.com") is not None
    assert _problem(await client.delete("/v1/tenants/acme/users/not-an-email"),
                    422)["field"] == "email"


async def test_http_user_routes_need_the_token(api: tuple[App, Any]) -> None:
    """Without the bearer token every users route is a 401 and nothing changes."""
    app, client = api
    for method, path in [("GET", "/v1/tenants/acme/users"),
                         ("POST", "/v1/tenants/acme/users"),
                         ("DELETE", "/v1/tenants/acme/users/ada@example.com")]:
        response = await client.request(method, path, headers={"Authorization": "Bearer no"},
                                        json={"email": "ada@example.com", "role": "admin"})
        _problem(response, 401)
    assert await app.control_plane.list_users() == []


def test_openapi_documents_the_user_routes() -> None:
    """/openapi.json lists the three users operations with their statuses and schemas."""
    paths = openapi_document()["paths"]
    users = paths["/v1/tenants/{tenant_id}/users"]
    assert set(users["get"]["responses"]) >= {"200", "401", "404", "422"}
    assert set(users["post"]["responses"]) >= {"201", "401", "404", "409", "422"}
    assert users["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AddUserRequest"}
    delete = paths["/v1/tenants/{tenant_id}/users/{email}"]["delete"]
    assert set(delete["responses"]) >= {"204", "401", "404", "422"}
    assert "content" not in delete["responses"]["204"]
    assert delete["security"] == [{"bearer": []}]
