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

With `TrainConfig.dp` set, training is DP-SGD through Opacus (miner.dp_sgd; **with DP, the seed
is a secret**); otherwise plain minibatch training (miner.local_sgd). Either adds FedProx's
proximal term when `TrainConfig.prox_mu` is above 0. What a run is told and how it fails:
miner.train_config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from marketplace.errors import DataFormatError
from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import check_fits
from marketplace.rules.messages import Metric
from marketplace.rules.models import ModelSpec, build_model, check_weights
from miner.dp_sgd import check_private, fit_private
from miner.local_sgd import fit, seeded, tensors
from miner.train_config import Progress, TrainConfig, TrainingError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


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
            check_private(spec, dataset, config.dp)
        with seeded(config.seed) as shuffle:
            model = build_model(spec, weights)  # WeightsError; inside: no inference tensors
            model.train(True)
            inputs, targets = tensors(spec, dataset)
            if config.dp is None:
                steps, loss = fit(model, inputs, targets, config, shuffle, progress)
                epsilon = None
                trained = model.state_dict()
            else:
                trained, steps, loss, epsilon = fit_private(
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
