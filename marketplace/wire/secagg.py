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
This module owns the Paillier key and a round's steps (seal, sum, open); the packing, the masks
and a submission's bytes are `secagg_packing`, `secagg_masks` and `secagg_submission`'s.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import gmpy2
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from phe import paillier

from marketplace.wire.secagg_masks import MaskedRound, mask_stream, masks
from marketplace.wire.secagg_packing import KEY_BITS, Packing, SecAggError

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


# ------------------------------------------------------------------ a round


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
