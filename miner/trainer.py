"""Local training: a spec and its parent weights in, trained weights out (Flower's `fit`).

The miner's data never leaves this function. `Trainer.train` builds the model from the
declarative spec and the parent's weights, trains it on the CPU with cross-entropy (a
dataset with `num_classes`) or mean squared error (regression targets), and returns float32
weights under exactly the spec's parameter names, ready for `codec.encode_weights`.

Deterministic: the same spec, weights, data and config give the same weights bit for bit on
a machine. Training runs on one thread with torch's deterministic algorithms, shuffles with
its own generator and draws dropout masks (and DP noise) from torch's global generator seeded
inside `torch.random.fork_rng`, so the caller's RNG state is left as it was. The thread count
and the deterministic-algorithms switch are process-wide: they are restored afterwards, but
training is not meant to run on several threads at once.

With `TrainConfig.dp` set, training is DP-SGD through Opacus (imported only then): Poisson
sampling with an expected batch of `batch_size` rows, per-sample gradients clipped to
`max_grad_norm`, and Gaussian noise calibrated so that the whole run spends at most
`epsilon` at `delta`; the result reports what the accountant measured. The noise comes from
a seeded pseudo-random generator, so anyone who knows the seed can regenerate it: **with DP,
the seed is a secret**, to be drawn fresh (`secrets.randbits(63)`) and never published.

With `TrainConfig.prox_mu` above 0, the local objective is FedProx's (Li et al., 2020): the
loss plus (mu / 2) * sum ||w - w0||^2 over the parameters, w0 the weights training started
from (the parent's). It keeps a data owner's steps near the model everyone builds on, which
helps the merge when shards are label-skewed. Under DP its gradient mu * (w - w0) is added
after Opacus clips and noises the per-sample gradients: it depends on the data only through
w, already a private output, so the guarantee is unchanged. With mu 0 the term is not built.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from marketplace.errors import ConfigError, DataFormatError, MarketplaceError
from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import check_fits
from marketplace.rules.layers import EmbeddingMean
from marketplace.rules.messages import Metric
from marketplace.rules.models import ModelSpec, build_model, check_weights

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

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

# Opacus and torch warnings that say nothing to a miner: the pseudo-random generator is chosen
# on purpose (determinism; the seed is the secret), the rest are notes about internals.
_QUIET = (
    r"Secure RNG turned off",
    r"Optimal order is the (largest|smallest) alpha",
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
)


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


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What one training run produced.

    Attributes:
        weights: float32 tensors named and shaped exactly as the spec's parameters.
        samples: rows of the training dataset (what the miner declares on-chain).
        epochs: passes over the data, as configured.
        steps: optimizer steps taken: ceil(rows / batch_size) per epoch; with DP, Opacus's
            int(1 / sample rate) Poisson batches per epoch (the same, or one fewer when the
            float division rounds down).
        loss: the mean per-row training loss over the last epoch (with dropout active, and
            before DP noise): cross-entropy for classes, squared error for regression; the
            proximal term is not part of it.
        epsilon: the privacy budget spent according to the accountant, at `dp.delta`; None
            without DP.
        seconds: wall-clock time of the whole run.
    """

    weights: dict[str, torch.Tensor]
    samples: int
    epochs: int
    steps: int
    loss: float
    epsilon: float | None
    seconds: float


class Trainer:
    """Trains a spec's weights on the miner's local data (CPU, one thread, deterministic)."""

    def train(
        self,
        spec: ModelSpec,
        weights: Mapping[str, torch.Tensor],
        dataset: Dataset,
        config: TrainConfig,
        progress: Progress | None = None,
    ) -> TrainResult:
        """Train from `weights` (the parent node's) and return the new weights.

        Raises:
            SpecError: the spec does not take the dataset's rows or output what it needs.
            WeightsError: `weights` do not fit the spec.
            DataFormatError: a label is out of range or a value is not finite.
            ConfigError: the DP delta is not below 1 / rows.
            TrainingError: the dataset is empty, DP-SGD cannot train this spec, or training
                diverged.
        """
        import torch

        started = time.perf_counter()
        _check_data(spec, dataset)
        if config.dp is not None:
            _check_private(spec, dataset, config.dp)
        with _seeded(config.seed) as shuffle:
            model = build_model(spec, weights)  # WeightsError; inside: no inference tensors
            model.train(True)
            inputs, targets = _tensors(spec, dataset)
            if config.dp is None:
                steps, loss = _fit(model, inputs, targets, config, shuffle, progress)
                epsilon = None
                trained = model.state_dict()
            else:
                trained, steps, loss, epsilon = _fit_private(
                    model, inputs, targets, config, config.dp, shuffle, progress
                )
        result = {
            name.removeprefix("_module."): tensor.detach().to(torch.float32).clone()
            for name, tensor in trained.items()
        }
        check_weights(spec, result)
        bad = next((name for name, t in result.items() if not bool(t.isfinite().all())), None)
        if bad is not None:
            raise TrainingError(f"training diverged: tensor {bad!r} holds non-finite values")
        seconds = time.perf_counter() - started
        logger.info(
            "trained %d rows for %d epochs (%d steps) in %.2f s: loss %.4f%s",
            len(dataset),
            config.epochs,
            steps,
            seconds,
            loss,
            "" if epsilon is None else f", epsilon {epsilon:.3f}",
        )
        return TrainResult(result, len(dataset), config.epochs, steps, loss, epsilon, seconds)


