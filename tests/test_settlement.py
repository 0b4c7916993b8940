"""The settlement paths other than the happy one: a sponsor who never reveals, evaluators who never
agree, cancellation, a three-evaluator quorum (merge confirmations, a dissenting root and its
strike), and the phase of one task at every boundary of its lifecycle. ETH throughout, with exact
balances and events at every step."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from web3 import Web3

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.chain.events import (
    Claimed,
    EvaluatorOverruled,
    MergeConfirmed,
    PayoutRootAgreed,
    PayoutRootPosted,
    Reclaimed,
    Refunded,
    TaskCancelled,
    TaskCreated,
    TaskFinalized,
    TxResult,
)
from marketplace.rules.messages import NodeKind, Phase, TaskParams
from marketplace.wire.crypto import PayoutLeaf, payout_tree
from tests.helpers import (
    CANCELLABLE,
    ETHER,
    architecture,
    create_task,
    digest,
    reveal,
    send_reveal,
    spent,
    submit,
)

DEPOSIT = ETHER // 100


def _round_zero(
    market: ChainClient, task_id: int, scientist: str, miner_a: str, miner_b: str
) -> list[TxResult]:
    """Node 1: an architecture by `scientist`; nodes 2 and 3: an update of it by each miner."""
    results = [
        market.propose_architecture(scientist, task_id, digest("arch"), "bafkreiarch"),
        market.submit_update(miner_a, task_id, 1, 600, digest("a0"), "bafkreia0"),
        market.submit_update(miner_b, task_id, 1, 400, digest("b0"), "bafkreib0"),
    ]
    assert [r.value for r in results] == [1, 2, 3]
    return results


# ---------------------------------------------------------------- the sponsor never reveals


def test_unrevealed_submitters_share_the_bounty_by_refund(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    scientist, miner_a, miner_b, outsider = accounts[2], accounts[3], accounts[4], accounts[8]
    authors = {1: scientist, 2: miner_a, 3: miner_b}
    start = {
        a: market.balance(a) for a in (sponsor, evaluator, scientist, miner_a, miner_b, outsider)
    }
    bounty = 10 * ETHER + 1  # over the 2 kept updates: 5 ETH, then 5 ETH + 1 wei (no dust)
    created = market.create_task(sponsor, task_params(bounty=bounty))
    task_id = created.value
    assert task_id == 1
    submissions = _round_zero(market, task_id, scientist, miner_a, miner_b)
    task = market.task(task_id)
    advance_to(task.round_end(0))
    merge = market.post_merge(
        evaluator, task_id, 0, [2, 3], 1000, digest("m0"), digest("p0"), "bafkreim0"
    )
    assert merge.value == 4
    task = market.task(task_id)
    assert (task.node_count, task.submission_count, task.escrow) == (4, 3, bounty + 3 * DEPOSIT)
    # A quorum of one: posting the merge keeps its two updates, not the architecture.
    assert task.kept_updates == 2
    assert [market.node(task_id, n).kept for n in (1, 2, 3, 4)] == [False, True, True, False]
    assert market.balance(market.address) == bounty + 3 * DEPOSIT

    # The last second of the reveal window: a reveal sent now is mined at the deadline, too late.
    advance_to(task.reveal_deadline - 1)
    assert market.phase(task_id) == Phase.REVEAL
    with pytest.raises(reverts.WrongPhase) as refused:
        send_reveal(market, task_id, sponsor)
    assert refused.value.values == {
        "taskId": task_id,
        "current": Phase.UNREVEALED,
        "allowed": errors.phase_mask(Phase.REVEAL),
    }
    advance_to(task.reveal_deadline)
    assert market.phase(task_id) == Phase.UNREVEALED
    with pytest.raises(reverts.WrongPhase):
        send_reveal(market, task_id, sponsor)
    assert not market.task(task_id).revealed
    with pytest.raises(reverts.WrongPhase) as refused:
        market.reclaim(sponsor, task_id)
    assert refused.value.values == {
        "taskId": task_id,
        "current": Phase.UNREVEALED,
        "allowed": errors.phase_mask(Phase.CLAIMS, Phase.CLOSED),
    }
    with pytest.raises(reverts.HasSubmissions):
        market.cancel_task(sponsor, task_id)
    with pytest.raises(reverts.NotRefundable) as not_refundable:
        market.refund(outsider, task_id, 4)  # the merge carried no deposit
    assert not_refundable.value.values == {"taskId": task_id, "nodeId": 4}
    with pytest.raises(reverts.NotRefundable):
        market.refund(outsider, task_id, 5)  # no such node

    # Each submission gets its deposit back, and each update kept in the confirmed merge one
    # share of the bounty, paid to its author whoever sends the refund; the shares are paid in
    # order and add up to the bounty exactly. A second refund of the same node is refused.
    shares = {1: 0, 2: 5 * ETHER, 3: 5 * ETHER + 1}
    refunds = []
    for node_id, author in authors.items():
        share = shares[node_id]
        assert not market.is_refunded(task_id, node_id)
        author_before, market_before = market.balance(author), market.balance(market.address)
        refunded = market.refund(outsider, task_id, node_id)
        refunds.append(refunded)
        assert refunded.event(Refunded).arguments() == {
            "task_id": task_id,
            "node_id": node_id,
            "author": author,
            "amount": DEPOSIT + share,
        }
        assert market.balance(author) == author_before + DEPOSIT + share
        assert market.balance(market.address) == market_before - DEPOSIT - share
        assert market.is_refunded(task_id, node_id)
        with pytest.raises(reverts.AlreadyRefunded) as again:
            market.refund(author, task_id, node_id)
        assert again.value.values == {"taskId": task_id, "nodeId": node_id}
    assert [e.node_id for e in market.events(Refunded, task_id=task_id)] == [1, 2, 3]

    # Nothing is left: no dust stranded, nothing for the sponsor.
    assert market.balance(market.address) == 0 and market.task(task_id).shares_paid == 2
    with pytest.raises(reverts.WrongPhase):
        market.reclaim(sponsor, task_id)
    assert market.task(task_id).reclaimed == 0

    # Every submitter gained exactly its share; the sponsor lost the bounty; the sender of the
    # refunds paid only gas.
    for node_id, author in authors.items():
        paid_gas = spent(w3, submissions[node_id - 1].tx_hash)
        assert market.balance(author) == start[author] - paid_gas + shares[node_id]
    assert market.balance(sponsor) == start[sponsor] - bounty - spent(w3, created.tx_hash)
    assert market.balance(outsider) == start[outsider] - sum(spent(w3, r.tx_hash) for r in refunds)
    assert market.balance(evaluator) == start[evaluator] - spent(w3, merge.tx_hash)


# ---------------------------------------------------------------- the evaluators never agree


def test_unsettled_bounty_goes_to_the_submitters_never_back_to_the_sponsor(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    scientist, miner_a, miner_b, outsider = accounts[2], accounts[3], accounts[4], accounts[8]
    ev0, ev1, ev2 = accounts[1], accounts[5], accounts[6]
    authors = {1: scientist, 2: miner_a, 3: miner_b}
    start = {a: market.balance(a) for a in (sponsor, scientist, miner_a, miner_b)}
    created = market.create_task(sponsor, task_params(evaluators=(ev0, ev1, ev2), quorum=2))
    task_id = created.value
    submissions = _round_zero(market, task_id, scientist, miner_a, miner_b)
    revealed = reveal(w3, market, task_id, sponsor)
    task = market.task(task_id)
    assert task.evaluation_deadline == task.revealed_at + task.evaluation_window

    # Two evaluators post different roots: one vote each, no agreement.
    root_0 = payout_tree([PayoutLeaf(0, scientist, ETHER, 0)]).root
    root_1 = payout_tree([PayoutLeaf(0, miner_a, ETHER, 0)]).root
    for evaluator, root in ((ev0, root_0), (ev1, root_1)):
        report_cid = f"bafkreireportof{evaluator[2:10].lower()}"
        posted = market.post_payout_root(evaluator, task_id, root, ETHER, report_cid)
        assert [e.name for e in posted.events] == ["PayoutRootPosted"]
        assert posted.event(PayoutRootPosted).arguments() == {
            "task_id": task_id,
            "evaluator": evaluator,
            "root": root,
            "total": ETHER,
            "votes": 1,
            "report_cid": report_cid,
        }
    assert market.task(task_id).posted == 0b011
    with pytest.raises(reverts.WrongPhase) as refused:
        market.reclaim(sponsor, task_id)
    assert refused.value.values == {
        "taskId": task_id,
        "current": Phase.EVALUATION,
        "allowed": errors.phase_mask(Phase.CLAIMS, Phase.CLOSED),
    }

    # The third root would be mined at the evaluation deadline: too late to make a quorum.
    advance_to(task.evaluation_deadline - 1)
    assert market.phase(task_id) == Phase.EVALUATION
    with pytest.raises(reverts.WrongPhase) as refused:
        market.post_payout_root(ev2, task_id, root_0, ETHER)
    assert refused.value.values == {
        "taskId": task_id,
        "current": Phase.UNSETTLED,
        "allowed": errors.phase_mask(Phase.EVALUATION, Phase.CHALLENGE),
    }
    advance_to(task.evaluation_deadline)
    assert market.phase(task_id) == Phase.UNSETTLED
    with pytest.raises(reverts.WrongPhase):
        market.finalize(outsider, task_id)

    # Silent or split evaluators do not hand the bounty back to the sponsor.
    with pytest.raises(reverts.WrongPhase) as refused:
        market.reclaim(sponsor, task_id)
    assert refused.value.values == {
        "taskId": task_id,
        "current": Phase.UNSETTLED,
        "allowed": errors.phase_mask(Phase.CLAIMS, Phase.CLOSED),
    }

    # No merge reached the quorum, so each submission holds one share: floor(B(k+1)/3) -
    # floor(Bk/3) for the k-th refund, which add up to the bounty to the wei.
    shares = {1: 3_333_333_333_333_333_333, 2: 3_333_333_333_333_333_333}
    shares[3] = 10 * ETHER - shares[1] - shares[2]
    assert shares[3] == 3_333_333_333_333_333_334
    for node_id, author in authors.items():
        author_before = market.balance(author)
        refunded = market.refund(outsider, task_id, node_id)
        assert refunded.event(Refunded).arguments() == {
            "task_id": task_id,
            "node_id": node_id,
            "author": author,
            "amount": DEPOSIT + shares[node_id],
        }
        assert market.balance(author) == author_before + DEPOSIT + shares[node_id]
        with pytest.raises(reverts.AlreadyRefunded):
            market.refund(outsider, task_id, node_id)
    assert market.balance(market.address) == 0
    for node_id, author in authors.items():
        paid_gas = spent(w3, submissions[node_id - 1].tx_hash)
        assert market.balance(author) == start[author] - paid_gas + shares[node_id]
    sponsor_gas = sum(spent(w3, r.tx_hash) for r in (created, revealed))
    assert market.balance(sponsor) == start[sponsor] - sponsor_gas - 10 * ETHER


# ---------------------------------------------------------------- cancellation


@pytest.mark.parametrize(
    "phase",
    [Phase.ROUNDS, Phase.REVEAL, Phase.UNREVEALED, Phase.EVALUATION, Phase.UNSETTLED],
    ids=lambda phase: phase.name.lower(),
)
def test_cancel_without_submissions_returns_the_whole_bounty(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
    phase: Phase,
) -> None:
    scientist, miner = accounts[2], accounts[3]
    other = create_task(market, accounts[7], task_params(bounty=3 * ETHER))  # not touched
    task_id = create_task(market, sponsor, task_params())
    task = market.task(task_id)
    if phase != Phase.ROUNDS:
        advance_to(task.rounds_end)
    if phase in (Phase.EVALUATION, Phase.UNSETTLED):
        send_reveal(market, task_id, sponsor)
    if phase == Phase.UNREVEALED:
        advance_to(task.reveal_deadline)
    if phase == Phase.UNSETTLED:
        advance_to(task.evaluation_deadline)
    assert market.phase(task_id) == phase
    with pytest.raises(reverts.NotSponsor):
        market.cancel_task(accounts[7], task_id)

    before = market.balance(sponsor)
    cancelled = market.cancel_task(sponsor, task_id)
    assert [e.name for e in cancelled.events] == ["TaskCancelled"]
    assert cancelled.event(TaskCancelled).arguments() == {
        "task_id": task_id,
        "refunded": 10 * ETHER,
    }
    assert market.balance(sponsor) == before + 10 * ETHER - spent(w3, cancelled.tx_hash)
    assert market.balance(market.address) == 3 * ETHER
    assert market.phase(task_id) == Phase.CANCELLED
    assert not market.task(other).cancelled and market.task(other).reclaimed == 0
    task = market.task(task_id)
    assert (task.cancelled, task.reclaimed, task.node_count) == (True, 10 * ETHER, 0)

    # No submission, no second cancel, nothing to reclaim.
    with pytest.raises(reverts.RoundNotOpen):
        architecture(market, scientist, task_id)
    with pytest.raises(reverts.RoundNotOpen):
        submit(market, miner, task_id, 1, "u")
    with pytest.raises(reverts.WrongPhase) as refused:
        market.cancel_task(sponsor, task_id)
    assert refused.value.values == {
        "taskId": task_id,
        "current": Phase.CANCELLED,
        "allowed": CANCELLABLE,
    }
    with pytest.raises(reverts.WrongPhase):
        market.reclaim(sponsor, task_id)
    assert market.balance(market.address) == 3 * ETHER and market.task(task_id).node_count == 0


def test_a_task_with_one_submission_cannot_be_cancelled(
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
) -> None:
    task_id = create_task(market, sponsor, task_params())
    architecture(market, accounts[2], task_id)
    with pytest.raises(reverts.HasSubmissions) as refused:
        market.cancel_task(sponsor, task_id)
    assert refused.value.values == {"taskId": task_id, "submissions": 1}
    assert market.phase(task_id) == Phase.ROUNDS and not market.task(task_id).cancelled
    assert market.balance(market.address) == 10 * ETHER + DEPOSIT
    assert market.events(TaskCancelled) == []
    # Submissions still go on.
    assert submit(market, accounts[3], task_id, 1, "u") == 2


# ---------------------------------------------------------------- three evaluators, quorum 2


def test_quorum_of_two_confirms_merges_and_settles_the_majority_root(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    scientist, miner_a, miner_b, outsider = accounts[2], accounts[3], accounts[4], accounts[8]
    ev0, ev1, ev2 = accounts[1], accounts[5], accounts[6]
    created = market.create_task(sponsor, task_params(evaluators=(ev0, ev1, ev2), quorum=2))
    task_id = created.value
    event = created.event(TaskCreated)
    assert (event.evaluators, event.quorum) == ((ev0, ev1, ev2), 2)
    assert market.evaluators(task_id) == [ev0, ev1, ev2]
    _round_zero(market, task_id, scientist, miner_a, miner_b)
    task = market.task(task_id)

    # Evaluator 0 posts round 0's merge: its own attestation is one of the two needed.
    advance_to(task.round_end(0))
    merge = market.post_merge(
        ev0, task_id, 0, [2, 3], 1000, digest("m0"), digest("p0"), "bafkreim0"
    )
    assert merge.value == 4
    node = market.node(task_id, 4)
    assert (node.kind, node.author, node.confirmations) == (NodeKind.MERGE, ev0, 0b001)
    with pytest.raises(reverts.MergeNotConfirmed) as refused:
        market.submit_update(miner_a, task_id, 4, 600, digest("a1"), "bafkreia1")
    assert refused.value.values == {"taskId": task_id, "nodeId": 4, "confirmations": 1, "quorum": 2}
    assert market.task(task_id).node_count == 4
    with pytest.raises(reverts.AlreadyConfirmed):
        market.confirm_merge(ev0, task_id, 4, digest("p0"), [2, 3])
    with pytest.raises(reverts.MergeDigestMismatch) as mismatch:
        market.confirm_merge(ev1, task_id, 4, digest("another merge"), [2, 3])
    assert mismatch.value.values == {
        "taskId": task_id,
        "nodeId": 4,
        "posted": digest("p0"),
        "confirmed": digest("another merge"),
    }
    with pytest.raises(reverts.NotEvaluator):
        market.confirm_merge(miner_a, task_id, 4, digest("p0"), [2, 3])
    assert market.node(task_id, 4).confirmations == 0b001

    # Evaluator 1 recomputes the same plaintext: the merge is confirmed and can be built on.
    confirmed = market.confirm_merge(ev1, task_id, 4, digest("p0"), [2, 3])
    assert confirmed.event(MergeConfirmed).arguments() == {
        "task_id": task_id,
        "node_id": 4,
        "evaluator": ev1,
        "confirmations": 2,
    }
    assert market.node(task_id, 4).confirmations == 0b011
    update = market.submit_update(miner_a, task_id, 4, 600, digest("a1"), "bafkreia1")
    assert update.value == 5 and market.node(task_id, 5).parent == 4
    late = market.confirm_merge(ev2, task_id, 4, digest("p0"), [2, 3])
    assert late.event(MergeConfirmed).confirmations == 3
    assert market.node(task_id, 4).confirmations == 0b111

    reveal(w3, market, task_id, sponsor)
    task = market.task(task_id)
    assert (task.submission_count, task.escrow) == (4, 10 * ETHER + 4 * DEPOSIT)

    # Evaluators 0 and 1 agree on R; evaluator 2 posts R' (everything to miner_b).
    leaves = [
        PayoutLeaf(0, scientist, 2 * ETHER + DEPOSIT, 0),
        PayoutLeaf(1, miner_a, 3 * ETHER + 2 * DEPOSIT, 30),
        PayoutLeaf(2, miner_b, 2 * ETHER + DEPOSIT, 20),
    ]
    tree = payout_tree(leaves)
    total = sum(leaf.amount for leaf in leaves)
    rogue_leaves = [PayoutLeaf(0, miner_b, 10 * ETHER + 4 * DEPOSIT, 100)]
    rogue = payout_tree(rogue_leaves)
    first = market.post_payout_root(ev0, task_id, tree.root, total)
    assert first.event(PayoutRootPosted).votes == 1
    dissent = market.post_payout_root(ev2, task_id, rogue.root, 10 * ETHER + 4 * DEPOSIT)
    assert [e.name for e in dissent.events] == ["PayoutRootPosted"]
    assert dissent.event(PayoutRootPosted).votes == 1
    assert market.phase(task_id) == Phase.EVALUATION
    agreed = market.post_payout_root(ev1, task_id, tree.root, total)
    assert agreed.event(PayoutRootPosted).arguments() == {
        "task_id": task_id,
        "evaluator": ev1,
        "root": tree.root,
        "total": total,
        "votes": 2,
        "report_cid": "",
    }
    assert agreed.event(PayoutRootAgreed).arguments() == {
        "task_id": task_id,
        "root": tree.root,
        "total": total,
    }
    assert market.phase(task_id) == Phase.CHALLENGE
    task = market.task(task_id)
    assert (task.payout_root, task.payout_total, task.posted) == (tree.root, total, 0b111)
    with pytest.raises(reverts.AlreadyPosted):
        market.post_payout_root(ev2, task_id, tree.root, total)

    # Finalization strikes the evaluator whose root lost, and only it.
    advance_to(task.challenge_end)
    finalized = market.finalize(outsider, task_id)
    assert [e.name for e in finalized.events] == ["EvaluatorOverruled", "TaskFinalized"]
    assert finalized.event(EvaluatorOverruled).arguments() == {
        "task_id": task_id,
        "evaluator": ev2,
        "strikes": 1,
    }
    assert finalized.event(TaskFinalized).arguments() == {
        "task_id": task_id,
        "root": tree.root,
        "total": total,
    }
    assert [market.strikes(e) for e in (ev0, ev1, ev2)] == [0, 0, 1]

    # Claims follow R; the losing root's leaf proves nothing.
    with pytest.raises(reverts.InvalidProof):
        market.claim(miner_b, task_id, rogue_leaves[0], rogue.proof(0))
    for leaf in leaves:
        account_before, market_before = market.balance(leaf.account), market.balance(market.address)
        claimed = market.claim(outsider, task_id, leaf, tree.proof(leaf.index))
        assert claimed.event(Claimed).arguments() == {
            "task_id": task_id,
            "index": leaf.index,
            "account": leaf.account,
            "amount": leaf.amount,
            "points": leaf.points,
        }
        assert market.balance(leaf.account) == account_before + leaf.amount
        assert market.balance(market.address) == market_before - leaf.amount
    assert [market.reputation(a) for a in (scientist, miner_a, miner_b)] == [0, 30, 20]
    assert market.balance(market.address) == 10 * ETHER + 4 * DEPOSIT - total == 3 * ETHER
    before = market.balance(sponsor)
    reclaimed = market.reclaim(sponsor, task_id)
    assert reclaimed.event(Reclaimed).amount == 3 * ETHER
    assert market.balance(sponsor) == before + 3 * ETHER - spent(w3, reclaimed.tx_hash)
    assert market.balance(market.address) == 0


@pytest.mark.parametrize(
    ("late_root", "late_total", "votes", "overruled"),
    [
        ("agreed", 0, 3, False),
        ("agreed", -1, 1, True),  # the same root with another total is another vote
        ("other", 0, 1, True),
    ],
    ids=["same-root", "same-root-other-total", "other-root"],
)
def test_a_root_posted_after_the_agreement(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
    late_root: str,
    late_total: int,
    votes: int,
    overruled: bool,
) -> None:
    scientist, outsider = accounts[2], accounts[8]
    ev0, ev1, ev2 = accounts[1], accounts[5], accounts[6]
    task_id = create_task(market, sponsor, task_params(evaluators=(ev0, ev1, ev2), quorum=2))
    architecture(market, scientist, task_id)
    reveal(w3, market, task_id, sponsor)
    agreed_root = payout_tree([PayoutLeaf(0, scientist, 5 * ETHER, 10)]).root
    other_root = payout_tree([PayoutLeaf(0, scientist, 6 * ETHER, 10)]).root
    market.post_payout_root(ev0, task_id, agreed_root, 5 * ETHER)
    agreed = market.post_payout_root(ev1, task_id, agreed_root, 5 * ETHER)
    assert agreed.event(PayoutRootAgreed).root == agreed_root
    agreed_at = market.task(task_id).agreed_at

    root = agreed_root if late_root == "agreed" else other_root
    posted = market.post_payout_root(ev2, task_id, root, 5 * ETHER + late_total)
    assert [e.name for e in posted.events] == ["PayoutRootPosted"]  # no second agreement
    assert posted.event(PayoutRootPosted).votes == votes
    task = market.task(task_id)
    assert (task.payout_root, task.payout_total, task.agreed_at) == (
        agreed_root,
        5 * ETHER,
        agreed_at,
    )

    advance_to(task.challenge_end)
    finalized = market.finalize(outsider, task_id)
    expected = [{"task_id": task_id, "evaluator": ev2, "strikes": 1}] if overruled else []
    overrulings = [e for e in finalized.events if isinstance(e, EvaluatorOverruled)]
    assert [e.arguments() for e in overrulings] == expected
    assert [market.strikes(e) for e in (ev0, ev1, ev2)] == [0, 0, int(overruled)]


def test_payout_root_posted_events_carry_each_evaluators_report_cid(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
) -> None:
    scientist = accounts[2]
    ev0, ev1, ev2 = accounts[1], accounts[5], accounts[6]
    task_id = create_task(market, sponsor, task_params(evaluators=(ev0, ev1, ev2), quorum=2))
    other_task = create_task(market, sponsor, task_params(evaluators=(ev0, ev1, ev2), quorum=2))
    for task in (task_id, other_task):
        architecture(market, scientist, task)
    reveal(w3, market, task_id, sponsor)
    send_reveal(market, other_task, sponsor)
    root = payout_tree([PayoutLeaf(0, scientist, ETHER, 1)]).root
    # Realistic CIDv1s (raw leaves, base32): 59 characters each.
    cids = {
        ev0: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        ev1: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
        ev2: "",  # an evaluator may post without a report
    }
    for evaluator, cid in cids.items():
        market.post_payout_root(evaluator, task_id, root, ETHER, cid)
    market.post_payout_root(ev0, other_task, root, ETHER, "bafkreiothertask")

    events = market.events(PayoutRootPosted, task_id=task_id)

    assert [e.arguments() for e in events] == [
        {
            "task_id": task_id,
            "evaluator": evaluator,
            "root": root,
            "total": ETHER,
            "votes": votes,
            "report_cid": cid,
        }
        for (evaluator, cid), votes in zip(cids.items(), (1, 2, 3), strict=True)
    ]
    assert [e.report_cid for e in market.events(PayoutRootPosted, task_id=other_task)] == [
        "bafkreiothertask"
    ]


# ---------------------------------------------------------------- phases at their boundaries


def test_phase_of_one_task_at_every_boundary(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    scientist, miner, outsider = accounts[2], accounts[3], accounts[8]
    assert market.phase(1) == Phase.NONE
    start = int(w3.eth.get_block("latest")["timestamp"]) + 1000
    task_id = create_task(market, sponsor, task_params(start=start))
    task = market.task(task_id)
    assert task.start == start
    assert (task.round_end(0), task.round_end(1)) == (start + 3600, start + 7200)
    assert task.rounds_end == start + 7200
    assert task.reveal_deadline == task.rounds_end + 3600
    assert task.evaluation_deadline == task.reveal_deadline + 3600
    assert (task.challenge_end, task.claim_deadline) == (0, 0)
    assert market.phase(task_id) == Phase.ROUNDS and market.phase(task_id + 1) == Phase.NONE

    # Before the start: architectures are taken (round 0), updates are not.
    assert market.current_round(task_id) == 0
    assert market.propose_architecture(scientist, task_id, digest("arch"), "cid").value == 1
    assert market.node(task_id, 1).round == 0
    advance_to(start - 2)
    with pytest.raises(reverts.RoundNotOpen):
        market.submit_update(miner, task_id, 1, 100, digest("u0"), "cid")  # mined at start - 1
    advance_to(start - 1)
    assert market.submit_update(miner, task_id, 1, 100, digest("u0"), "cid").value == 2  # at start

    advance_to(task.round_end(0) - 1)
    assert (market.phase(task_id), market.current_round(task_id)) == (Phase.ROUNDS, 0)
    advance_to(task.round_end(0))
    assert (market.phase(task_id), market.current_round(task_id)) == (Phase.ROUNDS, 1)
    advance_to(task.rounds_end - 1)
    assert (market.phase(task_id), market.current_round(task_id)) == (Phase.ROUNDS, 1)
    advance_to(task.rounds_end)
    assert (market.phase(task_id), market.current_round(task_id)) == (Phase.REVEAL, 2)

    send_reveal(market, task_id, sponsor)
    assert market.phase(task_id) == Phase.EVALUATION
    # The evaluation window runs from the reveal, however late in its window the reveal came.
    revealed = market.task(task_id)
    assert revealed.revealed_at == task.rounds_end + 1
    assert revealed.evaluation_deadline == revealed.revealed_at + 3600
    task = revealed
    advance_to(task.evaluation_deadline - 2)
    assert market.phase(task_id) == Phase.EVALUATION

    # The root, mined in the last second of the evaluation window, is in time.
    leaf = PayoutLeaf(0, scientist, ETHER, 1)
    market.post_payout_root(evaluator, task_id, payout_tree([leaf]).root, ETHER)
    task = market.task(task_id)
    assert (task.agreed_at, task.finalized_at) == (task.evaluation_deadline - 1, 0)
    assert task.challenge_end == task.agreed_at + 600 and task.claim_deadline == 0
    assert market.phase(task_id) == Phase.CHALLENGE
    advance_to(task.evaluation_deadline)  # agreed in time: not Unsettled
    assert market.phase(task_id) == Phase.CHALLENGE

    advance_to(task.challenge_end - 2)
    with pytest.raises(reverts.ChallengeWindowOpen) as refused:
        market.finalize(outsider, task_id)  # mined at challenge_end - 1
    assert refused.value.values == {"taskId": task_id, "endsAt": task.challenge_end}
    advance_to(task.challenge_end - 1)
    assert market.phase(task_id) == Phase.CHALLENGE
    market.finalize(outsider, task_id)  # mined at challenge_end
    assert market.phase(task_id) == Phase.CLAIMS
    final = market.task(task_id)
    # Finalizing keeps the agreement's time and starts the claim period from its own.
    assert (final.finalized, final.agreed_at, final.finalized_at) == (
        True,
        task.agreed_at,
        task.challenge_end,
    )
    assert final.challenge_end == 0
    assert final.claim_deadline == task.challenge_end + 7 * 24 * 3600

    advance_to(final.claim_deadline - 1)
    assert market.phase(task_id) == Phase.CLAIMS
    advance_to(final.claim_deadline)
    assert market.phase(task_id) == Phase.CLOSED
