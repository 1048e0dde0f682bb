"""Unit tests of cloner.secrets: passwords, the Fernet vault, private files, SCRAM verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import stat
import string
from pathlib import Path

import pytest

from cloner.domain import Credentials, RoleCredential
from cloner.errors import ClonerError
from cloner.secrets import (
    SecretsError,
    Vault,
    generate_credentials,
    generate_password,
    read_or_create,
    role_usernames,
    scram_sha256_verifier,
    write_private_file,
)

URLSAFE = set(string.ascii_letters + string.digits + "-_")
VERIFIER = re.compile(
    r"^SCRAM-SHA-256\$4096:([A-Za-z0-9+/]+=*)\$([A-Za-z0-9+/]+=*):([A-Za-z0-9+/]+=*)$"
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------- passwords


def test_generated_passwords_are_long_url_safe_and_unique() -> None:
    """Passwords are at least 32 URL-safe characters and never repeat over 1000 draws."""
    passwords = [generate_password() for _ in range(1000)]
    assert all(len(p) >= 32 for p in passwords)
    assert all(set(p) <= URLSAFE for p in passwords)
    assert len(set(passwords)) == 1000


def test_generated_passwords_use_the_whole_alphabet() -> None:
    """Characters are spread over the 64-symbol alphabet (no low-entropy generator)."""
    seen = set("".join(generate_password() for _ in range(1000)))
    assert len(seen) >= 60


def test_generate_credentials_derives_role_names_and_distinct_passwords() -> None:
    """Each role gets `<prefix>_<role>` and every secret in the set is different."""
    creds = generate_credentials("acme_corp")
    assert {name: c.username for name, c in creds.roles.items()} == {
        "owner": "acme_corp_owner", "app": "acme_corp_app", "readonly": "acme_corp_readonly",
    }
    secrets = creds.all_secrets()
    assert len(secrets) == 5
    assert len(set(secrets)) == 5


def test_role_names_never_take_postgres_reserved_prefix() -> None:
    """Tenant ``pg-shop`` is valid; its roles must not be named ``pg_…`` (reserved)."""
    creds = generate_credentials("pg_shop", superuser="root")
    assert creds.superuser.username == "root"
    assert {c.username for c in creds.roles.values()} == {
        "t_pg_shop_owner", "t_pg_shop_app", "t_pg_shop_readonly",
    }
    assert role_usernames("pgshop")["owner"] == "pgshop_owner"  # only the ``pg_`` prefix


# ------------------------------------------------------------------- vault


def test_vault_encrypt_decrypt_round_trip() -> None:
    """A string encrypted by the vault decrypts back, and the token hides the plaintext."""
    vault = Vault(Vault.new_key())
    token = vault.encrypt("hunter2-but-longer")
    assert "hunter2" not in token
    assert vault.decrypt(token) == "hunter2-but-longer"


def test_vault_tokens_are_randomised() -> None:
    """Encrypting the same plaintext twice gives different tokens."""
    vault = Vault(Vault.new_key())
    assert vault.encrypt("same") != vault.encrypt("same")


def test_vault_seals_and_opens_credentials() -> None:
    """Credentials survive seal → open unchanged and the token holds no password."""
    vault = Vault(Vault.new_key())
    creds = Credentials(
        superuser=RoleCredential("postgres", "superpassword-123456"),
        bootstrap_password="bootstrap-abcdefgh",
        roles={"app": RoleCredential("acme_app", "app-password-987654")},
    )
    token = vault.seal_credentials(creds)
    for secret in creds.all_secrets():
        assert secret not in token
    assert vault.open_credentials(token) == creds


def test_vault_with_wrong_key_raises_secrets_error() -> None:
    """A token made under another key raises SecretsError, a ClonerError."""
    token = Vault(Vault.new_key()).encrypt("payload")
    with pytest.raises(SecretsError) as info:
        Vault(Vault.new_key()).decrypt(token)
    assert isinstance(info.value, ClonerError)
    assert "CLONER_SECRET_KEY" in str(info.value)


def test_vault_refuses_a_tampered_token() -> None:
    """A modified token does not decrypt."""
    vault = Vault(Vault.new_key())
    token = vault.encrypt("payload")
    tampered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    with pytest.raises(SecretsError):
        vault.decrypt(tampered)


@pytest.mark.parametrize("keys", ["", " , ", "not-a-fernet-key", "abc,def"])
def test_vault_refuses_invalid_key_strings(keys: str) -> None:
    """An empty or malformed CLONER_SECRET_KEY raises SecretsError at construction."""
    with pytest.raises(SecretsError):
        Vault(keys)


def test_vault_rotation_with_multifernet() -> None:
    """An old token decrypts with "new,old"; rotate re-encrypts it so "new" alone decrypts."""
    old_key, new_key = Vault.new_key(), Vault.new_key()
    token = Vault(old_key).encrypt("rotate-me")
    both = Vault(f"{new_key}, {old_key}")
    assert both.decrypt(token) == "rotate-me"
    with pytest.raises(SecretsError):
        Vault(new_key).decrypt(token)
    rotated = both.rotate(token)
    assert rotated != token
    assert Vault(new_key).decrypt(rotated) == "rotate-me"
    with pytest.raises(SecretsError):
        Vault(old_key).decrypt(rotated)


def test_vault_encrypts_with_the_first_key() -> None:
    """New tokens are made under the first key of the list."""
    first, second = Vault.new_key(), Vault.new_key()
    token = Vault(f"{first},{second}").encrypt("x")
    assert Vault(first).decrypt(token) == "x"
    with pytest.raises(SecretsError):
        Vault(second).decrypt(token)


# ----------------------------------------------------------- private files


def test_write_private_file_creates_0600_file_in_0700_dir(tmp_path: Path) -> None:
    """The file is mode 0600, a created parent is 0700, and no temp file is left behind."""
    path = tmp_path / "state" / "secret.key"
    write_private_file(path, "content")
    assert path.read_text() == "content"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]


def test_read_or_create_keeps_the_first_value(tmp_path: Path) -> None:
    """The first call creates the file; a second call returns the stored value, not the new one."""
    path = tmp_path / "admin.token"
    assert read_or_create(path, "first-value") == "first-value"
    assert read_or_create(path, "second-value") == "first-value"
    assert path.read_text() == "first-value"
    assert _mode(path) == 0o600


def test_read_or_create_strips_surrounding_whitespace(tmp_path: Path) -> None:
    """A key file edited by hand with a trailing newline reads back without it."""
    path = tmp_path / "secret.key"
    path.write_text("the-key\n")
    assert read_or_create(path, "unused") == "the-key"


# ------------------------------------------------------------------- SCRAM


def test_scram_verifier_has_postgres_format() -> None:
    """The verifier is SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey> in base64."""
    verifier = scram_sha256_verifier("correct horse battery staple")
    match = VERIFIER.fullmatch(verifier)
    assert match is not None, verifier
    salt, stored_key, server_key = (base64.b64decode(g) for g in match.groups())
    assert len(salt) == 16
    assert len(stored_key) == 32
    assert len(server_key) == 32
    assert "correct horse" not in verifier


def test_scram_verifier_is_deterministic_for_a_fixed_salt() -> None:
    """Same password and salt give the same verifier; another password gives another."""
    salt = b"0123456789abcdef"
    first = scram_sha256_verifier("password-one", salt=salt)
    assert scram_sha256_verifier("password-one", salt=salt) == first
    assert scram_sha256_verifier("password-two", salt=salt) != first


def test_scram_verifier_uses_a_fresh_salt_by_default() -> None:
    """Without a salt, two verifiers of one password differ (random salt)."""
    assert scram_sha256_verifier("same-password") != scram_sha256_verifier("same-password")


def test_scram_verifier_matches_rfc7677_exchange() -> None:
    """The verifier of user/pencil authenticates the RFC 7677 example exchange."""
    verifier = scram_sha256_verifier("pencil", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    match = VERIFIER.fullmatch(verifier)
    assert match is not None
    assert match.group(1) == "W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = base64.b64decode(match.group(2)), base64.b64decode(match.group(3))

    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        "n=user,r=rOprNGfwEbeRWgbNEkqO,"
        f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    ).encode()
    # Server side: the signature the RFC's server sends.
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == (
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )
    # Client proof from the RFC recovers a ClientKey whose hash is our StoredKey.
    client_proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(client_proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
