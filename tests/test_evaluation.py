"""Data files (CSV, .npz) and deterministic integer scores: across runs and across processes."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from sklearn.datasets import load_digits

from marketplace.errors import DataFormatError, SpecError, WeightsError
from marketplace.rules.datafiles import Dataset, load_dataset
from marketplace.rules.evaluation import (
    SSE_ROW_CAP,
    check_schema_fits,
    deterministic,
    predict,
    score,
)
from marketplace.rules.messages import DataSchema, Metric
from marketplace.rules.models import ModelSpec, build_model, init_weights, parameter_shapes
from marketplace.wire.codec import encode_weights
from tests.helpers import MLP_SPEC

DIGITS = DataSchema(num_features=64, num_classes=10)
MAX = 8 << 20
MLP = ModelSpec.from_json(json.dumps(MLP_SPEC))
CONV2D = ModelSpec.from_json(
    json.dumps(
        {
            "input_shape": [1, 8, 8],
            "layers": [
                {
                    "type": "conv2d",
                    "in_channels": 1,
                    "out_channels": 4,
                    "kernel_size": 3,
                    "padding": 1,
                },
                {"type": "gelu"},
                {"type": "avg_pool2d", "kernel_size": 2},
                {"type": "flatten"},
                {"type": "layer_norm", "normalized_shape": [64]},
                {"type": "linear", "in_features": 64, "out_features": 10},
            ],
        }
    )
)
CONV1D = ModelSpec.from_json(
    json.dumps(
        {
            "input_shape": [1, 64],
            "layers": [
                {
                    "type": "conv1d",
                    "in_channels": 1,
                    "out_channels": 3,
                    "kernel_size": 5,
                    "stride": 2,
                },
                {"type": "tanh"},
                {"type": "max_pool1d", "kernel_size": 2},
                {"type": "flatten"},
                {"type": "dropout", "p": 0.5},
                {"type": "linear", "in_features": 45, "out_features": 10},
            ],
        }
    )
)
TOKENS = ModelSpec.from_json(
    json.dumps(
        {
            "input_shape": [12],
            "input_dtype": "int64",
            "layers": [
                {"type": "embedding_mean", "num_embeddings": 50, "embedding_dim": 8},
                {"type": "linear", "in_features": 8, "out_features": 3},
            ],
        }
    )
)
LINE = ModelSpec.from_json(
    '{"input_shape": [1], "layers": [{"type": "linear", "in_features": 1, "out_features": 1}]}'
)


@pytest.fixture(scope="module")
def digits() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    bunch = load_digits()
    return bunch.data, bunch.target


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory: pytest.TempPathFactory, digits: Any) -> Path:
    x, y = digits
    lines = [",".join([*(f"x{i}" for i in range(64)), "label"])]
    lines += [
        ",".join([*(f"{v:g}" for v in row), str(label)]) for row, label in zip(x, y, strict=True)
    ]
    path = tmp_path_factory.mktemp("data") / "digits.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def dataset(digits_csv: Path) -> Dataset:
    return load_dataset(digits_csv, DIGITS, MAX)


def trained_mlp(dataset: Dataset) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(MLP, init_weights(MLP, 0))
    x, y = torch.from_numpy(dataset.features.copy()), torch.from_numpy(dataset.labels.copy())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def csv_bytes(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------------------- data files


def test_csv_and_npz_load_the_same_rows(digits: Any, digits_csv: Path, dataset: Dataset) -> None:
    x, y = digits
    assert dataset.features.dtype == np.float32 and dataset.features.shape == (1797, 64)
    assert dataset.labels.dtype == np.int64 and dataset.num_classes == 10 and len(dataset) == 1797
    assert np.array_equal(dataset.features, x.astype(np.float32))
    assert np.array_equal(dataset.labels, y)
    assert not dataset.features.flags.writeable
    from_bytes = load_dataset(digits_csv.read_bytes(), DIGITS, MAX)
    assert np.array_equal(from_bytes.features, dataset.features)
    for shaped in (x, x.reshape(-1, 8, 8)):
        npz = load_dataset(npz_bytes(x=shaped, y=y), DIGITS, MAX)
        assert np.array_equal(npz.features, dataset.features)
        assert np.array_equal(npz.labels, dataset.labels)
        assert npz.digest == from_bytes.digest == dataset.digest  # scores cached for one, all
    relabelled = np.array(y)
    relabelled[0] = (relabelled[0] + 1) % 10
    assert load_dataset(npz_bytes(x=x, y=relabelled), DIGITS, MAX).digest != dataset.digest
    assert dataset.head(10).digest != dataset.digest


def test_csv_columns_in_any_order_and_quoted() -> None:
    schema = DataSchema(num_features=2, num_classes=3, label_column="class")
    loaded = load_dataset(csv_bytes('class,"b",a', "2, 1.5 ,-2e-1", "", "0,3,+4", ""), schema, MAX)
    assert loaded.features.tolist() == [[1.5, np.float32(-0.2)], [3.0, 4.0]]
    assert loaded.labels.tolist() == [2, 0]


def test_tokens_and_regression_files() -> None:
    tokens = DataSchema(input="tokens", num_features=3, num_classes=2, vocab_size=10)
    loaded = load_dataset(csv_bytes("t0,t1,t2,label", "1,2,9,1", "0,0,0,0"), tokens, MAX)
    assert loaded.features.dtype == np.int64 and loaded.features.tolist() == [[1, 2, 9], [0, 0, 0]]
    regression = DataSchema(num_features=1, label_column="y")
    loaded = load_dataset(csv_bytes("x,y", "1,0.1", "2,-3"), regression, MAX)
    assert loaded.labels.dtype == np.float64 and loaded.labels.tolist() == [0.1, -3.0]
    assert loaded.num_classes is None


def test_the_row_17_message_names_line_and_column() -> None:
    lines = ["x1,x2,x3,label"] + [f"{i},{i},{i},1" for i in range(2, 17)] + ["1,2,abc,1"]
    with pytest.raises(DataFormatError) as caught:
        load_dataset(csv_bytes(*lines), DataSchema(num_features=3, num_classes=2), MAX)
    assert str(caught.value) == "row 17, column 'x3': 'abc' is not a number"


TWO = DataSchema(num_features=2, num_classes=10)


@pytest.mark.parametrize(
    ("data", "schema", "message"),
    [
        (b"", TWO, "the file is empty"),
        (b"  \n\n", TWO, "the file is empty"),
        (csv_bytes("a,b,label"), TWO, "the file has a header but no data rows"),
        (csv_bytes("a,b,label", "1,2"), TWO, "row 2: expected 3 columns, found 2"),
        (csv_bytes("a,b,label", "1,2,3,4"), TWO, "row 2: expected 3 columns, found 4"),
        (csv_bytes("a,b,target", "1,2,3"), TWO, "row 1: no label column 'label' in the header"),
        (
            csv_bytes("a,b,c,label", "1,2,3,4"),
            TWO,
            "row 1: expected 2 feature columns besides 'label', the header has 3",
        ),
        (csv_bytes("a,a,label", "1,2,3"), TWO, "row 1: column 'a' appears twice"),
        (csv_bytes("a,,label", "1,2,3"), TWO, "row 1, column 2: the column has no name"),
        (
            csv_bytes("a,b,label", "1,2,3", "1,2,10"),
            TWO,
            ("row 3, column 'label': label 10 is out of range for 10 classes (0 to 9)"),
        ),
        (
            csv_bytes("a,b,label", "1,2,-1"),
            TWO,
            ("row 2, column 'label': label -1 is out of range for 10 classes (0 to 9)"),
        ),
        (
            csv_bytes("a,b,label", "1,2,2.5"),
            TWO,
            "row 2, column 'label': '2.5' is not a class index",
        ),
        (csv_bytes("a,b,label", "1,,2"), TWO, "row 2, column 'b': '' is not a number"),
        (csv_bytes("a,b,label", "nan,1,2"), TWO, "row 2, column 'a': 'nan' is not a number"),
        (csv_bytes("a,b,label", "1,inf,2"), TWO, "row 2, column 'b': 'inf' is not a number"),
        (csv_bytes("a,b,label", "1,1_000,2"), TWO, "row 2, column 'b': '1_000' is not a number"),
        (csv_bytes("a,b,label", "1,0x10,2"), TWO, "row 2, column 'b': '0x10' is not a number"),
        (
            csv_bytes("a,b,label", "1e39,1,2"),
            TWO,
            "row 2, column 'a': '1e39' is too large for float32",
        ),
        (b"a,b,label\n1,\xff,2\n", TWO, "the file is not UTF-8 text (byte 12)"),
        (b"a,b,label\n1,2,3\n1,\x00,3\n", TWO, "row 3, column 'b': '\\x00' is not a number"),
        (csv_bytes("a,b,label", '1,"2"x,3'), TWO, "row 2: ',' expected after '\"'"),
        (csv_bytes("a,b,label", '1,"2,3'), TWO, "row 2: unexpected end of data"),
        (
            csv_bytes("x,y", "1,inf"),
            DataSchema(num_features=1, label_column="y"),
            "row 2, column 'y': 'inf' is not a finite number",
        ),
        (
            csv_bytes("t0,t1,label", "1,10,0"),
            DataSchema(input="tokens", num_features=2, num_classes=2, vocab_size=10),
            "row 2, column 't1': token 10 is out of range (vocab_size 10)",
        ),
        (
            csv_bytes("t0,t1,label", "1,2.0,0"),
            DataSchema(input="tokens", num_features=2, num_classes=2, vocab_size=10),
            "row 2, column 't1': '2.0' is not a token id",
        ),
    ],
)
def test_malformed_csv_is_refused(data: bytes, schema: DataSchema, message: str) -> None:
    with pytest.raises(DataFormatError) as caught:
        load_dataset(data, schema, MAX)
    assert str(caught.value) == message


X = np.zeros((3, 2))
Y = np.array([0, 1, 2])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (npz_bytes(x=X), "a .npz data file holds exactly arrays 'x' and 'y', not ['x']"),
        (
            npz_bytes(x=X, y=Y, z=Y),
            "a .npz data file holds exactly arrays 'x' and 'y', not ['x', 'y', 'z']",
        ),
        (npz_bytes(x=np.zeros((3, 3)), y=Y), "array 'x' has shape (3, 3), expected (rows, 2)"),
        (npz_bytes(x=np.zeros(6), y=Y), "array 'x' has shape (6,), expected (rows, 2)"),
        (npz_bytes(x=np.zeros((0, 2)), y=Y[:0]), "the file has no data rows"),
        (npz_bytes(x=X, y=Y[:2]), "array 'y' has shape (2,), expected (3,)"),
        (
            npz_bytes(x=X, y=Y.astype(float)),
            "array 'y' must hold integer class indices, not float64",
        ),
        (
            npz_bytes(x=X, y=np.array([0, 10, 1])),
            "row 2 of 'y' (y[1]): 10 is out of range for 10 classes",
        ),
        (npz_bytes(x=X.astype(str), y=Y), "array 'x' must hold numbers, not <U32"),
        (
            npz_bytes(x=np.array([[0, 0], [0, 0], [0, np.nan]]), y=Y),
            "row 3, column 2 of 'x' (x[2, 1]): nan is not a finite float32 number",
        ),
        (
            npz_bytes(x=np.array([[0, 1e39], [0, 0], [0, 0]]), y=Y),
            "row 1, column 2 of 'x' (x[0, 1]): 1e+39 is not a finite float32 number",
        ),
        (
            npz_bytes(x=np.array([None] * 6).reshape(3, 2), y=Y),
            "array 'x' holds Python objects (object), not numbers",
        ),
        (b"PK\x03\x04 but not a zip", "not a valid .npz data file: File is not a zip file"),
    ],
)
def test_malformed_npz_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(DataFormatError) as caught:
        load_dataset(data, TWO, MAX)
    assert str(caught.value).startswith(message), str(caught.value)


class TouchOnLoad:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = np.array([TouchOnLoad(marker), 0], dtype=object)
    with pytest.raises(
        DataFormatError, match=r"^array 'x' holds Python objects \(object\), not numbers$"
    ):
        load_dataset(npz_bytes(x=evil.reshape(1, 2), y=np.array([0])), TWO, MAX)
    with pytest.raises(DataFormatError, match=r"^the file is not UTF-8 text \(byte 0\)$"):
        load_dataset(pickle.dumps(evil), TWO, MAX)  # a bare pickle is read as (bad) CSV
    assert not marker.exists()


def test_size_caps_come_first(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(csv_bytes("a,b,label", *["1,2,3"] * 100))
    with pytest.raises(DataFormatError, match=r"^big.csv is 610 bytes, over the cap of 600$"):
        load_dataset(path, TWO, 600)
    with pytest.raises(DataFormatError, match=r"^the file is 610 bytes, over the cap of 600$"):
        load_dataset(path.read_bytes(), TWO, 600)
    compressed = io.BytesIO()
    np.savez_compressed(compressed, x=np.zeros((100_000, 2)), y=np.zeros(100_000, dtype=np.int64))
    assert len(compressed.getvalue()) < 10_000
    with pytest.raises(
        DataFormatError, match=r"^the .npz arrays unpack to 2,400,\d+ bytes, over the cap"
    ):
        load_dataset(compressed.getvalue(), TWO, 1_000_000)
    with pytest.raises(DataFormatError, match="^cannot read .*missing.csv: No such file"):
        load_dataset(tmp_path / "missing.csv", TWO, 600)


def npy_member(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    """A .npy file whose header says `shape` and `descr`, followed by `data` (any length)."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def crafted_npz(x: bytes, y: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", x)
        archive.writestr("y.npy", y)
    return buffer.getvalue()


