"""Splits of a labelled data set, all deterministic for a seed.

- `dirichlet_shards`: the label-skewed ("non-IID") split of federated-learning papers, one
  shard per simulated data owner.
- `holdout_rows` / `split_validation`: carve a held-out part (validation, test) off a data set,
  stratified by class so every part keeps the class mix.
- `digits_splits`: scikit-learn's bundled digits as train / validation / test `Dataset`s, the
  data set the tests, benchmarks and demo share (no download).
- `breast_cancer_splits`: scikit-learn's bundled breast cancer data, split the same way (the
  simulator's second data set).

Pure numpy; scikit-learn is imported only by the two loaders.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from marketplace.errors import ConfigError
from marketplace.rules.datafiles import Dataset

MAX_TRIES = 1_000  # draws of the whole split before `dirichlet_shards` gives up on min_size

Rows = npt.NDArray[np.int64]
"""Row indices into a data set, ascending."""


def dirichlet_shards(
    labels: npt.NDArray[Any], num_shards: int, alpha: float, seed: int, min_size: int = 1
) -> list[Rows]:
    """Row indices per shard, label-skewed by one Dirichlet(alpha) draw per class.

    The split of NIID-Bench (Li et al., 2022) and FedMA (Wang et al., 2020): for each class in
    turn, its rows (shuffled) are cut among the shards in proportions p ~ Dir(alpha, ...,
    alpha), where a shard already holding rows / num_shards rows or more gets no share (so
    quantities stay roughly balanced while the class mix is skewed). Small alpha: each shard
    holds few classes; large alpha: every shard looks like the whole. The whole split is drawn
    again until every shard has at least `min_size` rows, at most `MAX_TRIES` times.

    Args:
        labels: (rows,) integer class labels (any integers; each distinct value is a class).
        num_shards: how many shards, at least 1.
        alpha: the Dirichlet concentration, > 0.
        seed: the only source of randomness (numpy's default generator).
        min_size: the fewest rows a shard may hold.

    Returns:
        `num_shards` ascending int64 arrays; every row is in exactly one of them.

    Raises:
        ConfigError: a malformed argument, more rows asked for than exist
            (num_shards x min_size > rows), or no draw within MAX_TRIES met `min_size`.
    """
    labels = _labels(labels)
    _check_int("num_shards", num_shards, 1)
    _check_int("min_size", min_size, 0)
    _check_int("seed", seed, 0)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise ConfigError(f"alpha must be a number, not {type(alpha).__name__}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be a finite number above 0, not {alpha}")
    rows = len(labels)
    if num_shards * min_size > rows:
        raise ConfigError(
            f"{num_shards} shards of at least {min_size} rows need {num_shards * min_size} "
            f"rows; there are {rows}"
        )
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    smallest = 0
    for _ in range(MAX_TRIES):
        shards = _draw(by_class, rows, num_shards, alpha, rng)
        smallest = min(len(shard) for shard in shards)
        if smallest >= min_size:
            return shards
    raise ConfigError(
        f"no Dirichlet({alpha:g}) split into {num_shards} shards gave every shard {min_size} "
        f"rows in {MAX_TRIES} draws (the last one's smallest shard: {smallest}); raise alpha "
        "or lower min_size"
    )


def _draw(
    by_class: list[npt.NDArray[np.intp]],
    rows: int,
    num_shards: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[Rows]:
    parts: list[list[npt.NDArray[np.intp]]] = [[] for _ in range(num_shards)]
    sizes = np.zeros(num_shards, dtype=np.int64)
    for members in by_class:
        open_ = sizes < rows / num_shards  # never empty while a class is left to place
        shares = rng.dirichlet(np.full(num_shards, alpha)) * open_
        if not shares.sum() > 0:  # every open shard's share underflowed to 0 (tiny alpha)
            shares = open_.astype(np.float64)
        cuts = (np.cumsum(shares / shares.sum()) * len(members)).astype(np.int64)[:-1]
        for shard, part in enumerate(np.split(rng.permutation(members), cuts)):
            parts[shard].append(part)
            sizes[shard] += len(part)
    return [np.sort(np.concatenate(shard)).astype(np.int64) for shard in parts]


def holdout_rows(
    labels: npt.NDArray[Any], fraction: float, seed: int, stratify: bool = True
) -> tuple[Rows, Rows]:
    """(kept rows, held-out rows): round(fraction x rows) rows held out at random.

    Stratified (integer labels): each class gives its share, rounded so the total is exact
    (largest remainders first, ties to the lower class), so the held-out part has the class
    mix of the whole. Both parts get at least one row.
    """
    labels = _labels(labels, integers=stratify)
    _check_int("seed", seed, 0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ConfigError(f"fraction must be a number, not {type(fraction).__name__}")
    rows = len(labels)
    held = round(fraction * rows) if 0 < fraction < 1 else 0
    if not 1 <= held <= rows - 1:
        raise ConfigError(
            f"holding out a fraction {fraction} of {rows} rows leaves a part empty; "
            "it must be in (0, 1) and leave a row on each side"
        )
    rng = np.random.default_rng(seed)
    if not stratify:
        chosen = rng.permutation(rows)[:held]
    else:
        classes, counts = np.unique(labels, return_counts=True)
        quotas = fraction * counts
        takes = np.floor(quotas).astype(np.int64)
        remainders = np.argsort(-(quotas - takes), kind="stable")
        takes[remainders[: held - int(takes.sum())]] += 1
        chosen = np.concatenate(
            [
                rng.permutation(np.flatnonzero(labels == value))[:take]
                for value, take in zip(classes, takes, strict=True)
            ]
        )
    mask = np.zeros(rows, dtype=bool)
    mask[chosen] = True
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def split_validation(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, held out) of `dataset` by `holdout_rows`, stratified when it has classes."""
    stratify = dataset.num_classes is not None
    kept, held = holdout_rows(dataset.labels, fraction, seed, stratify=stratify)
    return subset(dataset, kept), subset(dataset, held)


def subset(dataset: Dataset, rows: npt.NDArray[np.integer[Any]]) -> Dataset:
    """The given rows of `dataset`, in the given order, as a new read-only Dataset."""
    features, labels = dataset.features[rows], dataset.labels[rows]
    features.setflags(write=False)
    labels.setflags(write=False)
    return Dataset(features, labels, dataset.num_classes)


def digits_splits(
    seed: int = 0, validation: float = 0.2, test: float = 0.2
) -> tuple[Dataset, Dataset, Dataset]:
    """scikit-learn's digits (1,797 rows, 64 pixels valued 0-16, 10 classes) as
    (train, validation, test), stratified; `validation` and `test` are fractions of the whole.

    Features stay the raw pixel values as float32 (the digits CSV a sponsor would publish), so
    a model trained on these scores the same on that file.
    """
    from sklearn.datasets import load_digits

    _check_fractions(validation, test)
    bunch = load_digits()
    features, labels = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    return _three_way(Dataset(features, labels, num_classes=10), seed, validation, test)


def breast_cancer_splits(
    seed: int = 0, validation: float = 0.2, test: float = 0.2
) -> tuple[Dataset, Dataset, Dataset]:
    """scikit-learn's breast cancer data (569 rows, 30 measurements, 2 classes) as
    (train, validation, test), split as `digits_splits` splits.

    The raw columns span five orders of magnitude (areas in the thousands, fractal dimensions
    near 0.06), so the features are published standardized: each column minus the training
    part's mean, over its standard deviation, as float32. The same transform is applied to
    every part, so a model scores the same on the CSV a sponsor would publish.
    """
    from sklearn.datasets import load_breast_cancer

    _check_fractions(validation, test)
    bunch = load_breast_cancer()
    raw = Dataset(bunch.data.astype(np.float64), bunch.target.astype(np.int64), num_classes=2)
    train, validation_set, test_set = _three_way(raw, seed, validation, test)
    mean = train.features.mean(axis=0)
    std = np.where(train.features.std(axis=0) > 0, train.features.std(axis=0), 1.0)

    def standardized(part: Dataset) -> Dataset:
        features = ((part.features - mean) / std).astype(np.float32)
        features.setflags(write=False)
        return Dataset(features, part.labels, part.num_classes)

    return standardized(train), standardized(validation_set), standardized(test_set)


def _check_fractions(validation: float, test: float) -> None:
    if not (validation > 0 and test > 0 and validation + test < 1):
        raise ConfigError(
            f"validation={validation} and test={test} must be above 0 and sum to below 1"
        )


def _three_way(
    whole: Dataset, seed: int, validation: float, test: float
) -> tuple[Dataset, Dataset, Dataset]:
    """(train, validation, test) of `whole`, stratified; the fractions are of the whole."""
    whole.features.setflags(write=False)
    whole.labels.setflags(write=False)
    test_seed, validation_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    rest, test_set = split_validation(whole, test, test_seed)
    train, validation_set = split_validation(rest, validation / (1 - test), validation_seed)
    return train, validation_set, test_set


def _labels(labels: npt.NDArray[Any], integers: bool = True) -> npt.NDArray[Any]:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ConfigError(f"labels must be one-dimensional, not of shape {array.shape}")
    if integers and array.dtype.kind not in "iu":
        raise ConfigError(f"labels must be integer classes, not {array.dtype}")
    return array


def _check_int(name: str, value: int, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ConfigError(f"{name} must be an integer of at least {least}, not {value!r}")
