"""Deterministic scoring: every evaluator gets the same integer, bit for bit.

Scores are integers:
- `accuracy`: the number of rows whose argmax equals the label. Ties go to the lowest class
  index; a row whose outputs hold a NaN is never right.
- `negated_sse`: -(sum over rows of min(round((p - y)^2 * 10^6), 10^18)): squared errors in
  units of 10^-6, each rounded to the nearest unit and summed exactly as Python ints. p is the
  float32 prediction and y the float64 target, both taken as exact binary numbers (so the
  rounding never meets a tie). A row counts at most 10^18 units (a squared error of 10^12);
  a non-finite prediction counts exactly that.

The model runs on the CPU, in eval mode, without autograd, on one thread, with torch's
deterministic algorithms, in batches of `EVAL_BATCH_SIZE` rows in file order. The settings are
process-wide: scoring restores them afterwards but is not meant to run on several threads.
The rows come from `marketplace.rules.datafiles` (the `Dataset` of a data file).

Bounded work (DESIGN.md, "Bounded evaluator work"): a task's validation set is scored on its
first `TaskSpec.validation_rows` rows (`datafiles.load_validation`); `check_budget` prices a
model at multiply-adds per row x those rows against the task's budget before anyone trains it;
and `score` takes a time limit, checked between batches, as a safety net (`ScoringTimeout`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from marketplace.errors import OverBudget, ScoringTimeout, SpecError
from marketplace.rules.datafiles import Dataset, Features
from marketplace.rules.layers import EmbeddingMean
from marketplace.rules.messages import DataSchema, Metric, TaskSpec
from marketplace.rules.models import ModelSpec, build_model, macs_per_sample, output_shape

if TYPE_CHECKING:
    import torch

EVAL_BATCH_SIZE = 64  # x MAX_ACTIVATION_VALUES float32 = at most 256 MiB per layer output
SSE_SCALE = 10**6  # squared errors are counted in units of 10^-6
SSE_ROW_CAP = 10**18  # the most one row can count (also what a non-finite prediction counts)


@contextmanager
def deterministic() -> Iterator[None]:
    """torch on one thread, deterministic algorithms, no autograd; restored on exit."""
    import torch

    threads = torch.get_num_threads()
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.set_num_threads(threads)


Clock = Callable[[], float]
"""Seconds from a monotonic clock (`time.monotonic`; tests pass a fake)."""


def predict(
    spec: ModelSpec,
    weights: Mapping[str, torch.Tensor],
    features: Features,
    deadline: float | None = None,
    clock: Clock = time.monotonic,
) -> npt.NDArray[np.float32]:
    """The model's float32 outputs (rows, *output_shape) for (rows, num_features) features.

    Each row is reshaped to the spec's `input_shape`; rows run in order, `EVAL_BATCH_SIZE`
    at a time, under `deterministic()`. With a `deadline` (in `clock`'s seconds), raises
    ScoringTimeout once `clock()` passes it, checked after each batch.
    """
    import torch

    rows = features.shape[0]
    if features.ndim != 2 or features.shape[1] != math.prod(spec.input_shape):
        raise SpecError(
            f"features of shape {features.shape} do not fit input_shape {spec.input_shape}"
        )
    model = build_model(spec, weights)  # WeightsError if the weights do not fit the spec
    model.train(False)  # inference mode: dropout off
    outputs: list[npt.NDArray[np.float32]] = []
    with deterministic():
        dtype = np.int64 if spec.input_dtype == "int64" else np.float32
        inputs = torch.from_numpy(np.array(features, dtype=dtype))  # a writable copy
        inputs = inputs.reshape(rows, *spec.input_shape)
        for start in range(0, rows, EVAL_BATCH_SIZE):
            outputs.append(model(inputs[start : start + EVAL_BATCH_SIZE]).numpy())
            if deadline is not None and clock() > deadline:
                done = min(start + EVAL_BATCH_SIZE, rows)
                raise ScoringTimeout(
                    f"scoring passed its time limit after {done:,} of {rows:,} rows"
                )
    if not outputs:
        return np.empty((0, *output_shape(spec)), dtype=np.float32)
    return np.concatenate(outputs)


@dataclass(frozen=True)
class Scores:
    """A scoring's result: the integer score, and for accuracy the right rows of each class
    (what the merge's class guard reads; empty for other metrics)."""

    total: int
    by_class: tuple[int, ...] = ()


def score(
    spec: ModelSpec,
    weights: Mapping[str, torch.Tensor],
    dataset: Dataset,
    metric: Metric,
    seconds: float | None = None,
    clock: Clock = time.monotonic,
) -> int:
    """The integer score of `weights` on `dataset` (see the module docstring for the rules).

    `seconds`: the time limit of this scoring (None: none), from the call to the last batch.
    A limit is not deterministic across machines: the budget (`check_budget`) is what bounds
    the work; the limit only keeps a slow machine from being stuck on one node.

    Raises:
        SpecError: the spec does not fit the data or the metric (input or output shape, dtype).
        WeightsError: the weights do not fit the spec.
        ScoringTimeout: scoring took longer than `seconds`.
    """
    return scores(spec, weights, dataset, metric, seconds, clock).total


def scores(
    spec: ModelSpec,
    weights: Mapping[str, torch.Tensor],
    dataset: Dataset,
    metric: Metric,
    seconds: float | None = None,
    clock: Clock = time.monotonic,
) -> Scores:
    """`score`, with each class's right rows for accuracy (one run of the model)."""
    deadline = None if seconds is None else clock() + seconds
    metric = Metric(metric)
    check_fits(spec, dataset, metric)
    outputs = predict(spec, weights, dataset.features, deadline, clock)
    num_classes = dataset.num_classes or 0
    if metric is Metric.ACCURACY:
        right = right_rows(outputs, dataset.labels.astype(np.int64))
        by_class = np.bincount(dataset.labels[right].astype(np.int64), minlength=num_classes)
        return Scores(int(np.count_nonzero(right)), tuple(int(n) for n in by_class[:num_classes]))
    return Scores(negated_sse(outputs[:, 0], dataset.labels.astype(np.float64)))


def class_rows(dataset: Dataset) -> tuple[int, ...]:
    """How many rows of each class `dataset` holds (empty for a regression dataset)."""
    if dataset.num_classes is None:
        return ()
    counts = np.bincount(dataset.labels.astype(np.int64), minlength=dataset.num_classes)
    return tuple(int(count) for count in counts[: dataset.num_classes])


def ceiling(dataset: Dataset, metric: Metric) -> int:
    """The best score possible on `dataset`: every row right (accuracy), no error (SSE)."""
    return len(dataset) if Metric(metric) is Metric.ACCURACY else 0


def check_fits(spec: ModelSpec, dataset: Dataset, metric: Metric) -> None:
    """Raise SpecError unless the spec takes the dataset's rows and outputs what `metric` needs."""
    tokens = dataset.features.dtype == np.int64
    _check_io(spec, tokens, dataset.features.shape[1], dataset.num_classes, metric)
    first = spec.layers[0]
    if tokens and isinstance(first, EmbeddingMean) and len(dataset):
        largest = int(dataset.features.max())
        if largest >= first.num_embeddings:
            raise SpecError(
                f"layers[0] (embedding_mean) has {first.num_embeddings} embeddings, "
                f"the data has token {largest}"
            )


def check_schema_fits(spec: ModelSpec, schema: DataSchema, metric: Metric) -> None:
    """Raise SpecError unless the spec takes rows of the task's schema and outputs what
    `metric` needs: what `check_fits` checks on a file, known before any file is read."""
    tokens = schema.input == "tokens"
    _check_io(spec, tokens, schema.num_features, schema.num_classes, Metric(metric))
    first, vocabulary = spec.layers[0], schema.vocab_size
    if isinstance(first, EmbeddingMean) and vocabulary and first.num_embeddings < vocabulary:
        raise SpecError(
            f"layers[0] (embedding_mean) has {first.num_embeddings} embeddings, "
            f"the task's vocabulary has {vocabulary} tokens"
        )


def scoring_macs(spec: ModelSpec, rows: int) -> int:
    """The multiply-adds of scoring `spec` once on `rows` validation rows."""
    return macs_per_sample(spec) * rows


def check_budget(spec: ModelSpec, task: TaskSpec) -> None:
    """Raise OverBudget unless scoring `spec` once on the task's validation rows costs at most
    the task's `max_scoring_macs`: known from the two specs alone, before anyone trains."""
    rows, budget = task.budget_rows, task.max_scoring_macs
    cost = scoring_macs(spec, rows)
    if cost > budget:
        raise OverBudget(
            f"scoring it costs {macs_per_sample(spec):,} multiply-adds per row x {rows:,} "
            f"validation rows = {cost:,}, over the task's budget of {budget:,}"
        )


def _check_io(
    spec: ModelSpec, tokens: bool, width: int, num_classes: int | None, metric: Metric
) -> None:
    """The input dtype and width, and the output the metric needs (SpecError if not)."""
    if (spec.input_dtype == "int64") != tokens:
        held = "int64 tokens" if tokens else "float32 features"
        raise SpecError(f"the spec takes {spec.input_dtype} input, the data holds {held}")
    if math.prod(spec.input_shape) != width:
        raise SpecError(
            f"input_shape {spec.input_shape} holds {math.prod(spec.input_shape)} values, "
            f"the data has {width} per row"
        )
    if metric is Metric.ACCURACY:
        if num_classes is None:
            raise SpecError("the accuracy metric needs class labels (a schema with num_classes)")
        needed: tuple[int, ...] = (num_classes,)
    else:
        if num_classes is not None:
            raise SpecError("the negated_sse metric needs regression targets (no num_classes)")
        needed = (1,)
    if output_shape(spec) != needed:
        raise SpecError(f"the spec outputs shape {output_shape(spec)}, the task needs {needed}")


def right_rows(
    outputs: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Which rows' first (lowest-index) maximum is the label; a row holding a NaN is wrong."""
    predicted = np.argmax(outputs, axis=1)
    return (predicted == labels) & ~np.isnan(outputs).any(axis=1)  # type: ignore[no-any-return]


def negated_sse(predictions: npt.NDArray[np.float32], targets: npt.NDArray[np.float64]) -> int:
    """-(sum of squared errors) in exact fixed point (units of 10^-6, see the module docstring)."""
    total = 0
    for prediction, target in zip(predictions.tolist(), targets.tolist(), strict=True):
        if not math.isfinite(prediction):
            total += SSE_ROW_CAP
            continue
        error = Fraction(prediction) - Fraction(target)
        total += min(round(error * error * SSE_SCALE), SSE_ROW_CAP)
    return -total
