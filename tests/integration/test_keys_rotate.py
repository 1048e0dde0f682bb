"""Real Docker, real PostgreSQL: `cloner keys rotate` re-encrypts a live tenant's credentials.

After the rotation the old key is gone from the key file and opens none of the
stored tokens, while the tenant stays fully usable: `tenant show --reveal`
prints the same passwords, pools opened before and after the rotation connect,
and the revealed password logs in to the tenant's database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cloner import constants
from cloner.app import App
from cloner.secrets import SecretsError, Vault
from tests.integration.helpers import pools_of, provision_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TENANT = "kr-rotate-pg"
AFTER = "kr-rotate-after"
CLONER_SCRIPT = Path(sys.executable).with_name("cloner")
COMMAND = [str(CLONER_SCRIPT)] if CLONER_SCRIPT.exists() else [sys.executable, "-m", "cloner"]


def cli(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    """`cloner ARGS…` on the app's data dir, as another process (like an operator would)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLONER_")}
    env |= {"CLONER_DATA_DIR": str(app.settings.data_dir), "CLONER_LOG_FORMAT": "json"}
    return subprocess.run([*COMMAND, *args], cwd=app.settings.data_dir, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


async def test_keys_rotate_keeps_a_real_tenant_usable(docker_app: App) -> None:
    """Re-encrypted under a new key, old key removed; reveal, pools and logins still work."""
    await provision_ready(docker_app, "postgres", TENANT)
    key_file = docker_app.settings.data_dir / constants.SECRET_KEY_FILE
    (old_key,) = key_file.read_text().split()
    token_before = await docker_app.control_plane.credentials_token(TENANT)
    assert token_before is not None
    creds = docker_app.vault.open_credentials(token_before)

    # Pools share the app's control-plane connection: a second in-process SQLite open of
    # the same file is avoided on purpose (see _unusable_reason: closing a file descriptor
    # drops the process's POSIX locks, which lets another process delete the WAL).
    async with pools_of(docker_app, 1.0) as pools_before:
        async with pools_before.acquire(TENANT, role="app") as conn:
            assert await conn.fetchval("SELECT 1") == 1

        rotated = cli(docker_app, "keys", "rotate", "--json")
        assert rotated.returncode == 0, rotated.stderr
        report: dict[str, Any] = json.loads(rotated.stdout)
        assert (report["reencrypted"], report["keys_after"]) == (1, 1)
        assert old_key not in rotated.stdout + rotated.stderr

        (new_key,) = key_file.read_text().split()
        assert new_key != old_key
        token_after = await docker_app.control_plane.credentials_token(TENANT)
        assert token_after is not None and token_after != token_before
        with pytest.raises(SecretsError):
            Vault(old_key).decrypt(token_after)
        assert Vault(new_key).open_credentials(token_after) == creds

        # Pools opened before the rotation (the app's vault read the old key file) open a
        # role they have not used yet: they must decrypt the re-encrypted token.
        async with pools_before.acquire(TENANT, role="readonly") as conn:
            assert await conn.fetchval("SELECT current_user") == creds.roles["readonly"].username

    # The in-process daemon (its vault read the old file) provisions after the rotation:
    # the new tenant's credentials must be under the new key, never the retired one.
    await provision_ready(docker_app, "postgres", AFTER)
    token_new_tenant = await docker_app.control_plane.credentials_token(AFTER)
    assert token_new_tenant is not None
    Vault(new_key).open_credentials(token_new_tenant)

    shown = cli(docker_app, "tenant", "show", TENANT, "--reveal", "--json")
    assert shown.returncode == 0, shown.stderr
    roles = json.loads(shown.stdout)["roles"]
    assert {r: v["password"] for r, v in roles.items()} == {
        r: c.password for r, c in creds.roles.items()}

    async with (
        pools_of(docker_app, 1.0) as pools_after,
        pools_after.acquire(TENANT, role="app") as conn,
    ):
        assert await conn.fetchval("SELECT current_user") == creds.roles["app"].username

    tenant = await docker_app.control_plane.get_tenant(TENANT)
    assert tenant is not None and tenant.endpoint is not None
    app_login = creds.roles["app"]
    conn = await asyncpg.connect(
        host=tenant.endpoint.host, port=tenant.endpoint.port, database=tenant.endpoint.database,
        user=app_login.username, password=roles["app"]["password"],
    )
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
