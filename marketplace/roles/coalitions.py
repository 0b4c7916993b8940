"""The scores settlement replays besides each node's: coalition scores and added scores.

The reward rule (`rewards.Evidence`) shares a merge's gain among its updates by the scores of
their coalitions, and judges an update its round's merge left out by the score of that merge
with it added. Both are averages of updates scored on the validation set, so they come from a
`Scorer` (what its key can read, its score cache) and need no account: the evaluator computes
them into its report, `verify` scores them again and compares (`averager`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from marketplace.errors import ScoringTimeout
from marketplace.protocol.tasks import of_kind
from marketplace.protocol.verdicts import refusal
from marketplace.roles.scorer import Scorer, TaskView, credited_samples
from marketplace.rules.dag import architecture_of
from marketplace.rules.datafiles import Dataset
from marketplace.rules.frontier import Frontier
from marketplace.rules.merge import MergeRule, coalition_value
from marketplace.rules.messages import NodeKind, Score
from marketplace.rules.shapley import Coalition
from marketplace.wire.codec import to_arrays

log = logging.getLogger(__name__)

Coalitions = dict[int, dict[Coalition, int]]
"""Merge id -> coalition of its update parents -> the score of their average."""


def evidence(
    scorer: Scorer, view: TaskView, scores: dict[int, Score], dataset: Dataset
) -> tuple[Coalitions, dict[int, int]]:
    """What the reward rule replays besides the scores (`rewards.Evidence`): the coalition
    scores of every merge in clear that rose above its frontier, and the added score of
    every update its round's merge left out. A merge one of whose scorings passes the time
    limit is made invalid in `scores` (`scoring-timeout`), and the frontiers after it are
    worked out again."""
    coalitions: Coalitions = {}
    while True:
        frontier = Frontier(view.records, scores, view.spec.min_gain)
        pending = [
            merge_id
            for merge_id in frontier.gaining_merges()
            if merge_id not in coalitions and not view.spec.aggregates(view.records[merge_id].round)
        ]
        if not pending:
            return coalitions, _added(scorer, view, scores, frontier, dataset)
        try:
            coalitions[pending[0]] = _coalitions(scorer, view, frontier, pending[0], dataset)
        except ScoringTimeout as exc:
            reason = refusal(pending[0], exc).reason
            log.warning("merge %d is invalid on this machine: %s", pending[0], reason)
            scores[pending[0]] = Score(node_id=pending[0], valid=False, reason=reason)
            coalitions.clear()


def averager(
    scorer: Scorer, view: TaskView, frontier: Frontier, merge_id: int, dataset: Dataset
) -> Callable[[Coalition], int]:
    """A coalition's value, as `merge_round` values it (`merge.coalition_value`): the
    better score of the updates' average without and with the merge's frontier model."""
    model = scorer.architecture(view, architecture_of(view.records, merge_id))
    base = frontier.base(architecture_of(view.records, merge_id), view.records[merge_id].round)
    anchor = None if base is None else scorer.verdict(view, base).weights

    def value(coalition: Coalition) -> int:
        parts = []
        for node_id in coalition:
            weights = scorer.verdict(view, node_id).weights
            assert weights is not None  # a valid update in clear
            parts.append((to_arrays(weights), credited_samples(view.spec, view.records[node_id])))
        return coalition_value(
            parts,
            view.spec.merge_weighting,
            None if anchor is None else to_arrays(anchor),
            lambda weights: scorer.score_arrays(model, weights, dataset, view.spec),
        )[0]

    return value


def _coalitions(
    scorer: Scorer, view: TaskView, frontier: Frontier, merge_id: int, dataset: Dataset
) -> dict[Coalition, int]:
    """Coalition of the merge's valid update parents -> the score of their average."""
    base = frontier.of(merge_id)
    assert base is not None  # a merge that gained has a frontier
    average = averager(scorer, view, frontier, merge_id, dataset)
    played = MergeRule.of(view.spec).contributions(
        frontier.members(merge_id), lambda coalition: average(coalition) if coalition else base
    )
    return {coalition: value for coalition, value in played.coalitions.items() if coalition}


def _added(
    scorer: Scorer,
    view: TaskView,
    scores: Mapping[int, Score],
    frontier: Frontier,
    dataset: Dataset,
) -> dict[int, int]:
    """Update id -> the score of its round's merge with it added, for every valid update
    in clear that the merge left out and that improved nothing on its own (`rewards` judges
    it harmful by that score; one that improved keeps its deposit whatever it is)."""
    added = {}
    for record in of_kind(view.records, NodeKind.UPDATE):
        if not scores[record.node_id].valid or view.spec.aggregates(record.round):
            continue
        base = frontier.of(record.node_id)
        if base is None or scores[record.node_id].value >= base + view.spec.min_gain:
            continue
        left_out = frontier.added_coalition(record.node_id)
        if left_out is None:
            continue
        merge_id, coalition = left_out
        try:
            added[record.node_id] = averager(scorer, view, frontier, merge_id, dataset)(coalition)
        except ScoringTimeout:  # this machine's clock: the update is given the doubt
            added[record.node_id] = scores[merge_id].value
    return added