def test_an_npz_declaring_a_huge_shape_is_refused_before_any_allocation() -> None:
    # 2^34 rows of 64 float32s: numpy would allocate 4 TiB before reading the 256 bytes held.
    data = crafted_npz(
        npy_member((2**34, 64), "<f4", bytes(256)), npy_member((2**34,), "<i8", bytes(8))
    )
    assert len(data) < 500
    with pytest.raises(DataFormatError) as caught:
        load_dataset(data, DIGITS, MAX)
    assert str(caught.value) == (
        "array 'x' declares shape (17179869184, 64) of float32: 4,398,046,511,104 bytes, "
        "over the cap of 8,388,608"
    )


def test_an_npz_holding_fewer_bytes_than_its_header_declares_is_refused() -> None:
    data = crafted_npz(npy_member((3, 2), "<f4", bytes(8)), npy_member((3,), "<i8", bytes(24)))
    with pytest.raises(DataFormatError) as caught:
        load_dataset(data, TWO, MAX)
    assert str(caught.value) == (
        "array 'x' declares shape (3, 2) of float32 (24 bytes) but holds 8 bytes"
    )


def test_an_npz_of_object_dtype_is_refused_from_its_header() -> None:
    # The header alone says object: no byte of the (pickled) data is read.
    data = crafted_npz(npy_member((2**20, 2), "|O", b""), npy_member((3,), "<i8", bytes(24)))
    with pytest.raises(DataFormatError) as caught:
        load_dataset(data, TWO, MAX)
    assert str(caught.value) == "array 'x' holds Python objects (object), not numbers"


