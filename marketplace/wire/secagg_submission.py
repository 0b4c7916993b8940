"""A miner's masked, encrypted update as uploaded to the store: its bytes, written and read
back against every cap and what the round expects.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import gmpy2
from phe import paillier

from marketplace.wire.secagg_masks import MaskedRound
from marketplace.wire.secagg_packing import Packing, SecAggError

# A miner's encrypted update, as uploaded (public: anyone may aggregate). Big-endian.
#
#   offset  size   field
#   0       4      magic b"GMSA"
#   4       1      version: 1
#   5       32     key id: sha256 of n (big-endian, key_bits / 8 bytes)
#   37      32     round id: sha256 of the round's context (which masks)
#   69      4      values in the update
#   73      1      slot bits
#   74      2      slots a plaintext
#   76      W * k  k = ceil(values / slots) ciphertexts, W = 2 * key_bits / 8 bytes each
#
# No signature: the chain binds the blob's digest to its author. A reader checks the size cap
# before anything else, then every header field against what the round expects, the exact
# length, and that each ciphertext is a unit mod n**2 (0 < c < n**2, coprime to n).

SUBMISSION_MAGIC = b"GMSA"
SUBMISSION_VERSION = 1
MAX_VALUES = 50_000_000  # the largest update an aggregate round takes (a 200 MB float32 model)
_SUBMISSION_HEADER = struct.Struct(">4sB32s32sIBH")


def key_id(public: paillier.PaillierPublicKey) -> bytes:
    """Which Paillier key: sha256 of n's big-endian bytes."""
    n = int(public.n)
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).digest()


def _ciphertext_width(public: paillier.PaillierPublicKey) -> int:
    return (int(public.nsquare).bit_length() + 7) // 8


def encode_submission(
    ciphertexts: Sequence[int],
    public: paillier.PaillierPublicKey,
    packing: Packing,
    masked: MaskedRound,
    values: int,
) -> bytes:
    if not 0 < values <= MAX_VALUES or len(ciphertexts) != packing.plaintexts(values):
        raise SecAggError(f"{len(ciphertexts)} ciphertexts for {values} values")
    header = _SUBMISSION_HEADER.pack(
        SUBMISSION_MAGIC,
        SUBMISSION_VERSION,
        key_id(public),
        hashlib.sha256(masked.context).digest(),
        values,
        packing.slot_bits,
        packing.slots,
    )
    width = _ciphertext_width(public)
    return header + b"".join(c.to_bytes(width, "big") for c in ciphertexts)


def submission_values(blob: bytes) -> int:
    """How many values a submission declares (its header only: trust it no further)."""
    if len(blob) < _SUBMISSION_HEADER.size or blob[:4] != SUBMISSION_MAGIC:
        raise SecAggError("not an aggregate submission")
    return int(_SUBMISSION_HEADER.unpack_from(blob)[4])


def decode_submission(
    blob: bytes,
    public: paillier.PaillierPublicKey,
    packing: Packing,
    masked: MaskedRound,
    values: int,
) -> list[int]:
    """The ciphertexts of a submission to this round, or SecAggError saying what is wrong."""
    width, count = _ciphertext_width(public), packing.plaintexts(values)
    expected_size = _SUBMISSION_HEADER.size + width * count
    if len(blob) != expected_size:  # the size cap, before anything is parsed
        raise SecAggError(
            f"{len(blob):,} bytes; a submission of {values:,} values has {expected_size:,}"
        )
    magic, version, key, round_id, declared, slot_bits, slots = _SUBMISSION_HEADER.unpack_from(blob)
    if (magic, version) != (SUBMISSION_MAGIC, SUBMISSION_VERSION):
        raise SecAggError(f"not a version {SUBMISSION_VERSION} aggregate submission")
    if key != key_id(public):
        raise SecAggError("encrypted under another Paillier key")
    if round_id != hashlib.sha256(masked.context).digest():
        raise SecAggError("masked for another round")
    if (declared, slot_bits, slots) != (values, packing.slot_bits, packing.slots):
        raise SecAggError(
            f"packed as {declared} values, {slot_bits}-bit slots, {slots} a plaintext; the round "
            f"packs {values}, {packing.slot_bits}-bit, {packing.slots}"
        )
    n, nsquare = gmpy2.mpz(public.n), public.nsquare
    out = []
    for k in range(count):
        start = _SUBMISSION_HEADER.size + k * width
        c = int.from_bytes(blob[start : start + width], "big")
        if not 0 < c < nsquare or gmpy2.gcd(c, n) != 1:
            raise SecAggError(f"ciphertext {k} is not a unit mod n**2")
        out.append(c)
    return out
