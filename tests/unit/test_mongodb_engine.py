"""The MongoDB engine without a server: templates → command documents, RBAC, spec, backups.

No MongoDB server can run on these machines, so everything the engine
decides is a pure function tested here on its exact output; the thin layer
that sends commands is driven against a recording fake database, which
proves the glue, not the server's answers: that is
tests/integration/test_mongodb_provisioning.py, run when a mongo image exists.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import bson
import pytest
from bson.int64 import Int64
from pymongo import uri_parser
from pymongo.errors import ConnectionFailure, OperationFailure

from cloner.catalog import Catalog, TemplateFile, lint_template
from cloner.catalog.mongo_template import lint_mongo_template, parse_mongo_template
from cloner.domain import Credentials, Endpoint, Engine, Industry, RoleCredential
from cloner.engines import ContainerDefaults, Placement, TenantTarget, get_engine
from cloner.engines.mongodb import MongoEngine
from cloner.engines.mongodb import commands as cmd
from cloner.engines.mongodb.archive import (
    ARCHIVE_MAGIC,
    inspect_backup,
    read_archive,
    verified_backup,
)
from cloner.errors import (
    BackupError,
    EngineError,
    ImageError,
    NotReady,
    TemplateError,
    TemplateNotFound,
)
from cloner.runtime.docker import DockerRuntime
from cloner.runtime.image_store import NO_OFFLINE_RECIPE, ensure_image

REPO = Path(__file__).resolve().parents[2]
ROOTS = {v: REPO / "templates" / "mongodb" / v / "root.json" for v in ("v1.0", "v1.1")}
OVERLAYS = {i: REPO / "industry_templates" / i / "mongodb.json"
            for i in ("technology", "healthcare", "finance")}
SHIPPED = [*ROOTS.values(), *OVERLAYS.values()]

SMALL = {
    "format": "cloner.mongodb/1", "kind": "root", "description": "tiny",
    "collections": [
        {"name": "schema_info",
         "validator": {"$jsonSchema": {"bsonType": "object", "required": ["kind"],
                                       "properties": {"kind": {"bsonType": "string"}}}}},
        {"name": "system_settings",
         "validator": {"$jsonSchema": {
             "bsonType": "object", "required": ["key", "updated_at"],
             "additionalProperties": False,
             "properties": {"_id": {"bsonType": "objectId"},
                            "key": {"bsonType": "string", "pattern": "^[a-z]+$"},
                            "price": {"bsonType": "decimal"},
                            "updated_at": {"bsonType": "date"}}}},
         "indexes": [
             {"name": "system_settings_key_uidx", "key": [["key", 1]], "unique": True},
             {"name": "system_settings_price_idx", "key": [["price", -1], ["key", 1]],
              "partialFilterExpression": {"price": {"$type": "decimal"}}},
         ],
         "documents": [
             {"_id": {"$oid": "650000000000000000000001"}, "key": "locale",
              "price": {"$numberDecimal": "9.99"}, "updated_at": "$$NOW"},
             {"_id": {"$oid": "650000000000000000000002"}, "key": "$notafield",
              "updated_at": {"$date": "2026-01-01T00:00:00Z"}},
         ]},
    ],
}


def _small(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(SMALL))
    data.update(changes)
    return data


def _creds(prefix: str = "acme") -> Credentials:
    return Credentials(
        superuser=RoleCredential("root", "final-root-secret"),
        bootstrap_password="bootstrap-secret",
        roles={r: RoleCredential(f"{prefix}_{r}", f"{r}-secret") for r in ("owner", "app",
                                                                            "readonly")},
    )


def _target(database: str = "acme", port: int = 27017) -> TenantTarget:
    return TenantTarget("acme", database, Endpoint("127.0.0.1", port, database), _creds(),
                        container_name="cloner-acme")


def _template_file(path: Path, kind: str, name: str, version: str = "v1.1") -> TemplateFile:
    return TemplateFile(kind, name, version, path, hashlib.sha256(path.read_bytes()).hexdigest())


# ======================================================= templates: linting


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_templates_lint_clean_and_parse(path: Path) -> None:
    """Every shipped MongoDB template passes the linter and parses into collections."""
    assert lint_mongo_template(path.read_text()) == []
    assert lint_template("mongodb", path.read_text()) == []
    parsed = parse_mongo_template(path.read_text())
    assert parsed.collections
    for collection in parsed.collections:
        assert collection.schema["bsonType"] == "object"
        assert all(doc["_id"] for doc in collection.documents)


def test_lint_template_dispatches_by_engine() -> None:
    """SQL engines keep the SQL linter; mongodb gets the JSON one."""
    assert lint_template("postgres", "CREATE ROLE x;") != []
    assert lint_template("mongodb", "CREATE TABLE t (id int);")[0].startswith("not valid JSON")


def _broken(mutate: Any) -> dict[str, Any]:
    data = _small()
    mutate(data)
    return data


def _settings_coll(data: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], data["collections"][1])


def _settings_schema(data: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], _settings_coll(data)["validator"]["$jsonSchema"])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_small(format="cloner.mongodb/9"), "format must be"),
        (_small(kind="migration"), "kind must be"),
        (_small(collections=[]), "non-empty list"),
        (_broken(lambda d: d["collections"].pop(0)), "must define collection 'schema_info'"),
        (_broken(lambda d: d["collections"].append(d["collections"][0])), "defined twice"),
        (_broken(lambda d: _settings_coll(d).update(name="system.users")), "name must match"),
        (_broken(lambda d: _settings_coll(d).update(validator={"$expr": {}})),
         'exactly {"$jsonSchema"'),
        (_broken(lambda d: _settings_schema(d)["properties"]["key"].update(default="x")),
         "'default' is not supported"),
        (_broken(lambda d: _settings_schema(d)["properties"]["key"].update(format="email")),
         "'format' is not supported"),
        (_broken(lambda d: _settings_schema(d)["properties"]["key"].update(bsonType="integer")),
         "unknown bsonType"),
        (_broken(lambda d: _settings_schema(d)["properties"]["key"].update(pattern="(")),
         "does not compile"),
        (_broken(lambda d: _settings_schema(d)["properties"]["price"].update(
            minimum=0, exclusiveMinimum=0)), "exclusiveMinimum is a boolean"),
        (_broken(lambda d: _settings_schema(d)["required"].append("nope")),
         "required fields without a property definition: ['nope']"),
        (_broken(lambda d: _settings_schema(d)["properties"].pop("_id")),
         "needs an _id property"),
        (_broken(lambda d: _settings_coll(d)["indexes"][0].update(key=[["missing", 1]])),
         "'missing' is not a property"),
        (_broken(lambda d: _settings_coll(d)["indexes"][0].update(key=[["key", 2]])),
         "direction must be 1 or -1"),
        (_broken(lambda d: _settings_coll(d)["indexes"][1].update(name="system_settings_key_uidx")),
         "name used twice"),
        (_broken(lambda d: _settings_coll(d)["indexes"][1].update(
            partialFilterExpression={"price": {"$in": [1, 2]}})), "not portable"),
        (_broken(lambda d: _settings_coll(d)["indexes"][1].update(
            partialFilterExpression={"price": {"$exists": False}})), "only $exists: true"),
        (_broken(lambda d: _settings_coll(d)["documents"][0].pop("_id")), "needs a fixed _id"),
        (_broken(lambda d: _settings_coll(d)["documents"][0].pop("key")),
         "missing required fields ['key']"),
        (_broken(lambda d: _settings_coll(d)["documents"][0].update(extra=1)),
         "fields not in the schema ['extra']"),
        (_broken(lambda d: _settings_coll(d)["documents"][0].update(updated_at="$$CLUSTER_TIME")),
         "only '$$NOW'"),
        (_broken(lambda d: _settings_coll(d)["documents"][0].update(
            updated_at={"$date": "not a date"})), "not valid Extended JSON"),
        (_broken(lambda d: _settings_schema(d).update(
            anyOf=[{"$where": "this.a > 1"}])), "server-side JavaScript"),
    ],
)
def test_lint_reports_each_problem(data: dict[str, Any], expected: str) -> None:
    """Each kind of broken template is reported with a message naming the problem."""
    errors = lint_mongo_template(json.dumps(data))
    assert any(expected in e for e in errors), errors


def test_lint_accepts_the_small_template_and_rejects_non_json() -> None:
    """The fixture template is valid; text that is not JSON gets one clear error."""
    assert lint_mongo_template(json.dumps(SMALL)) == []
    errors = lint_mongo_template("{")
    assert len(errors) == 1 and errors[0].startswith("not valid JSON")
    assert lint_mongo_template("[]") == ["the template must be a JSON object"]


def test_parse_refuses_a_broken_template_with_template_error() -> None:
    """Parsing a template with problems raises TemplateError naming the source and problem."""
    bad = _small(kind="nope")
    with pytest.raises(TemplateError, match=r"root\.json: kind must be"):
        parse_mongo_template(json.dumps(bad), source="root.json")


# =================================================== templates: mirroring


_SQL_TYPES = ("uuid", "text", "bigserial", "char", "timestamptz", "jsonb", "boolean",
              "integer", "numeric", "inet")
_COLUMN = re.compile(r"^\s+([a-z_]+)\s+(" + "|".join(_SQL_TYPES) + r")\b(.*)$")


def _sql_tables(sql: str) -> dict[str, dict[str, bool]]:
    """table → column → NOT NULL (or primary key), read from the postgres template."""
    tables: dict[str, dict[str, bool]] = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
        columns = {}
        for line in body.splitlines():
            if match := _COLUMN.match(line):
                rest = match.group(3)
                columns[match.group(1)] = "NOT NULL" in rest or "PRIMARY KEY" in rest
        tables[name] = columns
    return tables


def _sql_seed_rows(sql: str) -> int:
    return sum(1 for line in sql.splitlines() if re.match(r"^\s+\('", line))


def _mirror_pairs() -> Iterator[tuple[str, Path, Path]]:
    for version, path in ROOTS.items():
        yield version, REPO / "templates" / "postgres" / version / "schema.sql", path
    for industry, path in OVERLAYS.items():
        yield industry, REPO / "industry_templates" / industry / "postgres.sql", path


@pytest.mark.parametrize(("label", "sql_path", "json_path"), list(_mirror_pairs()),
                         ids=[p[0] for p in _mirror_pairs()])
def test_mongodb_templates_mirror_the_postgres_schema(
    label: str, sql_path: Path, json_path: Path
) -> None:
    """Same collections as tables, same fields as columns, NOT NULL = required, same seeds.

    Deliberate differences: ``id`` is ``_id``; the generated column
    ``order_items.line_total`` has no MongoDB equivalent and is left out.
    """
    sql = sql_path.read_text()
    tables = _sql_tables(sql)
    parsed = parse_mongo_template(json_path.read_text())
    assert sorted(parsed.names) == sorted(tables), label
    for collection in parsed.collections:
        columns = dict(tables[collection.name])
        columns.pop("id", None)
        columns.pop("line_total", None)
        properties = set(collection.schema["properties"]) - {"_id"}
        assert properties == set(columns), collection.name
        required = set(collection.schema.get("required", []))
        assert required == {c for c, not_null in columns.items() if not_null}, collection.name
    seeds = sum(len(c.documents) for c in parsed.collections)
    assert seeds == _sql_seed_rows(sql), label


def test_sql_unique_constraints_are_unique_indexes() -> None:
    """Every UNIQUE column of the postgres v1.1 root is a unique index leading with it."""
    sql = (REPO / "templates/postgres/v1.1/schema.sql").read_text()
    parsed = parse_mongo_template(ROOTS["v1.1"].read_text())
    unique_fields = {
        (c.name, i.key[0][0]) for c in parsed.collections for i in c.indexes if i.unique
    }
    for table, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
        for line in body.splitlines():
            match = _COLUMN.match(line)
            if match and re.search(r"\bUNIQUE\b", match.group(3)):
                assert (table, match.group(1)) in unique_fields, (table, match.group(1))


# ================================================ templates: command documents


def test_create_collection_command_carries_the_json_schema_validator() -> None:
    """`create` sends the template's $jsonSchema as the strict, erroring validator."""
    parsed = parse_mongo_template(json.dumps(SMALL))
    settings = parsed.collections[1]
    assert cmd.create_collection_command(settings) == {
        "create": "system_settings",
        "validator": {"$jsonSchema": SMALL["collections"][1]["validator"]["$jsonSchema"]},
        "validationLevel": "strict",
        "validationAction": "error",
    }
    assert next(iter(cmd.create_collection_command(settings))) == "create"  # command name first


