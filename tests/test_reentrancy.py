"""A receiver contract that re-enters the marketplace from its `receive` gets nothing extra.

For each path that pays ETH (`claim`, `refund`, `reclaim`, `cancelTask`) the ReentrantReceiver of
tests/contracts/Attackers.sol is the beneficiary; armed, it re-enters once when it is paid. The
outer call must pay exactly one payout and the inner one must fail with the transient guard's
`ReentrancyGuardReentrantCall()`, which the receiver records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxParams, TxReceipt, Wei

from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.chain.events import ChainEvent, Claimed, Reclaimed, Refunded, TaskCancelled
from marketplace.dev import devchain
from marketplace.rules.messages import Phase, TaskParams
from marketplace.wire.crypto import PayoutLeaf, payout_tree, sha256
from tests.helpers import (
    ETHER,
    SALT,
    VALIDATION_FILE,
    architecture,
    create_task,
    digest,
    post_and_finalize,
    selector,
    settle,
)

GAS = 500_000
# Modes of ReentrantReceiver.arm: which marketplace function `receive` re-enters.
CLAIM, REFUND, RECLAIM, CANCEL = 1, 2, 3, 4
REENTRANT_CALL = selector("ReentrancyGuardReentrantCall()")


def send(w3: Web3, call: ContractFunction, sender: str, value: int = 0) -> TxReceipt:
    """Send a call to a test contract with an explicit gas limit; it must succeed."""
    tx: TxParams = {"from": to_checksum_address(sender), "gas": GAS, "value": Wei(value)}
    tx_hash = call.transact(tx)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def assert_reentry_blocked(market: ChainClient, receiver: Contract) -> None:
    """The receiver tried once to re-enter, and the guard refused it."""
    assert receiver.functions.reentryAttempts().call() == 1
    assert receiver.functions.reentrySucceeded().call() is False
    error = bytes(receiver.functions.reentryError().call())
    assert error == REENTRANT_CALL == bytes.fromhex("3ee5aeb5")
    assert reverts.BY_SELECTOR[error[:4]] is reverts.ReentrancyGuardReentrantCall
    assert reverts.ReentrancyGuardReentrantCall.ARGUMENTS == ()


@pytest.fixture
def receiver(deploy: Callable[..., Contract], market: ChainClient) -> Contract:
    return deploy("ReentrantReceiver", market.address)


def sponsored_by(
    w3: Web3, market: ChainClient, receiver: Contract, params: TaskParams, sender: str
) -> int:
    """Create a task through the receiver's wrapper: the receiver contract is its sponsor."""
    send(w3, receiver.functions.createTask(params.as_abi()), sender, value=params.bounty)
    task_id = market.task_count()
    assert market.task(task_id).sponsor == receiver.address
    assert market.balance(receiver.address) == 0  # the bounty only passed through
    return task_id


def receiver_reveals(
    w3: Web3, market: ChainClient, receiver: Contract, task_id: int, sender: str
) -> None:
    """Wait out the rounds; the receiver, as sponsor, reveals the committed validation set."""
    devchain.advance_to(w3, market.task(task_id).rounds_end)
    reveal = receiver.functions.revealValidation(task_id, sha256(VALIDATION_FILE), SALT)
    send(w3, reveal, sender)
    assert market.task(task_id).revealed


def only_event(market: ChainClient, kind: type[ChainEvent], task_id: int) -> dict[str, Any]:
    events = market.events(kind, task_id=task_id)
    assert len(events) == 1
    return events[0].arguments()


