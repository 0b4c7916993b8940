"""Every custom error of the marketplace, triggered through `ChainClient` and asserted by its
exact class in `marketplace.errors` and its exact values.

(ReentrancyGuardReentrantCall is triggered in tests/test_reentrancy.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.chain.events import MaskSeedsRevealed, RoundJoined
from marketplace.dev.devchain import now
from marketplace.rules.messages import ZERO_ADDRESS, NodeKind, Phase, TaskParams
from marketplace.wire.crypto import PayoutLeaf, payout_tree, sha256
from tests.helpers import (
    CANCELLABLE,
    ETHER,
    SALT,
    VALIDATION_FILE,
    architecture,
    commitment,
    create_task,
    digest,
    fund,
    reveal,
    send_reveal,
    settle,
    submit,
)

BOUNTY = 10 * ETHER
DEPOSIT = ETHER // 100
HOUR = 3600

MakeParams = Callable[..., TaskParams]
Deploy = Callable[..., Contract]
AdvanceTo = Callable[[int], int]


# ---------------------------------------------------------------------- helpers


def unchecked_params(base: TaskParams, **overrides: Any) -> TaskParams:
    """`base` with `overrides` and without pydantic's range checks, so the contract's own run."""
    return TaskParams.model_construct(**{**base.model_dump(), **overrides})


def merge(
    market: ChainClient,
    evaluator: str,
    task_id: int,
    round_index: int,
    parents: list[int],
    plaintext: bytes,
) -> int:
    """Post round `round_index`'s merge of `parents` and return its node id."""
    node_id = market.post_merge(
        evaluator,
        task_id,
        round_index,
        parents,
        100 * len(parents),
        digest("merge"),
        plaintext,
        "cid-merge",
    ).value
    assert node_id is not None
    return node_id


def raw_transact(
    market: ChainClient, sender: str, fn_name: str, args: list[Any], value: int
) -> None:
    """Send `fn_name` as given, with any `msg.value`: the client's methods send the right value
    and read the task first, which would stop some calls before the contract's own checks."""
    market.tx.transact(sender, fn_name, args, value=value)


@pytest.fixture
def task_id(market: ChainClient, sponsor: str, task_params: MakeParams) -> int:
    """A 2-round ETH task (10 ETH bounty, 0.01 ETH deposit, one evaluator) in its first round."""
    return create_task(market, sponsor, task_params())


@pytest.fixture
def three_evaluators(accounts: list[str]) -> tuple[str, str, str]:
    return accounts[5], accounts[6], accounts[7]


@pytest.fixture
def quorum_task(
    market: ChainClient,
    sponsor: str,
    task_params: MakeParams,
    three_evaluators: tuple[str, str, str],
) -> int:
    """A 2-round ETH task with three evaluators and a quorum of two."""
    return create_task(market, sponsor, task_params(evaluators=three_evaluators, quorum=2))


@pytest.fixture
def quorum_merge(
    market: ChainClient,
    accounts: list[str],
    quorum_task: int,
    three_evaluators: tuple[str, str, str],
    advance_to: AdvanceTo,
) -> int:
    """Round 0's merge of one architecture in `quorum_task`, posted by the first evaluator only."""
    architecture(market, accounts[2], quorum_task)
    advance_to(market.task(quorum_task).round_end(0))
    return merge(market, three_evaluators[0], quorum_task, 0, [1], digest("p"))


# ---------------------------------------------------------------------- UnknownTask


def test_get_task_of_unknown_id_reverts_unknown_task(market: ChainClient) -> None:
    with pytest.raises(reverts.UnknownTask) as exc:
        market.task(1)
    assert exc.value.values == {"taskId": 1}


def test_cancel_of_unknown_task_reverts_unknown_task(
    market: ChainClient, sponsor: str, task_id: int
) -> None:
    with pytest.raises(reverts.UnknownTask) as exc:
        market.cancel_task(sponsor, task_id + 1)
    assert exc.value.values == {"taskId": 2}


def test_post_merge_on_unknown_task_reverts_unknown_task(
    market: ChainClient, evaluator: str
) -> None:
    with pytest.raises(reverts.UnknownTask) as exc:
        market.post_merge(evaluator, 7, 0, [1], 1, digest("m"), digest("p"), "cid")
    assert exc.value.values == {"taskId": 7}


def test_submit_update_with_raw_call_to_unknown_task_reverts_unknown_task(
    market: ChainClient, accounts: list[str]
) -> None:
    # The client's submit_update reads the task first; the raw call reaches the contract's check.
    with pytest.raises(reverts.UnknownTask) as exc:
        raw_transact(
            market, accounts[2], "submitUpdate", [3, 1, 1, 0, digest("u"), bytes(32), "cid"], 0
        )
    assert exc.value.values == {"taskId": 3}


# ---------------------------------------------------------------------- task parameters

# (case id, overrides of the default params, the error, its values), both as functions of the
# accounts.
INVALID_PARAMS: list[
    tuple[
        str,
        Callable[[list[str]], dict[str, Any]],
        type[errors.ContractRevert],
        Callable[[list[str]], dict[str, Any]],
    ]
] = [
    ("bounty-zero", lambda a: {"bounty": 0}, reverts.ZeroBounty, lambda a: {}),
    ("rounds-zero", lambda a: {"rounds": 0}, reverts.ZeroRounds, lambda a: {}),
    (
        "round-duration-zero",
        lambda a: {"round_duration": 0},
        reverts.ZeroRoundDuration,
        lambda a: {},
    ),
    ("reveal-window-zero", lambda a: {"reveal_window": 0}, reverts.ZeroWindow, lambda a: {}),
    (
        "evaluation-window-zero",
        lambda a: {"evaluation_window": 0},
        reverts.ZeroWindow,
        lambda a: {},
    ),
    ("claim-window-zero", lambda a: {"claim_window": 0}, reverts.ZeroWindow, lambda a: {}),
    (
        "no-evaluator",
        lambda a: {"evaluators": ()},
        reverts.BadEvaluatorCount,
        lambda a: {"count": 0},
    ),
    (
        "nine-evaluators",
        lambda a: {"evaluators": tuple(a[1:10]), "quorum": 5},
        reverts.BadEvaluatorCount,
        lambda a: {"count": 9},
    ),
    (
        "zero-address-evaluator",
        lambda a: {"evaluators": (ZERO_ADDRESS,)},
        reverts.BadEvaluator,
        lambda a: {"evaluator": ZERO_ADDRESS},
    ),
    (
        "zero-address-second-evaluator",
        lambda a: {"evaluators": (a[1], ZERO_ADDRESS, a[2])},
        reverts.BadEvaluator,
        lambda a: {"evaluator": ZERO_ADDRESS},
    ),
    (
        "duplicate-evaluator",
        lambda a: {"evaluators": (a[1], a[2], a[1]), "quorum": 2},
        reverts.BadEvaluator,
        lambda a: {"evaluator": a[1]},
    ),
    (
        "quorum-zero",
        lambda a: {"quorum": 0},
        reverts.BadQuorum,
        lambda a: {"quorum": 0, "evaluators": 1},
    ),
    (
        "quorum-1-of-2",
        lambda a: {"evaluators": (a[1], a[2]), "quorum": 1},
        reverts.BadQuorum,
        lambda a: {"quorum": 1, "evaluators": 2},
    ),
    (
        "quorum-2-of-4",
        lambda a: {"evaluators": tuple(a[1:5]), "quorum": 2},
        reverts.BadQuorum,
        lambda a: {"quorum": 2, "evaluators": 4},
    ),
    (
        "quorum-4-of-8",
        lambda a: {"evaluators": tuple(a[1:9]), "quorum": 4},
        reverts.BadQuorum,
        lambda a: {"quorum": 4, "evaluators": 8},
    ),
    (
        "quorum-above-evaluator-count",
        lambda a: {"evaluators": (a[1],), "quorum": 2},
        reverts.BadQuorum,
        lambda a: {"quorum": 2, "evaluators": 1},
    ),
    (
        "quorum-4-of-3",
        lambda a: {"evaluators": tuple(a[1:4]), "quorum": 4},
        reverts.BadQuorum,
        lambda a: {"quorum": 4, "evaluators": 3},
    ),
    (
        "token-without-code",
        lambda a: {"token": a[5]},
        reverts.TokenNotAContract,
        lambda a: {"token": a[5]},
    ),
]