def test_a_crafted_npz_that_tells_the_truth_still_loads() -> None:
    x = np.arange(6, dtype="<f4").reshape(3, 2)
    y = np.array([0, 1, 2], dtype="<i8")
    data = crafted_npz(npy_member((3, 2), "<f4", x.tobytes()), npy_member((3,), "<i8", y.tobytes()))
    loaded = load_dataset(data, TWO, MAX)
    assert loaded.features.tolist() == x.tolist() and loaded.labels.tolist() == [0, 1, 2]


def test_a_30k_column_csv_header_is_checked_in_linear_time() -> None:
    width = 30_000
    names = [f"c{i}" for i in range(width)]
    wide = csv_bytes(",".join([*names, "label"]), ",".join(["0"] * (width + 1)))
    twice = csv_bytes(",".join([*names, "c0", "label"]), ",".join(["0"] * (width + 2)))
    started = time.perf_counter()
    with pytest.raises(DataFormatError) as caught_wide:
        load_dataset(wide, TWO, MAX)
    with pytest.raises(DataFormatError) as caught_twice:
        load_dataset(twice, TWO, MAX)
    elapsed = time.perf_counter() - started
    assert str(caught_wide.value) == (
        "row 1: expected 2 feature columns besides 'label', the header has 30000"
    )
    assert str(caught_twice.value) == "row 1: column 'c0' appears twice"
    assert elapsed < 1.0  # was 5-11 s (quadratic: names.index per column); now about 0.03 s


