"""Secure aggregation of a round's updates with packed Paillier and pairwise masks.

Each miner clips its update, quantizes it to fixed point, packs many values into each Paillier
plaintext, adds pairwise masks that cancel in the sum, and encrypts under the task's key.
Anyone multiplies the round's ciphertexts into the encrypted sum; the key holder decrypts only
that, and a single submission decrypts to values indistinguishable from random.

- Quantization: a value v in [-clip, clip] becomes round(v * 2**fraction_bits) + level, an
  integer in [0, 2 * level] (level = clip * 2**fraction_bits): never negative, so sums carry
  no signs.
- Packing: `slots` such integers side by side in one plaintext, `slot_bits` apart. A slot holds
  2 * level * max_miners, so the sum of up to `max_miners` updates never carries into the next
  slot, and the packed integer stays below n (see `Packing.slots`).
- Masks: miners i < j agree a key by X25519 and expand it (HKDF, then ChaCha20) into integers
  mod n; i adds them and j subtracts them, plaintext by plaintext, so they cancel mod n in the
  sum of all of them. With one honest peer, a submission's plaintexts are uniform mod n.
- Double masking (Bonawitz et al.): each miner also adds a mask of its own
  (`self_mask_key`), revealed after the round only when the chain shows its submission
  counted. A miner that drops out after the masks were agreed leaves its peers' masks
  uncancelled: each survivor reveals its mask keys with the drop-outs (only those pairs, only
  this round), and the key holder takes those masks and the self masks out of the sum
  (`uncancelled_masks`). A drop-out whose submission surfaces late stays hidden by its own
  mask, which it never reveals. Without every survivor's seeds the round is abandoned and
  re-run with fresh keys. Nobody's update is exposed either way, as long as two or more
  miners submitted. (Bonawitz also secret-shares the keys, so that a survivor may drop out of
  the reveal too; that is not built: here every survivor must reveal.)

Paillier is phe's (g = n + 1, GMP underneath); everything else here is integers and bytes.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from phe import paillier

KEY_BITS = 2048  # n's size: 112-bit security, as for RSA-2048
MASK_MARGIN_BITS = 64  # a mask is drawn 64 bits wider than n, then reduced: bias below 2**-64


class SecAggError(ValueError):
    """An aggregation that cannot be right: the wrong miners, sizes or parameters."""


@dataclass(frozen=True)
class Packing:
    """How update values become Paillier plaintexts, and back."""

    clip: float  # every value is clipped to [-clip, clip] first (bounds each miner's influence)
    fraction_bits: int  # fixed point: steps of 2**-fraction_bits
    max_miners: int  # headroom: a sum of up to this many updates never overflows a slot
    key_bits: int = KEY_BITS

    def __post_init__(self) -> None:
        if not (self.clip > 0 and 0 <= self.fraction_bits <= 40 and self.max_miners >= 1):
            raise SecAggError(f"bad packing parameters: {self}")
        if self.slots < 1:
            raise SecAggError(f"a {self.slot_bits}-bit slot does not fit a {self.key_bits}-bit key")

    @property
    def level(self) -> int:
        """The largest quantized magnitude, and the offset that makes every slot non-negative."""
        return int(round(self.clip * 2.0**self.fraction_bits))

    @property
    def slot_bits(self) -> int:
        return (2 * self.level * self.max_miners).bit_length()

    @property
    def slots(self) -> int:
        """Values per plaintext. n has key_bits bits, so n > 2**(key_bits - 1) > every packed
        integer of (key_bits - 1) bits: packed plaintexts and their sums stay below n."""
        return (self.key_bits - 1) // self.slot_bits

    def plaintexts(self, count: int) -> int:
        """How many plaintexts `count` values take."""
        return -(-count // self.slots)

    def quantize(self, values: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        clipped = np.clip(np.asarray(values, dtype=np.float64), -self.clip, self.clip)
        quantized = np.rint(clipped * 2.0**self.fraction_bits).astype(np.int64)
        return np.clip(quantized, -self.level, self.level) + self.level

    def pack(self, quantized: npt.NDArray[np.int64]) -> list[int]:
        """Slot j of plaintext k holds value k * slots + j (the last plaintext padded with 0)."""
        if quantized.size and (quantized.min() < 0 or quantized.max() > 2 * self.level):
            raise SecAggError("pack takes quantized values, in [0, 2 * level]")
        width, per = self.slot_bits, self.slots
        values = [int(v) for v in quantized.ravel()]
        packed = []
        for start in range(0, len(values), per):
            plaintext = 0
            for value in reversed(values[start : start + per]):
                plaintext = (plaintext << width) | value
            packed.append(plaintext)
        return packed

    def slot_values(self, plaintexts: Sequence[int], count: int) -> npt.NDArray[np.int64]:
        """The raw integers in the slots of `plaintexts` (the padding too), unchecked."""
        if len(plaintexts) != self.plaintexts(count):
            raise SecAggError(f"{len(plaintexts)} plaintexts for {count} values")
        width, mask = self.slot_bits, (1 << self.slot_bits) - 1
        out = np.empty(len(plaintexts) * self.slots, dtype=np.int64)
        i = 0
        for plaintext in plaintexts:
            for _ in range(self.slots):
                out[i] = plaintext & mask
                plaintext >>= width
                i += 1
        return out

    def unpack(self, plaintexts: Sequence[int], count: int, summed: int) -> npt.NDArray[np.int64]:
        """The `count` slot values of a sum of `summed` packed updates, offsets removed:
        the sum of the quantized values, as signed integers.

        Honest updates sum to [0, 2 * level * summed] in every slot, 0 in the padding and
        nothing above the last slot; a masked sum that did not cancel (a copied, stale or forged
        submission) is uniform mod n and fails that with overwhelming probability: refused."""
        if not 1 <= summed <= self.max_miners:
            raise SecAggError(f"a sum of {summed} updates; the slots hold up to {self.max_miners}")
        out = self.slot_values(plaintexts, count)
        top = self.slots * self.slot_bits
        in_range = not out.size or (
            int(out[:count].max()) <= 2 * self.level * summed and not out[count:].any()
        )
        if not in_range or any(p >> top for p in plaintexts):
            raise SecAggError(_NOT_A_SUM)
        return out[:count] - summed * self.level

    def dequantize(self, summed_values: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return summed_values.astype(np.float64) / 2.0**self.fraction_bits


_NOT_A_SUM = (
    "the decrypted sum is out of range: some submission was not masked for this round's miners "
    "(copied, stale or forged), so the masks did not cancel"
)


# ------------------------------------------------------------------ pairwise masks


def mask_key(own: X25519PrivateKey, peer: X25519PublicKey, context: bytes) -> bytes:
    """The 32-byte key two miners share for one round: X25519, then HKDF bound to `context`
    (chain, contract, task, round), so no two rounds or tasks share a mask."""
    shared = own.exchange(peer)
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"gm-secagg-mask/" + context).derive(shared)


def self_mask_key(own: X25519PrivateKey, context: bytes) -> bytes:
    """A miner's own mask key for one round (Bonawitz's double masking): it hides the
    submission even from someone who learns every pairwise key it has, and the miner reveals
    it only once the chain shows its submission counted."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"gm-secagg-self/" + context).derive(
        own.private_bytes_raw()
    )


