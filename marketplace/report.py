"""The evaluator's payout report: every node's verdict and score, the leave-one-out scores, and
every payout leaf with its Merkle proof, as a JSON blob whose CID the chain records with the
root (`PayoutRootPosted.reportCid`). A claimant needs nothing else; `verify` recomputes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, ValidationError

from marketplace.chain import ChainClient
from marketplace.crypto import PayoutLeaf, payout_tree
from marketplace.errors import IntegrityError, MarketplaceError, SpecError
from marketplace.messages import Frozen, NodeKind, Payout, Score
from marketplace.rewards import payout_leaves
from marketplace.storage import BlobStore

MAX_REPORT_BYTES = 32 * 1024 * 1024
REPORT_VERSION = 1


class NodeVerdict(Frozen):
    """One node as the evaluator judged it."""

    node_id: int
    kind: NodeKind
    author: str
    parents: tuple[int, ...]
    valid: bool
    reason: str = ""
    score: int = 0
    gain: int = 0


class PayoutEntry(Frozen):
    """One leaf of the payout tree, its parts and its proof (0x hex)."""

    index: int
    account: str
    amount: int
    points: int
    expertise: int = 0
    data: int = 0
    compute: int = 0
    deposits: int = 0
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
    loo_scores: dict[int, dict[int, int]] = Field(default_factory=dict)
    flops_per_sample: dict[int, int] = Field(default_factory=dict)
    payouts: tuple[PayoutEntry, ...]
    root: str
    total: int

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
            account=leaf.account,
            amount=leaf.amount,
            points=leaf.points,
            expertise=p.expertise,
            data=p.data,
            compute=p.compute,
            deposits=p.deposits,
            proof=tuple("0x" + step.hex() for step in tree.proof(leaf.index)),
        )
        for leaf, p in zip(leaves, payouts, strict=True)
    )
    return entries, tree.root, sum(leaf.amount for leaf in leaves)


def posted_reports(chain: ChainClient, task_id: int) -> dict[str, tuple[bytes, int, str]]:
    """Evaluator -> (root, total, report CID) of every PayoutRootPosted of the task."""
    return {
        str(e.args["evaluator"]): (bytes(e.args["root"]), int(e.args["total"]), e.args["reportCid"])
        for e in chain.events("PayoutRootPosted", taskId=task_id)
    }


def agreed_report(chain: ChainClient, store: BlobStore, task_id: int) -> PayoutReport:
    """The report behind the task's agreed root (IntegrityError if none matches it)."""
    task = chain.task(task_id)
    if task.settled_at == 0:
        raise IntegrityError(f"task {task_id} has no agreed payout root yet")
    for root, total, cid in posted_reports(chain, task_id).values():
        if root == task.payout_root and total == task.payout_total:
            report = fetch_report(store, cid, root)
            if report is not None:
                return report
    raise IntegrityError(f"no report of task {task_id} matches its agreed root")


def fetch_report(store: BlobStore, cid: str, root: bytes) -> PayoutReport | None:
    """The report under `cid` if it can be fetched, parses, and its leaves hash to `root`."""
    if not cid:
        return None
    try:
        report = PayoutReport.from_bytes(store.get(cid, MAX_REPORT_BYTES))
    except MarketplaceError:
        return None
    return report if report_root(report) == root else None


def report_root(report: PayoutReport) -> bytes:
    """The root the report's leaves hash to (the zero root for no leaves)."""
    if not report.payouts:
        return bytes(32)
    return payout_tree([p.leaf() for p in report.payouts]).root


def claim_payout(
    chain: ChainClient, store: BlobStore, account: str, task_id: int
) -> tuple[PayoutEntry | None, bool]:
    """Claim `account`'s leaf of the agreed report: (its entry or None, whether claimed now).

    Idempotent: a leaf already claimed (by anyone: the money goes to its account) is left.
    """
    entry = agreed_report(chain, store, task_id).entry_for(account)
    if entry is None or chain.is_claimed(task_id, entry.index):
        return entry, False
    chain.claim(account, task_id, entry.leaf(), entry.proof_bytes())
    return entry, True
