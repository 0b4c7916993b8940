"""The full lifecycle of a task in ETH: two rounds with a merge between them, reveal, a payout
root, finalization, claims and the sponsor's reclaim, asserting values at every step."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from web3 import Web3

from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.chain.events import (
    Claimed,
    EncryptionKeyRegistered,
    MergePosted,
    PayoutRootAgreed,
    TaskCreated,
    TaskFinalized,
    ValidationRevealed,
)
from marketplace.rules.messages import NodeKind, Phase, TaskParams
from marketplace.wire.crypto import PayoutLeaf, payout_tree, sha256
from tests.helpers import ETHER, SALT, VALIDATION_FILE, digest, send_reveal, spent


def test_eth_task_two_rounds_merge_reveal_settle_claim_reclaim(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    scientist, miner_a, miner_b = accounts[2], accounts[3], accounts[4]
    deposit = ETHER // 100
    sponsor_before = market.balance(sponsor)

    # createTask: the bounty is escrowed, the commitment and evaluator set recorded.
    created = market.create_task(sponsor, task_params())
    task_id = created.value
    assert task_id == 1 and market.task_count() == 1
    event = created.event(TaskCreated)
    assert event.sponsor == sponsor and event.bounty == 10 * ETHER
    assert event.evaluators == (evaluator,) and event.spec_cid == "bafkreispec"
    assert market.balance(market.address) == 10 * ETHER
    assert market.balance(sponsor) == sponsor_before - 10 * ETHER - spent(w3, created.tx_hash)
    task = market.task(task_id)
    assert (task.bounty, task.deposit, task.rounds, task.quorum) == (10 * ETHER, deposit, 2, 1)
    assert market.phase(task_id) == Phase.ROUNDS and market.evaluators(task_id) == [evaluator]

    # Round 0: one architecture, two updates of it.
    arch = market.propose_architecture(scientist, task_id, digest("arch"), "bafkreiarch")
    assert arch.value == 1
    key_a = b"\x11" * 32
    upd_a = market.submit_update(miner_a, task_id, 1, 600, digest("a0"), "bafkreia0", key_a)
    upd_b = market.submit_update(miner_b, task_id, 1, 400, digest("b0"), "bafkreib0")
    assert (upd_a.value, upd_b.value) == (2, 3)
    assert upd_a.event(EncryptionKeyRegistered).arguments() == {
        "task_id": 1,
        "account": miner_a,
        "public_key": key_a,
    }
    with pytest.raises(KeyError):
        upd_b.event(EncryptionKeyRegistered)
    assert market.balance(market.address) == 10 * ETHER + 3 * deposit
    node = market.node(task_id, 2)
    assert (node.author, node.parent, node.samples, node.round, node.kind) == (
        miner_a,
        1,
        600,
        0,
        NodeKind.UPDATE,
    )

    # A merge of round 0 may only come after round 0 closed.
    with pytest.raises(reverts.RoundNotClosed):
        market.post_merge(
            evaluator, task_id, 0, [2, 3], 1000, digest("m0"), digest("p0"), "bafkreim0"
        )
    advance_to(task.round_end(0))
    merge = market.post_merge(
        evaluator, task_id, 0, [2, 3], 1000, digest("m0"), digest("p0"), "bafkreim0"
    )
    assert merge.value == 4
    assert merge.event(MergePosted).parents == (2, 3)
    stored = market.node(task_id, 4)
    assert (stored.kind, stored.parent, stored.samples, stored.confirmations) == (
        NodeKind.MERGE,
        2,
        1000,
        1,
    )
    assert stored.plaintext_digest == digest("p0")

    # Round 1: both miners build on the merge; the evaluator merges them after the last round.
    assert market.current_round(task_id) == 1
    market.submit_update(miner_a, task_id, 4, 600, digest("a1"), "bafkreia1")
    market.submit_update(miner_b, task_id, 4, 400, digest("b1"), "bafkreib1")
    advance_to(task.rounds_end)
    assert market.phase(task_id) == Phase.REVEAL
    with pytest.raises(reverts.RoundNotOpen):
        market.submit_update(miner_a, task_id, 4, 600, digest("late"), "bafkreilate")
    market.post_merge(evaluator, task_id, 1, [5, 6], 1000, digest("m1"), digest("p1"), "bafkreim1")

    records = market.nodes(task_id)
    assert [(r.node_id, r.kind, r.parents) for r in records] == [
        (1, NodeKind.ARCHITECTURE, (0,)),
        (2, NodeKind.UPDATE, (1,)),
        (3, NodeKind.UPDATE, (1,)),
        (4, NodeKind.MERGE, (2, 3)),
        (5, NodeKind.UPDATE, (4,)),
        (6, NodeKind.UPDATE, (4,)),
        (7, NodeKind.MERGE, (5, 6)),
    ]
    assert records[1].cid == "bafkreia0" and records[1].digest == digest("a0")
    task = market.task(task_id)
    assert (task.node_count, task.submission_count, task.escrow) == (7, 5, 10 * ETHER + 5 * deposit)

    # Reveal: only the sponsor, only with the committed file and salt.
    with pytest.raises(reverts.CommitmentMismatch):
        market.reveal_validation(sponsor, task_id, sha256(b"another file"), SALT, "bafkreival")
    revealed = send_reveal(market, task_id, sponsor)
    assert revealed.event(ValidationRevealed).file_digest == sha256(VALIDATION_FILE)
    assert market.phase(task_id) == Phase.EVALUATION

    # The evaluator posts the payout root: 2 ETH expertise, 5 ETH data; deposits refunded.
    leaves = [
        PayoutLeaf(0, scientist, 2 * ETHER + deposit, 0),
        PayoutLeaf(1, miner_a, 3 * ETHER + 2 * deposit, 30),
        PayoutLeaf(2, miner_b, 2 * ETHER + 2 * deposit, 20),
    ]
    tree = payout_tree(leaves)
    total = sum(leaf.amount for leaf in leaves)
    posted = market.post_payout_root(evaluator, task_id, tree.root, total)
    assert posted.event(PayoutRootAgreed).arguments() == {
        "task_id": 1,
        "root": tree.root,
        "total": total,
    }
    assert market.phase(task_id) == Phase.CHALLENGE
    with pytest.raises(reverts.ChallengeWindowOpen):
        market.finalize(accounts[8], task_id)
    with pytest.raises(reverts.WrongPhase):
        market.claim(scientist, task_id, leaves[0], tree.proof(0))

    advance_to(market.task(task_id).challenge_end)
    finalized = market.finalize(accounts[8], task_id)
    assert finalized.event(TaskFinalized).total == total
    assert market.phase(task_id) == Phase.CLAIMS

    # Claims: paid to the leaf's account whoever sends it, once, with reputation.
    before = market.balance(scientist)
    market.claim(accounts[8], task_id, leaves[0], tree.proof(0))
    assert market.balance(scientist) == before + 2 * ETHER + deposit
    before = market.balance(miner_a)
    claim_a = market.claim(miner_a, task_id, leaves[1], tree.proof(1))
    assert market.balance(miner_a) == before + 3 * ETHER + 2 * deposit - spent(w3, claim_a.tx_hash)
    assert claim_a.event(Claimed).arguments() == {
        "task_id": 1,
        "index": 1,
        "account": miner_a,
        "amount": 3 * ETHER + 2 * deposit,
        "points": 30,
    }
    assert market.reputation(miner_a) == 30 and market.reputation(scientist) == 0
    assert market.is_claimed(task_id, 1) and not market.is_claimed(task_id, 2)
    with pytest.raises(reverts.AlreadyClaimed):
        market.claim(miner_a, task_id, leaves[1], tree.proof(1))

    # The sponsor takes back what the root did not allocate, right away...
    before = market.balance(sponsor)
    reclaimed = market.reclaim(sponsor, task_id)
    unallocated = 10 * ETHER + 5 * deposit - total
    assert unallocated == 3 * ETHER
    assert market.balance(sponsor) == before + unallocated - spent(w3, reclaimed.tx_hash)
    with pytest.raises(reverts.NothingToReclaim):
        market.reclaim(sponsor, task_id)

    # ...and what was not claimed once the claim period is over; claims are then closed.
    advance_to(market.task(task_id).claim_deadline)
    assert market.phase(task_id) == Phase.CLOSED
    with pytest.raises(reverts.WrongPhase):
        market.claim(miner_b, task_id, leaves[2], tree.proof(2))
    market.reclaim(sponsor, task_id)
    assert market.balance(market.address) == 0
    final = market.task(task_id)
    assert final.claimed == 5 * ETHER + 3 * deposit
    assert final.reclaimed == 10 * ETHER + 5 * deposit - final.claimed