def test_claim_reentry_pays_one_leaf(
    w3: Web3,
    market: ChainClient,
    receiver: Contract,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
) -> None:
    task_id = create_task(market, sponsor, task_params())
    leaves = [
        PayoutLeaf(0, accounts[2], 2 * ETHER, 5),
        PayoutLeaf(1, receiver.address, 3 * ETHER, 7),
        PayoutLeaf(2, accounts[3], ETHER, 1),
    ]
    tree = payout_tree(leaves)
    settle(w3, market, task_id, sponsor, evaluator, tree.root, 6 * ETHER)
    proof = tree.proof(1)
    send(w3, receiver.functions.arm(CLAIM, task_id, 1, 3 * ETHER, 7, proof), accounts[5])
    market_before = market.balance(market.address)
    assert market_before == 10 * ETHER

    send(w3, receiver.functions.claim(), accounts[5])

    assert market.balance(receiver.address) == 3 * ETHER
    assert market.balance(market.address) == market_before - 3 * ETHER
    assert_reentry_blocked(market, receiver)
    assert market.is_claimed(task_id, 1) and not market.is_claimed(task_id, 0)
    assert market.reputation(receiver.address) == 7
    assert market.task(task_id).claimed == 3 * ETHER
    assert only_event(market, Claimed, task_id) == {
        "task_id": task_id,
        "index": 1,
        "account": receiver.address,
        "amount": 3 * ETHER,
        "points": 7,
    }
    with pytest.raises(reverts.AlreadyClaimed) as refused:
        market.claim(accounts[5], task_id, leaves[1], proof)
    assert refused.value.values == {"taskId": task_id, "index": 1}


