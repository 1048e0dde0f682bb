"""Unit tests of authentication failing closed (issue 12: M4, M6, L1, L3, L16) and key rotation.

Real pieces throughout: the SQLite control plane on a temporary file, the
Starlette app over httpx's ASGI transport, the pipeline on the fake engine for
purge, and the CLI as a subprocess where the exit code and message matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from cloner import constants
from cloner.app import App
from cloner.controlplane import SQLiteControlPlane
from cloner.controlplane.base import TenantUpdate
from cloner.daemon.http import build_http_app
from cloner.domain import Engine, Industry, RequestKind, RequestStatus, Status, TenantSpec
from cloner.keys import rotate_keys
from cloner.secrets import SecretsError, Vault, generate_credentials, key_id
from cloner.settings import Settings, load_settings
from cloner.tenants import TenantService
from cloner.testing import open_fake_app
from tests.unit.conftest import Env, unit_settings

GOOD_TOKEN = "t" * 32
CLONER_SCRIPT = Path(sys.executable).with_name("cloner")
COMMAND = [str(CLONER_SCRIPT)] if CLONER_SCRIPT.exists() else [sys.executable, "-m", "cloner"]


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    base |= {"CLONER_DATA_DIR": str(tmp_path / "data"), "CLONER_LOG_FORMAT": "json"}
    return subprocess.run([*COMMAND, *args], cwd=tmp_path, env=base | env,
                          capture_output=True, text=True, timeout=60, check=False)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cloner: error: ")
    return lines[0]


# ------------------------------------------------------------------ M4: tokens fail closed


@pytest.mark.parametrize("value", ["", "   ", "admin", "x" * 31, " " + "y" * 20 + " "])
@pytest.mark.parametrize("field", ["admin_token", "metrics_token"])
def test_settings_refuse_empty_and_short_tokens(tmp_path: Path, field: str, value: str) -> None:
    """CLONER_ADMIN_TOKEN / CLONER_METRICS_TOKEN under 32 characters never build Settings."""
    with pytest.raises(ValidationError, match="the token is"):
        Settings(data_dir=tmp_path, _env_file=None, **{field: SecretStr(value)})  # type: ignore[call-arg]


def test_settings_strip_a_long_enough_token(tmp_path: Path) -> None:
    """A trailing newline (from `echo > file` style secrets) is not part of the token."""
    settings = Settings(data_dir=tmp_path, _env_file=None,  # type: ignore[call-arg]
                        admin_token=SecretStr(GOOD_TOKEN + "\n"))
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == GOOD_TOKEN


@pytest.mark.parametrize("value", ["", " ", "admin"])
def test_serve_refuses_a_short_admin_token_with_one_line(tmp_path: Path, value: str) -> None:
    """`cloner serve` with a bad CLONER_ADMIN_TOKEN exits 2 at once, naming the setting."""
    proc = _cli(tmp_path, "serve", CLONER_ADMIN_TOKEN=value)
    assert proc.returncode == 2
    assert "CLONER_ADMIN_TOKEN" in _one_error_line(proc)
    assert not (tmp_path / "data").exists()  # refused before anything was created


@pytest.mark.parametrize("content", ["", "\n", "   \n", "short-token\n"])
def test_serve_refuses_an_empty_or_short_admin_token_file(tmp_path: Path, content: str) -> None:
    """A truncated admin.token is corrupt: the daemon stops and says how to fix it."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    token_file = data / constants.ADMIN_TOKEN_FILE
    token_file.write_text(content)
    token_file.chmod(0o600)
    proc = _cli(tmp_path, "serve", CLONER_HTTP_LISTEN="127.0.0.1:1")
    assert proc.returncode == 1
    line = _one_error_line(proc)
    assert str(token_file) in line
    assert "delete the file to have a new one generated" in line or "delete it" in line


