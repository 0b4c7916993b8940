"""Local training: accuracy on digits, bit-identical reruns, progress, the caller's RNG, DP-SGD,
FedProx's proximal term."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from marketplace.dev.shards import digits_splits
from marketplace.errors import ConfigError, DataFormatError, SpecError, WeightsError
from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import score
from marketplace.rules.messages import Metric
from marketplace.rules.models import ModelSpec, check_weights, init_weights
from miner import local_sgd
from miner.train_config import DPConfig, TrainConfig, TrainingError
from miner.trainer import Trainer, TrainResult
from tests.helpers import MLP_SPEC

MLP = ModelSpec.from_json(json.dumps(MLP_SPEC))  # 64-32-10
PLAIN = TrainConfig(epochs=5, batch_size=16, learning_rate=0.005, optimizer="adam", seed=0)
DP = TrainConfig(
    epochs=5,
    batch_size=32,
    learning_rate=0.01,
    optimizer="adam",
    seed=0,
    dp=DPConfig(epsilon=4.0, delta=1e-5, max_grad_norm=1.0),
)
# Measured on the validation split (360 rows), seed 0: 0.936 plain (0.936-0.972 over seeds
# 0-4), 0.889 with DP at epsilon 4 (0.855-0.889 over seeds 0-2). The bounds leave a margin.
PLAIN_ACCURACY = 0.90
DP_ACCURACY = 0.75
DROPOUT_MLP = ModelSpec(
    input_shape=(64,),
    layers=(
        {"type": "linear", "in_features": 64, "out_features": 32},
        {"type": "relu"},
        {"type": "dropout", "p": 0.5},
        {"type": "linear", "in_features": 32, "out_features": 10},
    ),
)
LINE = ModelSpec(
    input_shape=(1,), layers=({"type": "linear", "in_features": 1, "out_features": 1},)
)


@pytest.fixture(scope="module")
def digits() -> tuple[Dataset, Dataset, Dataset]:
    return digits_splits(seed=0)


@pytest.fixture(scope="module")
def train_set(digits: tuple[Dataset, Dataset, Dataset]) -> Dataset:
    return digits[0]


@pytest.fixture(scope="module")
def validation(digits: tuple[Dataset, Dataset, Dataset]) -> Dataset:
    return digits[1]


@pytest.fixture(scope="module")
def plain(train_set: Dataset) -> TrainResult:
    return Trainer().train(MLP, init_weights(MLP, 0), train_set, PLAIN)


@pytest.fixture(scope="module")
def private(train_set: Dataset) -> TrainResult:
    return Trainer().train(MLP, init_weights(MLP, 0), train_set, DP)


def accuracy(weights: dict[str, torch.Tensor], dataset: Dataset, spec: ModelSpec = MLP) -> float:
    return score(spec, weights, dataset, Metric.ACCURACY) / len(dataset)


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The L2 distance between two weight sets, over every tensor."""
    return math.sqrt(sum(float(((a[name] - b[name]).double() ** 2).sum()) for name in a))


def line_data(rows: int = 200, scale: float = 1.0) -> Dataset:
    x = np.random.default_rng(0).uniform(-1, 1, (rows, 1)).astype(np.float32)
    return Dataset(x, (2.0 * x[:, 0] + 1.0).astype(np.float64) * scale, num_classes=None)


# ---------------------------------------------------------------------- plain training


def test_mlp_trained_on_digits_reaches_validation_accuracy(
    plain: TrainResult, train_set: Dataset, validation: Dataset
) -> None:
    assert accuracy(init_weights(MLP, 0), validation) < 0.2
    assert accuracy(plain.weights, validation) >= PLAIN_ACCURACY
    assert (plain.samples, plain.epochs, plain.epsilon) == (len(train_set), 5, None)
    assert plain.steps == 5 * math.ceil(len(train_set) / 16)
    assert 0 < plain.loss < 0.5
    assert plain.seconds > 0


