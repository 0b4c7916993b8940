"""The round merge: a deterministic sample-weighted average, less the updates that hurt it,
found in at most 3k scorings for k updates (DESIGN.md, "Bounded evaluator work").

Pure functions over weights given as `Mapping[str, np.ndarray]` (tensor name -> array). The
scorer is injected, so the evaluator passes the real one and tests pass a fake. Every evaluator
that runs `merge_round` on the same candidates gets the same bytes: the average accumulates in
float64 over the updates sorted by node id, with element-wise operations only (each correctly
rounded, so no platform-dependent reduction order), then casts to float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from marketplace.errors import DagError, WeightsError

Weights = Mapping[str, npt.NDArray[Any]]
"""Tensor name -> array: what a safetensors file decodes to."""

Merged = dict[str, npt.NDArray[np.float32]]
"""A merge's weights: float32 arrays, names in sorted order."""

Scorer = Callable[[Mapping[str, npt.NDArray[np.float32]]], int]
"""The integer validation score of a set of weights (higher is better)."""


@dataclass(frozen=True)
class Candidate:
    """One update of the round: its weights, declared samples and the weights it started from."""

    node_id: int
    weights: Weights
    samples: int
    parent_weights: Weights


@dataclass(frozen=True)
class MergeResult:
    """The round's merge and what the reward rule needs to credit it.

    Attributes:
        kept: the ids of the updates averaged, sorted: the merge node's parents. Empty when no
            candidate survives; then there is nothing to post, `weights` is empty and `score`
            is `base_score` (the round leaves the model where it was).
        weights: the merged weights (float32, names sorted).
        score: the merge's score.
        loo_scores: for each kept id, the score of the merge without it (`base_score` when it is
            the only one kept): the reward rule's leave-one-out input for this merge.
        samples: the declared samples of the kept updates, summed (the merge's `samples`).
        no_updates: candidates within `tolerance` of their parent, sorted: never merged.
        left_out: candidates whose removal raised the merge's score, in the order removed.
        scorings: how many times `merge_round` called the scorer (at most 3k for k updates).
    """

    kept: tuple[int, ...]
    weights: Merged
    score: int
    loo_scores: dict[int, int]
    samples: int
    no_updates: tuple[int, ...]
    left_out: tuple[int, ...]
    scorings: int = 0


def weighted_average(updates: Sequence[tuple[Weights, int]]) -> Merged:
    """The sample-weighted average of `updates`, as `(weights, declared samples)` pairs.

    Accumulates `sum(samples_i * w_i)` in float64 in the order given (`merge_round` passes the
    updates sorted by node id), divides by the total samples and casts to float32. If every
    update declares 0 samples, each counts once.

    Raises:
        ValueError: no updates, or a negative sample count.
        WeightsError: the updates do not have the same tensor names and shapes.
    """
    if not updates:
        raise ValueError("nothing to average")
    layout = _layout(updates[0][0])
    for weights, samples in updates:
        if samples < 0:
            raise ValueError(f"negative sample count {samples}")
        _check_layout(weights, layout)
    counts = [samples for _, samples in updates]
    if sum(counts) == 0:
        counts = [1] * len(updates)
    total = np.float64(sum(counts))
    merged: Merged = {}
    for name, shape in layout.items():
        acc = np.zeros(shape, dtype=np.float64)
        for (weights, _), count in zip(updates, counts, strict=True):
            acc += np.asarray(weights[name], dtype=np.float64) * np.float64(count)
        merged[name] = (acc / total).astype(np.float32)
    return merged


def is_no_update(weights: Weights, parent_weights: Weights, tolerance: float) -> bool:
    """Whether `weights` equal `parent_weights` within `tolerance`: max |w - parent| <= tolerance.

    Such a node is no update: it is never merged, earns nothing and forfeits its deposit.
    A difference that is not finite (NaN or inf) counts as an update; the validity checks
    reject non-finite weights separately.

    Raises:
        WeightsError: the two sets of weights have different tensor names or shapes.
    """
    _check_layout(weights, _layout(parent_weights))
    for name in sorted(parent_weights):
        difference = np.abs(
            np.asarray(weights[name], dtype=np.float64)
            - np.asarray(parent_weights[name], dtype=np.float64)
        )
        if difference.size and not bool(np.max(difference) <= tolerance):
            return False
    return True


