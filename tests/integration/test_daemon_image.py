"""The daemon image: built with no network inside the build, on a base built from Debian packages.

The base (``cloner-test/python-base:bookworm``, about 30 s to build) is kept
and reused by tag, like ``cloner images ensure`` reuses engine images; the
daemon image (``cloner-test/daemon:dev``) is rebuilt from the working tree by
``deploy/build-image.sh`` on every run (about 15 s) and kept too. Containers
are removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cloner import __version__, constants
from cloner.catalog import Catalog
from cloner.client import Client
from cloner.runtime.image_builder import build_base_image
from tests.conftest import IN_CI, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BASE_TAG = "cloner-test/python-base:bookworm"
DAEMON_TAG = "cloner-test/daemon:dev"
TEST_LABEL = "cloner-test.daemon-image"


def docker(*args: str, timeout_s: float = 120.0, check: bool = True) -> str:
    """Run the docker CLI; its stdout."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def container_log(container: str, tail: int = 200) -> str:
    """The container's output; the daemon logs to stderr."""
    proc = subprocess.run(["docker", "logs", "--tail", str(tail), container],
                          capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout + proc.stderr


def image_present(tag: str) -> bool:
    """Whether the local engine has an image named ``tag``."""
    return bool(docker("images", "--quiet", tag).strip())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_healthz(base_url: str, container: str, timeout_s: float = 30.0) -> None:
    """Poll /healthz until 200; fail with the container's log tail otherwise."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base_url}/healthz", timeout=2.0)
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        time.sleep(0.3)
    pytest.fail(f"/healthz of {container} not 200 within {timeout_s:.0f}s ({last}); log:\n"
                f"{container_log(container, tail=30)}")


def remove_container(container: str) -> None:
    """Remove a container and its anonymous volume (the image declares VOLUME)."""
    docker("rm", "--force", "--volumes", container, check=False)


@pytest.fixture(scope="module")
def daemon_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The daemon image, built by deploy/build-image.sh on the offline-built Python base."""
    require_docker()
    if not image_present(BASE_TAG):
        build_base_image("python", BASE_TAG, work_dir=tmp_path_factory.mktemp("python-base"))
    proc = subprocess.run(
        [str(REPO / "deploy" / "build-image.sh"), "--base", BASE_TAG, "--tag", DAEMON_TAG],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHON": str(REPO / ".venv" / "bin" / "python")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return DAEMON_TAG


def test_cli_in_the_image_reports_its_version(daemon_image: str) -> None:
    """`cloner --version` in the image is this checkout's version."""
    assert docker("run", "--rm", "--network", "none", daemon_image, "--version").strip() == (
        f"cloner, version {__version__}"
    )


def test_image_ships_the_templates_of_this_checkout(daemon_image: str) -> None:
    """`cloner template list --json` in the image lists the repository's templates."""
    listed = json.loads(docker("run", "--rm", "--network", "none", daemon_image,
                               "template", "list", "--json"))
    local = Catalog(REPO / "templates", REPO / "industry_templates").list_versions()

    assert {(t["engine"], t["version"], t["checksum"]) for t in listed} == {
        (v.engine, v.version, v.checksum) for v in local
    }
    assert all(t["overlays"] for t in listed)


def test_image_runs_as_cloner_with_the_docker_socket_group(daemon_image: str) -> None:
    """The default user is `cloner` (not root), with the socket's group as a supplementary one."""
    socket_gid = Path("/var/run/docker.sock").stat().st_gid
    ids = docker("run", "--rm", "--network", "none", "--entrypoint", "id", daemon_image)

    assert ids.startswith("uid=10001(cloner) gid=10001(cloner) ")
    assert f",{socket_gid}(" in ids
    data_dir = docker("run", "--rm", "--network", "none", "--entrypoint", "stat",
                      daemon_image, "-c", "%U %a", "/var/lib/cloner")
    assert data_dir.split() == ["cloner", "700"]


def test_daemon_without_docker_serves_healthz_and_reports_not_ready(daemon_image: str) -> None:
    """No Docker socket: /healthz 200, /readyz 503 naming the runtime, runtime_up 0, clean stop."""
    port = free_port()
    container = f"cloner-test-image-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", container, "--label", TEST_LABEL,
           "--publish", f"127.0.0.1:{port}:8080", "--env", "CLONER_HTTP_LISTEN=0.0.0.0:8080",
           daemon_image)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_healthz(base_url, container)
        ready = httpx.get(f"{base_url}/readyz", timeout=5.0)
        metrics = httpx.get(f"{base_url}/metrics", timeout=5.0).text
        healthcheck = subprocess.run(
            ["docker", "exec", container, "python3", "/opt/cloner/healthcheck.py"],
            capture_output=True, text=True, timeout=30, check=False,
        )

        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert any(p.startswith("runtime: docker is not reachable")
                   for p in ready.json()["problems"]), ready.json()
        assert "cloner_runtime_up 0.0" in metrics.splitlines()
        assert healthcheck.returncode == 0, healthcheck.stderr
        assert docker("inspect", "--format", "{{.State.Running}}", container).strip() == "true"
        docker("stop", "--time", "30", container)
        assert docker("inspect", "--format", "{{.State.ExitCode}}", container).strip() == "0"
        assert "daemon.docker_unreachable" in container_log(container)
    finally:
        remove_container(container)


@pytest.fixture
def host_network_daemon(daemon_image: str) -> Iterator[tuple[str, str]]:
    """The image run as docker-compose.yml runs it: host network, the Docker socket.

    Yields (base URL, admin token). Everything the daemon creates carries its
    install label and is removed afterwards.
    """
    postgres_image = os.environ.get("CLONER_TEST_POSTGRES_IMAGE", "postgres:15")
    if not image_present(postgres_image):
        reason = f"{postgres_image} is not present (cloner images ensure)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    token = uuid.uuid4().hex
    container = f"cloner-test-image-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", container, "--label", TEST_LABEL,
           "--network", "host", "--volume", "/var/run/docker.sock:/var/run/docker.sock",
           "--env", f"CLONER_HTTP_LISTEN=127.0.0.1:{port}", "--env", f"CLONER_ADMIN_TOKEN={token}",
           "--env", f"CLONER_POSTGRES_IMAGE={postgres_image}", daemon_image)
    install_id = ""
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_healthz(base_url, container)
        install_id = docker("exec", container, "cat",
                            f"/var/lib/cloner/{constants.INSTALL_ID_FILE}").strip()
        yield base_url, token
    finally:
        remove_container(container)
        if install_id:
            owned = f"label={constants.LABEL_INSTALL}={install_id}"
            for leftover in docker("ps", "--all", "--quiet", "--filter", owned).split():
                remove_container(leftover)
            for volume in docker("volume", "ls", "--quiet", "--filter", owned).split():
                docker("volume", "rm", "--force", volume, check=False)


async def test_daemon_on_the_host_network_provisions_and_purges_a_tenant(
    host_network_daemon: tuple[str, str],
) -> None:
    """The compose topology works: a tenant becomes ready, answers on 127.0.0.1, is purged."""
    base_url, token = host_network_daemon
    tenant_id = f"img-{uuid.uuid4().hex[:8]}"

    async with Client(base_url, token) as client:
        await client.create_tenant(tenant_id, engine="postgres", industry="finance")
        ready = await client.wait_ready(tenant_id, timeout_s=90)
        revealed = await client.get_tenant(tenant_id, reveal=True)
        conn = await asyncpg.connect(revealed["dsn"]["app"], timeout=10, ssl=False)
        try:
            assert await conn.fetchval("SELECT current_database()") == revealed["endpoint"][
                "database"]
        finally:
            await conn.close()
        await client.delete_tenant(tenant_id, purge=True)
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline:
            status = (await client.get_tenant(tenant_id))["status"]
            if status in {"purged", "failed"}:
                break
            await asyncio.sleep(0.5)

    assert ready["isolation"]["passed"] is True
    assert ready["endpoint"]["host"] == "127.0.0.1"
    assert status == "purged"