def test_create_indexes_command_keeps_key_order_unique_and_partial_filters() -> None:
    """`createIndexes` lists every index with ordered keys, unique flag and partial filter."""
    settings = parse_mongo_template(json.dumps(SMALL)).collections[1]
    command = cmd.create_indexes_command(settings)
    assert command == {
        "createIndexes": "system_settings",
        "indexes": [
            {"key": {"key": 1}, "name": "system_settings_key_uidx", "unique": True},
            {"key": {"price": -1, "key": 1}, "name": "system_settings_price_idx",
             "partialFilterExpression": {"price": {"$type": "decimal"}}},
        ],
    }
    assert command is not None
    assert list(command["indexes"][1]["key"]) == ["price", "key"]
    assert cmd.create_indexes_command(parse_mongo_template(json.dumps(SMALL)).collections[0]) \
        is None


def test_seed_command_upserts_by_id_with_literals_and_server_now() -> None:
    """Seeds are one ordered `update` of upserts by _id; $$NOW stays a variable, rest literal."""
    settings = parse_mongo_template(json.dumps(SMALL)).collections[1]
    first, second = (bson.ObjectId("650000000000000000000001"),
                     bson.ObjectId("650000000000000000000002"))
    assert cmd.seed_command(settings) == {
        "update": "system_settings",
        "updates": [
            {"q": {"_id": first}, "upsert": True, "u": [{"$replaceWith": {
                "_id": {"$literal": first}, "key": {"$literal": "locale"},
                "price": {"$literal": bson.Decimal128("9.99")}, "updated_at": "$$NOW"}}]},
            {"q": {"_id": second}, "upsert": True, "u": [{"$replaceWith": {
                "_id": {"$literal": second}, "key": {"$literal": "$notafield"},
                "updated_at": {"$literal": datetime(2026, 1, 1, tzinfo=UTC)}}}]},
        ],
        "ordered": True,
    }
    assert cmd.seed_command(parse_mongo_template(json.dumps(SMALL)).collections[0]) is None


