"""`make simulate`'s short configuration: a market on the real contract with honest miners, a
free-rider and a rewind-copier (2 rounds, breast cancer, one seed), judged by whatever reward
rule is in force. Only what holds for any sane rule is asserted: the money balances to the
wei, the sponsor pays at most the bounty, every row is the report's leaves, the SIMULATE line's
shares are shares, and the attacks really reach the chain as built."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from marketplace.rules.messages import NodeKind
from marketplace.wire.report import PayoutReport
from scripts.simulation.accounting import MarketRun, Outcome, audit
from scripts.simulation.agents import FREE_RIDER_SAMPLES, REWIND_ROWS
from scripts.simulation.market import run_market
from scripts.simulation.market_setup import BOUNTY, DEPOSIT, MarketConfig
from scripts.simulation.scenarios import (
    ALONE,
    HONEST_VARIANT,
    MIX,
    SYBIL,
    TOGETHER,
    Marginal,
    SeedResult,
    parse_mix,
    parse_seeds,
    scenarios,
    simulate,
    simulate_line,
    spearman,
)

SHORT = MarketConfig(
    dataset="breast_cancer",
    roster=parse_mix("honest=3,free_rider=1,rewind_copier=1"),
    rounds=2,
    seed=0,
    epochs=2,
)
LINE = re.compile(
    r"SIMULATE honest_share=(\S+) worst_adversary_share=(\S+) adversary_total_share=(\S+) "
    r"spearman=(\S+) accuracy_ratio=(\S+)"
)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> MarketRun:
    return run_market(SHORT, tmp_path_factory.mktemp("simulate") / "market")


def _leaves(report: PayoutReport, outcome: Outcome) -> dict[str, int]:
    mine = {a.lower() for a in outcome.accounts}
    entries = [e for e in report.payouts if e.account.lower() in mine]
    parts = ("data", "compute", "expertise", "deposits", "points")
    return {part: sum(getattr(e, part) for e in entries) for part in parts}


def test_short_market_balances_to_the_wei_and_the_sponsor_pays_at_most_the_bounty(
    short_run: MarketRun,
) -> None:
    escrow = short_run.escrow
    nodes = short_run.records.values()
    paying = [n for n in nodes if n.kind in (NodeKind.ARCHITECTURE, NodeKind.UPDATE)]
    # 2 architectures; 3 honest miners, a free-rider and a rewind-copier, 2 rounds each.
    assert len(paying) == 2 + 5 * 2
    assert escrow.deposits_in == DEPOSIT * 12
    assert escrow.held == BOUNTY + DEPOSIT * 12
    assert escrow.bounty + escrow.deposits_in == (
        escrow.claimed + escrow.refunded + escrow.reclaimed
    )
    assert escrow.left == 0
    assert escrow.claimed == short_run.report.total
    assert short_run.sponsor_paid <= BOUNTY
    assert sum(e.amount - e.deposits for e in short_run.report.payouts) <= BOUNTY
    assert audit(short_run) == []


def test_every_agent_row_is_its_report_leaves_and_its_claims(short_run: MarketRun) -> None:
    everyone = (*short_run.agents, short_run.scientists)
    assert [o.name for o in everyone] == [
        "honest-1",
        "honest-2",
        "honest-3",
        "free_rider-1",
        "rewind_copier-1",
        "scientists",
    ]
    for outcome in everyone:
        paid = outcome.paid
        row = {
            "data": paid.data,
            "compute": paid.compute,
            "expertise": paid.expertise,
            "deposits": paid.deposits,
            "points": paid.points,
        }
        assert row == _leaves(short_run.report, outcome), outcome.name
        assert paid.claimed == paid.amount
        assert sum(short_run.reputation[a] for a in outcome.accounts) == paid.points
    assert sum(o.paid.amount for o in everyone) == short_run.report.total
    assert [o.submissions for o in everyone] == [2, 2, 2, 2, 2, 2]


def test_the_attacks_reach_the_chain_as_built(short_run: MarketRun) -> None:
    records = short_run.records
    by_name = {o.name: o for o in short_run.agents}
    free_rider = by_name["free_rider-1"].accounts[0].lower()
    copier = by_name["rewind_copier-1"].accounts[0].lower()
    free_updates = [r for r in records.values() if r.author.lower() == free_rider]
    assert [r.samples for r in free_updates] == [FREE_RIDER_SAMPLES, FREE_RIDER_SAMPLES]
    # Round 1: the free-rider builds on round 0's merge; the copier copies it and names the
    # architecture under it as its parent.
    round_0_merges = {
        r.node_id for r in records.values() if r.kind is NodeKind.MERGE and r.round == 0
    }
    assert round_0_merges
    assert free_updates[1].parents[0] in round_0_merges
    copied = [r for r in records.values() if r.author.lower() == copier]
    assert [r.round for r in copied] == [0, 1]
    assert records[copied[1].parents[0]].kind is NodeKind.ARCHITECTURE
    assert copied[1].samples == REWIND_ROWS


def test_simulate_line_parses_and_its_shares_are_shares(short_run: MarketRun) -> None:
    result = SeedResult(0, {MIX: short_run})
    match = LINE.fullmatch(simulate_line([result]))
    assert match, simulate_line([result])
    honest, worst, total, rank, ratio = (float(g) for g in match.groups())
    for share in (honest, worst, total):
        assert 0 <= share <= 1
    assert worst <= total + 1e-4  # one kind's share is part of all adversaries'
    assert honest + total <= 1 + 1e-4
    assert math.isnan(rank)  # no marginal values measured
    assert 0 < ratio <= 2
    kinds = {o.kind for o in short_run.agents}
    assert honest == pytest.approx(
        sum(short_run.share(short_run.of_kind(k)) for k in ("honest",)), abs=1e-4
    )
    assert total == pytest.approx(
        sum(short_run.share(short_run.of_kind(k)) for k in kinds - {"honest"}), abs=1e-4
    )


def test_a_market_without_an_honest_miner_keeps_everything_else(tmp_path: Path) -> None:
    config = MarketConfig(roster=parse_mix("honest=2"), rounds=1, epochs=1)
    whole = run_market(config, tmp_path / "whole", centralized=False)
    without = run_market(replace(config, without="honest-1"), tmp_path / "without", False)

    assert [o.name for o in without.agents] == ["honest-2"]
    assert without.agents[0].accounts == whole.agents[1].accounts

    def update_of(run: MarketRun) -> tuple[int, int, int]:
        """(architecture, rows, validation score) of honest-2's round-0 update."""
        author = run.agents[-1].accounts[0]
        node = next(r for r in run.records.values() if r.author == author)
        score = next(n.score for n in run.report.nodes if n.node_id == node.node_id)
        return run.records[node.parents[0]].node_id, node.samples, score

    assert update_of(without) == update_of(whole)  # same shard, seed, architecture: same model
    assert audit(without) == []


