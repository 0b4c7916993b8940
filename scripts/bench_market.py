"""`make bench-market`: the market's accuracy next to federated learning's, on identical shards.

For every seed and Dirichlet alpha, on the demo's data (`demo_data.market_data`: the same digits
splits and label-skewed shards of four data owners) and its 1 MB MLP (64-2048-64-10, the large
architecture's initial weights):

- centralized: the demo's baseline (`demo_data.centralized`), the union of the shards for epochs x
  rounds epochs; every figure is a test accuracy divided by this one's, at the same rounds;
- FedAvg and FedProx (`--prox-mu`, default 0.1): every round, all four data owners train the
  global model with exactly the demo miners' local step (`demo_data.owner_config(...).train_config`:
  epochs, batch, learning rate, Adam, per-owner and per-round seeds, `miner.trainer.Trainer`),
  then the global model is their sample-weighted average; the model after R rounds is scored;
- the market: `scripts/demo.py --seed S --alpha A --rounds R` plus each `--market-args` (a
  row each; by default every data owner on every architecture's lineage, and the 1 MB MLP's
  alone, both with the proximal term) as a subprocess, its `accuracy_ratio` read from its
  last line (`--no-market` skips it; `--market-rounds`, 20 by default, about a minute a run).

Prints the mean and minimum over the seeds (and each seed's figure) and ends with one line:

    BENCH-MARKET <method>.alpha<A>.rounds<R>=<mean>/<min> ...

Run: `PYTHONPATH=. .venv/bin/python scripts/bench_market.py --seeds 0-4 --no-market`.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import demo
import torch
from demo_data import centralized, market_data, owner_config
from demo_steps import LARGE_SEED, LARGE_WIDTHS
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import score
from marketplace.rules.messages import Metric
from marketplace.rules.models import ModelSpec, init_weights, mlp
from miner.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
# The market's rows by default: one lineage per architecture, every owner training each, or
# every owner on the 1 MB MLP; both with FedProx's proximal term, as the baselines' FedProx.
DEFAULT_MARKETS = ("--start-on each --prox-mu 0.1", "--start-on large --prox-mu 0.1")
METHODS = ("FedAvg", "FedProx")  # the baselines' rows, after one row per market configuration
DEMO_LINE = re.compile(r"DEMO OK accuracy_ratio=([0-9.]+) .*")
Weights = dict[str, torch.Tensor]
Cell = tuple[str, float, int]  # (method, alpha, rounds)
console = Console(width=None if sys.stdout.isatty() else 140)  # the tables, on stdout
progress_console = Console(stderr=True)


def numbers(text: str, kind: Callable[[str], float | int]) -> list[float | int]:
    """ "0-4" -> [0, 1, 2, 3, 4]; "4,20" -> [4, 20]; "0.5,0.1" -> [0.5, 0.1]."""
    out: list[float | int] = []
    for part in text.split(","):
        low, dash, high = part.partition("-")
        out.extend(range(int(low), int(high) + 1) if dash and low else [kind(part)])
    return out


def demo_args(seed: int, alpha: float, rounds: int) -> argparse.Namespace:
    """The demo's own defaults (epochs, learning rate) for this seed, alpha and rounds."""
    flags = ["--seed", str(seed), "--alpha", str(alpha), "--rounds", str(rounds)]
    return demo.options().parse_args(flags)