def test_schema_info_command_records_kind_name_version_checksum() -> None:
    """The bookkeeping insert names the file exactly as postgres' schema_info row does."""
    template = _template_file(ROOTS["v1.0"], "root", "mongodb", "v1.0")
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert cmd.schema_info_command(template, 42, at) == {
        "insert": "schema_info",
        "documents": [{"kind": "root", "name": "mongodb", "version": "v1.0",
                       "checksum": template.checksum, "applied_at": at, "duration_ms": 42}],
        "ordered": True,
    }


def test_collection_commands_create_skip_or_realign() -> None:
    """Absent → create; present with the same validator → nothing; different → collMod."""
    settings = parse_mongo_template(json.dumps(SMALL)).collections[1]
    created = cmd.create_collection_command(settings)
    assert cmd.collection_commands(settings, None) == [created]
    same = {"name": "system_settings", "options": {
        "validator": created["validator"], "validationLevel": "strict",
        "validationAction": "error"}}
    assert cmd.collection_commands(settings, same) == []
    drifted = {"name": "system_settings", "options": {"validator": {"$jsonSchema": {}}}}
    assert cmd.collection_commands(settings, drifted) == [cmd.coll_mod_command(settings)]
    warn_only = {"name": "system_settings", "options": {
        "validator": created["validator"], "validationAction": "warn"}}
    assert cmd.collection_commands(settings, warn_only)[0]["collMod"] == "system_settings"


def test_pending_templates_resume_and_refuse_foreign_schemas() -> None:
    """Nothing recorded → all; root recorded → overlay only; a different schema is refused."""
    root = _template_file(ROOTS["v1.1"], "root", "mongodb")
    overlay = _template_file(OVERLAYS["finance"], "overlay", "finance")
    record = {"kind": "root", "name": "mongodb", "version": "v1.1", "checksum": root.checksum}
    assert cmd.pending_templates([], [root, overlay], "acme") == [root, overlay]
    assert cmd.pending_templates([record], [root, overlay], "acme") == [overlay]
    done = {"kind": "overlay", "name": "finance", "version": "v1.1",
            "checksum": overlay.checksum}
    assert cmd.pending_templates([record, done], [root, overlay], "acme") == []
    with pytest.raises(TemplateError, match="does not match"):
        cmd.pending_templates([record | {"checksum": "0" * 64}], [root, overlay], "acme")
    with pytest.raises(TemplateError, match="overlay healthcare"):
        cmd.pending_templates([record, done | {"name": "healthcare"}], [root, overlay], "acme")


def test_overlay_may_not_redefine_a_root_collection() -> None:
    """An overlay defining a collection of the root is refused before anything is sent."""
    root = _template_file(ROOTS["v1.0"], "root", "mongodb", "v1.0")
    parsed_root = parse_mongo_template(root.read())
    clash = _small(kind="overlay", collections=[SMALL["collections"][1]])
    parsed_clash = parse_mongo_template(json.dumps(clash))
    with pytest.raises(TemplateError, match="redefines collection 'system_settings'"):
        cmd.check_disjoint([(root, parsed_root), (root, parsed_clash)])
    finance = _template_file(OVERLAYS["finance"], "overlay", "finance", "v1.0")
    cmd.check_disjoint([(root, parsed_root), (finance, parse_mongo_template(finance.read()))])


def test_command_errors_reads_write_errors_from_an_ok_reply() -> None:
    """A reply with ok:1 but writeErrors or writeConcernError still counts as failed."""
    assert cmd.command_errors({"ok": 1, "n": 2}) == []
    reply = {"ok": 1, "writeErrors": [{"index": 0, "code": 121, "codeName":
                                       "DocumentValidationFailure",
                                       "errmsg": "Document failed validation"}],
             "writeConcernError": {"errmsg": "waiting for replication timed out"}}
    assert cmd.command_errors(reply) == [
        "DocumentValidationFailure: Document failed validation",
        "write concern: waiting for replication timed out",
    ]


# ===================================================================== RBAC


def test_rbac_commands_create_roles_then_users_on_the_tenant_database_only() -> None:
    """A fresh database gets createRole x3 (inheriting one built-in role of that db), then users."""
    commands = cmd.rbac_commands("acme", _creds(), [], [])
    assert commands == [
        {"createRole": "cloner_owner", "privileges": [],
         "roles": [{"role": "dbOwner", "db": "acme"}]},
        {"createRole": "cloner_app", "privileges": [],
         "roles": [{"role": "readWrite", "db": "acme"}]},
        {"createRole": "cloner_readonly", "privileges": [],
         "roles": [{"role": "read", "db": "acme"}]},
        {"createUser": "acme_owner", "pwd": "owner-secret",
         "roles": [{"role": "cloner_owner", "db": "acme"}], "mechanisms": ["SCRAM-SHA-256"]},
        {"createUser": "acme_app", "pwd": "app-secret",
         "roles": [{"role": "cloner_app", "db": "acme"}], "mechanisms": ["SCRAM-SHA-256"]},
        {"createUser": "acme_readonly", "pwd": "readonly-secret",
         "roles": [{"role": "cloner_readonly", "db": "acme"}], "mechanisms": ["SCRAM-SHA-256"]},
    ]
    every_db = {r["db"] for c in commands for r in c["roles"]}
    assert every_db == {"acme"}


def test_rbac_commands_update_what_exists() -> None:
    """A second run updates (idempotent): existing roles and users get update*, the rest create*."""
    commands = cmd.rbac_commands(
        "acme", _creds(), ["cloner_owner", "cloner_app", "someone_elses"], ["acme_app"],
    )
    assert [next(iter(c)) for c in commands] == [
        "updateRole", "updateRole", "createRole", "createUser", "updateUser", "createUser",
    ]
    assert commands[4] == {"updateUser": "acme_app", "pwd": "app-secret",
                           "roles": [{"role": "cloner_app", "db": "acme"}],
                           "mechanisms": ["SCRAM-SHA-256"]}


