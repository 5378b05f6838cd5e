"""Provider secrets at rest: AES-256-GCM under keys kept outside the database.

A keyring holds the current key (new ciphertexts) and previous keys (still readable
until `spec-workflow secrets rotate` re-encrypts their rows). Each ciphertext records
the id of its key, and its associated data binds it to one user and provider, so a
ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class VaultError(Exception):
    """A key is malformed or missing, or a ciphertext does not decrypt."""


def generate_key() -> str:
    """A new key, as SECRETS_KEY expects it (url-safe base64 of 32 random bytes)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{43}=")


def parse_key(text: str) -> bytes:
    """A key as `generate_key` writes it: exactly 44 url-safe base64 characters."""
    if not KEY_TEXT.fullmatch(text.strip()):
        raise VaultError(
            f"a secrets key must be url-safe base64 of {KEY_BYTES} bytes "
            "(spec-workflow secrets generate-key)"
        )
    try:
        return base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError) as exc:
        raise VaultError("a secrets key must be url-safe base64") from exc


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (not a secret: SHA-256 of it)."""
    return hashlib.sha256(b"spec-workflow-key:" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


def _aad(user_id: UUID, provider: str) -> bytes:
    return f"spec-workflow:{user_id}:{provider}".encode()


class Keyring:
    """The current key plus older ones that may still be read."""

    def __init__(self, current: bytes, previous: list[bytes] | None = None) -> None:
        self.current_id = key_id(current)
        self._keys = {key_id(k): k for k in [*(previous or []), current]}

    def seal(self, user_id: UUID, provider: str, plaintext: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        key = self._keys[self.current_id]
        data = AESGCM(key).encrypt(nonce, plaintext.encode(), _aad(user_id, provider))
        return Sealed(self.current_id, nonce, data)

    def open(self, user_id: UUID, provider: str, sealed: Sealed) -> str:
        key = self._keys.get(sealed.key_id)
        if key is None:
            raise VaultError(
                f"no key {sealed.key_id} in the keyring: "
                "add it to SECRETS_PREVIOUS_KEYS"
            )
        try:
            plain = AESGCM(key).decrypt(
                sealed.nonce, sealed.ciphertext, _aad(user_id, provider)
            )
        except InvalidTag as exc:
            raise VaultError("a stored secret failed authentication") from exc
        return plain.decode()


def load_keyring(
    *,
    key: str | None,
    key_file: Path | None,
    previous: list[str],
    dev_key_file: Path | None,
) -> tuple[Keyring, str]:
    """The keyring from SECRETS_KEY or SECRETS_KEY_FILE, or a local dev key.

    `dev_key_file` is given only where a generated key is acceptable (disabled auth
    mode); it is created (mode 0600) if missing. Returns the keyring and where the
    current key came from.
    """
    if key:
        current, origin = parse_key(key), "SECRETS_KEY"
    elif key_file is not None:
        try:
            current, origin = parse_key(key_file.read_text()), str(key_file)
        except OSError as exc:
            raise VaultError(f"cannot read SECRETS_KEY_FILE {key_file}: {exc}") from exc
    elif dev_key_file is not None:
        current, origin = (
            parse_key(dev_secret_file(dev_key_file)),
            f"dev:{dev_key_file}",
        )
    else:
        raise VaultError("no secrets key: set SECRETS_KEY or SECRETS_KEY_FILE")
    return Keyring(current, [parse_key(p) for p in previous if p.strip()]), origin


def dev_secret_file(path: Path) -> str:
    """Read, or create with mode 0600, a random local secret (development only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()  # another process won the race
        with os.fdopen(fd, "w") as out:
            out.write(generate_key() + "\n")
    return path.read_text().strip()