# ---------------------------------------------------------------------------------- checks


def _check_data(spec: ModelSpec, dataset: Dataset) -> None:
    if len(dataset) == 0:
        raise TrainingError("the dataset has no rows")
    classes = dataset.num_classes
    check_fits(spec, dataset, Metric.ACCURACY if classes is not None else Metric.NEGATED_SSE)
    features, labels = dataset.features, dataset.labels
    if features.shape[0] != len(dataset):
        raise DataFormatError(f"{features.shape[0]} feature rows but {len(dataset)} labels")
    if features.dtype.kind == "f" and not np.isfinite(features).all():
        row = int(np.argwhere(~np.isfinite(features))[0][0])
        raise DataFormatError(f"row {row + 1} of the features holds a non-finite value")
    if features.dtype.kind != "f" and int(features.min()) < 0:
        raise DataFormatError("a token id is negative")
    if classes is None:
        if not np.isfinite(labels).all():
            raise DataFormatError("a regression target is not finite")
    elif labels.dtype.kind not in "iu" or int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise DataFormatError(f"labels must be class indices from 0 to {classes - 1}")


def _check_private(spec: ModelSpec, dataset: Dataset, dp: DPConfig) -> None:
    if dp.delta >= 1 / len(dataset):
        raise ConfigError(
            f"dp.delta={dp.delta:g} must be below 1/rows = {1 / len(dataset):g}: a larger "
            "delta allows a whole row to leak"
        )
    if any(isinstance(layer, EmbeddingMean) for layer in spec.layers):
        raise TrainingError(
            "DP-SGD cannot train embedding_mean layers: Opacus has no per-sample gradient "
            "for an EmbeddingBag fed (rows, positions) ids"
        )


# -------------------------------------------------------------------------------- training


@contextmanager
def _seeded(seed: int) -> Iterator[torch.Generator]:
    """One thread, deterministic algorithms, autograd on, torch's global RNG forked and seeded.

    Yields the generator for shuffling. The global generator (dropout, DP noise) and the
    shuffling generator get distinct seeds derived from `seed`.
    """
    import torch

    shuffle_seed, global_seed = np.random.SeedSequence(seed).generate_state(2, np.uint64)
    threads = torch.get_num_threads()
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(int(global_seed))
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield torch.Generator().manual_seed(int(shuffle_seed))
        finally:
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
            torch.set_num_threads(threads)


def _tensors(spec: ModelSpec, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, *input_shape) inputs and (rows,) targets: int64 classes or float32 values."""
    import torch

    dtype = np.int64 if spec.input_dtype == "int64" else np.float32
    inputs = torch.from_numpy(np.array(dataset.features, dtype=dtype))  # a writable copy
    inputs = inputs.reshape(len(dataset), *spec.input_shape)
    label_dtype = np.float32 if dataset.num_classes is None else np.int64
    return inputs, torch.from_numpy(np.array(dataset.labels, dtype=label_dtype))


def _loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for class indices, mean squared error for float targets."""
    from torch.nn import functional

    if targets.dtype.is_floating_point:
        return functional.mse_loss(outputs.reshape(-1), targets)  # outputs: (rows, 1)
    return functional.cross_entropy(outputs, targets)  # outputs: (rows, classes)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate)


class _Anchor:
    """FedProx's proximal term (mu / 2) * sum ||w - w0||^2, w0 detached copies of the weights
    training starts from, taken when the anchor is made."""

    def __init__(self, model: nn.Module, mu: float) -> None:
        self.mu = mu
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.start = [p.detach().clone() for p in self.params]

    def term(self) -> torch.Tensor:
        squares = [((p - w0) ** 2).sum() for p, w0 in zip(self.params, self.start, strict=True)]
        return self.mu / 2 * functools.reduce(operator.add, squares)

    def add_gradient(self) -> None:
        """Add the term's gradient, mu * (w - w0), to every parameter's `.grad`."""
        import torch

        with torch.no_grad():
            for p, w0 in zip(self.params, self.start, strict=True):
                if p.grad is not None:
                    p.grad.add_(p - w0, alpha=self.mu)


