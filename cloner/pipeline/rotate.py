"""Credential rotation without downtime (``RequestKind.ROTATE``, ``cloner tenant rotate``).

No server engine cloner runs has dual passwords, so each rotated role gets a
second login (``RotationHooks``), in four recorded phases:

1. prepare  the new logins (``<privilege role>_r<n>``, fresh passwords) are sealed
            into the registry as ``pending`` before any server sees them;
2. create   each is created with its role's privileges; the current login keeps
            working, and the new one is proven by a login before it is handed out;
3. switch   one registry write makes the new logins current and the old ones
            ``retiring`` (until ``retire_after``): the change counter moves, and
            pools built from the registry swap to the new credentials;
4. retire   after ``rotation_grace_s`` the old logins are made unusable (sessions
            ended, role dropped or locked) and the roles are marked rotated by this
            request.

A crash anywhere is safe: the registry holds both credentials and says which is
current, and every engine hook is idempotent, so a redelivered request continues
from the phase it reached. The tenant stays ``ready`` throughout (one active
request per tenant keeps deletes and migrations out).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from cloner.controlplane import TenantUpdate
from cloner.domain import Credentials, Request, RoleCredential, Status, Tenant
from cloner.engines import EngineDriver, RotationHooks, TenantTarget, rotation_hooks
from cloner.errors import EngineError, InvalidInput, InvalidTransition, TenantNotFound
from cloner.logging import REDACTOR, get_logger
from cloner.pipeline.context import Services
from cloner.pipeline.provision import StepFailed
from cloner.pipeline.verify import prove_isolation
from cloner.secrets import TENANT_ROLES, generate_password, rotated_login

log = get_logger(__name__)

#: What ``--role`` accepts; ``all`` stands for every role the engine has.
ROLE_CHOICES = (*TENANT_ROLES, "all")


def roles_to_rotate(role: str, engine_roles: tuple[str, ...]) -> list[str]:
    """The roles ``--role`` names, or ``InvalidInput`` listing the choices."""
    if role == "all":
        return list(engine_roles)
    if role not in engine_roles:
        raise InvalidInput(f"unknown role {role[:20]!r}: choose one of {', '.join(ROLE_CHOICES)}")
    return [role]


class Rotator:
    """Runs one rotate request to the end (see module docstring)."""

    def __init__(self, services: Services) -> None:
        self.s = services

    async def run(self, request: Request) -> dict[str, Any]:
        """Rotate the roles the request names; ``StepFailed`` on failure."""
        tenant = await self._get(request.tenant_id)
        roles = [str(r) for r in request.payload.get("roles", [])]
        actor = request.payload.get("actor")
        try:
            engine, target = await self.s.target(tenant)
        except Exception as exc:
            raise StepFailed("validate", exc) from exc
        hooks = rotation_hooks(engine)
        if hooks is None:
            raise StepFailed("validate", InvalidInput(
                f"tenant {tenant.tenant_id!r} runs {engine.engine.value}, which has no "
                "logins to rotate"
            ))
        creds = target.credentials
        if all(creds.rotated.get(r) == request.id for r in roles):
            return self._summary(request, creds, roles)  # redelivered after it finished
        # A ready tenant only; past its switch, this request's own rotation always finishes.
        if tenant.status is not Status.READY and creds.rotation_request != request.id:
            raise StepFailed("validate", InvalidTransition(
                f"tenant {tenant.tenant_id!r} is {tenant.status.value}; only a ready "
                "tenant's credentials can be rotated"
            ))
        step = "leftover"
        try:
            creds = await self._finish_leftover(tenant, hooks, target, creds, request)
            step = "prepare"
            creds = await self._prepare(tenant, creds, roles, request)
            step = "create"
            await self._create(engine, hooks, target, creds)
            step = "switch"
            creds = await self._switch(tenant, creds, request, actor)
            step = "grace"
            await _sleep_until(creds.retire_after)
            step = "retire"
            creds = await self._retire(tenant, hooks, target, creds, roles)
        except Exception as exc:
            raise StepFailed(step, exc) from exc
        summary = self._summary(request, creds, roles)
        await self.s.control_plane.update_tenant(tenant.tenant_id, TenantUpdate(
            event="rotated", event_detail={**summary, "actor": actor},
        ))
        log.info("rotation.done", tenant_id=tenant.tenant_id, roles=roles)
        await self._reprove(tenant.tenant_id, engine)
        return summary

    async def _get(self, tenant_id: str) -> Tenant:
        tenant = await self.s.control_plane.get_tenant(tenant_id)
        if tenant is None:
            raise StepFailed("validate", TenantNotFound(f"no tenant {tenant_id!r}"))
        return tenant

    async def _save(self, tenant_id: str, creds: Credentials, **event: Any) -> None:
        REDACTOR.add(creds.all_secrets())
        await self.s.control_plane.update_tenant(tenant_id, TenantUpdate(
            credentials_token=self.s.vault.seal_credentials(creds), **event,
        ))

    async def _finish_leftover(
        self, tenant: Tenant, hooks: RotationHooks, target: TenantTarget, creds: Credentials,
        request: Request,
    ) -> Credentials:
        """Logins an earlier rotation that failed for good left behind, made unusable.

        Its pending logins were never handed out; its retiring ones are retired
        once their grace period has passed. Nothing to do for this request's own.
        """
        if creds.rotation_request in (None, request.id) or not (creds.pending or creds.retiring):
            return creds
        current = dataclasses.replace(target, credentials=creds)
        for role, login in creds.pending.items():
            if login.username != creds.roles[role].username:
                await hooks.retire_login(current, role, login)
        await _sleep_until(creds.retire_after)
        for role, login in creds.retiring.items():
            if login.username != creds.roles[role].username:
                await hooks.retire_login(current, role, login)
        creds = dataclasses.replace(creds, pending={}, retiring={}, retire_after=None)
        await self._save(tenant.tenant_id, creds)
        log.info("rotation.leftover_retired", tenant_id=tenant.tenant_id,
                 previous_request=creds.rotation_request)
        return creds

    async def _prepare(
        self, tenant: Tenant, creds: Credentials, roles: list[str], request: Request
    ) -> Credentials:
        """New logins sealed into the registry before any server sees them."""
        pending = dict(creds.pending)
        for role in roles:
            if role in pending or role in creds.retiring:
                continue  # an earlier attempt of this rotation got that far
            name = rotated_login(creds.grantee(role), creds.roles[role].username)
            pending[role] = RoleCredential(name, generate_password())
        if pending == creds.pending and creds.rotation_request == request.id:
            return creds
        creds = dataclasses.replace(creds, pending=pending, rotation_request=request.id)
        await self._save(tenant.tenant_id, creds)
        return creds

    async def _create(
        self, engine: EngineDriver, hooks: RotationHooks, target: TenantTarget,
        creds: Credentials,
    ) -> None:
        """Each pending login created and proven by a real login (a health probe as it)."""
        limit = self.s.settings.tenant_connection_limit
        staged = dataclasses.replace(target, credentials=creds)
        for role, login in creds.pending.items():
            await hooks.create_login(staged, role, login, limit)
            # The health probe logs in as "app": pointed at the new login, it proves it.
            trial = dataclasses.replace(creds, roles={**creds.roles, "app": login})
            try:
                await engine.probe(dataclasses.replace(target, credentials=trial),
                                   self.s.settings.ready_timeout_s)
            except Exception as exc:
                raise EngineError(
                    f"new {role} login {login.username} was created but cannot log in: {exc}"
                ) from exc

    async def _switch(
        self, tenant: Tenant, creds: Credentials, request: Request, actor: Any
    ) -> Credentials:
        """One registry write: new logins current, old ones retiring until the grace ends."""
        if not creds.pending:
            return creds
        grantees = dict(creds.grantees)
        roles = dict(creds.roles)
        retiring = dict(creds.retiring)
        for role, login in creds.pending.items():
            grantees[role] = creds.grantee(role)
            retiring[role] = roles[role]
            roles[role] = login
        switched = dataclasses.replace(
            creds, roles=roles, grantees=grantees, retiring=retiring, pending={},
            retire_after=time.time() + self.s.settings.rotation_grace_s,
        )
        await self._save(tenant.tenant_id, switched, event="rotation_switched", event_detail={
            "request": request.id, "actor": actor,
            "logins": {r: switched.roles[r].username for r in creds.pending},
            "retire_after_s": self.s.settings.rotation_grace_s,
        })
        log.info("rotation.switched", tenant_id=tenant.tenant_id, roles=sorted(creds.pending))
        return switched

    async def _retire(
        self, tenant: Tenant, hooks: RotationHooks, target: TenantTarget, creds: Credentials,
        roles: list[str],
    ) -> Credentials:
        """Old logins made unusable; the roles recorded as rotated by this request."""
        current = dataclasses.replace(target, credentials=creds)
        for role, login in creds.retiring.items():
            if login.username == creds.roles[role].username:
                continue  # never retire the login in service
            await hooks.retire_login(current, role, login)
        request_id = creds.rotation_request or ""
        rotated = {**creds.rotated, **dict.fromkeys(roles, request_id)}
        done = dataclasses.replace(creds, retiring={}, retire_after=None, rotated=rotated,
                                   rotation_request=None)
        await self._save(tenant.tenant_id, done)
        return done

    async def _reprove(self, tenant_id: str, engine: EngineDriver) -> None:
        """The stored isolation proof, run again with the new credentials."""
        tenant = await self.s.control_plane.get_tenant(tenant_id)
        if tenant is None or tenant.status is not Status.READY:
            return
        _driver, target = await self.s.target(tenant)
        try:
            report = await prove_isolation(self.s, tenant.engine, engine, target)
        except Exception as exc:  # the health monitor proves again on its cadence
            log.warning("rotation.reprove_failed", tenant_id=tenant_id,
                        error=f"{type(exc).__name__}: {exc}")
            return
        if not report.passed:
            log.warning("rotation.isolation_failed", tenant_id=tenant_id)

    @staticmethod
    def _summary(request: Request, creds: Credentials, roles: list[str]) -> dict[str, Any]:
        return {
            "request": request.id, "roles": roles,
            "logins": {r: creds.roles[r].username for r in roles if r in creds.roles},
        }


async def _sleep_until(unix_time: float | None) -> None:
    if unix_time is not None:
        await asyncio.sleep(max(0.0, unix_time - time.time()))