def test_rotate_root_command_sets_the_final_password() -> None:
    """The bootstrap root password is replaced with updateUser, SCRAM-SHA-256 only."""
    assert cmd.rotate_root_command("root", "new") == {
        "updateUser": "root", "pwd": "new", "mechanisms": ["SCRAM-SHA-256"],
    }


def _user(name: str, role: str, db: str = "acme", **extra: Any) -> dict[str, Any]:
    return {"user": name, "db": db, "roles": [{"role": role, "db": db}],
            "inheritedRoles": [{"role": role, "db": db}, {"role": "read", "db": db}],
            "inheritedPrivileges": [{"resource": {"db": db, "collection": ""},
                                     "actions": ["find"]}], **extra}


EXPECTED = {"acme_owner": "cloner_owner", "acme_app": "cloner_app",
            "acme_readonly": "cloner_readonly"}
CONFINED = [_user(u, r) for u, r in EXPECTED.items()]
ADMINS = [{"user": "root", "db": "admin"}]


def test_confinement_accepts_users_confined_to_their_database() -> None:
    """Three confined users, root alone in admin: no problem (an owner-made confined user too)."""
    assert cmd.confinement_problems("acme", EXPECTED, CONFINED, ADMINS, "root") == []
    extra = [*CONFINED, _user("report_bot", "read")]
    assert cmd.confinement_problems("acme", EXPECTED, extra, ADMINS, "root") == []


@pytest.mark.parametrize(
    ("users", "admins", "expected"),
    [
        (CONFINED[:2], ADMINS, "acme_readonly is missing"),
        ([*CONFINED[:2], _user("acme_readonly", "read")], ADMINS, "holds roles"),
        ([*CONFINED[:2], _user("acme_readonly", "cloner_readonly") | {
            "inheritedRoles": [{"role": "readAnyDatabase", "db": "admin"}]}], ADMINS,
         "holds readAnyDatabase@admin"),
        ([*CONFINED[:2], _user("acme_readonly", "cloner_readonly") | {
            "inheritedPrivileges": [{"resource": {"cluster": True}, "actions": ["shutdown"]}]}],
         ADMINS, "privilege on {'cluster': True}"),
        ([*CONFINED[:2], _user("acme_readonly", "cloner_readonly") | {
            "inheritedPrivileges": [{"resource": {"db": "", "collection": ""},
                                     "actions": ["find"]}]}], ADMINS, "every database"),
        ([*CONFINED[:2], _user("acme_readonly", "cloner_readonly") | {
            "inheritedPrivileges": [{"resource": {"anyResource": True}, "actions": ["find"]}]}],
         ADMINS, "anyResource"),
        ([*CONFINED, _user("sneaky", "readWrite") | {"roles": [{"role": "readWrite",
                                                                  "db": "other"}]}],
         ADMINS, "sneaky holds readWrite@other"),
        (CONFINED, [*ADMINS, {"user": "acme_app", "db": "admin"}], "admin holds users"),
    ],
)
def test_confinement_reports_every_escape(
    users: list[dict[str, Any]], admins: list[dict[str, Any]], expected: str
) -> None:
    """Missing users, wrong roles, foreign or cluster privileges, extra admins are reported."""
    problems = cmd.confinement_problems("acme", EXPECTED, users, admins, "root")
    assert any(expected in p for p in problems), problems


# ======================================================= container and URIs


def _defaults(memory_limit_bytes: int = 256 * 1024 * 1024) -> ContainerDefaults:
    return ContainerDefaults(
        image="mongo:7", bind_host="127.0.0.1", network="cloner-tenants",
        memory_limit_bytes=memory_limit_bytes, nano_cpus=1_000_000_000, pids_limit=256,
        shm_size_bytes=64 * 1024 * 1024, connection_limit=40,
    )


def test_container_spec_follows_the_official_image_contract_and_is_hardened() -> None:
    """Root user/password env, --auth, all interfaces inside, 127.0.0.1 outside, non-root, r/o."""
    spec = MongoEngine().container_spec("acme", _creds(), {"cloner.tenant": "acme"}, _defaults())
    assert spec.name == "cloner-acme" and spec.volume_name == "cloner-acme-data"
    assert spec.image == "mongo:7" and spec.port == 27017 and spec.bind_host == "127.0.0.1"
    assert spec.env == {"MONGO_INITDB_ROOT_USERNAME": "root",
                        "MONGO_INITDB_ROOT_PASSWORD": "bootstrap-secret"}
    assert "final-root-secret" not in json.dumps([spec.env, spec.command])
    assert spec.user == "999:999" and spec.read_only and spec.cap_add == ()
    assert spec.volume_mount == "/data/db"
    assert spec.memory_limit_bytes == 256 * 1024 * 1024 and spec.pids_limit == 256
    command = list(spec.command)
    assert command[0] == "mongod"
    for flag in ("--auth", "--bind_ip_all", "--noscripting"):
        assert flag in command
    assert command[command.index("--port") + 1] == "27017"
    assert command[command.index("--maxConns") + 1] == "130"
    assert command[command.index("--wiredTigerEngineConfigString") + 1] == "cache_size=64M"
    parameters = [command[i + 1] for i, a in enumerate(command) if a == "--setParameter"]
    assert "enableLocalhostAuthBypass=false" in parameters
    # /data/configdb is an image VOLUME: a tmpfs stops Docker making an anonymous volume.
    assert set(spec.tmpfs) == {"/tmp", "/data/configdb"}  # noqa: S108 - container paths
    assert "uid=999" in spec.tmpfs["/data/configdb"]
    assert "bootstrap-secret" not in repr(spec)


def test_wiredtiger_cache_follows_the_memory_limit_with_a_floor() -> None:
    """A quarter of the memory limit, never under 32 MB."""
    engine = MongoEngine()
    big = engine.container_spec("acme", _creds(), {}, _defaults(1024 * 1024 * 1024)).command
    small = engine.container_spec("acme", _creds(), {}, _defaults(64 * 1024 * 1024)).command
    assert "cache_size=256M" in big
    assert "cache_size=32M" in small


def test_dsn_escapes_credentials_and_round_trips_through_pymongo() -> None:
    """Reserved characters in user and password are percent-escaped; pymongo reads them back."""
    password = "p@ss:w/rd?#[]%+ &="
    dsn = MongoEngine().dsn(Endpoint("127.0.0.1", 49153, "acme_corp"), "acme_corp_app", password)
    assert dsn.startswith("mongodb://acme_corp_app:")
    assert dsn.endswith("@127.0.0.1:49153/acme_corp?authSource=acme_corp")
    parsed = uri_parser.parse_uri(dsn)
    assert parsed["username"] == "acme_corp_app"
    assert parsed["password"] == password
    assert parsed["database"] == "acme_corp"
    assert parsed["options"]["authSource"] == "acme_corp"


