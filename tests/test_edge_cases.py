"""Corner cases of the settlement logic found in review, each pinned by a test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from marketplace import errors
from marketplace.chain import ChainClient
from marketplace.crypto import PayoutLeaf, payout_tree, sha256
from marketplace.messages import Phase, TaskParams
from tests.helpers import ETHER, SALT, VALIDATION_FILE, digest


def _reveal_empty_task(
    market: ChainClient, sponsor: str, params: TaskParams, advance_to: Callable[[int], int]
) -> int:
    task_id = market.create_task(sponsor, params).value
    assert task_id is not None
    advance_to(market.task(task_id).rounds_end)
    market.reveal_validation(sponsor, task_id, sha256(VALIDATION_FILE), SALT, "bafkreival")
    return task_id


def test_cancel_after_a_root_was_agreed_on_a_task_without_submissions_reverts_wrong_phase(
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    task_id = _reveal_empty_task(market, sponsor, task_params(), advance_to)
    leaf = PayoutLeaf(0, accounts[5], 10 * ETHER, 0)
    market.post_payout_root(evaluator, task_id, payout_tree([leaf]).root, 10 * ETHER)

    with pytest.raises(errors.WrongPhase) as exc:
        market.cancel_task(sponsor, task_id)

    assert exc.value.values == {"taskId": task_id, "current": Phase.CHALLENGE}
    advance_to(market.task(task_id).challenge_end)
    market.finalize(sponsor, task_id)
    market.claim(accounts[5], task_id, leaf, payout_tree([leaf]).proof(0))
    with pytest.raises(errors.WrongPhase):
        market.cancel_task(sponsor, task_id)
    assert market.balance(market.address) == 0


def test_cancel_after_reclaiming_an_unsettled_bounty_reverts_wrong_phase(
    market: ChainClient,
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    task_id = _reveal_empty_task(market, sponsor, task_params(), advance_to)
    advance_to(market.task(task_id).evaluation_deadline)
    assert market.phase(task_id) == Phase.UNSETTLED
    market.reclaim(sponsor, task_id)

    with pytest.raises(errors.WrongPhase) as exc:
        market.cancel_task(sponsor, task_id)

    assert exc.value.values == {"taskId": task_id, "current": Phase.UNSETTLED}
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
    task_id = market.create_task(sponsor, task_params(rounds=1)).value
    assert task_id is not None
    market.propose_architecture(accounts[2], task_id, digest("arch"), "bafkreiarch")
    task = market.task(task_id)
    advance_to(task.rounds_end)

    with pytest.raises(errors.RoundNotClosed) as exc:
        market.post_merge(evaluator, task_id, 255, [1], 1, digest("m"), digest("p"), "bafkreim")

    assert exc.value.values == {
        "taskId": task_id,
        "round": 255,
        "closes": task.start + 256 * task.round_duration,
    }
