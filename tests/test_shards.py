"""Dirichlet label-skew shards and the deterministic digits splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits

from marketplace.dev import shards
from marketplace.dev.shards import (
    breast_cancer_splits,
    digits_splits,
    dirichlet_shards,
    holdout_rows,
    split_validation,
    subset,
)
from marketplace.errors import ConfigError
from marketplace.rules.datafiles import Dataset

# Ten classes of uneven size (50 to 140 rows), shuffled: 950 rows.
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), np.arange(50, 150, 10)))


def mean_label_entropy(labels: npt.NDArray[Any], parts: list[npt.NDArray[np.int64]]) -> float:
    """The average over shards of the entropy (nats) of the shard's label distribution."""
    entropies = []
    for rows in parts:
        p = np.bincount(labels[rows]) / len(rows)
        p = p[p > 0]
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


# ---------------------------------------------------------------------- dirichlet_shards


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
@pytest.mark.parametrize("num_shards", [1, 4, 7])
def test_every_row_lands_in_exactly_one_shard(alpha: float, num_shards: int) -> None:
    parts = dirichlet_shards(LABELS, num_shards, alpha, seed=3)

    assert len(parts) == num_shards
    assert all(part.dtype == np.int64 and np.all(np.diff(part) > 0) for part in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


def test_the_same_seed_gives_the_same_shards_and_another_seed_others() -> None:
    first = dirichlet_shards(LABELS, 4, 0.5, seed=11)
    again = dirichlet_shards(LABELS, 4, 0.5, seed=11)
    other = dirichlet_shards(LABELS, 4, 0.5, seed=12)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_label_skew_grows_as_alpha_shrinks() -> None:
    def entropy(alpha: float) -> float:  # averaged over seeds, so one lucky draw cannot decide
        return float(
            np.mean(
                [
                    mean_label_entropy(LABELS, dirichlet_shards(LABELS, 4, alpha, s))
                    for s in range(5)
                ]
            )
        )

    uniform = float(np.log(10))
    skewed, middle, mixed = entropy(0.1), entropy(1.0), entropy(100.0)

    assert skewed < middle < mixed
    assert mixed > 0.97 * uniform  # at alpha 100 every shard looks like the whole
    assert skewed < 0.7 * uniform  # at alpha 0.1 a shard holds a few classes


def test_min_size_is_honoured_by_drawing_again() -> None:
    labels = np.repeat(np.arange(10), 30)
    # At alpha 0.01 with 10 shards, most first draws leave some shard nearly empty.
    first_draw = dirichlet_shards(labels, 10, 0.01, seed=0, min_size=0)
    assert min(len(part) for part in first_draw) < 20

    parts = dirichlet_shards(labels, 10, 0.01, seed=0, min_size=20)

    assert min(len(part) for part in parts) >= 20
    assert sum(len(part) for part in parts) == len(labels)


def test_min_size_beyond_the_rows_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="4 shards of at least 300 rows need 1200 rows; there"):
        dirichlet_shards(LABELS, 4, 1.0, seed=0, min_size=300)


def test_giving_up_after_max_tries_says_what_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "MAX_TRIES", 20)
    one_class = np.zeros(100, dtype=np.int64)  # at alpha 1e-6 one shard takes everything

    with pytest.raises(ConfigError, match="in 20 draws .* raise alpha or lower min_size"):
        dirichlet_shards(one_class, 2, 1e-6, seed=0, min_size=10)


@pytest.mark.parametrize(
    ("labels", "num_shards", "alpha", "seed", "match"),
    [
        (LABELS, 0, 1.0, 0, "num_shards must be an integer of at least 1"),
        (LABELS, 2.0, 1.0, 0, "num_shards must be an integer"),
        (LABELS, 2, 0.0, 0, "alpha must be a finite number above 0"),
        (LABELS, 2, float("nan"), 0, "alpha must be a finite number above 0"),
        (LABELS, 2, float("inf"), 0, "alpha must be a finite number above 0"),
        (LABELS, 2, "1", 0, "alpha must be a number"),
        (LABELS, 2, 1.0, -1, "seed must be an integer of at least 0"),
        (LABELS.reshape(-1, 2), 2, 1.0, 0, "one-dimensional"),
        (LABELS.astype(np.float64), 2, 1.0, 0, "integer classes, not float64"),
    ],
)
def test_malformed_arguments_are_refused(
    labels: npt.NDArray[Any], num_shards: Any, alpha: Any, seed: Any, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        dirichlet_shards(labels, num_shards, alpha, seed)


# -------------------------------------------------------------------- held-out splits


def test_holdout_is_exact_stratified_disjoint_and_deterministic() -> None:
    kept, held = holdout_rows(LABELS, 0.2, seed=5)

    assert len(held) == round(0.2 * len(LABELS))
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(LABELS)))
    expected = 0.2 * np.bincount(LABELS)
    assert np.all(np.abs(np.bincount(LABELS[held], minlength=10) - expected) < 1)
    again = holdout_rows(LABELS, 0.2, seed=5)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(holdout_rows(LABELS, 0.2, seed=6)[1], held)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.0001, -0.5])
