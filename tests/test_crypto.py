"""Oracle tests across languages: what marketplace.wire.crypto computes in Python is what the
contract (and OpenZeppelin's Solidity, through tests/contracts/MerkleOracle.sol) computes on
chain."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract

from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.chain.events import Claimed, ValidationRevealed
from marketplace.rules.messages import Phase, TaskParams
from marketplace.wire.crypto import (
    MerkleTree,
    PayoutLeaf,
    hash_pair,
    payout_tree,
    sha256,
    validation_commitment,
    verify_proof,
)
from tests.helpers import ETHER, SALT, VALIDATION_FILE, create_task, settle

MAX_UINT = 2**256 - 1


def keccak256(data: bytes) -> bytes:
    """Keccak-256 from another implementation than the one eth_utils uses (pycryptodome)."""
    try:
        import sha3  # safe-pysha3, pinned in requirements.lock

        return bytes(sha3.keccak_256(data).digest())
    except ImportError:  # pragma: no cover - a checkout installed without the lock
        from Crypto.Hash import keccak

        return bytes(keccak.new(digest_bits=256, data=data).digest())


def openzeppelin_leaf(index: int, account: str, amount: int, points: int) -> bytes:
    """keccak256(bytes.concat(keccak256(abi.encode(index, account, amount, points))))."""
    encoded = encode(["uint256", "address", "uint256", "uint256"], [index, account, amount, points])
    return keccak256(keccak256(encoded))


def packed_leaf(index: int, account: str, amount: int, points: int) -> bytes:
    """The same leaf with the ABI encoding written out by hand: four 32-byte words."""
    words = (
        index.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(account[2:])
        + amount.to_bytes(32, "big")
        + points.to_bytes(32, "big")
    )
    return keccak256(keccak256(words))


@pytest.fixture
def oracle(deploy: Callable[..., Contract]) -> Contract:
    return deploy("MerkleOracle")


# ---------------------------------------------------------------- trees the contract accepts


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 33])
def test_every_leaf_of_a_crypto_py_tree_is_claimable_on_chain(
    w3: Web3,
    market: ChainClient,
    oracle: Contract,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    size: int,
) -> None:
    owners = accounts[2:9]  # the claims are sent by accounts[9], who is paid nothing
    leaves = [
        PayoutLeaf(i, owners[i % len(owners)], (i + 1) * ETHER // 100, i) for i in range(size)
    ]
    tree = payout_tree(leaves)
    total = sum(leaf.amount for leaf in leaves)
    task_id = create_task(market, sponsor, task_params(bounty=total + ETHER))
    settle(w3, market, task_id, sponsor, evaluator, tree.root, total)
    assert market.task(task_id).payout_root == tree.root
    if size == 33:
        # The last leaf rides up alone through five odd layers: one sibling in its proof.
        assert [len(tree.proof(i)) for i in (0, 31, 32)] == [6, 6, 1]
    before = {owner: market.balance(owner) for owner in owners}
    paid: Counter[str] = Counter()

    for leaf in leaves:
        proof = tree.proof(leaf.index)
        assert verify_proof(proof, tree.root, leaf.hash())
        assert oracle.functions.verify(proof, tree.root, leaf.hash()).call() is True
        result = market.claim(accounts[9], task_id, leaf, proof)
        assert result.event(Claimed).arguments() == {
            "task_id": task_id,
            "index": leaf.index,
            "account": leaf.account,
            "amount": leaf.amount,
            "points": leaf.points,
        }
        paid[leaf.account] += leaf.amount

    assert all(market.is_claimed(task_id, i) for i in range(size))
    assert market.task(task_id).claimed == total
    assert market.balance(market.address) == ETHER  # what the root left unallocated
    for owner in owners:
        assert market.balance(owner) == before[owner] + paid[owner]
        assert market.reputation(owner) == sum(
            leaf.points for leaf in leaves if leaf.account == owner
        )


def test_openzeppelin_recomputes_every_root_from_every_proof(oracle: Contract) -> None:
    for size in [*range(1, 18), 33, 64, 65, 100]:
        leaves = [PayoutLeaf(i, to_checksum_address(bytes([i]) * 20), i, 0) for i in range(size)]
        tree = payout_tree(leaves)
        for leaf in leaves:
            proof = tree.proof(leaf.index)
            assert bytes(oracle.functions.processProof(proof, leaf.hash()).call()) == tree.root


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (bytes(32), bytes(32)),
        (bytes(32), b"\xff" * 32),
        (b"\xff" * 32, bytes(32)),
        (sha256(b"a"), sha256(b"b")),
        (sha256(b"b"), sha256(b"a")),
    ],
)
def test_hash_pair_is_openzeppelins_commutative_keccak(
    oracle: Contract, a: bytes, b: bytes
) -> None:
    assert hash_pair(a, b) == hash_pair(b, a) == bytes(oracle.functions.pairHash(a, b).call())
    assert hash_pair(a, b) == keccak256(min(a, b) + max(a, b))


# ---------------------------------------------------------------- the leaf encoding


EDGE_LEAVES = [
    (0, to_checksum_address(bytes(20)), 0, 0),
    (MAX_UINT, to_checksum_address(b"\xff" * 20), MAX_UINT, MAX_UINT),
    (1, to_checksum_address(bytes(19) + b"\xaa"), 10**18, 1),
    (255, "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf", 256, 2**128),  # private key 1
]


@pytest.mark.parametrize(("index", "account", "amount", "points"), EDGE_LEAVES)
def test_leaf_hash_is_openzeppelins_double_hash(
    oracle: Contract, index: int, account: str, amount: int, points: int
) -> None:
    leaf = PayoutLeaf(index, account, amount, points)
    expected = openzeppelin_leaf(index, account, amount, points)
    assert leaf.hash() == expected == packed_leaf(index, account, amount, points)
    on_chain = oracle.functions.leafHash(index, account, amount, points).call()
    assert bytes(on_chain) == expected
    # The client checksums the account: a lowercase one names the same leaf.
    assert PayoutLeaf(index, account.lower(), amount, points).hash() == expected


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    index=st.integers(0, MAX_UINT),
    account=st.binary(min_size=20, max_size=20).map(to_checksum_address),
    amount=st.integers(0, MAX_UINT),
    points=st.integers(0, MAX_UINT),
)
def test_leaf_hash_matches_an_independent_encoding(
    index: int, account: str, amount: int, points: int
) -> None:
    expected = openzeppelin_leaf(index, account, amount, points)
    assert PayoutLeaf(index, account, amount, points).hash() == expected
    assert packed_leaf(index, account, amount, points) == expected


# ---------------------------------------------------------------- the validation commitment


def test_validation_commitment_is_what_reveal_checks(
    w3: Web3,
    market: ChainClient,
    oracle: Contract,
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    file_digest = sha256(VALIDATION_FILE)
    commit = validation_commitment(file_digest, SALT)
    assert commit == keccak256(file_digest + SALT)
    assert bytes(oracle.functions.commitment(file_digest, SALT).call()) == commit
    task_id = market.create_task(sponsor, task_params(validation_commit=commit)).value
    assert task_id is not None
    advance_to(market.task(task_id).rounds_end)

    def flip(value: bytes, bit: int) -> bytes:
        return (int.from_bytes(value, "big") ^ (1 << bit)).to_bytes(32, "big")

    for bit in (0, 1, 7, 8, 128, 255):
        for digest, salt in ((file_digest, flip(SALT, bit)), (flip(file_digest, bit), SALT)):
            with pytest.raises(reverts.CommitmentMismatch) as refused:
                market.reveal_validation(sponsor, task_id, digest, salt, "bafkreival")
            assert refused.value.values == {
                "taskId": task_id,
                "commitment": commit,
                "computed": validation_commitment(digest, salt),
            }
    assert market.phase(task_id) == Phase.REVEAL

    revealed = market.reveal_validation(sponsor, task_id, file_digest, SALT, "bafkreival")

    assert revealed.event(ValidationRevealed).arguments() == {
        "task_id": task_id,
        "file_digest": file_digest,
        "salt": SALT,
        "cid": "bafkreival",
    }
    assert market.task(task_id).revealed and market.phase(task_id) == Phase.EVALUATION


@pytest.mark.parametrize(
    ("file_digest", "salt"),
    [(bytes(31), SALT), (bytes(33), SALT), (sha256(b"f"), SALT[:31]), (sha256(b"f"), b"")],
)
def test_validation_commitment_refuses_inputs_that_are_not_32_bytes(
    file_digest: bytes, salt: bytes
) -> None:
    with pytest.raises(ValueError, match="32 bytes each"):
        validation_commitment(file_digest, salt)


# ---------------------------------------------------------------- what the tree refuses


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([1], "leaf at position 0 has index 1"),
        ([0, 0], "leaf at position 1 has index 0"),
        ([1, 0], "leaf at position 0 has index 1"),
        ([0, 2], "leaf at position 1 has index 2"),
        ([0, 1, 3, 2], "leaf at position 2 has index 3"),
    ],
)
def test_payout_tree_refuses_a_leaf_out_of_position(indices: list[int], message: str) -> None:
    account = to_checksum_address(bytes(19) + b"\xaa")
    leaves = [PayoutLeaf(index, account, 1, 1) for index in indices]
    with pytest.raises(ValueError, match=f"^{message}$"):
        payout_tree(leaves)


@pytest.mark.parametrize("build", [MerkleTree, payout_tree], ids=["MerkleTree", "payout_tree"])
def test_an_empty_tree_is_refused(build: Callable[[list[Any]], MerkleTree]) -> None:
    with pytest.raises(ValueError, match="^a Merkle tree needs at least one leaf$"):
        build([])


def test_a_proof_is_asked_only_for_an_existing_position() -> None:
    tree = MerkleTree([sha256(b"a"), sha256(b"b"), sha256(b"c")])
    assert tree.proof(2) == [hash_pair(sha256(b"a"), sha256(b"b"))]
    for position in (-1, 3):
        with pytest.raises(IndexError):
            tree.proof(position)
