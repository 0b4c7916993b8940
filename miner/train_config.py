"""What one training run is told, and how it can fail: `TrainConfig` (with `DPConfig` for
DP-SGD), validated on construction into one readable `ConfigError` line, the `Progress`
callback, and `TrainingError`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from marketplace.errors import ConfigError, MarketplaceError

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_LEARNING_RATE = 10.0
MAX_EPSILON = 100.0  # beyond this a DP guarantee means nothing
MAX_GRAD_NORM = 1e6
MAX_PROX_MU = 10.0

Progress = Callable[[int, int], None]
"""Called after every optimizer step with (steps done, steps in the whole run); it may
raise to cancel the run."""

_Int = Annotated[int, Field(strict=True)]
_Real = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class TrainingError(MarketplaceError):
    """Training could not run (no rows, a layer DP-SGD cannot train) or it diverged."""


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(type(self).__name__, exc)) from None


class DPConfig(_Config):
    """DP-SGD: spend at most (`epsilon`, `delta`) over the run; clip per-sample gradients.

    `delta` must also be below 1 / (rows of the dataset), checked when training starts.
    `accountant`: Opacus's "prv" (its default, the tighter bound) or "rdp" (faster to
    calibrate, slightly more noise for the same epsilon).
    """

    epsilon: Annotated[_Real, Field(gt=0, le=MAX_EPSILON)]
    delta: Annotated[_Real, Field(gt=0, lt=1)]
    max_grad_norm: Annotated[_Real, Field(gt=0, le=MAX_GRAD_NORM)]
    accountant: Literal["prv", "rdp"] = "prv"


class TrainConfig(_Config):
    """How to train: every field explicit, so a config says what it does.

    `batch_size` is the rows per step (the last batch of an epoch may be smaller); with DP it
    is the expected batch under Poisson sampling. `seed` fixes shuffling, dropout and DP noise.
    `prox_mu`: the weight of FedProx's proximal term (0: none, training as plain FedAvg).
    """

    epochs: Annotated[_Int, Field(ge=1, le=MAX_EPOCHS)]
    batch_size: Annotated[_Int, Field(ge=1, le=MAX_BATCH_SIZE)]
    learning_rate: Annotated[_Real, Field(gt=0, le=MAX_LEARNING_RATE)]
    optimizer: Literal["sgd", "adam"]
    seed: Annotated[_Int, Field(ge=0, lt=2**63)]
    dp: DPConfig | None = None
    prox_mu: Annotated[_Real, Field(ge=0, le=MAX_PROX_MU)] = 0.0


def _describe(name: str, exc: ValidationError) -> str:
    """One readable line for a pydantic error: which field and why."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or name
    why = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{name}.{where}: {why}{more}"
