"""The scenarios, the true marginal values, the figures and the SIMULATE line.

Scenarios (per seed): `honest` (3 honest miners and a late joiner), `alone-<kind>` (3 honest
miners and one agent of an adversary kind), `together` (3 honest miners and one agent of every
adversary kind), or one `mix` given on the command line. Shares are of the data + compute pools.

The figures of one seed:
- honest_share: what the honest kinds took in `together` (else in `mix`, else in `honest`);
- worst_adversary_share: the largest share one adversary kind took alone (else, in `mix`, the
  largest any one adversary kind took there), a kind with an honest variant counted by its
  excess (below);
- adversary_total_share: what every adversary took in `together` (else in `mix`), a kind with
  an honest variant counted by its excess;
- spearman: Spearman's rank correlation between the honest miners' data payouts and their true
  marginal values (the winner's validation score with the miner minus without it, the whole
  market run again without it) in `honest` (else in `mix`);
- accuracy_ratio: the winner's test accuracy over the same architecture trained centrally on
  the honest shards, in `honest` (else in `mix`, else in `together`).
The SIMULATE line shows each figure's mean over the seeds; nan where a figure was not measured.

The over-declarer, the sybil and the rewind-copier lie on top of real work (a real shard, real
training), and the figures measure what the lie earns, not the work. Wherever a scenario has
such a kind, its market is run again with all of them acting as their honest variant at once
(`MarketConfig.honest_variant`, `agents.py`: the over-declarer declares the rows it trained
on, the sybil acts from one account, the rewind-copier names the merge it copied as parent;
same shards, seeds and training), and the kind's excess is its share less its share in that
run, none if negative. The lazy miner, the free-rider, the poisoner and the spammer have no
honest variant (their whole share is the attack): their raw share counts.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from .agents import ADVERSARY_KINDS, HONEST_KINDS, VARIANT_KINDS
from .market import MarketConfig, MarketRun, run_market

HONEST = "honest"
TOGETHER = "together"
MIX = "mix"
ALONE = "alone-"
SYBIL = "sybil"
HONEST_VARIANT = ", honest variants"  # the counterfactual run's name: scenario + this
FIGURES = (
    "honest_share",
    "worst_adversary_share",
    "adversary_total_share",
    "spearman",
    "accuracy_ratio",
)
Roster = tuple[tuple[str, int], ...]


def scenarios(which: str) -> dict[str, Roster]:
    """Scenario name -> roster, for `which` in honest | alone | together | all."""
    base: Roster = (("honest", 3),)
    every = {HONEST: (*base, ("late_joiner", 1))}
    every |= {ALONE + kind: (*base, (kind, 1)) for kind in ADVERSARY_KINDS}
    every[TOGETHER] = (*base, *((kind, 1) for kind in ADVERSARY_KINDS))
    if which == "all":
        return every
    return {name: roster for name, roster in every.items() if name.startswith(which)}


def parse_mix(text: str) -> Roster:
    """ "honest=3,free_rider=1" -> (("honest", 3), ("free_rider", 1)); unknown kinds refused."""
    roster = []
    for part in text.split(","):
        kind, _, count = part.strip().partition("=")
        if kind not in (*HONEST_KINDS, *ADVERSARY_KINDS) or not count.isdigit():
            known = ", ".join((*HONEST_KINDS, *ADVERSARY_KINDS))
            raise ValueError(f"{part!r} is not kind=count (kinds: {known})")
        if int(count) > 0:
            roster.append((kind, int(count)))
    return tuple(roster)


def parse_seeds(text: str) -> list[int]:
    """ "0-4" -> [0, 1, 2, 3, 4]; "0,3" -> [0, 3]."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += range(int(low), int(high or low) + 1)
    return seeds


@dataclass(frozen=True)
class Marginal:
    """One honest miner's data payout next to its true marginal value."""

    name: str
    data_paid: int  # wei
    with_score: int  # the winner's validation score (rows right) with the miner
    without_score: int  # ... in the same market run again without it

    @property
    def value(self) -> int:
        return self.with_score - self.without_score


