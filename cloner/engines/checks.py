"""Isolation-proof pieces every server engine shares."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from cloner.domain import CheckResult, RoleCredential
from cloner.engines.base import Neighbour, TenantTarget

#: What one login attempt against a neighbour's server came to.
Outcome = Literal["refused", "accepted", "unreachable"]
#: Tries one of the tenant's logins against one neighbour's endpoint.
LoginAttempt = Callable[[Neighbour, RoleCredential], Awaitable[Outcome]]

#: Attempts in flight at once: bounds sockets and server load on a large host.
NEIGHBOUR_CONCURRENCY = 8
#: The logins tried elsewhere: the ones that can write.
PROBED_ROLES = ("owner", "app")


async def neighbours_refuse(
    target: TenantTarget, neighbours: Sequence[Neighbour], attempt: LoginAttempt
) -> CheckResult:
    """``other_tenants_refuse_credentials``: every neighbour refuses owner and app.

    An unreachable neighbour (stopped, restarting) does not fail the check:
    it cannot accept anything either; the count is reported.
    """
    limiter = asyncio.Semaphore(NEIGHBOUR_CONCURRENCY)
    pairs = [(n, target.credentials.roles[r]) for n in neighbours for r in PROBED_ROLES]

    async def bounded(neighbour: Neighbour, cred: RoleCredential) -> Outcome:
        async with limiter:
            return await attempt(neighbour, cred)

    results = await asyncio.gather(*(bounded(n, c) for n, c in pairs))
    name = "other_tenants_refuse_credentials"
    accepted = sorted({n.tenant_id for (n, _), r in zip(pairs, results, strict=True)
                       if r == "accepted"})
    if accepted:
        return CheckResult(name, False, f"credentials accepted by: {', '.join(accepted)}")
    return CheckResult(
        name, True,
        f"owner and app credentials refused by {len(neighbours)} other tenant endpoint(s)"
        f" ({results.count('refused')} attempts refused, "
        f"{results.count('unreachable')} unreachable)",
    )


_SECRETISH = re.compile(r"(pass(word|wd)?|pwd|secret|api_?key|token)$")
_HASHED = re.compile(r"(hash|digest|hmac|salt|encrypted|_enc)")


def looks_like_plaintext_secret(column: str) -> bool:
    """A column (or field) name that suggests a secret stored as it is (template warning)."""
    lowered = column.lower()
    return bool(_SECRETISH.search(lowered)) and not _HASHED.search(lowered)
