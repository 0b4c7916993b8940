"""`ChainClient`: the one module that talks to the GradientMarketplace contract through web3.

Every transaction is first simulated with `eth_call`, so a revert surfaces as the contract's own
custom error (a class in `marketplace.errors`, with its values) on any node, then sent with an
explicit gas limit (no estimation round-trips) and awaited. Reads return typed models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import requests
from eth_abi.abi import decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    TimeExhausted,
    Web3Exception,
    Web3RPCError,
)
from web3.types import BlockIdentifier, RPCEndpoint, TxParams, Wei

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.artifacts import load_artifact
from marketplace.chain.eventlog import EventLog
from marketplace.rules.messages import (
    ZERO_ADDRESS,
    ChainEvent,
    NodeKind,
    NodeRecord,
    NodeState,
    Phase,
    TaskParams,
    TaskState,
    TxResult,
)
from marketplace.wire.crypto import PayoutLeaf

log = logging.getLogger(__name__)

NODE_ERRORS: tuple[type[Exception], ...] = (
    Web3Exception,  # the node's refusals (Web3RPCError), timeouts, web3's own ValueErrors
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
"""What web3 raises when the node refuses, cannot be reached or does not mine in time: a
command line shows it as one line (`describe_node_error`), never as a traceback."""

CONTRACT_NAME = "GradientMarketplace"

# Explicit gas limits: measured use (see the README's gas table) with generous headroom, plus the
# ERC-20 calls a token task makes. Per-item terms cover the only loops (parents, evaluators).
GAS_LIMITS = {
    "createTask": 420_000,
    "proposeArchitecture": 200_000,
    "submitUpdate": 200_000,
    "joinRound": 60_000,
    "revealMaskSeeds": 60_000,
    "postMerge": 160_000,
    "confirmMerge": 90_000,
    "revealValidation": 100_000,
    "postPayoutRoot": 180_000,
    "finalize": 120_000,
    "claim": 160_000,
    "refund": 140_000,
    "cancelTask": 120_000,
    "reclaim": 120_000,
}
GAS_PER_EVALUATOR = 30_000
GAS_PER_KEPT_PARENT = 9_000  # read the parent, mark it kept, plus its calldata
GAS_PER_SEED = 1_500
GAS_PER_PROOF_STEP = 1_500

# The shortest round or phase window a task may set on a shared chain (the contract's
# `minWindow`); devnets, whose clock the tests and the demo move, deploy with DEV_MIN_WINDOW.
PUBLIC_MIN_WINDOW = 3600
DEV_MIN_WINDOW = 0

ERC20_ABI: list[dict[str, Any]] = [
    {
        "name": "approve",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]
_NODE_EVENTS = ("ArchitectureProposed", "UpdateSubmitted", "MergePosted")


@cache
def contract_artifact() -> dict[str, Any]:
    """The committed ABI and bytecode of the marketplace contract."""
    return load_artifact(CONTRACT_NAME)


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
        self.contract: Contract = w3.eth.contract(
            address=self.address, abi=contract_artifact()["abi"]
        )
        self._receipt_timeout = receipt_timeout
        self._events = {
            HexBytes(keccak(text=_signature(item))): self.contract.events[item["name"]]
            for item in contract_artifact()["abi"]
            if item["type"] == "event"
        }
        self._decoder = _LogDecoder(contract_artifact()["abi"])
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
        result = self._transact(sender, "createTask", [params.as_abi()], value=value, gas=gas)
        return _with_value(result, "TaskCreated", "taskId")

    def propose_architecture(self, sender: str, task_id: int, digest: bytes, cid: str) -> TxResult:
        """Propose an architecture (a child of the root), paying the task's deposit."""
        result = self._transact(
            sender,
            "proposeArchitecture",
            [task_id, digest, cid],
            value=self._deposit_value(task_id),
        )
        return _with_value(result, "ArchitectureProposed", "nodeId")

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
        result = self._transact(
            sender,
            "submitUpdate",
            [task_id, parent, samples, epsilon_millis, digest, encryption_key, cid],
            value=self._deposit_value(task_id),
        )
        return _with_value(result, "UpdateSubmitted", "nodeId")

    def join_round(self, sender: str, task_id: int, base: int, mask_key: bytes) -> TxResult:
        """Join the open round's secure aggregation on `base` with the X25519 key the round's
        pairwise masks are agreed with (during the round's first half)."""
        args = [task_id, base, mask_key]
        return self._transact(sender, "joinRound", args, value=self._deposit_value(task_id))

    def round_joins(self, task_id: int, round_index: int | None = None) -> list[ChainEvent]:
        """The RoundJoined events of one round (of every round if None), in chain order."""
        if round_index is None:
            return self.events("RoundJoined", taskId=task_id)
        return self.events("RoundJoined", taskId=task_id, round=round_index)

    def reveal_mask_seeds(
        self, sender: str, task_id: int, round_index: int, base: int, seeds: Sequence[bytes]
    ) -> TxResult:
        """After the round: the sender's mask seeds with its group's members that did not
        submit, in their join order (marketplace.protocol.aggregation)."""
        gas = GAS_LIMITS["revealMaskSeeds"] + GAS_PER_SEED * len(seeds)
        args = [task_id, round_index, base, list(seeds)]
        return self._transact(sender, "revealMaskSeeds", args, gas=gas)

    def seed_reveals(self, task_id: int, round_index: int) -> list[ChainEvent]:
        """The MaskSeedsRevealed events of one round, in chain order."""
        return self.events("MaskSeedsRevealed", taskId=task_id, round=round_index)

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
        result = self._transact(sender, "postMerge", args, gas=gas)
        return _with_value(result, "MergePosted", "nodeId")

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
        return self._transact(sender, "confirmMerge", args, gas=gas)

    def reveal_validation(
        self, sender: str, task_id: int, file_digest: bytes, salt: bytes, cid: str
    ) -> TxResult:
        return self._transact(sender, "revealValidation", [task_id, file_digest, salt, cid])

    def post_payout_root(
        self, sender: str, task_id: int, root: bytes, total: int, report_cid: str = ""
    ) -> TxResult:
        """Post `root` and `total`, and where the report with every leaf's proof is."""
        gas = GAS_LIMITS["postPayoutRoot"] + 16 * len(report_cid.encode())
        return self._transact(sender, "postPayoutRoot", [task_id, root, total, report_cid], gas=gas)

    def finalize(self, sender: str, task_id: int) -> TxResult:
        gas = GAS_LIMITS["finalize"] + GAS_PER_EVALUATOR * 8
        return self._transact(sender, "finalize", [task_id], gas=gas)

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
        return self._transact(sender, "claim", args, gas=gas)

    def refund(self, sender: str, task_id: int, node_id: int) -> TxResult:
        return self._transact(sender, "refund", [task_id, node_id])

    def cancel_task(self, sender: str, task_id: int) -> TxResult:
        return self._transact(sender, "cancelTask", [task_id])

    def reclaim(self, sender: str, task_id: int) -> TxResult:
        return self._transact(sender, "reclaim", [task_id])

    def approve_token(self, sender: str, token: str, amount: int) -> TxResult:
        """Let the marketplace pull `amount` of ERC-20 `token` from `sender`."""
        erc20 = self.w3.eth.contract(address=to_checksum_address(token), abi=ERC20_ABI)
        tx_hash = erc20.functions.approve(self.address, amount).transact(
            {"from": to_checksum_address(sender), "gas": 100_000}
        )
        return self._await(tx_hash)

    # ------------------------------------------------------------------ reads

    def task_count(self) -> int:
        return int(self._call("taskCount"))

    def task(self, task_id: int, block: BlockIdentifier = "latest") -> TaskState:
        """The task as stored at `block` (the latest by default)."""
        raw = self._call("getTask", task_id, block=block)
        names = list(TaskState.model_fields)[1:]  # after task_id, in the struct's order
        return TaskState(task_id=task_id, **dict(zip(names, _plain(raw), strict=True)))

    def node(self, task_id: int, node_id: int) -> NodeState:
        raw = _plain(self._call("getNode", task_id, node_id))
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
        self, name: str, from_block: int = 0, to_block: int | str = "latest", **filters: Any
    ) -> list[ChainEvent]:
        """Events called `name`, optionally filtered on their arguments (`taskId=3`), from
        this client's copy of the log after it has read the blocks mined since its last read."""
        self._log.sync()
        upper = None if isinstance(to_block, str) else to_block
        return self._log.select(name, from_block, upper, **filters)

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
            e for name in _NODE_EVENTS for e in self._log.select(name, from_block, taskId=task_id)
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
        try:
            return self.contract.functions[fn_name](*args).call(block_identifier=block)
        except ContractLogicError as exc:
            raise self._decode_revert(exc) from None

    def _transact(
        self, sender: str, fn_name: str, args: list[Any], value: int = 0, gas: int | None = None
    ) -> TxResult:
        tx: TxParams = {"from": to_checksum_address(sender), "value": Wei(value)}
        fn = self.contract.functions[fn_name](*args)
        try:
            fn.call(tx, block_identifier="pending")  # surfaces a revert as its custom error, unsent
        except ContractLogicError as exc:
            raise self._decode_revert(exc) from None
        tx["gas"] = gas if gas is not None else GAS_LIMITS[fn_name]
        return self._await(fn.transact(tx))

    def _await(self, tx_hash: HexBytes) -> TxResult:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self._receipt_timeout)
        if receipt["status"] != 1:
            shown = HexBytes(tx_hash).to_0x_hex()
            raise errors.TransactionReverted(
                f"transaction {shown} reverted (gas used {receipt['gasUsed']})"
            )
        events = []
        for entry in receipt["logs"]:
            if entry["address"] != self.address or not entry["topics"]:
                continue
            event = self._events.get(HexBytes(entry["topics"][0]))
            if event is not None:
                events.append(_event(event().process_log(entry)))
        return TxResult(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            gas_used=receipt["gasUsed"],
            block_number=receipt["blockNumber"],
            events=tuple(events),
        )

    def _decode_revert(self, exc: ContractLogicError) -> errors.ChainError:
        data = exc.data if isinstance(exc.data, str) else None
        if data and data.startswith("0x") and len(data) >= 10:
            raw = bytes.fromhex(data[2:])
            revert = reverts.BY_SELECTOR.get(raw[:4])
            if revert is not None:
                names = [name for name, _ in revert.ARGUMENTS]
                values = decode([abi_type for _, abi_type in revert.ARGUMENTS], raw[4:])
                return revert(**dict(zip(names, _plain(values), strict=True)))
            return errors.UnknownRevert(data=data)
        return errors.TransactionReverted(str(exc.message or exc))


