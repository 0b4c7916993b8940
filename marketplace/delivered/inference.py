"""Running and exporting a delivered model (`sponsor model predict` and `model export`).

Prediction reads a data file with the card's schema (the label column optional) and runs the
model exactly as the evaluators score it (`evaluation.predict`: same batches, same
deterministic settings), so a labelled file's score equals `evaluation.score` to the unit.

torch and onnx are imported with this module: the CLI imports it inside its commands.

Export writes an ONNX graph with torch's TorchScript exporter at a pinned opset, taking the
file's flat rows (batch, num_features) and giving the model's outputs (batch, *output_shape);
`check_onnx` runs it with `onnx.reference` (no runtime needed) against torch on every row.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from marketplace.delivered.card_markdown import describe_score
from marketplace.errors import ExportError
from marketplace.rules.datafiles import Dataset, Features, Labels, load_rows
from marketplace.rules.evaluation import (
    EVAL_BATCH_SIZE,
    check_fits,
    negated_sse,
    predict,
    right_rows,
)
from marketplace.rules.layers import LAYER_TYPES
from marketplace.rules.messages import Metric
from marketplace.rules.models import build_model

if TYPE_CHECKING:
    from marketplace.delivered.card import ModelCard
    from marketplace.delivered.modeldir import ModelFiles

MAX_DATA_BYTES = 1024 * 1024 * 1024
# A multiple of EVAL_BATCH_SIZE: each chunk splits into the very batches `score` runs, so the
# outputs are bit for bit the evaluators' while the caller sees progress between chunks.
CHUNK_ROWS = 32 * EVAL_BATCH_SIZE
ONNX_OPSET = 17  # LayerNormalization is an operator from 17 on; onnx 1.23's reference runs it
ONNX_INPUT, ONNX_OUTPUT = "rows", "outputs"
# Every layer type of `layers.py` has an export below; a type added to the allow-list without
# one is refused by name rather than exported wrong.
EXPORTABLE = frozenset(LAYER_TYPES)
# ONNX and torch compute in float32 but not in the same order (numpy's pairwise sums, torch's
# blocked kernels, erf and tanh from different libraries), so outputs differ by a few float32
# ulps per layer: measured 1e-7 to 1e-6 on the test models. 1e-4 relative to the largest
# output (at least 1) leaves two orders of magnitude for deeper models while still catching
# any real mistake (a wrong layer, a wrong layout, dropout left on) by several orders.
ONNX_TOLERANCE = 1e-4
ONNX_CHECK_ROWS = 1024  # rows per run of the reference evaluator (bounds its memory)

Progress = Callable[[int], None]
"""Called with the rows done so far, after each chunk."""


@dataclass(frozen=True, eq=False)
class Rows:
    """A data file read for prediction: features, and the labels when the file has them."""

    features: Features
    labels: Labels | None
    num_classes: int | None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def dataset(self) -> Dataset:
        """The rows as a `Dataset` (zeros as labels when the file has none: for shape checks)."""
        if self.labels is not None:
            return Dataset(self.features, self.labels, self.num_classes)
        zeros: Labels = (
            np.zeros(len(self), np.int64) if self.num_classes else np.zeros(len(self), np.float64)
        )
        return Dataset(self.features, zeros, self.num_classes)


@dataclass(frozen=True)
class Prediction:
    """What the model says of each row; with labels, the score as the evaluators count it."""

    metric: Metric
    predictions: npt.NDArray[np.int64] | npt.NDArray[np.float32]  # class index (-1: NaN) or value
    score: int | None  # rows right (accuracy), negated SSE in 10^-6 units; None without labels

    def describe(self) -> str:
        """'accuracy 0.9532 (1,234 of 1,295 rows)' or 'negated SSE -12.5 (1,295 rows)'."""
        if self.score is None:
            return "no labels in the file: predictions only"
        return describe_score(self.metric, self.score, len(self.predictions))


@dataclass(frozen=True)
class OnnxCheck:
    """The exported graph against torch on the same rows."""

    rows: int
    max_difference: float  # largest |onnx - torch| over every output value (inf: a lone NaN)
    tolerance: float  # ONNX_TOLERANCE x max(1, largest |torch output|)
    disagreeing_rows: tuple[int, ...]  # rows (from 1) whose predicted class differs

    @property
    def ok(self) -> bool:
        return self.max_difference <= self.tolerance and not self.disagreeing_rows


def load_data(path: str | os.PathLike[str], card: ModelCard) -> Rows:
    """A CSV or `.npz` file with the card's schema; the labels optional (DataFormatError,
    naming what was expected and what was found, for anything else)."""
    features, labels = load_rows(path, card.data, MAX_DATA_BYTES)
    return Rows(features, labels, card.data.num_classes)


def predict_file(files: ModelFiles, rows: Rows, progress: Progress | None = None) -> Prediction:
    """The model's prediction of every row, in chunks (calling `progress` after each), and its
    score when the rows are labelled: equal to `evaluation.score` on the same file."""
    metric = Metric(files.card.metric)
    check_fits(files.spec, rows.dataset(), metric)
    parts: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(rows), CHUNK_ROWS):
        parts.append(predict(files.spec, files.weights, rows.features[start : start + CHUNK_ROWS]))
        if progress is not None:
            progress(min(start + CHUNK_ROWS, len(rows)))
    outputs = np.concatenate(parts)
    if metric is Metric.ACCURACY:
        classes = np.argmax(outputs, axis=1).astype(np.int64)
        classes[np.isnan(outputs).any(axis=1)] = -1  # never right when scored: no class
        score = None
        if rows.labels is not None:
            score = int(np.count_nonzero(right_rows(outputs, rows.labels.astype(np.int64))))
        return Prediction(metric, classes, score)
    values = outputs[:, 0]
    score = None if rows.labels is None else negated_sse(values, rows.labels.astype(np.float64))
    return Prediction(metric, values, score)


# ------------------------------------------------------------------------------- ONNX export


def export_onnx(files: ModelFiles) -> bytes:
    """The model as an ONNX graph (opset `ONNX_OPSET`, a dynamic batch axis): input 'rows'
    (batch, num_features) float32 or int64, output 'outputs' (batch, *output_shape), the card's
    task, metric and weights digest in its metadata. ExportError if a layer cannot export."""
    module = _exportable(files)
    example = torch.zeros(
        (2, math.prod(files.spec.input_shape)),
        dtype=torch.int64 if files.spec.input_dtype == "int64" else torch.float32,
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works, the stub says path
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            )
        except Exception as exc:  # torch raises many types; each means "cannot export"
            raise ExportError(f"torch cannot export the model to ONNX: {exc}") from None
    graph = onnx.load_from_string(buffer.getvalue())
    card = files.card
    onnx.helper.set_model_props(
        graph,
        {
            "marketplace.task": str(card.task_id),
            "marketplace.metric": str(card.metric),
            "marketplace.winner": str(card.model.winner),
            "marketplace.weights_sha256": card.model.weights_sha256,
            "marketplace.spec": files.spec.to_json().decode(),
        },
    )
    onnx.checker.check_model(graph)
    return graph.SerializeToString()  # type: ignore[no-any-return]


def check_onnx(graph: bytes, files: ModelFiles, rows: Rows) -> OnnxCheck:
    """Run `graph` with `onnx.reference` on every row and compare with torch (the scoring
    path, `evaluation.predict`): the largest output difference, and for accuracy the rows
    whose predicted class (first maximum) differs. ExportError if the graph does not run."""
    check_fits(files.spec, rows.dataset(), Metric(files.card.metric))
    expected = predict(files.spec, files.weights, rows.features)
    try:
        evaluator = ReferenceEvaluator(onnx.load_from_string(graph))
        parts = [
            _run(evaluator, rows.features[start : start + ONNX_CHECK_ROWS])
            for start in range(0, len(rows), ONNX_CHECK_ROWS)
        ]
    except Exception as exc:  # onnx raises many types; each means "this graph does not run"
        raise ExportError(f"the ONNX graph does not run on the rows: {exc}") from None
    got = np.concatenate(parts).astype(np.float32)
    if got.shape != expected.shape:
        raise ExportError(f"the ONNX graph outputs shape {got.shape}, torch {expected.shape}")
    both_nan = np.isnan(got) & np.isnan(expected)
    difference = np.where(both_nan, 0.0, np.abs(got.astype(np.float64) - expected))
    difference = np.nan_to_num(difference, nan=np.inf)  # a NaN on one side only
    finite = np.abs(expected[np.isfinite(expected)])
    largest = float(finite.max()) if finite.size else 0.0
    disagreeing: tuple[int, ...] = ()
    if Metric(files.card.metric) is Metric.ACCURACY:
        differs = np.argmax(got, axis=1) != np.argmax(expected, axis=1)
        disagreeing = tuple(int(i) + 1 for i in np.flatnonzero(differs))
    return OnnxCheck(
        rows=len(rows),
        max_difference=float(difference.max()) if difference.size else 0.0,
        tolerance=ONNX_TOLERANCE * max(1.0, largest),
        disagreeing_rows=disagreeing,
    )


def _run(evaluator: ReferenceEvaluator, features: Features) -> npt.NDArray[np.float32]:
    """The graph's output on `features` (run() returns a list when no output names are given,
    though its stub says a dict)."""
    outputs: Any = evaluator.run(None, {ONNX_INPUT: np.array(features)})
    return np.asarray(outputs[0], dtype=np.float32)


def probe_rows(files: ModelFiles, count: int = 256, seed: int = 0) -> Rows:
    """`count` seeded random rows of the card's schema, to check a graph when no data file is
    given: N(0, 1) features, or token ids below the embedding's size."""
    rng = np.random.default_rng(seed)
    width = math.prod(files.spec.input_shape)
    first = files.spec.layers[0]
    features: Features
    if files.spec.input_dtype == "int64":
        vocabulary = getattr(first, "num_embeddings", 2)
        features = rng.integers(0, vocabulary, (count, width), dtype=np.int64)
    else:
        features = rng.standard_normal((count, width), dtype=np.float32)
    return Rows(features, None, files.card.data.num_classes)