def test_dsn_brackets_an_ipv6_host() -> None:
    """An IPv6 bind host is written in brackets, as URIs require."""
    dsn = MongoEngine().dsn(Endpoint("::1", 27017, "acme"), "u", "p")
    assert "@[::1]:27017/acme?" in dsn
    assert uri_parser.parse_uri(dsn)["nodelist"] == [("::1", 27017)]


def test_client_options_pass_credentials_as_arguments() -> None:
    """Credentials go in as keyword arguments with their auth database; anonymous has none."""
    options = cmd.client_options(Endpoint("127.0.0.1", 5000, "acme"), "u", "p@:", "acme", 2.0)
    assert options["username"] == "u" and options["password"] == "p@:"
    assert options["authSource"] == "acme" and options["authMechanism"] == "SCRAM-SHA-256"
    assert options["directConnection"] is True and options["serverSelectionTimeoutMS"] == 2000
    anonymous = cmd.client_options(Endpoint("127.0.0.1", 5000, "acme"), None, None, "admin", 1)
    assert "username" not in anonymous and "password" not in anonymous
    assert cmd.client_options(Endpoint("::1", 5000, "acme"), None, None, "admin", 1)["host"] \
        == "[::1]"


def test_engine_is_registered_with_its_transient_errors() -> None:
    """get_engine(mongodb) is the MongoEngine; connection failures are retried."""
    engine = get_engine(Engine.MONGODB)
    assert isinstance(engine, MongoEngine)
    assert engine.placement is Placement.CONTAINER
    assert engine.roles == ("owner", "app", "readonly")
    assert issubclass(ConnectionFailure, engine.transient_errors)
    assert engine.database_name("acme-corp") == "acme_corp"


# ================================================================= backups


def test_tool_config_keeps_the_password_off_the_command_line() -> None:
    """mongodump/mongorestore read the root password from a YAML file, never from argv."""
    assert cmd.tool_config('pa"ss') == 'password: "pa\\"ss"\n'
    dump = cmd.dump_argv("acme", "root", "/staged/c.yaml")
    restore = cmd.restore_argv("acme", "root", "/staged/c.yaml")
    assert dump == ["mongodump", "--config=/staged/c.yaml", "--host=127.0.0.1", "--port=27017",
                    "--username=root", "--authenticationDatabase=admin", "--db=acme",
                    "--archive", "--gzip"]
    assert restore[0] == "mongorestore" and restore[1:6] == dump[1:6]
    assert "--nsInclude=acme.*" in restore and "--archive" in restore
    assert not any("password" in a.lower() for a in dump + restore)


def _archive(
    collections: dict[str, int], *, db: str = "acme", eof: bool = True,
    views: tuple[str, ...] = (), extra: bytes = b"",
) -> bytes:
    """A mongodump archive built to the published format (mongo-tools common/archive/spec.md)."""
    term = b"\xff\xff\xff\xff"
    out = ARCHIVE_MAGIC + bson.encode({"concurrent_collections": 4, "version": "0.1",
                                       "server_version": "7.0.14", "tool_version": "100.9.4"})
    for name in [*collections, *views]:
        out += bson.encode({"db": db, "collection": name, "metadata": "{}", "size": 0,
                            "type": "view" if name in views else "collection"})
    out += term
    for name, count in collections.items():
        # Split the documents across two segments, as parallel dumps interleave them.
        for part in (range(count // 2), range(count // 2, count)):
            if len(part):
                out += bson.encode({"db": db, "collection": name, "EOF": False, "CRC": Int64(0)})
                out += b"".join(bson.encode({"_id": i, "n": "x" * i}) for i in part) + term
    for name in [*collections, *views]:
        if eof:
            out += bson.encode({"db": db, "collection": name, "EOF": True, "CRC": Int64(0)})
            out += term
    return out + extra


def _write_gz(tmp_path: Path, raw: bytes, name: str = "acme.dump") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw))
    return path


def test_a_complete_archive_is_read_back_with_counts(tmp_path: Path) -> None:
    """Prelude and every block are read; documents are counted per collection; views skipped."""
    path = _write_gz(tmp_path, _archive({"users": 5, "schema_info": 1, "empty": 0},
                                        views=("active_users",)))
    summary = verified_backup(path, "acme")
    assert summary.server_version == "7.0.14" and summary.tool_version == "100.9.4"
    assert summary.counts("acme") == {"empty": 0, "schema_info": 1, "users": 5}
    assert summary.problems("acme") == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_archive({"users": 2}, db="other"), "does not contain database acme"),
        (_archive({"users": 2}, eof=False), "truncated: no end marker for acme.users"),
        (_archive({"users": 3})[:-30], "truncated"),
        (b"\x00\x00\x00\x00" + _archive({"users": 1})[4:], "bad magic number"),
        (_archive({"users": 1}, extra=b"\x03\x00"), "truncated"),
    ],
)
def test_a_broken_archive_is_refused(tmp_path: Path, raw: bytes, expected: str) -> None:
    """Wrong database, missing end markers, truncation and a bad magic are each refused."""
    path = _write_gz(tmp_path, raw)
    with pytest.raises(BackupError, match=re.escape(expected)):
        verified_backup(path, "acme")


def test_an_archive_holding_another_database_too_is_refused(tmp_path: Path) -> None:
    """A backup of the tenant must hold the tenant's database and nothing else."""
    raw = _archive({"users": 1})
    mixed = raw[:4] + raw[4:].replace(b"\xff\xff\xff\xff", bson.encode(
        {"db": "admin", "collection": "system.users", "metadata": "{}", "size": 0}
    ) + b"\xff\xff\xff\xff", 1)
    with pytest.raises(BackupError, match=r"other databases \['admin'\]"):
        verified_backup(_write_gz(tmp_path, mixed), "acme")


def test_a_file_that_is_not_gzip_is_refused(tmp_path: Path) -> None:
    """The gzip magic is checked before anything else; a corrupt gzip stream is refused too."""
    plain = tmp_path / "plain.dump"
    plain.write_bytes(_archive({"users": 1}))
    with pytest.raises(BackupError, match="not gzip-compressed"):
        inspect_backup(plain)
    corrupt = tmp_path / "corrupt.dump"
    corrupt.write_bytes(gzip.compress(_archive({"users": 1}))[:-12] + b"garbage!" * 2)
    with pytest.raises(BackupError):
        inspect_backup(corrupt)