@dataclass
class SeedResult:
    seed: int
    runs: dict[str, MarketRun] = field(default_factory=dict)  # scenario -> run
    marginal: dict[str, list[Marginal]] = field(default_factory=dict)  # scenario -> miners
    # scenario -> the same market with every kind that has one acting as its honest variant
    variant: dict[str, MarketRun] = field(default_factory=dict)

    def share(self, name: str, kind: str) -> float:
        """What `kind` took in scenario `name`."""
        return self.runs[name].share(self.runs[name].of_kind(kind))

    def variant_share(self, name: str, kind: str) -> float:
        """What `kind` took in scenario `name`'s honest-variant run (nan if there is none)."""
        run = self.variant.get(name)
        return math.nan if run is None else run.share(run.of_kind(kind))

    def excess(self, name: str, kind: str) -> float:
        """What `kind` took in `name` beyond its fair share: its share, less, for a kind with
        an honest variant, its share as that variant (the raw share if that run is missing)."""
        fair = self.variant_share(name, kind) if kind in VARIANT_KINDS else math.nan
        return self.share(name, kind) - (0.0 if math.isnan(fair) else fair)

    def attack_share(self, name: str) -> float:
        """What every adversary in `name` took beyond its fair share (an excess below 0 counts
        as 0: a lie that loses does not offset what others take)."""
        kinds = _adversary_kinds(self.runs[name])
        return sum(max(0.0, self.excess(name, kind)) for kind in kinds)

    def figures(self) -> dict[str, float]:
        nan = math.nan
        honest_run = self._first(TOGETHER, MIX, HONEST)
        total_name = next((n for n in (TOGETHER, MIX) if n in self.runs), None)
        alone = [
            max(0.0, self.excess(name, name.removeprefix(ALONE)))
            for name in self.runs
            if name.startswith(ALONE)
        ]
        mix = self.runs.get(MIX)
        if not alone and mix is not None:
            alone = [max(0.0, self.excess(MIX, kind)) for kind in _adversary_kinds(mix)]
        marginal = self.marginal.get(HONEST) or self.marginal.get(MIX)
        accuracy_run = self._first(HONEST, MIX, TOGETHER)
        ratio = nan
        if accuracy_run is not None and accuracy_run.central_accuracy:
            ratio = accuracy_run.winner_accuracy / accuracy_run.central_accuracy
        return {
            "honest_share": nan if honest_run is None else honest_share(honest_run),
            "worst_adversary_share": max(alone, default=nan),
            "adversary_total_share": nan if total_name is None else self.attack_share(total_name),
            "spearman": nan if not marginal else spearman_of(marginal),
            "accuracy_ratio": ratio,
        }

    def _first(self, *names: str) -> MarketRun | None:
        return next((self.runs[n] for n in names if n in self.runs), None)


def honest_share(run: MarketRun) -> float:
    return run.share(o for o in run.agents if o.kind in HONEST_KINDS)


def adversary_share(run: MarketRun) -> float:
    return run.share(o for o in run.agents if o.kind in ADVERSARY_KINDS)


def _adversary_kinds(run: MarketRun) -> list[str]:
    return sorted({o.kind for o in run.agents if o.kind in ADVERSARY_KINDS})


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant
    (or has fewer than two values): no ranking to agree with."""
    if len(xs) != len(ys):
        raise ValueError("spearman needs two sequences of the same length")
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan
    rx, ry = rankdata(xs), rankdata(ys)
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_of(marginal: Sequence[Marginal]) -> float:
    return spearman([m.data_paid for m in marginal], [m.value for m in marginal])


def marginal_values(run: MarketRun, folder: Path) -> list[Marginal]:
    """Each honest miner's true marginal value: the run's market again without it."""
    values = []
    for outcome in run.agents:
        if outcome.kind not in HONEST_KINDS:
            continue
        config = replace(run.config, without=outcome.name)
        without = run_market(config, folder / f"without-{outcome.name}", centralized=False)
        values.append(
            Marginal(outcome.name, outcome.paid.data, run.winner_score, without.winner_score)
        )
    return values


def simulate(
    base: MarketConfig,
    seeds: Sequence[int],
    rosters: dict[str, Roster],
    marginal: Callable[[str, Roster], bool],
    on_run: Callable[[int, str, MarketRun], None] = lambda seed, name, run: None,
) -> list[SeedResult]:
    """Every scenario for every seed; `marginal(name, roster)`: whether to measure its honest
    miners' true marginal values; `on_run` is told of each run as it ends."""
    results = []
    for seed in seeds:
        result = SeedResult(seed)
        for name, roster in rosters.items():
            with tempfile.TemporaryDirectory(prefix="gm-simulate-") as folder:
                config = replace(base, roster=roster, seed=seed)
                run = run_market(config, Path(folder) / "market")
                result.runs[name] = run
                on_run(seed, name, run)
                if marginal(name, roster):
                    result.marginal[name] = marginal_values(run, Path(folder))
                variants = frozenset(kind for kind, _ in roster if kind in VARIANT_KINDS)
                if variants:
                    honest = replace(config, honest_variant=variants)
                    counterfactual = run_market(honest, Path(folder) / "variant", False)
                    result.variant[name] = counterfactual
                    on_run(seed, name + HONEST_VARIANT, counterfactual)
        results.append(result)
    return results


def summary(results: Sequence[SeedResult]) -> dict[str, tuple[float, float]]:
    """Figure -> (mean, min) over the seeds (nan values left out; nan if none is left)."""
    table = {}
    for name in FIGURES:
        values = [v for r in results if not math.isnan(v := r.figures()[name])]
        table[name] = (statistics.fmean(values), min(values)) if values else (math.nan, math.nan)
    return table


def simulate_line(results: Sequence[SeedResult]) -> str:
    means = summary(results)
    return "SIMULATE " + " ".join(f"{name}={means[name][0]:.4f}" for name in FIGURES)
