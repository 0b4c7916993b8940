"""The report of `make bench-scale`: the per-round table next to round 1, the settlement
table, the issue's target, and the machine-readable BENCH-SCALE line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from bench_scale_figures import CURVE, RoundCost, TaskRun
from rich.table import Table

SHOWN_ROUNDS = (1, 5, 10, 20, 40)  # 1-based, as the issue counts them


def ratio(value: float, first: float) -> float:
    return value / first if first > 0 else math.inf


def rounds_table(run: TaskRun) -> Table:
    first = run.rounds[0]
    table = Table(
        title=f"{run.engine}: {run.shape.name} ({run.shape.miners} miners), per round, "
        "next to round 1"
    )
    for column in ("round", "updates", "overhead/update s", "x r1", "chain s", "x r1"):
        table.add_column(column, justify="right")
    table.add_column("evaluator s", justify="right")
    table.add_column("x r1", justify="right")
    for cost in shown(run.rounds):
        table.add_row(
            str(cost.round),
            str(cost.updates),
            f"{cost.overhead_s:.4f}",
            f"{ratio(cost.overhead_s, first.overhead_s):.2f}",
            f"{cost.chain_s:.3f}",
            f"{ratio(cost.chain_s, first.chain_s):.2f}",
            f"{cost.evaluator_s:.3f}",
            f"{ratio(cost.evaluator_s, first.evaluator_s):.2f}",
        )
    return table


def settlement_table(runs: Sequence[TaskRun]) -> Table:
    table = Table(
        title="settlement, next to round 1's evaluator step (x r1) and per update "
        "(updates trained: 1 local epoch)"
    )
    table.add_column("engine, task")
    for column in ("nodes", "r1 evaluator s"):
        table.add_column(column, justify="right")
    for what in ("warm settle", "cold evaluate", "verify public", "verify miner"):
        table.add_column(f"{what} s (x r1, ms/update)", justify="right")
    table.add_column("scorings warm/cold", justify="right")
    for run in runs:
        cost = run.settlement
        assert cost is not None
        first = run.rounds[0].evaluator_s
        cells = [
            f"{s:.2f} ({ratio(s, first):.0f}x, {1000 * s / cost.updates:.1f})"
            for s in (cost.warm_s, cost.cold_s, cost.verify_public_s, cost.verify_miner_s)
        ]
        table.add_row(
            f"{run.engine}, {run.shape.name}",
            str(cost.nodes),
            f"{first:.3f}",
            *cells,
            f"{cost.scorings}/{cost.cold_scorings}",
        )
    return table


def shown(rounds: Sequence[RoundCost]) -> Iterator[RoundCost]:
    wanted = set(SHOWN_ROUNDS) | {len(rounds)}
    return (cost for cost in rounds if cost.round in wanted)


def bench_line(runs: Sequence[TaskRun]) -> str:
    """BENCH-SCALE <engine>.<figure>=<seconds>/<ratio to round 1> ..."""
    parts = []
    for run in runs:
        first = run.rounds[0]
        prefix = f"{run.engine}.{run.shape.updates}u"
        if run.shape.name == CURVE.name:
            prefix = f"{run.engine}.curve"
            for cost in shown(run.rounds):
                for name, value, base in (
                    ("overhead", cost.overhead_s, first.overhead_s),
                    ("chain", cost.chain_s, first.chain_s),
                    ("evaluator", cost.evaluator_s, first.evaluator_s),
                ):
                    parts.append(
                        f"{prefix}.{name}.r{cost.round}={value:.4f}/{ratio(value, base):.2f}"
                    )
            continue
        settled = run.settlement
        assert settled is not None
        for name, value in (
            ("settle_warm", settled.warm_s),
            ("evaluate_cold", settled.cold_s),
            ("verify_public", settled.verify_public_s),
            ("verify_miner", settled.verify_miner_s),
        ):
            parts.append(f"{prefix}.{name}={value:.3f}/{ratio(value, first.evaluator_s):.1f}")
    return "BENCH-SCALE " + " ".join(parts)


def target(run: TaskRun) -> str:
    """The issue's target: overhead per update at round 20 within 1.5x of round 1."""
    late = [c for c in run.rounds if c.round == 20] or run.rounds[-1:]
    value = ratio(late[0].overhead_s, run.rounds[0].overhead_s)
    verdict = "met" if value <= 1.5 else "NOT met"
    return (
        f"{run.engine}: overhead per update at round {late[0].round} is {value:.2f}x round 1's "
        f"(target: within 1.5x at round 20): {verdict}"
    )