@pytest.mark.parametrize(
    ("overrides", "error", "values"),
    [pytest.param(build, error, values, id=name) for name, build, error, values in INVALID_PARAMS],
)
def test_create_task_with_out_of_range_param_reverts_with_the_error_naming_it(
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: MakeParams,
    overrides: Callable[[list[str]], dict[str, Any]],
    error: type[errors.ContractRevert],
    values: Callable[[list[str]], dict[str, Any]],
) -> None:
    params = unchecked_params(task_params(), **overrides(accounts))
    with pytest.raises(error) as exc:
        market.create_task(sponsor, params)
    assert type(exc.value) is error
    assert exc.value.values == values(accounts)
    assert market.task_count() == 0


def test_create_task_starting_in_the_past_reverts_start_in_past(
    w3: Web3, market: ChainClient, sponsor: str, task_params: MakeParams
) -> None:
    past = now(w3) - 1  # the transaction runs at least one second after the latest block
    with pytest.raises(reverts.StartInPast) as exc:
        market.create_task(sponsor, task_params(start=past))
    assert exc.value.values["start"] == past
    assert exc.value.values["timestamp"] > past


def test_create_task_accepts_the_boundaries_of_every_range(
    w3: Web3, market: ChainClient, accounts: list[str], sponsor: str, task_params: MakeParams
) -> None:
    # 8 evaluators with the smallest strict majority, a zero challenge window, one 1-second
    # round, 1-second windows, a 1-unit bounty and no deposit: all accepted.
    start = now(w3) + 60
    params = task_params(
        bounty=1,
        deposit=0,
        rounds=1,
        round_duration=1,
        reveal_window=1,
        evaluation_window=1,
        challenge_window=0,
        claim_window=1,
        evaluators=tuple(accounts[1:9]),
        quorum=5,
        start=start,
    )
    task_id = create_task(market, sponsor, params)
    task = market.task(task_id)
    assert (task.bounty, task.evaluator_count, task.quorum, task.start) == (1, 8, 5, start)
    assert create_task(market, sponsor, task_params(evaluators=tuple(accounts[1:4]), quorum=2)) == 2


# ---------------------------------------------------------------------- WrongValue


@pytest.mark.parametrize("sent", [BOUNTY - 1, BOUNTY + 1, 0], ids=["less", "more", "none"])
def test_create_eth_task_with_value_other_than_bounty_reverts_wrong_value(
    market: ChainClient, sponsor: str, task_params: MakeParams, sent: int
) -> None:
    params = task_params()
    with pytest.raises(reverts.WrongValue) as exc:
        raw_transact(market, sponsor, "createTask", [params.as_abi()], sent)
    assert exc.value.values == {"sent": sent, "required": BOUNTY}


def test_create_token_task_with_eth_attached_reverts_wrong_value(
    w3: Web3, market: ChainClient, sponsor: str, task_params: MakeParams, deploy: Deploy
) -> None:
    token = deploy("DevToken")
    fund(w3, market, token, sponsor, BOUNTY)
    params = task_params(token=token.address)
    with pytest.raises(reverts.WrongValue) as exc:
        raw_transact(market, sponsor, "createTask", [params.as_abi()], 1)
    assert exc.value.values == {"sent": 1, "required": 0}
    assert market.balance(sponsor, token.address) == BOUNTY


def test_submit_update_without_the_deposit_reverts_wrong_value(
    market: ChainClient, accounts: list[str], task_id: int
) -> None:
    parent = architecture(market, accounts[2], task_id)
    args = [task_id, parent, 100, 0, digest("u"), bytes(32), "cid"]
    with pytest.raises(reverts.WrongValue) as exc:
        raw_transact(market, accounts[3], "submitUpdate", args, 0)
    assert exc.value.values == {"sent": 0, "required": DEPOSIT}


def test_propose_architecture_with_too_much_value_reverts_wrong_value(
    market: ChainClient, accounts: list[str], task_id: int
) -> None:
    args = [task_id, digest("arch"), "cid"]
    with pytest.raises(reverts.WrongValue) as exc:
        raw_transact(market, accounts[2], "proposeArchitecture", args, DEPOSIT + 1)
    assert exc.value.values == {"sent": DEPOSIT + 1, "required": DEPOSIT}


def test_submission_to_token_task_with_eth_attached_reverts_wrong_value(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_params: MakeParams,
    deploy: Deploy,
) -> None:
    token = deploy("DevToken")
    fund(w3, market, token, sponsor, BOUNTY)
    task_id = create_task(market, sponsor, task_params(token=token.address))
    scientist = accounts[2]
    fund(w3, market, token, scientist, DEPOSIT)
    args = [task_id, digest("arch"), "cid"]
    with pytest.raises(reverts.WrongValue) as exc:
        raw_transact(market, scientist, "proposeArchitecture", args, DEPOSIT)
    assert exc.value.values == {"sent": DEPOSIT, "required": 0}


