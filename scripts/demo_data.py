"""The demo's data owners' side: digits split and cut into label-skewed shards, each shard
in its own private file, a data owner's local training, the centralized baseline, and what
each data owner's privacy spend bought.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from demo_report import arch_of, console
from demo_setup import DemoMarket

from marketplace.dev.shards import digits_splits, dirichlet_shards, subset
from marketplace.roles.scorer import TaskView
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.evaluation import score
from marketplace.rules.messages import Metric, NodeKind
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.wire.report import PayoutReport
from miner.config import MinerConfig
from miner.ledger import PrivacyLedger, fingerprint
from miner.train_config import TrainConfig
from miner.trainer import Trainer, TrainResult

OWNERS = 4


def market_data(seed: int, alpha: float) -> tuple[Dataset, Dataset, list[Dataset]]:
    """(validation, test, the data owners' shards): digits split by `seed`, the training part
    cut into label-skewed shards by Dirichlet(`alpha`). scripts/bench_market.py shares it."""
    train, validation, test = digits_splits(seed=seed)
    shard_rows = dirichlet_shards(train.labels, OWNERS, alpha, seed=seed + 1, min_size=20)
    return validation, test, [subset(train, rows) for rows in shard_rows]


def private_data(args: argparse.Namespace, folder: Path) -> tuple[Dataset, Dataset, list[Dataset]]:
    """(validation, test, shards): each data owner's shard written to its own CSV under
    `folder`/private (it never leaves); the market's title and the shards said."""
    validation, test, shards = market_data(args.seed, args.alpha)
    private = folder / "private"
    private.mkdir()
    for i, shard in enumerate(shards):
        (private / f"miner-{i + 1}.csv").write_bytes(to_csv(shard))
    console.rule("[bold]Gradient marketplace: digits, four data owners, one evaluator")
    console.print(
        f"shards (alpha {args.alpha}): "
        + ", ".join(f"miner-{i + 1} {len(s)} rows {_classes(s)}" for i, s in enumerate(shards))
    )
    return validation, test, shards


def private_file(folder: Path, owner: int) -> Path:
    """Data owner `owner`'s (0-based) shard, on its own machine."""
    return folder / "private" / f"miner-{owner + 1}.csv"


def _classes(shard: Dataset) -> str:
    counts = np.bincount(shard.labels.astype(np.int64), minlength=10)
    return "[" + " ".join(str(int(c)) for c in counts) + "]"


def owner_config(args: argparse.Namespace, owner: int, **more: Any) -> MinerConfig:
    """Data owner `owner`'s (0-based) local training: the demo's epochs and learning rate."""
    return MinerConfig(
        epochs=args.epochs, learning_rate=args.lr, seed=args.seed + 10 * owner, **more
    )


def centralized(
    trainer: Trainer,
    model: ModelSpec,
    model_seed: int,
    shards: list[Dataset],
    args: argparse.Namespace,
) -> TrainResult:
    """The baseline: `model` from its architecture's weights, trained on the union of the
    shards for as many epochs as a data owner trains in the whole market."""
    union = Dataset(
        np.concatenate([s.features for s in shards]),
        np.concatenate([s.labels for s in shards]),
        10,
    )
    config = TrainConfig(
        epochs=args.epochs * args.rounds,
        batch_size=32,
        learning_rate=args.lr,
        optimizer="adam",
        seed=args.seed,
    )
    return trainer.train(model, init_weights(model, model_seed), union, config)


def what_privacy_bought(
    args: argparse.Namespace,
    market: DemoMarket,
    report: PayoutReport,
    view: TaskView,
    data: tuple[Dataset, list[Dataset]],
    ledgers: list[PrivacyLedger | None],
) -> list[tuple[str, int, float | None, int | None, float | None]]:
    """(owner, rows, epsilon spent, best valid node, its test accuracy) for each data owner:
    its best update, or with `--aggregate` the best merge its updates went into."""
    test, shards = data
    bought = []
    for i, account in enumerate(market.owners):
        own = [n for n in report.nodes if n.author == account.address and n.kind is NodeKind.UPDATE]
        if args.aggregate:  # nobody saw an update alone: what it bought is the merges it joined
            ids = {n.node_id for n in own if n.valid}
            own = [n for n in report.nodes if n.kind is NodeKind.MERGE and ids & set(n.parents)]
        best = max((n for n in own if n.valid), key=lambda n: (n.score, -n.node_id), default=None)
        accuracy = None
        if best is not None and (weights := view.verdicts[best.node_id].weights) is not None:
            model = view.architectures[arch_of(report, best.node_id)]
            accuracy = score(model, weights, test, Metric.ACCURACY) / len(test)
        ledger = ledgers[i]
        private = private_file(market.folder, i)
        spent = None if ledger is None else ledger.spent(fingerprint(private)).epsilon
        best_id = None if best is None else best.node_id
        bought.append((f"miner-{i + 1}", len(shards[i]), spent, best_id, accuracy))
    return bought
