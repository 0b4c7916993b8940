"""Data files and deterministic scoring: every evaluator gets the same integer, bit for bit.

Data files are CSV (a header row; the schema's label column plus numeric feature columns, in
any order) or `.npz` (arrays `x` and `y`, read with `allow_pickle=False`). Problems are
`DataFormatError`s that name the row and column; CSV rows are numbered as the lines of the
file (the header is row 1), `.npz` rows from 1.

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

Bounded work (DESIGN.md, "Bounded evaluator work"): a task's validation set is scored on its
first `TaskSpec.validation_rows` rows (`load_validation`); `check_budget` prices a model at
multiply-adds per row x those rows against the task's budget before anyone trains it; and
`score` takes a time limit, checked between batches, as a safety net (`ScoringTimeout`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from marketplace.errors import DataFormatError, OverBudget, ScoringTimeout, SpecError
from marketplace.rules.layers import EmbeddingMean
from marketplace.rules.messages import DataSchema, Metric, TaskSpec
from marketplace.rules.models import ModelSpec, build_model, macs_per_sample, output_shape

if TYPE_CHECKING:
    import torch

EVAL_BATCH_SIZE = 64  # x MAX_ACTIVATION_VALUES float32 = at most 256 MiB per layer output
SSE_SCALE = 10**6  # squared errors are counted in units of 10^-6
SSE_ROW_CAP = 10**18  # the most one row can count (also what a non-finite prediction counts)
FLOAT32_OVERFLOW = (2 - 2**-24) * 2**127  # from here up, a float64 rounds to float32 inf

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

Features = npt.NDArray[np.float32] | npt.NDArray[np.int64]
Labels = npt.NDArray[np.int64] | npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Rows of a data file, read-only.

    `features`: (rows, num_features), float32 features or int64 tokens. `labels`: (rows,),
    int64 class indices when `num_classes` is set, else float64 regression targets.
    """

    features: Features
    labels: Labels
    num_classes: int | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @cached_property
    def digest(self) -> bytes:
        """sha256 of the rows (each array's dtype, shape and bytes) and the class count: what
        a score is cached under, so two copies of one file share their scores."""
        hasher = hashlib.sha256(f"classes {self.num_classes}".encode())
        for array in (self.features, self.labels):
            hasher.update(f"{array.dtype.str} {array.shape}".encode())
            hasher.update(np.ascontiguousarray(array).tobytes())
        return hasher.digest()

    def head(self, rows: int) -> Dataset:
        """The first `rows` rows (all of them when there are fewer)."""
        if rows >= len(self):
            return self
        return Dataset(self.features[:rows], self.labels[:rows], self.num_classes)


def load_validation(source: bytes, spec: TaskSpec) -> Dataset:
    """A task's validation file as scored: `load_dataset`, then only the first
    `spec.validation_rows` rows when the spec declares them. A file with more rows than its
    spec declared costs no more than the budget the architectures were priced at; every
    evaluator and `verify` read it the same way."""
    dataset = load_dataset(source, spec.data, spec.max_blob_bytes)
    return dataset.head(spec.validation_rows) if spec.validation_rows else dataset


def load_dataset(
    source: str | os.PathLike[str] | bytes, schema: DataSchema, max_size: int
) -> Dataset:
    """Read a CSV or `.npz` file (a path, or its bytes), refusing anything malformed.

    The size cap is checked before reading; for `.npz` it also caps the arrays' uncompressed
    size, and each array's header (shape, dtype) must declare exactly the bytes its member
    holds, no objects, before numpy allocates anything. The format comes from the suffix of a
    path, else from the bytes (zip: `.npz`).
    """
    features, labels = _load(source, schema, max_size, labels_optional=False)
    if labels is None:  # unreachable: without labels_optional the readers require the labels
        raise DataFormatError(f"the file has no label column {schema.label_column!r}")
    return _dataset(features, labels, schema)