def test_the_sybil_is_counted_by_its_excess_over_its_shard_from_one_account(
    tmp_path: Path,
) -> None:
    base = MarketConfig(rounds=1, epochs=1)
    roster = parse_mix("honest=2,sybil=1")
    told: list[tuple[str, MarketRun]] = []
    [result] = simulate(
        base, [0], {MIX: roster}, lambda n, r: False, lambda s, n, run: told.append((n, run))
    )
    run, single = result.runs[MIX], result.variant[MIX]
    assert [name for name, _ in told] == [MIX, MIX + HONEST_VARIANT]
    assert single.config == replace(run.config, honest_variant=frozenset({SYBIL}))
    assert audit(run) == [] and audit(single) == []
    # Everyone keeps their accounts; the sybil acts from its first one only.
    assert [o.accounts for o in single.agents[:2]] == [o.accounts for o in run.agents[:2]]
    [sybil], [alone] = run.of_kind(SYBIL), single.of_kind(SYBIL)
    assert (len(sybil.accounts), sybil.submissions) == (3, 3)
    assert alone.accounts == sybil.accounts[:1] and alone.submissions == 1

    def updates(market: MarketRun, accounts: tuple[str, ...]) -> list[tuple[int, int, int]]:
        """(parent, rows, validation score) of each update from these accounts."""
        scores = {n.node_id: n.score for n in market.report.nodes}
        return [
            (r.parents[0], r.samples, scores[r.node_id])
            for r in market.records.values()
            if r.author in accounts
        ]

    # The same shard, seed and update path: the one update is the first of the three copies;
    # the evaluator judges the other two copies of it (issue 15: score 0).
    [update] = updates(single, alone.accounts)
    parent, rows, _ = update
    assert updates(run, sybil.accounts) == [update, (parent, rows, 0), (parent, rows, 0)]

    raw, fair = run.share([sybil]), single.share([alone])
    assert raw > 0 and fair > 0  # so the figures below tell the excess from either share
    assert result.share(MIX, SYBIL) == raw and result.variant_share(MIX, SYBIL) == fair
    assert result.excess(MIX, SYBIL) == raw - fair
    figures = result.figures()
    assert figures["worst_adversary_share"] == max(0.0, raw - fair)
    assert figures["adversary_total_share"] == max(0.0, raw - fair)
    # Against itself the excess is 0; with no counterfactual run the raw share counts.
    assert SeedResult(0, {MIX: run}, variant={MIX: run}).figures()["adversary_total_share"] == 0
    assert SeedResult(0, {MIX: run}).figures()["adversary_total_share"] == raw
    alone_and_together = SeedResult(
        0, {ALONE + SYBIL: run, TOGETHER: run}, variant={ALONE + SYBIL: single, TOGETHER: single}
    )
    assert alone_and_together.figures()["worst_adversary_share"] == max(0.0, raw - fair)
    assert alone_and_together.figures()["adversary_total_share"] == max(0.0, raw - fair)