def test_weights_are_float32_under_the_specs_names(plain: TrainResult) -> None:
    check_weights(MLP, plain.weights)
    assert list(plain.weights) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_same_seed_gives_bit_identical_weights_whatever_the_callers_rng(
    plain: TrainResult, train_set: Dataset
) -> None:
    torch.manual_seed(12345)  # the caller's global RNG plays no part
    again = Trainer().train(MLP, init_weights(MLP, 0), train_set, PLAIN)

    assert identical(again.weights, plain.weights)
    assert again.loss == plain.loss


def test_different_seed_gives_different_weights(plain: TrainResult, train_set: Dataset) -> None:
    other = Trainer().train(
        MLP, init_weights(MLP, 0), train_set, PLAIN.model_copy(update={"seed": 1})
    )

    assert all(not torch.equal(other.weights[n], plain.weights[n]) for n in plain.weights)


def test_dropout_masks_are_seeded(train_set: Dataset) -> None:
    config = PLAIN.model_copy(update={"epochs": 1})
    runs = [
        Trainer().train(DROPOUT_MLP, init_weights(DROPOUT_MLP, 0), train_set, config)
        for _ in range(2)
    ]
    other = Trainer().train(
        DROPOUT_MLP, init_weights(DROPOUT_MLP, 0), train_set, config.model_copy(update={"seed": 9})
    )

    assert identical(runs[0].weights, runs[1].weights)
    assert not identical(runs[0].weights, other.weights)


def test_parent_weights_are_left_untouched(train_set: Dataset) -> None:
    parent = init_weights(MLP, 0)
    copy = {name: tensor.clone() for name, tensor in parent.items()}

    Trainer().train(MLP, parent, train_set, PLAIN.model_copy(update={"epochs": 1}))

    assert identical(parent, copy)


def test_progress_counts_every_step_up_to_the_total(train_set: Dataset) -> None:
    calls: list[tuple[int, int]] = []
    config = PLAIN.model_copy(update={"epochs": 2, "batch_size": 100})

    result = Trainer().train(
        MLP, init_weights(MLP, 0), train_set, config, progress=lambda *c: calls.append(c)
    )

    total = 2 * math.ceil(len(train_set) / 100)
    assert calls == [(done, total) for done in range(1, total + 1)]
    assert result.steps == total


def test_callers_rng_threads_and_determinism_switch_are_restored(train_set: Dataset) -> None:
    torch.manual_seed(7)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()

    Trainer().train(
        DROPOUT_MLP, init_weights(DROPOUT_MLP, 0), train_set, PLAIN.model_copy(update={"epochs": 1})
    )

    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_trains_inside_a_callers_inference_mode(train_set: Dataset) -> None:
    config = PLAIN.model_copy(update={"epochs": 1})
    with torch.inference_mode():
        result = Trainer().train(MLP, init_weights(MLP, 0), train_set, config)

    assert not identical(result.weights, init_weights(MLP, 0))


def test_regression_trains_with_squared_error() -> None:
    data = line_data()
    config = TrainConfig(epochs=20, batch_size=20, learning_rate=0.1, optimizer="sgd", seed=0)
    start = init_weights(LINE, 0)

    result = Trainer().train(LINE, start, data, config)

    assert score(LINE, result.weights, data, Metric.NEGATED_SSE) > score(
        LINE, start, data, Metric.NEGATED_SSE
    )
    assert result.loss < 0.01
    assert result.weights["0.weight"].item() == pytest.approx(2.0, abs=0.1)


def test_token_spec_trains_on_int64_ids() -> None:
    spec = ModelSpec(
        input_shape=(12,),
        input_dtype="int64",
        layers=(
            {"type": "embedding_mean", "num_embeddings": 50, "embedding_dim": 8},
            {"type": "linear", "in_features": 8, "out_features": 3},
        ),
    )
    rng = np.random.default_rng(0)
    data = Dataset(rng.integers(0, 50, (60, 12)), rng.integers(0, 3, 60), num_classes=3)
    config = TrainConfig(epochs=2, batch_size=8, learning_rate=0.01, optimizer="adam", seed=0)

    result = Trainer().train(spec, init_weights(spec, 0), data, config)

    check_weights(spec, result.weights)
    with pytest.raises(TrainingError, match="embedding_mean"):
        Trainer().train(spec, init_weights(spec, 0), data, config.model_copy(update={"dp": DP.dp}))


