"""Properties of the payout ledger on chain, and of the Merkle tree in pure Python.

The chain tests build a fresh eth-tester chain per example (`tests.helpers.new_market`), so no
function-scoped fixture is shared between examples. Every example is derandomized: the file runs
the same cases every time.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from web3 import Web3

from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.chain.events import Claimed, Reclaimed
from marketplace.dev.devchain import advance_to
from marketplace.rules.messages import Phase
from marketplace.wire.crypto import MerkleTree, PayoutLeaf, payout_tree, verify_proof
from tests.helpers import (
    CANCELLABLE,
    ETHER,
    create_task,
    eth_task,
    new_market,
    post_and_finalize,
    reveal,
    settle,
    spent,
)

ON_CHAIN = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PURE = settings(derandomize=True, database=None, deadline=None)

SPONSOR, EVALUATOR = 0, 1  # indices among the ten dev accounts


@dataclass(frozen=True)
class Table:
    """A payout table (leaves by owner index among the dev accounts) and the task around it."""

    owners: tuple[int, ...]
    amounts: tuple[int, ...]
    points: tuple[int, ...]
    total: int  # the posted total: the leaves' sum, or (a short root) less
    deposit: int
    submissions: int  # architectures proposed by accounts[2..], each paying the deposit
    bounty: int

    @property
    def escrow(self) -> int:
        return self.bounty + self.deposit * self.submissions

    def leaves(self, accounts: list[str]) -> list[PayoutLeaf]:
        return [
            PayoutLeaf(i, accounts[owner], amount, points)
            for i, (owner, amount, points) in enumerate(
                zip(self.owners, self.amounts, self.points, strict=True)
            )
        ]


@st.composite
def tables(draw: st.DrawFn, max_leaves: int = 40) -> Table:
    n = draw(st.integers(1, max_leaves))
    owners = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    amounts = draw(st.lists(st.integers(0, 1_000 * ETHER), min_size=n, max_size=n))
    points = draw(st.lists(st.integers(0, 2**64), min_size=n, max_size=n))
    allocated = sum(amounts)
    total = draw(st.one_of(st.just(allocated), st.integers(0, allocated)))
    deposit = draw(st.integers(0, ETHER))
    submissions = draw(st.integers(0, 2))
    slack = draw(st.integers(0, ETHER))  # escrow - leaves' sum; 0: the root allocates it all
    bounty = max(1, allocated + slack - deposit * submissions)
    return Table(tuple(owners), tuple(amounts), tuple(points), total, deposit, submissions, bounty)


@st.composite
def claim_orders(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """(leaf index, sender index) pairs: every leaf at least once, some again, interleaved."""
    repeats = draw(st.lists(st.integers(0, n - 1), max_size=n))
    order = draw(st.permutations(list(range(n)) + repeats))
    senders = draw(st.lists(st.integers(0, 9), min_size=len(order), max_size=len(order)))
    return list(zip(order, senders, strict=True))


def settled(table: Table) -> tuple[Web3, ChainClient, list[str], int]:
    """A fresh chain whose only task escrows `table` and is in its Claims phase."""
    w3, market, accounts = new_market()
    sponsor, evaluator = accounts[SPONSOR], accounts[EVALUATOR]
    params = eth_task(evaluator, bounty=table.bounty, deposit=table.deposit)
    task_id = create_task(market, sponsor, params)
    for k in range(table.submissions):
        market.propose_architecture(accounts[2 + k], task_id, keccak(bytes([k])), f"arch-{k}")
    tree = payout_tree(table.leaves(accounts))
    settle(w3, market, task_id, sponsor, evaluator, tree.root, table.total)
    assert market.phase(task_id) == Phase.CLAIMS
    assert market.balance(market.address) == table.escrow == market.task(task_id).escrow
    return w3, market, accounts, task_id


@settings(ON_CHAIN, max_examples=8)
@given(data=st.data(), table=tables())
def test_claims_in_any_order_pay_each_leaf_once_within_the_total(
    data: st.DataObject, table: Table
) -> None:
    w3, market, accounts, task_id = settled(table)
    leaves = table.leaves(accounts)
    tree = payout_tree(leaves)
    order = data.draw(claim_orders(len(leaves)), label="claims")
    balances = {account: market.balance(account) for account in accounts}
    received: Counter[str] = Counter()
    gas: Counter[str] = Counter()
    points: Counter[str] = Counter()
    claimed: set[int] = set()
    paid = 0

    for index, sender_index in order:
        leaf, sender = leaves[index], accounts[sender_index]
        remaining = table.total - paid
        if index in claimed:
            with pytest.raises(reverts.AlreadyClaimed) as refused:
                market.claim(sender, task_id, leaf, tree.proof(index))
            assert refused.value.values == {"taskId": task_id, "index": index}
        elif leaf.amount > remaining:
            with pytest.raises(reverts.ClaimExceedsTotal) as exceeded:
                market.claim(sender, task_id, leaf, tree.proof(index))
            assert exceeded.value.values == {
                "taskId": task_id,
                "amount": leaf.amount,
                "remaining": remaining,
            }
        else:
            result = market.claim(sender, task_id, leaf, tree.proof(index))
            # Reputation: at most the amount paid, nothing to the sponsor or the evaluator.
            judges = (accounts[SPONSOR], accounts[EVALUATOR])
            credited = 0 if leaf.account in judges else min(leaf.points, leaf.amount)
            assert result.event(Claimed).arguments() == {
                "task_id": task_id,
                "index": index,
                "account": leaf.account,
                "amount": leaf.amount,
                "points": credited,
            }
            claimed.add(index)
            paid += leaf.amount
            received[leaf.account] += leaf.amount
            points[leaf.account] += credited
            gas[sender] += spent(w3, result.tx_hash)
        assert paid <= table.total <= table.escrow
        assert market.balance(market.address) + paid == table.escrow

    task = market.task(task_id)
    assert task.claimed == paid <= task.payout_total == table.total <= task.escrow
    if table.total == sum(table.amounts):
        assert claimed == set(range(len(leaves)))  # a full root pays every leaf
    assert market.balance(market.address) == table.escrow - paid
    event("short root" if len(claimed) < len(leaves) else "every leaf paid")
    event("repeated claims" if len(order) > len(leaves) else "each leaf once")

    # The sponsor takes back what the root did not allocate; what it did stays claimable.
    sponsor = accounts[SPONSOR]
    if table.escrow > table.total:
        reclaimed = market.reclaim(sponsor, task_id)
        received[sponsor] += table.escrow - table.total
        gas[sponsor] += spent(w3, reclaimed.tx_hash)
    else:
        with pytest.raises(reverts.NothingToReclaim):
            market.reclaim(sponsor, task_id)
    assert market.balance(market.address) == table.total - paid
    assert [market.is_claimed(task_id, i) for i in range(len(leaves))] == [
        i in claimed for i in range(len(leaves))
    ]
    assert len(market.events(Claimed, task_id=task_id)) == len(claimed)
    for account in accounts:
        assert market.reputation(account) == points[account]
        assert market.balance(account) == balances[account] + received[account] - gas[account]


@settings(ON_CHAIN, max_examples=8)
@given(data=st.data(), table=tables())
def test_a_proof_proves_only_its_own_leaf(data: st.DataObject, table: Table) -> None:
    # Everything is drawn before the chain is built; XOR with a non-zero mask changes a field.
    n = len(table.owners)
    i = data.draw(st.integers(0, n - 1), label="leaf")
    account_mask = data.draw(st.integers(1, 2**160 - 1), label="account mask")
    amount_mask, points_mask, index_mask = (
        data.draw(st.integers(1, 2**256 - 1), label=f"{field} mask")
        for field in ("amount", "points", "index")
    )
    j = (i + data.draw(st.integers(1, n - 1), label="proof offset")) % n if n > 1 else None
    w3, market, accounts, task_id = settled(table)
    leaves = table.leaves(accounts)
    tree = payout_tree(leaves)
    leaf, proof = leaves[i], tree.proof(i)
    other_account = to_checksum_address((int(leaf.account, 16) ^ account_mask).to_bytes(20, "big"))
    forgeries = [
        PayoutLeaf(i, other_account, leaf.amount, leaf.points),
        PayoutLeaf(i, leaf.account, leaf.amount ^ amount_mask, leaf.points),
        PayoutLeaf(i, leaf.account, leaf.amount, leaf.points ^ points_mask),
        PayoutLeaf(i ^ index_mask, leaf.account, leaf.amount, leaf.points),
    ]
    for forged in forgeries:
        assert not verify_proof(proof, tree.root, forged.hash())
        with pytest.raises(reverts.InvalidProof) as refused:
            market.claim(accounts[9], task_id, forged, proof)
        assert refused.value.values == {"taskId": task_id, "index": forged.index}
    if j is not None:  # the proof of another position
        assert not verify_proof(tree.proof(j), tree.root, leaf.hash())
        with pytest.raises(reverts.InvalidProof) as refused:
            market.claim(accounts[9], task_id, leaf, tree.proof(j))
        assert refused.value.values == {"taskId": task_id, "index": i}

    # Nothing moved, and the genuine leaf is still claimable (if the total covers it).
    assert market.balance(market.address) == table.escrow
    assert market.task(task_id).claimed == 0 and not market.is_claimed(task_id, i)
    if leaf.amount <= table.total:
        market.claim(accounts[9], task_id, leaf, proof)
        assert market.is_claimed(task_id, i)
        assert market.balance(market.address) == table.escrow - leaf.amount


# ---------------------------------------------------------------- the sponsor's withdrawals


@pytest.mark.parametrize(
    "phase", [Phase.UNSETTLED, Phase.CLAIMS, Phase.CLOSED], ids=lambda phase: phase.name.lower()
)
def test_a_reclaimed_task_cannot_be_cancelled_into_other_tasks_escrow(phase: Phase) -> None:
    """A task without submissions can still settle; once its sponsor reclaimed, cancelling
    must not pay the bounty again (it would come out of another task's escrow)."""
    w3, market, accounts = new_market()
    other, sponsor, evaluator, payee = accounts[2], accounts[0], accounts[1], accounts[3]
    market.create_task(other, eth_task(evaluator, bounty=5 * ETHER))
    task_id = market.create_task(sponsor, eth_task(evaluator, bounty=ETHER)).value
    assert task_id == 2
    reveal(w3, market, task_id, sponsor)
    if phase == Phase.UNSETTLED:
        advance_to(w3, market.task(task_id).evaluation_deadline)  # no root in time
        owed = ETHER
    else:
        leaf = PayoutLeaf(0, payee, ETHER // 4, 1)
        tree = payout_tree([leaf])
        post_and_finalize(w3, market, task_id, evaluator, tree.root, ETHER // 2)
        market.claim(payee, task_id, leaf, tree.proof(0))
        owed = ETHER // 2  # unallocated now; after the deadline, also the unclaimed quarter
        if phase == Phase.CLOSED:
            advance_to(w3, market.task(task_id).claim_deadline)
            owed = 3 * ETHER // 4
    assert market.phase(task_id) == phase
    assert market.reclaim(sponsor, task_id).event(Reclaimed).amount == owed
    claimable = ETHER // 4 if phase == Phase.CLAIMS else 0  # allocated, not yet claimed
    assert market.balance(market.address) == 5 * ETHER + claimable  # + the other task's bounty
    before = market.balance(market.address)

    with pytest.raises(reverts.WrongPhase) as refused:
        market.cancel_task(sponsor, task_id)

    # Once all but the claims were reclaimed no phase allows a cancel.
    allowed = CANCELLABLE if phase == Phase.CLAIMS else 0
    assert refused.value.values == {"taskId": task_id, "current": phase, "allowed": allowed}
    assert market.balance(market.address) == before
    task = market.task(task_id)
    assert (task.cancelled, task.reclaimed) == (False, owed)


# ---------------------------------------------------------------- the tree, in Python


@settings(PURE, max_examples=100)
@given(count=st.integers(1, 300), seed=st.binary(max_size=8), data=st.data())
def test_every_proof_verifies_and_a_mutated_leaf_does_not(
    count: int, seed: bytes, data: st.DataObject
) -> None:
    leaves = [keccak(seed + i.to_bytes(2, "big")) for i in range(count)]
    tree = MerkleTree(leaves)
    assert len(tree.layers[0]) == count and len(tree.layers[-1]) == 1
    bit = data.draw(st.integers(0, 255), label="bit")
    for position, leaf in enumerate(leaves):
        proof = tree.proof(position)
        assert len(proof) <= math.ceil(math.log2(count))
        assert verify_proof(proof, tree.root, leaf)
        mutated = (int.from_bytes(leaf, "big") ^ (1 << bit)).to_bytes(32, "big")
        assert not verify_proof(proof, tree.root, mutated)
    with pytest.raises(IndexError):
        tree.proof(count)


@settings(PURE, max_examples=300)
@given(
    leaves=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40),
    data=st.data(),
)
def test_a_proof_verifies_exactly_the_values_of_its_position(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """With arbitrary (even repeated) leaves, proof j proves leaf i iff the two are equal."""
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1), label="leaf")
    j = data.draw(st.integers(0, len(leaves) - 1), label="proof of")
    assert verify_proof(tree.proof(j), tree.root, leaves[i]) == (leaves[i] == leaves[j])
    assert verify_proof(tree.proof(i), tree.root, leaves[i])
