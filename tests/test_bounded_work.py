"""Issue 14, attack 8, run through the market's own roles on eth-tester: legal inputs cannot
exhaust the evaluator.

- An architecture under the MAC cap but over the task's scoring budget (MACs per row x the
  validation rows) is refused by the proposer's tool, skipped by every miner, and refused
  `over-budget` by the evaluator without being scored.
- An account's update past the task's cap per round is `over-cap`: never read, merged or paid,
  and its deposit is forfeited.
- A scoring past the task's time limit makes its node invalid (`scoring-timeout`), never the
  task stuck: the round goes unmerged and settlement completes.
(The O(k) round merge is pinned in test_merge.py.)
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from marketplace.dev.shards import digits_splits
from marketplace.errors import ConfigError, ScoringTimeout
from marketplace.protocol.reports import agreed_report
from marketplace.protocol.tasks import evaluator_keys, nodes_by_id, read_spec
from marketplace.protocol.verdicts import Refusal
from marketplace.roles import scorer as scorer_module
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import propose_architecture
from marketplace.roles.verify import verify_task
from marketplace.rules.dag import architecture_of
from marketplace.rules.evaluation import EVAL_BATCH_SIZE, Scores, score, scores
from marketplace.rules.messages import DEFAULT_SCORING_MACS, Metric, NodeKind
from marketplace.rules.models import ModelSpec, init_weights, macs_per_sample
from marketplace.wire.architecture import encode_architecture
from marketplace.wire.codec import encode_weights, weights_digest
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import seal
from marketplace.wire.report import PayoutReport, coalition_key
from tests.market import DEPOSIT, TINY, Market, new_market

# Under the 4e9 MAC cap (38 M multiply-adds per row), over the default budget on 360 rows.
HEAVY = ModelSpec(
    input_shape=[1, 8, 8],
    layers=[
        {"type": "conv2d", "in_channels": 1, "out_channels": 256, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "conv2d", "in_channels": 256, "out_channels": 256, "kernel_size": 3, "padding": 1},
        {"type": "flatten"},
        {"type": "linear", "in_features": 256 * 64, "out_features": 10},
    ],
)


class StepClock:
    """A fake monotonic clock: each reading is `step` seconds after the one before."""

    def __init__(self) -> None:
        self.now = 0.0
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def market(tmp_path: Path) -> Market:
    m = new_market(tmp_path)
    m.create(rounds=1)
    return m


def _settle(market: Market) -> PayoutReport:
    assert market.evaluator is not None
    lines = market.evaluator.step(market.task_id)
    assert len(lines) == 1 and lines[0].startswith("posted the payout root"), lines
    market.finalize()
    return agreed_report(market.chain, market.store, market.task_id)


def _scorings_of(report: PayoutReport) -> int:
    """One scoring per valid node, two per coalition scored for a gaining merge's Shapley
    values (its average without and with the frontier model; the empty coalition is the
    frontier, unscored), and two per added score (a left-out update that improved nothing,
    averaged into its round's merge)."""
    valid = sum(1 for n in report.nodes if n.valid)
    return valid + 2 * (sum(len(t) for t in report.coalitions.values()) + len(report.added))


def test_an_architecture_over_the_scoring_budget_is_refused_unscored_and_never_trained(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = len(market.validation)
    cost = macs_per_sample(HEAVY) * rows
    assert read_spec(market.chain, market.store, market.task_id).validation_rows == rows
    assert cost > DEFAULT_SCORING_MACS and macs_per_sample(HEAVY) < 4_000_000_000
    weights = init_weights(HEAVY, 1)
    with pytest.raises(ConfigError, match="over the task's budget"):
        propose_architecture(market.connection(market.scientist), market.task_id, HEAVY, weights)
    assert market.chain.task(market.task_id).node_count == 0  # refused before any deposit
    # The attacker goes around the tool, first, so a naive miner would pick it.
    bundle = encode_architecture(HEAVY, weights)
    heavy = market.chain.propose_architecture(
        market.scientist.address, market.task_id, sha256(bundle), market.store.put(bundle)
    ).value
    honest = propose_architecture(
        market.connection(market.keys[3]), market.task_id, TINY, init_weights(TINY, 1)
    ).value
    assert (heavy, honest) == (1, 2)
    scored: list[ModelSpec] = []

    def recording(model: ModelSpec, *args: Any, **kwargs: Any) -> Scores:
        scored.append(model)
        return scores(model, *args, **kwargs)

    monkeypatch.setattr(scorer_module, "scores", recording)
    evaluator = market.make_evaluator()
    market.add_miners(2, epochs=1)

    market.run_rounds(1)
    market.reveal()
    report = _settle(market)

    records = nodes_by_id(market.chain, market.task_id)
    assert [r.parents for r in records.values() if r.kind is NodeKind.UPDATE] == [(honest,)] * 2
    verdicts = {n.node_id: n for n in report.nodes}
    assert not verdicts[heavy].valid
    assert verdicts[heavy].reason == (
        f"over-budget: scoring it costs {macs_per_sample(HEAVY):,} multiply-adds per row x "
        f"{rows:,} validation rows = {cost:,}, over the task's budget of {DEFAULT_SCORING_MACS:,}"
    )
    assert evaluator.check_seconds[heavy] < 1.0
    assert HEAVY not in scored and scored  # the honest nodes were scored, the heavy one never
    # The honest architecture, its 2 updates and their merge; then the merge's coalitions
    # (every one, k <= shapley_exact_max) and the added score of each update it left out that
    # improved nothing on its own: nothing more, so the heavy one never ran.
    valid = {n.node_id: n for n in report.nodes if n.valid}
    assert sorted(n.kind for n in valid.values()) == sorted(
        [NodeKind.ARCHITECTURE, NodeKind.UPDATE, NodeKind.UPDATE, NodeKind.MERGE]
    )
    (merge,) = [n for n in valid.values() if n.kind is NodeKind.MERGE]
    parents = merge.parents
    subsets = [c for k in range(1, len(parents) + 1) for c in combinations(parents, k)]
    assert set(report.coalitions) == {merge.node_id}  # posted: it beat the frontier by min_gain
    assert set(report.coalitions[merge.node_id]) == {coalition_key(c) for c in subsets}
    spec = read_spec(market.chain, market.store, market.task_id)
    assert set(report.added) == {
        n.node_id
        for n in valid.values()
        if n.kind is NodeKind.UPDATE
        and n.node_id not in merge.parents
        and n.score < valid[honest].score + spec.min_gain
    }
    assert report.scorings == 0  # settlement ran nothing: the round scored it all (same file)
    assert market.scientist.address not in {p.account for p in report.payouts}  # deposit kept
    before = len(scored)
    # A fresh process: nothing cached (no state file: it only scores).
    restarted = Evaluator(market.connection(market.evaluator_account), None)
    again = restarted.evaluate(market.task_id)
    assert again.root == report.root
    # Each distinct model run once: a one-update average is the update itself, so fewer than
    # one run per scoring the report replays.
    assert again.scorings == len(scored) - before
    assert 0 < again.scorings < _scorings_of(report)


def test_a_second_update_in_a_round_past_a_cap_of_one_is_over_cap_unmerged_and_forfeits(
    market: Market,
) -> None:
    spec = read_spec(market.chain, market.store, market.task_id)
    assert spec.max_submissions_per_round == 1
    arch = market.propose()
    evaluator = market.make_evaluator()
    market.add_miners(2, epochs=5)  # enough that each first update improves on its own
    first = market.miners[0].submit_round(market.task_id)
    assert first is not None
    other = market.miners[1].submit_round(market.task_id)
    assert other is not None
    # The same account submits again in the round: a well-formed, sealed update.
    account = market.keys[4]
    sealed = seal(
        encode_weights(init_weights(TINY, 7)),
        evaluator_keys(spec),
        account,
        task_id=market.task_id,
        parent=arch,
        kind="update",
        chain_id=market.chain_id,
    )
    second = market.chain.submit_update(
        account.address, market.task_id, arch, 500, sha256(sealed), market.store.put(sealed)
    ).value
    assert second is not None and second > first.node_id

    lines = market.end_round(0)

    merges = [
        r for r in nodes_by_id(market.chain, market.task_id).values() if r.kind is NodeKind.MERGE
    ]
    assert len(merges) == 1 and second not in merges[0].parents, lines
    assert set(merges[0].parents) <= {first.node_id, other.node_id}
    view = evaluator.view(market.task_id)
    assert evaluator.verdict(view, second).code is Refusal.OVER_CAP
    market.reveal()
    report = _settle(market)

    verdicts = {n.node_id: n for n in report.nodes}
    assert (verdicts[second].valid, verdicts[second].reason) == (
        False,
        f"over-cap: {account.address} already submitted 1 updates to architecture {arch} in "
        "round 0, the task's cap is 1",
    )
    # The first improved on its own, so it is refunded whatever the merge kept (DESIGN.md,
    # "Harm costs the deposit"); the second is over the cap and forfeits.
    assert verdicts[first.node_id].valid
    assert verdicts[first.node_id].score >= verdicts[arch].score + spec.min_gain
    entry = report.entry_for(account.address)
    assert entry is not None and entry.deposits == DEPOSIT  # the first refunded, not the second


def test_a_scoring_past_the_time_limit_makes_its_node_invalid_and_settlement_completes(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    market.propose()
    clock = StepClock()
    evaluator = market.make_evaluator()
    evaluator.scorer.clock = clock
    market.add_miners(2, epochs=1)
    for miner in market.miners:
        assert miner.submit_round(market.task_id) is not None
    clock.step = 3600.0  # every scoring of the round merge passes the 300 s limit

    lines = market.end_round(0)

    rows = len(market.validation)
    assert lines == [
        "round 0: no merge of architecture 1: scoring passed its time limit after "
        f"{EVAL_BATCH_SIZE} of {rows:,} rows"
    ]
    records = nodes_by_id(market.chain, market.task_id)
    assert not [r for r in records.values() if r.kind is NodeKind.MERGE]
    slow = max(records)  # the second miner's update: only its scoring is slow at settlement
    node_score = evaluator.scorer.node_score

    def timed(view: Any, node_id: int, dataset: Any) -> int:
        clock.step = 3600.0 if node_id == slow else 0.0
        return node_score(view, node_id, dataset)

    monkeypatch.setattr(evaluator.scorer, "node_score", timed)
    market.reveal()
    report = _settle(market)

    verdicts = {n.node_id: n for n in report.nodes}
    assert (verdicts[slow].valid, verdicts[slow].reason) == (
        False,
        f"scoring-timeout: scoring passed its time limit after {EVAL_BATCH_SIZE} of {rows:,} rows",
    )
    assert [verdicts[n].valid for n in sorted(verdicts)] == [True, True, False]
    author = records[slow].author
    assert all(p.account != author or p.deposits == 0 for p in report.payouts)
    assert verify_task(market.chain, market.store, market.task_id, market.chain_id).ok


def test_score_stops_at_the_first_batch_past_its_deadline() -> None:
    rows = 3 * EVAL_BATCH_SIZE + 1
    clock = StepClock()
    clock.step = 1.0  # one second per reading: the start, then one after each batch
    weights = init_weights(TINY, 1)
    dataset = digits_splits(seed=0)[0].head(rows)

    assert score(TINY, weights, dataset, Metric.ACCURACY, 4.0, clock) >= 0  # 4 batches in time
    with pytest.raises(ScoringTimeout, match=f"after {2 * EVAL_BATCH_SIZE} of {rows} rows"):
        score(TINY, weights, dataset, Metric.ACCURACY, 1.5, clock)


def test_a_data_owner_trains_every_architectures_lineage_under_a_cap_of_one(
    tmp_path: Path,
) -> None:
    """The cap is per account and architecture: a data owner running one miner per lineage
    gives each architecture one update a round, and each builds on its own lineage's merge."""
    market = new_market(tmp_path)
    market.create(rounds=2)
    lineages = (market.propose(TINY, seed=1), market.propose(TINY, seed=2))
    evaluator = market.make_evaluator()
    market.add_miners(2, epochs=5, lineages=lineages)

    market.run_rounds(2)

    records = nodes_by_id(market.chain, market.task_id)
    updates = [r for r in records.values() if r.kind is NodeKind.UPDATE]
    assert [(r.author, r.round, architecture_of(records, r.node_id)) for r in updates] == [
        (market.keys[4 + owner].address, round_index, lineage)
        for round_index in (0, 1)
        for owner in (0, 1)
        for lineage in lineages
    ]
    merges = {
        (r.round, architecture_of(records, r.node_id)): r
        for r in records.values()
        if r.kind is NodeKind.MERGE
    }
    assert set(merges) == {(0, lineages[0]), (0, lineages[1]), (1, lineages[0]), (1, lineages[1])}
    view = evaluator.view(market.task_id)
    assert all(evaluator.verdict(view, r.node_id).valid for r in updates)  # none over the cap
    for r in updates:
        if r.round == 1:  # on its own lineage's merge of round 0
            assert r.parents == (merges[0, architecture_of(records, r.node_id)].node_id,)


def test_the_evaluator_runs_each_model_once_over_rounds_and_settlement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its work per round is the round's new nodes: each round's frontier (the architecture and
    earlier merges) is not scored again, and settlement reuses every scoring of the rounds."""
    market = new_market(tmp_path)
    market.create(rounds=3)
    market.propose()
    runs: list[tuple[bytes, bytes]] = []

    def recording(
        model: ModelSpec, weights: Any, dataset: Any, *args: Any, **kwargs: Any
    ) -> Scores:
        runs.append((weights_digest(weights), dataset.digest))
        return scores(model, weights, dataset, *args, **kwargs)

    monkeypatch.setattr(scorer_module, "scores", recording)
    evaluator = market.make_evaluator()
    market.add_miners(3, epochs=1)
    per_round = []
    for round_index in range(3):
        for miner in market.miners:
            market.submit(miner)
        before = len(runs)
        market.end_round(round_index)
        per_round.append(len(runs) - before)
    market.reveal()
    report = _settle(market)

    assert len(set(runs)) == len(runs) == evaluator.scorings  # no model run twice
    assert report.scorings == 0
    # Each round: its 7 coalitions of 3 updates, alone and with the frontier model; round 0
    # also the architecture. A later round's frontier is a merge already scored as a coalition.
    assert per_round == [1 + 2 * 7, 2 * 7, 2 * 7]