def test_read_archive_works_on_any_binary_stream() -> None:
    """The reader takes an uncompressed stream too (what gzip hands it)."""
    summary = read_archive(io.BytesIO(_archive({"a": 4, "b": 1})))
    assert summary.counts("acme") == {"a": 4, "b": 1}
    assert summary.finished == {("acme", "a"), ("acme", "b")}


# ================================================================ warnings


def test_design_warnings_flag_unindexed_references_missing_validators_and_secrets() -> None:
    """A reference without a leading index, a validator-less collection, a password field."""
    schema = {"bsonType": "object", "properties": {
        "_id": {"bsonType": "objectId"}, "user_id": {"bsonType": ["objectId", "null"]},
        "org_id": {"bsonType": "objectId"}, "api_key": {"bsonType": "string"},
        "token_hash": {"bsonType": "string"}, "label_id": {"bsonType": "string"}}}
    collections = [
        {"name": "things", "type": "collection", "options": {"validator": {"$jsonSchema":
                                                                           schema}}},
        {"name": "loose", "type": "collection", "options": {}},
        {"name": "a_view", "type": "view", "options": {}},
        {"name": "system.views", "type": "collection", "options": {}},
    ]
    indexes = {"things": [{"key": {"_id": 1}}, {"key": {"org_id": 1, "x": 1}},
                          {"key": {"x": 1, "user_id": 1}}]}
    assert cmd.design_warnings(collections, indexes) == [
        "collection loose has no $jsonSchema validator",
        "reference things.user_id has no index",
        "field things.api_key looks like a plaintext secret",
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_templates_have_no_design_warnings(path: Path) -> None:
    """Run the warnings over what the shipped templates would create: none."""
    parsed = parse_mongo_template(path.read_text())
    collections = [{"name": c.name, "type": "collection",
                    "options": cmd.create_collection_command(c)} for c in parsed.collections]
    indexes = {c.name: [{"key": {"_id": 1}}, *[{"key": dict(i.key)} for i in c.indexes]]
               for c in parsed.collections}
    assert cmd.design_warnings(collections, indexes) == []


# ====================================================== the thin layer, faked


@dataclass
class FakeDatabase:
    """Records commands and answers them the way a server would, for the engine's glue."""

    name: str
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema_info: list[dict[str, Any]] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)
    fail_on: str | None = None
    write_error_on: str | None = None

    async def command(self, command: dict[str, Any]) -> dict[str, Any]:
        verb = next(iter(command))
        self.sent.append(command)
        if verb == self.fail_on:
            raise OperationFailure("refused", 2, {"codeName": "BadValue", "errmsg": "refused"})
        if verb == "create":
            self.collections[command["create"]] = {
                "name": command["create"], "type": "collection",
                "options": {k: v for k, v in command.items() if k != "create"}}
        elif verb == "collMod":
            self.collections[command["collMod"]]["options"].update(
                {k: v for k, v in command.items() if k != "collMod"})
        elif verb == "insert" and command["insert"] == "schema_info":
            self.schema_info.extend(command["documents"])
        elif verb == "rolesInfo":
            return {"ok": 1, "roles": [{"role": r, "db": self.name} for r in self.roles]}
        elif verb == "usersInfo":
            return {"ok": 1, "users": [{"user": u, "db": self.name} for u in self.users]}
        elif verb == "createRole":
            self.roles.add(command["createRole"])
        elif verb == "createUser":
            self.users.add(command["createUser"])
        if verb == self.write_error_on:
            return {"ok": 1, "writeErrors": [{"code": 121, "codeName": "DocumentValidationFailure",
                                              "errmsg": "Document failed validation"}]}
        return {"ok": 1}

    async def list_collections(self) -> FakeCursor:
        return FakeCursor(list(self.collections.values()))

    def __getitem__(self, collection: str) -> FakeCollection:
        return FakeCollection(self, collection)


@dataclass
class FakeCursor:
    """An already-fetched cursor."""

    docs: list[dict[str, Any]]

    async def to_list(self) -> list[dict[str, Any]]:
        return self.docs


@dataclass
class FakeCollection:
    """Just enough of a collection for ``apply_templates``' schema_info read."""

    db: FakeDatabase
    name: str

    def find(self, _filter: dict[str, Any], _projection: dict[str, Any]) -> FakeCursor:
        assert self.name == "schema_info"
        return FakeCursor([dict(d) for d in self.db.schema_info])


class FakeClient:
    """A client whose only database is the fake one."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    def __getitem__(self, name: str) -> FakeDatabase:
        assert name == self.db.name
        return self.db


def _faked(monkeypatch: pytest.MonkeyPatch, engine: MongoEngine, db: FakeDatabase) -> None:
    @asynccontextmanager
    async def as_root(_target: TenantTarget, timeout_s: float = 5.0) -> AsyncIterator[Any]:
        yield FakeClient(db)

    monkeypatch.setattr(engine, "_as_root", as_root)


def _resolved(version: str = "v1.1", industry: Industry = Industry.FINANCE) -> Any:
    return Catalog(REPO / "templates", REPO / "industry_templates").resolve(
        "mongodb", version, industry
    )


async def test_apply_templates_sends_root_then_overlay_and_records_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fresh database: each collection is created, indexed, seeded; schema_info gets 2 records."""
    engine, db = MongoEngine(), FakeDatabase("acme")
    _faked(monkeypatch, engine, db)
    resolved = _resolved()
    await engine.apply_templates(_target(), resolved)
    root = parse_mongo_template(resolved.root.read())
    overlay = parse_mongo_template(resolved.files[1].read())
    creates = [c["create"] for c in db.sent if "create" in c]
    assert creates == [*root.names, *overlay.names]
    inserts = [c for c in db.sent if "insert" in c]
    assert [(d["kind"], d["name"], d["checksum"]) for c in inserts for d in c["documents"]] == [
        ("root", "mongodb", resolved.root.checksum),
        ("overlay", "finance", resolved.files[1].checksum),
    ]
    # the root's record comes after all of the root's collections, before the overlay's
    first_overlay = next(i for i, c in enumerate(db.sent) if c.get("create") == "accounts")
    assert db.sent.index(inserts[0]) < first_overlay
    seeded = {c["update"]: len(c["updates"]) for c in db.sent if "update" in c}
    assert seeded == {"system_settings": 6, "accounts": 5, "transactions": 7}
    assert set(db.collections) == {*root.names, *overlay.names}


