"""Declarative model specs: allow-list, bounds, shape inference, sizes and FLOPs by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import torch

from marketplace.errors import SpecError, WeightsError
from marketplace.rules.layers import MAX_SPEC_BYTES, Linear, ReLU
from marketplace.rules.models import (
    ModelSpec,
    build_model,
    flops_per_sample,
    init_weights,
    output_shape,
    parameter_count,
    parameter_shapes,
)
from tests.helpers import MLP_SPEC

MLP: dict[str, Any] = MLP_SPEC
CONV2D: dict[str, Any] = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "max_pool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "linear", "in_features": 64, "out_features": 10},
    ],
}
CONV1D: dict[str, Any] = {
    "input_shape": [1, 64],
    "layers": [
        {"type": "conv1d", "in_channels": 1, "out_channels": 2, "kernel_size": 5, "stride": 2},
        {"type": "tanh"},
        {"type": "avg_pool1d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "layer_norm", "normalized_shape": [30]},
        {"type": "dropout", "p": 0.1},
        {"type": "linear", "in_features": 30, "out_features": 10},
    ],
}
TOKENS: dict[str, Any] = {
    "input_shape": [12],
    "input_dtype": "int64",
    "layers": [
        {"type": "embedding_mean", "num_embeddings": 50, "embedding_dim": 8},
        {"type": "gelu"},
        {"type": "linear", "in_features": 8, "out_features": 3},
    ],
}
ALL = {"mlp": MLP, "conv2d": CONV2D, "conv1d": CONV1D, "tokens": TOKENS}


def spec_of(raw: dict[str, Any]) -> ModelSpec:
    return ModelSpec.from_json(json.dumps(raw))


def with_layers(*layers: dict[str, Any], input_shape: tuple[int, ...] = (64,)) -> str:
    return json.dumps({"input_shape": list(input_shape), "layers": list(layers)})


# ------------------------------------------------------------------- sizes and FLOPs by hand


def test_mlp_sizes_and_flops_by_hand() -> None:
    spec = spec_of(MLP)
    assert parameter_shapes(spec) == {
        "0.weight": (32, 64),
        "0.bias": (32,),
        "2.weight": (10, 32),
        "2.bias": (10,),
    }
    assert parameter_count(spec) == 64 * 32 + 32 + 32 * 10 + 10 == 2410
    # multiply-adds 64*32 + 32*10 = 2368; x2 forward, x2 more backward: 6 * 2368
    assert flops_per_sample(spec) == 6 * 2368 == 14208
    assert output_shape(spec) == (10,)


def test_conv2d_sizes_and_flops_by_hand() -> None:
    spec = spec_of(CONV2D)
    assert parameter_shapes(spec) == {
        "0.weight": (4, 1, 3, 3),
        "0.bias": (4,),
        "4.weight": (10, 64),
        "4.bias": (10,),
    }
    assert parameter_count(spec) == 4 * 9 + 4 + 640 + 10 == 690
    # conv: 4 channels x 8x8 outputs x 1 x 3x3 = 2304; linear 64*10 = 640
    assert flops_per_sample(spec) == 6 * (2304 + 640) == 17664


def test_conv1d_sizes_and_flops_by_hand() -> None:
    spec = spec_of(CONV1D)
    # conv1d: (64 - 5) // 2 + 1 = 30 positions -> (2, 30); pool -> (2, 15); flatten -> 30
    assert parameter_shapes(spec) == {
        "0.weight": (2, 1, 5),
        "0.bias": (2,),
        "4.weight": (30,),
        "4.bias": (30,),
        "6.weight": (10, 30),
        "6.bias": (10,),
    }
    assert parameter_count(spec) == 12 + 60 + 310 == 382
    assert flops_per_sample(spec) == 6 * (2 * 30 * 5 + 30 * 10) == 3600


def test_embedding_mean_sizes_and_flops_by_hand() -> None:
    spec = spec_of(TOKENS)
    assert parameter_shapes(spec) == {"0.weight": (50, 8), "2.weight": (3, 8), "2.bias": (3,)}
    assert parameter_count(spec) == 400 + 27 == 427
    # the mean: 12 positions x 8 dims = 96; linear 8*3 = 24
    assert flops_per_sample(spec) == 6 * (96 + 24) == 720
    assert output_shape(spec) == (3,)


@pytest.mark.parametrize("name", ALL)
def test_build_model_matches_the_spec(name: str) -> None:
    spec = spec_of(ALL[name])
    model = build_model(spec)
    assert isinstance(model, torch.nn.Sequential)
    got = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert got == parameter_shapes(spec)  # same names, same order, same shapes
    assert all(p.dtype == torch.float32 for p in model.parameters())
    dtype = torch.int64 if spec.input_dtype == "int64" else torch.float32
    out = model.eval()(torch.zeros((2, *spec.input_shape), dtype=dtype))
    assert tuple(out.shape) == (2, *output_shape(spec))


# ------------------------------------------------------------------------------ weights


@pytest.mark.parametrize("name", ALL)
def test_init_weights_are_deterministic_and_fit_the_model(name: str) -> None:
    spec = spec_of(ALL[name])
    rng = torch.random.get_rng_state()
    first, again, other = init_weights(spec, 7), init_weights(spec, 7), init_weights(spec, 8)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is not touched
    assert list(first) == list(parameter_shapes(spec))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    model = build_model(spec, first)
    assert all(torch.equal(model.state_dict()[k], first[k]) for k in first)


def test_init_weights_follow_the_documented_distributions() -> None:
    conv1d = init_weights(spec_of(CONV1D), 0)
    assert conv1d["0.weight"].abs().max() <= 1 / 5**0.5  # fan_in = 1 channel x 5
    assert conv1d["6.weight"].abs().max() <= 1 / 30**0.5
    assert torch.equal(conv1d["4.weight"], torch.ones(30))  # layer_norm
    assert torch.equal(conv1d["4.bias"], torch.zeros(30))
    embedding = init_weights(spec_of(TOKENS), 0)["0.weight"]
    assert embedding.abs().max() > 1  # N(0, 1), not a bounded uniform
    with pytest.raises(ValueError, match="seed"):
        init_weights(spec_of(MLP), -1)


def test_build_model_copies_weights_and_refuses_wrong_ones() -> None:
    spec = spec_of(MLP)
    weights = init_weights(spec, 1)
    model = build_model(spec, weights)
    weights["0.bias"].add_(1.0)
    assert not torch.equal(model.state_dict()["0.bias"], weights["0.bias"])
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(WeightsError, match=r"missing tensors: '2.bias'"):
        build_model(spec, {k: v for k, v in weights.items() if k != "2.bias"})
    with pytest.raises(WeightsError, match=r"unexpected tensors: 'extra'"):
        build_model(spec, {**weights, "extra": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"'0.weight' has shape \(64, 32\), expected \(32, 64\)"):
        build_model(spec, {**weights, "0.weight": torch.zeros(64, 32)})
    with pytest.raises(WeightsError, match=r"'0.bias' is torch.float64, expected float32"):
        build_model(spec, {**weights, "0.bias": torch.zeros(32, dtype=torch.float64)})


# --------------------------------------------------------------------------------- JSON


def test_json_round_trip_is_canonical() -> None:
    spec = spec_of(MLP)
    assert spec.to_json() == (
        b'{"version":1,"input_shape":[64],"input_dtype":"float32","layers":['
        b'{"type":"linear","in_features":64,"out_features":32,"bias":true},{"type":"relu"},'
        b'{"type":"linear","in_features":32,"out_features":10,"bias":true}]}'
    )
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert ModelSpec.from_json(spec.to_json().decode()) == spec
    built = ModelSpec(
        input_shape=(64,),
        layers=(
            Linear(in_features=64, out_features=32),
            ReLU(),
            Linear(in_features=32, out_features=10),
        ),
    )
    assert built == spec


@pytest.mark.parametrize("layer_type", ["lambda", "torch.nn.Linear", "os.system", "__import__"])
def test_layers_off_the_allow_list_are_refused(layer_type: str) -> None:
    with pytest.raises(SpecError) as caught:
        ModelSpec.from_json(with_layers({"type": layer_type, "fn": "lambda x: x"}))
    assert str(caught.value).startswith(
        f"layers[0]: layer type {layer_type!r} is not on the allow-list"
    )
    assert "linear, conv1d, conv2d" in str(caught.value)


def test_refusals_build_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a torch module was built")

    monkeypatch.setattr(torch.nn.Module, "__init__", boom)
    with pytest.raises(SpecError, match="not on the allow-list"):
        ModelSpec.from_json(with_layers({"type": "lambda"}))
    too_big = {"type": "linear", "in_features": 65536, "out_features": 65536}
    with pytest.raises(SpecError) as caught:
        ModelSpec.from_json(with_layers(too_big, input_shape=(65536,)))
    assert str(caught.value) == (
        "layers[0] (linear): brings the model to 4,295,032,832 parameters, "
        "over the cap of 50,000,000"
    )
    # three 4096 x 4096 layers: each 16,781,312 parameters, the third passes the cap
    wide = {"type": "linear", "in_features": 4096, "out_features": 4096}
    with pytest.raises(SpecError) as caught:
        ModelSpec.from_json(with_layers(wide, wide, wide, input_shape=(4096,)))
    assert str(caught.value) == (
        "layers[2] (linear): brings the model to 50,343,936 parameters, over the cap of 50,000,000"
    )
    assert parameter_count(ModelSpec.from_json(with_layers(wide, wide, input_shape=(4096,)))) == (
        33_562_624
    )


LINEAR_64_10 = {"type": "linear", "in_features": 64, "out_features": 10}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{bad", "spec: malformed JSON: key must be a string at line 1 column 2"),
        ("[]", "spec: Input should be an object"),
        (with_layers({"in_features": 3}), "layers[0]: a layer needs a 'type', one of: linear"),
        (with_layers(3), "layers[0]: Input should be a valid dictionary"),  # type: ignore[arg-type]
        (
            with_layers({**LINEAR_64_10, "out_features": 70000}),
            "layers[0] (linear).out_features: Input should be less than or equal to 65536",
        ),
        (with_layers({**LINEAR_64_10, "code": "x"}), "layers[0] (linear).code: unknown field"),
        (json.dumps({**MLP, "module": "os"}), "module: unknown field"),
        (
            with_layers({**LINEAR_64_10, "in_features": True}),
            "layers[0] (linear).in_features: Input should be a valid integer",
        ),
        (
            with_layers({**LINEAR_64_10, "out_features": "10"}),
            "layers[0] (linear).out_features: Input should be a valid integer",
        ),
        (
            with_layers(LINEAR_64_10, LINEAR_64_10),
            "layers[1] (linear): in_features=64 but its input has shape (10,)",
        ),
        (
            with_layers(
                {"type": "conv1d", "in_channels": 1, "out_channels": 2, "kernel_size": 12},
                input_shape=(1, 64),
            ),
            "layers[0] (conv1d).kernel_size: Input should be less than or equal to 11",
        ),
        (
            with_layers({"type": "conv1d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}),
            "layers[0] (conv1d): needs input (channels, length) but its input has shape (64,)",
        ),
        (
            with_layers(
                {"type": "conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 3},
                input_shape=(1, 8, 8),
            ),
            "layers[0] (conv2d): in_channels=3 but its input has shape (1, 8, 8)",
        ),
        (
            with_layers(
                {"type": "conv1d", "in_channels": 1, "out_channels": 2, "kernel_size": 5},
                input_shape=(1, 4),
            ),
            "layers[0] (conv1d): kernel_size=5 does not fit its input shape (1, 4)",
        ),
        (
            with_layers({"type": "max_pool1d", "kernel_size": 2, "padding": 2}, input_shape=(1, 8)),
            "layers[0] (max_pool1d): padding must be at most half of kernel_size",
        ),
        (
            with_layers({"type": "layer_norm", "normalized_shape": [32]}),
            "layers[0] (layer_norm): normalized_shape=(32,) does not end its input shape (64,)",
        ),
        (
            with_layers({"type": "dropout", "p": 1.0}),
            "layers[0] (dropout).p: Input should be less than 1",
        ),
        (with_layers({"type": "relu"}), "the spec has no trainable parameters"),
        (with_layers(*[{"type": "relu"}] * 65), "layers: Tuple should have at most 64 items"),
        (with_layers(), "layers: Tuple should have at least 1 item"),
        (
            with_layers(LINEAR_64_10, input_shape=(64, 0)),
            "input_shape[1]: Input should be greater than or equal to 1",
        ),
        (
            with_layers({"type": "flatten"}, input_shape=(1024, 1024, 2)),
            "input_shape (1024, 1024, 2) has 2,097,152 values per sample, over the cap",
        ),
        (
            with_layers(
                {"type": "conv2d", "in_channels": 3, "out_channels": 512, "kernel_size": 1},
                input_shape=(3, 256, 256),
            ),
            "layers[0] (conv2d): outputs 33,554,432 values per sample, over the cap of 1,048,576",
        ),
        (
            json.dumps({**TOKENS, "input_dtype": "float32"}),
            "layers[0] (embedding_mean): only the first layer of an int64 (token) spec",
        ),
        (
            json.dumps({**MLP, "input_dtype": "int64"}),
            "int64 (token) input needs input_shape (positions,) and an embedding_mean",
        ),
        (json.dumps({**MLP, "input_dtype": "float16"}), "input_dtype: Input should be 'float32'"),
        (json.dumps({**MLP, "version": 2}), "version: Input should be 1"),
    ],
)
def test_malformed_specs_are_refused_with_the_offending_field(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        ModelSpec.from_json(text)
    assert str(caught.value).startswith(message)


def test_the_size_cap_comes_before_parsing() -> None:
    padded = json.dumps(MLP) + " " * MAX_SPEC_BYTES
    with pytest.raises(SpecError, match=r"over the cap of 65,536$"):
        ModelSpec.from_json(padded)
    with pytest.raises(SpecError, match=r"over the cap of 65,536$"):
        ModelSpec.from_json(b"[" * (MAX_SPEC_BYTES + 1))


def test_python_construction_raises_spec_error_too() -> None:
    with pytest.raises(
        SpecError, match=r"layers\[0\]: layer type 'lambda' is not on the allow-list"
    ):
        ModelSpec(input_shape=(64,), layers=({"type": "lambda"},))
    with pytest.raises(SpecError, match=r"layers\[1\] \(linear\): in_features=64"):
        ModelSpec(input_shape=(64,), layers=(LINEAR_64_10, LINEAR_64_10))


def test_specs_parse_and_price_without_torch() -> None:
    code = (
        "import sys, json\n"
        "import marketplace.rules.models as m, marketplace.wire.codec\n"
        "import marketplace.rules.evaluation\n"
        f"spec = m.ModelSpec.from_json({json.dumps(json.dumps(CONV2D))})\n"
        "print(m.parameter_count(spec), m.flops_per_sample(spec), 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["690", "17664", "False"]


def test_mlp_is_linear_layers_of_the_widths_with_relus_between() -> None:
    from marketplace.rules.models import mlp, parameter_count

    spec = mlp(30, 32, 2)

    assert [layer.type for layer in spec.layers] == ["linear", "relu", "linear"]
    assert spec.input_shape == (30,)
    assert parameter_count(spec) == 30 * 32 + 32 + 32 * 2 + 2
    assert [layer.type for layer in mlp(64, 10).layers] == ["linear"]