def merge_round(
    candidates: Sequence[Candidate], score: Scorer, tolerance: float, *, base_score: int
) -> MergeResult:
    """The round's merge: average the updates, less those whose removal raises its score.

    1. Candidates within `tolerance` of their parent are no updates and are dropped.
    2. The rest, k updates, are averaged by declared samples (in node id order).
    3. One leave-one-out pass: the score of the average and, for each update, of the average
       without it (k + 1 scorings). The suspects are the updates whose removal raised it.
    4. Bounded greedy filter: each suspect once, most raising first (ties: the highest node
       id, the latest submission), is left out if leaving it out of what is still kept
       raises the score (at most one scoring each, the first is the pass's own). Every
       removal strictly raises the score: the merge never scores below the plain average.
    5. The reward rule's leave-one-out scores of the kept set: the pass's own when nothing
       was left out, else one scoring per kept update.

    So at most 1 + k + (k - 1) + (k - 1) <= 3k scorings (`MergeResult.scorings` counts them;
    a subset is never scored twice), where repeating the pass until nothing hurts took up to
    k(k + 1)/2. The price: an update that hurts only once others are gone can stay (its
    leave-one-out score in `loo_scores` then exceeds the merge's, so the reward rule gives it
    no share of the merge's gain).

    The merge of no update is the model the round built on, so it scores `base_score`: with one
    update kept, "the merge without it" scores `base_score` (a lone update that scores below it
    is left out). Pass the score of the candidates' parent (with several parents, the best of
    them). Candidates must share one architecture (the same tensor names and shapes).

    Raises:
        DagError: two candidates have the same node id.
        ValueError: a negative tolerance or sample count.
        WeightsError: the candidates' tensor names or shapes differ.
    """
    if tolerance < 0:
        raise ValueError(f"negative tolerance {tolerance}")
    ordered = sorted(candidates, key=lambda candidate: candidate.node_id)
    by_id = {candidate.node_id: candidate for candidate in ordered}
    if len(by_id) != len(ordered):
        raise DagError("two merge candidates have the same node id")

    no_updates = tuple(
        c.node_id for c in ordered if is_no_update(c.weights, c.parent_weights, tolerance)
    )
    kept = tuple(c.node_id for c in ordered if c.node_id not in no_updates)
    cache: dict[tuple[int, ...], int] = {(): base_score}

    def average(ids: tuple[int, ...]) -> Merged:
        return weighted_average([(by_id[i].weights, by_id[i].samples) for i in ids])

    def merged_score(ids: tuple[int, ...]) -> int:
        if ids not in cache:
            cache[ids] = int(score(average(ids)))
        return cache[ids]

    def without(ids: tuple[int, ...], removed: int) -> tuple[int, ...]:
        return tuple(i for i in ids if i != removed)

    current = merged_score(kept)
    raised = {i: merged_score(without(kept, i)) - current for i in kept}
    suspects = sorted((i for i in kept if raised[i] > 0), key=lambda i: (-raised[i], -i))
    left_out: list[int] = []
    for suspect in suspects:
        trial = without(kept, suspect)
        if merged_score(trial) > current:
            kept, current = trial, merged_score(trial)
            left_out.append(suspect)

    return MergeResult(
        kept=kept,
        weights=average(kept) if kept else {},
        score=current,
        loo_scores={i: merged_score(without(kept, i)) for i in kept},
        samples=sum(by_id[i].samples for i in kept),
        no_updates=no_updates,
        left_out=tuple(left_out),
        scorings=len(cache) - 1,  # every entry but the base was one call of `score`
    )


def _layout(weights: Weights) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, names sorted."""
    return {name: tuple(np.shape(weights[name])) for name in sorted(weights)}


def _check_layout(weights: Weights, layout: Mapping[str, tuple[int, ...]]) -> None:
    if set(weights) != set(layout):
        missing = sorted(set(layout) - set(weights))
        extra = sorted(set(weights) - set(layout))
        raise WeightsError(f"tensor names differ: missing {missing}, unexpected {extra}")
    for name, shape in layout.items():
        if tuple(np.shape(weights[name])) != shape:
            raise WeightsError(f"tensor {name!r} has shape {np.shape(weights[name])}, not {shape}")
