"""`infer_schema`: a validation file's features, label column, metric and classes, read from
the file (CSV or .npz) and checked against whatever the sponsor gives."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from marketplace.errors import ConfigError, DataFormatError
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.messages import DataSchema, Metric
from marketplace.rules.schemas import infer_schema

CAP = 1 << 20


def csv_file(labels: list[Any], width: int = 30, label: str = "label") -> bytes:
    rows = Dataset(np.ones((len(labels), width), dtype=np.float32), np.array(labels))
    return to_csv(rows, label)


def npz_file(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def test_a_binary_csv_is_30_features_and_2_classes_of_accuracy() -> None:
    inferred = infer_schema(csv_file([0, 1, 1, 0]), CAP)

    assert inferred.schema == DataSchema(num_features=30, label_column="label", num_classes=2)
    assert (inferred.metric, inferred.rows, inferred.given) == (Metric.ACCURACY, 4, ())
    assert inferred.describe("val.csv") == (
        "30 features, label column 'label', 2 classes (accuracy), inferred from val.csv"
    )


def test_real_valued_labels_make_a_regression_task() -> None:
    inferred = infer_schema(csv_file([0.5, 1.25, -3.0], width=3), CAP)

    assert inferred.metric is Metric.NEGATED_SSE
    assert inferred.schema.num_classes is None
    assert inferred.describe("val.csv") == (
        "3 features, label column 'label', regression (negated_sse), inferred from val.csv"
    )


def test_a_csv_without_a_label_column_asks_for_one_and_lists_the_columns() -> None:
    data = csv_file([0, 1], width=3, label="target")

    with pytest.raises(ConfigError) as refused:
        infer_schema(data, CAP)

    assert str(refused.value) == (
        "no 'label' column in the header: name the label with --label-column, one of "
        "target, x0, x1, x2 (4 columns)"
    )
    named = infer_schema(data, CAP, label_column="target")
    assert named.schema == DataSchema(num_features=3, label_column="target", num_classes=2)
    assert named.describe("v.csv").endswith("inferred from v.csv (--label-column given)")


def test_labels_numbered_from_one_are_refused_not_guessed() -> None:
    with pytest.raises(ConfigError) as refused:
        infer_schema(csv_file([1, 2, 3], width=2), CAP)

    assert str(refused.value) == (
        "labels run 0..3 but class 0 has no row: renumber the classes 0..K-1, "
        "or give --classes 4 if the validation set lacks a class"
    )
    given = infer_schema(csv_file([1, 2, 3], width=2), CAP, classes=4)
    assert given.schema.num_classes == 4


def test_a_negative_class_label_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        infer_schema(csv_file([-1, 1, 1], width=2), CAP)

    assert str(refused.value) == (
        "class labels run 0..K-1, but 'label' holds -1: renumber them, or use --metric "
        "negated_sse for regression"
    )
    regression = infer_schema(csv_file([-1, 1, 1], width=2), CAP, metric=Metric.NEGATED_SSE)
    assert regression.schema.num_classes is None


def test_given_features_and_classes_are_checked_against_the_file() -> None:
    with pytest.raises(DataFormatError) as wide:
        infer_schema(csv_file([0, 1]), CAP, features=64)
    assert str(wide.value) == (
        "row 1: expected 64 feature columns besides 'label', the header has 30"
    )
    with pytest.raises(DataFormatError) as few:
        infer_schema(csv_file([0, 1, 2], width=2), CAP, classes=2)
    assert str(few.value) == (
        "row 4, column 'label': label 2 is out of range for 2 classes (0 to 1)"
    )
    with pytest.raises(ConfigError, match="--classes is for accuracy"):
        infer_schema(csv_file([0.5, 1.5], width=2), CAP, classes=3)


def test_an_npz_file_gives_its_width_and_integer_classes() -> None:
    x = np.zeros((5, 2, 3), dtype=np.float32)  # rows of 2 x 3 features, flattened
    inferred = infer_schema(npz_file(x, np.array([0, 2, 1, 2, 0])), CAP)

    assert inferred.schema == DataSchema(num_features=6, num_classes=3)
    assert inferred.metric is Metric.ACCURACY
    regression = infer_schema(npz_file(x, np.array([0.0, 2.5, 1, 2, 0])), CAP)
    assert (regression.metric, regression.schema.num_classes) == (Metric.NEGATED_SSE, None)


def test_one_class_only_is_not_an_accuracy_task() -> None:
    with pytest.raises(ConfigError) as refused:
        infer_schema(csv_file([0, 0], width=2), CAP)

    assert str(refused.value) == (
        "every label is 0: accuracy needs 2 classes or more (give --classes N)"
    )