def test_refund_reentry_pays_one_refund(
    w3: Web3,
    market: ChainClient,
    receiver: Contract,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    deposit = ETHER // 100
    task_id = create_task(market, sponsor, task_params())
    architecture(market, accounts[2], task_id)
    send(w3, receiver.functions.submitUpdate(task_id, 1, digest("upd")), accounts[5], value=deposit)
    assert market.node(task_id, 2).author == receiver.address
    assert market.balance(receiver.address) == 0
    # The sponsor never reveals: each of the two submissions gets its deposit and half the bounty.
    advance_to(market.task(task_id).reveal_deadline)
    assert market.phase(task_id) == Phase.UNREVEALED
    send(w3, receiver.functions.arm(REFUND, task_id, 2, 0, 0, []), accounts[5])
    market_before = market.balance(market.address)
    assert market_before == 10 * ETHER + 2 * deposit

    send(w3, receiver.functions.refund(), accounts[5])

    refund = deposit + 5 * ETHER
    assert market.balance(receiver.address) == refund
    assert market.balance(market.address) == market_before - refund
    assert_reentry_blocked(market, receiver)
    assert market.is_refunded(task_id, 2) and not market.is_refunded(task_id, 1)
    assert only_event(market, Refunded, task_id) == {
        "task_id": task_id,
        "node_id": 2,
        "author": receiver.address,
        "amount": refund,
    }
    with pytest.raises(reverts.AlreadyRefunded):
        market.refund(accounts[5], task_id, 2)


@pytest.mark.parametrize(
    "phase", [Phase.CLAIMS, Phase.CLOSED, Phase.UNSETTLED], ids=lambda phase: phase.name.lower()
)
def test_reclaim_reentry_pays_one_reclaim(
    w3: Web3,
    market: ChainClient,
    receiver: Contract,
    accounts: list[str],
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
    phase: Phase,
) -> None:
    deposit = ETHER // 100
    scientist = accounts[2]
    task_id = sponsored_by(w3, market, receiver, task_params(), accounts[5])
    if phase != Phase.UNSETTLED:  # after a submission an unsettled bounty goes to it, by refund
        architecture(market, scientist, task_id)
    receiver_reveals(w3, market, receiver, task_id, accounts[5])
    leaves = [
        PayoutLeaf(0, scientist, 4 * ETHER + deposit, 10),
        PayoutLeaf(1, accounts[3], ETHER, 2),
    ]
    tree = payout_tree(leaves)
    escrow = 10 * ETHER + deposit
    if phase == Phase.UNSETTLED:
        advance_to(market.task(task_id).evaluation_deadline)
        owed = 10 * ETHER  # nobody submitted: the bounty
    else:
        post_and_finalize(w3, market, task_id, evaluator, tree.root, 5 * ETHER + deposit)
        market.claim(scientist, task_id, leaves[0], tree.proof(0))
        if phase == Phase.CLAIMS:
            owed = escrow - (5 * ETHER + deposit)  # what the root did not allocate
        else:
            advance_to(market.task(task_id).claim_deadline)
            owed = escrow - (4 * ETHER + deposit)  # everything not claimed
    assert market.phase(task_id) == phase
    send(w3, receiver.functions.arm(RECLAIM, task_id, 0, 0, 0, []), accounts[5])
    market_before = market.balance(market.address)

    send(w3, receiver.functions.reclaim(), accounts[5])

    assert market.balance(receiver.address) == owed
    assert market.balance(market.address) == market_before - owed
    assert_reentry_blocked(market, receiver)
    assert market.task(task_id).reclaimed == owed
    assert only_event(market, Reclaimed, task_id) == {
        "task_id": task_id,
        "sponsor": receiver.address,
        "amount": owed,
    }


def test_cancel_reentry_pays_the_bounty_once(
    w3: Web3,
    market: ChainClient,
    receiver: Contract,
    accounts: list[str],
    task_params: Callable[..., TaskParams],
) -> None:
    task_id = sponsored_by(w3, market, receiver, task_params(), accounts[5])
    send(w3, receiver.functions.arm(CANCEL, task_id, 0, 0, 0, []), accounts[5])
    assert market.balance(market.address) == 10 * ETHER

    send(w3, receiver.functions.cancel(), accounts[5])

    assert market.balance(receiver.address) == 10 * ETHER
    assert market.balance(market.address) == 0
    assert_reentry_blocked(market, receiver)
    assert market.phase(task_id) == Phase.CANCELLED
    assert market.task(task_id).reclaimed == 10 * ETHER
    assert only_event(market, TaskCancelled, task_id) == {
        "task_id": task_id,
        "refunded": 10 * ETHER,
    }


@pytest.mark.parametrize(
    ("trigger", "mode"),
    [("claim", RECLAIM), ("claim", CANCEL), ("reclaim", CLAIM)],
    ids=["claim-reenters-reclaim", "claim-reenters-cancelTask", "reclaim-reenters-claim"],
)
def test_cross_function_reentry_is_refused(
    w3: Web3,
    market: ChainClient,
    receiver: Contract,
    accounts: list[str],
    evaluator: str,
    task_params: Callable[..., TaskParams],
    trigger: str,
    mode: int,
) -> None:
    """Re-entering another guarded function, one that would succeed if called on its own."""
    # The receiver sponsors a task without submissions and is paid by its root's first leaf.
    task_id = sponsored_by(w3, market, receiver, task_params(), accounts[5])
    receiver_reveals(w3, market, receiver, task_id, accounts[5])
    leaves = [
        PayoutLeaf(0, receiver.address, 3 * ETHER, 7),
        PayoutLeaf(1, accounts[2], 2 * ETHER, 1),
    ]
    tree = payout_tree(leaves)
    post_and_finalize(w3, market, task_id, evaluator, tree.root, 5 * ETHER)
    send(w3, receiver.functions.arm(mode, task_id, 0, 3 * ETHER, 7, tree.proof(0)), accounts[5])
    market_before = market.balance(market.address)

    send(w3, receiver.functions[trigger](), accounts[5])

    by_claim = trigger == "claim"
    paid = 3 * ETHER if by_claim else 5 * ETHER  # the leaf, or what the root left over
    assert market.balance(receiver.address) == paid
    assert market.balance(market.address) == market_before - paid
    assert_reentry_blocked(market, receiver)
    assert market.phase(task_id) == Phase.CLAIMS
    task = market.task(task_id)
    assert (task.claimed, task.reclaimed) == ((3 * ETHER, 0) if by_claim else (0, 5 * ETHER))
    assert market.is_claimed(task_id, 0) == by_claim
    assert market.reputation(receiver.address) == 0  # the sponsor earns no reputation of its own
