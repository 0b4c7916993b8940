"""The evaluator's payout report: every node's verdict and score, the evidence the reward rule
replays (coalition scores, added scores, FLOPs, the ceiling), and
every payout leaf with its Merkle proof, as a JSON blob whose CID the chain records with the
root (`PayoutRootPosted.reportCid`). A claimant needs nothing else; `verify` recomputes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils.address import is_address
from pydantic import Field, ValidationError

from marketplace.errors import SpecError
from marketplace.rules.messages import Frozen, NodePlace, Payout, Score
from marketplace.rules.rewards import Evidence
from marketplace.rules.shapley import Coalition
from marketplace.wire.crypto import PayoutLeaf, payout_leaves, payout_tree

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 32 * 1024 * 1024
# 2: coalition and added scores replace leave-one-out (issue 15); 3: the winner's delivery
REPORT_VERSION = 3
UINT256 = 2**256


def coalition_key(coalition: Coalition) -> str:
    """A coalition as the report writes it: its ids, comma-separated."""
    return ",".join(map(str, coalition))


def coalition_of(key: str) -> Coalition:
    """A report's coalition key read back (ValueError if it is not sorted, distinct ids)."""
    ids = tuple(int(part) for part in key.split(",")) if key else ()
    if list(ids) != sorted(set(ids)):
        raise ValueError(f"{key!r} is not a sorted list of distinct ids")
    return ids


class Delivery(Frozen):
    """The report's delivery (`marketplace.delivered.delivery`): where the winner sealed to the
    sponsor is, and the digest of its plaintext (hex)."""

    node_id: int
    cid: str
    weights_sha256: str


class NodeVerdict(NodePlace):  # its place in the tree, then the verdict
    """One node as the evaluator judged it."""

    valid: bool
    reason: str = ""
    score: int = 0
    gain: int = 0


VERDICT_FIELDS: tuple[str, ...] = tuple(
    name for name in NodeVerdict.model_fields if name not in NodePlace.model_fields
)
"""The verdict's own fields (the index keeps one column each)."""


class LeafIndex(Frozen):
    """A payout leaf's position in the tree, the first field of a report's entry."""

    index: int


# Fields dump in the order of the bases reversed: index, the `Payout`'s (account, amount, points,
# the parts), proof. The report's bytes depend on it (tests/test_report_shapes.py pins it).
class PayoutEntry(Payout, LeafIndex):
    """One leaf of the payout tree, its parts and its proof (0x hex)."""

    proof: tuple[str, ...] = ()

    def leaf(self) -> PayoutLeaf:
        return PayoutLeaf(self.index, self.account, self.amount, self.points)

    def proof_bytes(self) -> list[bytes]:
        return [bytes.fromhex(item.removeprefix("0x")) for item in self.proof]


class PayoutReport(Frozen):
    """What an evaluator posts next to its root."""

    version: int = REPORT_VERSION
    task_id: int
    chain_id: int
    contract: str
    evaluator: str
    validation_digest: str  # sha256 of the validation file scored on, hex
    winner: int | None
    nodes: tuple[NodeVerdict, ...]
    # merge id -> "id,id,..." (a coalition of its update parents) -> the score of their average
    coalitions: dict[int, dict[str, int]] = Field(default_factory=dict)
    added: dict[int, int] = Field(default_factory=dict)  # left-out update -> its merge with it
    flops_per_sample: dict[int, int] = Field(default_factory=dict)
    ceiling: int = 0  # the best score possible on the validation set
    payouts: tuple[PayoutEntry, ...]
    root: str
    total: int
    scorings: int = 0  # models this evaluator ran on the validation set to settle
    delivery: Delivery | None = None  # the winner sealed to the sponsor (delivery.py)

    def evidence(self) -> Evidence:
        """What the reward rule replays, as `compute_payouts` takes it (SpecError if a
        coalition is not a list of node ids)."""
        try:
            coalitions = {
                merge: {coalition_of(key): value for key, value in table.items()}
                for merge, table in self.coalitions.items()
            }
        except ValueError:
            raise SpecError("a coalition in the report is not a list of node ids") from None
        return Evidence(coalitions, self.added, self.flops_per_sample, self.ceiling)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PayoutReport:
        if len(data) > MAX_REPORT_BYTES:
            raise SpecError(f"the report is {len(data):,} bytes, over {MAX_REPORT_BYTES:,}")
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise SpecError(f"not a payout report: {exc.errors()[0]['msg']}") from None

    def scores(self) -> dict[int, Score]:
        return {
            n.node_id: Score(node_id=n.node_id, valid=n.valid, value=n.score, reason=n.reason)
            for n in self.nodes
        }

    def entry_for(self, account: str) -> PayoutEntry | None:
        return next((p for p in self.payouts if p.account.lower() == account.lower()), None)