def _signature(item: dict[str, Any]) -> str:
    return f"{item['name']}({','.join(_abi_type(i) for i in item['inputs'])})"


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return f"({','.join(_abi_type(c) for c in item['components'])}){item['type'][5:]}"
    return str(item["type"])


def _plain(value: Any) -> Any:
    """web3 values as plain Python: bytes for HexBytes, checksummed addresses, lists for tuples."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _event(entry: Any) -> ChainEvent:
    return ChainEvent(
        name=entry["event"],
        args={k: _plain(v) for k, v in entry["args"].items()},
        block_number=entry["blockNumber"],
        tx_hash=HexBytes(entry["transactionHash"]).to_0x_hex(),
        log_index=entry["logIndex"],
    )


class _LogDecoder:
    """Decodes this contract's raw logs (JSON hex strings, or web3's formatted values) into
    ChainEvents, as `_event(contract.events[...]().process_log(...))` does, at a tenth of
    the cost: one ABI decode of the data per log, cached address checksums."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._specs: dict[bytes, tuple[str, list[tuple[str, str]], list[str], list[str]]] = {}
        for item in abi:
            if item["type"] != "event":
                continue
            indexed = [(i["name"], _abi_type(i)) for i in item["inputs"] if i["indexed"]]
            data = [i for i in item["inputs"] if not i["indexed"]]
            topic = bytes(keccak(text=_signature(item)))
            names, types = [i["name"] for i in data], [_abi_type(i) for i in data]
            self._specs[topic] = (item["name"], indexed, names, types)

    def topic(self, name: str) -> bytes:
        """The topic 0 of the event called `name`."""
        return next(topic for topic, spec in self._specs.items() if spec[0] == name)

    def decode(self, entry: Any) -> ChainEvent | None:
        topics = [bytes(HexBytes(t)) for t in entry["topics"]]
        spec = self._specs.get(topics[0]) if topics else None
        if spec is None:
            return None
        name, indexed, names, types = spec
        args = {
            arg: _topic_value(topic, kind)
            for (arg, kind), topic in zip(indexed, topics[1:], strict=True)
        }
        values = decode(types, bytes(HexBytes(entry["data"])))
        for arg, kind, value in zip(names, types, values, strict=True):
            args[arg] = _typed(value, kind)
        return ChainEvent(
            name=name,
            args=args,
            block_number=_quantity(entry["blockNumber"]),
            tx_hash=HexBytes(entry["transactionHash"]).to_0x_hex(),
            log_index=_quantity(entry["logIndex"]),
            block_hash=HexBytes(entry["blockHash"]).to_0x_hex(),
        )


