"""The reward rule (DESIGN.md, "Credit for verified improvement") as pure functions of the
model DAG, the scores and what the evaluator measured besides them (`Evidence`).

Credit is improvement over the frontier: the best confirmed model of an architecture when a
round opened (`frontier.Frontier`), not the parent a submitter names, so rebuilding on an old
node earns nothing. The sponsor's model is the best confirmed merge (`find_winner`); the winner's
improvement over its architecture is credited back through the rounds that built it, each
round weighted by the share of the remaining error it closed (so the first steps from random
weights do not dwarf the later ones), and within a round to the merge's updates by their
Shapley values (`marketplace.rules.shapley`: copies split one value, junk gets none). Declared
samples steer nothing: merges weigh updates equally (or clipped to the median), and the compute
pool pays each merge's FLOPs counted the same way, split by positive contribution. An update
that improved nothing and hurt its round forfeits its deposit (`_harmful`). No account takes
more than `max_account_share_bps` of the data pool.

Everything is integer arithmetic in wei (or token units), so every evaluator computes the same
leaves bit for bit. Each pool is split with `apportion`: floor(pool * weight / total weight) per
account; the rounding dust, the capped excess, pools nobody earns and forfeited deposits stay
in escrow for the sponsor to reclaim. So the total never exceeds the bounty plus the deposits.

Only confirmed merges count. A merge that fewer than the task's quorum of evaluators had
confirmed by the reveal (when merges stop being posted) is not scored: it comes to
`compute_payouts` as an invalid score whose reason starts with `UNCONFIRMED`
(`unconfirmed_merges`), so, like any invalid node, it cannot win, is nobody's frontier and
credits nobody. The report shows it with that reason, and `verify` recomputes the set from
the chain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from marketplace.errors import DagError
from marketplace.rules.dag import architecture_of, check_scores, checksum, index_dag, is_valid
from marketplace.rules.frontier import Frontier
from marketplace.rules.merge import MergeRule, merge_counts
from marketplace.rules.messages import PAYOUT_PARTS, NodeKind, NodeRecord, Payout, Score, TaskSpec
from marketplace.rules.shapley import Coalition

BPS = 10_000
UNCONFIRMED = "unconfirmed"  # the reason code of a merge short of the quorum
CREDIT_SCALE = 1_000_000  # a round that closes all the remaining error is worth this much credit

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Evidence:
    """What the evaluator measured on the validation set besides each node's score.

    Attributes:
        coalitions: merge id -> coalition of its valid update parents (sorted ids) -> the
            score of their average: what the merge's Shapley values are replayed from (the
            empty coalition is the merge's frontier, computed here from the scores). Needed
            for every valid merge that gained, but a secure aggregation round's.
        added: update id -> the score of its round's merge with it added, for every valid
            update of a round in clear that its round's merge left out.
        flops_per_sample: architecture id -> training FLOPs per sample of that architecture.
        ceiling: the best score possible on the validation set (its rows, for accuracy; 0
            for negated SSE): how much error was left when a round opened.
    """

    coalitions: Mapping[int, Mapping[Coalition, int]] = field(default_factory=dict)
    added: Mapping[int, int] = field(default_factory=dict)
    flops_per_sample: Mapping[int, int] = field(default_factory=dict)
    ceiling: int = 0


def apportion(amount: int, weights: Mapping[K, int]) -> dict[K, int]:
    """Split `amount` in proportion to `weights`: key k gets floor(amount * w_k / sum(w)).

    Keys with a zero weight get nothing; with no positive weight nobody gets anything. The sum
    of the parts is at most `amount`, short of it by less than one unit per key.
    """
    if amount < 0 or any(weight < 0 for weight in weights.values()):
        raise ValueError("amounts and weights must not be negative")
    total = sum(weights.values())
    if total == 0:
        return {}
    return {key: amount * weight // total for key, weight in weights.items() if weight > 0}


def compute_payouts(
    nodes: Sequence[NodeRecord],
    scores: Mapping[int, Score],
    evidence: Evidence,
    spec: TaskSpec,
    bounty: int,
    deposit: int,
    join_refunds: Mapping[str, int] | None = None,
) -> list[Payout]:
    """What each account is owed by a task whose nodes are scored (the module docstring).

    Args:
        nodes: every node of the task (architectures, updates, merges), in any order.
        scores: node id -> the evaluator's verdict, one for every node; a merge short of the
            quorum must come as its `unconfirmed_merges` score.
        evidence: the coalition scores, added scores, FLOPs and ceiling (`Evidence`).
        spec: the task spec (reward split, merge rule, share cap, cap on declared samples).
        bounty: the escrowed bounty.
        deposit: the deposit every architecture and update carried.
        join_refunds: account -> the secure aggregation join deposits refunded to it
            (`aggregation.join_refunds`); paid with its deposits.

    Returns:
        One `Payout` per account that is owed money or reputation points, sorted by address
        (as a 160-bit number), accounts in checksum form.

    Raises:
        DagError: the DAG or the inputs are inconsistent (duplicate id, unknown parent, cycle,
            a score or coalition for a missing node, a node without a score, a coalition or
            an added score the rule needs and does not have, a score above the ceiling...).
        ValueError: a negative bounty or deposit.
    """
    if bounty < 0 or deposit < 0:
        raise ValueError("bounty and deposit must not be negative")
    by_id = index_dag(nodes)
    check_scores(by_id, scores)
    _check_evidence(by_id, scores, evidence)
    frontier = Frontier(by_id, scores, spec.min_gain)
    shares = {
        merge_id: _merge_shares(by_id[merge_id], by_id, frontier, evidence, spec)
        for merge_id in frontier.gaining_merges()
    }
    split = spec.split
    expertise: dict[str, int] = {}
    points: dict[str, int] = {}
    data: dict[str, int] = {}
    best = find_winner(nodes, scores)
    if best is not None:
        expertise = {
            by_id[architecture_of(by_id, best)].author: bounty * split.expertise_bps // BPS
        }
        points = _trajectory_credit(by_id, best, frontier, shares, evidence.ceiling)
        pool = bounty * split.data_bps // BPS
        cap = pool * spec.max_account_share_bps // BPS
        data = {a: min(amount, cap) for a, amount in apportion(pool, points).items()}
    compute = apportion(
        bounty * split.compute_bps // BPS,
        _compute_weights(by_id, shares, evidence.flops_per_sample, spec),
    )
    deposits: dict[str, int] = defaultdict(int)
    for node in by_id.values():
        valid = node.kind != NodeKind.MERGE and scores[node.node_id].valid
        if valid and not _harmful(node, by_id, scores, frontier, evidence, spec):
            deposits[node.author] += deposit
    for account, amount in (join_refunds or {}).items():
        deposits[checksum(account)] += amount

    return _payouts(points, expertise=expertise, data=data, compute=compute, deposits=deposits)


def unconfirmed_merges(
    nodes: Iterable[NodeRecord], confirmations: Mapping[int, int], quorum: int
) -> dict[int, Score]:
    """Merge id -> its invalid score, for every merge with fewer than `quorum` confirmations
    (`confirmations`: merge id -> count; a merge missing from it has none). These scores
    replace the merges' verdicts before `compute_payouts` (see the module docstring)."""
    return {
        node.node_id: Score(
            node_id=node.node_id,
            valid=False,
            reason=f"{UNCONFIRMED}: {count} of the {quorum} confirmations the quorum needs",
        )
        for node in nodes
        if node.kind == NodeKind.MERGE and (count := confirmations.get(node.node_id, 0)) < quorum
    }


