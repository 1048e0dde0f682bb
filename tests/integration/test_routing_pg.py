"""Real Docker, real PostgreSQL: token routing hands out connections with the user's real role."""

from __future__ import annotations

import time

import asyncpg
import jwt
import pytest
from pydantic import SecretStr

from cloner.app import App
from cloner.domain import Status
from cloner.pools import TenantPools
from cloner.pools.routing import TokenRouter, TokenVerifier
from cloner.tenants import TenantService
from tests.integration.helpers import run_workers

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SECRET = "integration-secret-" + "x" * 32


def token(email: str, tenant_id: str) -> str:
    """A valid HS256 token for ``email`` claiming ``tenant_id``."""
    return jwt.encode({"email": email, "tenant_id": tenant_id, "aud": "cloner",
                       "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")


async def test_analyst_reads_only_and_member_writes(docker_app: App) -> None:
    """An analyst token can SELECT but not INSERT on a real tenant; a member token can INSERT."""
    app = docker_app
    service = TenantService(app)
    request = await service.create("route-a", "postgres", "none", None)
    await run_workers(app, [request.id], workers=1)
    assert (await service.get("route-a")).status is Status.READY
    await app.control_plane.add_user("ana@route.example", "route-a", "analyst")
    await app.control_plane.add_user("mem@route.example", "route-a", "member")

    verifier = TokenVerifier.from_settings(
        app.settings.model_copy(update={"jwt_secret": SecretStr(SECRET)}))
    pools = TenantPools(app.settings, app.control_plane, app.vault, app.metrics)
    router = TokenRouter(pools, app.control_plane, verifier)
    try:
        async with router.acquire(token("ana@route.example", "route-a")) as conn:
            assert await conn.fetchval("SELECT count(*) FROM organizations") == 0
            analyst_login = await conn.fetchval("SELECT current_user")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO organizations (slug, name) VALUES ('ana', 'Ana')")

        async with router.acquire(token("mem@route.example", "route-a")) as conn:
            await conn.execute("INSERT INTO organizations (slug, name) VALUES ('mem', 'Mem')")
            assert await conn.fetchval("SELECT count(*) FROM organizations") == 1
            member_login = await conn.fetchval("SELECT current_user")
        assert analyst_login != member_login
    finally:
        await pools.close()
