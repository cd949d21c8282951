"""The master key, authenticated encryption of secrets, and API-key hashing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from servicebay.core.errors import ConfigurationError

KEY_BYTES = 32
NONCE_BYTES = 12
API_KEY_PREFIX = "bay_"
API_KEY_TOKEN_LENGTH = 43  # secrets.token_urlsafe(32)
API_KEY_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class MasterKey:
    """The instance's key-encryption key; `key_id` tells which key sealed a ciphertext."""

    material: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"servicebay-key-id" + self.material).hexdigest()[:16]

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        """Encrypt with AES-256-GCM; `context` is bound as associated data.

        Binding the secret's name means a ciphertext copied onto another row fails to open.
        """
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.material).encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, *, context: str) -> bytes:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            if len(nonce) != NONCE_BYTES:  # truncated: AESGCM would raise a bare ValueError
                raise InvalidTag
            return AESGCM(self.material).decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise ConfigurationError(
                f"cannot decrypt {context!r}: it was sealed with another master key "
                "or has been tampered with"
            ) from None

    @classmethod
    def decode(cls, text: str, *, origin: str) -> MasterKey:
        try:
            material = base64.urlsafe_b64decode(text.strip().encode())
        except (binascii.Error, ValueError):
            material = b""
        if len(material) != KEY_BYTES:
            raise ConfigurationError(
                f"the master key in {origin} is not {KEY_BYTES} bytes of urlsafe base64"
            )
        return cls(material)

    def encode(self) -> str:
        return base64.urlsafe_b64encode(self.material).decode()

    def identity_key(self, name: str) -> str:
        """The key that signs the `X-Bay-Identity` of calls to the server or code service
        `name` (HKDF-SHA256 of the master key, for that name), as the text it gets in
        `BAY_IDENTITY_KEY`: it can verify the identities sent to it, but learns nothing of
        the master key, which opens every secret, nor of another's key, so it cannot
        sign an identity that another server or service would take (were it called on its
        port directly, past the gateway)."""
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=None,
            info=b"servicebay identity v2 " + name.encode(),
        ).derive(self.material)
        return base64.urlsafe_b64encode(derived).decode().rstrip("=")


def generate_master_key() -> MasterKey:
    return MasterKey(os.urandom(KEY_BYTES))


def write_master_key(path: Path, key: MasterKey) -> None:
    """Create the key file readable by its owner only; never overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.encode() + "\n")


def load_master_key(*, env_value: str | None, path: Path) -> MasterKey:
    if env_value:
        return MasterKey.decode(env_value, origin="BAY_MASTER_KEY")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigurationError(
            f"no master key: {path} does not exist and BAY_MASTER_KEY is not set "
            "(run `bay init` to create an instance)"
        ) from None
    return MasterKey.decode(text, origin=str(path))


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def is_well_formed_api_key(candidate: str) -> bool:
    token = candidate[len(API_KEY_PREFIX) :]
    return (
        candidate.startswith(API_KEY_PREFIX)
        and len(token) == API_KEY_TOKEN_LENGTH
        and set(token) <= API_KEY_ALPHABET
    )


def hash_api_key(key: str) -> str:
    """SHA-256 suffices: keys carry 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()
