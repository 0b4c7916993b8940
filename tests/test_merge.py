"""The round merge: a deterministic average of the updates whose Shapley values are positive."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from math import factorial
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.errors import DagError, WeightsError
from marketplace.rules.merge import (
    Candidate,
    ClassRecall,
    MergeResult,
    MergeRule,
    Scorer,
    is_no_update,
    merge_counts,
    merge_round,
    weighted_average,
)

FAST = settings(max_examples=60, deadline=None, derandomize=True)
TOLERANCE = 1e-6


def w(*values: float) -> dict[str, npt.NDArray[np.float32]]:
    """One tensor "w" holding `values`."""
    return {"w": np.array(values, dtype=np.float32)}


def distance_scorer(target: Mapping[str, npt.NDArray[Any]]) -> Scorer:
    """A fake validation score: -1000 x the squared distance to `target`, rounded."""

    def score(weights: Mapping[str, npt.NDArray[np.float32]]) -> int:
        total = sum(float(np.sum((weights[k].astype(np.float64) - target[k]) ** 2)) for k in target)
        return round(-1000 * total)

    return score


def counting(scorer: Scorer, calls: list[bytes]) -> Scorer:
    """`scorer`, recording the weights of each call."""

    def score(weights: Mapping[str, npt.NDArray[np.float32]]) -> int:
        calls.append(b"".join(weights[k].tobytes() for k in sorted(weights)))
        return scorer(weights)

    return score


def as_bytes(result: MergeResult) -> list[tuple[str, bytes, str]]:
    return [(name, a.tobytes(), a.dtype.str) for name, a in result.weights.items()]


# ------------------------------------------------------------------ weighted_average


def test_weighted_average_weights_by_declared_samples() -> None:
    merged = weighted_average([(w(1.0, 2.0), 1), (w(3.0, 4.0), 3)])

    assert merged["w"].dtype == np.float32
    assert merged["w"].tolist() == [2.5, 3.5]


def test_weighted_average_counts_each_update_once_when_all_declare_zero_samples() -> None:
    assert weighted_average([(w(1.0), 0), (w(4.0), 0)])["w"].tolist() == [2.5]


def test_weighted_average_ignores_an_update_declaring_zero_samples_among_others() -> None:
    assert weighted_average([(w(1.0), 0), (w(4.0), 2)])["w"].tolist() == [4.0]


def test_weighted_average_returns_tensors_in_sorted_name_order() -> None:
    a = {"z": np.zeros(2, np.float32), "a": np.ones((2, 2), np.float32)}

    assert list(weighted_average([(a, 1)])) == ["a", "z"]


def test_weighted_average_refuses_different_names_or_shapes() -> None:
    with pytest.raises(WeightsError):
        weighted_average([(w(1.0), 1), ({"v": np.zeros(1, np.float32)}, 1)])
    with pytest.raises(WeightsError):
        weighted_average([(w(1.0), 1), (w(1.0, 2.0), 1)])


def test_weighted_average_refuses_nothing_and_negative_samples() -> None:
    with pytest.raises(ValueError):
        weighted_average([])
    with pytest.raises(ValueError):
        weighted_average([(w(1.0), -1)])


# ------------------------------------------------------------------ is_no_update


def test_a_copy_of_the_parent_is_no_update_even_at_zero_tolerance() -> None:
    assert is_no_update(w(1.0, 2.0), w(1.0, 2.0), 0.0)


def test_weights_within_tolerance_are_no_update_and_beyond_it_are() -> None:
    parent = w(1.0, 2.0)

    assert is_no_update(w(1.0, 2.0 + 1e-7), parent, TOLERANCE)
    assert not is_no_update(w(1.0, 2.001), parent, TOLERANCE)


def test_a_non_finite_change_counts_as_an_update() -> None:
    assert not is_no_update(w(1.0, float("nan")), w(1.0, 2.0), TOLERANCE)


def test_is_no_update_refuses_different_layouts() -> None:
    with pytest.raises(WeightsError):
        is_no_update(w(1.0), w(1.0, 2.0), TOLERANCE)


# ------------------------------------------------------------------ merge_round, by hand

PARENT = w(0.0, 0.0)
TARGET = {"w": np.array([1.0, 1.0])}
BASE = -2000  # the parent's score under distance_scorer(TARGET)
RULE = MergeRule(tolerance=TOLERANCE, min_gain=2, exact_max=6, permutations=16)


def test_merge_keeps_weak_updates_that_gain_together_and_drops_poison_and_copies() -> None:
    # a and b each score below the parent (-3250 < -2000) while their average gains (-125);
    # d pulls every average away from the target; e is a copy of the parent.
    candidates = [
        Candidate(node_id=4, weights=w(-10.0, -10.0), samples=1, parent_weights=PARENT),
        Candidate(node_id=2, weights=w(2.5, 0.0), samples=1, parent_weights=PARENT),
        Candidate(node_id=5, weights=w(0.0, 0.0), samples=9, parent_weights=PARENT),
        Candidate(node_id=3, weights=w(0.0, 2.5), samples=1_000_000, parent_weights=PARENT),
    ]

    result = merge_round(candidates, distance_scorer(TARGET), RULE, base_score=BASE)

    assert result.kept == (2, 3)
    assert result.weights["w"].tolist() == [1.25, 1.25]  # equal weights, whatever is declared
    assert result.score == -125
    assert result.contributions == {2: 1875, 3: 1875}  # x 2!: (-125 - -2000) / 2 each
    assert result.samples == 1_000_001
    assert result.no_updates == (5,)
    assert result.left_out == (4,)
    assert result.scorings == 7  # {2}, {3}, {4}, three pairs, all three


def test_two_junk_updates_that_hurt_only_together_are_both_left_out_at_once() -> None:
    # Leaving out 7 or 8 alone from {1, 7, 8} raises nothing the leave-one-out filter saw
    # (they pull in opposite directions and cancel); every small coalition shows the harm.
    candidates = [
        Candidate(node_id=1, weights=w(1.0, 1.0), samples=1, parent_weights=PARENT),
        Candidate(node_id=7, weights=w(9.0, -7.0), samples=1, parent_weights=PARENT),
        Candidate(node_id=8, weights=w(-7.0, 9.0), samples=1, parent_weights=PARENT),
    ]

    result = merge_round(candidates, distance_scorer(TARGET), RULE, base_score=BASE)

    assert result.kept == (1,)
    assert set(result.left_out) == {7, 8}
    assert result.score == 0


def test_a_near_copy_of_the_starting_model_is_worth_nothing_once_the_model_is_free() -> None:
    # U overshoots (scores like the parent); halfway back to the parent is the target. C is the
    # parent plus noise: averaging with C is what makes U good, so without the anchor C earns
    # half the round. With the parent free to every coalition (`coalition_value`), C adds 2
    # rows of 4,000. The merge is chosen by plain scores either way: U and C.
    honest = Candidate(node_id=2, weights=w(2.0, 2.0), samples=1, parent_weights=PARENT)
    copy = Candidate(node_id=3, weights=w(0.001, 0.0), samples=1, parent_weights=PARENT)
    scorer = distance_scorer(TARGET)

    free = merge_round([honest, copy], scorer, RULE, base_score=BASE, anchor=PARENT)
    paid = merge_round([honest, copy], scorer, RULE, base_score=BASE)

    for result in (free, paid):
        assert (result.kept, result.score) == ((2, 3), 0)
        assert result.weights["w"].tolist() == [1.000499963760376, 1.0]  # (2.001 / 2) in float32
    assert free.contributions == {2: 3998, 3: 2}  # x 2!
    assert free.scorings == 2 * 3  # three coalitions, each with and without the anchor
    assert paid.contributions == {2: 1998, 3: 2002}


def test_the_median_weighting_clips_what_an_update_declares_to_the_median() -> None:
    candidates = [
        Candidate(node_id=1, weights=w(0.5, 0.5), samples=10, parent_weights=PARENT),
        Candidate(node_id=2, weights=w(1.5, 1.5), samples=10**6, parent_weights=PARENT),
    ]
    rule = MergeRule(TOLERANCE, 2, 6, 16, weighting="median")

    result = merge_round(candidates, distance_scorer(TARGET), rule, base_score=BASE)

    assert result.weights["w"].tolist() == [1.0, 1.0]  # 10 and min(10**6, 10): equal
    assert merge_counts([10, 10**6, 30], "median") == [10, 30, 30]
    assert merge_counts([10, 10**6, 30], "equal") == [1, 1, 1]


def test_a_merge_min_gain_below_its_base_is_not_posted_and_one_within_min_gain_holds() -> None:
    better = Candidate(node_id=7, weights=w(0.5, 0.5), samples=3, parent_weights=PARENT)
    worse = Candidate(node_id=8, weights=w(3.0, 3.0), samples=3, parent_weights=PARENT)
    scorer = distance_scorer(TARGET)

    kept = merge_round([better], scorer, RULE, base_score=BASE)
    dropped = merge_round([worse], scorer, RULE, base_score=BASE)
    marginal = merge_round([better], scorer, RULE, base_score=-501)  # gains 1 < min_gain
    level = merge_round([better], scorer, RULE, base_score=-500)
    within = merge_round([better], scorer, RULE, base_score=-499)  # 1 < min_gain below
    below = merge_round([better], scorer, RULE, base_score=-498)

    assert (kept.kept, kept.score, kept.contributions) == ((7,), -500, {7: 1500})
    assert (dropped.kept, dropped.weights, dropped.score) == ((), {}, BASE)
    assert (dropped.left_out, dropped.contributions, dropped.samples) == ((8,), {}, 0)
    assert (marginal.kept, marginal.left_out, marginal.score) == ((7,), (), -500)
    assert (level.kept, level.score, level.contributions) == ((7,), -500, {7: 0})
    assert (within.kept, within.score) == ((7,), -500)
    assert (below.kept, below.left_out, below.score) == ((), (7,), -498)


def test_a_round_of_copies_has_nothing_to_merge() -> None:
    copy = Candidate(node_id=3, weights=PARENT, samples=5, parent_weights=PARENT)

    result = merge_round([copy], distance_scorer(TARGET), RULE, base_score=BASE)

    assert (result.kept, result.no_updates, result.score, result.weights) == ((), (3,), BASE, {})


# Two classes: 20 validation rows of class 0, right in proportion to w[0]; 10 of class 1, to
# w[1]. The score is the right rows, as accuracy counts them.
CLASS_ROWS = (20, 10)


def class_correct(weights: Mapping[str, npt.NDArray[np.float32]]) -> tuple[int, int]:
    w0, w1 = (min(1.0, max(0.0, float(v))) for v in weights["w"])
    return round(CLASS_ROWS[0] * w0), round(CLASS_ROWS[1] * w1)


def right_rows(weights: Mapping[str, npt.NDArray[np.float32]]) -> int:
    return sum(class_correct(weights))


RECALL = ClassRecall(class_correct, CLASS_ROWS)
GUARDED = replace(RULE, class_guard_bps=2_000)
CLASS_0 = Candidate(node_id=2, weights=w(1.0, 0.0), samples=1, parent_weights=PARENT)
CLASS_1 = Candidate(node_id=3, weights=w(0.0, 1.0), samples=1, parent_weights=PARENT)  # alone


def test_the_only_holder_of_a_class_is_merged_though_the_round_scores_less_with_it() -> None:
    result = merge_round([CLASS_0, CLASS_1], right_rows, GUARDED, base_score=0, recall=RECALL)
    unguarded = merge_round([CLASS_0, CLASS_1], right_rows, RULE, base_score=0, recall=RECALL)

    assert (unguarded.kept, unguarded.score, unguarded.left_out) == ((2,), 20, (3,))
    # Without update 3, class 1's recall is 0 of 10 instead of 5 of 10: more than the margin.
    assert (result.kept, result.score, result.left_out) == ((2, 3), 10 + 5, ())
    assert result.weights["w"].tolist() == [0.5, 0.5]
    # x 2!: update 3 is worth 10 rows alone and costs 5 next to update 2.
    assert result.contributions == {2: (20 - 0) + (15 - 10), 3: (10 - 0) + (15 - 20)}


def test_the_guard_keeps_nothing_that_sinks_the_merge_to_its_frontier_or_moves_no_class() -> None:
    # Frontier 17: the average with update 3 (15) would be min_gain below it: never posted.
    sinking = merge_round([CLASS_0, CLASS_1], right_rows, GUARDED, base_score=17, recall=RECALL)
    # Update 4 lifts class 1 by 2 of 10 rows in the average: 20%, not more than the margin.
    small = Candidate(node_id=4, weights=w(0.6, 0.4), samples=1, parent_weights=PARENT)
    mild = merge_round([CLASS_0, small], right_rows, GUARDED, base_score=0, recall=RECALL)
    looser = replace(GUARDED, class_guard_bps=1_999)
    loose = merge_round([CLASS_0, small], right_rows, looser, base_score=0, recall=RECALL)
    # Update 5 only takes from class 0: its removal cuts no class.
    taking = Candidate(node_id=5, weights=w(-1.0, -1.0), samples=1, parent_weights=PARENT)
    taken = merge_round([CLASS_0, taking], right_rows, GUARDED, base_score=0, recall=RECALL)

    assert (sinking.kept, sinking.score, sinking.left_out) == ((2,), 20, (3,))
    assert class_correct(w(0.8, 0.2)) == (16, 2)  # the average of updates 2 and 4
    assert (mild.kept, mild.score, mild.left_out) == ((2,), 20, (4,))
    assert (loose.kept, loose.score, loose.left_out) == ((2, 4), 18, ())
    assert (taken.kept, taken.left_out) == ((2,), (5,))


def test_the_guard_gives_away_no_more_rows_than_the_class_gains() -> None:
    # Update 6 lifts class 1 by 5 rows (50%) in the average but costs class 0 14 rows: the
    # merge would lose 9 rows to protect 5.
    costly = Candidate(node_id=6, weights=w(-0.4, 1.0), samples=1, parent_weights=PARENT)
    result = merge_round([CLASS_0, costly], right_rows, GUARDED, base_score=0, recall=RECALL)

    assert class_correct(w(0.3, 0.5)) == (6, 5)  # the average of updates 2 and 6
    assert (result.kept, result.score, result.left_out) == ((2,), 20, (6,))


def test_merge_refuses_duplicate_ids_and_negative_tolerance() -> None:
    c = Candidate(node_id=3, weights=w(1.0, 1.0), samples=1, parent_weights=PARENT)
    with pytest.raises(DagError):
        merge_round([c, c], distance_scorer(TARGET), RULE, base_score=BASE)
    with pytest.raises(ValueError):
        merge_round([c], distance_scorer(TARGET), replace(RULE, tolerance=-1.0), base_score=BASE)


def test_a_merge_of_20_updates_drops_5_poisoned_ones_within_its_sampling_budget() -> None:
    # Above `exact_max` the values come from 16 seeded orders: at most 16 x 20 coalitions a
    # pass, each scored once.
    poisoned = {4: 1, 9: 2, 13: 3, 17: 4, 20: 5}  # node id -> how far it pulls
    candidates = [
        Candidate(
            node_id=i,
            weights=w(-8.0 * poisoned[i], 6.0 * poisoned[i])
            if i in poisoned
            else w(1.0 + 0.05 * (i % 7 - 3), 1.0 - 0.05 * (i % 5 - 2)),
            samples=10 if i in poisoned else 10 + i,
            parent_weights=PARENT,
        )
        for i in range(1, 21)
    ]
    calls: list[bytes] = []

    result = merge_round(
        candidates, counting(distance_scorer(TARGET), calls), RULE, base_score=BASE
    )

    assert set(poisoned) <= set(result.left_out)
    assert result.kept and not set(result.kept) & set(poisoned)
    assert result.scorings == len(calls) == 294  # each coalition once: <= 2 x (16 x 20 + 2)


# ------------------------------------------------------------------ merge_round, properties

values = st.integers(min_value=-40, max_value=40).map(lambda v: v / 8)


@st.composite
def rounds(draw: st.DrawFn) -> tuple[list[Candidate], dict[str, npt.NDArray[Any]], int]:
    parent = {
        "b": np.array(draw(st.lists(values, min_size=2, max_size=2)), np.float32),
        "w": np.array(draw(st.lists(values, min_size=3, max_size=3)), np.float32),
    }
    target = {
        k: np.array(draw(st.lists(values, min_size=a.size, max_size=a.size)))
        for k, a in parent.items()
    }
    ids = draw(st.lists(st.integers(1, 50), min_size=1, max_size=6, unique=True))
    candidates = []
    for node_id in ids:
        # A copy of the parent (within tolerance), a step towards the target, or anywhere.
        start = draw(st.sampled_from(["copy", "near", "near", "anywhere"]))
        weights: dict[str, npt.NDArray[Any]] = {}
        for k, a in parent.items():
            noise = np.array(draw(st.lists(values, min_size=a.size, max_size=a.size)))
            if start == "copy":
                weights[k] = a + np.float32(draw(st.sampled_from([0.0, 1e-7])))
            elif start == "near":
                weights[k] = (target[k] + noise / 4).astype(np.float32)
            else:
                weights[k] = noise.astype(np.float32)
        samples = draw(st.integers(0, 1000))
        candidates.append(Candidate(node_id, weights, samples, parent))
    base = distance_scorer(target)(parent)
    return candidates, target, base


@FAST
@given(rounds(), st.randoms(use_true_random=False))
def test_merge_is_the_same_bytes_whatever_the_order_and_however_often(
    case: tuple[list[Candidate], dict[str, npt.NDArray[Any]], int], random: Any
) -> None:
    candidates, target, base = case
    shuffled = list(candidates)
    random.shuffle(shuffled)
    scorer = distance_scorer(target)

    first = merge_round(candidates, scorer, RULE, base_score=base)
    again = merge_round(candidates, scorer, RULE, base_score=base)
    reordered = merge_round(shuffled, scorer, RULE, base_score=base)

    for other in (again, reordered):
        assert as_bytes(other) == as_bytes(first)
        assert other == replace(first, weights=other.weights)


@FAST
@given(rounds())
def test_a_posted_merge_beats_its_base_and_every_update_is_accounted_for(
    case: tuple[list[Candidate], dict[str, npt.NDArray[Any]], int],
) -> None:
    candidates, target, base = case
    scorer = distance_scorer(target)
    calls: list[bytes] = []

    result = merge_round(candidates, counting(scorer, calls), RULE, base_score=base)

    copies = {c.node_id for c in candidates if is_no_update(c.weights, c.parent_weights, TOLERANCE)}
    assert set(result.no_updates) == copies
    assert not copies & set(result.kept)
    assert set(result.kept) | set(result.left_out) | copies == {c.node_id for c in candidates}
    assert not set(result.kept) & set(result.left_out)
    assert list(result.kept) == sorted(result.kept)
    k = len(candidates) - len(copies)
    assert result.scorings == len(calls) <= 2**k - 1
    if result.kept:
        assert result.score == scorer(result.weights) >= base + RULE.min_gain
        assert result.samples == sum(c.samples for c in candidates if c.node_id in result.kept)
        assert sum(result.contributions.values()) == factorial(len(result.kept)) * (
            result.score - base
        )
    else:
        assert (result.score, result.weights, result.samples) == (base, {}, 0)
