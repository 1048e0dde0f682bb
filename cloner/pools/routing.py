"""Token routing: from an application's bearer token to a pooled connection of its tenant.

An application presents a JWT minted by the operator's identity provider. The
token names a user (``email``) and the tenant it claims (``tenant_id``); the
users table of the control plane is the authority on both. A connection is
handed out only when the signature, expiry and audience check out, the user
exists, and the tenant claimed is the tenant the user is mapped to. The user's
role picks the tenant database role: ``admin``/``member`` → ``app`` (read-write),
``analyst`` → ``readonly``.

Security decisions, each deliberate:

- The accepted algorithm is pinned by configuration (HS256 with
  ``CLONER_JWT_SECRET`` or RS256 with ``CLONER_JWT_PUBLIC_KEY``), never read
  from the token's header: ``alg: none`` and the HS256-with-the-public-key
  confusion are refused by construction.
- ``exp`` and ``aud`` are required, not merely checked when present; with
  ``CLONER_JWT_ISSUER`` set, ``iss`` is too. A token may not live longer than
  ``CLONER_JWT_MAX_LIFETIME_S``: neither ``exp - iat`` nor ``exp - now`` may
  exceed it (plus the leeway), so a token minted to expire in 2100 is refused.
- The ``email`` claim is matched against the users table only in its canonical
  form: a claim that NFKC normalisation would change (the Kelvin sign, full-width
  letters, ligatures) is refused, and so is any non-ASCII address, before any
  case folding; ``str.lower`` and NFKC both map some look-alikes onto ASCII
  letters, which would let one user's token route as another user.
- Refusals are ``AccessDenied`` naming the failed check only: no token, key or
  claim the caller could not already see is put in a message or a log line.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from cloner.errors import AccessDenied, InvalidInput
from cloner.logging import get_logger
from cloner.settings import Settings
from cloner.users import User, normalize_email

log = get_logger(__name__)

Algorithm = Literal["HS256", "RS256"]
#: HS256 keys shorter than the hash output make brute-forcing the secret practical.
MIN_HMAC_SECRET_BYTES: Final = 32
#: Claims every token must carry; ``exp`` and ``aud`` are also verified by PyJWT.
REQUIRED_CLAIMS: Final = ("exp", "aud", "email", "tenant_id")
_PEM_PREFIX = "-----BEGIN"


class PoolSource(Protocol):
    """What routing needs from ``cloner.pools.TenantPools``: role-scoped acquisition."""

    def acquire(self, tenant_id: str, role: str = "app") -> AbstractAsyncContextManager[Any]:
        """A pooled connection of ``tenant_id`` as ``role``, released on exit."""


class UserDirectory(Protocol):
    """What routing needs from the control plane: the users table."""

    async def get_user(self, email: str) -> User | None:
        """One user by email, or None."""


@dataclass(frozen=True)
class TokenClaims:
    """The verified claims routing acts on."""

    email: str
    tenant_id: str


class TokenVerifier:
    """Verifies application tokens with one pinned algorithm and key.

    Build it with ``from_settings``; the constructor takes an already loaded
    key so tests can hand one in directly.
    """

    def __init__(
        self, key: bytes | RSAPublicKey, algorithm: Algorithm, *, audience: str,
        leeway_s: float, issuer: str | None = None, max_lifetime_s: float | None = None,
    ) -> None:
        if algorithm == "HS256" and not (
            isinstance(key, bytes) and len(key) >= MIN_HMAC_SECRET_BYTES
        ):
            raise InvalidInput(
                f"HS256 needs a secret of at least {MIN_HMAC_SECRET_BYTES} bytes "
                "(set CLONER_JWT_SECRET to a longer random value)"
            )
        if algorithm == "RS256" and not isinstance(key, RSAPublicKey):
            raise InvalidInput("RS256 needs an RSA public key (CLONER_JWT_PUBLIC_KEY)")
        self._key = key
        self.algorithm: Algorithm = algorithm
        self.audience = audience
        self.leeway_s = leeway_s
        self.issuer = issuer
        self.max_lifetime_s = max_lifetime_s

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The verifier the settings describe; ``InvalidInput`` unless exactly one key is set."""
        secret, public_key = settings.jwt_secret, settings.jwt_public_key
        if (secret is None) == (public_key is None):
            raise InvalidInput(
                "token routing needs exactly one of CLONER_JWT_SECRET (HS256) or "
                "CLONER_JWT_PUBLIC_KEY (RS256); "
                + ("both are set" if secret is not None else "neither is set")
            )
        checks: dict[str, Any] = {
            "audience": settings.jwt_audience, "leeway_s": settings.jwt_leeway_s,
            "issuer": settings.jwt_issuer, "max_lifetime_s": settings.jwt_max_lifetime_s,
        }
        if secret is not None:
            return cls(secret.get_secret_value().encode(), "HS256", **checks)
        assert public_key is not None
        return cls(_load_rsa_public_key(public_key), "RS256", **checks)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; ``AccessDenied`` naming the failed check otherwise."""
        required = [*REQUIRED_CLAIMS, *(["iss"] if self.issuer is not None else [])]
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[self.algorithm], audience=self.audience,
                issuer=self.issuer, leeway=self.leeway_s,
                options={"require": required, "verify_signature": True,
                         "verify_exp": True, "verify_aud": True, "verify_iss": True,
                         "verify_iat": True, "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise _denied("token expired") from None
        except jwt.InvalidAudienceError:
            raise _denied(f"token audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _denied(f"token issuer is not {self.issuer!r}") from None
        except jwt.InvalidAlgorithmError:
            raise _denied(f"token algorithm is not the configured {self.algorithm}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _denied(f"token lacks the required {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise _denied("token is not valid yet (iat/nbf in the future)") from None
        except jwt.PyJWTError:
            # Bad signature, malformed token, unusable header: one answer for all of them,
            # so the refusal says nothing about how close a forgery came.
            raise _denied("token signature or format is invalid") from None
        self._check_lifetime(claims)
        email, tenant_id = claims.get("email"), claims.get("tenant_id")
        if not isinstance(email, str) or not isinstance(tenant_id, str):
            raise _denied("token claims email and tenant_id must be strings")
        return TokenClaims(email=_canonical_email(email), tenant_id=tenant_id)

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """Refuse a token valid for longer than ``max_lifetime_s`` (``exp`` is verified)."""
        if self.max_lifetime_s is None:
            return
        limit = self.max_lifetime_s + self.leeway_s
        try:  # PyJWT accepted them as integers, but may have done so from strings
            exp = float(claims["exp"])
            iat = float(claims["iat"]) if "iat" in claims else None
        except (TypeError, ValueError):
            raise _denied("token exp and iat must be numbers") from None
        if iat is not None and exp - iat > limit:
            raise _denied(f"token lifetime exceeds {self.max_lifetime_s:.0f}s (exp - iat)")
        if exp - time.time() > limit:
            raise _denied(f"token lifetime exceeds {self.max_lifetime_s:.0f}s (exp too far "
                          "in the future)")


def _canonical_email(claim: str) -> str:
    """The users-table form of a token's email claim; ``AccessDenied`` for a look-alike.

    NFKC first only as a check: a claim it would change holds compatibility
    characters (the Kelvin sign folds onto ``K``) and is refused, never folded.
    Then ``normalize_email`` refuses non-ASCII before it lowercases.
    """
    if unicodedata.normalize("NFKC", claim) != claim:
        raise _denied("token email contains compatibility (look-alike) characters")
    try:
        return normalize_email(claim)
    except InvalidInput:
        raise _denied("token email is not a plain ASCII address") from None


def _denied(reason: str) -> AccessDenied:
    log.warning("routing.denied", reason=reason)
    return AccessDenied(f"access denied: {reason}")


def _load_rsa_public_key(value: str) -> RSAPublicKey:
    """``value`` (PEM text or a path to a PEM file) as an RSA public key."""
    if value.lstrip().startswith(_PEM_PREFIX):
        pem, source = value.encode(), "CLONER_JWT_PUBLIC_KEY"
    else:
        path = Path(value).expanduser()
        try:
            pem, source = path.read_bytes(), str(path)
        except OSError as exc:
            raise InvalidInput(
                f"cannot read CLONER_JWT_PUBLIC_KEY file {path}: {exc.strerror}; "
                "give a PEM file path or the PEM text itself"
            ) from None
    try:
        key = load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput(
            f"{source} is not a PEM public key; expected '-----BEGIN PUBLIC KEY-----'"
        ) from None
    if not isinstance(key, RSAPublicKey):
        raise InvalidInput(f"{source} is not an RSA public key; RS256 needs one")
    return key


@asynccontextmanager
async def acquire_for_token(
    pools: PoolSource, control_plane: UserDirectory, verifier: TokenVerifier, token: str,
) -> AsyncIterator[Any]:
    """A pooled connection for the bearer of ``token``, with the role their user grants.

    Verifies the token, looks its ``email`` up in the users table and refuses
    (``AccessDenied``) an unknown user or a ``tenant_id`` claim other than the
    user's mapping; then yields ``pools.acquire(tenant, role=…)``'s connection.
    ``TenantUnavailable``/``TenantNotFound``/``PoolExhausted`` from the pools
    pass through unchanged.
    """
    claims = verifier.verify(token)
    user = await control_plane.get_user(claims.email)
    if user is None:
        raise _denied("the token's user is not registered")
    if user.tenant_id != claims.tenant_id:
        # The user's real tenant is not named: the caller learns only that this one is wrong.
        raise _denied("the token's tenant is not the user's tenant")
    role = user.role.database_role
    log.info("routing.acquire", tenant_id=user.tenant_id, email=user.email, role=role)
    async with pools.acquire(user.tenant_id, role=role) as connection:
        yield connection


class TokenRouter:
    """``acquire_for_token`` bound to its collaborators: ``router.acquire(token)``."""

    def __init__(
        self, pools: PoolSource, control_plane: UserDirectory, verifier: TokenVerifier,
    ) -> None:
        self.pools = pools
        self.control_plane = control_plane
        self.verifier = verifier

    def acquire(self, token: str) -> AbstractAsyncContextManager[Any]:
        """A pooled connection for the bearer of ``token`` (see ``acquire_for_token``)."""
        return acquire_for_token(self.pools, self.control_plane, self.verifier, token)
