"""Isolation-proof pieces every server engine shares."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cloner.domain import CheckResult
from cloner.engines.base import Neighbour, TenantTarget

#: The cross-tenant check's name (the report's contract).
CROSS_TENANT_CHECK = "other_tenants_refuse_credentials"
#: Neighbours asked at once: the sample is small, this only bounds a large setting.
NEIGHBOUR_CONCURRENCY = 4
#: A verifier with more iterations than this is not recomputed (a hostile neighbour
#: must not make cloner spend minutes in PBKDF2); it is reported instead.
MAX_VERIFIER_ITERATIONS = 100_000


@dataclass(frozen=True)
class NeighbourFinding:
    """What one neighbour's own server said about this tenant's credentials.

    ``problems`` fail the check. ``unreachable`` says why the neighbour could
    not be asked (container gone since it was vouched for, server down): no
    verdict either way, reported. ``throwaway_refused`` counts the logins as
    this tenant's user names, with throwaway passwords, that the neighbour
    refused on the wire.
    """

    problems: tuple[str, ...] = ()
    unreachable: str | None = None
    throwaway_refused: int = 0


#: Asks one neighbour about the tenant (see ``neighbours_refuse``).
AskNeighbour = Callable[[TenantTarget, Neighbour], Awaitable[NeighbourFinding]]


def login_usernames(target: TenantTarget) -> list[str]:
    """The tenant's login names as its credentials hold them (never derived from the id)."""
    return sorted({cred.username for cred in target.credentials.roles.values()})


def throwaway_password() -> str:
    """A password made for one refused login: worthless to whoever receives it."""
    return "cloner-throwaway-" + secrets.token_urlsafe(24)


async def neighbours_refuse(
    target: TenantTarget, neighbours: Sequence[Neighbour], ask: AskNeighbour, *, auth: str,
) -> CheckResult:
    """``other_tenants_refuse_credentials``, proven without presenting a real secret.

    ``ask`` is the engine's question to one neighbour, through the neighbour's
    own privileged session (its own credentials, to its own vouched endpoint):
    none of this tenant's login names exists there, the neighbour's superuser
    does not take this tenant's superuser password (compared against the
    stored verifier, locally), and authentication there is hashed only
    (``auth`` names how); then a login as each of this tenant's names, with a
    throwaway password, is refused on the wire. This tenant's real passwords
    are never sent to any endpoint but its own.
    """
    limiter = asyncio.Semaphore(NEIGHBOUR_CONCURRENCY)

    async def bounded(neighbour: Neighbour) -> NeighbourFinding:
        async with limiter:
            return await ask(target, neighbour)

    findings = await asyncio.gather(*(bounded(n) for n in neighbours))
    pairs = list(zip(neighbours, findings, strict=True))
    failed = [f"{n.tenant_id}: {'; '.join(f.problems)}" for n, f in pairs if f.problems]
    if failed:
        return CheckResult(CROSS_TENANT_CHECK, False, " | ".join(failed))
    asked = [n.tenant_id for n, f in pairs if f.unreachable is None]
    unreachable = [f"{n.tenant_id} ({f.unreachable})" for n, f in pairs if f.unreachable]
    if not neighbours:
        detail = "no vouched neighbour of this engine to ask"
    else:
        detail = (
            f"asked {', '.join(asked) or 'none'} through their own privileged sessions: "
            f"no login named {'/'.join(login_usernames(target))}, superuser password "
            f"not theirs, {auth}; "
            f"{sum(f.throwaway_refused for f in findings)} throwaway-password logins "
            "refused; no real secret sent"
        )
        if unreachable:
            detail += f"; unreachable: {', '.join(unreachable)}"
    return CheckResult(CROSS_TENANT_CHECK, True, detail)


def scram_stored_key_matches(
    digest: str, password: str, salt_b64: str, iterations: int, stored_key_b64: str
) -> bool:
    """True when ``password`` produces this SCRAM StoredKey (RFC 5802), computed locally.

    That is "the server would accept this password" without ever sending it.
    Blocking (PBKDF2): call it through ``asyncio.to_thread``.
    """
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        stored = base64.b64decode(stored_key_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    return hmac.compare_digest(hashlib.new(digest, client_key).digest(), stored)


async def pg_verifier_accepts(verifier: str | None, password: str) -> str | None:
    """A problem when PostgreSQL's stored ``rolpassword`` would accept ``password``.

    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``; anything
    else (an md5 hash, a plaintext password) is a problem of its own.
    """
    if verifier is None:
        return None
    try:
        method, rest = verifier.split("$", 1)
        head, keys = rest.split("$", 1)
        iterations_text, salt = head.split(":", 1)
        stored, _server = keys.split(":", 1)
        iterations = int(iterations_text)
    except ValueError:
        return "superuser password is not stored as a SCRAM verifier"
    if method != "SCRAM-SHA-256":
        return "superuser password is not stored as a SCRAM verifier"
    if iterations > MAX_VERIFIER_ITERATIONS:
        return f"superuser verifier has {iterations} iterations"
    if await asyncio.to_thread(
        scram_stored_key_matches, "sha256", password, salt, iterations, stored
    ):
        return "its superuser accepts this tenant's superuser password"
    return None


_SECRETISH = re.compile(r"(pass(word|wd)?|pwd|secret|api_?key|token)$")
_HASHED = re.compile(r"(hash|digest|hmac|salt|encrypted|_enc)")


def looks_like_plaintext_secret(column: str) -> bool:
    """A column (or field) name that suggests a secret stored as it is (template warning)."""
    lowered = column.lower()
    return bool(_SECRETISH.search(lowered)) and not _HASHED.search(lowered)
