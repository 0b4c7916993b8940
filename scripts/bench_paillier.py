"""Packed Paillier against one value per ciphertext, in the same run, on one core.

For a 10,000-value and a 100,000-value update under a 2048-bit key, each way's round:
- encrypt: one miner's update (packed: clip, quantize, pack 97 values a plaintext, add the
  pairwise masks of a 10-miner round and its own mask, encrypt; one value per ciphertext:
  quantize, encrypt);
- aggregate: the 10 miners' ciphertexts multiplied into the encrypted sum;
- decrypt: the sum, its 10 own masks taken out, unpacked.
End to end is the round's critical path: one miner's encryption (the miners encrypt at once,
each on its own machine), the aggregation, the decryption.

Packed, 10,000 values: ten real miners with real masks, and the decrypted sum is checked
against the sum of the quantized updates, exactly. Packed, 100,000 values: one miner's real
sealing; the aggregation multiplies ten copies of its ciphertexts (the cost of a product does
not depend on what is inside). One value per ciphertext: each step's cost per value is measured
on `--sample` values and multiplied by the update's size (encrypting 100,000 values this way
takes about 20 minutes on this machine; the cost per value is flat). The last line is
machine-readable:

    PAILLIER packed_speedup=<x> encrypt_100k_s=<s>

(packed_speedup: the 100,000-value round's end-to-end ratio.)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from phe.paillier import PaillierPrivateKey as PrivateKey
from phe.paillier import PaillierPublicKey as PublicKey

from marketplace.wire.secagg import (
    aggregate,
    decrypt,
    encrypt,
    generate_key,
    open_sum,
    seal_update,
    sum_round,
)
from marketplace.wire.secagg_masks import MaskedRound, self_mask_key, uncancelled_masks
from marketplace.wire.secagg_packing import Packing

MINERS = 10
PACKING = Packing(clip=1.0, fraction_bits=16, max_miners=MINERS)
T = TypeVar("T")


def timed(step: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


def packed_round(
    public: PublicKey, private: PrivateKey, size: int, real_miners: int
) -> dict[str, float]:
    rng = np.random.default_rng(size)
    secrets = [X25519PrivateKey.generate() for _ in range(MINERS)]
    masked = MaskedRound(b"bench", {i: k.public_key() for i, k in enumerate(secrets)})
    values = [rng.normal(0, 0.3, size) for _ in range(real_miners)]
    own = [self_mask_key(secret, masked.context) for secret in secrets]  # double masking
    sealed, encrypt_s = timed(
        lambda: seal_update(values[0], PACKING, public, secrets[0], 0, masked, own[0])
    )
    submissions = {0: sealed}
    for i in range(1, real_miners):
        submissions[i] = seal_update(values[i], PACKING, public, secrets[i], i, masked, own[i])
    if real_miners == MINERS:
        encrypted_sum, aggregate_s = timed(lambda: sum_round(public, masked, submissions))
        seeds = {i: [own[i]] for i in range(MINERS)}
    else:  # ten copies of one miner's ciphertexts: the same products to compute
        encrypted_sum, aggregate_s = timed(lambda: aggregate(public, [sealed] * MINERS))
        seeds = {i: [own[0]] for i in range(MINERS)}

    def open_round() -> np.ndarray:  # the key holder: decrypt, take the self masks out, unpack
        correction = uncancelled_masks(seeds, [], len(encrypted_sum), public.n)
        if real_miners == MINERS:
            return open_sum(private, PACKING, encrypted_sum, size, MINERS, correction)
        # Copies of one miner's masked plaintexts sum to noise, which `open_sum` refuses:
        # the same work (decrypt, take out, read the slots), unchecked.
        plain = decrypt(private, encrypted_sum)
        plain = [(p - c) % public.n for p, c in zip(plain, correction, strict=True)]
        return PACKING.slot_values(plain, size)

    summed, decrypt_s = timed(open_round)
    if real_miners == MINERS:
        exact = PACKING.dequantize(sum(PACKING.quantize(v) - PACKING.level for v in values))
        assert summed.tolist() == exact.tolist(), "the decrypted sum is not the exact sum"
    return {"encrypt": encrypt_s, "aggregate": aggregate_s, "decrypt": decrypt_s}


def per_value_costs(public: PublicKey, private: PrivateKey, sample: int) -> dict[str, float]:
    """Seconds per value of one value per ciphertext: encrypt, aggregate 10, decrypt."""
    rng = np.random.default_rng(1)
    quantized = [int(v) for v in PACKING.quantize(rng.normal(0, 0.3, sample))]
    ciphertexts, encrypt_s = timed(lambda: encrypt(public, quantized))
    encrypted_sum, aggregate_s = timed(lambda: aggregate(public, [ciphertexts] * MINERS))
    plaintexts, decrypt_s = timed(lambda: decrypt(private, encrypted_sum))
    assert plaintexts == [MINERS * q for q in quantized]
    return {
        "encrypt": encrypt_s / sample,
        "aggregate": aggregate_s / sample,
        "decrypt": decrypt_s / sample,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--sample", type=int, default=300, help="values timed one per ciphertext")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    public, private = generate_key()
    print(
        f"2048-bit key; packing: clip {PACKING.clip}, {PACKING.fraction_bits} fraction bits, "
        f"headroom for {MINERS} miners: {PACKING.slot_bits}-bit slots, {PACKING.slots} a plaintext"
    )
    unit = per_value_costs(public, private, args.sample)
    speedup, encrypt_largest = 0.0, 0.0
    for size in args.sizes:
        packed = packed_round(public, private, size, MINERS if size <= 10_000 else 1)
        single = {step: cost * size for step, cost in unit.items()}
        packed_total, single_total = sum(packed.values()), sum(single.values())
        print(f"{size:,} values, {PACKING.plaintexts(size):,} packed plaintexts:")
        for step in ("encrypt", "aggregate", "decrypt"):
            print(
                f"  {step:9}  packed {packed[step]:9.3f} s   one per ciphertext "
                f"{single[step]:10.1f} s   {single[step] / packed[step]:7.1f}x"
            )
        print(
            f"  end to end packed {packed_total:.2f} s, one per ciphertext {single_total:.1f} s: "
            f"{single_total / packed_total:.1f}x"
        )
        speedup, encrypt_largest = single_total / packed_total, packed["encrypt"]
    print(f"PAILLIER packed_speedup={speedup:.1f} encrypt_100k_s={encrypt_largest:.2f}")


if __name__ == "__main__":
    main()
