"""`make bench-scale`: what the market costs as a task's tree grows, next to its first round.

On digits with the demo's small architecture (64-128-10) and real training (1 local epoch of
Adam at 5e-3 on Dirichlet(0.5) shards: cheap, and not what is measured, but enough for every
round to merge), three tasks, each on a fresh contract of one chain:

- the rounds curve: 4 miners for 40 rounds. Per round: the market overhead per update (the
  median over the round's updates of download, seal, upload, submit and the evaluator's check
  of it: what the demo reports, everything but training and scoring), the chain time of the
  round (every call of every role on the `ChainClient`: transactions, receipts, reads) and the
  evaluator's step (check, merge, post); printed for rounds 1, 5, 10, 20 and 40 with each
  figure's ratio to round 1's;
- settlement: a task of 100 updates (10 miners x 10 rounds) and one of 1,000 (25 miners x 40
  rounds). After the reveal: the settle of the evaluator that ran the rounds (warm: evaluate,
  upload the report, post its root), `evaluate` by a fresh `Evaluator` on a fresh client (cold,
  as after a restart; it must reach the same root), and `verify_task` (`marketplace verify`)
  in public and with a miner's key (which re-scores the merges), each next to round 1's
  evaluator step and per update.

`--engine tester|anvil|both`: eth-tester in-process with the local store, or anvil and an IPFS
daemon started for the run (as `demo.py --engines`); `--quick`: a smoke test of fewer rounds
and updates. The tasks are measured by `bench_scale_tasks` into `bench_scale_figures`, and
shown by `bench_scale_report`. The last line is machine-readable:

    BENCH-SCALE <engine>.<figure>=<seconds>/<ratio to round 1> ...
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_scale_figures import CURVE, QUICK_CURVE, QUICK_SETTLED, SETTLED, TaskRun  # noqa: E402
from bench_scale_report import bench_line, rounds_table, settlement_table, target  # noqa: E402
from bench_scale_tasks import ROLES, environment, run_task  # noqa: E402
from rich.console import Console  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)


def options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("tester", "anvil", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="a smoke test: fewer rounds, updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="every figure, as JSON, to this file")
    parser.add_argument(
        "--tasks",
        default="curve,small,large",
        help="which tasks: curve (4 miners x 40 rounds), small (100 updates), large (1,000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="each settlement stage under cProfile: the largest task's top 15 lines printed",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> list[TaskRun]:
    args = options().parse_args(argv)
    engines = ("tester", "anvil") if args.engine == "both" else (args.engine,)
    every = (QUICK_CURVE, *QUICK_SETTLED) if args.quick else (CURVE, *SETTLED)
    wanted = set(args.tasks.split(","))
    shapes = [s for key, s in zip(("curve", "small", "large"), every, strict=True) if key in wanted]
    accounts = ROLES + max(s.miners for s in shapes)
    runs: list[TaskRun] = []
    for engine in engines:  # one at a time: the figures are the engine's alone
        with contextlib.ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
            env = environment(engine, accounts, folder, stack)
            for shape in shapes:
                runs.append(run_task(env, shape, args.seed, progress, args.profile))
                console.print(rounds_table(runs[-1]))  # as it comes: a long run shows its part
                if args.json is not None:
                    args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    settled = [r for r in runs if r.shape in SETTLED + QUICK_SETTLED]
    if settled:
        console.print(settlement_table(settled))
    for run in runs:
        if run.shape in (CURVE, QUICK_CURVE):
            console.print(target(run))
    for engine in engines:
        largest = max((r for r in runs if r.engine == engine), key=lambda r: r.shape.updates)
        for name, lines in largest.profiles.items():
            console.print(f"{engine}, {largest.shape.name}, {name}: cProfile", markup=False)
            console.print(lines, markup=False, highlight=False)
    wall = time.perf_counter() - STARTED
    console.print(
        "wall time: "
        + ", ".join(f"{r.engine} {r.shape.name} {r.wall_s:.1f} s" for r in runs)
        + f"; the whole bench {wall:.1f} s"
    )
    print(bench_line(runs), flush=True)
    return runs


def progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
