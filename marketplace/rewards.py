"""The reward rule (DESIGN.md) as pure functions of the model DAG, the scores and the split.

Everything is integer arithmetic in wei (or token units), so every evaluator computes the same
leaves bit for bit. Each pool is split with `apportion`: floor(pool * weight / total weight) per
account, an account's weight being the sum over its nodes; the rounding dust (less than one unit
per account and pool) is paid to nobody and stays in escrow for the sponsor to reclaim, as do
pools nobody earns and forfeited deposits. So the total never exceeds the pools' floors plus the
refunded deposits, which never exceeds the bounty plus the deposits.

Only confirmed merges count. A merge that fewer than the task's quorum of evaluators had
confirmed by the reveal (when merges stop being posted) is not scored: it comes to
`compute_payouts` as an invalid score whose reason starts with `UNCONFIRMED`
(`unconfirmed_merges`), so, like any invalid node, it cannot win, serves as nobody's gain
baseline, and neither credits nor keeps (for compute) its parents; its parents earn what they
earn without it. The report shows it with that reason, and `verify` recomputes the set from
the chain. (Excluding such merges from the tree instead would make the report's node list
differ from the chain's, which `verify` checks.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from eth_utils.address import to_checksum_address

from marketplace.crypto import PayoutLeaf
from marketplace.errors import DagError
from marketplace.messages import NodeKind, NodeRecord, Payout, Score, TaskSpec

BPS = 10_000
ROOT = 0  # the task: the parent of every architecture
UNCONFIRMED = "unconfirmed"  # the reason code of a merge short of the quorum

K = TypeVar("K", bound=Hashable)


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
    loo_scores: Mapping[int, Mapping[int, int]],
    flops_per_sample: Mapping[int, int],
    spec: TaskSpec,
    bounty: int,
    deposit: int,
    join_refunds: Mapping[str, int] | None = None,
) -> list[Payout]:
    """What each account is owed by a task whose nodes are scored: DESIGN.md's reward rule.

    Args:
        nodes: every node of the task (architectures, updates, merges), in any order.
        scores: node id -> the evaluator's verdict, one for every node; a merge short of the
            quorum must come as its `unconfirmed_merges` score.
        loo_scores: merge id -> parent id -> score of that merge without that parent
            (`MergeResult.loo_scores`); required for every valid merge but those of secure
            aggregation rounds (`aggregate_shares`).
        flops_per_sample: architecture id -> training FLOPs per sample of that architecture;
            required for every architecture that has an update earning compute.
        spec: the task spec (reward split, cap on declared samples).
        bounty: the escrowed bounty.
        deposit: the deposit every architecture and update carried.
        join_refunds: account -> the secure aggregation join deposits refunded to it
            (`aggregation.join_refunds`); paid with its deposits.

    Returns:
        One `Payout` per account that is owed money or reputation points, sorted by address
        (as a 160-bit number), accounts in checksum form.

    Raises:
        DagError: the DAG or the inputs are inconsistent (duplicate id, unknown parent, cycle,
            a score or leave-one-out entry for a missing node, a node without a score...).
        ValueError: a negative bounty or deposit.
    """
    if bounty < 0 or deposit < 0:
        raise ValueError("bounty and deposit must not be negative")
    by_id = _index(nodes)
    _check_scores(by_id, scores)
    _check_loo(by_id, scores, loo_scores, spec)
    gains = node_gains(nodes, scores)
    split = spec.split
    expertise: dict[str, int] = {}
    data: dict[str, int] = {}
    points: dict[str, int] = {}

    best = find_winner(nodes, scores)
    if best is not None:
        architecture = architecture_of(by_id, best)
        if scores[architecture].valid:
            expertise = {by_id[architecture].author: bounty * split.expertise_bps // BPS}
        points = _credited(by_id, scores, loo_scores, gains, _ancestors(by_id, best), spec)
        data = apportion(bounty * split.data_bps // BPS, points)

    compute = apportion(
        bounty * split.compute_bps // BPS,
        _training_flops(by_id, scores, gains, flops_per_sample, spec.max_samples_credited),
    )
    deposits: dict[str, int] = defaultdict(int)
    for node in by_id.values():
        if node.kind != NodeKind.MERGE and scores[node.node_id].valid:
            deposits[node.author] += deposit
    for account, amount in (join_refunds or {}).items():
        deposits[_checksum(account)] += amount

    return _payouts(expertise, data, compute, deposits, points)


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


def payout_leaves(payouts: Sequence[Payout]) -> list[PayoutLeaf]:
    """The Merkle leaves of `payouts` for `crypto.payout_tree`: leaf i has index i."""
    return [
        PayoutLeaf(index=i, account=p.account, amount=p.amount, points=p.points)
        for i, p in enumerate(payouts)
    ]


def find_winner(nodes: Sequence[NodeRecord], scores: Mapping[int, Score]) -> int | None:
    """The valid node with the best score, ties to the lowest id (the earliest); None if none."""
    valid = [node.node_id for node in nodes if _is_valid(scores, node.node_id)]
    return min(valid, key=lambda node_id: (-scores[node_id].value, node_id), default=None)


def node_gains(nodes: Sequence[NodeRecord], scores: Mapping[int, Score]) -> dict[int, int]:
    """Node id -> its gain: how far it improved on what it started from (0 if it did not).

    An update's gain is over its parent; a merge's is over the best of its parents and their
    parents (a merge is credited for what averaging added above its best input). Only valid
    nodes count, as gainers and as baselines: a node none of whose baselines is valid has no
    verified improvement, so no gain. An architecture (a child of the root) has no gain.
    """
    by_id = {node.node_id: node for node in nodes}
    gains: dict[int, int] = {}
    for node in nodes:
        baseline: set[int] = set()
        if node.kind in (NodeKind.UPDATE, NodeKind.MERGE):
            baseline.update(p for p in node.parents if p != ROOT)
        if node.kind == NodeKind.MERGE:
            for parent in node.parents:
                if parent in by_id:
                    baseline.update(p for p in by_id[parent].parents if p != ROOT)
        valid_baseline = [scores[p].value for p in baseline if _is_valid(scores, p)]
        if not _is_valid(scores, node.node_id) or not valid_baseline:
            gains[node.node_id] = 0
        else:
            gains[node.node_id] = max(0, scores[node.node_id].value - max(valid_baseline))
    return gains


def merge_shares(
    merge: NodeRecord,
    gain: int,
    nodes: Mapping[int, NodeRecord],
    scores: Mapping[int, Score],
    loo_scores: Mapping[int, Mapping[int, int]],
) -> dict[int, int]:
    """Parent id -> its part of `gain`, the merge's gain, by leave-one-out.

    Parent i weighs max(0, score(merge) - score(merge without i)); when every weight is zero,
    its declared samples. Only the valid updates the merge averaged share (an architecture or a
    merge as parent, or an invalid parent, gets nothing). Split by `apportion`.
    """
    merge_score = scores[merge.node_id].value
    sharing = [
        p for p in merge.parents if _is_valid(scores, p) and nodes[p].kind == NodeKind.UPDATE
    ]
    weights = {p: max(0, merge_score - loo_scores[merge.node_id][p]) for p in sharing}
    if not any(weights.values()):
        weights = {p: nodes[p].samples for p in sharing}
    return apportion(gain, weights)


def aggregate_shares(
    merge: NodeRecord, gain: int, nodes: Mapping[int, NodeRecord], cap: int
) -> dict[int, int]:
    """Parent id -> its part of the gain of a merge computed from encrypted updates (a secure
    aggregation round): by declared samples, each capped at `cap` (the task's
    `max_samples_credited`). Nobody sees an update alone, so leave-one-out cannot weigh them:
    an owner who declares more rows than it trained on gains up to the cap, and a useless or
    poisoned update is paid like a good one, its harm bounded only by clipping (README)."""
    if cap <= 0:
        raise ValueError("the samples cap must be positive")
    sharing = [p for p in merge.parents if p in nodes and nodes[p].kind == NodeKind.UPDATE]
    return apportion(gain, {p: min(nodes[p].samples, cap) for p in sharing})


def _credited(
    by_id: Mapping[int, NodeRecord],
    scores: Mapping[int, Score],
    loo_scores: Mapping[int, Mapping[int, int]],
    gains: Mapping[int, int],
    lineage: set[int],
    spec: TaskSpec,
) -> dict[str, int]:
    """Author -> the gains credited to them over `lineage`: their updates' own gains plus their
    shares of the merges' gains (by leave-one-out; by capped samples for a secure aggregation
    merge). These are the data weights and the points."""
    credited: dict[str, int] = defaultdict(int)
    for node_id in sorted(lineage):
        node = by_id[node_id]
        if node.kind == NodeKind.UPDATE:
            credited[node.author] += gains[node_id]
        elif node.kind == NodeKind.MERGE and gains[node_id] > 0:
            if spec.aggregates(node.round):
                shares = aggregate_shares(node, gains[node_id], by_id, spec.max_samples_credited)
            else:
                shares = merge_shares(node, gains[node_id], by_id, scores, loo_scores)
            for parent, share in shares.items():
                credited[by_id[parent].author] += share
    return {author: gain for author, gain in credited.items() if gain > 0}


def _training_flops(
    by_id: Mapping[int, NodeRecord],
    scores: Mapping[int, Score],
    gains: Mapping[int, int],
    flops_per_sample: Mapping[int, int],
    max_samples: int,
) -> dict[str, int]:
    """Author -> the training FLOPs of their valid updates that gained or were kept in a valid
    merge: FLOPs per sample of the architecture x declared samples (capped at `max_samples`)."""
    kept = {
        parent
        for node in by_id.values()
        if node.kind == NodeKind.MERGE and _is_valid(scores, node.node_id)
        for parent in node.parents
    }
    flops: dict[str, int] = defaultdict(int)
    for node_id in sorted(by_id):
        node = by_id[node_id]
        if node.kind != NodeKind.UPDATE or not _is_valid(scores, node_id):
            continue
        if gains[node_id] == 0 and node_id not in kept:
            continue
        architecture = architecture_of(by_id, node_id)
        per_sample = flops_per_sample.get(architecture)
        if per_sample is None or per_sample < 0:
            raise DagError(f"no valid FLOPs per sample for architecture {architecture}")
        flops[node.author] += per_sample * min(node.samples, max_samples)
    return flops


def _payouts(
    expertise: Mapping[str, int],
    data: Mapping[str, int],
    compute: Mapping[str, int],
    deposits: Mapping[str, int],
    points: Mapping[str, int],
) -> list[Payout]:
    """One `Payout` per account owed anything, merged by checksum address, sorted by address."""
    parts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for field, amounts in (
        ("expertise", expertise),
        ("data", data),
        ("compute", compute),
        ("deposits", deposits),
        ("points", points),
    ):
        for account, amount in amounts.items():
            parts[_checksum(account)][field] += amount
    payouts = []
    for account in sorted(parts, key=lambda a: int(a, 16)):
        p = parts[account]
        amount = p["expertise"] + p["data"] + p["compute"] + p["deposits"]
        if amount == 0 and p["points"] == 0:
            continue
        payouts.append(
            Payout(
                account=account,
                amount=amount,
                points=p["points"],
                expertise=p["expertise"],
                data=p["data"],
                compute=p["compute"],
                deposits=p["deposits"],
            )
        )
    return payouts


# ------------------------------------------------------------------ the DAG and its checks


def _index(nodes: Sequence[NodeRecord]) -> dict[int, NodeRecord]:
    """Node id -> node (author in checksum form), after checking ids, kinds, parents and
    acyclicity."""
    by_id: dict[int, NodeRecord] = {}
    for node in nodes:
        if node.node_id <= ROOT:
            raise DagError(f"node id {node.node_id} is not positive")
        if node.node_id in by_id:
            raise DagError(f"node {node.node_id} is listed twice")
        if node.samples < 0:
            raise DagError(f"node {node.node_id} declares {node.samples} samples")
        by_id[node.node_id] = node.model_copy(update={"author": _checksum(node.author)})
    for node in by_id.values():
        _check_parents(node, by_id)
    _check_acyclic(by_id)
    return by_id


def _check_parents(node: NodeRecord, by_id: Mapping[int, NodeRecord]) -> None:
    where = f"node {node.node_id} ({node.kind.name.lower()})"
    if node.kind == NodeKind.ARCHITECTURE:
        if node.parents not in ((), (ROOT,)):
            raise DagError(f"{where} must be a child of the root, not of {node.parents}")
        return
    if node.kind == NodeKind.UPDATE and len(node.parents) != 1:
        raise DagError(f"{where} must have exactly one parent, not {node.parents}")
    if node.kind == NodeKind.MERGE and not node.parents:
        raise DagError(f"{where} has no parents")
    if node.kind not in (NodeKind.UPDATE, NodeKind.MERGE):
        raise DagError(f"{where} has no kind")
    if len(set(node.parents)) != len(node.parents):
        raise DagError(f"{where} lists a parent twice: {node.parents}")
    for parent in node.parents:
        if parent not in by_id:
            raise DagError(f"{where} has parent {parent}, which is not in the tree")


def _check_acyclic(by_id: Mapping[int, NodeRecord]) -> None:
    """Raise DagError if following parents ever returns to a node (iterative three-colour DFS)."""
    done: set[int] = set()
    for start in sorted(by_id):
        if start in done:
            continue
        on_path: set[int] = {start}
        stack: list[tuple[int, list[int]]] = [(start, _parents(by_id, start))]
        while stack:
            node_id, pending = stack[-1]
            if not pending:
                stack.pop()
                on_path.discard(node_id)
                done.add(node_id)
                continue
            parent = pending.pop()
            if parent in on_path:
                raise DagError(f"the tree has a cycle through node {parent}")
            if parent not in done:
                on_path.add(parent)
                stack.append((parent, _parents(by_id, parent)))


def _check_scores(by_id: Mapping[int, NodeRecord], scores: Mapping[int, Score]) -> None:
    for node_id, score in scores.items():
        if node_id not in by_id:
            raise DagError(f"a score for node {node_id}, which is not in the tree")
        if score.node_id != node_id:
            raise DagError(f"the score under node {node_id} is for node {score.node_id}")
    missing = sorted(set(by_id) - set(scores))
    if missing:
        raise DagError(f"no score for nodes {missing}")


def _check_loo(
    by_id: Mapping[int, NodeRecord],
    scores: Mapping[int, Score],
    loo_scores: Mapping[int, Mapping[int, int]],
    spec: TaskSpec,
) -> None:
    for merge_id, entries in loo_scores.items():
        merge = by_id.get(merge_id)
        if merge is None or merge.kind != NodeKind.MERGE:
            raise DagError(f"leave-one-out scores for node {merge_id}, which is not a merge")
        stray = sorted(set(entries) - set(merge.parents))
        if stray:
            raise DagError(f"leave-one-out scores for {stray}, not parents of merge {merge_id}")
    for node in by_id.values():
        needs_loo = not spec.aggregates(node.round)  # aggregate merges share by samples
        if node.kind == NodeKind.MERGE and scores[node.node_id].valid and needs_loo:
            missing = sorted(set(node.parents) - set(loo_scores.get(node.node_id, {})))
            if missing:
                raise DagError(f"merge {node.node_id} has no leave-one-out score for {missing}")


def _parents(by_id: Mapping[int, NodeRecord], node_id: int) -> list[int]:
    return [p for p in by_id[node_id].parents if p != ROOT]


def _ancestors(by_id: Mapping[int, NodeRecord], node_id: int) -> set[int]:
    """`node_id` and every node reachable from it through parents."""
    seen = {node_id}
    stack = [node_id]
    while stack:
        for parent in _parents(by_id, stack.pop()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def architecture_of(by_id: Mapping[int, NodeRecord], node_id: int) -> int:
    """The architecture under `node_id`, following each node's first (lowest) parent, as the
    contract records a merge's parent."""
    node = by_id[node_id]
    while node.kind != NodeKind.ARCHITECTURE:
        node = by_id[min(node.parents)]
    return node.node_id


def updates_by(by_id: Mapping[int, NodeRecord], author: str, round_index: int) -> list[int]:
    """The ids of `author`'s updates in round `round_index`, in submission order: the first is
    the one a secure aggregation group counts, those past a cap are over it."""
    author = author.lower()
    return sorted(
        node.node_id
        for node in by_id.values()
        if node.kind is NodeKind.UPDATE
        and node.round == round_index
        and node.author.lower() == author
    )


def _is_valid(scores: Mapping[int, Score], node_id: int) -> bool:
    score = scores.get(node_id)
    return score is not None and score.valid


def _checksum(account: str) -> str:
    try:
        return to_checksum_address(account)
    except ValueError as error:
        raise DagError(f"{account!r} is not an address") from error
