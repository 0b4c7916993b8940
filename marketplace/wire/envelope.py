"""Envelopes: a blob sealed to its readers (X25519 + AES-256-GCM) and bound to its author, task,
parent node and kind, signed by the author's Ethereum key."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils.address import (
    is_checksum_address,
    is_hex_address,
    to_canonical_address,
    to_checksum_address,
)

from marketplace.errors import EnvelopeError

# ==============================================================================================
# Envelopes: a blob sealed to its readers and bound to its author, task, parent node and kind.
#
# A random 256-bit content key encrypts the plaintext once with AES-256-GCM; the content key is
# wrapped once per recipient under a key agreed between a fresh ephemeral X25519 key (one per
# envelope) and the recipient's X25519 key. The "context" (format version, kind, author, chain,
# task, parent) is the associated data of the content encryption AND of every wrap, so an
# envelope opens only under the binding it was sealed with; the author signs everything, so
# anyone can tell who made it without a key.
#
# Format, version 1. Integers are big-endian; uint256 fields take 32 bytes.
#
#   offset       size    field
#   0            4       magic b"GMEV"
#   4            1       version: 1
#   5            2       header length H = 162 + 80 * n (at most MAX_HEADER_SIZE)
#   7            1         kind: 1 update, 2 merge, 3 architecture, 4 validation, 5 delivery
#   8            20        author: the Ethereum address that signs the envelope
#   28           32        chain id (0: bound to no chain)
#   60           32        task id
#   92           32        parent node id
#   124          32        E: ephemeral X25519 public key, fresh for every envelope
#   156          12        content nonce
#   168          1         n: number of recipients, 1..MAX_RECIPIENTS
#   169          80 * n    per recipient: X25519 public key R (32) || wrapped content key (32 + 16)
#   7 + H        8       ciphertext length L (at least 16)
#   15 + H       L       AES-256-GCM(content key, content nonce, plaintext, ad=context), tag last
#   15 + H + L   65      r || s || v (v in {27, 28}, s in the lower half of the order): the
#                        author's EIP-191 personal_sign of SIGN_DOMAIN || sha256(bytes [0, 15+H+L))
#
#   context      = magic || version || kind || author || chain id || task id || parent (122 bytes)
#   kek || nonce = HKDF-SHA256(X25519(e, R), salt=none, info=WRAP_INFO || E || R), 32 + 12 bytes
#   wrapped      = AES-256-GCM(kek, nonce, content key, ad=context || E || R)
#
# A reader checks, in order: the size cap, the layout (every length against its cap before any
# slice), the signature (it must recover to the author the header names, who must be the author
# expected), the binding, that it is a recipient, the wrap, and the ciphertext.
# ==============================================================================================

ENVELOPE_MAGIC = b"GMEV"
ENVELOPE_VERSION = 1
MAX_RECIPIENTS = 64
ENVELOPE_KINDS: dict[str, int] = {
    "update": 1,
    "merge": 2,
    "architecture": 3,
    "validation": 4,
    "delivery": 5,  # the winner, sealed to the sponsor at settlement (delivery.py)
}
SIGN_DOMAIN = b"gradient-marketplace envelope v1\nsha256:"
WRAP_INFO = b"gradient-marketplace envelope v1 wrap"
ENCRYPTION_KEY_SALT = b"gradient-marketplace x25519 from secp256k1 v1"

_PREFIX = struct.Struct(">4sBH")  # magic, version, header length
_FIXED = struct.Struct(">B20s32s32s32s32s12sB")  # kind ... recipient count
_BODY_LENGTH = struct.Struct(">Q")
_KEY_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_RECIPIENT_SIZE = _KEY_SIZE + _KEY_SIZE + _TAG_SIZE
_SIGNATURE_SIZE = 65
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_KIND_NAMES = {code: name for name, code in ENVELOPE_KINDS.items()}

MAX_HEADER_SIZE = _FIXED.size + MAX_RECIPIENTS * _RECIPIENT_SIZE
MIN_ENVELOPE_SIZE = (
    _PREFIX.size + _FIXED.size + _RECIPIENT_SIZE + _BODY_LENGTH.size + _TAG_SIZE + _SIGNATURE_SIZE
)


@dataclass(frozen=True, repr=False, eq=False)
class X25519KeyPair:
    """A key pair that envelopes are sealed to; publish `public_bytes` (or `public_hex`)."""

    private_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> X25519KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> X25519KeyPair:
        if len(raw) != _KEY_SIZE:
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
    if len(raw) != _KEY_SIZE:
        raise ValueError(f"an X25519 public key is 32 bytes, not {len(raw)}")
    return raw


def derive_encryption_key(eth_private_key: bytes, task_id: int) -> X25519PrivateKey:
    """The X25519 key an account uses for `task_id`: HKDF-SHA256 of its Ethereum private key.

    Deterministic per (key, task) and different across tasks, so a miner keeps no second secret;
    the derived key reveals nothing about the Ethereum key.
    """
    if len(eth_private_key) != _KEY_SIZE:
        raise ValueError(f"an Ethereum private key is 32 bytes, not {len(eth_private_key)}")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_SIZE,
        salt=ENCRYPTION_KEY_SALT,
        info=b"task" + _uint256(task_id, "task_id"),
    )
    return X25519PrivateKey.from_private_bytes(hkdf.derive(eth_private_key))


def seal(
    plaintext: bytes,
    recipients: Sequence[bytes],
    author_key: LocalAccount | bytes,
    *,
    task_id: int,
    parent: int,
    kind: str,
    chain_id: int = 0,
) -> bytes:
    """Encrypt `plaintext` to `recipients` (32-byte X25519 public keys), bound and signed.

    Args:
        author_key: the author's account, or its 32-byte secp256k1 private key.
        task_id, parent, kind, chain_id: the binding; `open_envelope` must be given the same.

    Raises:
        ValueError: no recipients, more than MAX_RECIPIENTS, a key that is not 32 bytes (or is a
            low-order point), a repeated key, an unknown kind, or an id outside uint256.
    """
    account = author_key if isinstance(author_key, LocalAccount) else Account.from_key(author_key)
    publics = _check_recipients(recipients)
    context = _context(_kind_code(kind), _address_bytes(account.address), chain_id, task_id, parent)
    content_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE_SIZE)
    body = AESGCM(content_key).encrypt(nonce, plaintext, context)
    return _assemble(account, context, content_key, nonce, body, publics)


def open_envelope(
    blob: bytes,
    recipient_private_key: X25519PrivateKey | X25519KeyPair | bytes,
    *,
    expected_author: str,
    task_id: int,
    parent: int,
    kind: str,
    max_size: int,
    chain_id: int = 0,
) -> bytes:
    """The plaintext of `blob`, if it is sealed to this key by `expected_author` for this binding.

    Raises:
        EnvelopeError: too large, truncated, malformed, unsupported version, tampered, signed by
            someone else, bound to another task/parent/kind/chain, or not a recipient.
        ValueError: `expected_author` is not an address, `kind` is unknown, or a key is malformed.
    """
    if len(blob) > max_size:
        raise EnvelopeError(f"too large: {len(blob)} bytes, the cap is {max_size}")
    expected = _address_bytes(expected_author)
    kind_code = _kind_code(kind)
    private = _recipient_key(recipient_private_key)
    envelope = _parse(blob)
    author = _verified_author(envelope)
    if author != expected:
        raise EnvelopeError(
            f"signature is not the author's: signed by {to_checksum_address(author)}, "
            f"expected {to_checksum_address(expected)}"
        )
    wanted = {"task": task_id, "parent": parent, "kind": kind_code, "chain": chain_id}
    found = {
        "task": envelope.task_id,
        "parent": envelope.parent,
        "kind": envelope.kind,
        "chain": envelope.chain_id,
    }
    if differing := [name for name in wanted if wanted[name] != found[name]]:
        shown = ", ".join(f"{name} {_show_binding(name, found[name])}" for name in differing)
        raise EnvelopeError(f"bound to another {'/'.join(differing)}: sealed for {shown}")
    # The associated data comes from what the caller expects, not from the header.
    context = _context(kind_code, expected, chain_id, task_id, parent)
    content_key = _content_key(envelope, private, context)
    try:
        return AESGCM(content_key).decrypt(envelope.nonce, envelope.body, context)
    except InvalidTag as exc:
        raise EnvelopeError(
            "tampered: the ciphertext does not decrypt under this author, task, parent and kind"
        ) from exc


def envelope_author(blob: bytes) -> str:
    """The checksum address that signed `blob` (EnvelopeError if the signature does not hold)."""
    return to_checksum_address(_verified_author(_parse(blob)))


def envelope_recipients(blob: bytes) -> list[bytes]:
    """The X25519 public keys `blob` is sealed to, in order; the signature is checked first."""
    envelope = _parse(blob)
    _verified_author(envelope)
    return [public for public, _ in envelope.recipients]


@dataclass(frozen=True)
class _Envelope:
    """A parsed envelope; `body` and `signed` are views into the blob, not copies."""

    kind: int
    author: bytes
    chain_id: int
    task_id: int
    parent: int
    ephemeral: bytes
    nonce: bytes
    recipients: tuple[tuple[bytes, bytes], ...]  # (public key, wrapped content key)
    body: memoryview
    signed: memoryview
    signature: bytes


def _parse(blob: bytes) -> _Envelope:
    """Check the layout against every cap before slicing; nothing is decrypted or verified."""
    view = memoryview(blob)
    size = len(view)
    if size < _PREFIX.size:
        raise EnvelopeError(f"truncated: {size} bytes, shorter than the envelope prefix")
    magic, version, header_size = _PREFIX.unpack_from(view)
    if magic != ENVELOPE_MAGIC:
        raise EnvelopeError("not an envelope: wrong magic bytes")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported version {version} (this reader knows {ENVELOPE_VERSION})")
    if not _FIXED.size + _RECIPIENT_SIZE <= header_size <= MAX_HEADER_SIZE:
        raise EnvelopeError(f"malformed: header length {header_size} is outside its bounds")
    body_at = _PREFIX.size + header_size + _BODY_LENGTH.size
    if size < body_at:
        raise EnvelopeError(f"truncated: {size} bytes, the header alone needs {body_at}")
    kind, author, chain, task, parent, ephemeral, nonce, count = _FIXED.unpack_from(
        view, _PREFIX.size
    )
    if not 1 <= count <= MAX_RECIPIENTS:
        raise EnvelopeError(f"malformed: {count} recipients (1 to {MAX_RECIPIENTS} allowed)")
    if header_size != _FIXED.size + count * _RECIPIENT_SIZE:
        raise EnvelopeError(f"malformed: header length {header_size} for {count} recipients")
    if kind not in _KIND_NAMES:
        raise EnvelopeError(f"malformed: unknown kind {kind}")
    (body_size,) = _BODY_LENGTH.unpack_from(view, body_at - _BODY_LENGTH.size)
    if body_size < _TAG_SIZE:
        raise EnvelopeError(f"malformed: a {body_size}-byte ciphertext has no room for its tag")
    end = body_at + body_size
    if size < end + _SIGNATURE_SIZE:
        raise EnvelopeError(f"truncated: {size} bytes, the envelope declares {end + 65}")
    if size > end + _SIGNATURE_SIZE:
        raise EnvelopeError(f"malformed: {size - end - 65} bytes after the signature")
    first = _PREFIX.size + _FIXED.size
    entries = (
        bytes(view[at : at + _RECIPIENT_SIZE])
        for at in range(first, first + count * _RECIPIENT_SIZE, _RECIPIENT_SIZE)
    )
    return _Envelope(
        kind=kind,
        author=author,
        chain_id=int.from_bytes(chain, "big"),
        task_id=int.from_bytes(task, "big"),
        parent=int.from_bytes(parent, "big"),
        ephemeral=ephemeral,
        nonce=nonce,
        recipients=tuple((entry[:_KEY_SIZE], entry[_KEY_SIZE:]) for entry in entries),
        body=view[body_at:end],
        signed=view[:end],
        signature=bytes(view[end:]),
    )


def _verified_author(envelope: _Envelope) -> bytes:
    """The 20-byte author, once the signature is canonical and recovers to the header's author."""
    signature = envelope.signature
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if signature[64] not in (27, 28) or not (
        0 < r < _SECP256K1_ORDER and 0 < s <= _SECP256K1_ORDER // 2
    ):
        raise EnvelopeError("tampered: the signature is not a canonical secp256k1 signature")
    message = encode_defunct(primitive=SIGN_DOMAIN + hashlib.sha256(envelope.signed).digest())
    try:
        signer = _address_bytes(Account.recover_message(message, signature=signature))
    except (BadSignature, ValueError) as exc:
        raise EnvelopeError("tampered: the signature does not verify") from exc
    if signer != envelope.author:
        raise EnvelopeError(
            f"tampered: the envelope names {to_checksum_address(envelope.author)} as its author "
            "but the signature does not recover to it"
        )
    return signer


