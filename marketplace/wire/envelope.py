"""Envelopes: a blob sealed to its readers (X25519 + AES-256-GCM) and bound to its author, task,
parent node and kind, signed by the author's Ethereum key. The bytes are laid out and read back
by `marketplace.wire.envelope_format` (its comment gives the format); the keys are
`marketplace.wire.keys`'."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from marketplace.errors import EnvelopeError
from marketplace.wire.envelope_format import (
    BODY_LENGTH,
    ENVELOPE_MAGIC,
    ENVELOPE_VERSION,
    KEY_SIZE,
    MAX_RECIPIENTS,
    NONCE_SIZE,
    PREFIX,
    WRAP_INFO,
    EnvelopeLayout,
    address_bytes,
    binding_context,
    kind_code,
    parse_envelope,
    show_binding,
    sign_digest,
    verified_author,
)
from marketplace.wire.keys import X25519KeyPair, private_key_of


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
    context = binding_context(
        kind_code(kind), address_bytes(account.address), chain_id, task_id, parent
    )
    content_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_SIZE)
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
    expected = address_bytes(expected_author)
    code = kind_code(kind)
    private = private_key_of(recipient_private_key)
    envelope = parse_envelope(blob)
    author = verified_author(envelope)
    if author != expected:
        raise EnvelopeError(
            f"signature is not the author's: signed by {to_checksum_address(author)}, "
            f"expected {to_checksum_address(expected)}"
        )
    wanted = {"task": task_id, "parent": parent, "kind": code, "chain": chain_id}
    found = {
        "task": envelope.task_id,
        "parent": envelope.parent,
        "kind": envelope.kind,
        "chain": envelope.chain_id,
    }
    if differing := [name for name in wanted if wanted[name] != found[name]]:
        shown = ", ".join(f"{name} {show_binding(name, found[name])}" for name in differing)
        raise EnvelopeError(f"bound to another {'/'.join(differing)}: sealed for {shown}")
    # The associated data comes from what the caller expects, not from the header.
    context = binding_context(code, expected, chain_id, task_id, parent)
    content_key = _content_key(envelope, private, context)
    try:
        return AESGCM(content_key).decrypt(envelope.nonce, envelope.body, context)
    except InvalidTag as exc:
        raise EnvelopeError(
            "tampered: the ciphertext does not decrypt under this author, task, parent and kind"
        ) from exc


def envelope_author(blob: bytes) -> str:
    """The checksum address that signed `blob` (EnvelopeError if the signature does not hold)."""
    return to_checksum_address(verified_author(parse_envelope(blob)))


def envelope_recipients(blob: bytes) -> list[bytes]:
    """The X25519 public keys `blob` is sealed to, in order; the signature is checked first."""
    envelope = parse_envelope(blob)
    verified_author(envelope)
    return [public for public, _ in envelope.recipients]


def _content_key(envelope: EnvelopeLayout, private: X25519PrivateKey, context: bytes) -> bytes:
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
        PREFIX.pack(ENVELOPE_MAGIC, ENVELOPE_VERSION, len(header)),
        header,
        BODY_LENGTH.pack(len(body)),
    ]
    digest = hashlib.sha256(b"".join(parts))
    digest.update(body)
    return b"".join([*parts, body, sign_digest(account, digest.digest())])


def _wrap_key(
    shared: bytes, ephemeral_public: bytes, recipient_public: bytes
) -> tuple[bytes, bytes]:
    """The key-wrapping key and nonce for one recipient (each is used exactly once)."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE + NONCE_SIZE,
        salt=None,
        info=WRAP_INFO + ephemeral_public + recipient_public,
    ).derive(shared)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


def _check_recipients(recipients: Sequence[bytes]) -> list[bytes]:
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"an envelope has 1 to {MAX_RECIPIENTS} recipients, not {len(recipients)}")
    publics = [bytes(public) for public in recipients]
    for position, public in enumerate(publics):
        if len(public) != KEY_SIZE:
            raise ValueError(
                f"recipient {position} is {len(public)} bytes, not a 32-byte X25519 key"
            )
    if len(set(publics)) != len(publics):
        raise ValueError("a recipient is listed twice")
    return publics
