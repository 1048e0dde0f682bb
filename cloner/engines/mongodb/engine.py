"""``MongoEngine``: connects with ``pymongo.AsyncMongoClient``, sends what ``commands`` builds."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import bson
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, ConnectionFailure, OperationFailure, PyMongoError

from cloner import constants
from cloner.backups import sha256_of
from cloner.catalog import ResolvedTemplates
from cloner.catalog.mongo_template import parse_mongo_template
from cloner.domain import (
    CheckResult,
    Credentials,
    Endpoint,
    Engine,
    RoleCredential,
    sql_identifier,
)
from cloner.engines.base import (
    BackupResult,
    ContainerDefaults,
    Neighbour,
    Placement,
    TenantTarget,
)
from cloner.engines.checks import (
    MAX_VERIFIER_ITERATIONS,
    NeighbourFinding,
    login_usernames,
    neighbours_refuse,
    scram_stored_key_matches,
    throwaway_password,
)
from cloner.engines.mongodb.archive import verified_backup
from cloner.engines.mongodb.commands import (
    ADMIN_DB,
    AUTHENTICATION_FAILED,
    BAD_VALUE,
    CUSTOM_ROLES,
    MONGO_PORT,
    SCHEMA_INFO,
    UNAUTHORIZED,
    Document,
    check_disjoint,
    client_options,
    collection_commands,
    command_errors,
    confinement_problems,
    create_indexes_command,
    design_warnings,
    dump_argv,
    mongo_uri,
    pending_templates,
    rbac_commands,
    restore_argv,
    rotate_root_command,
    schema_info_command,
    seed_command,
    tool_config,
    user_command,
)
from cloner.engines.pooling import PoolLike, PoolOptions
from cloner.errors import BackupError, ClonerError, EngineError, NotReady, TemplateError
from cloner.logging import get_logger
from cloner.runtime.base import ContainerSpec, Runtime
from cloner.secrets import TENANT_ROLES, write_private_file

log = get_logger(__name__)

Client = AsyncMongoClient[Document]
Database = AsyncDatabase[Document]

MONGO_UID_NUM = 999  # the official image's mongodb user
MONGO_UID = f"{MONGO_UID_NUM}:{MONGO_UID_NUM}"
DATA_DIR = "/data/db"
CONNECT_TIMEOUT_S = 5.0
#: Per readiness attempt: the server is local, and pymongo waits out the whole
#: server-selection timeout when nothing answers.
READY_ATTEMPT_TIMEOUT_S = 1.0
#: How long a fresh connection must stay open to count as a listening server (``_reachable``).
READY_SETTLE_S = 0.05
PROBE_COLLECTION = "system_settings"  # every root version ships it (catalog contract)
BACKUP_FORMAT = "mongodump-archive-gzip"


def _failure(exc: PyMongoError) -> str:
    if isinstance(exc, OperationFailure):
        name = (exc.details or {}).get("codeName", exc.code)
        message = (exc.details or {}).get("errmsg", str(exc))
        return f"{name}: {message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


async def _reachable(endpoint: Endpoint, timeout_s: float, settle_s: float = 0.0) -> None:
    """A plain TCP connect before any pymongo client: ``AutoReconnect`` when nothing listens.

    pymongo would otherwise wait out its whole server-selection timeout, and
    closing a client whose monitor is still connecting leaks that socket
    (pymongo's async monitor does not close it when cancelled mid-connect).
    With ``settle_s``, a connection the peer closes within that time counts
    as refused too: Docker's port proxy accepts and then drops connections
    while mongod is not listening yet, and a MongoDB server never closes a
    fresh idle connection.
    """
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    except (OSError, TimeoutError) as exc:
        raise AutoReconnect(f"{endpoint.host}:{endpoint.port}: {exc or 'timed out'}") from exc
    try:
        if settle_s > 0:
            try:
                async with asyncio.timeout(settle_s):
                    closed = await reader.read(1) == b""
            except TimeoutError:
                closed = False
            except OSError:
                closed = True
            if closed:
                raise AutoReconnect(
                    f"{endpoint.host}:{endpoint.port}: connection closed at once "
                    "(not listening yet)"
                )
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


#: Mechanisms where the client proves a hashed secret (SCRAM) or a certificate: no
#: ``PLAIN``, which has the client send its password as it is.
_HASHED_MECHANISMS = frozenset({"SCRAM-SHA-1", "SCRAM-SHA-256", "MONGODB-X509"})


def _refused(exc: BaseException, *codes: int) -> bool:
    return isinstance(exc, OperationFailure) and exc.code in (codes or (UNAUTHORIZED,))


class MongoEngine:
    """MongoDB tenants (official ``mongo`` image, 5.0 or later)."""

    engine = Engine.MONGODB
    placement = Placement.CONTAINER
    roles: tuple[str, ...] = TENANT_ROLES
    superuser = "root"
    hardening_level = 0  # unchanged since levels were introduced
    container_port = MONGO_PORT
    transient_errors: tuple[type[BaseException], ...] = (ConnectionFailure,)
    #: Unreachable server (``AutoReconnect``, server selection) or refused login.
    pool_connect_errors: tuple[type[BaseException], ...] = (PyMongoError,)

    def database_name(self, tenant_id: str) -> str:
        """``acme-corp`` → ``acme_corp`` (the same name the role usernames derive from)."""
        return sql_identifier(tenant_id)

    def container_spec(
        self, tenant_id: str, credentials: Credentials, labels: dict[str, str],
        defaults: ContainerDefaults,
    ) -> ContainerSpec:
        """Non-root, read-only root fs, no capabilities, no server-side JavaScript.

        The WiredTiger cache is a quarter of the container's memory limit:
        mongod's own default (at least 256 MB) would fill a small container on
        its own and get it OOM-killed.
        """
        cache_mib = max(defaults.memory_limit_bytes // (4 * 1024 * 1024), 32)
        return defaults.tenant_spec(
            tenant_id, labels, uid=MONGO_UID_NUM, port=self.container_port,
            volume_mount=DATA_DIR,
            env={
                "MONGO_INITDB_ROOT_USERNAME": credentials.superuser.username,
                "MONGO_INITDB_ROOT_PASSWORD": credentials.bootstrap_password,
            },
            command=(
                "mongod", "--auth", "--bind_ip_all", "--port", str(MONGO_PORT),
                "--maxConns", str(defaults.connection_limit * 3 + 10),
                "--wiredTigerEngineConfigString", f"cache_size={cache_mib}M",
                "--noscripting",
                "--setParameter", "enableLocalhostAuthBypass=false",
                "--setParameter", "diagnosticDataCollectionEnabled=false",
            ),
            # /data/configdb is a VOLUME of the image: a tmpfs keeps Docker from creating an
            # unlabelled anonymous volume per container (it is only used by config servers).
            private_dirs={"/data/configdb": "0700"},
        )

    # -------------------------------------------------------------- connecting

    @asynccontextmanager
    async def _client(
        self, endpoint: Endpoint, username: str | None, password: str | None,
        auth_source: str, timeout_s: float = CONNECT_TIMEOUT_S, *, settle_s: float = 0.0,
        vouch: TenantTarget | None = None,
    ) -> AsyncIterator[Client]:
        if vouch is not None:  # the endpoint must still be that tenant's before a secret goes
            await vouch.vouch()
        await _reachable(endpoint, timeout_s, settle_s)
        client: Client = AsyncMongoClient(
            **client_options(endpoint, username, password, auth_source, timeout_s)
        )
        try:
            yield client
        finally:
            await client.close()

    def _as_root(
        self, target: TenantTarget, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> AbstractAsyncContextManager[Client]:
        root = target.credentials.superuser
        return self._client(target.endpoint, root.username, root.password, ADMIN_DB, timeout_s,
                            vouch=target)

    def _as_role(
        self, target: TenantTarget, role: str, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> AbstractAsyncContextManager[Client]:
        cred = target.credentials.roles[role]
        return self._client(target.endpoint, cred.username, cred.password, target.database,
                            timeout_s, vouch=target)

    async def wait_ready(self, target: TenantTarget, timeout_s: float) -> None:
        """``ping`` as root with bounded backoff; rotate the bootstrap password on first contact.

        The final password is tried first: after a crash the rotation may
        already have happened.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        last_error: BaseException | None = None
        root = target.credentials.superuser
        while time.monotonic() < deadline:
            for password, bootstrap in ((root.password, False),
                                        (target.credentials.bootstrap_password, True)):
                budget = min(READY_ATTEMPT_TIMEOUT_S, max(deadline - time.monotonic(), 0.1))
                try:
                    async with self._client(target.endpoint, root.username, password, ADMIN_DB,
                                            budget, settle_s=READY_SETTLE_S,
                                            vouch=target) as client:
                        await client.admin.command("ping")
                        if bootstrap:
                            await client.admin.command(
                                rotate_root_command(root.username, root.password)
                            )
                            log.info("mongodb.bootstrap_password_rotated",
                                     tenant_id=target.tenant_id)
                        return
                except OperationFailure as exc:
                    last_error = exc
                    if exc.code == AUTHENTICATION_FAILED:
                        continue
                    break
                except (PyMongoError, NotReady) as exc:  # NotReady: endpoint not vouched for
                    last_error = exc
                    break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise NotReady(
            f"mongodb at {target.endpoint.host}:{target.endpoint.port} did not answer within "
            f"{timeout_s:.0f}s; last error: "
            f"{_failure(last_error) if isinstance(last_error, PyMongoError) else last_error}"
        )

    async def probe(self, target: TenantTarget, timeout_s: float) -> float:
        """Authenticate as the app role against the tenant database and ``ping``; seconds taken."""
        started = time.monotonic()
        app = target.credentials.roles["app"]
        try:
            async with asyncio.timeout(timeout_s), self._as_role(target, "app", timeout_s) as c:
                await c[target.database].command("ping")
        except (PyMongoError, TimeoutError) as exc:
            detail = _failure(exc) if isinstance(exc, PyMongoError) else "timed out"
            raise NotReady(
                f"mongodb at {target.endpoint.host}:{target.endpoint.port} failed the health "
                f"probe as {app.username}: {detail}"
            ) from exc
        return time.monotonic() - started

    @staticmethod
    async def _run(db: Database, command: Document, context: str) -> Document:
        """Send one command; a refusal or a write error is a ``TemplateError`` naming it."""
        verb = next(iter(command))
        try:
            reply: Document = await db.command(command)
        except OperationFailure as exc:
            raise TemplateError(
                f"{context}: {verb} {command[verb]} failed: {_failure(exc)}"
            ) from exc
        if errors := command_errors(reply):
            raise TemplateError(f"{context}: {verb} {command[verb]} failed: {errors[0]}")
        return reply

    # --------------------------------------------------------------- template

    async def apply_templates(self, target: TenantTarget, templates: ResolvedTemplates) -> None:
        """Root then overlay, each step idempotent; one ``schema_info`` document per file."""
        parsed = [
            (t, parse_mongo_template(t.read(), source=f"{t.kind} template {t.path.name}"))
            for t in templates.files
        ]
        check_disjoint(parsed)
        async with self._as_root(target) as client:
            db = client[target.database]
            recorded = await db[SCHEMA_INFO].find({}, {"_id": 0}).to_list()
            pending = pending_templates(recorded, templates.files, target.database)
            for template, model in parsed:
                if template not in pending:
                    continue
                started = time.monotonic()
                context = (f"{template.kind} template {template.path.name} "
                           f"({template.name} {template.version})")
                existing = {
                    str(c["name"]): c for c in await (await db.list_collections()).to_list()
                }
                for collection in model.collections:
                    commands = [
                        *collection_commands(collection, existing.get(collection.name)),
                        create_indexes_command(collection), seed_command(collection),
                    ]
                    for command in commands:
                        if command is not None:
                            await self._run(db, command, context)
                await self._run(db, schema_info_command(
                    template, int((time.monotonic() - started) * 1000), datetime.now(UTC),
                ), context)
                log.info("mongodb.template_applied", tenant_id=target.tenant_id,
                         kind=template.kind, name=template.name, version=template.version)

    # ------------------------------------------------------------------- rbac

    async def apply_rbac(
        self, target: TenantTarget, connection_limit: int,  # noqa: ARG002 - see below
    ) -> None:
        """Custom roles, then owner / app / readonly users, all in the tenant database.

        ``connection_limit`` has no per-user equivalent in MongoDB; the server's
        ``--maxConns`` (set from the same setting) caps connections instead.
        """
        async with self._as_root(target) as client:
            db = client[target.database]
            roles = await db.command({"rolesInfo": 1})
            users = await db.command({"usersInfo": 1})
            commands = rbac_commands(
                target.database, target.credentials,
                (str(r["role"]) for r in roles.get("roles", [])),
                (str(u["user"]) for u in users.get("users", [])),
            )
            for command in commands:
                verb = next(iter(command))
                try:
                    await db.command(command)
                except OperationFailure as exc:
                    # The command carries a password: name it, never print it.
                    raise EngineError(
                        f"rbac: {verb} {command[verb]} in {target.database} failed: "
                        f"{_failure(exc)}"
                    ) from exc

    # ---------------------------------------------------------------- rotation
    # Credential rotation (cloner.rotation): a second user with the same custom role
    # carries the new password; the old one is dropped once the grace period is over.

    async def create_login(
        self, target: TenantTarget, role: str, login: RoleCredential,
        connection_limit: int,  # noqa: ARG002 - no per-user limit in MongoDB (--maxConns)
    ) -> None:
        """``createUser`` (or ``updateUser``) ``login`` with ``role``'s custom role."""
        async with self._as_root(target) as client:
            db = client[target.database]
            found = await db.command({"usersInfo": login.username})
            command = user_command(target.database, role, login.username, login.password,
                                   bool(found.get("users")))
            verb = next(iter(command))
            try:
                await db.command(command)
            except OperationFailure as exc:
                # The command carries a password: name it, never print it.
                raise EngineError(
                    f"rotate: {verb} {login.username} in {target.database} failed: "
                    f"{_failure(exc)}"
                ) from exc

    async def retire_login(
        self, target: TenantTarget, role: str,  # noqa: ARG002 - every user stands alone
        login: RoleCredential,
    ) -> None:
        """``dropUser``: the server refuses the user's sessions from then on. Idempotent."""
        async with self._as_root(target) as client:
            db = client[target.database]
            found = await db.command({"usersInfo": login.username})
            if found.get("users"):
                await db.command({"dropUser": login.username})

    # -------------------------------------------------------------- isolation

    async def prove_isolation(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> list[CheckResult]:
        """Run every engine check with the tenant's real credentials."""
        return [
            await self._check_app_read_write(target),
            await self._check_readonly(target),
            await self._check_roles_confined(target),
            await self._check_app_cannot_escalate(target),
            await self._check_owner_confined(target),
            await self._check_unauthenticated_refused(target),
            await self._check_bootstrap_dead(target),
            await self._check_neighbours_refuse(target, neighbours),
        ]

    async def _check_app_read_write(self, target: TenantTarget) -> CheckResult:
        name = "app_reads_and_writes_own_database"
        # A unique key: a probe left behind by a crash must not trip the unique index.
        probe = {"_id": bson.ObjectId(), "key": f"cloner.isolation_probe.{secrets.token_hex(4)}",
                 "value": True,
                 "description": None, "updated_at": datetime.now(UTC)}
        try:
            async with self._as_role(target, "app") as client:
                collection = client[target.database][PROBE_COLLECTION]
                await collection.insert_one(probe)
                try:
                    seen = await collection.find_one({"_id": probe["_id"]})
                finally:
                    # No transactions on a standalone server: the probe is removed instead.
                    await collection.delete_one({"_id": probe["_id"]})
        except PyMongoError as exc:
            return CheckResult(name, False, f"app could not read/write: {_failure(exc)}")
        return CheckResult(name, seen is not None,
                           f"insert+find+delete on {PROBE_COLLECTION} as app")

    async def _check_readonly(self, target: TenantTarget) -> CheckResult:
        name = "readonly_reads_cannot_write"
        try:
            async with self._as_role(target, "readonly") as client:
                collection = client[target.database][PROBE_COLLECTION]
                count = await collection.count_documents({})
                try:
                    await collection.insert_one({"key": "cloner_readonly_probe", "value": True,
                                                 "updated_at": datetime.now(UTC)})
                except OperationFailure as exc:
                    if exc.code == UNAUTHORIZED:
                        return CheckResult(
                            name, True, f"read {count} documents; insert refused: unauthorized"
                        )
                    return CheckResult(name, False, f"insert failed otherwise: {_failure(exc)}")
                return CheckResult(name, False, "readonly user could insert")
        except PyMongoError as exc:
            return CheckResult(name, False, f"readonly check failed: {_failure(exc)}")

    async def _check_roles_confined(self, target: TenantTarget) -> CheckResult:
        name = "roles_confined_to_tenant_database"
        expected = {
            target.credentials.roles[role].username: CUSTOM_ROLES[role] for role in TENANT_ROLES
        }
        try:
            async with self._as_root(target) as client:
                db = client[target.database]
                listed = await db.command({"usersInfo": 1})
                # showPrivileges is refused together with {usersInfo: 1}: name the users.
                names = [{"user": u["user"], "db": target.database}
                         for u in listed.get("users", [])]
                tenant = await db.command({"usersInfo": names, "showPrivileges": True}) \
                    if names else {"users": []}
                admin = await client.admin.command({"usersInfo": 1})
        except PyMongoError as exc:
            return CheckResult(name, False, f"usersInfo failed: {_failure(exc)}")
        problems = confinement_problems(
            target.database, expected, tenant.get("users", []), admin.get("users", []),
            target.credentials.superuser.username,
        )
        if problems:
            return CheckResult(name, False, "; ".join(problems)[:500])
        return CheckResult(
            name, True,
            f"owner/app/readonly live in {target.database} with one cloner role each; every "
            "inherited role and privilege is on that database; admin holds only root",
        )

    async def _attempts(
        self, target: TenantTarget, role: str,
        attempts: Mapping[str, tuple[str, Document, tuple[int, ...]]],
    ) -> list[str]:
        """Run each ``label → (database, command, refusal codes)``; labels not refused."""
        allowed = []
        async with self._as_role(target, role) as client:
            for label, (database, command, codes) in attempts.items():
                try:
                    await client[database].command(command)
                except OperationFailure as exc:
                    if not _refused(exc, *codes):
                        allowed.append(f"{label} ({(exc.details or {}).get('codeName')})")
                    continue
                allowed.append(label)
        return allowed

    async def _check_app_cannot_escalate(self, target: TenantTarget) -> CheckResult:
        name = "app_cannot_escalate"
        db = target.database
        app = target.credentials.roles["app"].username
        attempts: dict[str, tuple[str, Document, tuple[int, ...]]] = {
            "read admin": (ADMIN_DB, {"find": "system.users", "limit": 1}, ()),
            "list admin collections": (ADMIN_DB, {"listCollections": 1}, ()),
            "read another database": ("local", {"find": "startup_log", "limit": 1}, ()),
            "write another database": (
                "cloner_escalation_probe",
                {"insert": "probe", "documents": [{"x": 1}]}, (),
            ),
            "create user": (db, {"createUser": "cloner_escalation_probe",
                                 "pwd": secrets.token_urlsafe(16), "roles": []}, ()),
            "create role": (db, {"createRole": "cloner_escalation_probe", "privileges": [],
                                 "roles": []}, ()),
            "grant itself root": (db, {"grantRolesToUser": app,
                                       "roles": [{"role": "root", "db": ADMIN_DB}]}, ()),
            "read server options": (ADMIN_DB, {"getCmdLineOpts": 1}, ()),
        }
        try:
            allowed = await self._attempts(target, "app", attempts)
            async with self._as_role(target, "app") as client:
                visible = sorted((await client.admin.command(
                    {"listDatabases": 1, "nameOnly": True}
                )).get("databases", []), key=str)
        except PyMongoError as exc:
            return CheckResult(name, False, f"escalation check failed: {_failure(exc)}")
        names = sorted(str(d.get("name")) for d in visible)
        if set(names) - {db}:
            allowed.append(f"sees databases {names}")
        if allowed:
            return CheckResult(name, False, f"app was not refused: {', '.join(allowed)}")
        return CheckResult(name, True, f"refused: {', '.join(attempts)}; sees only {db}")

    async def _check_owner_confined(self, target: TenantTarget) -> CheckResult:
        name = "owner_confined_to_database"
        db = target.database
        owner = target.credentials.roles["owner"].username
        attempts: dict[str, tuple[str, Document, tuple[int, ...]]] = {
            "read admin": (ADMIN_DB, {"find": "system.users", "limit": 1}, ()),
            "write another database": (
                "cloner_escalation_probe",
                {"insert": "probe", "documents": [{"x": 1}]}, (),
            ),
            "grant itself root": (db, {"grantRolesToUser": owner,
                                       "roles": [{"role": "root", "db": ADMIN_DB}]}, ()),
            # dbOwner may create roles in its database, but the server refuses any that
            # reaches beyond it (BadValue) before checking anything else.
            "create a role reaching admin": (db, {
                "createRole": "cloner_escalation_probe",
                "privileges": [{"resource": {"db": ADMIN_DB, "collection": ""},
                                "actions": ["find"]}],
                "roles": [],
            }, (UNAUTHORIZED, BAD_VALUE)),
            "read server options": (ADMIN_DB, {"getCmdLineOpts": 1}, ()),
        }
        try:
            allowed = await self._attempts(target, "owner", attempts)
        except PyMongoError as exc:
            return CheckResult(name, False, f"owner check failed: {_failure(exc)}")
        if allowed:
            return CheckResult(name, False, f"owner was not refused: {', '.join(allowed)}")
        return CheckResult(name, True, f"refused: {', '.join(attempts)}")

    async def _check_unauthenticated_refused(self, target: TenantTarget) -> CheckResult:
        name = "unauthenticated_access_refused"
        try:
            async with self._client(target.endpoint, None, None, ADMIN_DB) as client:
                await client[target.database].command({"listCollections": 1})
        except OperationFailure as exc:
            if exc.code == UNAUTHORIZED:
                return CheckResult(name, True, "listCollections without credentials: refused")
            return CheckResult(name, False, f"unexpected refusal: {_failure(exc)}")
        except PyMongoError as exc:
            return CheckResult(name, False, f"check failed: {_failure(exc)}")
        return CheckResult(name, False, f"an unauthenticated client listed {target.database}")

    async def _check_bootstrap_dead(self, target: TenantTarget) -> CheckResult:
        name = "bootstrap_password_dead"
        root = target.credentials.superuser
        try:
            async with self._client(target.endpoint, root.username,
                                    target.credentials.bootstrap_password, ADMIN_DB,
                                    vouch=target) as client:
                await client.admin.command("ping")
        except OperationFailure as exc:
            if exc.code == AUTHENTICATION_FAILED:
                return CheckResult(name, True, "the password passed to the container is refused")
            return CheckResult(name, False, f"unexpected refusal: {_failure(exc)}")
        except PyMongoError as exc:
            return CheckResult(name, False, f"check failed: {_failure(exc)}")
        return CheckResult(name, False, "the bootstrap password still opens the server as root")

    async def _check_neighbours_refuse(
        self, target: TenantTarget, neighbours: Sequence[Neighbour]
    ) -> CheckResult:
        return await neighbours_refuse(
            target, neighbours, self._ask_neighbour,
            auth="SCRAM mechanisms only, localhost bypass off",
        )

    async def _ask_neighbour(self, target: TenantTarget, neighbour: Neighbour) -> NeighbourFinding:
        """The neighbour's own root session judges this tenant's credentials (see checks)."""
        theirs = neighbour.target
        if theirs is None:
            return NeighbourFinding(unreachable="no connection target")
        names = login_usernames(target)
        mine = target.credentials.superuser
        try:
            async with self._as_root(theirs) as client:
                users = client[ADMIN_DB]["system.users"]
                present = await users.find(
                    {"user": {"$in": names}}, {"_id": 1}
                ).to_list(None)
                root = await users.find_one({"user": mine.username, "db": ADMIN_DB},
                                            {"credentials": 1})
                params = await client.admin.command(
                    {"getParameter": 1, "authenticationMechanisms": 1,
                     "enableLocalhostAuthBypass": 1}
                )
        except NotReady as exc:  # not vouched for any more (EndpointNotVouched), or down
            return NeighbourFinding(unreachable=exc.message)
        except PyMongoError as exc:
            return NeighbourFinding(unreachable=_failure(exc))
        problems = [f"has a user {u['_id']}" for u in present]
        scram = ((root or {}).get("credentials") or {}).get("SCRAM-SHA-256") or {}
        iterations = int(scram.get("iterationCount") or 0)
        if 0 < iterations <= MAX_VERIFIER_ITERATIONS and await asyncio.to_thread(
            scram_stored_key_matches, "sha256", mine.password, str(scram.get("salt")),
            iterations, str(scram.get("storedKey")),
        ):
            problems.append("its root accepts this tenant's root password")
        mechanisms = set(params.get("authenticationMechanisms") or [])
        if mechanisms - _HASHED_MECHANISMS:
            problems.append(f"authentication mechanisms {sorted(mechanisms)}")
        if params.get("enableLocalhostAuthBypass"):
            problems.append("localhost authentication bypass is on")
        refused = 0
        # Throwaway passwords are worthless to whoever gets them: one look at the
        # runtime only keeps the verdict about the neighbour's own server.
        try:
            await theirs.vouch()
        except NotReady as exc:
            return NeighbourFinding(tuple(problems), unreachable=exc.message)
        for name in names:
            try:
                async with self._client(theirs.endpoint, name, throwaway_password(),
                                        neighbour.database, timeout_s=3) as client:
                    await client.admin.command("ping")
            except OperationFailure as exc:
                if exc.code == AUTHENTICATION_FAILED:
                    refused += 1
                    continue
                return NeighbourFinding(tuple(problems), unreachable=_failure(exc),
                                        throwaway_refused=refused)
            except PyMongoError as exc:
                return NeighbourFinding(tuple(problems), unreachable=_failure(exc),
                                        throwaway_refused=refused)
            problems.append(f"accepted a login as {name} with a throwaway password")
        return NeighbourFinding(tuple(problems), throwaway_refused=refused)

    # ---------------------------------------------------------------- backups

    @asynccontextmanager
    async def _tool_config(
        self, runtime: Runtime, container: str, password: str, scratch_dir: Path
    ) -> AsyncIterator[str]:
        """The root password in a 0600 file on the container's tmpfs, for ``--config``.

        It travels through the exec's stdin from a 0600 host file that is gone
        before the tool runs; the container copy is removed afterwards.
        """
        inside = f"/tmp/cloner-tools-{secrets.token_hex(6)}.yaml"  # noqa: S108 - container tmpfs
        host_file = scratch_dir / f".cloner-tools-{secrets.token_hex(6)}.yaml"
        await asyncio.to_thread(write_private_file, host_file, tool_config(password))
        try:
            code, output = await runtime.exec_with_stdin(
                container, ["sh", "-c", 'umask 077 && cat > "$1"', "sh", inside], host_file,
                user=MONGO_UID,
            )
        finally:
            await asyncio.to_thread(host_file.unlink, missing_ok=True)
        if code != 0:
            raise BackupError(f"could not stage the tool configuration: {output[-200:]}")
        try:
            yield inside
        finally:
            # A container that died meanwhile took its tmpfs (and the file) with it.
            with suppress(ClonerError):
                await runtime.exec(container, ["rm", "-f", inside], user=MONGO_UID)

    async def backup(
        self, runtime: Runtime, target: TenantTarget, dest: Path, *,
        lock_wait_s: float = constants.DUMP_LOCK_TIMEOUT_S,  # noqa: ARG002 - no table locks: the exec deadline bounds it
    ) -> BackupResult:
        """``mongodump --archive --gzip`` in the container, streamed to ``dest``, then read back.

        The archive counts only when every collection of the tenant database
        is in it with its end marker, and nothing else is.
        """
        if target.container_name is None:
            raise BackupError("mongodb backup needs the tenant container")
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        partial = dest.with_suffix(dest.suffix + ".partial")
        root = target.credentials.superuser
        try:
            async with self._tool_config(runtime, target.container_name, root.password,
                                         dest.parent) as config:
                size = await runtime.exec_to_file(
                    target.container_name, dump_argv(target.database, root.username, config),
                    partial, user=MONGO_UID,
                )
            summary = await asyncio.to_thread(verified_backup, partial, target.database)
        except Exception as exc:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            if isinstance(exc, BackupError):
                raise BackupError(f"mongodump of {target.tenant_id}: {exc.message}") from exc
            raise BackupError(f"mongodump of {target.tenant_id} failed: {exc}") from exc
        digest = await asyncio.to_thread(sha256_of, partial)
        await asyncio.to_thread(partial.chmod, 0o600)
        await asyncio.to_thread(partial.replace, dest)
        counts = summary.counts(target.database)
        log.info("mongodb.backup_verified", tenant_id=target.tenant_id,
                 collections=len(counts), documents=sum(counts.values()))
        return BackupResult(dest, size, digest, BACKUP_FORMAT, len(counts))

    async def restore(self, runtime: Runtime, target: TenantTarget, source: Path) -> None:
        """``mongorestore`` fed through stdin, then the document counts compared with the archive.

        Without transactions a restore is not all or nothing, so completion is
        judged by content: counts equal to the archive's mean an earlier attempt
        finished; anything else left in the database is a partial attempt of
        this same request (a restore always starts on a fresh volume), dropped
        before restoring again.
        """
        if target.container_name is None:
            raise BackupError("mongodb restore needs the tenant container")
        summary = await asyncio.to_thread(verified_backup, source, target.database)
        expected = summary.counts(target.database)
        current = await self.row_counts(target)
        if current == expected:
            log.info("mongodb.restore_already_done", tenant_id=target.tenant_id)
            return
        if current:
            log.warning("mongodb.restore_dropping_partial", tenant_id=target.tenant_id,
                        collections=len(current))
            async with self._as_root(target) as client:
                await client.drop_database(target.database)
        root = target.credentials.superuser
        async with self._tool_config(runtime, target.container_name, root.password,
                                     source.parent) as config:
            code, output = await runtime.exec_with_stdin(
                target.container_name, restore_argv(target.database, root.username, config),
                source, user=MONGO_UID,
            )
        if code != 0:
            raise BackupError(f"mongorestore into {target.tenant_id} failed: {output[-300:]}")
        restored = await self.row_counts(target)
        if restored != expected:
            raise BackupError(
                f"mongorestore into {target.tenant_id} left {restored} documents per "
                f"collection; the archive holds {expected}"
            )

    async def row_counts(self, target: TenantTarget) -> dict[str, int]:
        """Documents per collection of the tenant database, read as root."""
        async with self._as_root(target) as client:
            db = client[target.database]
            names = sorted(n for n in await db.list_collection_names(
                filter={"type": "collection"}) if not n.startswith("system."))
            return {name: int(await db[name].count_documents({})) for name in names}

    async def template_warnings(self, target: TenantTarget) -> list[str]:
        """Collections without validator, unindexed references, secret-looking fields."""
        async with self._as_root(target) as client:
            db = client[target.database]
            collections = await (await db.list_collections()).to_list()
            indexes = {
                str(c["name"]): await (await db[str(c["name"])].list_indexes()).to_list()
                for c in collections if c.get("type", "collection") == "collection"
            }
        return design_warnings(collections, indexes)

    def dsn(self, endpoint: Endpoint, username: str, password: str) -> str:
        """``mongodb://user:password@host:port/db?authSource=db``."""
        return mongo_uri(endpoint, username, password, str(endpoint.database))

    async def open_pool(
        self, endpoint: Endpoint, username: str, password: str, options: PoolOptions
    ) -> PoolLike:
        """One ``AsyncMongoClient`` (itself a connection pool) lent out as the tenant database.

        With ``min_size`` > 0 the login is proven with a ``ping`` before the
        pool is handed over, as the SQL engines' pools do by connecting.
        """
        database = str(endpoint.database)
        await _reachable(endpoint, options.connect_timeout_s)
        client_kwargs = client_options(endpoint, username, password, database,
                                       options.connect_timeout_s)
        client_kwargs.update(
            appname=options.application_name, maxPoolSize=options.max_size,
            minPoolSize=options.min_size,
            socketTimeoutMS=max(int(options.command_timeout_s * 1000), 100),
        )
        client: Client = AsyncMongoClient(**client_kwargs)
        try:
            if options.min_size > 0:
                async with asyncio.timeout(options.connect_timeout_s):
                    await client[database].command("ping")
        except BaseException:
            await client.close()
            raise
        return _MongoPool(client, database, options.max_size)


class _MongoPool:
    """Leases of one client's database handle, at most ``max_size`` at a time.

    A database handle is not a connection: pymongo checks sockets out per
    operation. The leases give ``TenantPools`` what it counts for every engine
    (connections in use, ``PoolExhausted`` when all stay busy) and let
    ``close`` wait for work in flight before the client's sockets go.
    """

    def __init__(self, client: Client, database: str, max_size: int) -> None:
        self._client = client
        self._database = client[database]
        self._max_size = max_size
        self._slots = asyncio.Semaphore(max_size)
        self._leased = 0
        self._returned = asyncio.Event()
        self._returned.set()
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(
        self, *, timeout: float | None = None,  # noqa: ASYNC109 - asyncpg.Pool.acquire's signature
    ) -> Database:
        async with asyncio.timeout(timeout):
            await self._slots.acquire()
        self._leased += 1
        self._returned.clear()
        return self._database

    async def release(self, connection: Database) -> None:  # noqa: ARG002 - PoolLike's signature
        self._leased -= 1
        self._slots.release()
        if self._leased == 0:
            self._returned.set()

    async def close(self) -> None:
        await self._returned.wait()
        await self._client.close()

    def terminate(self) -> None:
        # close() is a coroutine in pymongo's async API; the task is kept so it runs to the end.
        task = asyncio.get_running_loop().create_task(self._client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def get_idle_size(self) -> int:
        """Leases free (pymongo keeps the sockets themselves)."""
        return self._max_size - self._leased
