"""Envelopes: sealed to the task's readers, bound to author, task, parent and kind, signed.

Offsets below are those of the format comment in marketplace/wire/envelope_format.py (version 1).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.errors import EnvelopeError
from marketplace.wire import envelope, envelope_format
from marketplace.wire.envelope import envelope_author, envelope_recipients, open_envelope, seal
from marketplace.wire.envelope_format import (
    ENVELOPE_KINDS,
    MAX_HEADER_SIZE,
    MAX_RECIPIENTS,
    MIN_ENVELOPE_SIZE,
)
from marketplace.wire.keys import X25519KeyPair, derive_encryption_key, public_key_from_hex

MIB = 1 << 20
CAP = 16 * MIB
TASK, PARENT, KIND = 7, 3, "update"
SIGNATURE = 65
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# header fields, by offset in the blob
KIND_AT, AUTHOR, CHAIN, TASK_ID, PARENT_ID = (
    7,
    slice(8, 28),
    slice(28, 60),
    slice(60, 92),
    slice(92, 124),
)
EPHEMERAL_AT, COUNT_AT, RECIPIENTS_AT = 124, 168, 169


def account(name: str) -> LocalAccount:
    signer: LocalAccount = Account.from_key(hashlib.sha256(name.encode()).digest())
    return signer


def x25519(name: str) -> X25519KeyPair:
    return X25519KeyPair.from_private_bytes(hashlib.sha256(b"x25519 " + name.encode()).digest())


ALICE, MALLORY = account("alice"), account("mallory")
EVALUATORS = [x25519(f"evaluator {i}") for i in range(5)]
OUTSIDER = x25519("outsider")


def sealed(plaintext: bytes = b"weights", readers: int = 1, **binding: Any) -> bytes:
    bound: dict[str, Any] = {"task_id": TASK, "parent": PARENT, "kind": KIND} | binding
    recipients = [pair.public_bytes for pair in EVALUATORS[:readers]]
    return seal(plaintext, recipients, ALICE, **bound)


def opened(
    blob: bytes, key: X25519KeyPair | X25519PrivateKey | bytes = EVALUATORS[0], **overrides: Any
) -> bytes:
    expected: dict[str, Any] = {
        "expected_author": ALICE.address,
        "task_id": TASK,
        "parent": PARENT,
        "kind": KIND,
        "max_size": CAP,
    }
    return open_envelope(blob, key, **(expected | overrides))


def resigned(blob: bytes, signer: LocalAccount) -> bytes:
    """The same bytes with `signer`'s signature in place of the author's."""
    signed = blob[:-SIGNATURE]
    return signed + envelope_format.sign_digest(signer, hashlib.sha256(signed).digest())


def rewritten(blob: bytes, where: slice | int, value: bytes, signer: LocalAccount) -> bytes:
    """`blob` with header bytes replaced and signed again, as a forger with a key would."""
    edited = bytearray(blob)
    edited[where if isinstance(where, slice) else slice(where, where + 1)] = value
    return resigned(bytes(edited), signer)


# round trips


@pytest.mark.parametrize("readers", [1, 2, 5])
def test_every_recipient_opens_and_an_outsider_cannot(readers: int) -> None:
    blob = sealed(b"model weights", readers)

    for reader in EVALUATORS[:readers]:
        assert opened(blob, reader) == b"model weights"
    with pytest.raises(EnvelopeError, match="^not a recipient"):
        opened(blob, OUTSIDER)
    assert envelope_recipients(blob) == [pair.public_bytes for pair in EVALUATORS[:readers]]
    assert envelope_author(blob) == ALICE.address


@settings(derandomize=True, max_examples=20, deadline=None)
@given(
    plaintext=st.binary(max_size=4096),
    readers=st.integers(min_value=1, max_value=len(EVALUATORS)),
    kind=st.sampled_from(sorted(ENVELOPE_KINDS)),
    task_id=st.integers(min_value=0, max_value=2**256 - 1),
    parent=st.integers(min_value=0, max_value=2**32),
)
def test_random_plaintexts_round_trip_to_random_recipient_counts(
    plaintext: bytes, readers: int, kind: str, task_id: int, parent: int
) -> None:
    blob = sealed(plaintext, readers, kind=kind, task_id=task_id, parent=parent)

    bound = {"kind": kind, "task_id": task_id, "parent": parent}
    assert opened(blob, EVALUATORS[0], **bound) == plaintext
    assert opened(blob, EVALUATORS[readers - 1], **bound) == plaintext
    assert len(blob) == MIN_ENVELOPE_SIZE + len(plaintext) + (readers - 1) * 80


@pytest.mark.parametrize("size", [0, MIB])
def test_empty_and_one_mebibyte_plaintexts_round_trip(size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256)

    assert opened(sealed(plaintext, 2), EVALUATORS[1]) == plaintext


def test_a_private_key_in_bytes_seals_like_its_account() -> None:
    blob = seal(
        b"w", [EVALUATORS[0].public_bytes], ALICE.key, task_id=TASK, parent=PARENT, kind=KIND
    )

    assert envelope_author(blob) == ALICE.address
    assert opened(blob, EVALUATORS[0].private_bytes()) == b"w"
    assert opened(blob, EVALUATORS[0].private_key) == b"w"


def test_sixty_four_recipients_is_the_cap() -> None:
    readers = [X25519KeyPair.generate() for _ in range(MAX_RECIPIENTS)]
    blob = seal(b"w", [r.public_bytes for r in readers], ALICE, task_id=1, parent=0, kind="merge")

    assert len(blob) - len(b"w") == MIN_ENVELOPE_SIZE + 63 * 80
    assert (
        open_envelope(
            blob,
            readers[-1],
            expected_author=ALICE.address,
            task_id=1,
            parent=0,
            kind="merge",
            max_size=CAP,
        )
        == b"w"
    )
    with pytest.raises(ValueError, match="1 to 64 recipients"):
        seal(
            b"w",
            [r.public_bytes for r in readers] + [OUTSIDER.public_bytes],
            ALICE,
            task_id=1,
            parent=0,
            kind="merge",
        )


# tampering


def test_flipping_any_bit_of_a_small_envelope_is_detected() -> None:
    blob = sealed(b"tiny update")

    reasons = set()
    for position in range(len(blob)):
        flipped = bytearray(blob)
        flipped[position] ^= 1 << (position % 8)
        with pytest.raises(EnvelopeError) as caught:
            opened(bytes(flipped))
        reasons.add(str(caught.value).split(":")[0])
    assert {reason.split(" ")[0] for reason in reasons} <= {
        "tampered",
        "not",  # not an envelope
        "unsupported",
        "malformed",
        "truncated",
    }
    assert {"tampered", "not an envelope", "malformed", "truncated"} <= reasons


def test_flipping_bytes_across_a_larger_envelope_is_detected() -> None:
    blob = sealed(bytes(range(256)) * 16, readers=5)
    positions = sorted({*range(0, len(blob), 53), *range(len(blob) - SIGNATURE, len(blob), 8)})

    for position in positions:
        flipped = bytearray(blob)
        flipped[position] ^= 0x80
        with pytest.raises(EnvelopeError):
            opened(bytes(flipped), EVALUATORS[4])


def test_flipping_a_byte_then_signing_again_is_caught_by_the_encryption() -> None:
    """Even the author's own signature over altered bytes does not get them opened."""
    blob = sealed(b"tiny update", readers=2)
    wrap = RECIPIENTS_AT + 80 + 32  # EVALUATORS[1]'s wrapped key
    body = RECIPIENTS_AT + 2 * 80 + 8  # after the ciphertext length
    positions = [
        *range(EPHEMERAL_AT, COUNT_AT),
        *range(wrap, wrap + 48),
        *range(body, len(blob) - SIGNATURE),
    ]

    for position in positions[::3]:
        flipped = bytearray(blob)
        flipped[position] ^= 0x04
        with pytest.raises(EnvelopeError, match="^tampered: the (content key|ciphertext)"):
            opened(resigned(bytes(flipped), ALICE), EVALUATORS[1])