def test_a_holdout_that_leaves_a_part_empty_is_refused(fraction: float) -> None:
    with pytest.raises(ConfigError, match="leaves a part empty"):
        holdout_rows(LABELS, fraction, seed=0)


def test_split_validation_of_regression_targets_is_unstratified() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    data = Dataset(x, np.linspace(0.0, 1.0, 10), num_classes=None)

    rest, held = split_validation(data, 0.3, seed=0)

    assert (len(rest), len(held)) == (7, 3)
    assert held.num_classes is None
    together = np.concatenate([rest.features[:, 0], held.features[:, 0]])
    assert sorted(together.tolist()) == x[:, 0].tolist()


def test_subset_keeps_the_rows_in_order_read_only() -> None:
    data = Dataset(np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6), num_classes=6)

    part = subset(data, np.array([4, 1]))

    assert part.features.tolist() == [[8.0, 9.0], [2.0, 3.0]]
    assert part.labels.tolist() == [4, 1]
    assert not part.features.flags.writeable and not part.labels.flags.writeable


def test_digits_splits_are_deterministic_disjoint_and_stratified() -> None:
    bunch = load_digits()
    train, validation, test = digits_splits(seed=0)
    again = digits_splits(seed=0)
    other = digits_splits(seed=1)

    assert (len(train), len(validation), len(test)) == (1078, 360, 359)
    for part, twin in zip((train, validation, test), again, strict=True):
        assert np.array_equal(part.features, twin.features)
        assert np.array_equal(part.labels, twin.labels)
        assert part.num_classes == 10 and part.features.dtype == np.float32
        assert not part.features.flags.writeable
        share = len(part) / len(bunch.target) * np.bincount(bunch.target)
        assert np.all(np.abs(np.bincount(part.labels, minlength=10) - share) < 2)
    assert not np.array_equal(other[1].labels, validation.labels)
    # Disjoint: the three parts' rows (as bytes, with their labels) are all the digits' rows.
    rows = [
        r.tobytes() + bytes([label])
        for part in (train, validation, test)
        for r, label in zip(part.features, part.labels, strict=True)
    ]
    whole = [
        r.astype(np.float32).tobytes() + bytes([int(label)])
        for r, label in zip(bunch.data, bunch.target, strict=True)
    ]
    assert sorted(rows) == sorted(whole)


def test_digits_splits_refuse_fractions_that_leave_no_training_rows() -> None:
    with pytest.raises(ConfigError, match="sum to below 1"):
        digits_splits(seed=0, validation=0.5, test=0.5)


def test_breast_cancer_splits_are_stratified_and_standardized_on_the_training_part() -> None:
    train, validation, test = breast_cancer_splits(seed=0)
    again = breast_cancer_splits(seed=0)

    assert (len(train), len(validation), len(test)) == (341, 114, 114)
    for part, twin in zip((train, validation, test), again, strict=True):
        assert np.array_equal(part.features, twin.features)
        assert part.num_classes == 2 and part.features.shape[1] == 30
        assert part.features.dtype == np.float32 and not part.features.flags.writeable
        # 212 malignant, 357 benign in all: each part keeps the mix within a row.
        assert abs(np.bincount(part.labels, minlength=2)[0] - 212 * len(part) / 569) < 1
    assert np.allclose(train.features.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(train.features.std(axis=0), 1, atol=1e-4)
    assert not np.allclose(validation.features.mean(axis=0), 0, atol=1e-5)
