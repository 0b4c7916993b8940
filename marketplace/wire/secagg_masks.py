"""The masks that hide each miner's update in a secure aggregation round: pairwise masks
agreed by X25519 that cancel in the sum, each miner's own self mask, and what the survivors'
masks leave uncancelled after a drop-out (`marketplace.wire.secagg` has the scheme).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from marketplace.wire.secagg_packing import SecAggError

MASK_MARGIN_BITS = 64  # a mask is drawn 64 bits wider than n, then reduced: bias below 2**-64


@dataclass(frozen=True)
class MaskedRound:
    """The miners who agreed masks for one round (index -> X25519 public key, fresh per round)
    and the round's context (chain, contract, task, round), which every mask key is bound to."""

    context: bytes
    keys: dict[int, X25519PublicKey]


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
