"""A task's data schema and metric, inferred from its validation file (`sponsor task create`).

What the file says is taken; only what it cannot say is asked for:
- the feature count: every CSV column but the label, or the width of the `.npz` array 'x';
- the label column: `label` when the CSV header has one, else the caller must name it
  (guessing among the columns could score the task on a feature);
- the metric: accuracy when every label is an integer (a CSV cell such as `3`, an integer
  `.npz` 'y'), else negated_sse (regression);
- the classes, for accuracy: the largest label + 1. Labels must then run 0..K-1 with every class
  present: a negative label or a missing class (labels numbered from 1, say) is refused rather
  than guessed; a caller whose validation set lacks a rare class gives the count.

The caller may give any of them; what it gives is checked against the file, not trusted. The
file is read by `marketplace.rules.evaluation`'s own readers, and finally loaded whole with the
schema (as `create_task` will), so an inferred schema is one the evaluators accept.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from pydantic import ValidationError

from marketplace.errors import ConfigError, DataFormatError
from marketplace.rules.datafiles import csv_table, is_class_index, is_npz, load_dataset
from marketplace.rules.messages import DataSchema, Metric
from marketplace.rules.npzfile import npz_arrays

DEFAULT_LABEL = "label"
SHOWN_COLUMNS = 8  # column names an error lists before "..."


@dataclass(frozen=True)
class Labels:
    """The file's shape as read before any schema: its width and label column, and the labels
    as integers (None when one is not an integer)."""

    features: int
    label_column: str
    integers: list[int] | None


@dataclass(frozen=True)
class InferredSchema:
    """A schema and metric, and which of them the caller gave (the rest came from the file)."""

    schema: DataSchema
    metric: Metric
    rows: int
    given: tuple[str, ...] = ()

    def describe(self, source: str) -> str:
        """e.g. "30 features, label column 'label', 2 classes (accuracy), inferred from val.csv"."""
        if len(self.given) == 4:
            return f"{summary(self.schema)}, checked against {source}"
        given = f" ({', '.join(self.given)} given)" if self.given else ""
        return f"{summary(self.schema)}, inferred from {source}{given}"


def summary(schema: DataSchema) -> str:
    """e.g. "30 features, label column 'label', 2 classes (accuracy)"."""
    kind = (
        f"{schema.num_classes} classes (accuracy)"
        if schema.num_classes is not None
        else "regression (negated_sse)"
    )
    return f"{schema.num_features} features, label column {schema.label_column!r}, {kind}"


def infer_schema(
    data: bytes,
    max_size: int,
    *,
    label_column: str | None = None,
    metric: Metric | None = None,
    features: int | None = None,
    classes: int | None = None,
) -> InferredSchema:
    """The schema and metric of the validation file `data` (CSV or `.npz` bytes), with what the
    caller gave in place of what would be inferred (each named by its option in errors).

    Raises:
        ConfigError: something cannot be inferred, or what was given contradicts the file.
        DataFormatError: the file is malformed (the row and column named).
    """
    options = {"--features": features, "--label-column": label_column, "--metric": metric}
    given = tuple(name for name, value in {**options, "--classes": classes}.items() if value)
    read = _read_labels(data, max_size, label_column)
    metric = metric or (Metric.NEGATED_SSE if read.integers is None else Metric.ACCURACY)
    if metric is Metric.NEGATED_SSE and classes is not None:
        raise ConfigError("--classes is for accuracy; negated_sse is regression, without classes")
    if metric is Metric.ACCURACY and classes is None:
        classes = _class_count(read)
    try:
        schema = DataSchema(
            num_features=features or read.features,
            label_column=read.label_column,
            num_classes=classes if metric is Metric.ACCURACY else None,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(
            f"bad schema: {'.'.join(map(str, error['loc']))}: {error['msg']}"
        ) from None
    rows = len(load_dataset(data, schema, max_size))  # every cell, as the evaluators read it
    return InferredSchema(schema, metric, rows, given)


def _read_labels(data: bytes, max_size: int, label_column: str | None) -> Labels:
    if not data:
        raise DataFormatError("the file is empty")
    if is_npz(data):
        x, y = npz_arrays(data, max_size)
        assert y is not None  # without labels_optional, 'y' is required
        width = int(x.size // x.shape[0]) if x.ndim >= 2 and x.shape[0] else 0
        integers = [int(v) for v in y.ravel().tolist()] if y.dtype.kind in "iu" else None
        return Labels(width, label_column or DEFAULT_LABEL, integers)
    reader, names = csv_table(data)
    label = label_column or (DEFAULT_LABEL if DEFAULT_LABEL in names else None)
    if label is None or label not in names:
        shown = ", ".join(names[:SHOWN_COLUMNS]) + (", ..." if len(names) > SHOWN_COLUMNS else "")
        missing = f"no column {label!r}" if label else f"no {DEFAULT_LABEL!r} column"
        raise ConfigError(
            f"{missing} in the header: name the label with --label-column, one of {shown} "
            f"({len(names)} columns)"
        )
    at = names.index(label)
    texts: list[str] = []
    try:
        for row in reader:
            if len(row) > at and row != [""]:  # short rows: load_dataset names them
                texts.append(row[at])
    except csv.Error as exc:
        raise DataFormatError(f"row {reader.line_num}: {exc}") from None
    integers = [int(t) for t in texts] if all(map(is_class_index, texts)) else None
    return Labels(len(names) - 1, label, integers)


def _class_count(read: Labels) -> int:
    """max label + 1, once the labels are known to be the classes 0..K-1, each present."""
    if read.integers is None:
        raise ConfigError(
            f"accuracy needs integer class labels, and {read.label_column!r} holds other "
            "numbers: use --metric negated_sse for regression"
        )
    present = set(read.integers)
    if not present:
        raise DataFormatError("the file has no data rows")
    if min(present) < 0:
        raise ConfigError(
            f"class labels run 0..K-1, but {read.label_column!r} holds {min(present)}: "
            "renumber them, or use --metric negated_sse for regression"
        )
    count = max(present) + 1
    missing = sorted(set(range(count)) - present)
    if missing:
        shown = ", ".join(map(str, missing[:SHOWN_COLUMNS])) + (", ..." if len(missing) > 8 else "")
        raise ConfigError(
            f"labels run 0..{count - 1} but class {shown} has no row: renumber the classes "
            f"0..K-1, or give --classes {count} if the validation set lacks a class"
        )
    if count < 2:
        raise ConfigError("every label is 0: accuracy needs 2 classes or more (give --classes N)")
    return count
