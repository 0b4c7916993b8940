"""A round's merge in clear as an evaluator works it out, from what its `Scorer` reads.

For one architecture's updates of a closed round: the candidates (each valid update with its
parent's weights and its credited samples), the round's frontier they are merged onto (the
best valid model of the architecture every miner of the round could start from), and
`merge.merge_round` on the sealed validation set. Then, for a merge another evaluator posted,
whether it is this merge bit for bit. Nothing here signs or posts: the evaluator process
(`marketplace.roles.evaluator`) posts or confirms what this finds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from marketplace.protocol.tasks import of_kind
from marketplace.protocol.verdicts import Verdict
from marketplace.roles.scorer import Scorer, TaskView, credited_samples
from marketplace.rules.dag import architecture_of
from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import class_rows
from marketplace.rules.frontier import Frontier
from marketplace.rules.merge import Candidate, ClassRecall, MergeResult, MergeRule, merge_round
from marketplace.rules.messages import Metric, NodeKind, NodeRecord, Score
from marketplace.rules.models import ModelSpec
from marketplace.wire.codec import to_arrays

log = logging.getLogger(__name__)

NO_MERGE = MergeResult(kept=(), weights={}, score=0, samples=0, no_updates=(), left_out=())


def scored_merge(
    scorer: Scorer, task_id: int, view: TaskView, arch_id: int, updates: list[NodeRecord]
) -> MergeResult:
    """The round's merge of `updates` (one architecture), on the sealed validation set;
    empty when the architecture is invalid (its updates are too)."""
    if not scorer.verdict(view, arch_id).valid:
        return NO_MERGE
    validation = scorer.sealed_validation(task_id, view.spec)
    model = scorer.architecture(view, arch_id)
    candidates = _candidates(scorer, view, updates)
    if not candidates:
        return NO_MERGE
    base_score, base_weights = frontier(scorer, view, arch_id, updates[0].round, validation)
    recall = None
    if view.spec.metric is Metric.ACCURACY:
        recall = ClassRecall(
            lambda weights: scorer.scored(model, weights, validation, view.spec).by_class,
            class_rows(validation),
        )
    return merge_round(
        candidates,
        lambda weights: scorer.score_arrays(model, weights, validation, view.spec),
        MergeRule.of(view.spec),
        base_score=base_score,
        anchor=base_weights,
        recall=recall,
    )


def _candidates(scorer: Scorer, view: TaskView, updates: list[NodeRecord]) -> list[Candidate]:
    """The valid updates, each with its weights, credited samples and parent's weights."""
    candidates = []
    for record in updates:
        verdict = scorer.verdict(view, record.node_id)
        parent_verdict = scorer.verdict(view, record.parents[0])
        if not verdict.valid or parent_verdict.weights is None or verdict.weights is None:
            continue
        candidates.append(
            Candidate(
                record.node_id,
                to_arrays(verdict.weights),
                credited_samples(view.spec, record),
                to_arrays(parent_verdict.weights),
            )
        )
    return candidates


def frontier(
    scorer: Scorer, view: TaskView, arch_id: int, round_index: int, dataset: Dataset
) -> tuple[int, Mapping[str, npt.NDArray[np.float32]]]:
    """The round's frontier (`frontier.Frontier`, on this scorer's scores of the architecture
    and its valid merges of earlier rounds): its score and weights, the model every miner of
    the round could start from."""
    model = scorer.architecture(view, arch_id)
    scores: dict[int, Score] = {}
    for record in [view.records[arch_id], *of_kind(view.records, NodeKind.MERGE)]:
        node_id = record.node_id
        if record.round >= round_index and record.kind is NodeKind.MERGE:
            continue
        if architecture_of(view.records, node_id) != arch_id:
            continue
        verdict = scorer.verdict(view, node_id)
        if verdict.valid and verdict.weights is not None:
            value = scorer.score(view, model, node_id, dataset)
            scores[node_id] = Score(node_id=node_id, valid=True, value=value)
    base = Frontier(view.records, scores, 0).base(arch_id, round_index)
    assert base is not None  # the architecture is valid: its updates were checked
    weights = scorer.verdict(view, base).weights
    assert weights is not None
    return scores[base].value, to_arrays(weights)


def recomputed(
    scorer: Scorer,
    view: TaskView,
    record: NodeRecord,
    model: ModelSpec,
    round_index: int,
    result: MergeResult,
    plain_digest: bytes,
) -> bool:
    """Whether the posted merge `record` is this evaluator's `result` bit for bit: the same
    round, parents, samples and plaintext digest on-chain, and a blob that is fetched, opens
    and holds those weights, round and round score (what miners choose a parent by). Only
    then is it confirmed: a digest alone can be copied by an evaluator that never uploads."""
    posted = (record.round, record.parents, record.samples, record.plaintext_digest)
    if posted != (round_index, result.kept, result.samples, plain_digest):
        return False
    opened = scorer.open_posted(view, record, model)
    if isinstance(opened, Verdict):
        log.warning("merge %d is not confirmed: %s", record.node_id, opened.reason)
        return False
    return (opened.round, opened.round_score) == (round_index, result.score)