def test_a_bad_npz_path_is_not_read_as_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(csv_bytes("a,b,label", "1,2,3"))
    with pytest.raises(DataFormatError, match="not a valid .npz data file"):
        load_dataset(path, TWO, MAX)


# ----------------------------------------------------------------------------------- scores


def test_zero_weights_tie_and_ties_go_to_the_lowest_index(dataset: Dataset) -> None:
    zeros = {name: torch.zeros(shape) for name, shape in parameter_shapes(MLP).items()}
    assert score(MLP, zeros, dataset, Metric.ACCURACY) == int(np.sum(dataset.labels == 0)) == 178
    ties = {**zeros, "2.bias": torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], dtype=torch.float32)}
    assert score(MLP, ties, dataset, Metric.ACCURACY) == int(np.sum(dataset.labels == 3)) == 183


def test_nan_outputs_are_never_right(dataset: Dataset) -> None:
    weights = {name: torch.zeros(shape) for name, shape in parameter_shapes(MLP).items()}
    weights["2.bias"] = torch.tensor([float("nan")] + [-1.0] * 9)
    assert score(MLP, weights, dataset, Metric.ACCURACY) == 0


def test_a_trained_mlp_scores_the_same_twice(dataset: Dataset) -> None:
    weights = trained_mlp(dataset)
    first = score(MLP, weights, dataset, "accuracy")  # type: ignore[arg-type]
    assert first > 1700
    assert score(MLP, weights, dataset, Metric.ACCURACY) == first


