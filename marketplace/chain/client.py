"""`ChainClient`: typed access to one deployed GradientMarketplace through web3.

Its methods send the contract's transactions (through `marketplace.chain.transactions`, which
simulates each first so a revert surfaces as the contract's custom error), read its views into
typed models, and read its events, typed (`marketplace.chain.events`), from the client's copy
of the log (`marketplace.chain.eventlog`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import BlockNotFound
from web3.types import BlockIdentifier, RPCEndpoint

from marketplace import errors
from marketplace.chain.abi import (
    CONTRACT_NAME,
    ERC20_ABI,
    LogDecoder,
    RevertDecoder,
    contract_artifact,
    plain,
)
from marketplace.chain.eventlog import EventLog
from marketplace.chain.events import (
    NODE_EVENTS,
    ArchitectureProposed,
    ChainEvent,
    E,
    MaskSeedsRevealed,
    MergePosted,
    RoundJoined,
    TaskCreated,
    TxResult,
    UpdateSubmitted,
)
from marketplace.chain.transactions import (
    GAS_LIMITS,
    GAS_PER_EVALUATOR,
    GAS_PER_KEPT_PARENT,
    GAS_PER_PROOF_STEP,
    GAS_PER_SEED,
    Transactor,
)
from marketplace.rules.messages import (
    ZERO_ADDRESS,
    NodeKind,
    NodeRecord,
    NodeState,
    Phase,
    TaskParams,
    TaskState,
)
from marketplace.wire.crypto import PayoutLeaf

log = logging.getLogger(__name__)

# The shortest round or phase window a task may set on a shared chain (the contract's
# `minWindow`); devnets, whose clock the tests and the demo move, deploy with DEV_MIN_WINDOW.
PUBLIC_MIN_WINDOW = 3600
DEV_MIN_WINDOW = 0


def block_time(w3: Web3) -> int:
    """Chain time on any node: the latest block's timestamp."""
    return int(w3.eth.get_block("latest")["timestamp"])