def test_a_signature_by_someone_else_over_the_same_bytes_is_refused() -> None:
    blob = resigned(sealed(), MALLORY)  # the header still names Alice

    with pytest.raises(EnvelopeError, match="^tampered: .* does not recover"):
        envelope_author(blob)
    with pytest.raises(EnvelopeError, match="^tampered"):
        opened(blob, expected_author=MALLORY.address)


def test_swapping_the_author_and_re_signing_is_caught_by_the_associated_data() -> None:
    blob = sealed()
    forged = rewritten(blob, AUTHOR, bytes.fromhex(MALLORY.address[2:]), MALLORY)

    assert envelope_author(forged) == MALLORY.address  # a valid signature, by Mallory
    with pytest.raises(EnvelopeError, match="^tampered: the content key does not unwrap"):
        opened(forged, expected_author=MALLORY.address)
    with pytest.raises(EnvelopeError, match="^signature is not the author's: signed by 0x"):
        opened(forged, expected_author=ALICE.address)


def test_re_wrapping_alices_ciphertext_under_mallorys_name_is_caught() -> None:
    """Mallory reads Alice's content key (she is a recipient too, as miners are of merges), wraps
    it anew for the evaluator under her own name and signs; Alice's ciphertext stays Alice's."""
    mallory_reader = x25519("mallory's encryption key")
    blob = seal(
        b"alice's model",
        [EVALUATORS[0].public_bytes, mallory_reader.public_bytes],
        ALICE,
        task_id=TASK,
        parent=PARENT,
        kind="merge",
    )
    alice = envelope_format.parse_envelope(blob)
    kind = ENVELOPE_KINDS["merge"]
    alice_context = envelope_format.binding_context(kind, alice.author, 0, TASK, PARENT)
    content_key = envelope._content_key(alice, mallory_reader.private_key, alice_context)
    mallory_context = envelope_format.binding_context(
        kind, bytes.fromhex(MALLORY.address[2:]), 0, TASK, PARENT
    )

    forged = envelope._assemble(
        MALLORY,
        mallory_context,
        content_key,
        alice.nonce,
        bytes(alice.body),
        [EVALUATORS[0].public_bytes],
    )

    assert envelope_author(forged) == MALLORY.address
    with pytest.raises(EnvelopeError, match="^tampered: the ciphertext does not decrypt"):
        opened(forged, expected_author=MALLORY.address, kind="merge")
    assert opened(blob, expected_author=ALICE.address, kind="merge") == b"alice's model"