async def test_apply_templates_again_sends_nothing_new(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redelivered request finds both files recorded and only reads schema_info."""
    engine, db = MongoEngine(), FakeDatabase("acme")
    _faked(monkeypatch, engine, db)
    await engine.apply_templates(_target(), _resolved())
    db.sent.clear()
    await engine.apply_templates(_target(), _resolved())
    assert db.sent == []


async def test_apply_templates_resumes_after_a_crash_mid_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Collections created before a crash are not created again; indexes and seeds are replayed."""
    engine, db = MongoEngine(), FakeDatabase("acme")
    _faked(monkeypatch, engine, db)
    resolved = _resolved(industry=Industry.NONE)
    root = parse_mongo_template(resolved.root.read())
    for collection in root.collections[:3]:
        await db.command(cmd.create_collection_command(collection))
    db.sent.clear()
    await engine.apply_templates(_target(), resolved)
    creates = [c["create"] for c in db.sent if "create" in c]
    assert creates == list(root.names[3:])
    assert not any("collMod" in c for c in db.sent)
    indexed = [c["createIndexes"] for c in db.sent if "createIndexes" in c]
    assert indexed[:3] == list(root.names[:3])
    assert len(db.schema_info) == 1


async def test_apply_templates_refuses_a_database_with_another_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """schema_info recording another version: TemplateError, and nothing is sent."""
    engine, db = MongoEngine(), FakeDatabase("acme")
    db.schema_info.append({"kind": "root", "name": "mongodb", "version": "v1.0",
                           "checksum": "f" * 64})
    _faked(monkeypatch, engine, db)
    with pytest.raises(TemplateError, match="does not match"):
        await engine.apply_templates(_target(), _resolved())
    assert db.sent == []


async def test_a_write_error_in_a_seed_fails_the_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An `update` answered ok:1 with writeErrors is a TemplateError naming file and collection."""
    engine, db = MongoEngine(), FakeDatabase("acme", write_error_on="update")
    _faked(monkeypatch, engine, db)
    with pytest.raises(TemplateError, match=r"root template root\.json .*update system_settings"
                       r" failed: DocumentValidationFailure"):
        await engine.apply_templates(_target(), _resolved())
    assert db.schema_info == []  # the file is not recorded as applied


async def test_apply_rbac_creates_then_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """First run creates three roles and three users; the second only updates them."""
    engine, db = MongoEngine(), FakeDatabase("acme")
    _faked(monkeypatch, engine, db)
    await engine.apply_rbac(_target(), 40)
    verbs = [next(iter(c)) for c in db.sent if next(iter(c)) not in ("rolesInfo", "usersInfo")]
    assert verbs == ["createRole"] * 3 + ["createUser"] * 3
    db.sent.clear()
    await engine.apply_rbac(_target(), 40)
    verbs = [next(iter(c)) for c in db.sent if next(iter(c)) not in ("rolesInfo", "usersInfo")]
    assert verbs == ["updateRole"] * 3 + ["updateUser"] * 3


async def test_a_refused_rbac_command_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The error names the command and user, not the password it carried."""
    engine, db = MongoEngine(), FakeDatabase("acme", fail_on="createUser")
    _faked(monkeypatch, engine, db)
    with pytest.raises(EngineError) as info:
        await engine.apply_rbac(_target(), 40)
    assert "createUser acme_owner" in str(info.value)
    assert "owner-secret" not in str(info.value)


# ============================================== isolation checks, faked answers


class ScriptedServer:
    """Answers each (database, command) with success or a refusal code, recording the asks."""

    def __init__(self, refusals: dict[tuple[str, str], int], replies: dict[str, Any]) -> None:
        self.refusals = refusals
        self.replies = replies
        self.asked: list[tuple[str, str]] = []

    def __getitem__(self, database: str) -> ScriptedDatabase:
        return ScriptedDatabase(self, database)

    @property
    def admin(self) -> ScriptedDatabase:
        return ScriptedDatabase(self, "admin")


@dataclass
class ScriptedDatabase:
    """One database of a ``ScriptedServer``."""

    server: ScriptedServer
    name: str

    async def command(self, command: dict[str, Any]) -> dict[str, Any]:
        verb = next(iter(command))
        self.server.asked.append((self.name, verb))
        code = self.server.refusals.get((self.name, verb))
        if code is not None:
            raise OperationFailure("refused", code, {"codeName": f"Code{code}",
                                                     "errmsg": "refused"})
        reply = self.server.replies.get(verb, {"ok": 1})
        return cast(dict[str, Any], reply(self.name, command) if callable(reply) else reply)


def _scripted(monkeypatch: pytest.MonkeyPatch, engine: MongoEngine, server: ScriptedServer,
              ) -> None:
    @asynccontextmanager
    async def connect(*_args: Any, **_kwargs: Any) -> AsyncIterator[Any]:
        yield server

    monkeypatch.setattr(engine, "_as_role", connect)
    monkeypatch.setattr(engine, "_as_root", connect)


APP_ATTEMPTS = [("admin", "find"), ("admin", "listCollections"), ("local", "find"),
                ("cloner_escalation_probe", "insert"), ("acme", "createUser"),
                ("acme", "createRole"), ("acme", "grantRolesToUser"), ("admin", "getCmdLineOpts")]
OWN_DATABASE_ONLY = {"listDatabases": {"ok": 1, "databases": [{"name": "acme"}]}}


async def test_app_escalation_check_passes_when_every_attempt_is_unauthorized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every attempt refused with Unauthorized (13) and only its own database visible: pass."""
    engine = MongoEngine()
    server = ScriptedServer(dict.fromkeys(APP_ATTEMPTS, 13), OWN_DATABASE_ONLY)
    _scripted(monkeypatch, engine, server)
    result = await engine._check_app_cannot_escalate(_target())
    assert result.passed, result.detail
    assert set(APP_ATTEMPTS) <= set(server.asked)


@pytest.mark.parametrize(
    ("refusals", "visible", "expected"),
    [
        ({k: 13 for k in APP_ATTEMPTS if k != ("acme", "createUser")}, ["acme"], "create user"),
        (dict.fromkeys(APP_ATTEMPTS, 13) | {("admin", "find"): 26}, ["acme"],
         "read admin (Code26)"),
        (dict.fromkeys(APP_ATTEMPTS, 13), ["acme", "other_tenant"], "sees databases"),
    ],
)
async def test_app_escalation_check_fails_on_anything_but_a_refusal(
    monkeypatch: pytest.MonkeyPatch, refusals: dict[tuple[str, str], int], visible: list[str],
    expected: str,
) -> None:
    """An attempt that succeeds, fails otherwise, or a foreign database in view fails the check."""
    engine = MongoEngine()
    listing = {"ok": 1, "databases": [{"name": n} for n in visible]}
    _scripted(monkeypatch, engine, ScriptedServer(refusals, {"listDatabases": listing}))
    result = await engine._check_app_cannot_escalate(_target())
    assert not result.passed
    assert expected in result.detail


async def test_owner_check_accepts_bad_value_only_for_the_foreign_role(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A role reaching admin may be refused as BadValue; grant-root as BadValue is not enough."""
    engine = MongoEngine()
    owner_attempts = [("admin", "find"), ("cloner_escalation_probe", "insert"),
                      ("acme", "grantRolesToUser"), ("acme", "createRole"),
                      ("admin", "getCmdLineOpts")]
    refusals = dict.fromkeys(owner_attempts, 13) | {("acme", "createRole"): 2}
    _scripted(monkeypatch, engine, ScriptedServer(refusals, {}))
    assert (await engine._check_owner_confined(_target())).passed
    refusals[("acme", "grantRolesToUser")] = 2
    _scripted(monkeypatch, engine, ScriptedServer(refusals, {}))
    result = await engine._check_owner_confined(_target())
    assert not result.passed and "grant itself root" in result.detail


async def test_roles_check_reads_every_user_with_privileges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check lists the users, asks for their privileges by name, and judges the answer."""
    engine = MongoEngine()
    asked: list[dict[str, Any]] = []

    def users_info(database: str, command: dict[str, Any]) -> dict[str, Any]:
        asked.append(command)
        if database == "admin":
            return {"ok": 1, "users": ADMINS}
        if command["usersInfo"] == 1:
            return {"ok": 1, "users": [{"user": u["user"], "db": "acme"} for u in CONFINED]}
        return {"ok": 1, "users": CONFINED}

    _scripted(monkeypatch, engine, ScriptedServer({}, {"usersInfo": users_info}))
    result = await engine._check_roles_confined(_target())
    assert result.passed, result.detail
    detailed = [c for c in asked if c.get("showPrivileges")]
    assert detailed == [{"usersInfo": [{"user": u, "db": "acme"} for u in EXPECTED],
                         "showPrivileges": True}]


# ====================================================== no server: failures


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_wait_ready_gives_up_with_not_ready_when_nothing_answers() -> None:
    """Against a closed port, wait_ready raises NotReady (transient) naming the endpoint."""
    port = _closed_port()
    with pytest.raises(NotReady, match=rf"mongodb at 127\.0\.0\.1:{port} did not answer") as info:
        await MongoEngine().wait_ready(_target(port=port), timeout_s=1.5)
    assert info.value.transient
    assert "secret" not in str(info.value)


async def test_wait_ready_treats_a_port_that_drops_connections_as_not_listening() -> None:
    """Docker's port proxy accepts then drops connections while mongod starts: not ready yet.

    Such an endpoint never reaches pymongo (whose async monitor leaks a socket
    when its client is closed mid-connect; ``filterwarnings = error`` would
    catch that ResourceWarning here).
    """
    async def drop(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NotReady, match="connection closed at once"):
            await MongoEngine().wait_ready(_target(port=port), timeout_s=1.0)
    finally:
        server.close()
        await server.wait_closed()


async def test_probe_raises_not_ready_when_nothing_answers() -> None:
    """The health probe fails with NotReady naming the app user, never its password."""
    port = _closed_port()
    with pytest.raises(NotReady, match="acme_app") as info:
        await MongoEngine().probe(_target(port=port), timeout_s=1.0)
    assert "app-secret" not in str(info.value)


# =========================================================== catalog, images


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """A catalog over private copies of the shipped template directories."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copytree(REPO / "industry_templates", tmp_path / "industry_templates")
    return Catalog(tmp_path / "templates", tmp_path / "industry_templates")


def test_catalog_resolves_mongodb_json_templates(catalog: Catalog) -> None:
    """mongodb has v1.0 and v1.1 (root.json) and a .json overlay per industry, checksummed."""
    assert catalog.versions("mongodb") == ["v1.0", "v1.1"]
    assert catalog.overlays_for("mongodb") == ["finance", "healthcare", "technology"]
    resolved = catalog.resolve("mongodb", "v1.0", Industry.HEALTHCARE)
    assert resolved.root.path.name == "root.json"
    assert resolved.overlay is not None and resolved.overlay.path.name == "mongodb.json"
    assert resolved.root.checksum == hashlib.sha256(resolved.root.path.read_bytes()).hexdigest()


def test_catalog_refuses_a_missing_mongodb_overlay_clearly(catalog: Catalog) -> None:
    """An industry without a mongodb overlay is TemplateNotFound naming industry and engine."""
    manifest = catalog.industry_dir / "industries.json"
    data = json.loads(manifest.read_text())
    del data["industries"]["finance"]["files"]["mongodb.json"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(TemplateNotFound, match="'finance' has no overlay for engine mongodb"):
        catalog.resolve("mongodb", "v1.1", Industry.FINANCE)
    assert catalog.overlays_for("mongodb") == ["healthcare", "technology"]


def test_an_edited_mongodb_template_fails_its_checksum(catalog: Catalog) -> None:
    """Changing root.json under a released version is refused, as for SQL templates."""
    path = catalog.templates_dir / "mongodb" / "v1.0" / "root.json"
    path.write_text(path.read_text() + " ")
    with pytest.raises(TemplateError, match="checksum"):
        catalog.resolve("mongodb", "v1.0", Industry.NONE)


class StubImages:
    """Image presence and pull for ``ensure_image`` (unit test of its decision only)."""

    def __init__(self, present: bool) -> None:
        self.present = present
        self.pulls: list[str] = []

    async def image_exists(self, _image: str) -> bool:
        return self.present

    async def pull(self, image: str, _timeout_s: float) -> None:
        self.pulls.append(image)
        raise ImageError(f"cannot pull {image}: no registry")


async def test_images_ensure_mongodb_fails_with_a_clear_hint(tmp_path: Path) -> None:
    """Absent and unpullable: a one-line ImageError naming CLONER_MONGO_IMAGE and docker load."""
    stub = StubImages(present=False)
    with pytest.raises(ImageError) as info:
        await ensure_image(cast(DockerRuntime, stub), Engine.MONGODB, "mongo:7",
                           pull_timeout_s=1, work_dir=tmp_path)
    message = info.value.message
    assert "\n" not in str(info.value)
    assert "no offline recipe for mongodb" in message
    assert "CLONER_MONGO_IMAGE" in message and "docker load" in message
    assert stub.pulls == ["mongo:7"]
    assert NO_OFFLINE_RECIPE[Engine.MONGODB] == "CLONER_MONGO_IMAGE"


async def test_images_ensure_without_engine_skips_mongodb_with_a_note(tmp_path: Path) -> None:
    """With skip_unbuildable the outcome is `skipped` with the same note, not an error."""
    outcome = await ensure_image(cast(DockerRuntime, StubImages(present=False)), Engine.MONGODB,
                                 "mongo:7", pull_timeout_s=1, work_dir=tmp_path,
                                 skip_unbuildable=True)
    assert outcome.action == "skipped"
    assert outcome.note is not None and "CLONER_MONGO_IMAGE" in outcome.note
    present = await ensure_image(cast(DockerRuntime, StubImages(present=True)), Engine.MONGODB,
                                 "mongo:7", pull_timeout_s=1, work_dir=tmp_path)
    assert (present.action, present.note) == ("present", None)
