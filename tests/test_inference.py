"""Using a delivered model: `inference.predict_file` scores as the evaluators do, files without
labels predict the same, wrong schemas are one clear error, and the ONNX export agrees with
torch on every row for every allow-listed layer type; `sponsor model predict/export` on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from marketplace.delivered import inference
from marketplace.delivered.card import CardModel, CardScore, CardSettlement, ModelCard
from marketplace.delivered.inference import Rows, check_onnx, export_onnx, load_data, predict_file
from marketplace.delivered.modeldir import ModelFiles, read_model, write_model
from marketplace.errors import DataFormatError, ExportError
from marketplace.rules.datafiles import Dataset, load_dataset, to_csv
from marketplace.rules.evaluation import predict, score
from marketplace.rules.layers import LAYER_TYPES
from marketplace.rules.messages import DataSchema, Metric
from marketplace.rules.models import ModelSpec, init_weights, mlp
from sponsor_cli.app import app

DIGITS = DataSchema(num_features=64, num_classes=10)
CAP = 64 << 20
runner = CliRunner()

CONV2D = ModelSpec(
    input_shape=[1, 8, 8],
    layers=[
        {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "gelu", "approximate": "tanh"},
        {"type": "max_pool2d", "kernel_size": 2},
        {"type": "avg_pool2d", "kernel_size": 2},
        {"type": "layer_norm", "normalized_shape": [4, 2, 2]},
        {"type": "dropout", "p": 0.5},
        {"type": "flatten"},
        {"type": "tanh"},
        {"type": "linear", "in_features": 16, "out_features": 10},
    ],
)
CONV1D = ModelSpec(
    input_shape=[4, 16],
    layers=[
        {"type": "conv1d", "in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "max_pool1d", "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "avg_pool1d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "linear", "in_features": 24, "out_features": 10},
    ],
)
TOKENS = DataSchema(input="tokens", num_features=12, num_classes=3, vocab_size=40)
EMBEDDING = ModelSpec(
    input_shape=[12],
    input_dtype="int64",
    layers=[
        {"type": "embedding_mean", "num_embeddings": 40, "embedding_dim": 16},
        {"type": "gelu"},
        {"type": "linear", "in_features": 16, "out_features": 3},
    ],
)


def card(schema: DataSchema = DIGITS, metric: Metric = Metric.ACCURACY) -> ModelCard:
    """A card with dummy provenance: prediction and export read only its task, metric, schema."""
    return ModelCard(
        task_id=7,
        task_name="digits",
        metric=metric,
        data=schema,
        model=CardModel(
            winner=12,
            kind="merge",
            architecture=1,
            architecture_author="0x" + "11" * 20,
            spec_sha256="00" * 32,
            weights_sha256="ab" * 32,
            delivery_cid="bafy",
            delivered_by="0x" + "22" * 20,
        ),
        validation=CardScore(file_sha256="00" * 32, rows=1, score=1),
        settlement=CardSettlement(
            chain_id=31337,
            contract="0x" + "33" * 20,
            payout_root="00" * 32,
            payout_total=0,
            report_cid="bafy",
            report_evaluator="0x" + "44" * 20,
            created_tx="0x",
            revealed_tx="0x",
            root_txs=(),
            finalized_tx="",
        ),
    )


def trained(spec: ModelSpec, x: npt.NDArray[Any], y: npt.NDArray[np.int64]) -> dict[str, Any]:
    """A few full-batch Adam steps from a fixed init: an accuracy well above chance."""
    from marketplace.rules.models import build_model

    torch.manual_seed(0)
    model = build_model(spec, init_weights(spec, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(x).reshape(len(x), *spec.input_shape), torch.from_numpy(y)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    """sklearn's digits three times over (5,391 rows: three chunks of `CHUNK_ROWS`)."""
    bunch = load_digits()
    x = np.tile(bunch.data.astype(np.float32), (3, 1))
    return Dataset(x, np.tile(bunch.target.astype(np.int64), 3), num_classes=10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> Path:
    """labelled.csv, unlabelled.csv, unlabelled.npz, and model/ (a trained 64-32-10 MLP)."""
    path = tmp_path_factory.mktemp("inference")
    (path / "labelled.csv").write_bytes(to_csv(digits))
    unlabelled = b"\n".join(
        line.split(b",", 1)[1] for line in to_csv(digits).splitlines()
    )  # to_csv writes the label first
    (path / "unlabelled.csv").write_bytes(unlabelled + b"\n")
    np.savez(path / "unlabelled.npz", x=digits.features)
    spec = mlp(64, 32, 10)
    weights = trained(spec, digits.features[:1797], digits.labels[:1797].astype(np.int64))
    write_model(path / "model", ModelFiles(spec, weights, card()))
    return path


@pytest.fixture(scope="module")
def files(folder: Path) -> ModelFiles:
    return read_model(folder / "model")


def test_predict_on_a_labelled_file_scores_exactly_as_the_evaluators(
    folder: Path, files: ModelFiles
) -> None:
    done: list[int] = []
    result = predict_file(files, load_data(folder / "labelled.csv", files.card), done.append)
    dataset = load_dataset(folder / "labelled.csv", DIGITS, CAP)
    expected = score(files.spec, files.weights, dataset, Metric.ACCURACY)
    assert result.score == expected
    assert expected > 0.85 * len(dataset)  # a trained model, not a trivially low score
    assert done == [2048, 4096, 5391]
    outputs = predict(files.spec, files.weights, dataset.features)
    assert result.predictions.tolist() == np.argmax(outputs, axis=1).tolist()
    assert result.describe() == (f"accuracy {expected / 5391:.4f} ({expected:,} of 5,391 rows)")


def test_a_file_without_the_label_column_gives_the_same_predictions(
    folder: Path, files: ModelFiles
) -> None:
    labelled = predict_file(files, load_data(folder / "labelled.csv", files.card))
    for name in ("unlabelled.csv", "unlabelled.npz"):
        rows = load_data(folder / name, files.card)
        result = predict_file(files, rows)
        assert rows.labels is None and result.score is None
        assert result.predictions.tolist() == labelled.predictions.tolist()


def test_regression_scores_the_negated_sse_as_the_evaluators(tmp_path: Path) -> None:
    schema = DataSchema(num_features=3, label_column="y")
    rng = np.random.default_rng(3)
    dataset = Dataset(rng.random((100, 3), dtype=np.float32), rng.random(100), None)
    (tmp_path / "data.csv").write_bytes(to_csv(dataset, "y"))
    spec = mlp(3, 4, 1)
    write_model(
        tmp_path / "m", ModelFiles(spec, init_weights(spec, 2), card(schema, Metric.NEGATED_SSE))
    )
    files = read_model(tmp_path / "m")
    result = predict_file(files, load_data(tmp_path / "data.csv", files.card))
    reread = load_dataset(tmp_path / "data.csv", schema, CAP)
    assert result.score == score(spec, files.weights, reread, Metric.NEGATED_SSE)
    assert result.predictions.dtype == np.float32
    expected = predict(spec, files.weights, reread.features)[:, 0]
    assert result.predictions.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            "label," + ",".join(f"x{i}" for i in range(63)),
            "row 1: expected 64 feature columns besides 'label', the header has 63",
        ),
        (
            ",".join(f"x{i}" for i in range(65)),
            "row 1: expected 64 feature columns (and optionally 'label'), "
            "the header has 65 columns and no 'label'",
        ),
    ],
)
def test_a_wrong_column_count_is_one_clear_error(
    tmp_path: Path, files: ModelFiles, header: str, message: str
) -> None:
    path = tmp_path / "wrong.csv"
    width = header.count(",") + 1
    path.write_text(header + "\n" + ",".join(["1"] * width) + "\n")
    with pytest.raises(DataFormatError) as error:
        load_data(path, files.card)
    assert str(error.value) == message


