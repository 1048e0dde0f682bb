"""The mysql (MariaDB) engine's pure logic: grant escaping, hashes, statement splitting,
account hosts, the container spec, dump verification, the image recipe and templates."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path

import pymysql
import pytest

from cloner.catalog import Catalog, lint_sql
from cloner.domain import Credentials, Endpoint, Engine, Industry, RoleCredential
from cloner.engines import ContainerDefaults, get_engine
from cloner.engines.mysql import (
    MysqlEngine,
    _dumped_tables,
    _is_connection_error,
    account,
    account_host,
    error_code,
    grant_pattern,
    native_password_hash,
    quote_ident,
    split_statements,
)
from cloner.errors import TemplateError
from cloner.runtime.image_builder import IMAGES_DIR, MYSQL_RECIPE, RECIPES
from cloner.runtime.image_store import CONTAINER_ENGINES

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = ContainerDefaults(
    image="mariadb:10.11", bind_host="127.0.0.1", network="cloner-tenants",
    memory_limit_bytes=256 * 2**20, nano_cpus=10**9, pids_limit=256,
    shm_size_bytes=64 * 2**20, connection_limit=40,
)


# ----------------------------------------------------------------- grant names


@pytest.mark.parametrize(("database", "expected"), [
    ("acme", "`acme`"),
    ("my_a", "`my\\_a`"),
    ("a_b_c", "`a\\_b\\_c`"),
    ("100%", "`100\\%`"),
    ("back\\slash", "`back\\\\slash`"),
    ("tick`name", "`tick``name`"),
])
def test_grant_pattern_escapes_like_wildcards(database: str, expected: str) -> None:
    """`_` and `%` are LIKE wildcards in database-level grants: each is escaped, once."""
    assert grant_pattern(database) == expected


def test_escaped_pattern_matches_only_its_own_name() -> None:
    """Read as the server reads it (a LIKE pattern), the escaped name matches itself only."""
    def like(pattern: str, name: str) -> bool:
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern[i] == "\\":
                regex += re.escape(pattern[i + 1])
                i += 2
                continue
            regex += {"_": ".", "%": ".*"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
        return re.fullmatch(regex, name) is not None

    pattern = grant_pattern("my_a")[1:-1]
    assert like(pattern, "my_a")
    assert not like(pattern, "myXa")
    assert like("my_a", "myXa")  # the unescaped name would have matched it


def test_identifiers_and_accounts_are_quoted() -> None:
    """Backticks are doubled in identifiers; quotes and backslashes escaped in account names."""
    assert quote_ident("a`b") == "`a``b`"
    assert account("o'neil", "172.18.0.1") == "'o\\'neil'@'172.18.0.1'"
    assert account("a\\b", "%") == "'a\\\\b'@'%'"


# ---------------------------------------------------------------- credentials


def test_native_password_hash_is_what_the_server_stores() -> None:
    """``*`` + upper hex SHA1(SHA1(password)): the value PASSWORD('secret') gives on 10.11."""
    assert native_password_hash("secret") == "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
    assert native_password_hash("") == "*BE1BDEC0AA74B4DCB079943E70528096CCA985F8"
    digest = native_password_hash("x" * 32)
    assert re.fullmatch(r"\*[0-9A-F]{40}", digest) and "x" not in digest.lower()


@pytest.mark.parametrize(("peer", "bind_host", "expected"), [
    ("172.18.0.1", "127.0.0.1", "172.18.0.1"),
    ("172.18.0.1", "localhost", "172.18.0.1"),
    ("fd00::1", "::1", "fd00::1"),
    ("172.18.0.1", "0.0.0.0", "%"),  # noqa: S104 - remote clients keep their addresses
    ("172.18.0.1", "10.1.2.3", "%"),
    ("172.18.0.1", None, "%"),
    ("127.0.0.1", "127.0.0.1", "%"),  # no gateway in between: nothing to pin to
    ("db.example", "127.0.0.1", "%"),  # a name (name resolution on): not an address
    ("", "127.0.0.1", "%"),
])
def test_account_host_pins_to_the_gateway_only_behind_loopback(
    peer: str, bind_host: str | None, expected: str
) -> None:
    """Loopback bind host: accounts accept the tenant network's gateway only; otherwise %."""
    assert account_host(peer, bind_host) == expected


