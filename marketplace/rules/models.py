"""Declarative model specs: an architecture is data (JSON), never code.

A `ModelSpec` is an input shape per sample plus a sequence of layers taken from an allow-list,
every size bounded. Shapes are inferred layer by layer when a spec is parsed, so a spec whose
shapes do not chain, or that is too large, is refused (`SpecError`) before anything is built.
Parameters are named as `nn.Sequential` names them: "<layer index>.<weight|bias>".

torch is imported only inside the functions that need it, so parsing and pricing a spec
(`parameter_shapes`, `flops_per_sample`, `macs_per_sample`) works in processes that never
load torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, model_validator

from marketplace.errors import SpecError, WeightsError
from marketplace.rules.layers import (
    LAYER_TYPES,
    MAX_ACTIVATION_VALUES,
    MAX_INPUT_VALUES,
    MAX_LAYERS,
    MAX_MACS_PER_SAMPLE,
    MAX_PARAMETERS,
    MAX_SPEC_BYTES,
    EmbeddingMean,
    Layer,
    Shape,
    Size,
    _Frozen,
    _Layer,
    _Mismatch,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


class ModelSpec(_Frozen):
    """An architecture as data: the input of one sample and the layers applied in order.

    Features arrive as `input_shape` float32 values per sample (a flat data row is reshaped
    to it); tokens as `input_shape == (positions,)` int64 ids, read by `embedding_mean`.
    """

    version: Literal[1] = 1
    input_shape: tuple[Size, ...] = Field(min_length=1, max_length=3)
    input_dtype: Literal["float32", "int64"] = "float32"
    layers: tuple[Layer, ...] = Field(min_length=1, max_length=MAX_LAYERS)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError(_describe(exc)) from None

    @model_validator(mode="after")
    def _shapes_chain(self) -> ModelSpec:
        _plan(self)
        return self

    @classmethod
    def from_json(cls, data: str | bytes | bytearray) -> ModelSpec:
        """Parse untrusted JSON: the size cap first, then the schema, then the shapes."""
        size = len(data)  # characters of a str: at most its UTF-8 bytes
        if size <= MAX_SPEC_BYTES and isinstance(data, str):
            size = len(data.encode())
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"the spec is {size:,} bytes, over the cap of {MAX_SPEC_BYTES:,}")
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise SpecError(_describe(exc)) from None

    def to_json(self) -> bytes:
        """Compact JSON, fields in declaration order: the same bytes for the same spec."""
        return self.model_dump_json().encode()


@dataclass(frozen=True)
class _Step:
    index: int
    layer: _Layer
    shape_out: Shape
    macs: int


def _plan(spec: ModelSpec) -> list[_Step]:
    """Shape inference layer by layer, with every cap checked; raises SpecError."""
    shape = spec.input_shape
    if math.prod(shape) > MAX_INPUT_VALUES:
        raise SpecError(
            f"input_shape {shape} has {math.prod(shape):,} values per sample, "
            f"over the cap of {MAX_INPUT_VALUES:,}"
        )
    tokens = spec.input_dtype == "int64"
    if tokens and (len(shape) != 1 or not isinstance(spec.layers[0], EmbeddingMean)):
        raise SpecError("int64 (token) input needs input_shape (positions,) and an embedding_mean")
    steps: list[_Step] = []
    parameters = macs = 0
    for index, layer in enumerate(spec.layers):
        where = f"layers[{index}] ({layer.type})"
        if isinstance(layer, EmbeddingMean) and (index > 0 or not tokens):
            raise SpecError(f"{where}: only the first layer of an int64 (token) spec")
        try:
            out = layer.output_shape(shape)
        except _Mismatch as exc:
            raise SpecError(f"{where}: {exc}") from None
        if math.prod(out) > MAX_ACTIVATION_VALUES:
            raise SpecError(
                f"{where}: outputs {math.prod(out):,} values per sample, "
                f"over the cap of {MAX_ACTIVATION_VALUES:,}"
            )
        parameters += sum(math.prod(s) for s in layer.parameter_shapes().values())
        if parameters > MAX_PARAMETERS:
            raise SpecError(
                f"{where}: brings the model to {parameters:,} parameters, "
                f"over the cap of {MAX_PARAMETERS:,}"
            )
        step_macs = layer.macs(shape, out)
        macs += step_macs
        if macs > MAX_MACS_PER_SAMPLE:
            raise SpecError(
                f"{where}: brings the model to {macs:,} multiply-adds per sample, "
                f"over the cap of {MAX_MACS_PER_SAMPLE:,}"
            )
        steps.append(_Step(index, layer, out, step_macs))
        shape = out
    if parameters == 0:
        raise SpecError("the spec has no trainable parameters")
    return steps


def mlp(*widths: int) -> ModelSpec:
    """A plain MLP over flat rows: linear layers of these widths (input first, classes last)
    with a ReLU between each two, e.g. `mlp(64, 128, 10)`."""
    layers: list[dict[str, Any]] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append({"type": "linear", "in_features": a, "out_features": b})
        if i < len(widths) - 2:
            layers.append({"type": "relu"})
    return ModelSpec(input_shape=[widths[0]], layers=layers)


def parameter_shapes(spec: ModelSpec) -> dict[str, Shape]:
    """Every parameter's name and shape, in `build_model(spec).state_dict()` order."""
    return {
        f"{step.index}.{suffix}": shape
        for step in _plan(spec)
        for suffix, shape in step.layer.parameter_shapes().items()
    }