def test_plain_training_never_imports_opacus(
    monkeypatch: pytest.MonkeyPatch, train_set: Dataset
) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)  # any import of it now fails
    config = PLAIN.model_copy(update={"epochs": 1})

    Trainer().train(MLP, init_weights(MLP, 0), train_set, config)
    with pytest.raises(ImportError):
        Trainer().train(MLP, init_weights(MLP, 0), train_set, DP.model_copy(update={"epochs": 1}))


def test_importing_the_trainer_loads_neither_torch_nor_opacus() -> None:
    code = "import sys, miner.trainer; print('torch' in sys.modules, 'opacus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------- DP-SGD


def test_dp_training_spends_at_most_the_target_epsilon(private: TrainResult) -> None:
    assert private.epsilon is not None
    assert 0 < private.epsilon <= 4.0
    assert private.epsilon > 3.5  # the noise is calibrated to the budget, not far below it


def test_dp_weights_carry_the_specs_names_without_opacus_prefixes(private: TrainResult) -> None:
    check_weights(MLP, private.weights)
    assert all(math.isfinite(float(t.abs().max())) for t in private.weights.values())


def test_dp_training_reaches_a_lower_but_sane_accuracy(
    private: TrainResult, validation: Dataset, train_set: Dataset
) -> None:
    assert accuracy(private.weights, validation) >= DP_ACCURACY
    assert private.samples == len(train_set)
    assert private.steps == 5 * math.ceil(len(train_set) / 32)  # Opacus: 1 / sample rate per epoch


def test_dp_training_is_deterministic_for_a_seed(train_set: Dataset) -> None:
    assert DP.dp is not None
    config = DP.model_copy(
        update={"epochs": 1, "dp": DP.dp.model_copy(update={"accountant": "rdp"})}
    )
    runs = [Trainer().train(MLP, init_weights(MLP, 0), train_set, config) for _ in range(2)]
    other = Trainer().train(
        MLP, init_weights(MLP, 0), train_set, config.model_copy(update={"seed": 1})
    )

    assert identical(runs[0].weights, runs[1].weights)
    assert runs[0].epsilon == runs[1].epsilon
    assert runs[0].epsilon is not None and 0 < runs[0].epsilon <= 4.0
    assert not identical(runs[0].weights, other.weights)


def test_dp_survives_empty_poisson_batches() -> None:
    data = line_data(rows=20)  # expected batch of 1: about a third of the batches are empty
    config = TrainConfig(
        epochs=2,
        batch_size=1,
        learning_rate=0.05,
        optimizer="sgd",
        seed=0,
        dp=DPConfig(epsilon=8.0, delta=1e-3, max_grad_norm=1.0, accountant="rdp"),
    )

    result = Trainer().train(LINE, init_weights(LINE, 0), data, config)

    assert result.steps == 40
    assert result.epsilon is not None and 0 < result.epsilon <= 8.0
    check_weights(LINE, result.weights)


# ---------------------------------------------------------------------- the proximal term