def load_rows(
    source: str | os.PathLike[str] | bytes, schema: DataSchema, max_size: int
) -> tuple[Features, Labels | None]:
    """`load_dataset` for prediction: the label column (CSV) or array 'y' (.npz) may be left
    out, and then the labels are None. Everything else is read and refused the same way."""
    features, labels = _load(source, schema, max_size, labels_optional=True)
    features.setflags(write=False)
    if labels is not None:
        labels.setflags(write=False)
    return features, labels


def _load(
    source: str | os.PathLike[str] | bytes,
    schema: DataSchema,
    max_size: int,
    labels_optional: bool,
) -> tuple[Features, Labels | None]:
    if isinstance(source, bytes | bytearray):
        data, suffix = bytes(source), ""
        if len(data) > max_size:
            raise DataFormatError(f"the file is {len(data):,} bytes, over the cap of {max_size:,}")
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        try:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size > max_size:
                    raise DataFormatError(
                        f"{path.name} is {size:,} bytes, over the cap of {max_size:,}"
                    )
                data = file.read(max_size + 1)
        except OSError as exc:
            raise DataFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > max_size:
            raise DataFormatError(f"{path.name} is over the cap of {max_size:,} bytes")
    if not data:
        raise DataFormatError("the file is empty")
    if is_npz(data, suffix):
        return _read_npz(data, schema, max_size, labels_optional)
    return _read_csv(data, schema, labels_optional)


def to_csv(dataset: Dataset, label_column: str = "label") -> bytes:
    """The rows as the CSV `load_dataset` reads: a header (`label_column`, x0, x1, ...) and
    one line per row, numbers written exactly (shortest round-trip form)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    width = dataset.features.shape[1]
    writer.writerow([label_column, *(f"x{i}" for i in range(width))])
    for label, row in zip(dataset.labels.tolist(), dataset.features.tolist(), strict=True):
        writer.writerow([repr(label), *(repr(value) for value in row)])
    return out.getvalue().encode()


def csv_table(data: bytes) -> tuple[Any, list[str]]:
    """A CSV file's reader, positioned after the header, and the header's names (stripped)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"the file is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise DataFormatError("the file is empty")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        return reader, [name.strip() for name in next(reader)]
    except csv.Error as exc:
        raise DataFormatError(f"row {reader.line_num}: {exc}") from None


def is_class_index(text: str) -> bool:
    """Whether a CSV label cell reads as a class index (an integer, as `_label` takes it)."""
    return _INTEGER.fullmatch(text.strip()) is not None


def is_npz(data: bytes, suffix: str = "") -> bool:
    """Whether `load_dataset` reads these bytes (from a file with `suffix`) as `.npz`."""
    return suffix == ".npz" or (suffix != ".csv" and data.startswith(_ZIP_MAGIC))


def _read_csv(
    data: bytes, schema: DataSchema, labels_optional: bool
) -> tuple[Features, Labels | None]:
    reader, names = csv_table(data)
    try:
        columns, label_at = _csv_columns(names, schema, labels_optional)
        feature_rows: list[list[Any]] = []
        labels: list[int | float] = []
        for row in reader:
            if not row or row == [""]:
                continue  # blank line
            line = reader.line_num
            if len(row) != len(names):
                raise DataFormatError(
                    f"row {line}: expected {len(names)} columns, found {len(row)}"
                )
            feature_rows.append([_cell(row[i], line, names[i], schema) for i in columns])
            if label_at is not None:
                labels.append(_label(row[label_at], line, schema))
    except csv.Error as exc:
        raise DataFormatError(f"row {reader.line_num}: {exc}") from None
    if not feature_rows:
        raise DataFormatError("the file has a header but no data rows")
    features: Features = (
        np.array(feature_rows, dtype=np.int64)
        if schema.input == "tokens"
        else np.array(feature_rows, dtype=np.float32)
    )
    if label_at is None:
        return features, None
    targets: Labels = (
        np.array(labels, dtype=np.float64)
        if schema.num_classes is None
        else np.array(labels, dtype=np.int64)
    )
    return features, targets