def find_winner(nodes: Sequence[NodeRecord], scores: Mapping[int, Score]) -> int | None:
    """The sponsor's model: the valid merge or architecture with the best score, ties to the
    highest id (the latest: a holding merge that scores as well as the best one has learned
    from more rounds); None if there is none. An update is never the winner: it is one
    owner's model, and the round's merge already holds it if it adds to the others."""
    valid = [
        node.node_id
        for node in nodes
        if node.kind != NodeKind.UPDATE and is_valid(scores, node.node_id)
    ]
    return max(valid, key=lambda node_id: (scores[node_id].value, node_id), default=None)


def node_gains(nodes: Sequence[NodeRecord], scores: Mapping[int, Score]) -> dict[int, int]:
    """Node id -> how far it improved on its frontier (0 if it did not, or is an architecture
    or invalid): what the report shows next to each score."""
    by_id = {node.node_id: node for node in nodes}
    frontier = Frontier(by_id, scores, 0)
    return {node.node_id: frontier.gain(node.node_id) for node in nodes}


def _merge_shares(
    merge: NodeRecord,
    by_id: Mapping[int, NodeRecord],
    frontier: Frontier,
    evidence: Evidence,
    spec: TaskSpec,
) -> dict[int, int]:
    """Update parent id -> its (scaled) Shapley value in `merge`, replayed from the evidence's
    coalition scores; a secure aggregation merge's parents are never seen alone, so each
    counts once (a useless one is paid like a good one there: README)."""
    valid = frontier.members(merge.node_id)
    if spec.aggregates(merge.round):
        return dict.fromkeys(valid, 1)
    base = frontier.of(merge.node_id)
    table = evidence.coalitions.get(merge.node_id, {})

    def value(coalition: Coalition) -> int:
        if not coalition:
            assert base is not None  # a gaining merge has a frontier
            return base
        if coalition not in table:
            raise DagError(f"merge {merge.node_id} has no score for coalition {list(coalition)}")
        return table[coalition]

    return MergeRule.of(spec).contributions(valid, value).values


