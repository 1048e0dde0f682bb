"""How cloner pins its tenant-server sessions (audit H1): settings and SQL hygiene."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloner.engines import SessionLimits, postgres, postgres_migrations
from cloner.engines.mysql import pinned_init
from cloner.engines.postgres import CATALOG_NAMES, PINNED_SEARCH_PATH, pinned_settings
from tests.conftest import make_settings

#: Types cloner casts to by their qualified name; not objects it reads or calls.
_TYPES = {"int8", "regclass", "regcollation"}
_SOURCES = [Path(postgres.__file__), Path(postgres_migrations.__file__)]


def test_startup_packet_pins_search_path_and_timeouts() -> None:
    """The packet carries the catalog-only search path and both timeouts in ms."""
    settings = pinned_settings(SessionLimits(statement_timeout_s=90, lock_timeout_s=2.5))
    assert settings["search_path"] == PINNED_SEARCH_PATH == "pg_catalog, pg_temp"
    assert settings["statement_timeout"] == "90000"
    assert settings["lock_timeout"] == "2500"


def test_limits_come_from_settings(tmp_path: Path) -> None:
    """CLONER_ADMIN_*_TIMEOUT_S reach the sessions through SessionLimits."""
    limits = SessionLimits.from_settings(
        make_settings(tmp_path, admin_statement_timeout_s=30, admin_lock_timeout_s=0.2)
    )
    assert (limits.statement_timeout_s, limits.lock_timeout_s) == (30, 0.2)
    # MariaDB waits in whole seconds, at least one (0 would mean "do not wait").
    assert pinned_init(limits) == (
        "SET SESSION max_statement_time = 30, lock_wait_timeout = 1, "
        "innodb_lock_wait_timeout = 1"
    )


def test_timeouts_must_be_positive(tmp_path: Path) -> None:
    """0 would switch the limit off: refused like any bad setting."""
    with pytest.raises(ValueError, match="admin_lock_timeout_s"):
        make_settings(tmp_path, admin_lock_timeout_s=0)


@pytest.mark.parametrize("source", _SOURCES, ids=lambda p: p.name)
def test_every_catalog_name_is_qualified_and_watched(source: Path) -> None:
    """No ``FROM pg_x`` without ``pg_catalog.``; every qualified name is in CATALOG_NAMES
    (what ``no_catalog_shadowing`` looks for)."""
    text = source.read_text()
    unqualified = re.findall(r"\b(?:FROM|JOIN)\s+(pg_\w+)\b(?!\.)", text)
    assert unqualified == []
    assert not re.search(r"(?<![\w.])aclexplode\(", text)
    used = set(re.findall(r"pg_catalog\.(\w+)", text)) - _TYPES
    assert used <= CATALOG_NAMES, used - CATALOG_NAMES


def test_catalog_names_are_all_used() -> None:
    """A name nobody uses any more would only make the shadowing check noisier."""
    used = set()
    for source in _SOURCES:
        used |= set(re.findall(r"pg_catalog\.(\w+)", source.read_text()))
    assert used >= CATALOG_NAMES, CATALOG_NAMES - used
