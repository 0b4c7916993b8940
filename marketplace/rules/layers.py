"""The allow-list of layers a `ModelSpec` may use, each a frozen model with bounded sizes that
infers its output shape (and refuses an input it cannot take) without building anything."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import torch
    from torch import nn

MAX_SPEC_BYTES = 64 * 1024
MAX_LAYERS = 64
MAX_FEATURES = 65_536  # features, channels, embedding width, any input dimension
MAX_KERNEL = 11  # also the largest stride
MAX_PADDING = 5
MAX_VOCAB = 1_000_000
MAX_INPUT_VALUES = 1 << 20  # values per sample at the input
MAX_ACTIVATION_VALUES = 1 << 20  # values per sample at any layer's output (x the batch size)
MAX_PARAMETERS = 50_000_000
MAX_MACS_PER_SAMPLE = 4_000_000_000  # forward multiply-adds per sample

Shape = tuple[int, ...]
Size = Annotated[int, Field(strict=True, ge=1, le=MAX_FEATURES)]
Kernel = Annotated[int, Field(strict=True, ge=1, le=MAX_KERNEL)]
Padding = Annotated[int, Field(strict=True, ge=0, le=MAX_PADDING)]
Flag = Annotated[bool, Field(strict=True)]


def _window_sizes(shape: Shape, dims: int, kernel: int, stride: int, padding: int) -> Shape:
    """Output sizes of a convolution or pooling over the last `dims` dimensions."""
    if len(shape) != dims + 1:
        wanted = "(channels, length)" if dims == 1 else "(channels, height, width)"
        raise _Mismatch(f"needs input {wanted} but its input has shape {shape}")
    sizes = tuple((n + 2 * padding - kernel) // stride + 1 for n in shape[1:])
    if min(sizes) < 1:
        raise _Mismatch(f"kernel_size={kernel} does not fit its input shape {shape}")
    return sizes


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Mismatch(Exception):
    """A layer cannot take the shape it is given (prefixed with the layer by `_plan`)."""


class _Layer(_Frozen):
    type: str

    def output_shape(self, shape: Shape) -> Shape:
        return shape  # elementwise layers

    def parameter_shapes(self) -> dict[str, Shape]:
        return {}

    def macs(self, shape: Shape, out: Shape) -> int:
        """Forward multiply-adds per sample (see `flops_per_sample`)."""
        return 0

    def initial(self, suffix: str, shape: Shape, generator: torch.Generator) -> torch.Tensor:
        """torch's default init, drawn from `generator`: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        import torch

        bound = 1.0 / math.sqrt(self._fan_in())
        return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound

    def _fan_in(self) -> int:
        raise NotImplementedError

    def build(self) -> nn.Module:
        raise NotImplementedError


class Linear(_Layer):
    """`nn.Linear` on the last dimension."""

    type: Literal["linear"] = "linear"
    in_features: Size
    out_features: Size
    bias: Flag = True

    def output_shape(self, shape: Shape) -> Shape:
        if shape[-1] != self.in_features:
            raise _Mismatch(f"in_features={self.in_features} but its input has shape {shape}")
        return (*shape[:-1], self.out_features)

    def parameter_shapes(self) -> dict[str, Shape]:
        weight: dict[str, Shape] = {"weight": (self.out_features, self.in_features)}
        return weight | {"bias": (self.out_features,)} if self.bias else weight

    def macs(self, shape: Shape, out: Shape) -> int:
        return math.prod(out) * self.in_features

    def _fan_in(self) -> int:
        return self.in_features

    def build(self) -> nn.Module:
        from torch import nn

        return nn.Linear(self.in_features, self.out_features, bias=self.bias)


class _Conv(_Layer):
    dims: ClassVar[int]
    in_channels: Size
    out_channels: Size
    kernel_size: Kernel
    stride: Kernel = 1
    padding: Padding = 0
    bias: Flag = True

    def output_shape(self, shape: Shape) -> Shape:
        sizes = _window_sizes(shape, self.dims, self.kernel_size, self.stride, self.padding)
        if shape[0] != self.in_channels:
            raise _Mismatch(f"in_channels={self.in_channels} but its input has shape {shape}")
        return (self.out_channels, *sizes)

    def parameter_shapes(self) -> dict[str, Shape]:
        kernel = (self.kernel_size,) * self.dims
        weight: dict[str, Shape] = {"weight": (self.out_channels, self.in_channels, *kernel)}
        return weight | {"bias": (self.out_channels,)} if self.bias else weight

    def macs(self, shape: Shape, out: Shape) -> int:
        return math.prod(out) * self._fan_in()

    def _fan_in(self) -> int:
        return self.in_channels * math.prod((self.kernel_size,) * self.dims)

    def build(self) -> nn.Module:
        from torch import nn

        conv = nn.Conv1d if self.dims == 1 else nn.Conv2d
        args = (self.in_channels, self.out_channels, self.kernel_size)
        return conv(*args, stride=self.stride, padding=self.padding, bias=self.bias)


class Conv1d(_Conv):
    """`nn.Conv1d` on (channels, length)."""

    dims: ClassVar[int] = 1
    type: Literal["conv1d"] = "conv1d"


class Conv2d(_Conv):
    """`nn.Conv2d` with a square kernel on (channels, height, width)."""

    dims: ClassVar[int] = 2
    type: Literal["conv2d"] = "conv2d"