def _trajectory_credit(
    by_id: Mapping[int, NodeRecord],
    winner: int,
    frontier: Frontier,
    shares: Mapping[int, Mapping[int, int]],
    ceiling: int,
) -> dict[str, int]:
    """Author -> credit for the winner's improvement over its architecture: every round up to
    the winner's whose best merge raised the frontier, weighted by the share of the remaining
    error it closed (its gain x CREDIT_SCALE / (ceiling - frontier)), split among that
    merge's updates by positive Shapley value. These are the data weights and the points."""
    if by_id[winner].kind is not NodeKind.MERGE:
        return {}
    architecture = architecture_of(by_id, winner)
    credit: dict[str, int] = defaultdict(int)
    for round_index in range(by_id[winner].round + 1):
        merge = winner if round_index == by_id[winner].round else None
        merge = merge or frontier.round_merge(architecture, round_index)
        if merge is None or merge not in shares:
            continue  # no merge, or one that did not rise above the frontier by min_gain
        base = frontier.at(architecture, round_index)
        assert base is not None
        if frontier.scores[merge].value > ceiling:
            raise DagError(f"merge {merge} scores above the ceiling {ceiling}")
        weight = frontier.gain(merge) * CREDIT_SCALE // (ceiling - base)
        positive = {p: v for p, v in shares[merge].items() if v > 0}
        for parent, part in apportion(weight, positive).items():
            credit[by_id[parent].author] += part
    return {author: amount for author, amount in credit.items() if amount > 0}