def _content_key(envelope: _Envelope, private: X25519PrivateKey, context: bytes) -> bytes:
    """Unwrap the content key with the recipient's private key."""
    own = private.public_key().public_bytes_raw()
    wrapped = next((w for public, w in envelope.recipients if public == own), None)
    if wrapped is None:
        raise EnvelopeError(f"not a recipient: the envelope is not sealed to {own.hex()}")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(envelope.ephemeral))
    except ValueError as exc:  # a low-order point gives an all-zero secret
        raise EnvelopeError("tampered: the ephemeral key is not a usable X25519 key") from exc
    kek, nonce = _wrap_key(shared, envelope.ephemeral, own)
    try:
        return AESGCM(kek).decrypt(nonce, wrapped, context + envelope.ephemeral + own)
    except InvalidTag as exc:
        raise EnvelopeError(
            "tampered: the content key does not unwrap under this author, task, parent and kind"
        ) from exc


def _assemble(
    account: LocalAccount,
    context: bytes,
    content_key: bytes,
    nonce: bytes,
    body: bytes,
    recipients: Sequence[bytes],
) -> bytes:
    """Wrap `content_key` to each recipient under `context`, lay out the envelope and sign it."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    entries = []
    for position, public in enumerate(recipients):
        try:
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError as exc:
            raise ValueError(f"recipient {position} is not a usable X25519 public key") from exc
        kek, wrap_nonce = _wrap_key(shared, ephemeral_public, public)
        wrapped = AESGCM(kek).encrypt(wrap_nonce, content_key, context + ephemeral_public + public)
        entries.append(public + wrapped)
    # context = magic || version || kind || author || chain || task || parent
    header = context[5:] + ephemeral_public + nonce + bytes([len(entries)]) + b"".join(entries)
    parts = [
        _PREFIX.pack(ENVELOPE_MAGIC, ENVELOPE_VERSION, len(header)),
        header,
        _BODY_LENGTH.pack(len(body)),
    ]
    digest = hashlib.sha256(b"".join(parts))
    digest.update(body)
    return b"".join([*parts, body, _sign(account, digest.digest())])


def _sign(account: LocalAccount, digest: bytes) -> bytes:
    """The author's EIP-191 signature of SIGN_DOMAIN || digest, as r || s || v."""
    return bytes(account.sign_message(encode_defunct(primitive=SIGN_DOMAIN + digest)).signature)