def _anchor(model: nn.Module, config: TrainConfig) -> _Anchor | None:
    return _Anchor(model, config.prox_mu) if config.prox_mu > 0 else None


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    anchor: _Anchor | None = None,
) -> float:
    """One optimizer step on a batch (with the proximal term, if any); returns the batch's
    summed data loss (0 for an empty batch)."""
    optimizer.zero_grad(set_to_none=True)
    loss = _loss(model(inputs), targets)
    objective = loss if anchor is None else loss + anchor.term()
    objective.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.item()) * len(targets) if len(targets) else 0.0


def _epoch_loss(epoch: int, total: float, rows: int) -> float:
    mean = total / rows if rows else math.nan
    logger.debug("epoch %d: loss %.4f", epoch + 1, mean)
    if rows and not math.isfinite(mean):
        raise TrainingError(f"training diverged: the loss is {mean} in epoch {epoch + 1}")
    return mean


def _fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: TrainConfig,
    shuffle: torch.Generator,
    progress: Progress | None,
) -> tuple[int, float]:
    """Plain minibatch training: a fresh permutation each epoch. Returns (steps, last loss)."""
    import torch

    rows, size = len(targets), config.batch_size
    optimizer = _optimizer(model, config)
    anchor = _anchor(model, config)
    total = config.epochs * math.ceil(rows / size)
    done, loss = 0, math.nan
    for epoch in range(config.epochs):
        order = torch.randperm(rows, generator=shuffle)
        summed = 0.0
        for start in range(0, rows, size):
            batch = order[start : start + size]
            summed += _step(model, optimizer, inputs[batch], targets[batch], anchor)
            done += 1
            if progress is not None:
                progress(done, total)
        loss = _epoch_loss(epoch, summed, rows)
    return done, loss


def _fit_private(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: TrainConfig,
    dp: DPConfig,
    shuffle: torch.Generator,
    progress: Progress | None,
) -> tuple[dict[str, torch.Tensor], int, float, float]:
    """DP-SGD with Opacus. Returns (state dict, steps, last loss, epsilon spent)."""
    _import_opacus()
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator
    from torch.utils.data import DataLoader, TensorDataset

    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise TrainingError(f"DP-SGD cannot train this spec: {problems[0]}")
    loader = DataLoader(
        TensorDataset(inputs, targets), batch_size=config.batch_size, generator=shuffle
    )
    anchor = _anchor(model, config)
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        engine = PrivacyEngine(accountant=dp.accountant)
        private, optimizer, loader = engine.make_private_with_epsilon(
            module=model,
            optimizer=_optimizer(model, config),
            data_loader=loader,
            target_epsilon=dp.epsilon,
            target_delta=dp.delta,
            epochs=config.epochs,
            max_grad_norm=dp.max_grad_norm,
        )
        logger.debug("DP-SGD noise multiplier %.4f", optimizer.noise_multiplier)
        if anchor is not None:  # Opacus overwrites .grad: add the term's gradient after noise
            optimizer.attach_step_hook(_then(optimizer.step_hook, anchor))
        total = config.epochs * len(loader)
        done, loss = 0, math.nan
        for epoch in range(config.epochs):
            summed, seen = 0.0, 0
            for batch_inputs, batch_targets in loader:  # Poisson: sizes vary, may be empty
                summed += _step(private, optimizer, batch_inputs, batch_targets)
                seen += len(batch_targets)
                done += 1
                if progress is not None:
                    progress(done, total)
            loss = _epoch_loss(epoch, summed, seen)
        epsilon = float(engine.get_epsilon(dp.delta))
    return dict(private.state_dict()), done, loss, epsilon


def _then(hook: Callable[[Any], None] | None, anchor: _Anchor) -> Callable[[Any], None]:
    """Opacus's step hook (the accountant's, run after clipping and noise), then the proximal
    term's gradient."""

    def run(optimizer: Any) -> None:
        if hook is not None:
            hook(optimizer)
        anchor.add_gradient()

    return run


def _import_opacus() -> None:
    """Import Opacus, undoing the `logging.basicConfig` it runs at import time.

    A library must not configure the root logger (that is the CLI's job); Opacus 1.6 adds a
    stderr handler to it when it has none.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    import opacus  # noqa: F401

    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


def _describe(name: str, exc: ValidationError) -> str:
    """One readable line for a pydantic error: which field and why."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or name
    why = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{name}.{where}: {why}{more}"
