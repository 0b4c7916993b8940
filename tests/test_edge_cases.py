"""Corner cases of the settlement logic found in review, each pinned by a test."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from web3 import Web3

from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.rules.messages import Phase, TaskParams
from marketplace.wire.crypto import PayoutLeaf, payout_tree
from tests.helpers import CANCELLABLE, ETHER, architecture, create_task, digest, reveal


def test_cancel_after_a_root_was_agreed_on_a_task_without_submissions_reverts_wrong_phase(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    task_id = create_task(market, sponsor, task_params())
    reveal(w3, market, task_id, sponsor)
    leaf = PayoutLeaf(0, accounts[5], 10 * ETHER, 0)
    market.post_payout_root(evaluator, task_id, payout_tree([leaf]).root, 10 * ETHER)

    with pytest.raises(reverts.WrongPhase) as exc:
        market.cancel_task(sponsor, task_id)

    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.CHALLENGE,
        "allowed": CANCELLABLE,
    }
    advance_to(market.task(task_id).challenge_end)
    market.finalize(sponsor, task_id)
    market.claim(accounts[5], task_id, leaf, payout_tree([leaf]).proof(0))
    with pytest.raises(reverts.WrongPhase):
        market.cancel_task(sponsor, task_id)
    assert market.balance(market.address) == 0


def test_cancel_after_reclaiming_an_unsettled_bounty_reverts_wrong_phase(
    w3: Web3,
    market: ChainClient,
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    task_id = create_task(market, sponsor, task_params())
    reveal(w3, market, task_id, sponsor)
    advance_to(market.task(task_id).evaluation_deadline)
    assert market.phase(task_id) == Phase.UNSETTLED
    market.reclaim(sponsor, task_id)

    with pytest.raises(reverts.WrongPhase) as exc:
        market.cancel_task(sponsor, task_id)

    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.UNSETTLED,
        "allowed": 0,
    }
    assert str(exc.value) == f"task {task_id} is in phase Unsettled; no phase allows this any more"
    assert market.balance(market.address) == 0
    assert market.task(task_id).reclaimed == 10 * ETHER


def test_merge_for_round_255_reverts_round_not_closed_rather_than_overflowing(
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    task_id = create_task(market, sponsor, task_params(rounds=1))
    architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    advance_to(task.rounds_end)

    with pytest.raises(reverts.RoundNotClosed) as exc:
        market.post_merge(evaluator, task_id, 255, [1], 1, digest("m"), digest("p"), "bafkreim")

    assert exc.value.values == {
        "taskId": task_id,
        "round": 255,
        "closes": task.schedule.closes(255),
    }