def _wrap_key(
    shared: bytes, ephemeral_public: bytes, recipient_public: bytes
) -> tuple[bytes, bytes]:
    """The key-wrapping key and nonce for one recipient (each is used exactly once)."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_SIZE + _NONCE_SIZE,
        salt=None,
        info=WRAP_INFO + ephemeral_public + recipient_public,
    ).derive(shared)
    return okm[:_KEY_SIZE], okm[_KEY_SIZE:]


def _context(kind: int, author: bytes, chain_id: int, task_id: int, parent: int) -> bytes:
    """The associated data every encryption of an envelope is bound to."""
    return b"".join(
        [
            ENVELOPE_MAGIC,
            bytes([ENVELOPE_VERSION, kind]),
            author,
            _uint256(chain_id, "chain_id"),
            _uint256(task_id, "task_id"),
            _uint256(parent, "parent"),
        ]
    )


def _check_recipients(recipients: Sequence[bytes]) -> list[bytes]:
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"an envelope has 1 to {MAX_RECIPIENTS} recipients, not {len(recipients)}")
    publics = [bytes(public) for public in recipients]
    for position, public in enumerate(publics):
        if len(public) != _KEY_SIZE:
            raise ValueError(
                f"recipient {position} is {len(public)} bytes, not a 32-byte X25519 key"
            )
    if len(set(publics)) != len(publics):
        raise ValueError("a recipient is listed twice")
    return publics


def _recipient_key(key: X25519PrivateKey | X25519KeyPair | bytes) -> X25519PrivateKey:
    if isinstance(key, X25519KeyPair):
        return key.private_key
    if isinstance(key, X25519PrivateKey):
        return key
    return X25519KeyPair.from_private_bytes(key).private_key


def _kind_code(kind: str) -> int:
    if kind not in ENVELOPE_KINDS:
        raise ValueError(f"unknown envelope kind {kind!r} (one of {', '.join(ENVELOPE_KINDS)})")
    return ENVELOPE_KINDS[kind]


def _show_binding(name: str, value: int) -> str:
    return _KIND_NAMES.get(value, str(value)) if name == "kind" else str(value)


def _address_bytes(address: str) -> bytes:
    mixed_case = address != address.lower() and address != address.upper()
    if not is_hex_address(address) or (mixed_case and not is_checksum_address(address)):
        raise ValueError(f"not an Ethereum address (or a wrong checksum): {address!r}")
    return to_canonical_address(address)


def _uint256(value: int, name: str) -> bytes:
    if not 0 <= value < 2**256:
        raise ValueError(f"{name} must fit in a uint256, got {value}")
    return value.to_bytes(32, "big")