@pytest.mark.parametrize("name", [constants.ADMIN_TOKEN_FILE, constants.SECRET_KEY_FILE])
async def test_group_or_other_readable_secret_files_are_refused(tmp_path: Path,
                                                                name: str) -> None:
    """L16: a key or token file others can read stops App.open; the mode is not fixed silently."""
    settings = unit_settings(tmp_path)
    async with App.open(settings) as app:
        token = app.admin_token
    # Generated: 32 random bytes (43 URL-safe characters), private from the start.
    assert len(token) == 43
    assert (settings.data_dir / constants.ADMIN_TOKEN_FILE).read_text().strip() == token
    path = settings.data_dir / name
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    with pytest.raises(SecretsError, match=r"chmod 600") as caught:
        async with App.open(settings):
            pass
    assert str(path) in caught.value.message
    assert path.stat().st_mode & 0o777 == 0o640


async def test_empty_secret_key_file_is_corrupt_not_a_new_key(tmp_path: Path) -> None:
    """An emptied secret.key is refused (a new key could not decrypt the registry)."""
    settings = unit_settings(tmp_path)
    async with App.open(settings):
        pass
    path = settings.data_dir / constants.SECRET_KEY_FILE
    path.write_text("\n")
    with pytest.raises(SecretsError, match="empty") as caught:
        async with App.open(settings):
            pass
    assert "restore it from a backup" in caught.value.message
    assert path.read_text() == "\n"


async def test_http_app_refuses_an_empty_admin_token(tmp_path: Path) -> None:
    """An App built with an empty token (not via App.open) still cannot serve /v1 open."""
    async with open_fake_app(unit_settings(tmp_path)) as app:
        app.admin_token = ""
        with pytest.raises(SecretsError, match="admin token is empty"):
            build_http_app(app)


# ------------------------------------------------------------------ L1: /metrics token


@pytest.fixture
async def metrics_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The real HTTP app with CLONER_METRICS_TOKEN set."""
    settings = unit_settings(tmp_path, metrics_token=SecretStr("m" * 40))
    async with open_fake_app(settings) as app:
        transport = httpx.ASGITransport(app=build_http_app(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://cloner") as client:
            client.headers["x-admin"] = app.admin_token
            yield client


@pytest.mark.parametrize("authorization", [
    None, "Bearer", "Bearer ", "Bearer " + "m" * 39, "Basic " + "m" * 40, "bearer " + "x" * 40,
])
async def test_metrics_needs_the_metrics_token_when_set(
    metrics_client: httpx.AsyncClient, authorization: str | None,
) -> None:
    """With CLONER_METRICS_TOKEN, /metrics without it (or with anything else) is a 401."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await metrics_client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "cloner_" not in response.text


async def test_metrics_with_the_token_and_other_open_routes(
    metrics_client: httpx.AsyncClient,
) -> None:
    """The right token gets metrics; the admin token does not; /healthz stays open."""
    ok = await metrics_client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
    assert ok.status_code == 200
    assert "cloner_" in ok.text
    admin = await metrics_client.get(
        "/metrics", headers={"Authorization": "Bearer " + metrics_client.headers["x-admin"]})
    assert admin.status_code == 401
    assert (await metrics_client.get("/healthz")).status_code == 200
    # The metrics token opens nothing under /v1.
    v1 = await metrics_client.get("/v1/tenants", headers={"Authorization": "Bearer " + "m" * 40})
    assert v1.status_code == 401