def payout_entries(payouts: Sequence[Payout]) -> tuple[tuple[PayoutEntry, ...], bytes, int]:
    """(entries with proofs, root, total) of the payouts, as the evaluator posts them."""
    leaves = payout_leaves(payouts)
    if not leaves:  # nothing is owed: an empty tree has the zero root
        return (), bytes(32), 0
    tree = payout_tree(leaves)
    entries = tuple(
        PayoutEntry(
            index=leaf.index,
            proof=tuple("0x" + step.hex() for step in tree.proof(leaf.index)),
            **p.model_dump(),
        )
        for leaf, p in zip(leaves, payouts, strict=True)
    )
    return entries, tree.root, sum(leaf.amount for leaf in leaves)


@dataclass(frozen=True)
class PostedRoot:
    """One PayoutRootPosted: who posted which root and total, and where its report is."""

    evaluator: str
    root: bytes
    total: int
    cid: str


@dataclass(frozen=True)
class ReportCheck:
    """A posted report as a client read it: `report` if it parsed (else None), and why it does
    not match its posted root ("" when it does). Only a matching report is used to claim."""

    posted: PostedRoot
    report: PayoutReport | None
    reason: str = ""

    @property
    def matches(self) -> bool:
        return self.report is not None and not self.reason


def check_report_bytes(data: bytes, posted: PostedRoot, task_id: int) -> ReportCheck:
    """The report in `data` (size cap first), checked against the root it was posted with."""
    try:
        report = PayoutReport.from_bytes(data)
    except SpecError as exc:
        return refused(ReportCheck(posted, None, str(exc)))
    reason = report_mismatch(report, task_id, posted.root, posted.total)
    return refused(ReportCheck(posted, report, reason)) if reason else ReportCheck(posted, report)


def refused(check: ReportCheck) -> ReportCheck:
    log.warning(
        "report of %s for root 0x%s does not match: %s",
        check.posted.evaluator,
        check.posted.root.hex(),
        check.reason,
    )
    return check


def report_mismatch(report: PayoutReport, task_id: int, root: bytes, total: int) -> str | None:
    """Why `report` is not the report of `root` and `total` for task `task_id` (None if it is):
    every leaf well formed (index = position, one per account, uint256 amounts and points, an
    address), the amounts adding up to `total`, the leaves hashing to `root`, and every proof
    the tree's own. A report that passes can be claimed from without another check."""
    if report.task_id != task_id:
        return f"the report is for task {report.task_id}, not {task_id}"
    if (report.root.lower(), report.total) != ("0x" + root.hex(), total):
        return f"the report says root {report.root} ({report.total}), the chain 0x{root.hex()}"
    node_ids = [n.node_id for n in report.nodes]
    if len(set(node_ids)) != len(node_ids):
        return "a node is listed twice"
    accounts: set[str] = set()
    for position, entry in enumerate(report.payouts):
        if entry.index != position:
            return f"leaf at position {position} has index {entry.index}"
        if not (0 <= entry.amount < UINT256 and 0 <= entry.points < UINT256):
            return f"leaf {position}: amount {entry.amount} or points {entry.points} not uint256"
        if not is_address(entry.account) or entry.account.lower() in accounts:
            return f"leaf {position}: account {entry.account!r} is not an address or is repeated"
        accounts.add(entry.account.lower())
    paid = sum(entry.amount for entry in report.payouts)
    if paid != total:
        return f"the leaves add up to {paid}, not the posted total {total}"
    if not report.payouts:
        return None if root == bytes(32) else "no leaves, but the root is not the zero root"
    tree = payout_tree([entry.leaf() for entry in report.payouts])
    if tree.root != root:
        return f"the leaves hash to 0x{tree.root.hex()}, not the posted root 0x{root.hex()}"
    for entry in report.payouts:
        expected = tuple("0x" + step.hex() for step in tree.proof(entry.index))
        if tuple(step.lower() for step in entry.proof) != expected:
            return f"leaf {entry.index}: its proof is not the tree's"
    return None
