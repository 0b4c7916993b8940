"""`verify`: anyone recomputes a task's settlement from public data and says whether it holds.

What anyone can check, with no key: the revealed validation file against the commitment; each
posted report against its root and total, and its node list against the chain's tree; the
payouts recomputed by the reward rule from the report's scores and the chain's tree (bounty,
deposit, split), hashed into the Merkle root; that the report left out (verdict `unconfirmed`)
exactly the merges the quorum had not confirmed by the reveal; and every architecture (public)
scored again on the revealed file, with its FLOPs; and that each report's delivery is the winner
it scored, sealed to the sponsor alone by its evaluator. With a key, more: a registered miner
also re-scores every merge (sealed to it); an evaluator's key re-scores every node and every
coalition and added score, that is the whole evaluation.

Nothing another party published makes `verify` raise: a revealed file, a report or a node that
cannot be read is a failed check (or an unreadable node) with the reason. A verifier with the
sponsor's or an evaluator's key, to whom the validation set was sealed, scores that copy when
the revealed CID does not give the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from marketplace.chain.client import ChainClient
from marketplace.chain.events import ValidationRevealed
from marketplace.delivered.delivery import delivery_mismatch, scored_digest
from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    DataFormatError,
    IntegrityError,
    MarketplaceError,
    SpecError,
    ValidationUnavailable,
)
from marketplace.protocol.aggregation import join_refunds
from marketplace.protocol.reports import posted_roots, read_report
from marketplace.protocol.tasks import (
    account_key,
    architecture_spec,
    can_read,
    nodes_by_id,
    read_spec,
    unconfirmed,
    validation_file,
)
from marketplace.protocol.verdicts import NODE_ERRORS
from marketplace.roles.coalitions import averager
from marketplace.roles.scorer import Scorer, TaskView
from marketplace.rules.datafiles import Dataset, load_validation
from marketplace.rules.evaluation import ceiling
from marketplace.rules.frontier import Frontier
from marketplace.rules.messages import NodeKind, NodeRecord, Score, TaskSpec
from marketplace.rules.rewards import UNCONFIRMED, compute_payouts
from marketplace.rules.shapley import Coalition
from marketplace.storage.stores import BlobStore
from marketplace.wire.crypto import sha256, validation_commitment
from marketplace.wire.keys import X25519KeyPair
from marketplace.wire.report import PayoutReport, coalition_of, payout_entries


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verification:
    """Every check made, in order; `ok` when all of them hold."""

    task_id: int
    checks: list[Check] = field(default_factory=list)
    rescored: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


def verify_task(
    chain: ChainClient,
    store: BlobStore,
    task_id: int,
    chain_id: int,
    account: LocalAccount | None = None,
    key: X25519KeyPair | None = None,
) -> Verification:
    """Recompute the settlement of `task_id`; re-score what `key` can read (None: public only)."""
    result = Verification(task_id)
    task = chain.task(task_id)
    spec = read_spec(chain, store, task_id)
    try:
        file = validation_file(chain, store, spec, task_id, key, chain_id)
    except ValidationUnavailable as exc:
        result.add("validation", False, f"{exc}: nothing can be recomputed")
        return result
    events = chain.events(ValidationRevealed, task_id=task_id)
    if file is None or not events:
        result.add("validation", False, "the validation set is not revealed")
        return result
    salt = events[0].salt
    commit_ok = validation_commitment(sha256(file), salt) == task.validation_commit
    result.add("validation", commit_ok, f"sha256 {sha256(file).hex()[:16]}... vs the commitment")

    posted = posted_roots(chain, task_id)
    if not posted:
        result.add("reports", False, "no payout root posted")
        return result
    records = nodes_by_id(chain, task_id)
    left_out = unconfirmed(chain, task_id, records)
    joined = chain.round_joins(task_id)
    for root in posted:
        who = f"{root.evaluator[:10]}..."
        check = read_report(store, root, task_id)
        leaves = "" if check.report is None else f"{len(check.report.payouts)} leaves "
        result.add(f"{who} report", check.matches, check.reason or f"its {leaves}match its root")
        if check.report is None:
            continue  # nothing to recompute from: the next report is checked all the same
        report = check.report
        tree = {(r.node_id, r.kind, r.author.lower(), r.parents) for r in records.values()}
        claimed = {(n.node_id, n.kind, n.author.lower(), n.parents) for n in report.nodes}
        result.add(f"{who} tree", tree == claimed, f"{len(claimed)} nodes vs {len(tree)} on-chain")
        _check_unconfirmed(report, left_out, who, result)
        _check_delivery(store, spec, records, report, root.evaluator, who, result)
        try:
            scores = report.scores()
            joins = join_refunds(joined, records, scores, spec, task.deposit)
            evidence = report.evidence()
            best = ceiling(load_validation(file, spec), spec.metric)
            if evidence.ceiling != best:
                raise SpecError(f"its ceiling {evidence.ceiling} is not the file's {best}")
            payouts = compute_payouts(
                list(records.values()),
                scores,
                evidence,
                spec,
                task.bounty,
                task.deposit,
                joins,
            )
            _, recomputed_root, recomputed_total = payout_entries(payouts)
        except (MarketplaceError, ValueError, LookupError, ArithmeticError) as exc:
            # The reward rule refuses the report's scores (a lying report): a failed check.
            result.add(f"{who} root", False, f"the reward rule refuses the report: {exc}")
        else:
            result.add(
                f"{who} root",
                recomputed_root == root.root and recomputed_total == root.total,
                f"recomputed {recomputed_root.hex()[:16]}... ({recomputed_total}) vs posted "
                f"{root.root.hex()[:16]}... ({root.total})",
            )
        result.add(
            f"{who} validation file",
            report.validation_digest == sha256(file).hex(),
            "the report scored the revealed file",
        )
        _rescore(chain, store, task_id, chain_id, report, file, account, key, left_out, result)
    return result


def _check_unconfirmed(
    report: PayoutReport, left_out: Mapping[int, Score], who: str, result: Verification
) -> None:
    """The report left out exactly the merges the quorum had not confirmed by the reveal."""
    said = {n.node_id: n.reason for n in report.nodes if n.reason.startswith(UNCONFIRMED)}
    expected = {node_id: score.reason for node_id, score in left_out.items()}
    result.add(
        f"{who} unconfirmed merges",
        said == expected,
        f"left out {sorted(said)}; unconfirmed on-chain at the reveal: {sorted(expected)}",
    )


def _check_delivery(
    store: BlobStore,
    spec: TaskSpec,
    records: Mapping[int, NodeRecord],
    report: PayoutReport,
    evaluator: str,
    who: str,
    result: Verification,
) -> None:
    """The report delivers to the sponsor the weights of the winner it scored (no key needed:
    a merge's plaintext digest is on the chain, an architecture's bundle is public)."""
    winner = report.winner
    try:
        scored = None
        if winner is not None and winner in records:
            arch = architecture_spec(records, winner, store, spec.max_blob_bytes)[2]
            scored = scored_digest(records[winner], arch)
        reason = delivery_mismatch(report.delivery, winner, spec, evaluator, scored, store)
    except MarketplaceError as exc:
        reason = f"the winner's weights cannot be told: {exc}"
    shown = "nothing to deliver" if report.delivery is None else f"node {winner}'s weights"
    result.add(f"{who} delivery", reason is None, reason or f"{shown}, sealed to the sponsor")


def _rescore(
    chain: ChainClient,
    store: BlobStore,
    task_id: int,
    chain_id: int,
    report: PayoutReport,
    file: bytes,
    account: LocalAccount | None,
    key: X25519KeyPair | None,
    left_out: Mapping[int, Score],
    result: Verification,
) -> None:
    """Score again every node this verifier can read, and compare with the report (a merge
    in `left_out`, unconfirmed, is decided from the chain alone, as the evaluator did)."""
    if key is None:  # an evaluator's or a sponsor's account reads with its account-wide key;
        # with no account, a key nothing is sealed to: the public architectures alone are read
        key = X25519KeyPair.generate() if account is None else account_key(account)
    scorer = Scorer(chain, store, key, chain_id)
    view = scorer.view(task_id)
    try:
        dataset = load_validation(file, view.spec)  # the rows the evaluators scored
    except DataFormatError as exc:
        result.add("scores", False, f"the validation file does not load: {exc}")
        return
    reported = {n.node_id: n for n in report.nodes}
    mismatches: list[str] = []
    rescored: list[int] = []  # this report's: `result` holds every report's, each node once
    unreadable: list[int] = []
    for node_id, record in sorted(view.records.items()):
        if record.kind is not NodeKind.ARCHITECTURE and node_id not in left_out:
            try:
                blob = store.get(record.cid, view.spec.max_blob_bytes)
            except (BlobNotFound, BlobTooLarge, IntegrityError):
                blob = b""  # the evaluator's verdict on it is re-derived only if readable
            if not can_read(blob, scorer.key):
                unreadable.append(node_id)
                continue
        mine = (False, 0)
        if node_id not in left_out:
            score = scorer.node_result(view, node_id, dataset)
            mine = (score.valid, score.value)
        theirs = (reported[node_id].valid, reported[node_id].score) if node_id in reported else None
        rescored.append(node_id)
        if mine != theirs:
            mismatches.append(f"node {node_id}: {mine} vs reported {theirs}")
    result.rescored = sorted({*result.rescored, *rescored})
    result.unreadable = sorted({*result.unreadable, *unreadable})
    result.add(
        "scores",
        not mismatches,
        f"{len(rescored)} nodes re-scored, {len(unreadable)} sealed from this key"
        + (": " + "; ".join(mismatches) if mismatches else ""),
    )
    _rescore_evidence(scorer, view, report, dataset, set(result.unreadable), result)


def _rescore_evidence(
    scorer: Scorer,
    view: TaskView,
    report: PayoutReport,
    dataset: Dataset,
    unreadable: set[int],
    result: Verification,
) -> None:
    """Score again every coalition and added score of the report whose updates this verifier
    can read: what the Shapley values, and so the data and compute shares, are replayed from."""
    claims: list[tuple[int, Coalition, int]] = []
    try:
        for merge_id, table in report.coalitions.items():
            claims += [(merge_id, coalition_of(key), value) for key, value in table.items()]
    except ValueError as exc:
        result.add(f"{report.evaluator[:10]}... coalitions", False, str(exc))
        return
    scores = report.scores()
    frontier = Frontier(view.records, scores, 0)
    for update_id, value in report.added.items():
        if update_id in view.records and update_id in scores:  # else the root check fails
            left_out = frontier.added_coalition(update_id)
            if left_out is not None:
                claims.append((*left_out, value))
    mismatches, checked = [], 0
    for merge_id, coalition, value in claims:
        if merge_id not in view.records or set(coalition) & unreadable:
            continue
        try:
            mine: int | str = averager(scorer, view, frontier, merge_id, dataset)(coalition)
        except (*NODE_ERRORS, AssertionError, KeyError) as exc:
            mine = f"unscorable ({exc})"
        checked += 1
        if mine != value:
            mismatches.append(f"merge {merge_id} {list(coalition)}: {mine} vs reported {value}")
    result.add(
        f"{report.evaluator[:10]}... coalitions",
        not mismatches,
        f"{checked} of {len(claims)} coalition scores re-scored"
        + (": " + "; ".join(mismatches[:5]) if mismatches else ""),
    )