def test_prox_mu_zero_skips_the_term_and_trains_bit_identically(
    plain: TrainResult, train_set: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_term(*args: object) -> None:
        raise AssertionError("the proximal term was built with mu 0")

    monkeypatch.setattr(local_sgd, "ProxAnchor", no_term)
    config = PLAIN.model_copy(update={"prox_mu": 0.0})

    again = Trainer().train(MLP, init_weights(MLP, 0), train_set, config)

    assert PLAIN.prox_mu == 0.0  # the default
    assert identical(again.weights, plain.weights)
    assert again.loss == plain.loss


def test_a_larger_prox_mu_ends_strictly_closer_to_the_start(
    plain: TrainResult, train_set: Dataset, validation: Dataset
) -> None:
    start = init_weights(MLP, 0)
    runs = {
        mu: Trainer().train(MLP, start, train_set, PLAIN.model_copy(update={"prox_mu": mu}))
        for mu in (0.1, 1.0)
    }

    assert distance(plain.weights, start) > distance(runs[0.1].weights, start)
    assert distance(runs[0.1].weights, start) > distance(runs[1.0].weights, start)
    assert not identical(runs[0.1].weights, plain.weights)
    assert accuracy(runs[0.1].weights, validation) >= PLAIN_ACCURACY  # still learns
    again = Trainer().train(MLP, start, train_set, PLAIN.model_copy(update={"prox_mu": 0.1}))
    assert identical(again.weights, runs[0.1].weights)  # deterministic with the term too


def test_dp_training_with_prox_mu_ends_closer_to_the_start_at_the_same_epsilon(
    train_set: Dataset,
) -> None:
    assert DP.dp is not None
    config = DP.model_copy(
        update={"epochs": 1, "dp": DP.dp.model_copy(update={"accountant": "rdp"})}
    )
    start = init_weights(MLP, 0)

    free = Trainer().train(MLP, start, train_set, config)
    held = Trainer().train(MLP, start, train_set, config.model_copy(update={"prox_mu": 1.0}))

    assert distance(held.weights, start) < distance(free.weights, start)
    assert held.epsilon == free.epsilon  # the term's gradient comes after the noise: no spend
    assert held.steps == free.steps


# -------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "TrainConfig.epochs"),
        ({"epochs": 2.5}, "TrainConfig.epochs"),
        ({"epochs": True}, "TrainConfig.epochs"),
        ({"batch_size": 0}, "TrainConfig.batch_size"),
        ({"batch_size": "32"}, "TrainConfig.batch_size"),
        ({"learning_rate": 0.0}, "TrainConfig.learning_rate"),
        ({"learning_rate": -0.1}, "TrainConfig.learning_rate"),
        ({"learning_rate": math.nan}, "TrainConfig.learning_rate"),
        ({"learning_rate": math.inf}, "TrainConfig.learning_rate"),
        ({"learning_rate": 100.0}, "TrainConfig.learning_rate"),
        ({"optimizer": "rmsprop"}, "TrainConfig.optimizer"),
        ({"seed": -1}, "TrainConfig.seed"),
        ({"seed": 2**63}, "TrainConfig.seed"),
        ({"momentum": 0.9}, "TrainConfig.momentum"),
        ({"dp": 4.0}, "TrainConfig.dp"),
        ({"prox_mu": -0.1}, "TrainConfig.prox_mu"),
        ({"prox_mu": 11.0}, "TrainConfig.prox_mu"),
        ({"prox_mu": math.nan}, "TrainConfig.prox_mu"),
        ({"dp": {"epsilon": 0.0, "delta": 1e-5, "max_grad_norm": 1.0}}, "DPConfig.epsilon"),
        ({"dp": {"epsilon": math.nan, "delta": 1e-5, "max_grad_norm": 1.0}}, "DPConfig.epsilon"),
        ({"dp": {"epsilon": 1e3, "delta": 1e-5, "max_grad_norm": 1.0}}, "DPConfig.epsilon"),
        ({"dp": {"epsilon": 4.0, "delta": 0.0, "max_grad_norm": 1.0}}, "DPConfig.delta"),
        ({"dp": {"epsilon": 4.0, "delta": 1.0, "max_grad_norm": 1.0}}, "DPConfig.delta"),
        ({"dp": {"epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 0.0}}, "DPConfig.max_grad_norm"),
        ({"dp": {"epsilon": 4.0, "delta": 1e-5}}, "DPConfig.max_grad_norm"),
        (
            {"dp": {"epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 1, "accountant": "gdp"}},
            "DPConfig.accountant",
        ),
    ],
)
def test_nonsense_config_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {**PLAIN.model_dump(), **change}

    with pytest.raises(ConfigError, match=f"^{re.escape(field)}: "):
        TrainConfig(**fields)


def test_dp_config_refuses_a_bad_value_on_its_own() -> None:
    with pytest.raises(ConfigError, match=r"^DPConfig\.epsilon: Input should be greater than 0"):
        DPConfig(epsilon=-1.0, delta=1e-5, max_grad_norm=1.0)


def test_a_negative_prox_mu_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as refused:
        TrainConfig(**{**PLAIN.model_dump(), "prox_mu": -1.0})

    assert str(refused.value) == ("TrainConfig.prox_mu: Input should be greater than or equal to 0")


def test_integers_are_accepted_where_a_real_is_expected() -> None:
    config = TrainConfig(epochs=1, batch_size=1, learning_rate=1, optimizer="sgd", seed=0)

    assert config.learning_rate == 1.0


def test_dp_delta_must_be_below_one_over_the_rows() -> None:
    config = DP.model_copy(update={"dp": DPConfig(epsilon=4.0, delta=0.01, max_grad_norm=1.0)})

    with pytest.raises(ConfigError, match=r"delta=0.01 must be below 1/rows = 0.005"):
        Trainer().train(LINE, init_weights(LINE, 0), line_data(rows=200), config)


def test_data_that_does_not_fit_the_spec_is_refused(train_set: Dataset) -> None:
    narrow = Dataset(train_set.features[:, :63], train_set.labels, num_classes=10)
    regression = Dataset(train_set.features, train_set.labels.astype(np.float64), None)
    fewer_classes = Dataset(train_set.features, train_set.labels % 5, num_classes=5)
    start = init_weights(MLP, 0)

    with pytest.raises(SpecError, match="holds 64 values, the data has 63"):
        Trainer().train(MLP, start, narrow, PLAIN)
    with pytest.raises(SpecError, match=r"outputs shape \(10,\), the task needs \(1,\)"):
        Trainer().train(MLP, start, regression, PLAIN)
    with pytest.raises(SpecError, match=r"outputs shape \(10,\), the task needs \(5,\)"):
        Trainer().train(MLP, start, fewer_classes, PLAIN)


def test_weights_that_do_not_fit_the_spec_are_refused(train_set: Dataset) -> None:
    weights = init_weights(MLP, 0)
    del weights["2.bias"]

    with pytest.raises(WeightsError, match="missing tensors: '2.bias'"):
        Trainer().train(MLP, weights, train_set, PLAIN)


def test_malformed_rows_are_refused() -> None:
    x = np.zeros((4, 64), dtype=np.float32)
    start = init_weights(MLP, 0)

    with pytest.raises(DataFormatError, match="class indices from 0 to 9"):
        Trainer().train(MLP, start, Dataset(x, np.array([0, 1, 2, 10]), 10), PLAIN)
    x[2, 5] = np.nan
    with pytest.raises(DataFormatError, match="row 3"):
        Trainer().train(MLP, start, Dataset(x, np.array([0, 1, 2, 3]), 10), PLAIN)


def test_an_empty_dataset_is_refused() -> None:
    empty = Dataset(np.zeros((0, 64), dtype=np.float32), np.zeros(0, dtype=np.int64), 10)

    with pytest.raises(TrainingError, match="no rows"):
        Trainer().train(MLP, init_weights(MLP, 0), empty, PLAIN)


def test_diverging_training_raises_instead_of_returning_non_finite_weights() -> None:
    huge = line_data(scale=1e30)  # squared errors overflow float32
    config = TrainConfig(epochs=2, batch_size=20, learning_rate=0.1, optimizer="sgd", seed=0)

    with pytest.raises(TrainingError, match="diverged"):
        Trainer().train(LINE, init_weights(LINE, 0), huge, config)