def _csv_columns(
    names: list[str], schema: DataSchema, labels_optional: bool = False
) -> tuple[list[int], int | None]:
    """The feature columns' positions (every column but the label) and the label's (None when
    `labels_optional` and the header has none), checked against the schema.
    Linear in the header's width: a set of the names seen, not `names.index` per column."""
    seen: set[str] = set()
    for position, name in enumerate(names):
        if not name:
            raise DataFormatError(f"row 1, column {position + 1}: the column has no name")
        if name in seen:
            raise DataFormatError(f"row 1: column {name!r} appears twice")
        seen.add(name)
    label = schema.label_column
    if label not in seen:
        if not labels_optional:
            raise DataFormatError(f"row 1: no label column {label!r} in the header")
        if len(names) != schema.num_features:
            raise DataFormatError(
                f"row 1: expected {schema.num_features} feature columns (and optionally "
                f"{label!r}), the header has {len(names)} columns and no {label!r}"
            )
        return list(range(len(names))), None
    columns = [i for i, name in enumerate(names) if name != label]
    if len(columns) != schema.num_features:
        raise DataFormatError(
            f"row 1: expected {schema.num_features} feature columns besides "
            f"{label!r}, the header has {len(columns)}"
        )
    return columns, names.index(label)


def _cell(text: str, line: int, column: str, schema: DataSchema) -> Any:
    """One feature: a finite float32 number, or a token id in range."""
    text = text.strip()
    if schema.input == "tokens":
        if not _INTEGER.fullmatch(text):
            raise DataFormatError(f"row {line}, column {column!r}: {text!r} is not a token id")
        token = int(text)
        if not 0 <= token < (schema.vocab_size or 2**63):
            raise DataFormatError(
                f"row {line}, column {column!r}: token {token} is out of range "
                f"(vocab_size {schema.vocab_size})"
            )
        return token
    if not _NUMBER.fullmatch(text):
        raise DataFormatError(f"row {line}, column {column!r}: {text!r} is not a number")
    value = float(text)
    if abs(value) >= FLOAT32_OVERFLOW:
        raise DataFormatError(f"row {line}, column {column!r}: {text!r} is too large for float32")
    return value


def _label(text: str, line: int, schema: DataSchema) -> int | float:
    text, column, classes = text.strip(), schema.label_column, schema.num_classes
    if classes is None:
        if not _NUMBER.fullmatch(text) or not math.isfinite(value := float(text)):
            raise DataFormatError(f"row {line}, column {column!r}: {text!r} is not a finite number")
        return value
    if not _INTEGER.fullmatch(text):
        raise DataFormatError(f"row {line}, column {column!r}: {text!r} is not a class index")
    label = int(text)
    if not 0 <= label < classes:
        raise DataFormatError(
            f"row {line}, column {column!r}: label {label} is out of range "
            f"for {classes} classes (0 to {classes - 1})"
        )
    return label