# ---------------------------------------------------------------------- token transfers


def test_create_task_with_fee_on_transfer_token_reverts_fee_on_transfer_token(
    w3: Web3, market: ChainClient, sponsor: str, task_params: MakeParams, deploy: Deploy
) -> None:
    token = deploy("FeeOnTransferToken")
    fund(w3, market, token, sponsor, BOUNTY)
    with pytest.raises(reverts.FeeOnTransferToken) as exc:
        market.create_task(sponsor, task_params(token=token.address))
    assert exc.value.values == {
        "token": token.address,
        "expected": BOUNTY,
        "received": BOUNTY - BOUNTY // 100,
    }
    assert market.balance(sponsor, token.address) == BOUNTY
    assert market.task_count() == 0


def test_create_task_with_token_returning_false_reverts_safe_erc20_failed_operation(
    w3: Web3, market: ChainClient, sponsor: str, task_params: MakeParams, deploy: Deploy
) -> None:
    token = deploy("FalseToken")
    fund(w3, market, token, sponsor, BOUNTY)
    with pytest.raises(reverts.SafeERC20FailedOperation) as exc:
        market.create_task(sponsor, task_params(token=token.address))
    assert exc.value.values == {"token": token.address}
    assert market.balance(sponsor, token.address) == BOUNTY
    assert market.task_count() == 0


# ---------------------------------------------------------------------- NotSponsor / NotEvaluator


def test_reveal_by_non_sponsor_reverts_not_sponsor(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    advance_to(market.task(task_id).rounds_end)
    assert market.phase(task_id) == Phase.REVEAL
    with pytest.raises(reverts.NotSponsor) as exc:
        market.reveal_validation(accounts[2], task_id, sha256(VALIDATION_FILE), SALT, "cid")
    assert exc.value.values == {"taskId": task_id, "caller": accounts[2]}
    assert not market.task(task_id).revealed


def test_cancel_by_non_sponsor_reverts_not_sponsor(
    market: ChainClient, evaluator: str, task_id: int
) -> None:
    with pytest.raises(reverts.NotSponsor) as exc:
        market.cancel_task(evaluator, task_id)
    assert exc.value.values == {"taskId": task_id, "caller": evaluator}
    assert not market.task(task_id).cancelled


def test_reclaim_by_non_sponsor_reverts_not_sponsor(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
) -> None:
    leaf = PayoutLeaf(0, accounts[2], ETHER, 1)
    settle(w3, market, task_id, sponsor, evaluator, payout_tree([leaf]).root, ETHER)
    with pytest.raises(reverts.NotSponsor) as exc:
        market.reclaim(accounts[2], task_id)
    assert exc.value.values == {"taskId": task_id, "caller": accounts[2]}


def test_post_merge_by_non_evaluator_reverts_not_evaluator(
    market: ChainClient, accounts: list[str], sponsor: str, task_id: int, advance_to: AdvanceTo
) -> None:
    architecture(market, accounts[2], task_id)
    advance_to(market.task(task_id).round_end(0))
    with pytest.raises(reverts.NotEvaluator) as exc:
        market.post_merge(sponsor, task_id, 0, [1], 100, digest("m"), digest("p"), "cid")
    assert exc.value.values == {"taskId": task_id, "caller": sponsor}


def test_confirm_merge_by_non_evaluator_reverts_not_evaluator(
    market: ChainClient, accounts: list[str], evaluator: str, task_id: int, advance_to: AdvanceTo
) -> None:
    architecture(market, accounts[2], task_id)
    advance_to(market.task(task_id).round_end(0))
    merge_id = merge(market, evaluator, task_id, 0, [1], digest("p"))
    with pytest.raises(reverts.NotEvaluator) as exc:
        market.confirm_merge(accounts[3], task_id, merge_id, digest("p"), [1])
    assert exc.value.values == {"taskId": task_id, "caller": accounts[3]}


def test_post_payout_root_by_non_evaluator_reverts_not_evaluator(
    w3: Web3, market: ChainClient, accounts: list[str], sponsor: str, task_id: int
) -> None:
    reveal(w3, market, task_id, sponsor)
    with pytest.raises(reverts.NotEvaluator) as exc:
        market.post_payout_root(sponsor, task_id, digest("root"), ETHER)
    assert exc.value.values == {"taskId": task_id, "caller": sponsor}
    assert market.task(task_id).posted == 0


# ---------------------------------------------------------------------- WrongPhase


def test_reveal_during_rounds_reverts_wrong_phase(
    market: ChainClient, sponsor: str, task_id: int
) -> None:
    with pytest.raises(reverts.WrongPhase) as exc:
        send_reveal(market, task_id, sponsor)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.ROUNDS,
        "allowed": errors.phase_mask(Phase.REVEAL),
    }


def test_reveal_after_reveal_deadline_reverts_wrong_phase(
    market: ChainClient, sponsor: str, task_id: int, advance_to: AdvanceTo
) -> None:
    advance_to(market.task(task_id).reveal_deadline)
    with pytest.raises(reverts.WrongPhase) as exc:
        send_reveal(market, task_id, sponsor)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.UNREVEALED,
        "allowed": errors.phase_mask(Phase.REVEAL),
    }


def test_second_reveal_reverts_wrong_phase(
    w3: Web3, market: ChainClient, sponsor: str, task_id: int
) -> None:
    reveal(w3, market, task_id, sponsor)
    with pytest.raises(reverts.WrongPhase) as exc:
        send_reveal(market, task_id, sponsor)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.EVALUATION,
        "allowed": errors.phase_mask(Phase.REVEAL),
    }


def test_post_payout_root_before_reveal_reverts_wrong_phase(
    market: ChainClient, evaluator: str, task_id: int, advance_to: AdvanceTo
) -> None:
    advance_to(market.task(task_id).rounds_end)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.post_payout_root(evaluator, task_id, digest("root"), ETHER)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.REVEAL,
        "allowed": errors.phase_mask(Phase.EVALUATION, Phase.CHALLENGE),
    }


def test_post_payout_root_after_evaluation_deadline_reverts_wrong_phase(
    w3: Web3, market: ChainClient, sponsor: str, evaluator: str, task_id: int, advance_to: AdvanceTo
) -> None:
    reveal(w3, market, task_id, sponsor)
    advance_to(market.task(task_id).evaluation_deadline)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.post_payout_root(evaluator, task_id, digest("root"), ETHER)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.UNSETTLED,
        "allowed": errors.phase_mask(Phase.EVALUATION, Phase.CHALLENGE),
    }


