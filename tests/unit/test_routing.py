"""Unit tests of token routing: verification, algorithm pinning, user mapping and role choice.

Pools are a small fake with ``TenantPools.acquire``'s shape; the users table is
the real SQLite control plane on a temporary file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from cloner.controlplane import SQLiteControlPlane
from cloner.domain import Engine, Industry, RequestKind, TenantSpec
from cloner.errors import AccessDenied, InvalidInput
from cloner.pools.routing import TokenRouter, TokenVerifier, acquire_for_token
from cloner.settings import Settings

SECRET = "s" * 40
AUDIENCE = "cloner"


@dataclass
class FakePools:
    """Records every acquisition and yields a (tenant, role) tuple as the 'connection'."""

    acquired: list[tuple[str, str]] = field(default_factory=list)
    released: int = 0

    @asynccontextmanager
    async def acquire(self, tenant_id: str, role: str = "app") -> AsyncIterator[Any]:
        """Yield a stand-in connection for ``tenant_id`` as ``role``."""
        self.acquired.append((tenant_id, role))
        try:
            yield (tenant_id, role)
        finally:
            self.released += 1


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[SQLiteControlPlane]:
    """A control plane with tenants acme/globex and an admin, a member and an analyst."""
    control_plane = SQLiteControlPlane(tmp_path / "cp.sqlite")
    await control_plane.open()
    for tenant_id in ("acme", "globex"):
        spec = TenantSpec(tenant_id, Engine.POSTGRES, Industry.NONE, "v1.0")
        await control_plane.enqueue(spec, RequestKind.PROVISION, tenant_id, {})
    await control_plane.add_user("root@acme.com", "acme", "admin")
    await control_plane.add_user("mem@acme.com", "acme", "member")
    await control_plane.add_user("ana@acme.com", "acme", "analyst")
    try:
        yield control_plane
    finally:
        await control_plane.close()


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings on a private data dir, no .env file."""
    return Settings(data_dir=tmp_path, _env_file=None, **overrides)  # type: ignore[call-arg]


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for mem@acme.com, with overrides (None removes a claim)."""
    base: dict[str, Any] = {"email": "mem@acme.com", "tenant_id": "acme", "aud": AUDIENCE,
                            "exp": int(time.time()) + 300, "iat": int(time.time())}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**overrides: Any) -> str:
    """An HS256 token signed with ``SECRET``."""
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand: HMAC-SHA256 with ``key``, or no signature at all."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(),
                                                 hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass(frozen=True)
class RsaPair:
    """A generated RSA key pair as PEM."""

    private_pem: bytes
    public_pem: bytes


@pytest.fixture(scope="module")
def rsa_pair() -> RsaPair:
    """A fresh 2048-bit RSA key pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return RsaPair(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
        key.public_key().public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo),
    )


@pytest.fixture
def verifier(tmp_path: Path) -> TokenVerifier:
    """An HS256 verifier built from settings."""
    return TokenVerifier.from_settings(settings(tmp_path, jwt_secret=SecretStr(SECRET)))


async def _route(pools: FakePools, cp: SQLiteControlPlane, verifier: TokenVerifier,
                 token: str) -> Any:
    async with acquire_for_token(pools, cp, verifier, token) as connection:
        return connection


async def test_member_token_gets_the_app_role(cp: SQLiteControlPlane,
                                              verifier: TokenVerifier) -> None:
    """A valid HS256 member token yields the tenant's app-role connection, released after."""
    pools = FakePools()
    assert await _route(pools, cp, verifier, hs256()) == ("acme", "app")
    assert await _route(pools, cp, verifier, hs256(email="ROOT@acme.com")) == ("acme", "app")
    assert pools.acquired == [("acme", "app"), ("acme", "app")]
    assert pools.released == 2


async def test_analyst_token_gets_the_readonly_role(cp: SQLiteControlPlane,
                                                    verifier: TokenVerifier) -> None:
    """An analyst is routed to the readonly role, also through TokenRouter."""
    pools = FakePools()
    router = TokenRouter(pools, cp, verifier)
    async with router.acquire(hs256(email="ana@acme.com")) as connection:
        assert connection == ("acme", "readonly")


@pytest.mark.parametrize(("token_claims", "reason"), [
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"aud": "someone-else"}, "audience"),
    ({"exp": None}, "'exp'"),
    ({"aud": None}, "'aud'"),
    ({"email": None}, "'email'"),
    ({"tenant_id": 42}, "must be strings"),
])
async def test_invalid_claims_are_refused(
    cp: SQLiteControlPlane, verifier: TokenVerifier, token_claims: dict[str, Any], reason: str,
) -> None:
    """Expired, wrong-audience and claim-less tokens are AccessDenied and acquire nothing."""
    pools = FakePools()
    token = hs256(**token_claims)
    with pytest.raises(AccessDenied, match=reason) as caught:
        await _route(pools, cp, verifier, token)
    assert token not in str(caught.value) and SECRET not in str(caught.value)
    assert pools.acquired == []


