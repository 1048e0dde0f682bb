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
from collections.abc import Iterator
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


#: Rotated logins are ``<privilege role>_r<n>``: the tenant's own names, whatever the generation.
ROTATED_SUFFIX = "_r"


def rotated_login(grantee: str, current: str) -> str:
    """The next login of a rotated role: ``<grantee>_r1`` after ``<grantee>``, then ``_r2``…"""
    prefix = grantee + ROTATED_SUFFIX
    generation = current[len(prefix):]
    n = int(generation) if current.startswith(prefix) and generation.isdigit() else 0
    return f"{prefix}{n + 1}"


def own_login_pattern(grantees: list[str]) -> str:
    """A regular expression matching every login (any generation) of these privilege roles."""
    return "^(" + "|".join(grantees) + ")(" + ROTATED_SUFFIX + "[0-9]+)?$"


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


@contextlib.contextmanager
def _private_temp(path: Path, content: str) -> Iterator[Path]:
    """A fsynced 0600 file beside ``path`` holding ``content``, removed afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_private_file(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 atomically; never a moment at a wider mode."""
    with _private_temp(path, content) as tmp, contextlib.suppress(FileExistsError):
        # link() fails if another process won the race; its file is as good as ours.
        os.link(tmp, path)


def read_or_create(path: Path, factory: str) -> str:
    """Read a private file, creating it (0600) with ``factory`` when absent."""
    if not path.exists():
        write_private_file(path, factory)
    return path.read_text().strip()


def replace_private_file(path: Path, content: str) -> None:
    """Replace ``path`` atomically with a 0600 file: readers see the old or the new text."""
    with _private_temp(path, content) as tmp:
        tmp.replace(path)
    # The rename itself must survive a crash, or a restart could find the old keys.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: Tokens shorter than this are refused (admin and metrics tokens, given or read).
MIN_TOKEN_CHARS = 32
#: Bytes of entropy in a generated token (``secrets.token_urlsafe``: 43 characters).
GENERATED_TOKEN_BYTES = 32


def generate_token() -> str:
    """A fresh bearer token with 256 bits of entropy."""
    return secrets.token_urlsafe(GENERATED_TOKEN_BYTES)


def token_problem(value: str) -> str | None:
    """Why ``value`` (already stripped) is not an acceptable bearer token, or None."""
    if not value:
        return "is empty"
    if len(value) < MIN_TOKEN_CHARS:
        return f"is too short ({len(value)} characters; at least {MIN_TOKEN_CHARS} are needed)"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "contains whitespace or control characters"
    return None


def read_secret_file(
    path: Path, factory: str | None, what: str, *,
    if_empty: str = "delete it to have a new one generated",
) -> str:
    """A private secret file's stripped content, created (0600) from ``factory`` when absent.

    Fails closed (``SecretsError`` with the fix in the message) when the file is
    readable or writable by group or others: its content may have leaked, so
    cloner neither uses it silently nor repairs the mode behind the operator's back.
    An empty file is corrupt, never an empty secret.
    """
    if factory is not None and not path.exists():
        write_private_file(path, factory)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise SecretsError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise SecretsError(
            f"the {what} {path} is accessible by group or others (mode {mode & 0o777:04o}); "
            f"run `chmod 600 {path}` and, if someone else may have read it, replace it"
        )
    if not text.strip():
        raise SecretsError(
            f"the {what} {path} is empty (corrupt); {if_empty}"
        )
    return text.strip()


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


def parse_keys(text: str) -> list[str]:
    """Fernet keys from ``CLONER_SECRET_KEY`` or the key file, newest (the encrypting one) first.

    Keys are separated by commas or newlines, so an old one-key file still reads.
    """
    return [k.strip() for line in text.splitlines() for k in line.split(",") if k.strip()]


def key_id(key: str) -> str:
    """A short fingerprint naming a key in output and events (reveals nothing of it)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


#: What to do about an empty or missing key file: a new key could not decrypt the registry.
KEY_FILE_FIX = (
    "restore it from a backup of the data dir (a new key cannot decrypt the stored "
    "credentials), or set CLONER_SECRET_KEY"
)


class Vault:
    """Encrypts credentials for the registry with Fernet; the first key encrypts.

    ``CLONER_SECRET_KEY`` may hold several comma-separated keys: new tokens use
    the first, old tokens still decrypt with any (``MultiFernet`` rotation).
    A vault read from the key file follows that file: ``cloner keys rotate``
    rewrites it while daemons run, so the vault re-reads it when it changed
    (checked before encrypting) and when a token decrypts with none of its keys.
    """

    def __init__(self, keys: str | list[str], *, key_file: Path | None = None) -> None:
        self._key_file = key_file
        self._stamp: tuple[int, int, int] | None = None
        self._load(parse_keys(keys) if isinstance(keys, str) else keys)
        if key_file is not None:
            self._stamp = _file_stamp(key_file)

    def _load(self, keys: list[str]) -> None:
        try:
            fernets = [Fernet(k.encode()) for k in keys]
        except ValueError as exc:
            raise SecretsError("CLONER_SECRET_KEY is not a valid Fernet key") from exc
        if not fernets:
            raise SecretsError("CLONER_SECRET_KEY is empty")
        self.keys = list(keys)
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_key_file(cls, path: Path, *, create: bool) -> Vault:
        """The vault of a key file (one key per line, newest first), created when ``create``."""
        factory = Fernet.generate_key().decode() + "\n" if create else None
        if not create and not path.exists():
            raise SecretsError(f"cannot read the secret key file {path}: it does not exist; "
                               + KEY_FILE_FIX)
        text = read_secret_file(path, factory, "secret key file", if_empty=KEY_FILE_FIX)
        return cls(text, key_file=path)

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the key file if it changed (or ``force``); True when the keys changed."""
        if self._key_file is None:
            return False
        stamp = _file_stamp(self._key_file)
        if not force and stamp == self._stamp:
            return False
        keys = parse_keys(read_secret_file(self._key_file, None, "secret key file",
                                           if_empty=KEY_FILE_FIX))
        changed = keys != self.keys
        self._load(keys)
        self._stamp = stamp
        return changed

    @staticmethod
    def new_key() -> str:
        """A fresh Fernet key."""
        return Fernet.generate_key().decode()

    def encrypt(self, plaintext: str) -> str:
        """Encrypt a string into a Fernet token (under the newest key of the key file)."""
        # A rotation may have put a new key first: never encrypt under one being retired.
        self.reload()
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt a Fernet token."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            # Re-encrypted by a rotation under a key this process has not read yet?
            if self.reload(force=True):
                return self.decrypt(token)
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
        # Tokens sealed before credential rotation existed lack the rotation fields.
        retire_after = data.get("retire_after")
        return Credentials(
            superuser=RoleCredential(**data["superuser"]),
            bootstrap_password=data["bootstrap_password"],
            roles={name: RoleCredential(**r) for name, r in data["roles"].items()},
            grantees={str(k): str(v) for k, v in data.get("grantees", {}).items()},
            pending={name: RoleCredential(**r) for name, r in data.get("pending", {}).items()},
            retiring={name: RoleCredential(**r) for name, r in data.get("retiring", {}).items()},
            retire_after=float(retire_after) if retire_after is not None else None,
            rotation_request=data.get("rotation_request"),
            rotated={str(k): str(v) for k, v in data.get("rotated", {}).items()},
        )


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten: inode, mtime, size."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