def test_post_merge_after_reveal_reverts_wrong_phase(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
) -> None:
    architecture(market, accounts[2], task_id)
    reveal(w3, market, task_id, sponsor)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.post_merge(evaluator, task_id, 1, [1], 100, digest("m"), digest("p"), "cid")
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.EVALUATION,
        "allowed": errors.phase_mask(Phase.ROUNDS, Phase.REVEAL),
    }
    assert str(exc.value) == f"task {task_id} is in phase Evaluation; this needs Rounds or Reveal"


def test_finalize_before_any_root_reverts_wrong_phase(
    w3: Web3, market: ChainClient, sponsor: str, task_id: int
) -> None:
    reveal(w3, market, task_id, sponsor)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.finalize(sponsor, task_id)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.EVALUATION,
        "allowed": errors.phase_mask(Phase.CHALLENGE),
    }


def test_claim_before_finalize_reverts_wrong_phase(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
) -> None:
    leaves = [PayoutLeaf(0, accounts[2], ETHER, 1)]
    reveal(w3, market, task_id, sponsor)
    market.post_payout_root(evaluator, task_id, payout_tree(leaves).root, ETHER)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.claim(accounts[2], task_id, leaves[0], payout_tree(leaves).proof(0))
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.CHALLENGE,
        "allowed": errors.phase_mask(Phase.CLAIMS),
    }


def test_claim_on_unknown_task_reverts_wrong_phase_none(
    market: ChainClient, accounts: list[str]
) -> None:
    # claim reads the task without the existence check: an unknown task is in phase None.
    leaf = PayoutLeaf(0, accounts[2], ETHER, 1)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.claim(accounts[2], 4, leaf, [])
    assert exc.value.values == {
        "taskId": 4,
        "current": Phase.NONE,
        "allowed": errors.phase_mask(Phase.CLAIMS),
    }


def test_refund_while_rounds_open_reverts_wrong_phase(
    market: ChainClient, accounts: list[str], task_id: int
) -> None:
    node_id = architecture(market, accounts[2], task_id)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.refund(accounts[2], task_id, node_id)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.ROUNDS,
        "allowed": errors.phase_mask(Phase.UNREVEALED, Phase.UNSETTLED, Phase.CANCELLED),
    }
    assert not market.is_refunded(task_id, node_id)


def test_refund_of_settled_task_reverts_wrong_phase(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
) -> None:
    node_id = architecture(market, accounts[2], task_id)
    leaf = PayoutLeaf(0, accounts[2], ETHER, 1)
    settle(w3, market, task_id, sponsor, evaluator, payout_tree([leaf]).root, ETHER)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.refund(accounts[2], task_id, node_id)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.CLAIMS,
        "allowed": errors.phase_mask(Phase.UNREVEALED, Phase.UNSETTLED, Phase.CANCELLED),
    }


def test_reclaim_while_rounds_open_reverts_wrong_phase(
    market: ChainClient, sponsor: str, task_id: int
) -> None:
    with pytest.raises(reverts.WrongPhase) as exc:
        market.reclaim(sponsor, task_id)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.ROUNDS,
        # No submissions: an unsettled bounty would return to the sponsor too.
        "allowed": errors.phase_mask(Phase.CLAIMS, Phase.CLOSED, Phase.UNSETTLED),
    }


def test_reclaim_when_sponsor_did_not_reveal_reverts_wrong_phase(
    market: ChainClient, accounts: list[str], sponsor: str, task_id: int, advance_to: AdvanceTo
) -> None:
    architecture(market, accounts[2], task_id)
    advance_to(market.task(task_id).reveal_deadline)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.reclaim(sponsor, task_id)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.UNREVEALED,
        "allowed": errors.phase_mask(Phase.CLAIMS, Phase.CLOSED),
    }


def test_reclaim_during_challenge_window_reverts_wrong_phase(
    w3: Web3, market: ChainClient, sponsor: str, evaluator: str, task_id: int
) -> None:
    reveal(w3, market, task_id, sponsor)
    market.post_payout_root(evaluator, task_id, digest("root"), ETHER)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.reclaim(sponsor, task_id)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.CHALLENGE,
        # No submissions: an unsettled bounty would return to the sponsor too.
        "allowed": errors.phase_mask(Phase.CLAIMS, Phase.CLOSED, Phase.UNSETTLED),
    }


def test_cancel_twice_reverts_wrong_phase(market: ChainClient, sponsor: str, task_id: int) -> None:
    market.cancel_task(sponsor, task_id)
    with pytest.raises(reverts.WrongPhase) as exc:
        market.cancel_task(sponsor, task_id)
    assert exc.value.values == {
        "taskId": task_id,
        "current": Phase.CANCELLED,
        "allowed": CANCELLABLE,
    }
    assert market.task(task_id).reclaimed == BOUNTY


# ---------------------------------------------------------------------- rounds


def test_submit_update_before_start_reverts_round_not_open(
    w3: Web3, market: ChainClient, accounts: list[str], sponsor: str, task_params: MakeParams
) -> None:
    start = now(w3) + 10 * HOUR
    task_id = create_task(market, sponsor, task_params(start=start))
    # An architecture may be proposed before the first round opens; an update may not.
    parent = architecture(market, accounts[2], task_id)
    with pytest.raises(reverts.RoundNotOpen) as exc:
        submit(market, accounts[3], task_id, parent, "early")
    closes = market.task(task_id).schedule.end
    assert exc.value.values == {"taskId": task_id, "opens": start, "closes": closes}


