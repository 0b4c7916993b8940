"""`make simulate`: who the reward rule pays when some participants game it.

Markets on the real contract (eth-tester in-process, the clock moved), with honest miners on
label-skewed shards and adversarial agents (scripts/simulation/agents.py), every role the
library the CLIs run. Per run: a table per agent kind (accounts, submissions, valid, what the
agreed payout report paid it, its share of the data + compute pools, reputation) and the
sponsor's refund; the run fails if the money does not balance to the wei or the sponsor paid
more than the bounty. In the honest scenario, each honest miner's data payout next to its true
marginal value (the market run again without it). Where an over-declarer, a sybil or a
rewind-copier takes part (a lie on top of real work), the market again with each of them as its
honest variant (the same work without the lie); the attack is its excess over that share, and
worst_adversary_share and adversary_total_share count these kinds by it (none if negative), the
others by their raw share. Then per-seed figures, their mean and minimum over the seeds, and
one last line:

    SIMULATE honest_share=<x> worst_adversary_share=<x> adversary_total_share=<x>
             spearman=<x> accuracy_ratio=<x>    (on one line)

(scripts/simulation/scenarios.py says what each figure is.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict

from rich.console import Console
from rich.table import Table
from simulation.accounting import MarketRun, Outcome, Paid, audit
from simulation.agents import ADVERSARY_KINDS, HONEST_KINDS, KINDS, VARIANT_KINDS
from simulation.market_setup import DATASETS, ETHER, MarketConfig
from simulation.scenarios import (
    ALONE,
    FIGURES,
    MIX,
    Marginal,
    Roster,
    SeedResult,
    adversary_share,
    parse_mix,
    parse_seeds,
    scenarios,
    simulate,
    simulate_line,
    spearman_of,
    summary,
)

console = Console(width=160)  # tables whole in a log, not cut to 80 columns
RAW = ", raw"
VARIANT = ", honest variant"
EXCESS = ", excess"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rosters = {MIX: parse_mix(args.mix)} if args.mix else scenarios(args.scenario)
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    base = MarketConfig(
        dataset=args.dataset,
        rounds=args.rounds,
        alpha=args.alpha,
        epochs=args.epochs,
        learning_rate=args.lr,
    )
    failures: list[str] = []

    def on_run(seed: int, name: str, run: MarketRun) -> None:
        print_run(seed, name, run)
        failures.extend(f"seed {seed} {name}: {problem}" for problem in audit(run))

    def marginal(name: str, roster: Roster) -> bool:
        no_adversary = all(kind in HONEST_KINDS for kind, _ in roster)
        return args.marginal if args.marginal is not None else no_adversary

    started = time.perf_counter()
    results = simulate(base, seeds, rosters, marginal, on_run)
    for result in results:
        for name, values in result.marginal.items():
            print_marginal(result.seed, name, values)
    print_alone(results)
    print_excess(results)
    print_figures(results)
    console.print(f"wall time {time.perf_counter() - started:.1f} s")
    for failure in failures:
        console.print(f"[red]FAILED[/] {failure}")
    print(simulate_line(results), flush=True)
    return 1 if failures else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="breast_cancer")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seeds", default="0", help="e.g. 0-4 or 0,2")
    parser.add_argument(
        "--scenario",
        choices=("all", "honest", "alone", "together"),
        default="all",
        help="honest only; each adversary kind alone with 3 honest miners; all of them together",
    )
    parser.add_argument(
        "--mix",
        help=f"one market instead of the scenarios, e.g. honest=3,free_rider=1 (kinds: "
        f"{', '.join(KINDS)})",
    )
    parser.add_argument(
        "--marginal",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the honest miners' true marginal values (default: only where no "
        "adversary takes part)",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew")
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    parser.add_argument("--lr", type=float, default=1e-3, help="local learning rate (Adam)")
    return parser


def _eth(wei: int) -> str:
    return f"{wei / ETHER:.4f}"


def print_run(seed: int, name: str, run: MarketRun) -> None:
    table = Table(
        title=f"seed {seed}, {name} ({run.config.dataset}, {run.config.rounds} rounds, "
        f"{run.seconds:.1f} s)",
        caption=f"ETH; share: of the data + compute pools ({_eth(run.pools)} ETH)",
    )
    columns = ("kind", "accounts", "submissions", "valid", "data", "compute", "expertise")
    for column in (*columns, "deposits", "share", "points"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in (*run.agents, run.scientists):
        by_kind[outcome.kind].append(outcome)
    for kind, outcomes in by_kind.items():
        paid = sum((o.paid for o in outcomes), Paid())
        table.add_row(
            kind,
            str(sum(len(o.accounts) for o in outcomes)),
            str(sum(o.submissions for o in outcomes)),
            str(sum(o.valid for o in outcomes)),
            *(_eth(v) for v in (paid.data, paid.compute, paid.expertise, paid.deposits)),
            f"{run.share(outcomes):.2%}",
            f"{paid.points:,}",
        )
    console.print(table)
    accuracy = f"winner: node {run.report.winner}, score {run.winner_score}, test accuracy "
    accuracy += f"{run.winner_accuracy:.4f}"
    if run.central_accuracy is not None:
        accuracy += f"; centralized {run.central_accuracy:.4f}"
    console.print(
        f"sponsor: bounty {_eth(run.escrow.bounty)}, refunded {_eth(run.escrow.reclaimed)}, "
        f"paid {_eth(run.sponsor_paid)} ETH; {accuracy}"
    )


def print_marginal(seed: int, name: str, values: list[Marginal]) -> None:
    table = Table(title=f"seed {seed}, {name}: data payout and true marginal value")
    for column in ("miner", "data paid (ETH)", "winner score with", "without", "marginal value"):
        table.add_column(column, justify="left" if column == "miner" else "right")
    for m in values:
        table.add_row(
            m.name, _eth(m.data_paid), str(m.with_score), str(m.without_score), f"{m.value:+d}"
        )
    console.print(table)
    console.print(f"Spearman(data payout, marginal value) = {spearman_of(values):.4f}")


def print_alone(results: list[SeedResult]) -> None:
    """Each adversary kind's share when alone with honest miners, mean and max over seeds; for
    a kind with an honest variant, its raw share, the variant's and the excess (the figure)."""
    shares: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for name in result.runs:
            if name.startswith(ALONE):
                kind = name.removeprefix(ALONE)
                if kind in VARIANT_KINDS:
                    shares[kind + EXCESS].append(result.excess(name, kind))
                    shares[kind + RAW].append(result.share(name, kind))
                    shares[kind + VARIANT].append(result.variant_share(name, kind))
                else:
                    shares[kind].append(result.share(name, kind))
    if not shares:
        return
    table = Table(
        title="each adversary kind alone with 3 honest miners: its share of the pools",
        caption="over_declarer, sybil, rewind_copier: the excess over the same kind's honest "
        "variant (the counterfactual run); worst_adversary_share uses the excess (0 if negative)",
    )
    for column in ("kind", "mean", "max"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in ADVERSARY_KINDS:
        for row in (kind, *(kind + suffix for suffix in (EXCESS, RAW, VARIANT))):
            if row in shares:
                values = shares[row]
                table.add_row(row, f"{sum(values) / len(values):.2%}", f"{max(values):.2%}")
    console.print(table)


def print_excess(results: list[SeedResult]) -> None:
    """Per seed, scenario with an honest-variant run and kind with an honest variant: its raw
    share, its honest variant's, the excess; and the adversaries' total counted raw and with
    the excess."""
    table = Table(
        title="the lies on real work: each kind's share, its honest variant's, the excess",
        caption="adversary_total_share counts these kinds by their excess (0 if negative)",
    )
    columns = ("seed", "scenario", "kind", "raw", "honest variant", "excess", "adversaries raw")
    for column in (*columns, "adversaries, excess"):
        table.add_column(column, justify="left" if column in ("scenario", "kind") else "right")
    for result in results:
        for name, run in result.variant.items():
            kinds = [k for k in VARIANT_KINDS if run.of_kind(k)]
            for i, kind in enumerate(kinds):
                totals = (adversary_share(result.runs[name]), result.attack_share(name))
                table.add_row(
                    str(result.seed),
                    name,
                    kind,
                    f"{result.share(name, kind):.2%}",
                    f"{result.variant_share(name, kind):.2%}",
                    f"{result.excess(name, kind):+.2%}",
                    *(f"{t:.2%}" if i == 0 else "" for t in totals),
                )
    if table.row_count:
        console.print(table)


def print_figures(results: list[SeedResult]) -> None:
    table = Table(title="figures per seed; mean and min over the seeds")
    table.add_column("seed")
    for name in FIGURES:
        table.add_column(name, justify="right")
    for result in results:
        figures = result.figures()
        table.add_row(str(result.seed), *(_figure(figures[name]) for name in FIGURES))
    means = summary(results)
    table.add_row("mean", *(_figure(means[name][0]) for name in FIGURES))
    table.add_row("min", *(_figure(means[name][1]) for name in FIGURES))
    console.print(table)


def _figure(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
