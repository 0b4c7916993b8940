"""Data files: reading a CSV or `.npz` file, capped, into the `Dataset` of rows it holds.

Data files are CSV (a header row; the schema's label column plus numeric feature columns, in
any order, read here) or `.npz` (arrays `x` and `y`, read by `marketplace.rules.npzfile`).
Problems are `DataFormatError`s that name the row and column; CSV rows are numbered as the
lines of the file (the header is row 1), `.npz` rows from 1. The size cap is checked before
anything is parsed.

Every evaluator, `verify`, the sponsor, the miner and `predict` read a file the same way, so
the rows one of them scores are the rows all of them score: a task's validation set is its
first `TaskSpec.validation_rows` rows (`load_validation`). Scoring those rows is
`marketplace.rules.evaluation`'s.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from marketplace.errors import DataFormatError
from marketplace.rules.messages import DataSchema, TaskSpec
from marketplace.rules.npzfile import read_npz

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
        return read_npz(data, schema, max_size, labels_optional)
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


def _dataset(features: Features, labels: Labels, schema: DataSchema) -> Dataset:
    features.setflags(write=False)
    labels.setflags(write=False)
    return Dataset(features, labels, schema.num_classes)
