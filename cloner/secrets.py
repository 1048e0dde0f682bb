"""Secret material: generated passwords, the Fernet vault, key files and SCRAM verifiers.

Everything that leaves this module towards storage is encrypted; everything
towards PostgreSQL is a SCRAM verifier, never the cleartext password.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cloner import constants
from cloner.domain import Credentials, RoleCredential
from cloner.errors import ClonerError

SCRAM_ITERATIONS = 4096


class SecretsError(ClonerError):
    """A secret could not be read or decrypted (wrong CLONER_SECRET_KEY?)."""


def generate_password() -> str:
    """A fresh random password: 192 bits, URL-safe, 32 characters."""
    return secrets.token_urlsafe(constants.PASSWORD_BYTES)


TENANT_ROLES = ("owner", "app", "readonly")


#: PostgreSQL refuses role names starting with ``pg_`` (reserved for its own roles).
_RESERVED_ROLE_PREFIXES = ("pg_",)


def role_usernames(username_prefix: str) -> dict[str, str]:
    """Login names of the tenant roles: ``<sql identifier>_<role>``.

    A tenant id such as ``pg-shop`` is valid, but ``pg_shop_owner`` is a
    reserved PostgreSQL role name; such prefixes get a ``t_`` in front.
    """
    if username_prefix.startswith(_RESERVED_ROLE_PREFIXES):
        username_prefix = f"t_{username_prefix}"
    return {role: f"{username_prefix}_{role}" for role in TENANT_ROLES}


def generate_credentials(username_prefix: str, superuser: str = "postgres") -> Credentials:
    """Fresh credentials for one tenant; role names derive from its SQL identifier.

    ``superuser`` is the engine's administrative login (``EngineDriver.superuser``).
    """
    return Credentials(
        superuser=RoleCredential(superuser, generate_password()),
        bootstrap_password=generate_password(),
        roles={
            role: RoleCredential(username, generate_password())
            for role, username in role_usernames(username_prefix).items()
        },
    )


def write_private_file(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 atomically; never a moment at a wider mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another process won the race; its file is as good as ours.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_or_create(path: Path, factory: str) -> str:
    """Read a private file, creating it (0600) with ``factory`` when absent."""
    if not path.exists():
        write_private_file(path, factory)
    return path.read_text().strip()


def scram_sha256_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores, computed client-side (RFC 5802/7677).

    Sending the verifier instead of the password keeps the cleartext out of
    server logs and ``pg_stat_statements``.
    """
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


class Vault:
    """Encrypts credentials for the registry with Fernet; the first key encrypts.

    ``CLONER_SECRET_KEY`` may hold several comma-separated keys: new tokens use
    the first, old tokens still decrypt with any (``MultiFernet`` rotation).
    """

    def __init__(self, keys: str) -> None:
        try:
            fernets = [Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()]
        except ValueError as exc:
            raise SecretsError("CLONER_SECRET_KEY is not a valid Fernet key") from exc
        if not fernets:
            raise SecretsError("CLONER_SECRET_KEY is empty")
        self._fernet = MultiFernet(fernets)

    @staticmethod
    def new_key() -> str:
        """A fresh Fernet key."""
        return Fernet.generate_key().decode()

    def encrypt(self, plaintext: str) -> str:
        """Encrypt a string into a Fernet token."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt a Fernet token."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsError() from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the primary key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsError() from exc

    def seal_credentials(self, creds: Credentials) -> str:
        """Credentials → one Fernet token."""
        return self.encrypt(json.dumps(asdict(creds)))

    def open_credentials(self, token: str) -> Credentials:
        """One Fernet token → credentials."""
        data = json.loads(self.decrypt(token))
        return Credentials(
            superuser=RoleCredential(**data["superuser"]),
            bootstrap_password=data["bootstrap_password"],
            roles={name: RoleCredential(**r) for name, r in data["roles"].items()},
        )
