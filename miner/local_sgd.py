"""Plain minibatch training and what DP-SGD shares with it: the seeded, deterministic
context a run happens in, the data as tensors, the loss, the optimizer, one step, and
FedProx's proximal term.

With `TrainConfig.prox_mu` above 0, the local objective is FedProx's (Li et al., 2020): the
loss plus (mu / 2) * sum ||w - w0||^2 over the parameters, w0 the weights training started
from (the parent's). It keeps a data owner's steps near the model everyone builds on, which
helps the merge when shards are label-skewed. With mu 0 the term is not built. Torch is
imported inside the functions: importing this module loads neither torch nor Opacus.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from marketplace.rules.datafiles import Dataset
from marketplace.rules.models import ModelSpec
from miner.train_config import Progress, TrainConfig, TrainingError

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)


@contextmanager
def seeded(seed: int) -> Iterator[torch.Generator]:
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


def tensors(spec: ModelSpec, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
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


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate)


class ProxAnchor:
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


def prox_anchor(model: nn.Module, config: TrainConfig) -> ProxAnchor | None:
    return ProxAnchor(model, config.prox_mu) if config.prox_mu > 0 else None


def step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    anchor: ProxAnchor | None = None,
) -> float:
    """One optimizer step on a batch (with the proximal term, if any); returns the batch's
    summed data loss (0 for an empty batch)."""
    optimizer.zero_grad(set_to_none=True)
    loss = _loss(model(inputs), targets)
    objective = loss if anchor is None else loss + anchor.term()
    objective.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.item()) * len(targets) if len(targets) else 0.0


def epoch_loss(epoch: int, total: float, rows: int) -> float:
    mean = total / rows if rows else math.nan
    logger.debug("epoch %d: loss %.4f", epoch + 1, mean)
    if rows and not math.isfinite(mean):
        raise TrainingError(f"training diverged: the loss is {mean} in epoch {epoch + 1}")
    return mean


def fit(
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
    optimizer = make_optimizer(model, config)
    anchor = prox_anchor(model, config)
    total = config.epochs * math.ceil(rows / size)
    done, loss = 0, math.nan
    for epoch in range(config.epochs):
        order = torch.randperm(rows, generator=shuffle)
        summed = 0.0
        for start in range(0, rows, size):
            batch = order[start : start + size]
            summed += step(model, optimizer, inputs[batch], targets[batch], anchor)
            done += 1
            if progress is not None:
                progress(done, total)
        loss = epoch_loss(epoch, summed, rows)
    return done, loss
