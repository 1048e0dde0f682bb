"""The mysql engine's schema migrations, without a server: the shipped steps, how they
relate to the templates, and the pure helpers of ``cloner.engines.mysql_migrations``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloner.catalog import Catalog
from cloner.catalog.migrations import Direction, MigrationCatalog, MigrationScript
from cloner.domain import Credentials, Endpoint, Engine, RoleCredential
from cloner.engines import TenantTarget, get_engine
from cloner.engines.mysql import MysqlEngine, split_statements
from cloner.engines.mysql_migrations import _Namer, account_user, lock_name, lock_wait_s
from cloner.migrations.errors import MigrationError
from cloner.migrations.plan import plan_path
from cloner.migrations.runner import migration_hooks

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "templates" / "mysql" / "migrations"


def test_shipped_steps_verify_and_chain_the_versions_like_postgres() -> None:
    """v1.0-v1.1 and v1.1-v1.2, each with up and down, checksums verified; the same steps
    and the same destructive flags as the postgres migrations."""
    catalog = MigrationCatalog(REPO / "templates")
    mine = catalog.steps("mysql")
    theirs = catalog.steps("postgres")
    assert [(s.from_version, s.to_version) for s in mine] == [("v1.0", "v1.1"), ("v1.1", "v1.2")]
    assert [(s.name, s.down is not None and s.down.destructive) for s in mine] == [
        (s.name, s.down is not None and s.down.destructive) for s in theirs]
    versions = Catalog(REPO / "templates", REPO / "industry_templates").versions("mysql")
    path = plan_path(catalog, versions, "mysql", "v1.0", "v1.2")
    assert [s.label for s in path] == ["v1.0-v1.1 up", "v1.1-v1.2 up"]


@pytest.mark.parametrize("path", sorted(MIGRATIONS.glob("*/*.sql")), ids=lambda p: p.parent.name
                         + "/" + p.name)
def test_shipped_steps_split_into_plain_statements(path: Path) -> None:
    """Every file splits into statements the engine can run one by one (no DELIMITER,
    nothing left unclosed), and none of them touches transactions, users or grants."""
    statements = split_statements(path.read_text())
    assert statements
    for statement in statements:
        first = statement.sql.split(None, 1)[0].upper()
        assert first in {"CREATE", "ALTER", "DROP", "UPDATE"}, statement


def test_commerce_step_creates_exactly_the_v1_1_template_tables() -> None:
    """v1.0-v1.1 up is the v1.1 template's CREATE TABLEs that v1.0 lacks, statement for
    statement, and down drops exactly those tables."""
    def creates(path: Path) -> dict[str, str]:
        return {s.sql.split()[2]: s.sql for s in split_statements(path.read_text())
                if s.sql.startswith("CREATE TABLE")}

    v10 = creates(REPO / "templates/mysql/v1.0/schema.sql")
    v11 = creates(REPO / "templates/mysql/v1.1/schema.sql")
    up = creates(MIGRATIONS / "v1.0-v1.1/up.sql")
    assert up == {name: sql for name, sql in v11.items() if name not in v10}
    down = [s.sql for s in split_statements((MIGRATIONS / "v1.0-v1.1/down.sql").read_text())]
    assert sorted(down) == sorted(f"DROP TABLE {name}" for name in up)


def test_v1_2_template_is_v1_1_with_the_step_applied_to_its_definitions() -> None:
    """The fresh v1.2 template differs from v1.1 only in customers and orders: the renamed
    column with its CHECK and comment, item_count last, and the descending index."""
    def tables(path: Path) -> dict[str, str]:
        return {s.sql.split()[2]: s.sql for s in split_statements(path.read_text())
                if s.sql.startswith("CREATE TABLE")}

    v11 = tables(REPO / "templates/mysql/v1.1/schema.sql")
    v12 = tables(REPO / "templates/mysql/v1.2/schema.sql")
    assert {t for t in v11 if v11[t] != v12[t]} == {"customers", "orders"}
    assert v11.keys() == v12.keys()
    orders = v12["orders"]
    assert orders.index("item_count") > orders.index("updated_at")  # where ADD COLUMN puts it
    assert "KEY orders_customer_placed_at_idx (customer_id, placed_at DESC)" in orders
    assert "CHECK (country_code REGEXP '^[A-Z]{2}$')" in v12["customers"]
    assert not re.search(r"^\s+country\s", v12["customers"], re.M)  # no column of that name


def test_manifest_lists_the_files_it_verifies() -> None:
    """Both steps name both files; an engine mismatch in the manifest would show here."""
    manifest = json.loads((MIGRATIONS / "manifest.json").read_text())
    assert manifest["engine"] == "mysql"
    for step in manifest["steps"].values():
        assert set(step["files"]) == {"up.sql", "down.sql"}


# ------------------------------------------------------------------- helpers


def test_lock_names_fit_get_lock_and_waits_are_whole_seconds() -> None:
    """GET_LOCK names are at most 64 characters, even for the longest tenant database
    name; lock waits round up to whole seconds and never reach 0 (which means no wait)."""
    longest = "a" * 40
    assert len(lock_name(longest)) <= 64 and lock_name(longest).endswith(longest)
    assert lock_name("acme") != lock_name("acme_corp")
    assert [lock_wait_s(v) for v in (0.001, 0.5, 1, 1.2, 10)] == [1, 1, 1, 2, 10]


@pytest.mark.parametrize(("account", "user"), [
    ("'acme_app'@'172.18.0.1'", "acme_app"),
    ("'acme_app'@'%'", "acme_app"),
    ("root@%", "root"),
    ("mysql@localhost", "mysql"),
    ("PUBLIC", "PUBLIC"),
])
def test_account_user_reads_grantees_and_definers(account: str, user: str) -> None:
    """The user part of a GRANTEE (quoted) or a DEFINER (unquoted); PUBLIC stays PUBLIC."""
    assert account_user(account) == user


def test_namer_replaces_tenant_names_by_what_they_stand_for() -> None:
    """Account and database names become role kinds in SQL text, whole names only, so the
    guard triggers of two tenants compare equal and a longer name is not half-replaced."""
    namer = _Namer("acme", "acme", {"acme_owner": "owner", "root": "superuser"})
    text = ("IF SUBSTRING_INDEX(USER(), '@', 1) NOT IN ('acme_owner', 'root', 'acme_owner2') "
            "THEN SELECT * FROM `acme`.`t`")
    assert namer.text(text) == (
        "IF SUBSTRING_INDEX(USER(), '@', 1) NOT IN ('{owner}', '{superuser}', 'acme_owner2') "
        "THEN SELECT * FROM `{database}`.`t`")
    assert namer.text(None) is None
    assert namer.kind("stranger") == "role:stranger"
    assert namer.grant("'acme_owner'@'10.0.0.1'", "ALTER", "YES") == "owner:ALTER:grantable"
    assert namer.grant("'x'@'%'", "SELECT", "NO", "pattern ac%") == "role:x:SELECT on pattern ac%"


# -------------------------------------------------------------------- engine


def test_engine_offers_migration_hooks_without_transactional_ddl() -> None:
    """The runner finds every hook; a failed step is restored from the backup, not reverted."""
    engine = get_engine(Engine.MYSQL)
    hooks = migration_hooks(engine)
    assert hooks.transactional_ddl is False
    assert isinstance(engine, MysqlEngine)


async def test_script_that_cannot_be_split_fails_before_connecting(tmp_path: Path) -> None:
    """A DELIMITER in a step is refused before any statement runs: the target below points
    at a closed port, so reaching it would fail differently."""
    path = tmp_path / "up.sql"
    path.write_text("ALTER TABLE t ADD c INT;\nDELIMITER //\n")
    script = MigrationScript("mysql", "v1.1-v1.2", Direction.UP, "v1.1", "v1.2", path, "0" * 64)
    cred = RoleCredential("u", "p" * 20)
    target = TenantTarget("acme", "acme", Endpoint("127.0.0.1", 1, "acme"),
                          Credentials(cred, "b" * 20, {"owner": cred, "app": cred,
                                                       "readonly": cred}))
    with pytest.raises(MigrationError, match="DELIMITER is a client command"):
        await MysqlEngine().apply_migration_step(target, script, 1)
