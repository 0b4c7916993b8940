"""The rows the index writes: an event's own row, the derived row an event makes (a task, a
node, a root, a claim...) and a payout report's rows (its verdicts and its leaves).

Pure functions of the event (and the task as stored at its block, for the events whose row
needs the times the contract set): the indexer only inserts what they return.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from marketplace.chain.events import ChainEvent
from marketplace.rules.messages import PAYOUT_PARTS, TaskState
from marketplace.wire.report import VERDICT_FIELDS, PayoutReport

TIMED_EVENTS = ("TaskCreated", "ValidationRevealed", "PayoutRootAgreed", "TaskFinalized")
"""Events whose row needs the task as stored at their block (the times the contract set)."""
INT64 = 2**63

Row = tuple[Any, ...]


def _hex(value: bytes | bytearray) -> str:
    return "0x" + bytes(value).hex()


def _json(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return _hex(value)
    raise TypeError(f"cannot store {type(value).__name__}")


def event_row(event: ChainEvent) -> Row:
    """The `events` row: where the event is, its name, task and arguments as canonical JSON
    (bytes as 0x hex; integers exact), named as the ABI names them."""
    args = json.dumps(event.abi_arguments(), default=_json, sort_keys=True, separators=(",", ":"))
    return (
        event.block_number,
        event.log_index,
        event.tx_hash,
        event.name,
        event.task_id,
        args,
    )


def _task_row(a: dict[str, Any], task: TaskState, block: int) -> Row:
    return (
        a["taskId"],
        a["sponsor"],
        a["token"],
        str(a["bounty"]),
        str(a["deposit"]),
        a["specCid"],
        _hex(a["specDigest"]),
        _hex(a["validationCommit"]),
        json.dumps(a["evaluators"]),
        a["quorum"],
        task.start,
        task.round_duration,
        task.rounds,
        task.reveal_window,
        task.evaluation_window,
        task.challenge_window,
        task.claim_window,
        block,
    )


def _settlement_row(a: dict[str, Any], task: TaskState, block: int) -> Row:
    return a["taskId"], _hex(a["root"]), str(a["total"]), task.agreed_at, block


def _reveal_row(a: dict[str, Any], task: TaskState, block: int) -> Row:
    return a["taskId"], task.revealed_at, block


def _finalization_row(a: dict[str, Any], task: TaskState, block: int) -> Row:
    return a["taskId"], task.finalized_at, block  # the claim window opens


_NODE_KINDS = {
    "ArchitectureProposed": "architecture",
    "UpdateSubmitted": "update",
    "MergePosted": "merge",
}


def _node_row(name: str, a: dict[str, Any], block: int) -> Row:
    """A node's row; its parents and author as each of the three events names them."""
    if name == "MergePosted":
        parents, author = [int(p) for p in a["parents"]], a["evaluator"]
    elif name == "UpdateSubmitted":
        parents, author = [int(a["parent"])], a["author"]
    else:
        parents, author = [0], a["author"]
    return (
        a["taskId"],
        a["nodeId"],
        _NODE_KINDS[name],
        author,
        max(parents),
        json.dumps(parents),
        a["round"],
        a.get("samples", 0),
        a.get("epsilon", 0),
        _hex(a["digest"]),
        a["cid"],
        block,
    )


def _root_row(a: dict[str, Any], block: int) -> Row:
    return (
        a["taskId"],
        a["evaluator"],
        _hex(a["root"]),
        str(a["total"]),
        a["votes"],
        a["reportCid"],
        block,
    )


def _claim_row(a: dict[str, Any], block: int) -> Row:
    return a["taskId"], a["index"], a["account"], str(a["amount"]), str(a["points"]), block


def _refund_row(a: dict[str, Any], block: int) -> Row:
    return a["taskId"], a["nodeId"], a["author"], str(a["amount"]), block


_TIMED_ROWS: dict[str, tuple[str, Callable[[dict[str, Any], TaskState, int], Row]]] = {
    "TaskCreated": ("tasks", _task_row),
    "PayoutRootAgreed": ("settlements", _settlement_row),
    "ValidationRevealed": ("reveals", _reveal_row),
    "TaskFinalized": ("finalizations", _finalization_row),
}
_PLAIN_ROWS: dict[str, tuple[str, Callable[[dict[str, Any], int], Row]]] = {
    "PayoutRootPosted": ("roots", _root_row),
    "Claimed": ("claims", _claim_row),
    "Refunded": ("refunds", _refund_row),
}


def row_of(event: ChainEvent, task: TaskState | None) -> tuple[str, Row] | None:
    """The derived row (table, values) an event makes, if any; `task` is the task as stored
    at the event's block, for TIMED_EVENTS: TaskCreated (its timing), ValidationRevealed
    (`revealed_at`), PayoutRootAgreed (`agreed_at`, stored as a settlement's `settled_at`) and
    TaskFinalized (`finalized_at`, when the claim window opens). The rows read the arguments
    by their ABI names, as the index's columns are named."""
    a, block = event.abi_arguments(), event.block_number
    if event.name in _TIMED_ROWS:
        assert task is not None
        table, timed = _TIMED_ROWS[event.name]
        return table, timed(a, task, block)
    if event.name in _NODE_KINDS:
        return "nodes", _node_row(event.name, a, block)
    if event.name in _PLAIN_ROWS:
        table, plain = _PLAIN_ROWS[event.name]
        return table, plain(a, block)
    return None


def fits_index(report: PayoutReport) -> bool:
    """Whether every node id, score and gain fits SQLite's 64-bit INTEGER columns."""
    values = [v for n in report.nodes for v in (n.node_id, n.score, n.gain)]
    return all(-INT64 <= v < INT64 for v in [*values, report.winner or 0])


def verdict_rows(task_id: int, evaluator: str, report: PayoutReport, block: int) -> list[Row]:
    """The `report_nodes` rows: each node's verdict fields, in their order."""
    return [
        (task_id, evaluator, n.node_id, *(getattr(n, f) for f in VERDICT_FIELDS), block)
        for n in report.nodes
    ]


def payout_rows(task_id: int, evaluator: str, report: PayoutReport, block: int) -> list[Row]:
    """The `report_payouts` rows: each leaf, amounts and parts as decimal text."""
    return [
        (
            task_id,
            evaluator,
            p.index,
            p.account,
            str(p.amount),
            str(p.points),
            *(str(getattr(p, part)) for part in PAYOUT_PARTS),
            json.dumps(list(p.proof)),
            block,
        )
        for p in report.payouts
    ]


def placeholders(count: int) -> str:
    return ",".join("?" * count)