class _Pool(_Layer):
    dims: ClassVar[int]
    kind: ClassVar[str]
    kernel_size: Kernel
    stride: Kernel | None = None  # None: the kernel size, as in torch
    padding: Padding = 0

    @model_validator(mode="after")
    def _padding_fits(self) -> _Pool:
        if 2 * self.padding > self.kernel_size:
            raise ValueError("padding must be at most half of kernel_size")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        stride = self.stride or self.kernel_size
        return (shape[0], *_window_sizes(shape, self.dims, self.kernel_size, stride, self.padding))

    def build(self) -> nn.Module:
        from torch import nn

        pools: dict[str, type[nn.Module]] = {
            "max_pool1d": nn.MaxPool1d,
            "max_pool2d": nn.MaxPool2d,
            "avg_pool1d": nn.AvgPool1d,
            "avg_pool2d": nn.AvgPool2d,
        }
        return pools[self.type](self.kernel_size, stride=self.stride, padding=self.padding)


class MaxPool1d(_Pool):
    dims: ClassVar[int] = 1
    type: Literal["max_pool1d"] = "max_pool1d"


class MaxPool2d(_Pool):
    dims: ClassVar[int] = 2
    type: Literal["max_pool2d"] = "max_pool2d"


class AvgPool1d(_Pool):
    dims: ClassVar[int] = 1
    type: Literal["avg_pool1d"] = "avg_pool1d"


class AvgPool2d(_Pool):
    dims: ClassVar[int] = 2
    type: Literal["avg_pool2d"] = "avg_pool2d"


class ReLU(_Layer):
    type: Literal["relu"] = "relu"

    def build(self) -> nn.Module:
        from torch import nn

        return nn.ReLU()


class GELU(_Layer):
    type: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = "none"

    def build(self) -> nn.Module:
        from torch import nn

        return nn.GELU(approximate=self.approximate)


class Tanh(_Layer):
    type: Literal["tanh"] = "tanh"

    def build(self) -> nn.Module:
        from torch import nn

        return nn.Tanh()


class Dropout(_Layer):
    """Active in training only; scoring runs the model in eval mode."""

    type: Literal["dropout"] = "dropout"
    p: Annotated[float, Field(strict=True, ge=0.0, lt=1.0)] = 0.5

    def build(self) -> nn.Module:
        from torch import nn

        return nn.Dropout(self.p)


class LayerNorm(_Layer):
    """`nn.LayerNorm` over the trailing dimensions `normalized_shape`."""

    type: Literal["layer_norm"] = "layer_norm"
    normalized_shape: tuple[Size, ...] = Field(min_length=1, max_length=3)
    eps: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] = 1e-5
    elementwise_affine: Flag = True

    def output_shape(self, shape: Shape) -> Shape:
        if shape[-len(self.normalized_shape) :] != self.normalized_shape:
            raise _Mismatch(
                f"normalized_shape={self.normalized_shape} does not end its input shape {shape}"
            )
        return shape

    def parameter_shapes(self) -> dict[str, Shape]:
        shape = self.normalized_shape
        return {"weight": shape, "bias": shape} if self.elementwise_affine else {}

    def initial(self, suffix: str, shape: Shape, generator: torch.Generator) -> torch.Tensor:
        import torch

        fill = torch.ones if suffix == "weight" else torch.zeros
        return fill(shape, dtype=torch.float32)

    def build(self) -> nn.Module:
        from torch import nn

        return nn.LayerNorm(self.normalized_shape, self.eps, self.elementwise_affine)


class Flatten(_Layer):
    """Everything of a sample into one dimension."""

    type: Literal["flatten"] = "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def build(self) -> nn.Module:
        from torch import nn

        return nn.Flatten()


class EmbeddingMean(_Layer):
    """Token ids (positions,) -> the mean of their embeddings (embedding_dim,).

    `nn.EmbeddingBag(mode="mean")`; only as the first layer of a spec with int64 input.
    """

    type: Literal["embedding_mean"] = "embedding_mean"
    num_embeddings: Annotated[int, Field(strict=True, ge=1, le=MAX_VOCAB)]
    embedding_dim: Size

    def output_shape(self, shape: Shape) -> Shape:
        return (self.embedding_dim,)

    def parameter_shapes(self) -> dict[str, Shape]:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def macs(self, shape: Shape, out: Shape) -> int:
        return shape[0] * self.embedding_dim  # the average over positions

    def initial(self, suffix: str, shape: Shape, generator: torch.Generator) -> torch.Tensor:
        import torch

        return torch.randn(shape, generator=generator, dtype=torch.float32)

    def build(self) -> nn.Module:
        from torch import nn

        return nn.EmbeddingBag(self.num_embeddings, self.embedding_dim, mode="mean")


_LAYER_CLASSES: tuple[type[_Layer], ...] = (
    Linear, Conv1d, Conv2d, ReLU, GELU, Tanh, Dropout, LayerNorm, Flatten,
    MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, EmbeddingMean,
)  # fmt: skip
LAYER_TYPES: tuple[str, ...] = tuple(c.model_fields["type"].default for c in _LAYER_CLASSES)

Layer = Annotated[
    Linear
    | Conv1d
    | Conv2d
    | ReLU
    | GELU
    | Tanh
    | Dropout
    | LayerNorm
    | Flatten
    | MaxPool1d
    | MaxPool2d
    | AvgPool1d
    | AvgPool2d
    | EmbeddingMean,
    Field(discriminator="type"),
]
