"""``cloner keys rotate``: a new secret key first, every stored credential re-encrypted.

Where the keys live decides what rotation does:

- **Key file** (``<data dir>/secret.key``, no ``CLONER_SECRET_KEY``): one key per
  line, newest first. Rotation writes a fresh key in front of the old ones
  (atomic replace), re-encrypts every tenant's credentials under it, checks
  that every token now opens with the new key alone, and only then rewrites the
  file with the new key only. Running daemons and pools follow the file
  (``Vault.reload``), so none needs a restart.
- **``CLONER_SECRET_KEY``** (comma-separated, newest first): cloner cannot edit
  the environment. The operator puts a new key first (``NEW,OLD``) everywhere,
  runs the rotation, then removes the old key from the variable. A single key
  is refused: there is nothing to rotate to.

Resuming is built in, with no progress table: each token is re-encrypted on
its own (``MultiFernet.rotate``, compare-and-set in the control plane, a
``credentials_reencrypted`` event per tenant), tokens that already open with
the first key are skipped, and a key file with more than one key means an
earlier rotation was interrupted, so its first key is kept rather than a new
one generated. Re-running after a crash therefore finishes the same rotation.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cloner import constants
from cloner.controlplane import ControlPlane
from cloner.errors import ClonerError, InvalidInput
from cloner.logging import REDACTOR, get_logger
from cloner.secrets import (
    KEY_FILE_FIX,
    SecretsError,
    key_id,
    parse_keys,
    read_secret_file,
    replace_private_file,
)
from cloner.settings import Settings

log = get_logger(__name__)

#: A token rewritten by a worker while we re-encrypt it is re-read this many times.
_CAS_ATTEMPTS = 5


@dataclass(frozen=True)
class RotationReport:
    """What ``cloner keys rotate --json`` prints."""

    source: str  # "file" or "env"
    key_file: str | None
    key_id: str  # fingerprint of the key everything is now encrypted with
    resumed: bool
    tenants: int
    reencrypted: int
    already_current: int
    keys_before: int
    keys_after: int
    old_keys_removable: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape."""
        return asdict(self)


async def rotate_keys(settings: Settings, control_plane: ControlPlane) -> RotationReport:
    """Rotate to a new key (or finish an interrupted rotation); see the module docstring."""
    if settings.secret_key is not None:
        keys = parse_keys(settings.secret_key.get_secret_value())
        if len(keys) < 2:
            raise InvalidInput(
                "CLONER_SECRET_KEY holds one key, so there is nothing to rotate to: set it to "
                "NEW,OLD (a new Fernet key first; generate one with `python3 -c 'from "
                "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`) "
                "for every cloner process, then run this again"
            )
        REDACTOR.add(keys)
        reencrypted, current = await _reencrypt_all(keys, control_plane)
        return RotationReport(
            source="env", key_file=None, key_id=key_id(keys[0]), resumed=False,
            tenants=reencrypted + current, reencrypted=reencrypted, already_current=current,
            keys_before=len(keys), keys_after=len(keys), old_keys_removable=True,
        )
    path = settings.data_dir / constants.SECRET_KEY_FILE
    with _rotation_lock(path):
        keys = await asyncio.to_thread(_read_keys, path)
        keys_before, resumed = len(keys), len(keys) > 1
        if not resumed:
            keys = [Fernet.generate_key().decode(), *keys]
            # The new key goes in first, the old ones stay: whatever happens next, every
            # stored token opens with some key of the file.
            await asyncio.to_thread(_write_keys, path, keys)
            log.info("keys.rotation_started", key_id=key_id(keys[0]))
        else:
            log.info("keys.rotation_resumed", key_id=key_id(keys[0]), keys=len(keys))
        REDACTOR.add(keys)
        reencrypted, current = await _reencrypt_all(keys, control_plane)
        # Only now, with every token checked to open with the new key alone, the old go.
        await asyncio.to_thread(_write_keys, path, keys[:1])
        log.info("keys.rotation_finished", key_id=key_id(keys[0]), reencrypted=reencrypted,
                 retired=len(keys) - 1)
        return RotationReport(
            source="file", key_file=str(path), key_id=key_id(keys[0]), resumed=resumed,
            tenants=reencrypted + current, reencrypted=reencrypted, already_current=current,
            keys_before=keys_before, keys_after=1, old_keys_removable=True,
        )


async def _reencrypt_all(keys: list[str], control_plane: ControlPlane) -> tuple[int, int]:
    """Re-encrypt every stored token under ``keys[0]``; (re-encrypted, already current).

    Ends with a full pass that finds nothing left, so a token a worker wrote
    under an old key during the rotation is caught too.
    """
    primary = Fernet(keys[0].encode())
    multi = MultiFernet([Fernet(k.encode()) for k in keys])
    detail = {"key_id": key_id(keys[0])}
    reencrypted, current = 0, 0
    seen: set[str] = set()
    while True:
        moved = 0
        for tenant_id, token in await control_plane.credentials_tokens():
            if _opens_with(primary, token):
                if tenant_id not in seen:
                    current += 1
                    seen.add(tenant_id)
                continue
            await _reencrypt_one(tenant_id, token, multi, primary, control_plane, detail)
            moved += 1
            if tenant_id not in seen:
                reencrypted += 1
                seen.add(tenant_id)
        if moved == 0:
            return reencrypted, current


async def _reencrypt_one(  # noqa: PLR0917 - internal helper of _reencrypt_all
    tenant_id: str, token: str, multi: MultiFernet, primary: Fernet,
    control_plane: ControlPlane, detail: dict[str, Any],
) -> None:
    for _ in range(_CAS_ATTEMPTS):
        try:
            new = multi.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretsError(
                f"the credentials of tenant {tenant_id!r} open with none of the keys; "
                "the old keys are kept (restore the key that encrypted them and run "
                "`cloner keys rotate` again)"
            ) from None
        if await control_plane.replace_credentials_token(tenant_id, token, new, detail):
            log.info("keys.reencrypted", tenant_id=tenant_id, key_id=detail["key_id"])
            return
        latest = await control_plane.credentials_token(tenant_id)
        if latest is None or _opens_with(primary, latest):
            return  # rewritten meanwhile, by someone already using the new key
        token = latest
    raise ClonerError(f"the credentials of tenant {tenant_id!r} kept changing during the "
                      "rotation; run `cloner keys rotate` again")


def _opens_with(fernet: Fernet, token: str) -> bool:
    try:
        fernet.decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def _read_keys(path: Path) -> list[str]:
    if not path.exists():
        raise SecretsError(f"no secret key file {path}; " + KEY_FILE_FIX)
    keys = parse_keys(read_secret_file(path, None, "secret key file", if_empty=KEY_FILE_FIX))
    for key in keys:
        try:
            Fernet(key.encode())
        except ValueError:
            raise SecretsError(f"the secret key file {path} holds a line that is not a "
                               "Fernet key; restore the file from a backup") from None
    return keys


def _write_keys(path: Path, keys: list[str]) -> None:
    replace_private_file(path, "".join(f"{k}\n" for k in keys))


@contextmanager
def _rotation_lock(key_file: Path) -> Iterator[None]:
    """One rotation at a time per key file (two would each put a different key first)."""
    lock_path = key_file.with_name(key_file.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClonerError(
                f"another `cloner keys rotate` holds {lock_path}; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)