async def test_metrics_token_is_optional_and_documented(tmp_path: Path) -> None:
    """Unset CLONER_METRICS_TOKEN keeps /metrics open; OpenAPI documents the optional token."""
    async with open_fake_app(unit_settings(tmp_path)) as app:
        transport = httpx.ASGITransport(app=build_http_app(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://cloner") as client:
            assert (await client.get("/metrics")).status_code == 200
            document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/metrics"]["get"]
    assert operation["security"] == [{"metricsBearer": []}, {}]
    assert "401" in operation["responses"]
    assert document["components"]["securitySchemes"]["metricsBearer"]["scheme"] == "bearer"


# ------------------------------------------------------------------ L3: CLONER_ENV_FILE


def test_dotenv_in_the_working_directory_is_ignored(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A .env where the CLI happens to run sets nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLONER_ENV_FILE", raising=False)
    monkeypatch.delenv("CLONER_DOCKER_URL", raising=False)
    (tmp_path / ".env").write_text("CLONER_DOCKER_URL=tcp://attacker.example:2375\n")
    assert load_settings(data_dir=tmp_path).docker_url is None
    assert Settings(data_dir=tmp_path).docker_url is None


def test_explicit_env_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CLONER_ENV_FILE names the file; real environment variables override it."""
    env_file = tmp_path / "cloner.env"
    env_file.write_text("CLONER_DOCKER_URL=unix:///from/file.sock\nCLONER_WORKERS=7\n")
    monkeypatch.setenv("CLONER_ENV_FILE", str(env_file))
    monkeypatch.setenv("CLONER_WORKERS", "3")
    settings = load_settings(data_dir=tmp_path)
    assert settings.docker_url == "unix:///from/file.sock"
    assert settings.workers == 3


def test_cli_refuses_a_missing_env_file_and_ignores_a_cwd_dotenv(tmp_path: Path) -> None:
    """A named file that is missing is exit 2; a stray .env does not change the data dir."""
    missing = _cli(tmp_path, "tenant", "list", "--json",
                   CLONER_ENV_FILE=str(tmp_path / "nope.env"))
    assert missing.returncode == 2
    assert "CLONER_ENV_FILE" in _one_error_line(missing)

    (tmp_path / ".env").write_text(f"CLONER_DATA_DIR={tmp_path / 'attacker'}\n")
    listed = _cli(tmp_path, "tenant", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert not (tmp_path / "attacker").exists()
    assert (tmp_path / "data").is_dir()


# ------------------------------------------------------------------ M6: users and purge


async def _ready(env: Env, tenant_id: str) -> None:
    await env.create(tenant_id)
    assert (await env.work_once()).status is RequestStatus.DONE


async def test_purge_removes_the_tenant_users_and_records_them(env: Env) -> None:
    """Purging a tenant removes its users in the purge transaction; the event lists them."""
    await _ready(env, "m6-acme")
    await _ready(env, "m6-other")
    await env.cp.add_user("old-admin@acme-one.com", "m6-acme", "admin")
    await env.cp.add_user("keep@other.com", "m6-other", "member")
    service = TenantService(env.app)
    await service.delete("m6-acme", purge=False)
    assert (await env.work_once()).status is RequestStatus.DONE
    assert [u.email for u in await env.cp.list_users("m6-acme")] == ["old-admin@acme-one.com"]

    await service.delete("m6-acme", purge=True)
    assert (await env.work_once()).status is RequestStatus.DONE
    assert (await env.tenant("m6-acme")).status is Status.PURGED
    assert await env.cp.list_users("m6-acme") == []
    assert await env.cp.get_user("old-admin@acme-one.com") is None
    assert [u.email for u in await env.cp.list_users("m6-other")] == ["keep@other.com"]
    removed = [e for e in await env.cp.events("m6-acme") if e["kind"] == "users_removed"]
    assert removed == [{"at": removed[0]["at"], "kind": "users_removed",
                        "detail": {"emails": ["old-admin@acme-one.com"], "reason": "purged"}}]


async def test_recreated_tenant_id_starts_without_the_old_users(tmp_path: Path) -> None:
    """A failed (re-creatable) tenant's users are removed when its id is created again."""
    cp = SQLiteControlPlane(tmp_path / "cp.sqlite")
    await cp.open()
    try:
        spec = TenantSpec("m6-reuse", Engine.POSTGRES, Industry.NONE, "v1.0")
        await cp.enqueue(spec, RequestKind.PROVISION, "m6-reuse", {})
        await cp.add_user("stale@old-customer.com", "m6-reuse", "admin")
        await cp.update_tenant("m6-reuse", TenantUpdate(status=Status.PROVISIONING))
        await cp.update_tenant("m6-reuse", TenantUpdate(status=Status.FAILED))
        claimed = await cp.claim("owner", 30.0)
        assert claimed is not None and claimed.lease is not None
        await cp.fail(claimed.lease, "provisioning failed")
        assert await cp.get_user("stale@old-customer.com") is not None

        await cp.enqueue(spec, RequestKind.PROVISION, "m6-reuse", {})
        assert await cp.list_users("m6-reuse") == []
        assert await cp.get_user("stale@old-customer.com") is None
        kinds = [e["kind"] for e in await cp.events("m6-reuse")]
        assert kinds.count("users_removed") == 1
        assert kinds.index("users_removed") > kinds.index("status_failed")
    finally:
        await cp.close()


# ------------------------------------------------------------------ keys rotate


async def _tenants_with_credentials(cp: SQLiteControlPlane, vault: Vault,
                                    ids: list[str]) -> dict[str, Any]:
    creds = {}
    for tenant_id in ids:
        spec = TenantSpec(tenant_id, Engine.POSTGRES, Industry.NONE, "v1.0")
        await cp.enqueue(spec, RequestKind.PROVISION, tenant_id, {})
        creds[tenant_id] = generate_credentials(tenant_id.replace("-", "_"))
        await cp.update_tenant(tenant_id, TenantUpdate(
            credentials_token=vault.seal_credentials(creds[tenant_id])))
    return creds


class _Interrupted(Exception):
    pass


async def test_keys_rotate_reencrypts_and_retires_the_old_key(tmp_path: Path) -> None:
    """Every token moves to a new key; the file ends with that key alone; content unchanged."""
    settings = unit_settings(tmp_path)
    async with App.open(settings) as app:
        old_key = app.vault.keys[0]
        cp = app.control_plane
        assert isinstance(cp, SQLiteControlPlane)
        creds = await _tenants_with_credentials(cp, app.vault, ["kr-a", "kr-b", "kr-c"])
        report = await rotate_keys(settings, cp)

        key_file = settings.data_dir / constants.SECRET_KEY_FILE
        (new_key,) = key_file.read_text().split()
        assert new_key != old_key
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert report.as_dict() == {
            "source": "file", "key_file": str(key_file), "key_id": key_id(new_key),
            "resumed": False, "tenants": 3, "reencrypted": 3, "already_current": 0,
            "keys_before": 1, "keys_after": 1, "old_keys_removable": True,
        }
        only_new = Vault(new_key)
        for tenant_id, token in await cp.credentials_tokens():
            assert only_new.open_credentials(token) == creds[tenant_id]
            with pytest.raises(SecretsError):
                Vault(old_key).decrypt(token)
            events = [e for e in await cp.events(tenant_id)
                      if e["kind"] == "credentials_reencrypted"]
            assert [e["detail"] for e in events] == [{"key_id": key_id(new_key)}]
        # The running app's vault follows the file: no restart needed.
        assert app.vault.open_credentials(
            await cp.credentials_token("kr-a") or "") == creds["kr-a"]
        assert app.vault.keys == [new_key]


async def test_keys_rotate_resumes_after_an_interruption(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation killed halfway is finished by the next run, with the same new key."""
    settings = unit_settings(tmp_path)
    async with App.open(settings) as app:
        old_key = app.vault.keys[0]
        cp = app.control_plane
        assert isinstance(cp, SQLiteControlPlane)
        creds = await _tenants_with_credentials(cp, app.vault, ["kr-1", "kr-2", "kr-3", "kr-4"])
        real_replace = SQLiteControlPlane.replace_credentials_token
        done: list[str] = []

        async def dies_after_two(self: SQLiteControlPlane, tenant_id: str, old: str, new: str,
                                 detail: dict[str, Any]) -> bool:
            if len(done) == 2:
                raise _Interrupted
            done.append(tenant_id)
            return await real_replace(self, tenant_id, old, new, detail)

        monkeypatch.setattr(SQLiteControlPlane, "replace_credentials_token", dies_after_two)
        with pytest.raises(_Interrupted):
            await rotate_keys(settings, cp)
        key_file = settings.data_dir / constants.SECRET_KEY_FILE
        new_key, kept_old = key_file.read_text().split()
        assert kept_old == old_key  # both keys kept while tokens are mixed

        monkeypatch.setattr(SQLiteControlPlane, "replace_credentials_token", real_replace)
        report = await rotate_keys(settings, cp)
        assert report.resumed is True
        assert (report.reencrypted, report.already_current, report.keys_before) == (2, 2, 2)
        assert key_file.read_text().split() == [new_key]
        for tenant_id, token in await cp.credentials_tokens():
            assert Vault(new_key).open_credentials(token) == creds[tenant_id]


async def test_keys_rotate_with_env_keys_needs_a_new_key_first(tmp_path: Path) -> None:
    """CLONER_SECRET_KEY=NEW,OLD re-encrypts under NEW; a single env key is bad input."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = unit_settings(tmp_path, secret_key=SecretStr(old))
    async with App.open(settings) as app:
        cp = app.control_plane
        assert isinstance(cp, SQLiteControlPlane)
        creds = await _tenants_with_credentials(cp, app.vault, ["kr-env"])
        with pytest.raises(Exception, match="NEW,OLD") as caught:
            await rotate_keys(settings, cp)
        assert getattr(caught.value, "exit_code", None) == 2
        both = unit_settings(tmp_path, secret_key=SecretStr(f"{new},{old}"))
        report = await rotate_keys(both, cp)
        assert (report.source, report.reencrypted, report.key_id) == ("env", 1, key_id(new))
        token = await cp.credentials_token("kr-env")
        assert Vault(new).open_credentials(token or "") == creds["kr-env"]
        assert not (settings.data_dir / constants.SECRET_KEY_FILE).exists()


def test_keys_rotate_cli_json_and_text(tmp_path: Path) -> None:
    """`cloner keys rotate --json` prints the report; the key file then holds one new key."""
    first = _cli(tmp_path, "keys", "rotate", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    key_file = tmp_path / "data" / constants.SECRET_KEY_FILE
    (key,) = key_file.read_text().split()
    assert report["key_id"] == key_id(key)
    assert report["source"] == "file" and report["keys_after"] == 1
    assert key not in first.stdout + first.stderr
    again = _cli(tmp_path, "keys", "rotate")
    assert again.returncode == 0, again.stderr
    assert "re-encrypted 0 of 0" in again.stdout
    assert key_file.read_text().split() != [key]
    single = _cli(tmp_path, "keys", "rotate", CLONER_SECRET_KEY=key)
    assert single.returncode == 2
    assert "NEW,OLD" in _one_error_line(single)
    assert key not in single.stderr


def test_old_single_key_files_and_multi_key_files_read(tmp_path: Path) -> None:
    """secret.key written by older versions (one key, no newline) still opens; lines add keys."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    path = tmp_path / "secret.key"
    path.write_text(old)
    path.chmod(0o600)
    token = Vault.from_key_file(path, create=False).encrypt("x")
    path.write_text(f"{new}\n{old}\n")
    vault = Vault.from_key_file(path, create=False)
    assert vault.keys == [new, old]
    assert vault.decrypt(token) == "x"
    assert Vault(new).decrypt(vault.encrypt("y")) == "y"


async def test_embedded_pools_follow_the_key_file_rules(tmp_path: Path) -> None:
    """TenantPools.open reads secret.key like the daemon: empty or loose files are refused."""
    from cloner.errors import ClonerError
    from cloner.pools import TenantPools

    settings = unit_settings(tmp_path)
    async with App.open(settings):
        pass
    path = settings.data_dir / constants.SECRET_KEY_FILE
    path.write_text("")
    with pytest.raises(ClonerError, match="restore it from a backup") as caught:
        async with TenantPools.open(settings):
            pass
    assert str(path) in caught.value.message
    path.write_text(Fernet.generate_key().decode() + "\n")
    path.chmod(0o644)
    with pytest.raises(ClonerError, match="chmod 600"):
        async with TenantPools.open(settings):
            pass
