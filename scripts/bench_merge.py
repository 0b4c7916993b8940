"""Scorings and wall time of one round's merge, `merge_round` next to the repeated leave-one-out
filter it replaced (issue 14, attack 8), measured in the same run on the same updates.

The updates are real: a 64-16-10 MLP on the digits validation set (360 rows, `score`), k
updates of which a quarter are poisoned (weights moved far from the parent's), the rest steps
of different sizes towards weights trained on the digits training set.
Run: `PYTHONPATH=. .venv/bin/python scripts/bench_merge.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from marketplace.dev.shards import digits_splits
from marketplace.rules.evaluation import score
from marketplace.rules.merge import (
    Candidate,
    Merged,
    MergeRule,
    Scorer,
    merge_round,
    weighted_average,
)
from marketplace.rules.messages import Metric
from marketplace.rules.models import ModelSpec, init_weights

RULE = MergeRule(tolerance=1e-6, min_gain=2, exact_max=6, permutations=16)  # the defaults
TINY = ModelSpec(
    input_shape=[64],
    layers=[
        {"type": "linear", "in_features": 64, "out_features": 16},
        {"type": "relu"},
        {"type": "linear", "in_features": 16, "out_features": 10},
    ],
)


def repeated_loo(
    candidates: Sequence[Candidate], scorer: Scorer, base_score: int
) -> tuple[int, ...]:
    """The filter before issue 14's attack 8 (no-updates aside): score the kept set and each
    leave-one-out; remove the update whose removal raises the score most; repeat until none
    does. Returns the kept ids and their merge's score."""
    by_id = {c.node_id: c for c in candidates}
    cache: dict[tuple[int, ...], int] = {(): base_score}

    def merged(ids: tuple[int, ...]) -> int:
        if ids not in cache:
            cache[ids] = scorer(
                weighted_average([(by_id[i].weights, by_id[i].samples) for i in ids])
            )
        return cache[ids]

    kept = tuple(sorted(by_id))
    for _ in range(len(kept)):
        current = merged(kept)
        raised = {i: merged(tuple(j for j in kept if j != i)) - current for i in kept}
        best = max(raised.values())
        if best <= 0:
            break
        victim = max(i for i in kept if raised[i] == best)
        kept = tuple(j for j in kept if j != victim)
    for i in kept:  # the reward rule's leave-one-out of the kept set, as merge_round gives
        merged(tuple(j for j in kept if j != i))
    return kept, merged(kept)


def counted(scorer: Scorer) -> tuple[Scorer, list[int]]:
    calls: list[int] = []

    def wrapped(weights: Mapping[str, npt.NDArray[np.float32]]) -> int:
        calls.append(1)
        return scorer(weights)

    return wrapped, calls


def updates(k: int, parent: Merged, trained: Merged, seed: int) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    out = []
    for node_id in range(1, k + 1):
        if node_id % 4 == 0:  # poisoned: far from the parent, in a random direction
            weights = {
                n: (a + rng.normal(0, 0.4, a.shape)).astype(np.float32) for n, a in parent.items()
            }
        else:  # a step towards the trained weights, of its own size, with some noise
            step = rng.uniform(0.3, 1.2)
            weights = {
                n: (a + step * (trained[n] - a) + rng.normal(0, 0.02, a.shape)).astype(np.float32)
                for n, a in parent.items()
            }
        out.append(Candidate(node_id, weights, int(rng.integers(50, 300)), parent))
    return out


def main() -> None:
    import torch

    from miner.train_config import TrainConfig
    from miner.trainer import Trainer

    train, validation, _ = digits_splits(seed=0)
    initial = init_weights(TINY, 1)
    result = Trainer().train(
        TINY,
        initial,
        train,
        TrainConfig(epochs=5, batch_size=32, learning_rate=0.01, optimizer="adam", seed=0),
    )
    parent = {n: t.numpy() for n, t in initial.items()}
    trained = {n: t.detach().numpy() for n, t in result.weights.items()}

    def scorer(weights: Mapping[str, npt.NDArray[np.float32]]) -> int:
        tensors = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in weights.items()}
        return score(TINY, tensors, validation, Metric.ACCURACY)

    base = scorer(parent)
    print(f"validation rows {len(validation)}, parent scores {base}")
    print(
        f"{'k':>3} {'before: scorings':>17} {'seconds':>8} {'after: scorings':>16} "
        f"{'seconds':>8} {'bound 3k':>9}  kept (before / after), merge score (before / after)"
    )
    for k in (5, 10, 20):
        candidates = updates(k, parent, trained, seed=k)
        before, calls_before = counted(scorer)
        started = time.perf_counter()
        old_kept, old_score = repeated_loo(candidates, before, base)
        old_seconds = time.perf_counter() - started
        after, calls_after = counted(scorer)
        started = time.perf_counter()
        merged = merge_round(candidates, after, RULE, base_score=base)
        new_seconds = time.perf_counter() - started
        assert merged.scorings == len(calls_after)
        print(
            f"{k:>3} {len(calls_before):>17} {old_seconds:>8.2f} {merged.scorings:>16} "
            f"{new_seconds:>8.2f} {3 * k:>9}  {len(old_kept)} / {len(merged.kept)}, "
            f"{old_score} / {merged.score}"
        )


if __name__ == "__main__":
    main()