def test_submit_update_after_rounds_end_reverts_round_not_open(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    parent = architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    advance_to(task.rounds_end)
    with pytest.raises(reverts.RoundNotOpen) as exc:
        submit(market, accounts[3], task_id, parent, "late")
    assert exc.value.values == {"taskId": task_id, "opens": task.start, "closes": task.rounds_end}
    assert market.task(task_id).node_count == 1


def test_propose_architecture_after_rounds_end_reverts_round_not_open(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    task = market.task(task_id)
    advance_to(task.rounds_end)
    with pytest.raises(reverts.RoundNotOpen) as exc:
        architecture(market, accounts[2], task_id)
    assert exc.value.values == {"taskId": task_id, "opens": task.start, "closes": task.rounds_end}


def test_submit_update_to_cancelled_task_reverts_round_not_open(
    market: ChainClient, accounts: list[str], sponsor: str, task_id: int
) -> None:
    market.cancel_task(sponsor, task_id)
    task = market.task(task_id)
    with pytest.raises(reverts.RoundNotOpen) as exc:
        submit(market, accounts[3], task_id, 1, "cancelled")
    assert exc.value.values == {"taskId": task_id, "opens": task.start, "closes": task.rounds_end}


def test_propose_architecture_to_cancelled_task_reverts_round_not_open(
    market: ChainClient, accounts: list[str], sponsor: str, task_id: int
) -> None:
    market.cancel_task(sponsor, task_id)
    task = market.task(task_id)
    with pytest.raises(reverts.RoundNotOpen) as exc:
        architecture(market, accounts[2], task_id)
    assert exc.value.values == {"taskId": task_id, "opens": task.start, "closes": task.rounds_end}
    assert market.task(task_id).node_count == 0


def test_merge_before_its_round_closes_reverts_round_not_closed(
    market: ChainClient, accounts: list[str], evaluator: str, task_id: int
) -> None:
    architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    with pytest.raises(reverts.RoundNotClosed) as exc:
        merge(market, evaluator, task_id, 0, [1], digest("p"))
    assert exc.value.values == {"taskId": task_id, "round": 0, "closes": task.round_end(0)}


def test_merge_of_a_later_round_reverts_round_not_closed(
    market: ChainClient, accounts: list[str], evaluator: str, task_id: int, advance_to: AdvanceTo
) -> None:
    architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    advance_to(task.round_end(0))  # round 0 closed, round 1 open
    with pytest.raises(reverts.RoundNotClosed) as exc:
        merge(market, evaluator, task_id, 1, [1], digest("p"))
    assert exc.value.values == {"taskId": task_id, "round": 1, "closes": task.round_end(1)}


@pytest.mark.parametrize("round_index", [2, 254, 255])
def test_merge_of_round_beyond_the_last_reverts_round_not_closed(
    market: ChainClient,
    accounts: list[str],
    evaluator: str,
    task_id: int,
    advance_to: AdvanceTo,
    round_index: int,
) -> None:
    architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    # Every real round closed: the index itself is refused (255: no uint8 overflow either).
    advance_to(task.rounds_end)
    with pytest.raises(reverts.RoundNotClosed) as exc:
        merge(market, evaluator, task_id, round_index, [1], digest("p"))
    assert exc.value.values == {
        "taskId": task_id,
        "round": round_index,
        "closes": task.round_end(round_index),
    }
    assert market.task(task_id).node_count == 1


# ---------------------------------------------------------------------- the DAG


def test_submit_update_of_parent_zero_reverts_invalid_parent(
    market: ChainClient, accounts: list[str], task_id: int
) -> None:
    architecture(market, accounts[2], task_id)
    with pytest.raises(reverts.InvalidParent) as exc:
        submit(market, accounts[3], task_id, 0, "root-child")
    assert exc.value.values == {"taskId": task_id, "parent": 0}


def test_submit_update_of_missing_parent_reverts_invalid_parent(
    market: ChainClient, accounts: list[str], task_id: int
) -> None:
    architecture(market, accounts[2], task_id)
    with pytest.raises(reverts.InvalidParent) as exc:
        submit(market, accounts[3], task_id, 2, "orphan")
    assert exc.value.values == {"taskId": task_id, "parent": 2}
    assert market.task(task_id).node_count == 1


def test_get_node_of_missing_node_reverts_invalid_parent(
    market: ChainClient, accounts: list[str], task_id: int
) -> None:
    architecture(market, accounts[2], task_id)
    assert market.node(task_id, 1).kind == NodeKind.ARCHITECTURE
    for missing in (0, 2):
        with pytest.raises(reverts.InvalidParent) as exc:
            market.node(task_id, missing)
        assert exc.value.values == {"taskId": task_id, "parent": missing}


@pytest.mark.parametrize(
    ("parents", "bad"),
    [([2, 1], 1), ([1, 1], 1), ([1, 2, 1], 1), ([0, 1], 0), ([1, 3], 3)],
    ids=["decreasing", "duplicate", "unsorted-tail", "root", "missing"],
)
def test_merge_with_non_increasing_or_missing_parents_reverts_invalid_parent(
    market: ChainClient,
    accounts: list[str],
    evaluator: str,
    task_id: int,
    advance_to: AdvanceTo,
    parents: list[int],
    bad: int,
) -> None:
    architecture(market, accounts[2], task_id)
    submit(market, accounts[3], task_id, 1, "u")
    advance_to(market.task(task_id).round_end(0))
    with pytest.raises(reverts.InvalidParent) as exc:
        merge(market, evaluator, task_id, 0, parents, digest("p"))
    assert exc.value.values == {"taskId": task_id, "parent": bad}
    assert market.task(task_id).node_count == 2


@pytest.mark.parametrize("count", [0, 257])
def test_merge_with_no_or_too_many_parents_reverts_invalid_merge_parents(
    market: ChainClient,
    accounts: list[str],
    evaluator: str,
    task_id: int,
    advance_to: AdvanceTo,
    count: int,
) -> None:
    architecture(market, accounts[2], task_id)
    advance_to(market.task(task_id).round_end(0))
    with pytest.raises(reverts.InvalidMergeParents) as exc:
        merge(market, evaluator, task_id, 0, list(range(1, count + 1)), digest("p"))
    assert exc.value.values == {"taskId": task_id, "count": count}


def test_update_of_unconfirmed_merge_reverts_merge_not_confirmed(
    market: ChainClient,
    accounts: list[str],
    quorum_task: int,
    three_evaluators: tuple[str, str, str],
    quorum_merge: int,
) -> None:
    second = three_evaluators[1]
    with pytest.raises(reverts.MergeNotConfirmed) as exc:
        submit(market, accounts[3], quorum_task, quorum_merge, "on-unconfirmed")
    assert exc.value.values == {
        "taskId": quorum_task,
        "nodeId": quorum_merge,
        "confirmations": 1,
        "quorum": 2,
    }
    # Once a second evaluator confirms, the merge is a valid parent.
    market.confirm_merge(second, quorum_task, quorum_merge, digest("p"), [1])
    on_confirmed = submit(market, accounts[3], quorum_task, quorum_merge, "on-confirmed")
    assert on_confirmed == quorum_merge + 1


def test_confirm_merge_of_an_update_reverts_not_a_merge(
    market: ChainClient, accounts: list[str], evaluator: str, task_id: int
) -> None:
    architecture(market, accounts[2], task_id)
    update = submit(market, accounts[3], task_id, 1, "u")
    for node_id in (1, update, update + 1):  # architecture, update, missing node
        with pytest.raises(reverts.NotAMerge) as exc:
            market.confirm_merge(evaluator, task_id, node_id, bytes(32), [])
        assert exc.value.values == {"taskId": task_id, "nodeId": node_id}


def test_confirm_merge_with_other_digest_reverts_merge_digest_mismatch(
    market: ChainClient,
    quorum_task: int,
    three_evaluators: tuple[str, str, str],
    quorum_merge: int,
) -> None:
    second = three_evaluators[1]
    with pytest.raises(reverts.MergeDigestMismatch) as exc:
        market.confirm_merge(second, quorum_task, quorum_merge, digest("other"), [1])
    assert exc.value.values == {
        "taskId": quorum_task,
        "nodeId": quorum_merge,
        "posted": digest("p"),
        "confirmed": digest("other"),
    }
    assert market.node(quorum_task, quorum_merge).confirmations == 0b001


def test_confirm_merge_twice_reverts_already_confirmed(
    market: ChainClient,
    quorum_task: int,
    three_evaluators: tuple[str, str, str],
    quorum_merge: int,
) -> None:
    first, second, _ = three_evaluators
    # The poster's own confirmation is counted when it posts.
    with pytest.raises(reverts.AlreadyConfirmed) as exc:
        market.confirm_merge(first, quorum_task, quorum_merge, digest("p"), [1])
    assert exc.value.values == {"taskId": quorum_task, "nodeId": quorum_merge, "evaluator": first}
    market.confirm_merge(second, quorum_task, quorum_merge, digest("p"), [1])
    with pytest.raises(reverts.AlreadyConfirmed) as exc:
        market.confirm_merge(second, quorum_task, quorum_merge, digest("p"), [1])
    assert exc.value.values == {"taskId": quorum_task, "nodeId": quorum_merge, "evaluator": second}
    assert market.node(quorum_task, quorum_merge).confirmations == 0b011


def test_cancel_after_a_submission_reverts_has_submissions(
    market: ChainClient, accounts: list[str], sponsor: str, task_id: int
) -> None:
    architecture(market, accounts[2], task_id)
    with pytest.raises(reverts.HasSubmissions) as exc:
        market.cancel_task(sponsor, task_id)
    assert exc.value.values == {"taskId": task_id, "submissions": 1}
    assert not market.task(task_id).cancelled


def test_cancel_after_a_merge_reports_submissions_without_merges(
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
    advance_to: AdvanceTo,
) -> None:
    architecture(market, accounts[2], task_id)
    submit(market, accounts[3], task_id, 1, "u")
    advance_to(market.task(task_id).round_end(0))
    merge(market, evaluator, task_id, 0, [2], digest("p"))
    assert market.task(task_id).submission_count == 2
    with pytest.raises(reverts.HasSubmissions) as exc:
        market.cancel_task(sponsor, task_id)
    assert exc.value.values == {"taskId": task_id, "submissions": 2}


# ---------------------------------------------------------------------- reveal and payout roots


def test_reveal_of_another_file_reverts_commitment_mismatch(
    market: ChainClient, sponsor: str, task_id: int, advance_to: AdvanceTo
) -> None:
    advance_to(market.task(task_id).rounds_end)
    wrong = sha256(b"another file")
    with pytest.raises(reverts.CommitmentMismatch) as exc:
        market.reveal_validation(sponsor, task_id, wrong, SALT, "cid")
    assert exc.value.values == {
        "taskId": task_id,
        "commitment": commitment(),
        "computed": keccak(wrong + SALT),
    }
    assert market.phase(task_id) == Phase.REVEAL


def test_reveal_with_another_salt_reverts_commitment_mismatch(
    market: ChainClient, sponsor: str, task_id: int, advance_to: AdvanceTo
) -> None:
    advance_to(market.task(task_id).rounds_end)
    salt = bytes(32)
    with pytest.raises(reverts.CommitmentMismatch) as exc:
        market.reveal_validation(sponsor, task_id, sha256(VALIDATION_FILE), salt, "cid")
    assert exc.value.values == {
        "taskId": task_id,
        "commitment": commitment(),
        "computed": keccak(sha256(VALIDATION_FILE) + salt),
    }


def test_second_root_from_same_evaluator_reverts_already_posted(
    w3: Web3, market: ChainClient, sponsor: str, evaluator: str, task_id: int
) -> None:
    reveal(w3, market, task_id, sponsor)
    market.post_payout_root(evaluator, task_id, digest("root"), ETHER)
    with pytest.raises(reverts.AlreadyPosted) as exc:
        market.post_payout_root(evaluator, task_id, digest("other root"), 2 * ETHER)
    assert exc.value.values == {"taskId": task_id, "evaluator": evaluator}
    task = market.task(task_id)
    assert (task.payout_root, task.payout_total) == (digest("root"), ETHER)


def test_same_root_twice_before_quorum_reverts_already_posted(
    w3: Web3,
    market: ChainClient,
    sponsor: str,
    quorum_task: int,
    three_evaluators: tuple[str, str, str],
) -> None:
    first = three_evaluators[0]
    reveal(w3, market, quorum_task, sponsor)
    market.post_payout_root(first, quorum_task, digest("root"), ETHER)
    with pytest.raises(reverts.AlreadyPosted) as exc:
        market.post_payout_root(first, quorum_task, digest("root"), ETHER)
    assert exc.value.values == {"taskId": quorum_task, "evaluator": first}
    assert market.phase(quorum_task) == Phase.EVALUATION  # one vote is not a quorum of two


def test_payout_total_above_escrow_reverts_total_exceeds_escrow(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
) -> None:
    architecture(market, accounts[2], task_id)
    submit(market, accounts[3], task_id, 1, "u")
    reveal(w3, market, task_id, sponsor)
    escrow = BOUNTY + 2 * DEPOSIT
    assert market.task(task_id).escrow == escrow
    with pytest.raises(reverts.TotalExceedsEscrow) as exc:
        market.post_payout_root(evaluator, task_id, digest("root"), escrow + 1)
    assert exc.value.values == {"taskId": task_id, "total": escrow + 1, "escrow": escrow}
    market.post_payout_root(evaluator, task_id, digest("root"), escrow)  # the whole escrow is fine
    assert market.task(task_id).payout_total == escrow


def test_finalize_within_challenge_window_reverts_challenge_window_open(
    w3: Web3, market: ChainClient, sponsor: str, evaluator: str, task_id: int, advance_to: AdvanceTo
) -> None:
    reveal(w3, market, task_id, sponsor)
    market.post_payout_root(evaluator, task_id, digest("root"), ETHER)
    ends_at = market.task(task_id).challenge_end
    advance_to(ends_at - 2)  # the finalize transaction runs at ends_at - 1
    with pytest.raises(reverts.ChallengeWindowOpen) as exc:
        market.finalize(sponsor, task_id)
    assert exc.value.values == {"taskId": task_id, "endsAt": ends_at}
    assert market.phase(task_id) == Phase.CHALLENGE


# ---------------------------------------------------------------------- claims


@pytest.fixture
def leaves(accounts: list[str]) -> list[PayoutLeaf]:
    return [
        PayoutLeaf(0, accounts[2], 2 * ETHER, 20),
        PayoutLeaf(1, accounts[3], 3 * ETHER, 30),
        PayoutLeaf(2, accounts[4], 1 * ETHER, 10),
    ]


@pytest.fixture
def claims_task(
    w3: Web3,
    market: ChainClient,
    sponsor: str,
    evaluator: str,
    task_id: int,
    leaves: list[PayoutLeaf],
) -> int:
    """The default task, finalized on the root of `leaves` (6 ETH): claims are open."""
    settle(w3, market, task_id, sponsor, evaluator, payout_tree(leaves).root, 6 * ETHER)
    return task_id


def test_second_claim_of_a_leaf_reverts_already_claimed(
    market: ChainClient, accounts: list[str], claims_task: int, leaves: list[PayoutLeaf]
) -> None:
    proof = payout_tree(leaves).proof(1)
    market.claim(accounts[8], claims_task, leaves[1], proof)
    with pytest.raises(reverts.AlreadyClaimed) as exc:
        market.claim(accounts[8], claims_task, leaves[1], proof)
    assert exc.value.values == {"taskId": claims_task, "index": 1}
    assert market.task(claims_task).claimed == 3 * ETHER


def test_claim_with_forged_leaf_or_proof_reverts_invalid_proof(
    market: ChainClient, accounts: list[str], claims_task: int, leaves: list[PayoutLeaf]
) -> None:
    tree = payout_tree(leaves)
    genuine = leaves[0]
    # (what is forged, the leaf claimed, the proof sent)
    forgeries = [
        ("proof of another leaf", genuine, tree.proof(1)),
        ("no proof", genuine, []),
        ("wrong account", replace(genuine, account=accounts[8]), tree.proof(0)),
        ("wrong amount", replace(genuine, amount=genuine.amount + 1), tree.proof(0)),
        ("wrong points", replace(genuine, points=genuine.points + 1), tree.proof(0)),
        ("wrong index", replace(genuine, index=3), tree.proof(0)),
    ]
    for forged, leaf, proof in forgeries:
        with pytest.raises(reverts.InvalidProof) as exc:
            market.claim(accounts[8], claims_task, leaf, proof)
        assert exc.value.values == {"taskId": claims_task, "index": leaf.index}, forged
    assert market.task(claims_task).claimed == 0
    assert not market.is_claimed(claims_task, 0) and not market.is_claimed(claims_task, 3)
    market.claim(accounts[8], claims_task, genuine, tree.proof(0))  # the genuine leaf still pays
    assert market.task(claims_task).claimed == 2 * ETHER


def test_claim_with_leaf_of_another_tasks_tree_reverts_invalid_proof(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: MakeParams,
    leaves: list[PayoutLeaf],
) -> None:
    first = create_task(market, sponsor, task_params())
    second = create_task(market, sponsor, task_params())
    other_leaves = [PayoutLeaf(0, accounts[5], 4 * ETHER, 40), PayoutLeaf(1, accounts[6], ETHER, 0)]
    settle(w3, market, first, sponsor, evaluator, payout_tree(leaves).root, 6 * ETHER)
    settle(w3, market, second, sponsor, evaluator, payout_tree(other_leaves).root, 5 * ETHER)
    with pytest.raises(reverts.InvalidProof) as exc:
        market.claim(accounts[5], first, other_leaves[0], payout_tree(other_leaves).proof(0))
    assert exc.value.values == {"taskId": first, "index": 0}
    market.claim(accounts[5], second, other_leaves[0], payout_tree(other_leaves).proof(0))
    assert market.task(first).claimed == 0 and market.task(second).claimed == 4 * ETHER


def test_claims_beyond_the_posted_total_revert_claim_exceeds_total(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
    leaves: list[PayoutLeaf],
) -> None:
    # The leaves sum to 6 ETH but the root was posted with a total of 4 ETH.
    settle(w3, market, task_id, sponsor, evaluator, payout_tree(leaves).root, 4 * ETHER)
    tree = payout_tree(leaves)
    market.claim(accounts[8], task_id, leaves[0], tree.proof(0))  # 2 of 4 ETH
    with pytest.raises(reverts.ClaimExceedsTotal) as exc:
        market.claim(accounts[8], task_id, leaves[1], tree.proof(1))  # 3 > 2 ETH left
    assert exc.value.values == {"taskId": task_id, "amount": 3 * ETHER, "remaining": 2 * ETHER}
    market.claim(accounts[8], task_id, leaves[2], tree.proof(2))  # 1 ETH still fits
    with pytest.raises(reverts.ClaimExceedsTotal) as exc:
        market.claim(accounts[8], task_id, leaves[1], tree.proof(1))
    assert exc.value.values == {"taskId": task_id, "amount": 3 * ETHER, "remaining": ETHER}
    assert not market.is_claimed(task_id, 1)
    assert market.task(task_id).claimed == 3 * ETHER


def test_claim_to_account_refusing_eth_reverts_payment_failed(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
    deploy: Deploy,
) -> None:
    receiver = deploy("RejectingReceiver", market.address)
    leaves = [PayoutLeaf(0, receiver.address, 2 * ETHER, 20), PayoutLeaf(1, accounts[3], ETHER, 0)]
    settle(w3, market, task_id, sponsor, evaluator, payout_tree(leaves).root, 3 * ETHER)
    with pytest.raises(reverts.PaymentFailed) as exc:
        market.claim(accounts[8], task_id, leaves[0], payout_tree(leaves).proof(0))
    assert exc.value.values == {"to": receiver.address, "amount": 2 * ETHER}
    assert not market.is_claimed(task_id, 0)
    assert market.task(task_id).claimed == 0
    assert market.reputation(receiver.address) == 0
    assert market.balance(market.address) == BOUNTY


def test_refund_to_author_refusing_eth_reverts_payment_failed(
    market: ChainClient, sponsor: str, task_id: int, deploy: Deploy, advance_to: AdvanceTo
) -> None:
    receiver = deploy("RejectingReceiver", market.address)
    architecture(market, sponsor, task_id)
    receiver.functions.submitUpdate(task_id, 1, digest("u")).transact(
        {"from": sponsor, "value": DEPOSIT}
    )
    assert market.node(task_id, 2).author == receiver.address
    advance_to(market.task(task_id).reveal_deadline)  # never revealed: Unrevealed
    with pytest.raises(reverts.PaymentFailed) as exc:
        market.refund(sponsor, task_id, 2)
    assert exc.value.values == {"to": receiver.address, "amount": DEPOSIT + BOUNTY // 2}
    assert not market.is_refunded(task_id, 2)


# ---------------------------------------------------------------------- refunds and reclaim


def test_second_refund_of_a_node_reverts_already_refunded(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    task_id: int,
    advance_to: AdvanceTo,
) -> None:
    node_id = architecture(market, accounts[2], task_id)
    reveal(w3, market, task_id, sponsor)
    advance_to(market.task(task_id).evaluation_deadline)  # no root: Unsettled
    market.refund(accounts[8], task_id, node_id)
    with pytest.raises(reverts.AlreadyRefunded) as exc:
        market.refund(accounts[8], task_id, node_id)
    assert exc.value.values == {"taskId": task_id, "nodeId": node_id}
    assert market.is_refunded(task_id, node_id)


def test_refund_of_a_merge_when_unrevealed_reverts_not_refundable(
    market: ChainClient, accounts: list[str], evaluator: str, task_id: int, advance_to: AdvanceTo
) -> None:
    architecture(market, accounts[2], task_id)
    submit(market, accounts[3], task_id, 1, "u")
    advance_to(market.task(task_id).round_end(0))
    merge_id = merge(market, evaluator, task_id, 0, [1, 2], digest("p"))
    advance_to(market.task(task_id).reveal_deadline)
    assert market.phase(task_id) == Phase.UNREVEALED
    with pytest.raises(reverts.NotRefundable) as exc:
        market.refund(evaluator, task_id, merge_id)
    assert exc.value.values == {"taskId": task_id, "nodeId": merge_id}
    for missing in (0, merge_id + 1):  # the root and a node that does not exist
        with pytest.raises(reverts.NotRefundable) as exc:
            market.refund(evaluator, task_id, missing)
        assert exc.value.values == {"taskId": task_id, "nodeId": missing}
    assert not market.is_refunded(task_id, merge_id)


def test_reclaim_when_root_allocates_the_whole_escrow_reverts_nothing_to_reclaim(
    w3: Web3,
    market: ChainClient,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_id: int,
) -> None:
    leaf = PayoutLeaf(0, accounts[2], BOUNTY, 1)
    settle(w3, market, task_id, sponsor, evaluator, payout_tree([leaf]).root, BOUNTY)
    with pytest.raises(reverts.NothingToReclaim) as exc:
        market.reclaim(sponsor, task_id)
    assert exc.value.values == {"taskId": task_id}


def test_second_reclaim_when_unsettled_reverts_nothing_to_reclaim(
    w3: Web3, market: ChainClient, sponsor: str, task_id: int, advance_to: AdvanceTo
) -> None:
    reveal(w3, market, task_id, sponsor)
    advance_to(market.task(task_id).evaluation_deadline)
    market.reclaim(sponsor, task_id)
    assert market.task(task_id).reclaimed == BOUNTY
    with pytest.raises(reverts.NothingToReclaim) as exc:
        market.reclaim(sponsor, task_id)
    assert exc.value.values == {"taskId": task_id}


# ---------------------------------------------------------------------- joining a round


def test_join_round_records_the_round_base_and_mask_key(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    parent = architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    advance_to(task.schedule.opens(1) + 10)  # round 1, first half
    result = market.join_round(accounts[3], task_id, parent, b"\x07" * 32)
    event = result.event(RoundJoined)
    assert event.arguments() == {
        "task_id": task_id,
        "round": 1,
        "account": accounts[3],
        "base": parent,
        "mask_key": b"\x07" * 32,
    }
    assert [e.account for e in market.round_joins(task_id, 1)] == [accounts[3]]
    assert market.round_joins(task_id, 0) == []
    assert market.task(task_id).node_count == 1  # joining adds no node and stores nothing


def test_join_round_in_the_second_half_reverts_join_window_closed(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    parent = architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    advance_to(task.schedule.midpoint(0))  # the masked set is fixed
    with pytest.raises(reverts.JoinWindowClosed) as exc:
        market.join_round(accounts[3], task_id, parent, b"\x07" * 32)
    assert exc.value.values == {
        "taskId": task_id,
        "opens": task.start,
        "closes": task.schedule.midpoint(0),
    }
    assert market.round_joins(task_id, 0) == []


def test_join_round_on_a_missing_base_reverts_invalid_parent(
    market: ChainClient, accounts: list[str], task_id: int
) -> None:
    architecture(market, accounts[2], task_id)
    for base in (0, 2):
        with pytest.raises(reverts.InvalidParent) as exc:
            market.join_round(accounts[3], task_id, base, b"\x07" * 32)
        assert exc.value.values == {"taskId": task_id, "parent": base}


def test_join_round_after_the_rounds_reverts_round_not_open(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    parent = architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    advance_to(task.rounds_end)
    with pytest.raises(reverts.RoundNotOpen) as exc:
        market.join_round(accounts[3], task_id, parent, b"\x07" * 32)
    assert exc.value.values == {"taskId": task_id, "opens": task.start, "closes": task.rounds_end}


def test_reveal_mask_seeds_after_the_round_records_them(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    parent = architecture(market, accounts[2], task_id)
    task = market.task(task_id)
    with pytest.raises(reverts.RoundNotClosed) as exc:
        market.reveal_mask_seeds(accounts[3], task_id, 0, parent, [b"\x05" * 32])
    assert exc.value.values == {"taskId": task_id, "round": 0, "closes": task.round_end(0)}
    with pytest.raises(reverts.RoundNotClosed) as exc:  # a round past the last never closes
        market.reveal_mask_seeds(accounts[3], task_id, task.rounds, parent, [b"\x05" * 32])
    assert exc.value.values["closes"] == 2**64 - 1
    advance_to(task.round_end(0))
    result = market.reveal_mask_seeds(accounts[3], task_id, 0, parent, [b"\x05" * 32, b"\x06" * 32])
    assert result.event(MaskSeedsRevealed).arguments() == {
        "task_id": task_id,
        "round": 0,
        "account": accounts[3],
        "base": parent,
        "seeds": (b"\x05" * 32, b"\x06" * 32),
    }
    assert len(market.seed_reveals(task_id, 0)) == 1 and market.seed_reveals(task_id, 1) == []


def test_reveal_mask_seeds_without_seeds_reverts_invalid_seed_count(
    market: ChainClient, accounts: list[str], task_id: int, advance_to: AdvanceTo
) -> None:
    parent = architecture(market, accounts[2], task_id)
    advance_to(market.task(task_id).round_end(0))
    for seeds in ([], [b"\x01" * 32] * 257):
        with pytest.raises(reverts.InvalidSeedCount) as exc:
            market.reveal_mask_seeds(accounts[3], task_id, 0, parent, seeds)
        assert exc.value.values == {"taskId": task_id, "count": len(seeds)}
