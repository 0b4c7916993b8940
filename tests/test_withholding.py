"""Attacks on settlement by withholding or self-dealing, run against the contract through the
project's `ChainClient` on eth-tester (issue 14: attacks 2b, 3, 4, 10, 11 and the early-proposal
lock). Each test runs the attack and asserts who got what, in wei."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_abi import encode
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.client import PUBLIC_MIN_WINDOW, ChainClient
from marketplace.chain.events import Claimed, PayoutRootAgreed, Refunded, TaskCancelled
from marketplace.rules.messages import Phase, TaskParams
from marketplace.wire.crypto import PayoutLeaf, payout_tree
from tests.helpers import (
    architecture,
    create_task,
    digest,
    funded_task,
    reveal,
    selector,
    send_reveal,
    spent,
    submit,
)

ETHER = 10**18
DEPOSIT = ETHER // 100


# ---------------------------------------------------------------- 3: the sponsor judges itself


def test_the_sponsor_cannot_be_an_evaluator_of_its_own_task(
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
) -> None:
    for evaluators, quorum in (((sponsor,), 1), ((accounts[1], sponsor, accounts[5]), 2)):
        with pytest.raises(reverts.SponsorIsEvaluator) as refused:
            market.create_task(sponsor, task_params(evaluators=evaluators, quorum=quorum))
        assert refused.value.values == {"sponsor": sponsor}
    assert market.task_count() == 0 and market.balance(market.address) == 0


# ---------------------------------------------------------------- 2b: squeezed windows


def test_windows_under_the_deployment_minimum_are_refused(
    w3: Web3, accounts: list[str], task_params: Callable[..., TaskParams]
) -> None:
    public = ChainClient.deploy(w3, accounts[9], min_window=PUBLIC_MIN_WINDOW)
    assert public.min_window() == 3600
    for field in (
        "round_duration",
        "reveal_window",
        "evaluation_window",
        "challenge_window",
        "claim_window",
    ):
        with pytest.raises(reverts.WindowTooShort) as refused:
            windows = {"challenge_window": 3600, field: 3599}
            public.create_task(accounts[0], task_params(**windows))
        assert refused.value.values == {"window": 3599, "minimum": 3600}
    assert public.task_count() == 0
    # At the minimum everywhere, it is accepted.
    fields = ("round_duration", "reveal_window", "evaluation_window", "challenge_window")
    at_minimum = task_params(**dict.fromkeys(fields, 3600))
    assert public.create_task(accounts[0], at_minimum).value == 1


def test_a_reveal_in_the_last_seconds_still_leaves_the_whole_evaluation_window(
    market: ChainClient,
    sponsor: str,
    evaluator: str,
    accounts: list[str],
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    task_id = create_task(market, sponsor, task_params(evaluation_window=3600))
    architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    advance_to(task.reveal_deadline - 3)
    send_reveal(market, task_id, sponsor)  # mined two seconds before the reveal deadline
    revealed = market.task(task_id)
    assert revealed.revealed_at == task.reveal_deadline - 2
    assert revealed.evaluation_deadline == revealed.revealed_at + 3600
    # An hour after the old deadline arithmetic would have closed it, the root still lands.
    advance_to(revealed.evaluation_deadline - 2)
    root = payout_tree([PayoutLeaf(0, accounts[2], ETHER, 0)]).root
    posted = market.post_payout_root(evaluator, task_id, root, ETHER)
    assert posted.event(PayoutRootAgreed).arguments() == {
        "task_id": task_id,
        "root": root,
        "total": ETHER,
    }
    assert market.phase(task_id) == Phase.CHALLENGE


# ---------------------------------------------------------------- 4 and 3: withheld settlement


def _round_with_merge(
    market: ChainClient,
    accounts: list[str],
    task_id: int,
    evaluator: str,
    advance_to: Callable[[int], int],
    arch: bool = True,
) -> tuple[int, int]:
    """An architecture (unless there is one), two honest updates on it, and round 0's merge of
    both (1-of-1)."""
    if arch:
        architecture(market, accounts[2], task_id)
    first = submit(market, accounts[3], task_id, 1, "a")
    second = submit(market, accounts[4], task_id, 1, "b")
    advance_to(market.task(task_id).round_end(0))
    market.post_merge(evaluator, task_id, 0, [first, second], 2, digest("m"), digest("p"), "m")
    return first, second


def test_unrevealed_sybil_architectures_take_nothing_of_the_bounty(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    sybil, outsider = accounts[7], accounts[8]
    task_id = create_task(market, sponsor, task_params())
    honest = _round_with_merge(market, accounts, task_id, evaluator, advance_to)
    # In the last round the sponsor's sybil floods the task with empty architectures, and the
    # sponsor does not reveal (the attack took 96% of the bounty with 96 of them).
    sybil_nodes = [architecture(market, sybil, task_id, f"empty{i}") for i in range(12)]
    task = market.task(task_id)
    assert (task.submission_count, task.kept_updates) == (15, 2)
    advance_to(task.reveal_deadline)
    assert market.phase(task_id) == Phase.UNREVEALED

    sybil_before = market.balance(sybil)
    refunds = [market.refund(outsider, task_id, node) for node in sybil_nodes]
    assert [r.event(Refunded).amount for r in refunds] == [DEPOSIT] * 12
    assert market.balance(sybil) == sybil_before + 12 * DEPOSIT
    paid = {}
    for node, author in zip(honest, (accounts[3], accounts[4]), strict=True):
        before = market.balance(author)
        market.refund(outsider, task_id, node)
        paid[author] = market.balance(author) - before
    assert paid == {accounts[3]: DEPOSIT + 5 * ETHER, accounts[4]: DEPOSIT + 5 * ETHER}
    market.refund(outsider, task_id, 1)  # the architecture: its deposit only
    assert market.balance(market.address) == 0
    with pytest.raises(reverts.WrongPhase):
        market.reclaim(sponsor, task_id)


def test_a_silent_evaluator_hands_the_bounty_to_the_kept_updates_not_the_sponsor(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    bounty = 10 * ETHER + 1
    task_id = create_task(market, sponsor, task_params(bounty=bounty))
    first, second = _round_with_merge(market, accounts, task_id, evaluator, advance_to)
    reveal(w3, market, task_id, sponsor)
    advance_to(market.task(task_id).evaluation_deadline)  # the evaluator never posts a root
    assert market.phase(task_id) == Phase.UNSETTLED
    sponsor_before = market.balance(sponsor)
    with pytest.raises(reverts.WrongPhase) as refused:
        market.reclaim(sponsor, task_id)
    assert refused.value.values == {
        "taskId": task_id,
        "current": Phase.UNSETTLED,
        "allowed": errors.phase_mask(Phase.CLAIMS, Phase.CLOSED),
    }
    amounts = [
        market.refund(accounts[8], task_id, node).event(Refunded).amount
        for node in (second, first, 1)
    ]
    # Shares in refund order: floor(B/2), then the rest (the odd wei is swept, not stranded).
    assert amounts == [DEPOSIT + 5 * ETHER, DEPOSIT + 5 * ETHER + 1, DEPOSIT]
    assert market.balance(market.address) == 0
    assert market.balance(sponsor) == sponsor_before


# ---------------------------------------------------------------- a stranger's early proposal


def test_the_sponsor_cancels_before_the_start_despite_a_proposal_and_deposits_return(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    stranger = accounts[6]
    start = w3.eth.get_block("latest")["timestamp"] + 1000
    task_id = create_task(market, sponsor, task_params(start=start))
    node = architecture(market, stranger, task_id)
    with pytest.raises(reverts.WrongPhase):
        market.refund(stranger, task_id, node)  # not before the task is cancelled
    sponsor_before, stranger_before = market.balance(sponsor), market.balance(stranger)
    cancelled = market.cancel_task(sponsor, task_id)
    assert cancelled.event(TaskCancelled).arguments() == {
        "task_id": task_id,
        "refunded": 10 * ETHER,
    }
    assert market.balance(sponsor) == sponsor_before + 10 * ETHER - spent(w3, cancelled.tx_hash)
    refunded = market.refund(sponsor, task_id, node)  # anyone may send it; the author is paid
    assert refunded.event(Refunded).amount == DEPOSIT
    assert market.balance(stranger) == stranger_before + DEPOSIT
    assert market.balance(market.address) == 0

    # Once the rounds opened, a submission locks the bounty in.
    later = create_task(market, sponsor, task_params())
    architecture(market, stranger, later)
    with pytest.raises(reverts.HasSubmissions):
        market.cancel_task(sponsor, later)


# ---------------------------------------------------------------- 10: minted reputation


def test_reputation_is_at_most_the_amount_and_never_to_the_sponsor_or_evaluator(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    sybil = accounts[7]
    task_id = create_task(market, sponsor, task_params(bounty=3))
    architecture(market, sybil, task_id)
    leaves = [
        PayoutLeaf(0, sybil, 1, 2**255),  # the attack: 1 wei paid, 2**255 points asked
        PayoutLeaf(1, sponsor, 1, 50),
        PayoutLeaf(2, evaluator, 1, 50),
    ]
    tree = payout_tree(leaves)
    reveal(w3, market, task_id, sponsor)
    market.post_payout_root(evaluator, task_id, tree.root, 3)
    advance_to(market.task(task_id).challenge_end)
    market.finalize(evaluator, task_id)
    credited = [
        market.claim(sybil, task_id, leaf, tree.proof(leaf.index)).event(Claimed).points
        for leaf in leaves
    ]
    assert credited == [1, 0, 0]
    assert [market.reputation(a) for a in (sybil, sponsor, evaluator)] == [1, 0, 0]


# ---------------------------------------------------------------- 11: a rebasing token


def test_a_negative_rebase_costs_every_task_alike(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    deploy: Callable[..., Contract],
    task_params: Callable[..., TaskParams],
) -> None:
    token = deploy("RebasingToken")
    first_sponsor, second_sponsor = accounts[0], accounts[6]
    unit = 10**18
    params = task_params(token=token.address, bounty=10 * unit, deposit=0)
    first = funded_task(w3, market, token, first_sponsor, params)
    second = funded_task(w3, market, token, second_sponsor, params)
    assert token.functions.balanceOf(market.address).call() == 20 * unit
    token.functions.rebase(1, 2).transact({"from": accounts[9]})  # -50% for every holder
    market.cancel_task(first_sponsor, first)
    # Half of its escrow, not the whole 10 out of the other task's share.
    assert token.functions.balanceOf(first_sponsor).call() == 5 * unit
    market.cancel_task(second_sponsor, second)
    assert token.functions.balanceOf(second_sponsor).call() == 5 * unit
    assert token.functions.balanceOf(market.address).call() == 0


# ---------------------------------------------------------------- the kept set


def test_confirmations_name_the_posted_parents_and_end_at_the_reveal(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    trio = (accounts[1], accounts[5], accounts[6])
    task_id = create_task(market, sponsor, task_params(evaluators=trio, quorum=2))
    architecture(market, accounts[2], task_id)
    first, second = (submit(market, accounts[n], task_id, 1, f"u{n}") for n in (3, 4))
    advance_to(market.task(task_id).round_end(0))
    merge = market.post_merge(
        trio[0], task_id, 0, [first, second], 2, digest("m"), digest("p"), "m"
    )
    merge_id = merge.value
    assert merge_id is not None
    # Posted by one of three: nothing is kept until the quorum confirms the same parents.
    assert market.task(task_id).kept_updates == 0
    with pytest.raises(reverts.MergeParentsMismatch) as refused:
        market.confirm_merge(trio[1], task_id, merge_id, digest("p"), [first])
    assert refused.value.values == {"taskId": task_id, "nodeId": merge_id}
    market.confirm_merge(trio[1], task_id, merge_id, digest("p"), [first, second])
    assert market.task(task_id).kept_updates == 2
    assert [market.node(task_id, n).kept for n in (1, first, second, merge_id)] == [
        False,
        True,
        True,
        False,
    ]
    # After the reveal the kept set is final: a late confirmation is refused.
    reveal(w3, market, task_id, sponsor)
    with pytest.raises(reverts.WrongPhase) as late:
        market.confirm_merge(trio[2], task_id, merge_id, digest("p"), [first, second])
    assert late.value.values == {
        "taskId": task_id,
        "current": Phase.EVALUATION,
        "allowed": errors.phase_mask(Phase.ROUNDS, Phase.REVEAL),
    }
    assert market.node(task_id, merge_id).confirmations == 0b011


def test_join_deposits_are_escrowed_and_shared_when_settlement_is_withheld(
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    task_id = create_task(market, sponsor, task_params())
    architecture(market, accounts[2], task_id)
    key = bytes.fromhex("09" * 32)
    free_join = market.contract.functions.joinRound(task_id, 1, key)
    with pytest.raises(ContractLogicError) as refused:  # a join pays the deposit
        free_join.call({"from": accounts[6], "value": 0})
    wrong_value = selector("WrongValue(uint256,uint256)") + encode(
        ["uint256", "uint256"], [0, DEPOSIT]
    )
    assert refused.value.data == "0x" + wrong_value.hex()
    for joiner in (accounts[6], accounts[7]):
        market.join_round(joiner, task_id, 1, key)
    task = market.task(task_id)
    assert (task.join_count, task.escrow) == (2, 10 * ETHER + 3 * DEPOSIT)
    assert market.balance(market.address) == 10 * ETHER + 3 * DEPOSIT
    first, second = _round_with_merge(market, accounts, task_id, evaluator, advance_to, arch=False)
    advance_to(market.task(task_id).reveal_deadline)  # the sponsor withholds the reveal
    # Nobody judged which joins were followed up: their deposits join the bounty's shares.
    pool = 10 * ETHER + 2 * DEPOSIT
    amounts = [
        market.refund(accounts[8], task_id, n).event(Refunded).amount for n in (first, second, 1)
    ]
    assert amounts == [DEPOSIT + pool // 2, DEPOSIT + pool - pool // 2, DEPOSIT]
    assert market.balance(market.address) == 0
