"""Ed25519 signing keys kept in the state directory: approval decisions and audit checkpoints are signed
so that editing a row in the database cannot forge a decision or move a checkpoint.

A key is created on first use with ``O_EXCL`` (so two processes starting at once agree on one key) and
mode 0600. Signatures cover the canonical JSON of a payload.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from raygent.core.errors import ConfigError
from raygent.core.store.base import canonical_json, sha256_hex

__all__ = ["Signer", "load_or_create_key", "verify_signature"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key at ``path`` (PEM, PKCS#8), created with mode 0600 if missing.

    Raises:
        ConfigError: The file exists but is not an Ed25519 private key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            # link() fails if another process created the key first; then theirs wins.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return loaded


@dataclass(frozen=True)
class Signer:
    """Signs payloads with one Ed25519 key; ``key_id`` names the key in what it signs."""

    key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        return cls(load_or_create_key(path))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return sha256_hex(self.public_bytes.hex())[:16]

    def sign(self, payload: dict[str, Any]) -> str:
        return _b64(self.key.sign(canonical_json(payload).encode("utf-8")))

    def verify(self, payload: dict[str, Any], signature: str) -> bool:
        return verify_signature(self.public_key, payload, signature)


def verify_signature(public_key: Ed25519PublicKey, payload: dict[str, Any], signature: str) -> bool:
    """Whether ``signature`` is the key's signature of ``payload``'s canonical JSON."""
    try:
        public_key.verify(_unb64(signature), canonical_json(payload).encode("utf-8"))
    except (InvalidSignature, ValueError):
        return False
    return True