def test_negated_sse_is_exact_fixed_point() -> None:
    schema = DataSchema(num_features=1, label_column="y")
    data = load_dataset(csv_bytes("x,y", "1,2.5", "2,4", "3,5", "0,0.1"), schema, MAX)
    doubling = {"0.weight": torch.tensor([[2.0]]), "0.bias": torch.tensor([0.0])}
    # errors 0.5, 0, 1, 0.1 -> 250000 + 0 + 1000000 + round(0.1^2 * 10^6) = 10000 units
    assert score(LINE, doubling, data, Metric.NEGATED_SSE) == -1_260_000
    # a prediction of inf (2 * 3e38 overflows float32) counts the row cap; 1e6 off counts 10^18
    far = load_dataset(csv_bytes("x,y", "3e38,0", "500000,-1000000", "1,2"), schema, MAX)
    assert score(LINE, doubling, far, Metric.NEGATED_SSE) == -(SSE_ROW_CAP + SSE_ROW_CAP + 0)


def test_negated_sse_rounds_each_row_to_the_nearest_unit() -> None:
    schema = DataSchema(num_features=1, label_column="y")
    # (2^-11)^2 * 10^6 = 0.2384..., (2^-10)^2 * 10^6 = 0.9536..., (2^-9)^2 * 10^6 = 3.8146...
    data = load_dataset(
        csv_bytes("x,y", "0,0.00048828125", "0,0.0009765625", "0,0.001953125"), schema, MAX
    )
    zero = {"0.weight": torch.tensor([[0.0]]), "0.bias": torch.tensor([0.0])}
    assert score(LINE, zero, data, Metric.NEGATED_SSE) == -(0 + 1 + 4)
    half = load_dataset(csv_bytes("x,y", "0,0.5", "0,1.5"), schema, MAX)
    # 0.25 * 10^6 and 2.25 * 10^6 are integers: no rounding at all
    assert score(LINE, zero, half, Metric.NEGATED_SSE) == -(250_000 + 2_250_000)