def parameter_count(spec: ModelSpec) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(spec).values())


def output_shape(spec: ModelSpec) -> Shape:
    """The shape of one sample's output (the model's output without the batch dimension)."""
    return _plan(spec)[-1].shape_out


def flops_per_sample(spec: ModelSpec) -> int:
    """Training FLOPs for one sample: 6 x the forward multiply-adds.

    The convention: a multiply-add is 2 FLOPs, and the backward pass costs 2 x the forward,
    so training = 2 + 4 = 6 FLOPs per multiply-add. Counted: `linear` in_features x
    out_features per position; `conv1d`/`conv2d` in_channels x kernel^dims per output value;
    `embedding_mean` positions x embedding_dim (the average). Elementwise work (biases,
    activations, norms, pooling, dropout) counts zero: it is small next to the products, and
    the count only has to be exact, deterministic and proportional to the real cost.
    """
    return 6 * macs_per_sample(spec)


def macs_per_sample(spec: ModelSpec) -> int:
    """Forward multiply-adds for one sample (counted as `flops_per_sample` says): what one
    validation row costs to score, and what a task's scoring budget is priced in."""
    return sum(step.macs for step in _plan(spec))


def build_model(
    spec: ModelSpec, weights: Mapping[str, torch.Tensor] | None = None
) -> nn.Sequential:
    """The spec as an `nn.Sequential` of allow-listed modules, float32 on the CPU.

    Without `weights`, parameters get torch's default init (from torch's global RNG); with
    them, the model holds copies of the weights (checked with `check_weights`), and torch's
    global RNG is left as it was.
    """
    import torch
    from torch import nn

    steps = _plan(spec)
    if weights is None:
        return nn.Sequential(*(step.layer.build() for step in steps))
    check_weights(spec, weights)
    with torch.random.fork_rng(devices=[]):  # the default init below is overwritten
        model = nn.Sequential(*(step.layer.build() for step in steps))
    with torch.no_grad():
        model.load_state_dict(dict(weights), strict=True)
    return model


def check_weights(spec: ModelSpec, weights: Mapping[str, torch.Tensor]) -> None:
    """Raise WeightsError unless `weights` has exactly the spec's names, shapes, and float32."""
    import torch

    expected = parameter_shapes(spec)
    missing = [name for name in expected if name not in weights]
    unexpected = sorted(name for name in weights if name not in expected)
    if missing or unexpected:
        raise WeightsError(_name_problems(missing, unexpected))
    for name, shape in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise WeightsError(f"tensor {name!r} is {got}, expected float32")
        if tuple(tensor.shape) != shape:
            raise WeightsError(f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape}")


def init_weights(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """Initial weights drawn from `seed` alone (torch's CPU generator), in parameter order.

    Linear and conv layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases (the
    distribution of torch's defaults); layer_norm: ones and zeros; embeddings: N(0, 1).
    """
    import torch

    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), not {seed}")
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for step in _plan(spec):
        for suffix, shape in step.layer.parameter_shapes().items():
            weights[f"{step.index}.{suffix}"] = step.layer.initial(suffix, shape, generator)
    return weights


def _name_problems(missing: list[str], unexpected: list[str]) -> str:
    def listed(names: list[str]) -> str:
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        return ", ".join(repr(name) for name in names[:5]) + more

    parts = [f"missing tensors: {listed(missing)}"] if missing else []
    return "; ".join(parts + ([f"unexpected tensors: {listed(unexpected)}"] if unexpected else []))


def _describe(exc: ValidationError) -> str:
    """One readable line for a pydantic error: where (layers[2] (linear).out_features) and why."""
    errors = [e for e in exc.errors(include_url=False) if not _spurious(e)]
    if not errors:
        return str(exc)
    error = errors[0]
    where = ""
    loc = error["loc"]
    for position, part in enumerate(loc):
        if isinstance(part, int):
            where += f"[{part}]"
        elif position > 0 and isinstance(loc[position - 1], int) and part in LAYER_TYPES:
            where += f" ({part})"
        else:
            where += f".{part}" if where else part
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "json_invalid":
        why = f"malformed JSON: {ctx.get('error', error['msg'])}"
    elif kind == "union_tag_invalid":
        allowed = ", ".join(LAYER_TYPES)
        why = f"layer type {ctx.get('tag')!r} is not on the allow-list ({allowed})"
    elif kind == "union_tag_not_found":
        why = f"a layer needs a 'type', one of: {', '.join(LAYER_TYPES)}"
    elif kind == "extra_forbidden":
        why = "unknown field"
    else:
        why = error["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where or 'spec'}: {why}{more}"


def _spurious(error: Any) -> bool:
    """pydantic also reports a tuple as too short when one of its items failed."""
    given, ctx = error.get("input"), error.get("ctx", {})
    return bool(
        error["type"] == "too_short"
        and isinstance(given, list | tuple)
        and len(given) >= ctx.get("min_length", 0)
    )
