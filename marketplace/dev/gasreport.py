"""Exact gas of every marketplace operation, measured on a fresh chain: the in-process
eth-tester (py-evm), or anvil over JSON-RPC, with the same scenario and the same accounts.

`make gas` prints `measure()` as JSON; a test holds every figure to its target, anvil's to
eth-tester's exactly, and the README's gas table to the figures of both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from eth_tester.backends.pyevm.main import get_default_account_keys
from web3 import Web3
from web3.types import RPCEndpoint

from marketplace.chain.artifacts import load_artifact
from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.chain.events import TxResult
from marketplace.dev.devchain import local_web3
from marketplace.dev.devnet import advance_chain_to, start_anvil, terminate, wait_until_answering
from marketplace.rules.messages import TaskParams
from marketplace.runtime.devnet_info import Engine
from marketplace.wire.crypto import PayoutLeaf, payout_tree, sha256, validation_commitment

ETHER = 10**18
SALT = b"\x5a" * 32
VALIDATION = b"label,x\n1,0.5\n"
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # a CIDv1 of the usual length

# Targets from the issue; None: measured and reported, no target set.
TARGETS: dict[str, int | None] = {
    "createTask (ETH, 1 evaluator)": 200_000,
    "createTask (ERC-20, 1 evaluator)": None,
    "createTask (ETH, 3 evaluators)": None,
    "proposeArchitecture": 80_000,
    "submitUpdate (first, registers a key)": 80_000,
    "submitUpdate": 80_000,
    "submitUpdate (on a merge)": 80_000,
    "submitUpdate (ERC-20 deposit)": None,
    "joinRound (secure aggregation)": 40_000,  # 35,000 before the join deposit (issue 14)
    "revealMaskSeeds (1 seed)": 35_000,
    "postMerge (2 parents)": 120_000,
    "postMerge (10 parents)": 120_000,
    "confirmMerge (reaches the quorum, keeps 1 update)": None,
    "revealValidation": 60_000,
    "postPayoutRoot (10 nodes)": 100_000,
    "postPayoutRoot (1,000 nodes)": 100_000,
    "postPayoutRoot (2-of-3, first vote)": 100_000,
    "postPayoutRoot (2-of-3, quorum vote)": 100_000,
    "finalize": None,
    "claim (first-time claimant)": 100_000,
    "claim (returning claimant, warm bitmap word)": 75_000,
    "claim (1,000-leaf tree: 10-hash proof, new bitmap word)": 100_000,
    "refund (sponsor never revealed)": None,
    "cancelTask": None,
    "reclaim": None,
}


ENGINES: tuple[Engine, ...] = ("tester", "anvil")
COLUMNS: dict[Engine, str] = {"tester": "eth-tester", "anvil": "anvil"}  # the README's headers
DEV_BALANCE = 1_000_000 * 10**18  # what eth-tester gives each of its dev accounts


class _Scenario:
    """One chain, one market, and a recorder of gas per named operation."""

    def __init__(self, w3: Web3, accounts: list[str]) -> None:
        self.w3 = w3
        self.accounts = accounts
        self.sponsor, self.evaluator = self.accounts[0], self.accounts[1]
        self.market = ChainClient.deploy(self.w3, self.accounts[9], min_window=DEV_MIN_WINDOW)
        self.gas: dict[str, int] = {}

    def record(self, name: str, result: TxResult) -> TxResult:
        self.gas[name] = result.gas_used
        return result

    def params(self, **overrides: Any) -> TaskParams:
        values: dict[str, Any] = {
            "bounty": 10 * ETHER,
            "deposit": ETHER // 100,
            "validation_commit": validation_commitment(sha256(VALIDATION), SALT),
            "spec_digest": sha256(b"{}"),
            "spec_cid": CID,
            "round_duration": 3600,
            "rounds": 2,
            "reveal_window": 3600,
            "evaluation_window": 3600,
            "challenge_window": 600,
            "claim_window": 86_400,
            "evaluators": (self.evaluator,),
        }
        values.update(overrides)
        return TaskParams(**values)

    def settle(self, task_id: int, leaves: list[PayoutLeaf]) -> Any:
        """Reveal, post the root of `leaves`, wait out the challenge window, finalize."""
        task = self.market.task(task_id)
        advance_chain_to(self.w3, task.rounds_end)
        self.record(
            "revealValidation",
            self.market.reveal_validation(self.sponsor, task_id, sha256(VALIDATION), SALT, CID),
        )
        tree = payout_tree(leaves)
        total = sum(leaf.amount for leaf in leaves)
        posted = self.market.post_payout_root(self.evaluator, task_id, tree.root, total, CID)
        advance_chain_to(self.w3, self.market.task(task_id).challenge_end)
        self.record("finalize", self.market.finalize(self.sponsor, task_id))
        return tree, posted


def measure(
    progress: Callable[[str], None] = lambda _: None,
    w3: Web3 | None = None,
    accounts: list[str] | None = None,
) -> dict[str, int]:
    """Run every operation once in a realistic state and return {operation: gas used}.

    On `w3` (default: a fresh in-process eth-tester chain), any JSON-RPC node whose clock moves
    with `evm_setNextBlockTimestamp` + `evm_mine`, from `accounts` (default: the node's own):
    ten funded accounts the node sends from (`eth_sendTransaction`). The marketplace is
    deployed from the tenth. The gas of a transaction depends on its calldata bytes (zero or
    not) and on the order of the hashes in each Merkle proof, so figures from two chains are
    comparable only from the same accounts: `measure_on` uses eth-tester's on every engine.
    """
    w3 = w3 or local_web3()
    s = _Scenario(w3, accounts or list(w3.eth.accounts))
    for name, step in (  # in this order: each step's gas depends on the state the last left
        ("small task", _small_task),
        ("returning claimant", _returning_claimant),
        ("1,000-node task", _large_task),
        ("ERC-20 and quorum", _token_and_quorum),
        ("fallbacks", _fallbacks),
    ):
        progress(name)
        step(s)
    return {name: s.gas[name] for name in TARGETS}


def _small_task(s: _Scenario) -> None:
    """A small task: 1 architecture, 10 updates, merges of 2 and 10 of them, 1 update on a
    merge, settled, one claim and the reclaim."""
    m, sponsor, evaluator = s.market, s.sponsor, s.evaluator
    task = s.record("createTask (ETH, 1 evaluator)", m.create_task(sponsor, s.params())).value
    assert task is not None
    s.record("proposeArchitecture", m.propose_architecture(s.accounts[2], task, sha256(b"a"), CID))
    s.record("joinRound (secure aggregation)", m.join_round(s.accounts[4], task, 1, b"\x02" * 32))
    s.record(
        "submitUpdate (first, registers a key)",
        m.submit_update(s.accounts[3], task, 1, 500, sha256(b"u1"), CID, b"\x01" * 32),
    )
    s.record("submitUpdate", m.submit_update(s.accounts[4], task, 1, 500, sha256(b"u2"), CID))
    for i in range(8):  # nodes 4..11
        m.submit_update(s.accounts[3 + i % 6], task, 1, 500, sha256(bytes([i])), CID)
    advance_chain_to(s.w3, m.task(task).round_end(0))
    s.record(
        "revealMaskSeeds (1 seed)",
        m.reveal_mask_seeds(s.accounts[3], task, 0, 1, [b"\x03" * 32]),
    )
    s.record(
        "postMerge (2 parents)",
        m.post_merge(evaluator, task, 0, [2, 3], 1000, sha256(b"m"), sha256(b"p"), CID),
    )
    merge10 = m.post_merge(
        evaluator, task, 0, list(range(2, 12)), 5000, sha256(b"M"), sha256(b"P"), CID
    )
    s.record("postMerge (10 parents)", merge10)
    s.record(
        "submitUpdate (on a merge)",
        m.submit_update(s.accounts[3], task, 13, 500, sha256(b"u9"), CID),
    )
    leaves = [PayoutLeaf(i, s.accounts[2 + i], ETHER, 10) for i in range(7)]
    tree, posted = s.settle(task, leaves)
    assert m.task(task).node_count >= 10
    s.record("postPayoutRoot (10 nodes)", posted)
    s.record("claim (first-time claimant)", m.claim(s.accounts[2], task, leaves[0], tree.proof(0)))
    s.record("reclaim", m.reclaim(sponsor, task))


def _returning_claimant(s: _Scenario) -> None:
    """A returning claimant: reputation already non-zero, bitmap word already written."""
    m = s.market
    task2 = m.create_task(s.sponsor, s.params()).value
    assert task2 is not None
    m.propose_architecture(s.accounts[2], task2, sha256(b"a"), CID)
    m.submit_update(s.accounts[3], task2, 1, 500, sha256(b"x"), CID)
    leaves2 = [PayoutLeaf(0, s.accounts[3], ETHER, 5), PayoutLeaf(1, s.accounts[2], ETHER, 5)]
    tree2, _ = s.settle(task2, leaves2)
    m.claim(s.accounts[3], task2, leaves2[0], tree2.proof(0))
    s.record(
        "claim (returning claimant, warm bitmap word)",
        m.claim(s.accounts[2], task2, leaves2[1], tree2.proof(1)),
    )


def _large_task(s: _Scenario) -> None:
    """A large task: 1,000 nodes, a 1,000-leaf payout tree."""
    m = s.market
    task3 = m.create_task(s.sponsor, s.params(deposit=0)).value
    assert task3 is not None
    m.propose_architecture(s.accounts[2], task3, sha256(b"a"), CID)
    last_sent = {}  # sender -> its last filler: mined, so are its earlier ones (nonce order)
    for i in range(999):  # fillers, not measured: sent straight, without the client's simulation
        sender = s.accounts[i % 8 + 2]
        last_sent[sender] = m.contract.functions.submitUpdate(
            task3, 1, 1, 0, sha256(i.to_bytes(4, "big")), bytes(32), CID
        ).transact({"from": sender, "gas": 200_000})
    for tx_hash in last_sent.values():  # a node may answer before it mines (anvil does)
        s.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert m.task(task3).node_count == 1000
    leaves3 = [PayoutLeaf(i, s.accounts[i % 8 + 2], 1000, 1) for i in range(1000)]
    tree3, posted3 = s.settle(task3, leaves3)
    s.record("postPayoutRoot (1,000 nodes)", posted3)
    s.record(
        "claim (1,000-leaf tree: 10-hash proof, new bitmap word)",
        m.claim(s.accounts[2], task3, leaves3[0], tree3.proof(0)),
    )


def _token_and_quorum(s: _Scenario) -> None:
    """An ERC-20 bounty and deposit; then three evaluators with a 2-of-3 quorum."""
    _token_task(s)
    _quorum_task(s)


def _token_task(s: _Scenario) -> None:
    m, sponsor = s.market, s.sponsor
    token = _deploy_token(s)
    for holder, amount in ((sponsor, 100 * ETHER), (s.accounts[3], ETHER)):
        s.w3.eth.wait_for_transaction_receipt(
            token.functions.mint(holder, amount).transact({"from": sponsor})
        )
    m.approve_token(sponsor, token.address, 100 * ETHER)
    m.approve_token(s.accounts[3], token.address, ETHER)
    task4 = s.record(
        "createTask (ERC-20, 1 evaluator)", m.create_task(sponsor, s.params(token=token.address))
    ).value
    assert task4 is not None
    m.propose_architecture(s.accounts[3], task4, sha256(b"a"), CID)
    s.record(
        "submitUpdate (ERC-20 deposit)",
        m.submit_update(s.accounts[3], task4, 1, 1, sha256(b"e"), CID),
    )


def _quorum_task(s: _Scenario) -> None:
    m, sponsor = s.market, s.sponsor
    trio = (s.accounts[1], s.accounts[6], s.accounts[7])
    task5 = s.record(
        "createTask (ETH, 3 evaluators)",
        m.create_task(sponsor, s.params(evaluators=trio, quorum=2)),
    ).value
    assert task5 is not None
    m.propose_architecture(s.accounts[2], task5, sha256(b"a"), CID)
    m.submit_update(s.accounts[3], task5, 1, 1, sha256(b"q"), CID)
    advance_chain_to(s.w3, m.task(task5).round_end(0))
    m.post_merge(trio[0], task5, 0, [2], 1, sha256(b"m"), sha256(b"p"), CID)
    s.record(
        "confirmMerge (reaches the quorum, keeps 1 update)",
        m.confirm_merge(trio[1], task5, 3, sha256(b"p"), [2]),
    )
    advance_chain_to(s.w3, m.task(task5).rounds_end)
    m.reveal_validation(sponsor, task5, sha256(VALIDATION), SALT, CID)
    root = payout_tree([PayoutLeaf(0, s.accounts[3], ETHER, 1)]).root
    s.record(
        "postPayoutRoot (2-of-3, first vote)", m.post_payout_root(trio[0], task5, root, ETHER, CID)
    )
    s.record(
        "postPayoutRoot (2-of-3, quorum vote)", m.post_payout_root(trio[1], task5, root, ETHER, CID)
    )


def _fallbacks(s: _Scenario) -> None:
    """A task the sponsor never reveals, and one cancelled before any submission."""
    m, sponsor = s.market, s.sponsor
    task6 = m.create_task(sponsor, s.params()).value
    assert task6 is not None
    m.propose_architecture(s.accounts[2], task6, sha256(b"a"), CID)
    advance_chain_to(s.w3, m.task(task6).reveal_deadline)
    s.record("refund (sponsor never revealed)", m.refund(s.accounts[2], task6, 1))
    task7 = m.create_task(sponsor, s.params()).value
    assert task7 is not None
    s.record("cancelTask", m.cancel_task(sponsor, task7))


def measure_on(engine: Engine, progress: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """`measure()` on a fresh chain of `engine`, from eth-tester's ten dev accounts."""
    if engine == "tester":
        return measure(progress)
    with anvil_web3() as w3:
        accounts = tester_accounts()
        for account in accounts:  # the same senders as on eth-tester, so the same calldata
            _rpc(w3, "anvil_setBalance", [account, hex(DEV_BALANCE)])
            _rpc(w3, "anvil_impersonateAccount", [account])
        return measure(progress, w3, accounts)


def tester_accounts() -> list[str]:
    """eth-tester's ten dev accounts (private keys 1 to 10), checksummed."""
    return [key.public_key.to_checksum_address() for key in get_default_account_keys()]


@contextlib.contextmanager
def anvil_web3() -> Iterator[Web3]:
    """A fresh anvil (the devnet's command: eth-tester's hardfork) on a free port, stopped on
    exit."""
    process, url = start_anvil("127.0.0.1", 0)
    try:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
        wait_until_answering(w3, process)
        yield w3
    finally:
        terminate(process)


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    return w3.manager.request_blocking(RPCEndpoint(method), params)


def _deploy_token(s: _Scenario) -> Any:
    artifact = load_artifact("DevToken")
    factory = s.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx_hash = factory.constructor().transact({"from": s.sponsor})
    receipt = s.w3.eth.wait_for_transaction_receipt(tx_hash)
    return s.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])