def mask_stream(key: bytes, count: int, n: int) -> list[int]:
    """`count` integers mod n, expanded from `key` by ChaCha20 (zero nonce: one key, one use)."""
    width = (n.bit_length() + MASK_MARGIN_BITS + 7) // 8
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    data = stream.update(bytes(width * count))
    return [int.from_bytes(data[i * width : (i + 1) * width], "big") % n for i in range(count)]


def masks(
    own: X25519PrivateKey,
    own_index: int,
    peers: dict[int, X25519PublicKey],
    context: bytes,
    count: int,
    n: int,
) -> list[int]:
    """Miner `own_index`'s masks: for each peer j, + its shared stream if own_index < j, else -
    (all mod n); summed over every miner of the round they cancel."""
    total = [0] * count
    for index, peer in sorted(peers.items()):
        if index == own_index:
            continue
        sign = 1 if own_index < index else -1
        for k, value in enumerate(mask_stream(mask_key(own, peer, context), count, n)):
            total[k] += sign * value
    return [value % n for value in total]


# ------------------------------------------------------------------ Paillier


def derive_key(
    eth_private_key: bytes, bits: int = KEY_BITS
) -> tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey]:
    """The Paillier key an evaluator holds, rebuilt from its Ethereum key like its X25519 key
    (`marketplace.protocol.tasks.account_key`): nothing more to store or lose. The primes are
    searched from a ChaCha20 stream seeded by HKDF of that key; each has its top two bits set, so
    n has exactly `bits` bits."""
    if len(eth_private_key) != 32:
        raise ValueError(f"an Ethereum private key is 32 bytes, not {len(eth_private_key)}")
    seed = HKDF(hashes.SHA256(), 32, salt=b"gm-paillier-key", info=b"v1").derive(eth_private_key)
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    half = bits // 2
    top = (1 << (half - 1)) | (1 << (half - 2)) | 1

    def prime() -> int:
        while True:
            draw = int.from_bytes(stream.update(bytes((half + 7) // 8)), "big") >> (-half % 8)
            found = int(gmpy2.next_prime(draw | top))
            if found.bit_length() == half:
                return found

    first = prime()
    second = prime()
    while second == first:
        second = prime()
    public = paillier.PaillierPublicKey(first * second)
    return public, paillier.PaillierPrivateKey(public, first, second)


def generate_key(
    bits: int = KEY_BITS,
) -> tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey]:
    public, private = paillier.generate_paillier_keypair(n_length=bits)
    return public, private


def encrypt(public: paillier.PaillierPublicKey, plaintexts: Sequence[int]) -> list[int]:
    """Raw Paillier ciphertexts (ints mod n**2), each with fresh randomness."""
    n, nsquare = gmpy2.mpz(public.n), gmpy2.mpz(public.nsquare)
    out = []
    for m in plaintexts:
        if not 0 <= m < public.n:
            raise SecAggError("a plaintext outside [0, n)")
        r = gmpy2.mpz(secrets.randbelow(public.n - 1) + 1)
        out.append(int((n * m + 1) * gmpy2.powmod(r, n, nsquare) % nsquare))
    return out


def aggregate(
    public: paillier.PaillierPublicKey, submissions: Sequence[Sequence[int]]
) -> list[int]:
    """The encrypted sum: the submissions' ciphertexts multiplied position by position."""
    if not submissions:
        raise SecAggError("nothing to aggregate")
    length = len(submissions[0])
    if any(len(s) != length for s in submissions):
        raise SecAggError("submissions of different lengths")
    nsquare = gmpy2.mpz(public.nsquare)
    total = [gmpy2.mpz(c) for c in submissions[0]]
    for submission in submissions[1:]:
        for k, c in enumerate(submission):
            total[k] = total[k] * c % nsquare
    return [int(c) for c in total]


def decrypt(private: paillier.PaillierPrivateKey, ciphertexts: Sequence[int]) -> list[int]:
    return [private.raw_decrypt(c) for c in ciphertexts]


# ------------------------------------------------------------------ the wire format
#
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


# ------------------------------------------------------------------ a round


@dataclass(frozen=True)
class MaskedRound:
    """The miners who agreed masks for one round (index -> X25519 public key, fresh per round)
    and the round's context (chain, contract, task, round), which every mask key is bound to."""

    context: bytes
    keys: dict[int, X25519PublicKey]


def seal_update(
    values: npt.NDArray[np.floating],
    packing: Packing,
    public: paillier.PaillierPublicKey,
    own: X25519PrivateKey,
    own_index: int,
    masked: MaskedRound,
    self_mask: bytes | None = None,
) -> list[int]:
    """Clip, quantize, pack, mask and encrypt one miner's update for the round; `self_mask`
    (`self_mask_key`) adds the miner's own mask on top of the pairwise ones."""
    if own_index not in masked.keys:
        raise SecAggError(f"miner {own_index} agreed no masks for this round")
    if len(masked.keys) > packing.max_miners:
        raise SecAggError(f"{len(masked.keys)} miners; the slots hold sums of {packing.max_miners}")
    packed = packing.pack(packing.quantize(values))
    noise = masks(own, own_index, masked.keys, masked.context, len(packed), public.n)
    if self_mask is not None:
        own_noise = mask_stream(self_mask, len(packed), public.n)
        noise = [a + b for a, b in zip(noise, own_noise, strict=True)]
    return encrypt(public, [(m + r) % public.n for m, r in zip(packed, noise, strict=True)])


def sum_round(
    public: paillier.PaillierPublicKey,
    masked: MaskedRound,
    submissions: Mapping[int, Sequence[int]],
    dropped: Sequence[int] = (),
) -> list[int]:
    """The round's encrypted sum; refused unless every masked miner submitted or is in
    `dropped` (whose masks the caller takes out with `uncancelled_masks`): otherwise the masks
    do not cancel and the sum is noise."""
    extra = sorted(set(submissions) - set(masked.keys))
    if extra:
        raise SecAggError(f"submissions from miners {extra}, who agreed no masks")
    missing = sorted(set(masked.keys) - set(submissions) - set(dropped))
    if missing:
        raise SecAggError(
            f"miners {missing} dropped out after the masks were agreed, so their peers' masks "
            "do not cancel: abandon the round and re-run it with fresh keys among the rest"
        )
    return aggregate(public, [submissions[i] for i in sorted(submissions)])


def open_sum(
    private: paillier.PaillierPrivateKey,
    packing: Packing,
    encrypted_sum: Sequence[int],
    count: int,
    miners: int,
    correction: Sequence[int] | None = None,
) -> npt.NDArray[np.float64]:
    """The sum of `miners` updates of `count` values from their encrypted sum, less
    `correction` (per plaintext, mod n: the survivors' self masks and their masks with
    drop-outs, `uncancelled_masks`)."""
    plaintexts = decrypt(private, encrypted_sum)
    if correction is not None:
        n = private.public_key.n
        plaintexts = [(p - c) % n for p, c in zip(plaintexts, correction, strict=True)]
    return packing.dequantize(packing.unpack(plaintexts, count, miners))


def uncancelled_masks(
    seeds: Mapping[int, Sequence[bytes]], dropped: Sequence[int], count: int, n: int
) -> list[int]:
    """What the survivors' masks add to their sum and do not cancel, per plaintext (mod n).
    `seeds[i]` is survivor i's self mask key (`self_mask_key`), then its pairwise keys
    (`mask_key`) with each of `dropped`, in that order. The pairwise masks between survivors
    cancel already; their self masks and their masks with drop-outs do not."""
    total = [0] * count
    for index, keys in sorted(seeds.items()):
        if len(keys) != 1 + len(dropped):
            raise SecAggError(
                f"miner {index} gave {len(keys)} seeds; a self mask and {len(dropped)} "
                "drop-outs take " + str(1 + len(dropped))
            )
        for k, value in enumerate(mask_stream(keys[0], count, n)):
            total[k] += value
        for peer, key in zip(dropped, keys[1:], strict=True):
            sign = 1 if index < peer else -1
            for k, value in enumerate(mask_stream(key, count, n)):
                total[k] += sign * value
    return [value % n for value in total]