def test_a_non_numeric_cell_and_a_stray_npz_array_are_refused(
    tmp_path: Path, files: ModelFiles
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(",".join(f"x{i}" for i in range(64)) + "\n" + "1," * 5 + "abc" + ",1" * 58)
    with pytest.raises(DataFormatError, match=r"^row 2, column 'x5': 'abc' is not a number$"):
        load_data(path, files.card)
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 64)), z=np.zeros(2))
    with pytest.raises(DataFormatError) as error:
        load_data(tmp_path / "bad.npz", files.card)
    expected = "a .npz data file holds exactly arrays 'x', and 'y' if labelled, not ['x', 'z']"
    assert str(error.value) == expected


# ------------------------------------------------------------------------------------ ONNX


def model_files(tmp_path: Path, spec: ModelSpec, schema: DataSchema) -> ModelFiles:
    write_model(tmp_path / "m", ModelFiles(spec, init_weights(spec, 5), card(schema)))
    return read_model(tmp_path / "m")


def token_rows() -> Rows:
    rng = np.random.default_rng(1)
    return Rows(rng.integers(0, 40, (500, 12), dtype=np.int64), None, 3)


def test_the_test_specs_cover_every_allow_listed_layer_type() -> None:
    used = {
        layer.type for spec in (mlp(2, 2, 2), CONV2D, CONV1D, EMBEDDING) for layer in spec.layers
    }
    assert used | {"gelu"} == set(LAYER_TYPES)  # gelu "none" in EMBEDDING, "tanh" in CONV2D