def test_a_high_s_twin_of_the_signature_is_refused() -> None:
    blob = sealed()
    r, s, v = blob[-65:-33], int.from_bytes(blob[-33:-1], "big"), blob[-1]
    twin = blob[:-65] + r + (SECP256K1_ORDER - s).to_bytes(32, "big") + bytes([55 - v])

    with pytest.raises(EnvelopeError, match="^tampered: the signature is not a canonical"):
        opened(twin)


# binding


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"task_id": TASK + 1}, "bound to another task: sealed for task 7"),
        ({"parent": PARENT + 1}, "bound to another parent: sealed for parent 3"),
        ({"kind": "merge"}, "bound to another kind: sealed for kind update"),
        ({"chain_id": 1}, "bound to another chain: sealed for chain 0"),
        ({"task_id": 8, "parent": 9}, "bound to another task/parent: sealed for task 7, parent 3"),
    ],
)
def test_opening_under_another_binding_fails(override: dict[str, Any], reason: str) -> None:
    with pytest.raises(EnvelopeError, match=f"^{reason}$"):
        opened(sealed(), **override)


def test_a_chain_bound_envelope_opens_only_on_its_chain() -> None:
    blob = sealed(chain_id=31337)

    assert opened(blob, chain_id=31337) == b"weights"
    with pytest.raises(EnvelopeError, match="^bound to another chain"):
        opened(blob)


@pytest.mark.parametrize(
    ("where", "value", "override"),
    [
        (TASK_ID, (TASK + 1).to_bytes(32, "big"), {"task_id": TASK + 1}),
        (PARENT_ID, (PARENT + 1).to_bytes(32, "big"), {"parent": PARENT + 1}),
        (KIND_AT, bytes([ENVELOPE_KINDS["merge"]]), {"kind": "merge"}),
        (CHAIN, (5).to_bytes(32, "big"), {"chain_id": 5}),
    ],
)
def test_rebinding_the_header_and_re_signing_is_caught_by_the_associated_data(
    where: slice | int, value: bytes, override: dict[str, Any]
) -> None:
    forged = rewritten(sealed(), where, value, ALICE)

    with pytest.raises(EnvelopeError, match="^tampered: the content key does not unwrap"):
        opened(forged, **override)


# malformed input


def test_every_truncation_fails_cleanly() -> None:
    blob = sealed(b"tiny update")

    for length in range(len(blob)):
        with pytest.raises(EnvelopeError, match="^truncated: "):
            opened(blob[:length])


def test_bytes_after_the_signature_are_refused() -> None:
    with pytest.raises(EnvelopeError, match="^malformed: 1 bytes after the signature"):
        opened(sealed() + b"\x00")


def test_an_envelope_over_the_cap_is_refused_before_it_is_read() -> None:
    blob = sealed(bytes(1000))

    assert opened(blob, max_size=len(blob)) == bytes(1000)
    with pytest.raises(EnvelopeError, match=f"^too large: {len(blob)} bytes, the cap is 1000$"):
        opened(blob, max_size=1000)
    with pytest.raises(EnvelopeError, match="^too large"):
        opened(b"GMEV" + bytes(CAP))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda b: b"GMEX" + b[4:], "not an envelope: wrong magic bytes"),
        (lambda b: b[:4] + b"\x02" + b[5:], r"unsupported version 2 \(this reader knows 1\)"),
        (lambda b: b[:5] + struct.pack(">H", 0xFFFF) + b[7:], "malformed: header length 65535"),
        (lambda b: b[:5] + struct.pack(">H", MAX_HEADER_SIZE + 80) + b[7:], "malformed: header"),
        (lambda b: b[:5] + struct.pack(">H", 162) + b[7:], "malformed: header length 162"),
        (lambda b: b[:COUNT_AT] + b"\xc8" + b[COUNT_AT + 1 :], "malformed: 200 recipients"),
        (lambda b: b[:COUNT_AT] + b"\x00" + b[COUNT_AT + 1 :], "malformed: 0 recipients"),
        (
            lambda b: b[:COUNT_AT] + b"\x02" + b[COUNT_AT + 1 :],
            "malformed: header length 242 for 2",
        ),
        (lambda b: b[:KIND_AT] + b"\x09" + b[KIND_AT + 1 :], "malformed: unknown kind 9"),
        (lambda b: b[:249] + struct.pack(">Q", 2**63) + b[257:], "truncated: .* declares"),
        (lambda b: b[:249] + struct.pack(">Q", 15) + b[257:], "malformed: a 15-byte ciphertext"),
    ],
)
def test_malformed_layouts_are_refused_with_their_reason(edit: Any, reason: str) -> None:
    blob = sealed(b"tiny update")

    with pytest.raises(EnvelopeError, match=f"^{reason}"):
        opened(edit(blob))
    with pytest.raises(EnvelopeError, match=f"^{reason}"):
        envelope_recipients(edit(blob))