def over_target(gas: dict[str, int]) -> dict[str, tuple[int, int]]:
    """{operation: (gas, target)} for every figure above its target."""
    return {
        name: (used, target)
        for name, used in gas.items()
        if (target := TARGETS.get(name)) is not None and used > target
    }


def engines_differ(figures: dict[Engine, dict[str, int]]) -> dict[str, dict[Engine, int]]:
    """{operation: {engine: gas}} for every operation whose gas is not the same on all."""
    return {
        name: {engine: gas[name] for engine, gas in figures.items()}
        for name in TARGETS
        if len({gas.get(name) for gas in figures.values()}) > 1
    }


def markdown_table(figures: dict[Engine, dict[str, int]]) -> str:
    """The README's gas table: operation, exact gas on each engine measured, target."""
    rows = [
        "| operation | " + " | ".join(COLUMNS[engine] for engine in figures) + " | target |",
        "|---|" + "---:|" * (len(figures) + 1),
    ]
    for name in TARGETS:
        if not all(name in gas for gas in figures.values()):
            continue
        target = TARGETS[name]
        used = " | ".join(f"{gas[name]:,}" for gas in figures.values())
        rows.append(f"| {name} | {used} | {f'{target:,}' if target else '-'} |")
    return "\n".join(rows)


def parse_markdown_table(text: str, engine: Engine = "tester") -> dict[str, int]:
    """{operation: gas} of `engine`'s column in a table `markdown_table` wrote (inside any
    surrounding text); empty if the table has no such column."""
    figures: dict[str, int] = {}
    column: int | None = None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == "operation":
            column = cells.index(COLUMNS[engine]) if COLUMNS[engine] in cells else None
        elif column is not None and cells[0] in TARGETS and len(cells) > column:
            figures[cells[0]] = int(cells[column].replace(",", ""))
    return figures
