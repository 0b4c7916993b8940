"""The envelope's bytes: the layout (version 1), reading it back against every cap, the
binding every encryption is bound to, and the author's signature over it. Nothing here holds a
key: sealing and opening (`marketplace.wire.envelope`) use these.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

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

PREFIX = struct.Struct(">4sBH")  # magic, version, header length
FIXED = struct.Struct(">B20s32s32s32s32s12sB")  # kind ... recipient count
BODY_LENGTH = struct.Struct(">Q")
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
RECIPIENT_SIZE = KEY_SIZE + KEY_SIZE + TAG_SIZE
SIGNATURE_SIZE = 65
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
KIND_NAMES = {code: name for name, code in ENVELOPE_KINDS.items()}

MAX_HEADER_SIZE = FIXED.size + MAX_RECIPIENTS * RECIPIENT_SIZE
MIN_ENVELOPE_SIZE = (
    PREFIX.size + FIXED.size + RECIPIENT_SIZE + BODY_LENGTH.size + TAG_SIZE + SIGNATURE_SIZE
)


@dataclass(frozen=True)
class EnvelopeLayout:
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


def parse_envelope(blob: bytes) -> EnvelopeLayout:
    """Check the layout against every cap before slicing; nothing is decrypted or verified."""
    view = memoryview(blob)
    size = len(view)
    if size < PREFIX.size:
        raise EnvelopeError(f"truncated: {size} bytes, shorter than the envelope prefix")
    magic, version, header_size = PREFIX.unpack_from(view)
    if magic != ENVELOPE_MAGIC:
        raise EnvelopeError("not an envelope: wrong magic bytes")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported version {version} (this reader knows {ENVELOPE_VERSION})")
    if not FIXED.size + RECIPIENT_SIZE <= header_size <= MAX_HEADER_SIZE:
        raise EnvelopeError(f"malformed: header length {header_size} is outside its bounds")
    body_at = PREFIX.size + header_size + BODY_LENGTH.size
    if size < body_at:
        raise EnvelopeError(f"truncated: {size} bytes, the header alone needs {body_at}")
    kind, author, chain, task, parent, ephemeral, nonce, count = FIXED.unpack_from(
        view, PREFIX.size
    )
    if not 1 <= count <= MAX_RECIPIENTS:
        raise EnvelopeError(f"malformed: {count} recipients (1 to {MAX_RECIPIENTS} allowed)")
    if header_size != FIXED.size + count * RECIPIENT_SIZE:
        raise EnvelopeError(f"malformed: header length {header_size} for {count} recipients")
    if kind not in KIND_NAMES:
        raise EnvelopeError(f"malformed: unknown kind {kind}")
    (body_size,) = BODY_LENGTH.unpack_from(view, body_at - BODY_LENGTH.size)
    if body_size < TAG_SIZE:
        raise EnvelopeError(f"malformed: a {body_size}-byte ciphertext has no room for its tag")
    end = body_at + body_size
    if size < end + SIGNATURE_SIZE:
        raise EnvelopeError(f"truncated: {size} bytes, the envelope declares {end + 65}")
    if size > end + SIGNATURE_SIZE:
        raise EnvelopeError(f"malformed: {size - end - 65} bytes after the signature")
    first = PREFIX.size + FIXED.size
    entries = (
        bytes(view[at : at + RECIPIENT_SIZE])
        for at in range(first, first + count * RECIPIENT_SIZE, RECIPIENT_SIZE)
    )
    return EnvelopeLayout(
        kind=kind,
        author=author,
        chain_id=int.from_bytes(chain, "big"),
        task_id=int.from_bytes(task, "big"),
        parent=int.from_bytes(parent, "big"),
        ephemeral=ephemeral,
        nonce=nonce,
        recipients=tuple((entry[:KEY_SIZE], entry[KEY_SIZE:]) for entry in entries),
        body=view[body_at:end],
        signed=view[:end],
        signature=bytes(view[end:]),
    )


def verified_author(envelope: EnvelopeLayout) -> bytes:
    """The 20-byte author, once the signature is canonical and recovers to the header's author."""
    signature = envelope.signature
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if signature[64] not in (27, 28) or not (
        0 < r < SECP256K1_ORDER and 0 < s <= SECP256K1_ORDER // 2
    ):
        raise EnvelopeError("tampered: the signature is not a canonical secp256k1 signature")
    message = encode_defunct(primitive=SIGN_DOMAIN + hashlib.sha256(envelope.signed).digest())
    try:
        signer = address_bytes(Account.recover_message(message, signature=signature))
    except (BadSignature, ValueError) as exc:
        raise EnvelopeError("tampered: the signature does not verify") from exc
    if signer != envelope.author:
        raise EnvelopeError(
            f"tampered: the envelope names {to_checksum_address(envelope.author)} as its author "
            "but the signature does not recover to it"
        )
    return signer


def sign_digest(account: LocalAccount, digest: bytes) -> bytes:
    """The author's EIP-191 signature of SIGN_DOMAIN || digest, as r || s || v."""
    return bytes(account.sign_message(encode_defunct(primitive=SIGN_DOMAIN + digest)).signature)


def binding_context(kind: int, author: bytes, chain_id: int, task_id: int, parent: int) -> bytes:
    """The associated data every encryption of an envelope is bound to."""
    return b"".join(
        [
            ENVELOPE_MAGIC,
            bytes([ENVELOPE_VERSION, kind]),
            author,
            uint256(chain_id, "chain_id"),
            uint256(task_id, "task_id"),
            uint256(parent, "parent"),
        ]
    )


def kind_code(kind: str) -> int:
    if kind not in ENVELOPE_KINDS:
        raise ValueError(f"unknown envelope kind {kind!r} (one of {', '.join(ENVELOPE_KINDS)})")
    return ENVELOPE_KINDS[kind]


def show_binding(name: str, value: int) -> str:
    return KIND_NAMES.get(value, str(value)) if name == "kind" else str(value)


def address_bytes(address: str) -> bytes:
    mixed_case = address != address.lower() and address != address.upper()
    if not is_hex_address(address) or (mixed_case and not is_checksum_address(address)):
        raise ValueError(f"not an Ethereum address (or a wrong checksum): {address!r}")
    return to_canonical_address(address)


def uint256(value: int, name: str) -> bytes:
    if not 0 <= value < 2**256:
        raise ValueError(f"{name} must fit in a uint256, got {value}")
    return value.to_bytes(32, "big")