async def test_expiry_leeway_is_applied(tmp_path: Path, cp: SQLiteControlPlane) -> None:
    """A token expired 10 s ago passes with the default 30 s leeway and fails with none."""
    token = hs256(exp=int(time.time()) - 10)
    lenient = TokenVerifier.from_settings(settings(tmp_path, jwt_secret=SecretStr(SECRET)))
    strict = TokenVerifier.from_settings(settings(tmp_path, jwt_secret=SecretStr(SECRET),
                                                  jwt_leeway_s=0))
    assert await _route(FakePools(), cp, lenient, token) == ("acme", "app")
    with pytest.raises(AccessDenied, match="expired"):
        await _route(FakePools(), cp, strict, token)


async def test_wrong_secret_and_garbage_are_refused(cp: SQLiteControlPlane,
                                                    verifier: TokenVerifier) -> None:
    """A token signed with another secret, or not a JWT at all, is refused alike."""
    forged = jwt.encode(claims(), "x" * 40, algorithm="HS256")
    for token in (forged, "not.a.token", ""):
        with pytest.raises(AccessDenied, match="signature or format"):
            await _route(FakePools(), cp, verifier, token)


async def test_alg_none_is_refused(cp: SQLiteControlPlane, verifier: TokenVerifier) -> None:
    """An unsigned `alg: none` token is refused: the algorithm is pinned, not read."""
    token = hand_made({"alg": "none", "typ": "JWT"}, claims(), key=None)
    pools = FakePools()
    with pytest.raises(AccessDenied):
        await _route(pools, cp, verifier, token)
    assert pools.acquired == []


async def test_hs256_signed_with_the_public_key_is_refused_under_rs256(
    tmp_path: Path, cp: SQLiteControlPlane, rsa_pair: RsaPair,
) -> None:
    """Under RS256 an HS256 token whose HMAC key is the RSA public key PEM is refused."""
    verifier = TokenVerifier.from_settings(
        settings(tmp_path, jwt_public_key=rsa_pair.public_pem.decode()))
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), key=rsa_pair.public_pem)
    pools = FakePools()
    with pytest.raises(AccessDenied, match="algorithm is not the configured RS256"):
        await _route(pools, cp, verifier, token)
    assert pools.acquired == []


async def test_rs256_with_a_generated_key_pair(tmp_path: Path, cp: SQLiteControlPlane,
                                               rsa_pair: RsaPair) -> None:
    """RS256 tokens verify against the public key given as a file path or as PEM text."""
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(rsa_pair.public_pem)
    token = jwt.encode(claims(email="ana@acme.com"), rsa_pair.private_pem, algorithm="RS256")
    for source in (str(key_file), rsa_pair.public_pem.decode()):
        verifier = TokenVerifier.from_settings(settings(tmp_path, jwt_public_key=source))
        assert verifier.algorithm == "RS256"
        assert await _route(FakePools(), cp, verifier, token) == ("acme", "readonly")
    hs_verifier = TokenVerifier.from_settings(settings(tmp_path, jwt_secret=SecretStr(SECRET)))
    with pytest.raises(AccessDenied, match="algorithm is not the configured HS256"):
        await _route(FakePools(), cp, hs_verifier, token)


async def test_tenant_claim_mismatch_is_denied(cp: SQLiteControlPlane,
                                               verifier: TokenVerifier) -> None:
    """A valid token claiming another tenant than the user's mapping is AccessDenied."""
    pools = FakePools()
    with pytest.raises(AccessDenied, match="not the user's tenant") as caught:
        await _route(pools, cp, verifier, hs256(tenant_id="globex"))
    assert "acme" not in str(caught.value)
    assert pools.acquired == []


