"""Commitments and the payout Merkle tree, hashed exactly as the contract hashes them.

Envelopes (X25519 + AES-256-GCM, author-bound) are in `marketplace.wire.envelope`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi.abi import encode
from eth_utils.address import (
    to_checksum_address,
)
from eth_utils.crypto import keccak

from marketplace.rules.messages import Payout


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def validation_commitment(file_digest: bytes, salt: bytes) -> bytes:
    """keccak256(sha256(validation file) || salt), as `revealValidation` recomputes it."""
    if len(file_digest) != 32 or len(salt) != 32:
        raise ValueError("file digest and salt must be 32 bytes each")
    return keccak(file_digest + salt)


@dataclass(frozen=True)
class PayoutLeaf:
    """One payout: `amount` (wei or token units) and reputation `points` for `account`."""

    index: int
    account: str
    amount: int
    points: int

    def hash(self) -> bytes:
        """OpenZeppelin's double-hashed leaf: keccak256(keccak256(abi.encode(...)))."""
        encoded = encode(
            ["uint256", "address", "uint256", "uint256"],
            [self.index, to_checksum_address(self.account), self.amount, self.points],
        )
        return keccak(keccak(encoded))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """The commutative pair hash of OpenZeppelin's MerkleProof (sorted, then keccak256)."""
    return keccak(a + b) if a < b else keccak(b + a)


class MerkleTree:
    """A binary Merkle tree over leaf hashes; an odd node at the end of a layer moves up as is."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        self.layers: list[list[bytes]] = [list(leaves)]
        while len(self.layers[-1]) > 1:
            below = self.layers[-1]
            above = [hash_pair(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            self.layers.append(above)

    @property
    def root(self) -> bytes:
        return self.layers[-1][0]

    def proof(self, position: int) -> list[bytes]:
        """The sibling hashes from leaf `position` up to the root."""
        if not 0 <= position < len(self.layers[0]):
            raise IndexError(position)
        proof = []
        for layer in self.layers[:-1]:
            sibling = position ^ 1
            if sibling < len(layer):
                proof.append(layer[sibling])
            position //= 2
        return proof


def verify_proof(proof: Sequence[bytes], root: bytes, leaf: bytes) -> bool:
    """What `MerkleProof.verify` computes, in Python."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root


def payout_tree(leaves: Sequence[PayoutLeaf]) -> MerkleTree:
    """The tree whose root an evaluator posts; leaf `i` must carry index `i`."""
    for position, leaf in enumerate(leaves):
        if leaf.index != position:
            raise ValueError(f"leaf at position {position} has index {leaf.index}")
    return MerkleTree([leaf.hash() for leaf in leaves])


def payout_leaves(payouts: Sequence[Payout]) -> list[PayoutLeaf]:
    """The Merkle leaves of `payouts` for `crypto.payout_tree`: leaf i has index i."""
    return [
        PayoutLeaf(index=i, account=p.account, amount=p.amount, points=p.points)
        for i, p in enumerate(payouts)
    ]
