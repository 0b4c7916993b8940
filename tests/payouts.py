"""Carrying a task from its rounds to the Claims phase, shared by the payout tests.

Plain functions of a `Web3` (not fixtures), so that hypothesis tests can run them on a chain they
build per example with `local_web3()`.
"""

from __future__ import annotations

from typing import Any

from web3 import Web3

from marketplace.chain import ChainClient
from marketplace.crypto import sha256
from marketplace.devchain import advance_to, local_web3
from marketplace.messages import TaskParams
from tests.helpers import ETHER, SALT, VALIDATION_FILE, commitment


def new_market() -> tuple[Web3, ChainClient, list[str]]:
    """A fresh chain, a marketplace deployed on it by accounts[9], and the ten dev accounts."""
    w3 = local_web3()
    accounts: list[str] = list(w3.eth.accounts)
    return w3, ChainClient.deploy(w3, accounts[9]), accounts


def eth_task(evaluator: str, **overrides: Any) -> TaskParams:
    """The conftest `task_params` defaults (a 2-round ETH task, one evaluator), as a function."""
    fields: dict[str, Any] = {
        "bounty": 10 * ETHER,
        "deposit": ETHER // 100,
        "validation_commit": commitment(),
        "spec_digest": sha256(b'{"metric": "accuracy"}'),
        "spec_cid": "bafkreispec",
        "round_duration": 3600,
        "rounds": 2,
        "reveal_window": 3600,
        "evaluation_window": 3600,
        "challenge_window": 600,
        "claim_window": 7 * 24 * 3600,
        "evaluators": (evaluator,),
        "quorum": 1,
    }
    fields.update(overrides)
    return TaskParams(**fields)


def reveal(w3: Web3, market: ChainClient, task_id: int, sponsor: str) -> None:
    """Wait out the rounds and reveal the validation set committed by `commitment()`."""
    advance_to(w3, market.task(task_id).rounds_end)
    market.reveal_validation(sponsor, task_id, sha256(VALIDATION_FILE), SALT, "bafkreival")


def post_and_finalize(
    w3: Web3, market: ChainClient, task_id: int, evaluator: str, root: bytes, total: int
) -> None:
    """Post `root` as the 1-of-1 evaluator, wait out the challenge window and finalize."""
    market.post_payout_root(evaluator, task_id, root, total)
    advance_to(w3, market.task(task_id).challenge_end)
    market.finalize(evaluator, task_id)


def settle(
    w3: Web3,
    market: ChainClient,
    task_id: int,
    sponsor: str,
    evaluator: str,
    root: bytes,
    total: int,
) -> None:
    """Reveal, post `root` with `total`, finalize: the task is then in its Claims phase."""
    reveal(w3, market, task_id, sponsor)
    post_and_finalize(w3, market, task_id, evaluator, root, total)