class ChainClient:
    """Typed access to one deployed GradientMarketplace.

    Args:
        w3: any web3 provider (eth-tester in-process, or an HTTP JSON-RPC node). Accounts that
            send transactions must be unlocked on the node or signed by a web3 middleware.
        address: where the contract is deployed.
        start_block: the block it was deployed in (0 if unknown): where event reads begin.
    """

    def __init__(
        self, w3: Web3, address: str, receipt_timeout: float = 120.0, start_block: int = 0
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        abi = contract_artifact()["abi"]
        self.contract: Contract = w3.eth.contract(address=self.address, abi=abi)
        self._decoder = LogDecoder(abi)
        self.tx = Transactor(w3, self.contract, RevertDecoder(), self._decoder, receipt_timeout)
        self._collateral: dict[int, tuple[str, int]] = {}  # task id -> (token, deposit): immutable
        # Events are read from where the last read left off, never the whole history again.
        self._log = EventLog(
            self.logs,
            self.block_hash,
            lambda: int(self.w3.eth.block_number),
            start_block=start_block,
        )

    # ------------------------------------------------------------------ deployment

    @classmethod
    def deploy(cls, w3: Web3, deployer: str, *, min_window: int) -> ChainClient:
        """Deploy a fresh marketplace from `deployer` and return its client.

        `min_window` is the shortest round or phase window a task may set: `PUBLIC_MIN_WINDOW`
        on a shared chain; lower only on a devnet, whose clock the tests and the demo move.
        """
        artifact = contract_artifact()
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        tx_hash = factory.constructor(min_window).transact({"from": deployer, "gas": 6_000_000})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1 or receipt["contractAddress"] is None:
            raise errors.TransactionReverted("deployment failed")
        log.info("deployed %s at %s", CONTRACT_NAME, receipt["contractAddress"])
        return cls(w3, receipt["contractAddress"], start_block=int(receipt["blockNumber"]))

    # ------------------------------------------------------------------ transactions

    def create_task(self, sender: str, params: TaskParams) -> TxResult:
        """Create a task and escrow its bounty; `value` of the result is the task id.

        For an ERC-20 bounty, `sender` must have approved the contract first (`approve_token`).
        """
        value = params.bounty if params.token == ZERO_ADDRESS else 0
        gas = GAS_LIMITS["createTask"] + GAS_PER_EVALUATOR * len(params.evaluators)
        result = self.tx.transact(sender, "createTask", [params.as_abi()], value=value, gas=gas)
        return result.model_copy(update={"value": result.event(TaskCreated).task_id})

    def propose_architecture(self, sender: str, task_id: int, digest: bytes, cid: str) -> TxResult:
        """Propose an architecture (a child of the root), paying the task's deposit."""
        result = self.tx.transact(
            sender,
            "proposeArchitecture",
            [task_id, digest, cid],
            value=self._deposit_value(task_id),
        )
        return result.model_copy(update={"value": result.event(ArchitectureProposed).node_id})

    def submit_update(
        self,
        sender: str,
        task_id: int,
        parent: int,
        samples: int,
        digest: bytes,
        cid: str,
        encryption_key: bytes = bytes(32),
        epsilon_millis: int = 0,
    ) -> TxResult:
        """Submit an update of `parent`, paying the deposit; a non-zero `encryption_key`
        registers the sender's X25519 public key for the task; `epsilon_millis` declares the
        DP budget the update spent, in thousandths of epsilon (0: no DP)."""
        result = self.tx.transact(
            sender,
            "submitUpdate",
            [task_id, parent, samples, epsilon_millis, digest, encryption_key, cid],
            value=self._deposit_value(task_id),
        )
        return result.model_copy(update={"value": result.event(UpdateSubmitted).node_id})

    def join_round(self, sender: str, task_id: int, base: int, mask_key: bytes) -> TxResult:
        """Join the open round's secure aggregation on `base` with the X25519 key the round's
        pairwise masks are agreed with (during the round's first half)."""
        args = [task_id, base, mask_key]
        return self.tx.transact(sender, "joinRound", args, value=self._deposit_value(task_id))

    def round_joins(self, task_id: int, round_index: int | None = None) -> list[RoundJoined]:
        """The RoundJoined events of one round (of every round if None), in chain order."""
        if round_index is None:
            return self.events(RoundJoined, task_id=task_id)
        return self.events(RoundJoined, task_id=task_id, round=round_index)

    def reveal_mask_seeds(
        self, sender: str, task_id: int, round_index: int, base: int, seeds: Sequence[bytes]
    ) -> TxResult:
        """After the round: the sender's mask seeds with its group's members that did not
        submit, in their join order (marketplace.protocol.aggregation)."""
        gas = GAS_LIMITS["revealMaskSeeds"] + GAS_PER_SEED * len(seeds)
        args = [task_id, round_index, base, list(seeds)]
        return self.tx.transact(sender, "revealMaskSeeds", args, gas=gas)

    def seed_reveals(self, task_id: int, round_index: int) -> list[MaskSeedsRevealed]:
        """The MaskSeedsRevealed events of one round, in chain order."""
        return self.events(MaskSeedsRevealed, task_id=task_id, round=round_index)

    def post_merge(
        self,
        sender: str,
        task_id: int,
        round_index: int,
        parents: Sequence[int],
        samples: int,
        digest: bytes,
        plaintext_digest: bytes,
        cid: str,
    ) -> TxResult:
        """Post round `round_index`'s merge of `parents` (sorted, distinct node ids)."""
        gas = GAS_LIMITS["postMerge"] + GAS_PER_KEPT_PARENT * len(parents)
        args = [task_id, round_index, list(parents), samples, digest, plaintext_digest, cid]
        result = self.tx.transact(sender, "postMerge", args, gas=gas)
        return result.model_copy(update={"value": result.event(MergePosted).node_id})

    def confirm_merge(
        self,
        sender: str,
        task_id: int,
        node_id: int,
        plaintext_digest: bytes,
        parents: Sequence[int],
    ) -> TxResult:
        """Confirm a merge by the digest recomputed from the same (sorted) `parents`."""
        gas = GAS_LIMITS["confirmMerge"] + GAS_PER_KEPT_PARENT * len(parents)
        args = [task_id, node_id, plaintext_digest, list(parents)]
        return self.tx.transact(sender, "confirmMerge", args, gas=gas)

    def reveal_validation(
        self, sender: str, task_id: int, file_digest: bytes, salt: bytes, cid: str
    ) -> TxResult:
        return self.tx.transact(sender, "revealValidation", [task_id, file_digest, salt, cid])

    def post_payout_root(
        self, sender: str, task_id: int, root: bytes, total: int, report_cid: str = ""
    ) -> TxResult:
        """Post `root` and `total`, and where the report with every leaf's proof is."""
        gas = GAS_LIMITS["postPayoutRoot"] + 16 * len(report_cid.encode())
        return self.tx.transact(
            sender, "postPayoutRoot", [task_id, root, total, report_cid], gas=gas
        )

    def finalize(self, sender: str, task_id: int) -> TxResult:
        gas = GAS_LIMITS["finalize"] + GAS_PER_EVALUATOR * 8
        return self.tx.transact(sender, "finalize", [task_id], gas=gas)

    def claim(
        self, sender: str, task_id: int, leaf: PayoutLeaf, proof: Sequence[bytes]
    ) -> TxResult:
        """Claim `leaf` (paid to `leaf.account`, whoever sends it)."""
        gas = GAS_LIMITS["claim"] + GAS_PER_PROOF_STEP * len(proof)
        args = [
            task_id,
            leaf.index,
            to_checksum_address(leaf.account),
            leaf.amount,
            leaf.points,
            list(proof),
        ]
        return self.tx.transact(sender, "claim", args, gas=gas)

    def refund(self, sender: str, task_id: int, node_id: int) -> TxResult:
        return self.tx.transact(sender, "refund", [task_id, node_id])

    def cancel_task(self, sender: str, task_id: int) -> TxResult:
        return self.tx.transact(sender, "cancelTask", [task_id])

    def reclaim(self, sender: str, task_id: int) -> TxResult:
        return self.tx.transact(sender, "reclaim", [task_id])

    def approve_token(self, sender: str, token: str, amount: int) -> TxResult:
        """Let the marketplace pull `amount` of ERC-20 `token` from `sender`."""
        erc20 = self.w3.eth.contract(address=to_checksum_address(token), abi=ERC20_ABI)
        tx_hash = erc20.functions.approve(self.address, amount).transact(
            {"from": to_checksum_address(sender), "gas": 100_000}
        )
        return self.tx.wait(tx_hash)

    # ------------------------------------------------------------------ reads

    def task_count(self) -> int:
        return int(self._call("taskCount"))

    def task(self, task_id: int, block: BlockIdentifier = "latest") -> TaskState:
        """The task as stored at `block` (the latest by default)."""
        raw = self._call("getTask", task_id, block=block)
        names = list(TaskState.model_fields)[1:]  # after task_id, in the struct's order
        return TaskState(task_id=task_id, **dict(zip(names, plain(raw), strict=True)))

    def node(self, task_id: int, node_id: int) -> NodeState:
        raw = plain(self._call("getNode", task_id, node_id))
        names = list(NodeState.model_fields)[2:]
        return NodeState(task_id=task_id, node_id=node_id, **dict(zip(names, raw, strict=True)))

    def evaluators(self, task_id: int) -> list[str]:
        return [to_checksum_address(a) for a in self._call("evaluatorsOf", task_id)]

    def phase(self, task_id: int) -> Phase:
        return Phase(self._call("phase", task_id))

    def current_round(self, task_id: int) -> int:
        return int(self._call("currentRound", task_id))

    def is_claimed(self, task_id: int, index: int) -> bool:
        return bool(self._call("isClaimed", task_id, index))

    def is_refunded(self, task_id: int, node_id: int) -> bool:
        return bool(self._call("isRefunded", task_id, node_id))

    def reputation(self, account: str) -> int:
        return int(self._call("reputationOf", to_checksum_address(account)))

    def strikes(self, evaluator: str) -> int:
        return int(self._call("strikesOf", to_checksum_address(evaluator)))

    def min_window(self) -> int:
        """The shortest round or phase window a task may set on this deployment."""
        return int(self._call("minWindow"))

    def balance(self, account: str, token: str = ZERO_ADDRESS) -> int:
        """ETH (token = zero address) or ERC-20 balance of `account`."""
        account = to_checksum_address(account)
        if token == ZERO_ADDRESS:
            return int(self.w3.eth.get_balance(account))
        erc20 = self.w3.eth.contract(address=to_checksum_address(token), abi=ERC20_ABI)
        return int(erc20.functions.balanceOf(account).call())

    def events(
        self, kind: type[E], from_block: int = 0, to_block: int | str = "latest", **filters: Any
    ) -> list[E]:
        """The events of type `kind`, optionally filtered on their fields (`task_id=3`), from
        this client's copy of the log after it has read the blocks mined since its last read."""
        self._log.sync()
        upper = None if isinstance(to_block, str) else to_block
        return self._log.select(kind, from_block, upper, **filters)

    def now(self) -> int:
        """Chain time: the latest block's timestamp (what the contract's `block.timestamp`
        was for the last transaction; the next one's is at least this)."""
        return block_time(self.w3)

    def block_hash(self, number: int) -> str | None:
        """The chain's hash of block `number` (0x hex), or None if it has no such block."""
        try:
            return HexBytes(self.w3.eth.get_block(number)["hash"]).to_0x_hex()
        except BlockNotFound:
            return None

    def logs(
        self, from_block: int, to_block: int | str, topics: list[Any] | None = None
    ) -> list[ChainEvent]:
        """Every event of this contract in blocks `from_block..to_block`, in chain order, each
        with the hash of its block: one `eth_getLogs`, decoded here straight from the JSON
        (web3's per-log formatters cost about 1 ms a log; this is what the indexer runs on).
        `topics` filters as eth_getLogs does (a list per position: any of them)."""
        query: dict[str, Any] = {"address": self.address, "fromBlock": from_block}
        query["toBlock"] = to_block
        if topics is not None:
            query["topics"] = topics
        raw: Any
        if isinstance(self.w3.provider, EthereumTesterProvider):  # in-process: no JSON form
            raw = self.w3.eth.get_logs(query)  # type: ignore[arg-type]
        else:
            query["fromBlock"] = hex(from_block)
            query["toBlock"] = to_block if isinstance(to_block, str) else hex(to_block)
            response = self.w3.provider.make_request(RPCEndpoint("eth_getLogs"), [query])
            if "error" in response:
                raise errors.ChainError(f"eth_getLogs {from_block}-{to_block}: {response['error']}")
            raw = response["result"]
        return [event for entry in raw if (event := self._decoder.decode(entry)) is not None]

    def nodes(self, task_id: int, from_block: int = 0) -> list[NodeRecord]:
        """Every node of a task as its event recorded it (pointers, all parents), by id."""
        self._log.sync()
        events = [
            e for kind in NODE_EVENTS for e in self._log.select(kind, from_block, task_id=task_id)
        ]
        return sorted((_node_record(e) for e in events), key=lambda record: record.node_id)

    # ------------------------------------------------------------------ plumbing

    def _deposit_value(self, task_id: int) -> int:
        if task_id not in self._collateral:
            task = self.task(task_id)
            self._collateral[task_id] = (task.token, task.deposit)
        token, deposit = self._collateral[task_id]
        return deposit if token == ZERO_ADDRESS else 0

    def _call(self, fn_name: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        return self.tx.call(fn_name, *args, block=block)


def _node_record(event: ArchitectureProposed | UpdateSubmitted | MergePosted) -> NodeRecord:
    common: dict[str, Any] = {
        "task_id": event.task_id,
        "node_id": event.node_id,
        "digest": event.digest,
        "cid": event.cid,
        "round": event.round,
        "block_number": event.block_number,
    }
    if isinstance(event, ArchitectureProposed):
        return NodeRecord(
            kind=NodeKind.ARCHITECTURE, author=event.author, parents=(0,), samples=0, **common
        )
    if isinstance(event, UpdateSubmitted):
        return NodeRecord(
            kind=NodeKind.UPDATE,
            author=event.author,
            parents=(event.parent,),
            samples=event.samples,
            epsilon_millis=event.epsilon,
            **common,
        )
    return NodeRecord(
        kind=NodeKind.MERGE,
        author=event.evaluator,
        parents=event.parents,
        samples=event.samples,
        plaintext_digest=event.plaintext_digest,
        **common,
    )