# ------------------------------------------------------------ statement split


def test_split_respects_quotes_comments_and_reports_lines() -> None:
    """Semicolons inside quotes and comments do not split; comments are dropped."""
    script = (
        "-- header; not a statement\n"
        "CREATE TABLE t (a TEXT DEFAULT 'x;y', b TEXT DEFAULT 'it''s', "
        "c TEXT DEFAULT 'back\\'slash;');\n"
        "# hash comment;\n"
        "/* block; comment */ INSERT INTO `we;ird` VALUES (\"q;\"\"q\");\n"
        "SELECT /*!40101 1; */ 2;\n"
        "SELECT 1--1;\n"
        "SELECT 3"
    )
    statements = split_statements(script)
    assert [s.line for s in statements] == [2, 4, 5, 6, 7]
    assert statements[0].sql.endswith("c TEXT DEFAULT 'back\\'slash;')")
    assert statements[1].sql == "INSERT INTO `we;ird` VALUES (\"q;\"\"q\")"
    assert statements[2].sql == "SELECT /*!40101 1; */ 2"  # executable comments stay
    assert statements[3].sql == "SELECT 1--1"  # `--` without a blank is minus minus
    assert statements[4].sql == "SELECT 3"


@pytest.mark.parametrize(("script", "message"), [
    ("SELECT 'open;", "unclosed ' quote"),
    ("SELECT `open", "unclosed ` quote"),
    ("SELECT 1; /* open", "unclosed /\\* comment"),
    ("DELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT 1; END //", "DELIMITER is a client"),
])
def test_split_refuses_what_it_cannot_run(script: str, message: str) -> None:
    """Unclosed quotes/comments and DELIMITER fail as template errors, with the reason."""
    with pytest.raises(TemplateError, match=message):
        split_statements(script)


@pytest.mark.parametrize("path", sorted(
    [*(REPO / "templates" / "mysql").glob("v*/schema.sql"),
     *(REPO / "industry_templates").glob("*/mysql.sql")], key=str))
def test_shipped_templates_split_into_their_statements(path: Path) -> None:
    """Every CREATE TABLE and INSERT of a shipped template is its own statement."""
    text = path.read_text()
    statements = split_statements(text)
    creates = [s for s in statements if s.sql.startswith("CREATE TABLE")]
    inserts = [s for s in statements if s.sql.startswith("INSERT INTO")]
    assert len(creates) == text.count("\nCREATE TABLE ")
    assert len(creates) + len(inserts) == len(statements)
    assert lint_sql(text) == []


# ------------------------------------------------------------------ templates


def _tables(sql: str) -> dict[str, set[str]]:
    """Table → column names, read from CREATE TABLE bodies (one column per line)."""
    tables: dict[str, set[str]] = {}
    for match in re.finditer(r"CREATE TABLE (\w+) \((.*?)\n\)", sql, re.S):
        columns = set()
        for line in match.group(2).splitlines():
            word = re.match(r"    `?([a-z_]+)`?\s+[A-Za-z]", line)
            if word and word.group(1) not in {"CONSTRAINT", "UNIQUE", "KEY", "CHECK"}:
                columns.add(word.group(1))
        tables[match.group(1)] = columns
    return tables


