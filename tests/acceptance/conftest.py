"""Fixtures of the acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import Cloner
from tests.conftest import require_docker


@pytest.fixture
def cloner(tmp_path: Path) -> Iterator[Cloner]:
    """A fresh cloner install in tmp_path; its Docker resources are removed afterwards."""
    require_docker()
    installation = Cloner(tmp_path)
    try:
        yield installation
    finally:
        installation.cleanup()
