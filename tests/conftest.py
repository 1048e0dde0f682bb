"""Shared fixtures. Docker-backed fixtures skip only outside CI; with CI=true they fail."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloner.app import App
from cloner.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def docker_available() -> str | None:
    """None if Docker answers, else the reason it does not."""
    import docker

    try:
        client = docker.from_env(timeout=5)
    except Exception as exc:
        return f"Docker is not available: {exc}"
    try:
        client.ping()
    except Exception as exc:
        return f"Docker is not available: {exc}"
    finally:
        client.close()
    return None


def require_docker() -> None:
    """Skip (locally) or fail (CI) when Docker is missing."""
    reason = docker_available()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}; scripts/bootstrap.sh should have started it")
    pytest.skip(reason)


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for tests: own data dir, own HTTP port, images from the environment."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "postgres_image": os.environ.get("CLONER_TEST_POSTGRES_IMAGE", "postgres:15"),
        "mysql_image": os.environ.get("CLONER_TEST_MYSQL_IMAGE", "mariadb:10.11"),
        "log_level": "debug",
        "log_format": "json",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def docker_app(tmp_path: Path) -> AsyncIterator[App]:
    """A real App against real Docker; every resource it labelled is removed afterwards."""
    require_docker()
    settings = make_settings(tmp_path / "data")
    async with App.open(settings) as app:
        try:
            yield app
        finally:
            await remove_owned(app)


async def remove_owned(app: App) -> None:
    """Remove every container and volume carrying this app's install label."""
    owned = await app.runtime.owned()
    for container in owned.containers:
        await app.runtime.remove_container(container.name)
    for volume in owned.volumes:
        await app.runtime.remove_volume(volume)