@pytest.mark.parametrize("version", ["v1.0", "v1.1", "v1.2"])
@pytest.mark.parametrize("industry", [None, "technology", "healthcare", "finance"])
def test_mysql_templates_have_the_postgres_tables_and_columns(
    version: str, industry: str | None
) -> None:
    """Same logical schema: the same tables with the same columns as the postgres templates.

    MariaDB's one extra column is the invisible helper behind the one-default-profile rule.
    """
    catalog = Catalog(REPO / "templates", REPO / "industry_templates")
    ind = Industry(industry) if industry else Industry.NONE
    mysql = catalog.resolve("mysql", version, ind)
    postgres = catalog.resolve("postgres", version, ind)
    mine = {t: c for f in mysql.files for t, c in _tables(f.read()).items()}
    theirs = {t: c for f in postgres.files for t, c in _tables(f.read()).items()}
    assert mine["hdt_profiles"] - theirs["hdt_profiles"] == {"default_marker"}
    mine["hdt_profiles"].discard("default_marker")
    assert mine == theirs
    assert len(mine) >= 10


def test_every_mysql_table_is_innodb_utf8mb4() -> None:
    """Each CREATE TABLE names InnoDB and utf8mb4 with the binary collation."""
    files = [*(REPO / "templates" / "mysql").glob("v*/schema.sql"),
             *(REPO / "industry_templates").glob("*/mysql.sql")]
    for path in files:
        for statement in split_statements(path.read_text()):
            if statement.sql.startswith("CREATE TABLE"):
                assert "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin" in \
                    statement.sql, (path, statement.line)


def test_catalog_verifies_and_lists_mysql() -> None:
    """versions.json and industries.json carry the mysql files' real checksums."""
    catalog = Catalog(REPO / "templates", REPO / "industry_templates")
    assert catalog.versions("mysql") == ["v1.0", "v1.1", "v1.2"]
    assert catalog.overlays_for("mysql") == ["finance", "healthcare", "technology"]
    resolved = catalog.resolve("mysql", "v1.1", Industry.FINANCE)
    for template in resolved.files:
        assert template.checksum == hashlib.sha256(template.path.read_bytes()).hexdigest()


# ------------------------------------------------------------- container spec


def _credentials() -> Credentials:
    return Credentials(
        superuser=RoleCredential("postgres", "super-secret-password-0001"),
        bootstrap_password="bootstrap-password-000000001",
        roles={r: RoleCredential(f"t_{r}", f"{r}-password-0000000001")
               for r in ("owner", "app", "readonly")},
    )


def test_container_spec_is_hardened_and_sized_from_settings() -> None:
    """uid 999, read-only root, tmpfs owned by 999, bootstrap secret only, sizing on argv."""
    creds = _credentials()
    defaults = ContainerDefaults(**{**DEFAULTS.__dict__, "mysql_innodb_buffer_pool_mb": 24})
    spec = MysqlEngine().container_spec("my-spec", creds, {"cloner.tenant": "my-spec"},
                                        defaults)
    assert spec.name == "cloner-my-spec" and spec.volume_name == "cloner-my-spec-data"
    assert spec.user == "999:999" and spec.read_only and spec.port == 3306
    assert spec.volume_mount == "/var/lib/mysql"
    assert spec.env == {"MARIADB_ROOT_PASSWORD": creds.bootstrap_password,
                        "MARIADB_INITDB_SKIP_TZINFO": "1"}
    for secret in (creds.superuser.password, *(r.password for r in creds.roles.values())):
        assert secret not in repr(spec.__dict__)
    assert spec.command[0] == "mariadbd"
    assert "--innodb-buffer-pool-size=24M" in spec.command
    assert "--max-connections=130" in spec.command
    assert "--performance-schema=OFF" in spec.command
    assert "uid=999" in spec.tmpfs["/run/mysqld"]
    assert spec.memory_limit_bytes == DEFAULTS.memory_limit_bytes
    assert spec.pids_limit == DEFAULTS.pids_limit and spec.nano_cpus == DEFAULTS.nano_cpus


def test_default_buffer_pool_follows_the_setting_default() -> None:
    """Without an override the container gets the settings' default buffer pool."""
    from cloner.settings import Settings

    spec = MysqlEngine().container_spec("my-def", _credentials(), {}, DEFAULTS)
    default_mb = Settings.model_fields["mysql_innodb_buffer_pool_mb"].default
    assert f"--innodb-buffer-pool-size={default_mb}M" in spec.command