def _exportable(files: ModelFiles) -> nn.Module:
    """The model as torch will trace it: flat rows reshaped to the input shape, then the
    spec's layers, in eval mode; `embedding_mean` as a gather and a mean over positions."""
    refused = [layer.type for layer in files.spec.layers if layer.type not in EXPORTABLE]
    if refused:
        raise ExportError(f"layer type {refused[0]!r} has no ONNX export (yet)")
    model = build_model(files.spec, files.weights)
    layers = [_Gathered(m.weight) if isinstance(m, nn.EmbeddingBag) else m for m in model]
    module = nn.Sequential(_Unflat(files.spec.input_shape), *layers)
    module.train(False)  # dropout off, as when scored
    return module


class _Unflat(nn.Module):
    """(batch, values) -> (batch, *shape): one Reshape with -1 for the batch."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.reshape((-1, *self.shape))


class _Gathered(nn.Module):
    """`nn.EmbeddingBag(mode="mean")` on (batch, positions) as Gather + ReduceMean: torch
    exports EmbeddingBag as a Loop with the traced batch's offsets baked in, wrong for any
    other batch size. Same weights, same mean; only the order of the sum may differ."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (batch, positions) -> embeddings (batch, positions, dim) -> (batch, dim)
        return nn.functional.embedding(tokens, self.weight).mean(dim=1)