def npz_arrays(
    data: bytes, max_size: int, labels_optional: bool = False
) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
    """The arrays 'x' and 'y' of an `.npz` data file ('y' None when `labels_optional` and
    absent), their sizes and headers checked against the cap before numpy allocates them,
    never unpickled."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            unpacked = sum(info.file_size for info in members)
            if unpacked > max_size:
                raise DataFormatError(
                    f"the .npz arrays unpack to {unpacked:,} bytes, over the cap of {max_size:,}"
                )
            names = sorted(info.filename.removesuffix(".npy") for info in members)
            if names != ["x", "y"] and not (labels_optional and names == ["x"]):
                expected = "'x', and 'y' if labelled" if labels_optional else "'x' and 'y'"
                raise DataFormatError(
                    f"a .npz data file holds exactly arrays {expected}, not {names}"
                )
            for info in members:
                _check_npy_header(archive, info, max_size)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return npz["x"], (npz["y"] if "y" in names else None)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise DataFormatError(f"not a valid .npz data file: {exc}") from None


def _read_npz(
    data: bytes, schema: DataSchema, max_size: int, labels_optional: bool
) -> tuple[Features, Labels | None]:
    x, y = npz_arrays(data, max_size, labels_optional)
    rows = x.shape[0] if x.ndim else 0
    if x.ndim < 2 or math.prod(x.shape[1:]) != schema.num_features:
        raise DataFormatError(
            f"array 'x' has shape {x.shape}, expected (rows, {schema.num_features})"
        )
    if rows == 0:
        raise DataFormatError("the file has no data rows")
    if y is not None and y.shape != (rows,):
        raise DataFormatError(f"array 'y' has shape {y.shape}, expected ({rows},)")
    x = x.reshape(rows, schema.num_features)
    if schema.input == "tokens":
        if x.dtype.kind not in "iu":
            raise DataFormatError(f"array 'x' must hold integer token ids, not {x.dtype}")
        upper = schema.vocab_size or np.iinfo(np.int64).max
        _first_bad(x, (x < 0) | (x >= upper), f"is out of range (vocab_size {schema.vocab_size})")
        features: Features = x.astype(np.int64)
    else:
        if x.dtype.kind not in "iuf":
            raise DataFormatError(f"array 'x' must hold numbers, not {x.dtype}")
        with np.errstate(over="ignore"):  # overflow to inf is refused just below
            features = x.astype(np.float32)
        _first_bad(x, ~np.isfinite(features), "is not a finite float32 number")
    if y is None:
        return features, None
    if schema.num_classes is None:
        if y.dtype.kind not in "iuf":
            raise DataFormatError(f"array 'y' must hold numbers, not {y.dtype}")
        _first_bad(y, ~np.isfinite(y), "is not a finite number")
        return features, y.astype(np.float64)
    if y.dtype.kind not in "iu":
        raise DataFormatError(f"array 'y' must hold integer class indices, not {y.dtype}")
    out_of_range = (y < 0) | (y >= schema.num_classes)
    _first_bad(y, out_of_range, f"is out of range for {schema.num_classes} classes")
    return features, y.astype(np.int64)


def _check_npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_size: int) -> None:
    """Refuse a member whose .npy header declares more bytes than it holds, or than the cap,
    or Python objects: numpy allocates the declared shape before it reads a byte of data."""
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise DataFormatError(f"array {name!r} is .npy version {version}, not 1.0 or 2.0")
        held = info.file_size - member.tell()  # the zip member stops at its declared size
    if dtype.hasobject:
        raise DataFormatError(f"array {name!r} holds Python objects ({dtype}), not numbers")
    declared = math.prod(shape) * dtype.itemsize
    if declared > max_size:
        raise DataFormatError(
            f"array {name!r} declares shape {shape} of {dtype}: {declared:,} bytes, "
            f"over the cap of {max_size:,}"
        )
    if declared != held:
        raise DataFormatError(
            f"array {name!r} declares shape {shape} of {dtype} ({declared:,} bytes) "
            f"but holds {held:,} bytes"
        )


def _first_bad(array: npt.NDArray[Any], bad: npt.NDArray[np.bool_], why: str) -> None:
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        name = "x" if array.ndim == 2 else "y"
        where = f", column {index[1] + 1}" if len(index) == 2 else ""
        raise DataFormatError(
            f"row {index[0] + 1}{where} of {name!r} ({name}{list(index)}): {array[index]} {why}"
        )


def _dataset(features: Features, labels: Labels, schema: DataSchema) -> Dataset:
    features.setflags(write=False)
    labels.setflags(write=False)
    return Dataset(features, labels, schema.num_classes)


# ---------------------------------------------------------------------------------- scoring


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