# keys


def test_derived_encryption_keys_are_deterministic_per_key_and_task() -> None:
    def derived(key: bytes, task_id: int) -> bytes:
        return derive_encryption_key(key, task_id).public_key().public_bytes_raw()

    assert derived(ALICE.key, 1) == derived(ALICE.key, 1)
    assert len({derived(ALICE.key, 1), derived(ALICE.key, 2), derived(MALLORY.key, 1)}) == 3
    assert X25519KeyPair.derive(ALICE.key, 1).public_bytes == derived(ALICE.key, 1)
    assert X25519KeyPair.derive(ALICE.key, 1).private_bytes() != bytes(ALICE.key)


def test_a_miner_opens_a_merge_with_the_key_it_derives_again() -> None:
    miner = account("miner")
    blob = seal(
        b"merge",
        [X25519KeyPair.derive(miner.key, TASK).public_bytes],
        ALICE,
        task_id=TASK,
        parent=PARENT,
        kind="merge",
    )

    assert opened(blob, derive_encryption_key(miner.key, TASK), kind="merge") == b"merge"
    with pytest.raises(EnvelopeError, match="^not a recipient"):
        opened(blob, derive_encryption_key(miner.key, TASK + 1), kind="merge")


def test_key_pair_helpers_round_trip() -> None:
    pair = X25519KeyPair.generate()

    assert (
        X25519KeyPair.from_private_bytes(pair.private_bytes()) == pair != X25519KeyPair.generate()
    )
    assert len(pair.public_bytes) == 32 and bytes.fromhex(pair.public_hex) == pair.public_bytes
    assert public_key_from_hex("0x" + pair.public_hex.upper()) == pair.public_bytes
    assert pair.public_hex in repr(pair) and pair.private_bytes().hex() not in repr(pair)
    with pytest.raises(ValueError, match="32 bytes, not 31"):
        X25519KeyPair.from_private_bytes(bytes(31))
    with pytest.raises(ValueError, match="32 bytes, not 33"):
        public_key_from_hex("00" * 33)
    with pytest.raises(ValueError, match="not 20"):
        derive_encryption_key(bytes(20), 1)


@pytest.mark.parametrize(
    ("recipients", "binding", "reason"),
    [
        ([], {}, "1 to 64 recipients, not 0"),
        ([bytes(31)], {}, "recipient 0 is 31 bytes"),
        ([EVALUATORS[0].public_bytes] * 2, {}, "listed twice"),
        ([bytes(32)], {}, "recipient 0 is not a usable X25519 public key"),  # low order
        ([EVALUATORS[0].public_bytes], {"kind": "gradient"}, "unknown envelope kind 'gradient'"),
        ([EVALUATORS[0].public_bytes], {"task_id": -1}, "task_id must fit in a uint256"),
        ([EVALUATORS[0].public_bytes], {"parent": 2**256}, "parent must fit in a uint256"),
    ],
)
def test_seal_refuses_bad_arguments(
    recipients: list[bytes], binding: dict[str, Any], reason: str
) -> None:
    bound: dict[str, Any] = {"task_id": TASK, "parent": PARENT, "kind": KIND} | binding
    with pytest.raises(ValueError, match=reason):
        seal(b"w", recipients, ALICE, **bound)


def test_open_refuses_an_expected_author_that_is_not_an_address() -> None:
    blob = sealed()
    bad_checksum = ALICE.address[:2] + ALICE.address[2:].swapcase()

    with pytest.raises(ValueError, match="not an Ethereum address"):
        opened(blob, expected_author=bad_checksum)
    with pytest.raises(ValueError, match="not an Ethereum address"):
        opened(blob, expected_author="alice")
    assert opened(blob, expected_author=ALICE.address.lower()) == b"weights"