@pytest.mark.parametrize("spec", [CONV2D, CONV1D], ids=["conv2d", "conv1d"])
def test_conv_specs_score_deterministically(spec: ModelSpec, dataset: Dataset) -> None:
    weights = init_weights(spec, 5)
    first = score(spec, weights, dataset, Metric.ACCURACY)
    assert 0 <= first <= len(dataset)
    assert score(spec, weights, dataset, Metric.ACCURACY) == first
    outputs = predict(spec, weights, dataset.features)
    assert outputs.shape == (1797, 10) and outputs.dtype == np.float32
    assert np.array_equal(outputs, predict(spec, weights, dataset.features))


def test_token_specs_score_and_check_the_vocabulary() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(300, 12))
    labels = (tokens < 10).sum(axis=1) % 3
    schema = DataSchema(input="tokens", num_features=12, num_classes=3, vocab_size=50)
    data = load_dataset(npz_bytes(x=tokens, y=labels), schema, MAX)
    weights = init_weights(TOKENS, 1)
    first = score(TOKENS, weights, data, Metric.ACCURACY)
    assert score(TOKENS, weights, data, Metric.ACCURACY) == first
    expected = (weights["0.weight"][torch.from_numpy(tokens)].mean(dim=1)) @ weights["1.weight"].T
    expected += weights["1.bias"]
    assert first == int(np.sum(expected.argmax(dim=1).numpy() == labels))
    wide = DataSchema(input="tokens", num_features=12, num_classes=3, vocab_size=100)
    data = load_dataset(npz_bytes(x=tokens + 50, y=labels), wide, MAX)
    with pytest.raises(SpecError, match=r"has 50 embeddings, the data has token 99"):
        score(TOKENS, weights, data, Metric.ACCURACY)


def test_specs_that_do_not_fit_the_data_are_refused(dataset: Dataset) -> None:
    weights = init_weights(MLP, 0)
    with pytest.raises(
        SpecError, match=r"^the spec takes float32 input, the data holds int64 tokens$"
    ):
        score(
            MLP,
            weights,
            Dataset(dataset.features.astype(np.int64), dataset.labels, 10),
            Metric.ACCURACY,
        )
    narrow = Dataset(dataset.features[:, :32], dataset.labels, 10)
    with pytest.raises(
        SpecError, match=r"^input_shape \(64,\) holds 64 values, the data has 32 per row$"
    ):
        score(MLP, weights, narrow, Metric.ACCURACY)
    with pytest.raises(
        SpecError, match=r"^the spec outputs shape \(10,\), the task needs \(12,\)$"
    ):
        score(MLP, weights, Dataset(dataset.features, dataset.labels, 12), Metric.ACCURACY)
    with pytest.raises(SpecError, match="negated_sse metric needs regression targets"):
        score(MLP, weights, dataset, Metric.NEGATED_SSE)
    regression = Dataset(dataset.features, dataset.labels.astype(np.float64), None)
    with pytest.raises(SpecError, match="accuracy metric needs class labels"):
        score(MLP, weights, regression, Metric.ACCURACY)
    with pytest.raises(WeightsError, match="missing tensors"):
        score(MLP, init_weights(CONV2D, 0), dataset, Metric.ACCURACY)


