"""Small helpers the tests share (fixtures live in conftest.py).

The flow helpers are plain functions of a `Web3` and a `ChainClient` (not fixtures), so that
hypothesis tests can run them on a chain they build per example with `new_market()`.
"""

from __future__ import annotations

from typing import Any

from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.types import TxParams

from marketplace import errors
from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.chain.events import TxResult
from marketplace.dev.devchain import advance_to, local_web3
from marketplace.rules.messages import Phase, TaskParams
from marketplace.wire.crypto import sha256, validation_commitment

ETHER = 10**18
VALIDATION_FILE = b"label,x0,x1\n1,0.5,0.25\n0,0.125,1.0\n"
SALT = bytes(range(32))
# The phases `cancelTask` is allowed in (the `allowed` of its `WrongPhase`, until a reclaim).
CANCELLABLE = errors.phase_mask(
    Phase.ROUNDS, Phase.REVEAL, Phase.EVALUATION, Phase.UNREVEALED, Phase.UNSETTLED
)


def commitment(file: bytes = VALIDATION_FILE, salt: bytes = SALT) -> bytes:
    """The validation commitment of `file` under `salt`."""
    return validation_commitment(sha256(file), salt)


def digest(label: str) -> bytes:
    """A distinct 32-byte digest per label, for blobs the tests do not need to hold."""
    return sha256(label.encode())


def selector(signature: str) -> bytes:
    """The 4-byte selector of an error or function `signature`, e.g. "Foo(uint256)"."""
    return keccak(text=signature)[:4]


def spent(w3: Web3, tx_hash: str) -> int:
    """Wei the sender paid in gas for `tx_hash`."""
    receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


# ---------------------------------------------------------------- a market and its tasks


def new_market() -> tuple[Web3, ChainClient, list[str]]:
    """A fresh chain, a marketplace deployed on it by accounts[9], and the ten dev accounts."""
    w3 = local_web3()
    accounts: list[str] = list(w3.eth.accounts)
    return w3, ChainClient.deploy(w3, accounts[9], min_window=DEV_MIN_WINDOW), accounts


def eth_task(evaluator: str, **overrides: Any) -> TaskParams:
    """A 2-round ETH task with one evaluator (the `task_params` fixture's defaults)."""
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


def create_task(market: ChainClient, sponsor: str, params: TaskParams) -> int:
    """Create a task and return its id."""
    task_id = market.create_task(sponsor, params).value
    assert task_id is not None
    return task_id


def architecture(market: ChainClient, author: str, task_id: int, label: str = "arch") -> int:
    """Propose an architecture and return its node id."""
    node_id = market.propose_architecture(author, task_id, digest(label), f"bafkrei{label}").value
    assert node_id is not None
    return node_id


def submit(market: ChainClient, author: str, task_id: int, parent: int, label: str) -> int:
    """Submit a 100-sample update of `parent` and return its node id."""
    result = market.submit_update(author, task_id, parent, 100, digest(label), f"bafkrei{label}")
    node_id = result.value
    assert node_id is not None
    return node_id


# ---------------------------------------------------------------- ERC-20 bounties and deposits


def mint(w3: Web3, token: Contract, to: str, amount: int) -> None:
    """Mint from accounts[9] (the deployer), who is no party to any task here."""
    tx: TxParams = {"from": list(w3.eth.accounts)[9], "gas": 100_000}
    token.functions.mint(to, amount).transact(tx)


def fund(w3: Web3, market: ChainClient, token: Contract, account: str, amount: int) -> None:
    """Mint `amount` of `token` to `account` and let the market pull all of it."""
    mint(w3, token, account, amount)
    market.approve_token(account, token.address, amount)


def funded_task(
    w3: Web3, market: ChainClient, token: Contract, sponsor: str, params: TaskParams
) -> int:
    """Fund `sponsor` with exactly the bounty in `token`, create the task, return its id."""
    fund(w3, market, token, sponsor, params.bounty)
    return create_task(market, sponsor, params)


# ---------------------------------------------------------------- reveal and settlement


def send_reveal(market: ChainClient, task_id: int, sponsor: str) -> TxResult:
    """Reveal the validation set committed by `commitment()`, at the chain's current time."""
    return market.reveal_validation(sponsor, task_id, sha256(VALIDATION_FILE), SALT, "bafkreival")


def reveal(w3: Web3, market: ChainClient, task_id: int, sponsor: str) -> TxResult:
    """Wait out the rounds and reveal the validation set committed by `commitment()`."""
    advance_to(w3, market.task(task_id).rounds_end)
    return send_reveal(market, task_id, sponsor)


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
    assert market.phase(task_id) == Phase.CLAIMS


MLP_SPEC: dict[str, Any] = {
    "input_shape": [64],
    "layers": [
        {"type": "linear", "in_features": 64, "out_features": 32},
        {"type": "relu"},
        {"type": "linear", "in_features": 32, "out_features": 10},
    ],
}
"""A 64-32-10 MLP spec for scikit-learn's digits (2,410 parameters)."""


def readable_error(result: Any) -> str:
    """The error of a refused CliRunner run: exit code 1, no exception escaped, no traceback,
    output starting with "error:"; its lines joined, however rich wrapped them."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.output
    return " ".join(lines)
