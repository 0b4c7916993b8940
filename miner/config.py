"""How a data owner trains and what it builds on: `MinerConfig`, and each round's `TrainConfig`
drawn from it (a fresh secret seed under DP)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from miner.train_config import DPConfig, TrainConfig


@dataclass(frozen=True)
class MinerConfig:
    """How this data owner trains and what it builds on.

    Attributes:
        epochs, batch_size, learning_rate, optimizer: local training (miner.train_config).
        seed: training seed; each round trains with seed + round. With DP a fresh secret seed
            is drawn every round instead (the noise must not be reproducible by others).
        dp_epsilon, dp_delta, max_grad_norm: DP-SGD with Opacus when `dp_epsilon` is set.
        prox_mu: the weight of FedProx's proximal term (None: the task spec's `prox_mu`).
        architecture: the architecture to train when no merge is readable (None: the first).
        parent: always build on this node (None: the latest readable merge, else the
            architecture).
        lineage: train only this architecture's lineage, its latest readable merge or itself
            (None: the best merge of any). A data owner that trains every architecture runs
            one miner per lineage: the task's cap is per account and architecture.
    """

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    max_grad_norm: float = 1.0
    prox_mu: float | None = None
    architecture: int | None = None
    parent: int | None = None
    lineage: int | None = None

    def train_config(self, round_index: int, task_prox_mu: float = 0.0) -> TrainConfig:
        """The round's training config; `task_prox_mu`: the task spec's suggested `prox_mu`,
        used unless this config sets its own."""
        dp = None
        seed = self.seed + round_index
        if self.dp_epsilon is not None:
            dp = DPConfig(
                epsilon=self.dp_epsilon, delta=self.dp_delta, max_grad_norm=self.max_grad_norm
            )
            seed = secrets.randbits(62)
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,  # type: ignore[arg-type]  # checked by TrainConfig
            seed=seed,
            dp=dp,
            prox_mu=task_prox_mu if self.prox_mu is None else self.prox_mu,
        )