@pytest.mark.parametrize("name", ["conv2d", "conv1d", "embedding_mean"])
def test_onnx_and_torch_agree_on_every_row(tmp_path: Path, digits: Dataset, name: str) -> None:
    spec, schema = {
        "conv2d": (CONV2D, DIGITS),
        "conv1d": (CONV1D, DIGITS),
        "embedding_mean": (EMBEDDING, TOKENS),
    }[name]
    files = model_files(tmp_path, spec, schema)
    rows = token_rows() if name == "embedding_mean" else Rows(digits.features[:1797], None, 10)
    check = check_onnx(export_onnx(files), files, rows)
    assert check.ok, check
    assert check.rows == len(rows) and check.disagreeing_rows == ()
    assert check.max_difference < 1e-5  # measured: 1e-7 to 1e-6; the tolerance is 1e-4


def test_the_mlp_graph_agrees_takes_any_batch_and_carries_the_card(
    folder: Path, files: ModelFiles
) -> None:
    graph = export_onnx(files)
    check = check_onnx(graph, files, load_data(folder / "labelled.csv", files.card))
    assert check.ok and check.rows == 5391 and check.max_difference < 1e-5
    proto = onnx.load_from_string(graph)
    assert proto.opset_import[0].version == inference.ONNX_OPSET
    (rows_input,) = proto.graph.input
    assert rows_input.name == "rows"
    assert [d.dim_param or d.dim_value for d in rows_input.type.tensor_type.shape.dim] == [
        "batch",
        64,
    ]
    props = {prop.key: prop.value for prop in proto.metadata_props}
    assert props["marketplace.task"] == "7"
    assert props["marketplace.weights_sha256"] == "ab" * 32
    assert ModelSpec.from_json(props["marketplace.spec"]) == files.spec


def test_a_graph_of_other_weights_disagrees(tmp_path: Path, files: ModelFiles) -> None:
    other = ModelFiles(files.spec, init_weights(files.spec, 9), files.card)
    rows = inference.probe_rows(files)
    check = check_onnx(export_onnx(other), files, rows)
    assert not check.ok
    assert check.max_difference > check.tolerance
    assert len(check.disagreeing_rows) > 100


def test_a_layer_type_without_an_export_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = model_files(tmp_path, CONV2D, DIGITS)
    monkeypatch.setattr(inference, "EXPORTABLE", frozenset(LAYER_TYPES) - {"max_pool2d"})
    with pytest.raises(ExportError, match=r"^layer type 'max_pool2d' has no ONNX export \(yet\)$"):
        export_onnx(files)


# ------------------------------------------------------------------------------------- CLI


def test_cli_predict_writes_every_row_and_prints_the_score(folder: Path, files: ModelFiles) -> None:
    out = folder / "predictions.csv"
    result = runner.invoke(
        app,
        [
            "model",
            "predict",
            "--model",
            str(folder / "model"),
            "--data",
            str(folder / "labelled.csv"),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = predict_file(files, load_data(folder / "labelled.csv", files.card))
    assert f"  {expected.describe()}\n" in result.output
    assert "predicted 5,391 rows of labelled.csv with task 7's model" in result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "row,prediction" and len(lines) == 5392
    assert lines[1:] == [f"{i},{p}" for i, p in enumerate(expected.predictions.tolist(), 1)]


def test_cli_predict_without_output_shows_the_first_rows(folder: Path) -> None:
    result = runner.invoke(
        app,
        [
            "model",
            "predict",
            "--model",
            str(folder / "model"),
            "--data",
            str(folder / "unlabelled.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "5,381 more" in result.output
    assert "  no labels in the file: predictions only\n" in result.output
    assert "-o FILE" in result.output


def test_cli_predict_on_a_wrong_schema_exits_1_with_one_line(folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("label,a,b\n1,2,3\n")
    result = runner.invoke(
        app, ["model", "predict", "--model", str(folder / "model"), "--data", str(path)]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: row 1: expected 64 feature columns besides 'label', the header has 2"
    )


def test_cli_export_checks_then_writes_the_graph(folder: Path) -> None:
    model = folder / "model"
    result = runner.invoke(
        app,
        [
            "model",
            "export",
            "--model",
            str(model),
            "--format",
            "onnx",
            "--check-data",
            str(folder / "labelled.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "checked the ONNX graph against torch on 5,391 labelled.csv" in result.output
    assert "every row's prediction agrees" in result.output
    graph = (model / "model.onnx").read_bytes()
    onnx.checker.check_model(onnx.load_from_string(graph))


def test_cli_export_refuses_a_graph_that_disagrees(
    folder: Path, tmp_path: Path, files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = export_onnx(ModelFiles(files.spec, init_weights(files.spec, 9), files.card))
    monkeypatch.setattr(inference, "export_onnx", lambda _files: other)
    target = tmp_path / "out.onnx"
    result = runner.invoke(
        app, ["model", "export", "--model", str(folder / "model"), "-o", str(target)]
    )
    assert result.exit_code == 1
    assert "rows predict another class" in result.output
    assert "error: the ONNX graph disagrees with torch: not written" in result.output
    assert not target.exists()


def test_cli_export_of_a_missing_model_names_the_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "export", "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'model.json'} is missing" in result.output