@pytest.fixture(scope="module")
def lies() -> SeedResult:
    """An over-declarer and a rewind-copier with 2 honest miners, and their honest variants."""
    config = MarketConfig(rounds=2, epochs=1)
    roster = parse_mix("honest=2,over_declarer=1,rewind_copier=1")
    [result] = simulate(config, [0], {MIX: roster}, lambda n, r: False)
    return result


def test_the_honest_variants_declare_the_rows_trained_on_and_name_the_merge_copied(
    lies: SeedResult,
) -> None:
    run, variant = lies.runs[MIX], lies.variant[MIX]
    assert variant.config == replace(
        run.config, honest_variant=frozenset({"over_declarer", "rewind_copier"})
    )
    assert audit(run) == [] and audit(variant) == []

    def updates(market: MarketRun, kind: str) -> list[tuple[int, int, int]]:
        """(parent, rows, validation score) of each update of `kind`'s agent, by round."""
        [outcome] = market.of_kind(kind)
        scores = {n.node_id: n.score for n in market.report.nodes}
        mine = [r for r in market.records.values() if r.author in outcome.accounts]
        return [(r.parents[0], r.samples, scores[r.node_id]) for r in mine]

    # The over-declarer declares 10x its shard; its variant the 10% it trained on, the same
    # update (round 0 starts from the same architecture).
    lied, told = updates(run, "over_declarer"), updates(variant, "over_declarer")
    shard = lied[0][1] // 10
    assert [rows for _, rows, _ in lied] == [10 * shard] * 2
    assert [rows for _, rows, _ in told] == [round(0.1 * shard)] * 2
    assert (told[0][0], told[0][2]) == (lied[0][0], lied[0][2])
    # The rewind-copier copies round 0's merge in round 1: it names the architecture under it,
    # its variant the merge itself; both train 1 epoch on 16 rows.
    copied, named = updates(run, "rewind_copier"), updates(variant, "rewind_copier")
    assert [rows for _, rows, _ in copied + named] == [REWIND_ROWS] * 4
    assert run.records[copied[1][0]].kind is NodeKind.ARCHITECTURE
    merge = variant.records[named[1][0]]
    assert (merge.kind, merge.round) == (NodeKind.MERGE, 0)
    assert named[0] == copied[0]  # round 0: no merge yet, the same update on the architecture
    # The figures count both by their excess over the variant, none if negative.
    excess = {
        k: lies.share(MIX, k) - lies.variant_share(MIX, k)
        for k in ("over_declarer", "rewind_copier")
    }
    assert {k: lies.excess(MIX, k) for k in excess} == excess
    figures = lies.figures()
    assert figures["worst_adversary_share"] == max(max(0.0, e) for e in excess.values())
    assert figures["adversary_total_share"] == sum(max(0.0, e) for e in excess.values())


def test_spearman_ranks_with_average_ties_and_is_nan_without_a_ranking() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # Ranks (1.5, 1.5, 3) and (1, 2, 3): Pearson of the ranks.
    assert spearman([0, 0, 5], [1, 2, 3]) == pytest.approx(0.8660254)
    assert math.isnan(spearman([0, 0, 0], [1, 2, 3]))
    assert Marginal("honest-1", 5, 110, 104).value == 6


def test_flags_parse_into_scenarios_and_seeds() -> None:
    assert parse_mix("honest=3,sybil=1,spammer=0") == (("honest", 3), ("sybil", 1))
    with pytest.raises(ValueError, match="not kind=count"):
        parse_mix("honest=3,wizard=1")
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3") == [0, 3]
    assert list(scenarios("alone")) == [
        "alone-lazy",
        "alone-over_declarer",
        "alone-poisoner",
        "alone-sybil",
        "alone-free_rider",
        "alone-rewind_copier",
        "alone-spammer",
    ]
    assert scenarios("together")["together"][0] == ("honest", 3)
    assert len(scenarios("all")) == 9


def test_the_free_rider_and_the_rewind_copier_are_paid_nothing_from_the_pools(
    short_run: MarketRun,
) -> None:
    # Issue 15's rule: the free-rider's noisy copy of the merge improves nothing and hurts the
    # merge (left out, deposits forfeited); the rewind-copier is measured from the frontier,
    # cannot win, and its update adds nothing the round's merge keeps.
    (free_rider,) = short_run.of_kind("free_rider")
    (copier,) = short_run.of_kind("rewind_copier")
    assert _leaves(short_run.report, free_rider) == dict.fromkeys(
        ("data", "compute", "expertise", "deposits", "points"), 0
    )
    copied = _leaves(short_run.report, copier)
    assert (copied["data"], copied["compute"], copied["points"]) == (0, 0, 0)
    honest = short_run.share(short_run.of_kind("honest"))
    paid = sum(e.data + e.compute for e in short_run.report.payouts)
    assert honest == paid / short_run.pools > 0
    assert short_run.records[short_run.report.winner or 0].kind is NodeKind.MERGE
