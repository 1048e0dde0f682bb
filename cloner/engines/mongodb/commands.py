"""MongoDB command documents and checks as pure functions: built here, sent by ``engine``.

Nothing in this module talks to a server, so every command cloner sends and
every judgement it makes on a server's answer is unit-tested without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from cloner.catalog import TemplateFile
from cloner.catalog.mongo_template import NOW, MongoCollection, MongoTemplate
from cloner.domain import Credentials, Endpoint
from cloner.engines.checks import looks_like_plaintext_secret
from cloner.errors import TemplateError
from cloner.secrets import TENANT_ROLES

Document = dict[str, Any]

MONGO_PORT = 27017
ADMIN_DB = "admin"
SCHEMA_INFO = "schema_info"
SCRAM = "SCRAM-SHA-256"

#: The built-in role each tenant role inherits, on the tenant database only.
BUILTIN_ROLES = {"owner": "dbOwner", "app": "readWrite", "readonly": "read"}
#: The custom role (in the tenant database) that carries it.
CUSTOM_ROLES = {role: f"cloner_{role}" for role in TENANT_ROLES}

# Server error codes (src/mongo/base/error_codes.yml).
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18
BAD_VALUE = 2


# ------------------------------------------------------ connection strings


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def mongo_uri(endpoint: Endpoint, username: str, password: str, database: str) -> str:
    """``mongodb://user:password@host:port/db?authSource=db``, user and password escaped."""
    return (
        f"mongodb://{quote(username, safe='')}:{quote(password, safe='')}"
        f"@{_host(str(endpoint.host))}:{endpoint.port}/{quote(database, safe='')}"
        f"?authSource={quote(database, safe='')}"
    )


