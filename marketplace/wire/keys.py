"""The X25519 keys envelopes are sealed to: a key pair, a public key's hex form, and the key an
account derives per task from its Ethereum key (so a miner keeps no second secret)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from marketplace.wire.envelope_format import KEY_SIZE, uint256

ENCRYPTION_KEY_SALT = b"gradient-marketplace x25519 from secp256k1 v1"


@dataclass(frozen=True, repr=False, eq=False)
class X25519KeyPair:
    """A key pair that envelopes are sealed to; publish `public_bytes` (or `public_hex`)."""

    private_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> X25519KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> X25519KeyPair:
        if len(raw) != KEY_SIZE:
            raise ValueError(f"an X25519 private key is 32 bytes, not {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def derive(cls, eth_private_key: bytes, task_id: int) -> X25519KeyPair:
        """The pair `derive_encryption_key` gives for this Ethereum key and task."""
        return cls(derive_encryption_key(eth_private_key, task_id))

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    @property
    def public_hex(self) -> str:
        """The public key as 64 lowercase hex digits (how a task spec lists evaluator keys)."""
        return self.public_bytes.hex()

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes_raw()

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self.public_hex})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519KeyPair) and other.public_bytes == self.public_bytes

    def __hash__(self) -> int:
        return hash(self.public_bytes)


def public_key_from_hex(text: str) -> bytes:
    """A 32-byte X25519 public key from its hex form (with or without 0x)."""
    digits = text[2:] if text[:2].lower() == "0x" else text
    try:
        raw = bytes.fromhex(digits)
    except ValueError as exc:
        raise ValueError(f"not a hex X25519 public key: {text!r}") from exc
    if len(raw) != KEY_SIZE:
        raise ValueError(f"an X25519 public key is 32 bytes, not {len(raw)}")
    return raw


def derive_encryption_key(eth_private_key: bytes, task_id: int) -> X25519PrivateKey:
    """The X25519 key an account uses for `task_id`: HKDF-SHA256 of its Ethereum private key.

    Deterministic per (key, task) and different across tasks, so a miner keeps no second secret;
    the derived key reveals nothing about the Ethereum key.
    """
    if len(eth_private_key) != KEY_SIZE:
        raise ValueError(f"an Ethereum private key is 32 bytes, not {len(eth_private_key)}")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=ENCRYPTION_KEY_SALT,
        info=b"task" + uint256(task_id, "task_id"),
    )
    return X25519PrivateKey.from_private_bytes(hkdf.derive(eth_private_key))


def private_key_of(key: X25519PrivateKey | X25519KeyPair | bytes) -> X25519PrivateKey:
    if isinstance(key, X25519KeyPair):
        return key.private_key
    if isinstance(key, X25519PrivateKey):
        return key
    return X25519KeyPair.from_private_bytes(key).private_key
