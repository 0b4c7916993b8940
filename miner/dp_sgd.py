"""DP-SGD through Opacus (imported only when a run asks for it).

Poisson sampling with an expected batch of `batch_size` rows, per-sample gradients clipped to
`max_grad_norm`, and Gaussian noise calibrated so that the whole run spends at most `epsilon`
at `delta`; the result reports what the accountant measured. The noise comes from a seeded
pseudo-random generator, so anyone who knows the seed can regenerate it: **with DP, the seed
is a secret**, to be drawn fresh (`secrets.randbits(63)`) and never published.

FedProx's proximal gradient mu * (w - w0) is added after Opacus clips and noises the
per-sample gradients: it depends on the data only through w, already a private output, so the
guarantee is unchanged.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from marketplace.errors import ConfigError
from marketplace.rules.datafiles import Dataset
from marketplace.rules.layers import EmbeddingMean
from marketplace.rules.models import ModelSpec
from miner.local_sgd import ProxAnchor, epoch_loss, make_optimizer, prox_anchor, step
from miner.train_config import DPConfig, Progress, TrainConfig, TrainingError

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

# Opacus and torch warnings that say nothing to a miner: the pseudo-random generator is chosen
# on purpose (determinism; the seed is the secret), the rest are notes about internals.
_QUIET = (
    r"Secure RNG turned off",
    r"Optimal order is the (largest|smallest) alpha",
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
)


def check_private(spec: ModelSpec, dataset: Dataset, dp: DPConfig) -> None:
    """Refuse a run DP-SGD cannot protect or train, before it starts."""
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


def fit_private(
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
    anchor = prox_anchor(model, config)
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        engine = PrivacyEngine(accountant=dp.accountant)
        private, optimizer, loader = engine.make_private_with_epsilon(
            module=model,
            optimizer=make_optimizer(model, config),
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
                summed += step(private, optimizer, batch_inputs, batch_targets)
                seen += len(batch_targets)
                done += 1
                if progress is not None:
                    progress(done, total)
            loss = epoch_loss(epoch, summed, seen)
        epsilon = float(engine.get_epsilon(dp.delta))
    return dict(private.state_dict()), done, loss, epsilon


def _then(hook: Callable[[Any], None] | None, anchor: ProxAnchor) -> Callable[[Any], None]:
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