def sample_weighted(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """FedAvg's average: sum(rows_i * w_i) / sum(rows_i), accumulated in float64."""
    total = sum(rows for _, rows in updates)
    return {
        name: (sum(w[name].double() * rows for w, rows in updates) / total).to(torch.float32)
        for name in updates[0][0]
    }


def federated(
    model: ModelSpec,
    shards: list[Dataset],
    args: argparse.Namespace,
    mu: float,
    rounds: Sequence[int],
    tick: Callable[[], None],
) -> dict[int, Weights]:
    """The global model after each of `rounds` rounds of FedAvg (mu 0) or FedProx (mu > 0)."""
    trainer = Trainer()
    weights = init_weights(model, LARGE_SEED)
    after: dict[int, Weights] = {}
    for round_index in range(max(rounds)):
        updates = []
        for owner, shard in enumerate(shards):
            config = owner_config(args, owner).train_config(round_index, mu)
            updates.append((trainer.train(model, weights, shard, config).weights, len(shard)))
            tick()
        weights = sample_weighted(updates)
        if round_index + 1 in rounds:
            after[round_index + 1] = weights
    return after


def market_row(extra: str) -> str:
    """A market row's name: the demo's flags it ran with."""
    return f"market {extra}".strip()


def market_ratio(seed: int, alpha: float, rounds: int, extra: str) -> float:
    """The demo's accuracy_ratio for this seed, alpha and rounds (and `--market-args`)."""
    with tempfile.TemporaryDirectory(prefix="bench-market-") as out:
        command = [
            *(sys.executable, str(ROOT / "scripts" / "demo.py")),
            *("--seed", str(seed), "--alpha", str(alpha), "--rounds", str(rounds)),
            *("--out", out, *shlex.split(extra)),
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    match = DEMO_LINE.fullmatch(lines[-1]) if lines else None
    if done.returncode != 0 or match is None:
        raise SystemExit(
            f"the market (seed {seed}, alpha {alpha}, {rounds} rounds) failed:\n"
            f"{done.stderr[-3000:]}"
        )
    return float(match.group(1))


def baselines(
    seed: int, alpha: float, rounds: Sequence[int], mu: float, tick: Callable[[], None]
) -> dict[Cell, float]:
    """FedAvg's and FedProx's ratios to centralized on the demo's shards for seed and alpha."""
    model = mlp(*LARGE_WIDTHS)
    _, test, shards = market_data(seed, alpha)
    args = demo_args(seed, alpha, max(rounds))
    runs = {
        m: federated(model, shards, args, x, rounds, tick)
        for m, x in (("FedAvg", 0.0), ("FedProx", mu))
    }
    ratios: dict[Cell, float] = {}
    for r in rounds:
        central = centralized(Trainer(), model, LARGE_SEED, shards, demo_args(seed, alpha, r))
        tick()
        central_correct = score(model, central.weights, test, Metric.ACCURACY)
        for method, after in runs.items():
            ratios[(method, alpha, r)] = (
                score(model, after[r], test, Metric.ACCURACY) / central_correct
            )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0-4", help='e.g. "0-4" or "0,2"')
    parser.add_argument("--alphas", default="0.5,0.1", help="Dirichlet label skews")
    parser.add_argument("--rounds", default="20", help="the baselines' rounds")
    parser.add_argument("--market-rounds", default="20", help="the market's rounds")
    parser.add_argument("--prox-mu", type=float, default=0.1, help="FedProx's proximal weight")
    parser.add_argument(
        "--market-args",
        action="append",
        help='more flags for scripts/demo.py, e.g. "--start-on large --prox-mu 0.1"; repeat it '
        "for one market row each (default: the two rows of DEFAULT_MARKETS)",
    )
    parser.add_argument("--no-market", action="store_true", help="only the baselines")
    args = parser.parse_args()
    args.market_args = args.market_args or list(DEFAULT_MARKETS)
    seeds = [int(s) for s in numbers(args.seeds, int)]
    alphas = [float(a) for a in numbers(args.alphas, float)]
    rounds = sorted(int(r) for r in numbers(args.rounds, int))
    market_rounds = (
        [] if args.no_market else sorted(int(r) for r in numbers(args.market_rounds, int))
    )

    per_seed: dict[Cell, dict[int, float]] = {}
    markets = len(market_rounds) * len(args.market_args)
    jobs = len(seeds) * len(alphas) * (8 * max(rounds) + len(rounds) + markets)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=progress_console, transient=True) as bar:
        task = bar.add_task("bench", total=jobs)
        for seed in seeds:
            for alpha in alphas:
                bar.update(task, description=f"seed {seed}, alpha {alpha}: baselines")
                found = baselines(seed, alpha, rounds, args.prox_mu, lambda: bar.advance(task))
                for r in market_rounds:
                    for extra in args.market_args:
                        bar.update(task, description=f"seed {seed}, alpha {alpha}: {extra}, {r}")
                        found[(market_row(extra), alpha, r)] = market_ratio(seed, alpha, r, extra)
                        bar.advance(task)
                for cell, ratio in found.items():
                    per_seed.setdefault(cell, {})[seed] = ratio
    report(per_seed, seeds, alphas, sorted(set(rounds) | set(market_rounds)), args)


def report(
    per_seed: dict[Cell, dict[int, float]],
    seeds: list[int],
    alphas: list[float],
    rounds: list[int],
    args: argparse.Namespace,
) -> None:
    title = (
        f"test accuracy / centralized, mean (min) over seeds {args.seeds}; 64-2048-64-10, "
        f"FedProx mu {args.prox_mu}"
    )
    methods = [*([] if args.no_market else map(market_row, args.market_args)), *METHODS]
    console.print(title)
    table = Table()
    table.add_column("")
    cells = [(a, r) for r in rounds for a in alphas]
    for alpha, r in cells:
        table.add_column(f"alpha {alpha}, {r} rounds", justify="right")
    summary = []
    for method in methods:
        row = []
        for alpha, r in cells:
            figures = per_seed.get((method, alpha, r))
            if not figures:
                row.append("-")
                continue
            mean, low = statistics.fmean(figures.values()), min(figures.values())
            row.append(f"{mean:.3f} ({low:.3f})")
            name = method.lower().replace(" --", "+").replace(" ", "=")
            summary.append(f"{name}.alpha{alpha}.rounds{r}={mean:.4f}/{low:.4f}")
        table.add_row(method, *row)
    console.print(table)
    seeds_table = Table(title="each seed's ratio")
    seeds_table.add_column("")
    for seed in seeds:
        seeds_table.add_column(f"seed {seed}", justify="right")
    for (method, alpha, r), figures in sorted(
        per_seed.items(), key=lambda c: (methods.index(c[0][0]), -c[0][1], c[0][2])
    ):
        seeds_table.add_row(
            f"{method}, alpha {alpha}, {r} rounds", *(f"{figures[s]:.3f}" for s in seeds)
        )
    console.print(seeds_table)
    print("BENCH-MARKET " + " ".join(summary), flush=True)


if __name__ == "__main__":
    main()