def client_options(
    endpoint: Endpoint, username: str | None, password: str | None, auth_source: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Keyword arguments of ``AsyncMongoClient`` for one short-lived, direct connection.

    Credentials go in as arguments, not in a URI, so no escaping can go wrong.
    """
    timeout_ms = max(int(timeout_s * 1000), 100)
    options: dict[str, Any] = {
        "host": _host(str(endpoint.host)), "port": int(endpoint.port or MONGO_PORT),
        "directConnection": True, "appname": "cloner",
        "serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms,
        "socketTimeoutMS": max(timeout_ms, 30_000), "maxPoolSize": 4,
        "retryWrites": False, "retryReads": False, "tz_aware": True,
        "uuidRepresentation": "standard",
        # Short-lived clients: polling needs no extra streaming/RTT monitor connections.
        "serverMonitoringMode": "poll",
    }
    if username is not None:
        options.update(username=username, password=password, authSource=auth_source,
                       authMechanism=SCRAM)
    return options


# ---------------------------------------------------------------- templates


def check_disjoint(templates: Sequence[tuple[TemplateFile, MongoTemplate]]) -> None:
    """An overlay may add collections, never redefine one of the root's."""
    owner: dict[str, str] = {}
    for template, parsed in templates:
        for name in parsed.names:
            if name in owner:
                raise TemplateError(
                    f"{template.kind} {template.name} redefines collection {name!r} "
                    f"of {owner[name]}"
                )
            owner[name] = f"{template.kind} {template.name}"


def pending_templates(
    recorded: Iterable[Mapping[str, Any]], files: Sequence[TemplateFile], database: str,
) -> list[TemplateFile]:
    """Files still to apply, given the ``schema_info`` documents already recorded.

    A recorded file with the same checksum is done; with another checksum, or a
    recorded file this request does not ask for, the database holds a different
    schema and nothing is touched.
    """
    wanted = {(f.kind, f.name, f.version): f for f in files}
    done: set[tuple[str, str, str]] = set()
    for doc in recorded:
        key = (str(doc.get("kind")), str(doc.get("name")), str(doc.get("version")))
        template = wanted.get(key)
        if template is None or doc.get("checksum") != template.checksum:
            raise TemplateError(
                f"database {database} already has a schema that does not match the "
                f"requested templates ({key[0]} {key[1]} {key[2]} is recorded with "
                f"checksum {str(doc.get('checksum'))[:12]}…)"
            )
        done.add(key)
    return [f for key, f in wanted.items() if key not in done]


def create_collection_command(collection: MongoCollection) -> Document:
    """``create`` with the ``$jsonSchema`` validator, rejecting invalid documents."""
    return {
        "create": collection.name,
        "validator": {"$jsonSchema": dict(collection.schema)},
        "validationLevel": "strict",
        "validationAction": "error",
    }


def coll_mod_command(collection: MongoCollection) -> Document:
    """``collMod`` setting the validator of an existing collection (a resumed apply)."""
    return {
        "collMod": collection.name,
        "validator": {"$jsonSchema": dict(collection.schema)},
        "validationLevel": "strict",
        "validationAction": "error",
    }


def collection_commands(
    collection: MongoCollection, existing: Mapping[str, Any] | None
) -> list[Document]:
    """Create the collection, or bring an existing one's validator in line; nothing if equal.

    ``existing`` is the collection's ``listCollections`` entry, or None. Only a
    resumed apply finds one (``check_disjoint`` and ``pending_templates`` rule
    out every other way a template's collection can already exist).
    """
    if existing is None:
        return [create_collection_command(collection)]
    options = existing.get("options") or {}
    wanted = create_collection_command(collection)
    if (options.get("validator") == wanted["validator"]
            and options.get("validationLevel", "strict") == "strict"
            and options.get("validationAction", "error") == "error"):
        return []
    return [coll_mod_command(collection)]


def create_indexes_command(collection: MongoCollection) -> Document | None:
    """``createIndexes`` for every index of the collection (idempotent for equal specs)."""
    if not collection.indexes:
        return None
    indexes = []
    for index in collection.indexes:
        spec: Document = {"key": dict(index.key), "name": index.name}
        if index.unique:
            spec["unique"] = True
        if index.partial_filter is not None:
            spec["partialFilterExpression"] = dict(index.partial_filter)
        indexes.append(spec)
    return {"createIndexes": collection.name, "indexes": indexes}


def seed_command(collection: MongoCollection) -> Document | None:
    """One ``update`` upserting every seed document by its ``_id``.

    A pipeline update so ``"$$NOW"`` becomes the server's clock; every other
    value is wrapped in ``$literal`` so a string starting with ``$`` stays data.
    Replaying it (a resumed apply) rewrites the same documents.
    """
    if not collection.documents:
        return None
    updates = []
    for document in collection.documents:
        replacement = {
            key: ("$$NOW" if value == NOW else {"$literal": value})
            for key, value in document.items()
        }
        updates.append({
            "q": {"_id": document["_id"]},
            "u": [{"$replaceWith": replacement}],
            "upsert": True,
        })
    return {"update": collection.name, "updates": updates, "ordered": True}


def schema_info_command(template: TemplateFile, duration_ms: int, applied_at: datetime) -> Document:
    """``insert`` of the ``schema_info`` document recording one applied file."""
    return {
        "insert": SCHEMA_INFO,
        "documents": [{
            "kind": template.kind, "name": template.name, "version": template.version,
            "checksum": template.checksum, "applied_at": applied_at,
            "duration_ms": max(int(duration_ms), 0),
        }],
        "ordered": True,
    }


def command_errors(reply: Mapping[str, Any]) -> list[str]:
    """Write errors a reply carries although ``ok`` is 1 (``insert``/``update``)."""
    problems = [
        f"{e.get('codeName', e.get('code'))}: {e.get('errmsg', '')}"[:300]
        for e in reply.get("writeErrors", []) or []
    ]
    if concern := reply.get("writeConcernError"):
        problems.append(f"write concern: {concern.get('errmsg', concern)}")
    return problems


# --------------------------------------------------------------------- rbac


def rotate_root_command(username: str, password: str) -> Document:
    """``updateUser`` on ``admin``: the root user's new password, SCRAM-SHA-256 only."""
    return {"updateUser": username, "pwd": password, "mechanisms": [SCRAM]}


def role_command(database: str, role: str, exists: bool) -> Document:
    """``createRole`` / ``updateRole``: a tenant role inheriting one built-in role of ``database``.

    Roles defined outside ``admin`` can only hold privileges on their own
    database and inherit only from roles of that database: the server itself
    keeps them confined.
    """
    verb = "updateRole" if exists else "createRole"
    return {
        verb: CUSTOM_ROLES[role],
        "privileges": [],
        "roles": [{"role": BUILTIN_ROLES[role], "db": database}],
    }


def user_command(database: str, role: str, username: str, password: str, exists: bool) -> Document:
    """``createUser`` / ``updateUser`` in the tenant database with exactly its custom role."""
    verb = "updateUser" if exists else "createUser"
    return {
        verb: username,
        "pwd": password,
        "roles": [{"role": CUSTOM_ROLES[role], "db": database}],
        "mechanisms": [SCRAM],
    }


def rbac_commands(
    database: str, credentials: Credentials, existing_roles: Iterable[str],
    existing_users: Iterable[str],
) -> list[Document]:
    """Roles first (users refer to them), then users: create what is missing, update the rest."""
    roles_present = set(existing_roles)
    users_present = set(existing_users)
    commands = [
        role_command(database, role, CUSTOM_ROLES[role] in roles_present) for role in TENANT_ROLES
    ]
    for role in TENANT_ROLES:
        cred = credentials.roles[role]
        commands.append(
            user_command(database, role, cred.username, cred.password,
                         cred.username in users_present)
        )
    return commands


def confinement_problems(
    database: str, expected: Mapping[str, str], tenant_users: Sequence[Mapping[str, Any]],
    admin_users: Sequence[Mapping[str, Any]], root_username: str,
) -> list[str]:
    """What ``usersInfo`` shows that a confined tenant must not have.

    ``expected`` maps each tenant username to its custom role; each must exist
    with exactly that role. ``tenant_users`` is ``usersInfo`` with
    ``showPrivileges`` for every user of the tenant database (the owner may
    have added some: they are checked the same way), ``admin_users`` the plain
    ``usersInfo`` of ``admin``. Every role, inherited role and inherited
    privilege must be about the tenant database (never the cluster, every
    database, or ``anyResource``), and ``admin`` holds cloner's root user only.
    """
    problems = []
    by_name = {str(u.get("user")): u for u in tenant_users}
    for username, custom_role in expected.items():
        user = by_name.get(username)
        if user is None:
            problems.append(f"user {username} is missing from {database}")
            continue
        roles = [(r.get("role"), r.get("db")) for r in user.get("roles", [])]
        if roles != [(custom_role, database)]:
            problems.append(f"{username} holds roles {roles}, expected [{custom_role}@{database}]")
    for username, user in by_name.items():
        for role in [*user.get("roles", []), *user.get("inheritedRoles", [])]:
            if role.get("db") != database:
                problems.append(f"{username} holds {role.get('role')}@{role.get('db')}")
        for privilege in user.get("inheritedPrivileges", []):
            resource = privilege.get("resource", {})
            if resource.get("cluster") or resource.get("anyResource"):
                problems.append(f"{username} has a privilege on {resource}")
            elif resource.get("db") != database:
                where = resource.get("db") or "every database"
                problems.append(f"{username} has privileges on {where}")
    admins = sorted(str(u.get("user")) for u in admin_users)
    if admins != [root_username]:
        problems.append(f"admin holds users {admins}, expected only cloner's root user")
    return sorted(set(problems))


# ------------------------------------------------------------------ backups


def tool_config(password: str) -> str:
    """The YAML ``--config`` file of mongodump/mongorestore: the password, off the argv."""
    return f"password: {json.dumps(password)}\n"


def _tool_argv(tool: str, config_path: str, root_username: str) -> list[str]:
    return [
        tool, f"--config={config_path}", "--host=127.0.0.1", f"--port={MONGO_PORT}",
        f"--username={root_username}", f"--authenticationDatabase={ADMIN_DB}",
    ]


def dump_argv(database: str, root_username: str, config_path: str) -> list[str]:
    """``mongodump`` of the tenant database as one gzip archive on stdout."""
    return [*_tool_argv("mongodump", config_path, root_username),
            f"--db={database}", "--archive", "--gzip"]


def restore_argv(database: str, root_username: str, config_path: str) -> list[str]:
    """``mongorestore`` of an archive from stdin, limited to the tenant database."""
    return [*_tool_argv("mongorestore", config_path, root_username),
            "--archive", "--gzip", f"--nsInclude={database}.*", "--stopOnError",
            # The documents were in the database already; validators judged them then.
            "--bypassDocumentValidation"]


# ----------------------------------------------------------------- warnings


def design_warnings(
    collections: Sequence[Mapping[str, Any]], indexes: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[str]:
    """Collections without a validator, references without an index, secret-looking fields.

    ``collections`` are ``listCollections`` entries, ``indexes`` the
    ``listIndexes`` entries per collection name. A reference is a field named
    ``*_id`` whose ``$jsonSchema`` type is ``objectId``; it needs an index
    that starts with it, as a foreign key does in SQL.
    """
    warnings = []
    for entry in sorted(collections, key=lambda c: str(c.get("name"))):
        name = str(entry.get("name"))
        if name.startswith("system.") or entry.get("type", "collection") != "collection":
            continue
        validator = (entry.get("options") or {}).get("validator") or {}
        schema = validator.get("$jsonSchema")
        if not isinstance(schema, Mapping):
            warnings.append(f"collection {name} has no $jsonSchema validator")
            continue
        properties: Mapping[str, Any] = schema.get("properties") or {}
        leading = {
            next(iter(index.get("key", {})), None) for index in indexes.get(name, [])
        }
        for field_name, spec in properties.items():
            types = spec.get("bsonType") if isinstance(spec, Mapping) else None
            type_list = types if isinstance(types, list) else [types]
            if field_name.endswith("_id") and field_name != "_id" and "objectId" in type_list \
                    and field_name not in leading:
                warnings.append(f"reference {name}.{field_name} has no index")
            if looks_like_plaintext_secret(field_name):
                warnings.append(f"field {name}.{field_name} looks like a plaintext secret")
    return warnings