def test_the_task_schema_refuses_a_spec_before_any_file_is_read() -> None:
    digits = DataSchema(num_features=64, num_classes=10)
    check_schema_fits(MLP, digits, Metric.ACCURACY)
    with pytest.raises(SpecError, match=r"^the spec outputs shape \(10,\), the task needs \(5,\)$"):
        check_schema_fits(MLP, DataSchema(num_features=64, num_classes=5), Metric.ACCURACY)
    with pytest.raises(SpecError, match=r"^input_shape \(64,\) holds 64 values, the data has 8"):
        check_schema_fits(MLP, DataSchema(num_features=8, num_classes=10), Metric.ACCURACY)
    with pytest.raises(SpecError, match="negated_sse metric needs regression targets"):
        check_schema_fits(MLP, digits, Metric.NEGATED_SSE)
    tokens = DataSchema(input="tokens", num_features=12, num_classes=3, vocab_size=50)
    check_schema_fits(TOKENS, tokens, Metric.ACCURACY)
    check_schema_fits(TOKENS, tokens.model_copy(update={"vocab_size": None}), Metric.ACCURACY)
    wide = tokens.model_copy(update={"vocab_size": 51})
    with pytest.raises(
        SpecError,
        match=r"^layers\[0\] \(embedding_mean\) has 50 embeddings, the task's vocabulary has 51",
    ):
        check_schema_fits(TOKENS, wide, Metric.ACCURACY)
    with pytest.raises(SpecError, match="the spec takes int64 input, the data holds float32"):
        check_schema_fits(TOKENS, DataSchema(num_features=12, num_classes=3), Metric.ACCURACY)


def test_torch_settings_are_restored(dataset: Dataset) -> None:
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    score(CONV2D, init_weights(CONV2D, 0), dataset, Metric.ACCURACY)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match="boom"), deterministic():
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert not torch.is_grad_enabled()
        raise RuntimeError("boom")
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


SCORE_IN_A_SUBPROCESS = """
import hashlib, sys
from pathlib import Path
from marketplace.wire.codec import decode_weights
from marketplace.rules.datafiles import load_dataset
from marketplace.rules.evaluation import predict, score
from marketplace.rules.messages import DataSchema, Metric
from marketplace.rules.models import ModelSpec
folder = Path(sys.argv[1])
data = load_dataset(folder / "digits.csv", DataSchema(num_features=64, num_classes=10), 8 << 20)
for name in ("mlp", "conv2d"):
    spec = ModelSpec.from_json((folder / f"{name}.json").read_bytes())
    weights = decode_weights((folder / f"{name}.safetensors").read_bytes(), spec, 1 << 20)
    outputs = predict(spec, weights, data.features)
    digest = hashlib.sha256(outputs.tobytes()).hexdigest()
    print(score(spec, weights, data, Metric.ACCURACY), digest)
"""


def test_another_process_gets_the_same_integers(dataset: Dataset, digits_csv: Path) -> None:
    folder = digits_csv.parent
    expected = []
    for name, spec, weights in [
        ("mlp", MLP, trained_mlp(dataset)),
        ("conv2d", CONV2D, init_weights(CONV2D, 11)),
    ]:
        (folder / f"{name}.json").write_bytes(spec.to_json())
        (folder / f"{name}.safetensors").write_bytes(encode_weights(weights))
        outputs = predict(spec, weights, dataset.features)
        digest = hashlib.sha256(outputs.tobytes()).hexdigest()
        expected.append(f"{score(spec, weights, dataset, Metric.ACCURACY)} {digest}")
    done = subprocess.run(
        [sys.executable, "-c", SCORE_IN_A_SUBPROCESS, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.splitlines() == expected
    assert int(expected[0].split()[0]) > 1700
