"""Application users: an email mapped to one tenant with one role.

The users table is the authority routing trusts (``cloner.pools.routing``): a
token names a user and a tenant, and both must agree with the row here. Roles
map onto the tenant database's least-privilege roles: ``admin`` and ``member``
use the read-write ``app`` role, ``analyst`` the ``readonly`` one.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cloner.domain import parse_choice
from cloner.errors import InvalidInput

#: Deliberately strict: lowercase ASCII local part of letters, digits and ``._+-`` (not
#: starting or ending with a dot or hyphen), a dotted domain of DNS labels, a letter TLD.
EMAIL_PATTERN: Final = (
    r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
EMAIL_MAX_LENGTH: Final = 254
_EMAIL = re.compile(EMAIL_PATTERN)


class UserRole(enum.StrEnum):
    """What a user may do in their tenant's database."""

    ADMIN = "admin"
    MEMBER = "member"
    ANALYST = "analyst"

    @property
    def database_role(self) -> str:
        """The tenant database role this user connects as (``app`` or ``readonly``)."""
        return "readonly" if self is UserRole.ANALYST else "app"


@dataclass(frozen=True)
class User:
    """One row of the users table."""

    email: str
    tenant_id: str
    role: UserRole
    created_at: datetime

    def as_dict(self) -> dict[str, str]:
        """The JSON shape of the CLI and the HTTP API."""
        return {"email": self.email, "tenant_id": self.tenant_id, "role": self.role.value,
                "created_at": self.created_at.isoformat()}


def normalize_email(value: str) -> str:
    """``value`` lowercased if it is a plausible address, else ``InvalidInput``."""
    # ASCII first: str.lower() maps some non-ASCII letters (the Kelvin sign) onto ASCII ones,
    # which would let two different inputs name the same user.
    lowered = value.lower() if isinstance(value, str) and value.isascii() else ""
    if len(lowered) > EMAIL_MAX_LENGTH or not _EMAIL.fullmatch(lowered):
        shown = repr(value)[:80]
        raise InvalidInput(
            f"invalid email {shown}: expected local@domain.tld with ASCII letters, digits "
            "and ._+- in the local part"
        )
    return lowered


def parse_role(value: str) -> UserRole:
    """``value`` as a ``UserRole``, else ``InvalidInput`` naming the choices."""
    return parse_choice(UserRole, value, "role")