async def test_unknown_email_is_denied(cp: SQLiteControlPlane,
                                       verifier: TokenVerifier) -> None:
    """A valid token for an email missing from the users table is AccessDenied."""
    pools = FakePools()
    with pytest.raises(AccessDenied, match="not registered"):
        await _route(pools, cp, verifier, hs256(email="ghost@acme.com"))
    assert pools.acquired == []


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({}, "neither is set"),
    ({"jwt_secret": SecretStr(SECRET), "jwt_public_key": "/x.pem"}, "both are set"),
    ({"jwt_secret": SecretStr("short")}, "at least 32 bytes"),
    ({"jwt_public_key": "/does/not/exist.pem"}, "cannot read"),
    ({"jwt_public_key": "-----BEGIN PUBLIC KEY-----\ngarbage\n"}, "not a PEM public key"),
])
def test_verifier_settings_errors(tmp_path: Path, overrides: dict[str, Any],
                                  fragment: str) -> None:
    """Misconfiguration is a clear InvalidInput that never echoes the secret."""
    with pytest.raises(InvalidInput, match=fragment) as caught:
        TokenVerifier.from_settings(settings(tmp_path, **overrides))
    assert SECRET not in str(caught.value)


def test_non_rsa_public_key_is_refused(tmp_path: Path) -> None:
    """An EC public key is refused for RS256."""
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidInput, match="not an RSA public key"):
        TokenVerifier.from_settings(settings(tmp_path, jwt_public_key=pem.decode()))


# ------------------------------------------------------- M5/L4: canonical emails, iss, lifetime


@pytest.mark.parametrize("email", [
    "\u212aaren@acme.com",  # Kelvin sign: lower() and NFKC both make it "k"
    "mem@acme.co\u1d0d",  # small capital M
    "\uff4dem@acme.com",  # full-width m
    "mem@acme.\u0441om",  # Cyrillic es
    "m\u0065\u0301m@acme.com",  # combining accent
])
async def test_look_alike_emails_never_route_as_another_user(
    cp: SQLiteControlPlane, verifier: TokenVerifier, email: str,
) -> None:
    """M5: a signed token for a homoglyph of a registered email is refused, not folded."""
    await cp.add_user("karen@acme.com", "acme", "admin")
    pools = FakePools()
    with pytest.raises(AccessDenied, match=r"look-alike|plain ASCII"):
        await _route(pools, cp, verifier, hs256(email=email))
    assert pools.acquired == []


async def test_issuer_is_required_when_configured(tmp_path: Path,
                                                  cp: SQLiteControlPlane) -> None:
    """L4: with CLONER_JWT_ISSUER, a token without iss or with another iss is refused."""
    verifier = TokenVerifier.from_settings(settings(
        tmp_path, jwt_secret=SecretStr(SECRET), jwt_issuer="https://idp.example"))
    # Plain ASCII case differences still fold (MEM@Acme.COM is mem@acme.com).
    assert await _route(FakePools(), cp, verifier,
                        hs256(iss="https://idp.example", email="MEM@Acme.COM")) == ("acme", "app")
    with pytest.raises(AccessDenied, match="'iss'"):
        await _route(FakePools(), cp, verifier, hs256())
    with pytest.raises(AccessDenied, match="issuer is not"):
        await _route(FakePools(), cp, verifier, hs256(iss="https://evil.example"))


@pytest.mark.parametrize(("offsets", "reason"), [
    ({"exp": None, "iat": None}, r"exp too far"),  # exp in 2100, no iat
    ({"exp": None, "iat": 0}, r"exp - iat"),  # exp in 2100, iat now
    ({"exp": 60, "iat": -2 * 86_400}, r"exp - iat"),  # minted two days ago
])
async def test_token_lifetime_is_bounded(
    cp: SQLiteControlPlane, verifier: TokenVerifier, offsets: dict[str, Any], reason: str,
) -> None:
    """L4: tokens living longer than CLONER_JWT_MAX_LIFETIME_S (default one day) are refused."""
    now = int(time.time())  # here, not at collection: the suite may run minutes later
    token_claims = {
        "exp": 4_102_444_800 if offsets["exp"] is None else now + offsets["exp"],
        "iat": offsets["iat"] if not isinstance(offsets["iat"], int) else now + offsets["iat"],
    }
    pools = FakePools()
    with pytest.raises(AccessDenied, match=reason):
        await _route(pools, cp, verifier, hs256(**token_claims))
    assert pools.acquired == []


async def test_max_lifetime_setting_is_applied(tmp_path: Path, cp: SQLiteControlPlane) -> None:
    """A 10-minute token passes the default and fails a 5-minute maximum."""
    token = hs256(exp=int(time.time()) + 600, iat=int(time.time()))
    default = TokenVerifier.from_settings(settings(tmp_path, jwt_secret=SecretStr(SECRET)))
    short = TokenVerifier.from_settings(settings(tmp_path, jwt_secret=SecretStr(SECRET),
                                                 jwt_max_lifetime_s=300, jwt_leeway_s=0))
    assert await _route(FakePools(), cp, default, token) == ("acme", "app")
    with pytest.raises(AccessDenied, match="lifetime exceeds 300s"):
        await _route(FakePools(), cp, short, token)