def _topic_value(topic: bytes, kind: str) -> Any:
    """An indexed argument from its 32-byte topic (the common static types read directly)."""
    if kind == "address":
        return _checksum("0x" + topic[12:].hex())
    if kind.startswith("uint"):
        return int.from_bytes(topic, "big")
    return _typed(decode([kind], topic)[0], kind)


@lru_cache(maxsize=65_536)
def _checksum(address: str) -> str:
    return to_checksum_address(address)


def _typed(value: Any, kind: str) -> Any:
    """eth_abi's value of ABI type `kind` as `_plain` gives it: addresses checksummed (by
    their type, never by their look), arrays as lists."""
    if kind == "address":
        return _checksum(value)
    if kind.endswith("]"):
        element = kind[: kind.rindex("[")]
        return [_typed(v, element) for v in value]
    return value


def _quantity(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _with_value(result: TxResult, event_name: str, arg: str) -> TxResult:
    return result.model_copy(update={"value": int(result.event(event_name).args[arg])})


def _node_record(event: ChainEvent) -> NodeRecord:
    a = event.args
    common = {
        "task_id": a["taskId"],
        "node_id": a["nodeId"],
        "digest": a["digest"],
        "cid": a["cid"],
        "block_number": event.block_number,
    }
    if event.name == "ArchitectureProposed":
        return NodeRecord(
            kind=NodeKind.ARCHITECTURE,
            author=a["author"],
            parents=(0,),
            round=a["round"],
            samples=0,
            **common,
        )
    if event.name == "UpdateSubmitted":
        return NodeRecord(
            kind=NodeKind.UPDATE,
            author=a["author"],
            parents=(a["parent"],),
            round=a["round"],
            samples=a["samples"],
            epsilon_millis=a["epsilon"],
            **common,
        )
    return NodeRecord(
        kind=NodeKind.MERGE,
        author=a["evaluator"],
        parents=tuple(a["parents"]),
        round=a["round"],
        samples=a["samples"],
        plaintext_digest=a["plaintextDigest"],
        **common,
    )


def describe_node_error(exc: Exception) -> str:
    """One line for an error of `NODE_ERRORS`: what the node said, without web3's wrapping."""
    if isinstance(exc, Web3RPCError):
        error = (exc.rpc_response or {}).get("error")
        said = error.get("message") if isinstance(error, dict) else None
        return f"the node refused: {said or exc.message}"
    if isinstance(exc, ContractLogicError):
        return f"the contract refused: {exc.message or exc.data}"
    if isinstance(exc, TimeExhausted):
        return f"the transaction was not mined in time (it may still be): {exc}"
    if isinstance(exc, requests.exceptions.RequestException):
        return f"cannot reach the Ethereum node: {type(exc).__name__}"
    return f"the node or web3 refused: {exc}"