def test_engine_is_registered_with_roles_and_dsn() -> None:
    """get_engine(MYSQL) is this driver; its DSN quotes user and password."""
    driver = get_engine(Engine.MYSQL)
    assert isinstance(driver, MysqlEngine)
    assert driver.roles == ("owner", "app", "readonly")
    assert driver.database_name("acme-corp") == "acme_corp"
    dsn = driver.dsn(Endpoint("127.0.0.1", 3307, "acme_corp"), "acme_corp_app", "p@ss/w:rd")
    assert dsn == "mysql://acme_corp_app:p%40ss%2Fw%3Ard@127.0.0.1:3307/acme_corp"


def test_connection_errors_are_told_apart_from_refusals() -> None:
    """Can't-connect and lost-connection are transient; access denied and syntax are not."""
    cant_connect = pymysql.err.OperationalError(2003, "Can't connect")
    denied = pymysql.err.OperationalError(1045, "Access denied")
    syntax = pymysql.err.ProgrammingError(1064, "syntax")
    assert error_code(denied) == 1045 and error_code(ValueError("x")) is None
    assert _is_connection_error(cant_connect)
    assert _is_connection_error(pymysql.err.OperationalError(2013, "Lost connection"))
    assert _is_connection_error(ConnectionResetError())
    assert not _is_connection_error(denied)
    assert not _is_connection_error(syntax)


# ------------------------------------------------------------ dump verification


def _write_dump(path: Path, body: str) -> None:
    with gzip.open(path, "wt") as handle:
        handle.write(body)


def test_dump_check_counts_tables_and_needs_the_completion_line(tmp_path: Path) -> None:
    """A whole dump reports its CREATE TABLEs; a cut-off one (no completion line) None."""
    whole = ("-- MariaDB dump\nCREATE TABLE `a` (\n  `id` int\n);\nINSERT INTO `a` VALUES (1);\n"
             "CREATE TABLE `b` (\n  `id` int\n);\n\n-- Dump completed on 2026-11-27  2:00:00\n")
    _write_dump(tmp_path / "whole.dump", whole)
    _write_dump(tmp_path / "cut.dump", whole.split("CREATE TABLE `b`", maxsplit=1)[0])
    assert _dumped_tables(tmp_path / "whole.dump") == 2
    assert _dumped_tables(tmp_path / "cut.dump") is None
    (tmp_path / "plain.dump").write_text(whole)
    with pytest.raises(gzip.BadGzipFile):
        _dumped_tables(tmp_path / "plain.dump")


# ----------------------------------------------------------------------- image


def test_offline_recipe_builds_mariadb_with_dump_tools_and_official_uid() -> None:
    """`cloner images ensure --engine mysql` has a recipe: server, mariadb-dump, uid 999."""
    assert Engine.MYSQL in CONTAINER_ENGINES
    assert RECIPES["mysql"] is MYSQL_RECIPE
    assert {"mariadb-server-core", "mariadb-client"} <= set(MYSQL_RECIPE.packages)
    assert (MYSQL_RECIPE.uid, MYSQL_RECIPE.gid, MYSQL_RECIPE.user) == (999, 999, "mysql")
    smoke = " ".join(MYSQL_RECIPE.smoke_test)
    assert "mariadb-dump --version" in smoke and "mariadbd --version" in smoke
    assert "/usr/bin/mariadb-dump" not in MYSQL_RECIPE.path_excludes
    entrypoint = IMAGES_DIR / "mysql" / MYSQL_RECIPE.entrypoint
    assert entrypoint.is_file() and os.access(entrypoint, os.X_OK)
    text = entrypoint.read_text()
    for variable in ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD", "MYSQL_DATABASE",
                     "MYSQL_USER", "MYSQL_PASSWORD", "MARIADB_ROOT_HOST"):
        assert variable in text