def _compute_weights(
    by_id: Mapping[int, NodeRecord],
    shares: Mapping[int, Mapping[int, int]],
    flops_per_sample: Mapping[int, int],
    spec: TaskSpec,
) -> dict[str, int]:
    """Author -> the training FLOPs credited to them: each merge that gained pays the FLOPs of
    its positive contributors, each counted as the merge weighs it (`merge_counts`: once with
    equal weights, so declared samples change nothing; its declared samples capped at
    `max_samples_credited` and clipped to the median with "median"), split among them by
    Shapley value."""
    flops: dict[str, int] = defaultdict(int)
    for merge_id, values in sorted(shares.items()):
        positive = {p: v for p, v in values.items() if v > 0}
        if not positive:
            continue
        architecture = architecture_of(by_id, merge_id)
        per_sample = flops_per_sample.get(architecture)
        if per_sample is None or per_sample < 0:
            raise DagError(f"no valid FLOPs per sample for architecture {architecture}")
        members = sorted(values)
        declared = [min(by_id[p].samples, spec.max_samples_credited) for p in members]
        counts = dict(zip(members, merge_counts(declared, spec.merge_weighting), strict=True))
        total = per_sample * sum(counts[p] for p in positive)
        for parent, part in apportion(total, positive).items():
            flops[by_id[parent].author] += part
    return flops


def _harmful(
    node: NodeRecord,
    by_id: Mapping[int, NodeRecord],
    scores: Mapping[int, Score],
    frontier: Frontier,
    evidence: Evidence,
    spec: TaskSpec,
) -> bool:
    """Whether a valid update hurt its round in clear, and forfeits its deposit: it improved
    nothing on its own (it scores under its frontier + `min_gain`), its round's merge left it
    out, and the merge scores at least `min_gain` lower with it added; or, in a round with no
    merge, it scores at least `min_gain` below its frontier. An honest update left out only
    because the merge is better without it (two models trained apart from random weights)
    improved on its own: it keeps its deposit."""
    if node.kind is not NodeKind.UPDATE or spec.aggregates(node.round):
        return False
    architecture = architecture_of(by_id, node.node_id)
    merge = frontier.round_merge(architecture, node.round)
    if merge is None:
        base = frontier.of(node.node_id)
        return base is not None and scores[node.node_id].value <= base - spec.min_gain
    base = frontier.of(node.node_id)
    improved = base is None or scores[node.node_id].value >= base + spec.min_gain
    if improved or node.node_id in by_id[merge].parents:
        return False
    if node.node_id not in evidence.added:
        raise DagError(f"update {node.node_id} was left out of merge {merge}: no added score")
    return evidence.added[node.node_id] <= scores[merge].value - spec.min_gain


def _payouts(points: Mapping[str, int], **parts: Mapping[str, int]) -> list[Payout]:
    """One `Payout` per account owed anything, merged by checksum address, sorted by address;
    `parts`: each of `PAYOUT_PARTS` -> account -> amount."""
    if set(parts) != set(PAYOUT_PARTS):
        raise ValueError(f"the payout parts are {PAYOUT_PARTS}, not {tuple(parts)}")
    owed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for part, amounts in (*parts.items(), ("points", points)):
        for account, amount in amounts.items():
            owed[checksum(account)][part] += amount
    payouts = []
    for account in sorted(owed, key=lambda a: int(a, 16)):
        split = {part: owed[account][part] for part in PAYOUT_PARTS}
        amount, credited = sum(split.values()), owed[account]["points"]
        if amount == 0 and credited == 0:
            continue
        payouts.append(Payout(account=account, amount=amount, points=credited, **split))
    return payouts


def _check_evidence(
    by_id: Mapping[int, NodeRecord], scores: Mapping[int, Score], evidence: Evidence
) -> None:
    for merge_id, table in evidence.coalitions.items():
        merge = by_id.get(merge_id)
        if merge is None or merge.kind != NodeKind.MERGE:
            raise DagError(f"coalition scores for node {merge_id}, which is not a merge")
        stray = sorted({p for coalition in table for p in coalition} - set(merge.parents))
        if stray:
            raise DagError(f"coalition scores name {stray}, not parents of merge {merge_id}")
    for update_id in evidence.added:
        if update_id not in by_id or by_id[update_id].kind != NodeKind.UPDATE:
            raise DagError(f"an added score for node {update_id}, which is not an update")
    if any(score.valid and score.value > evidence.ceiling for score in scores.values()):
        raise DagError(f"a score is above the validation set's ceiling {evidence.ceiling}")
