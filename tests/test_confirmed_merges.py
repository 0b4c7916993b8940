"""Only confirmed merges count (issue 14, attacks 5 and 6), with three evaluators and a quorum of
two: an evaluator confirms a merge only after fetching, opening and recomputing it bit for bit;
settlement scores no merge short of the quorum at the reveal; a miner skips a merge it cannot
fetch. Each attack runs through `ChainClient`, `Miner` and `Evaluator` on eth-tester."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from marketplace.chain import reverts
from marketplace.chain.events import Claimed
from marketplace.dev.devchain import advance_to
from marketplace.protocol.reports import agreed_report, posted_reports
from marketplace.protocol.tasks import account_key, nodes_by_id, read_spec, settled_confirmations
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.scorer import TaskView
from marketplace.roles.verify import verify_task
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.merge import MergeResult
from marketplace.rules.messages import NodeKind, NodeRecord, Phase, TaskSpec
from marketplace.rules.rewards import BPS, apportion
from marketplace.runtime.connect import Connection
from marketplace.runtime.state import StateFile
from marketplace.storage.stores import LocalStore
from marketplace.wire.cid import cid_of
from marketplace.wire.report import PayoutReport
from miner.config import MinerConfig
from miner.train_config import TrainConfig
from miner.trainer import Trainer, TrainResult
from miner.worker import Miner
from tests.market import BOUNTY, DEPOSIT, SPLIT, TINY, Market, new_market

SYBIL_SAMPLES = 1_000_000
UNCONFIRMED_1 = "unconfirmed: 1 of the 2 confirmations the quorum needs"


class MislabellingTrainer(Trainer):
    """The sybil: trains on its rows with every label shifted by one (an update that only
    hurts) and declares a million rows."""

    def train(self, *args: Any, **kwargs: Any) -> TrainResult:
        spec, weights, dataset, *rest = args
        shifted = Dataset(dataset.features, (dataset.labels + 1) % 10, dataset.num_classes)
        result = super().train(spec, weights, shifted, *rest, **kwargs)
        return replace(result, samples=SYBIL_SAMPLES)


class ValidationMerger(Evaluator):
    """A rogue evaluator: in a round its sybil submitted in, its 'merge' is a model trained on
    the sealed validation set whose only parent is the sybil's update."""

    sybil = ""

    def merge_of(
        self, task_id: int, view: TaskView, arch_id: int, updates: list[NodeRecord]
    ) -> MergeResult:
        planted = [u for u in updates if u.author == self.sybil]
        if not planted:
            return super().merge_of(task_id, view, arch_id, updates)
        validation = self.scorer.sealed_validation(task_id, view.spec)
        start = self.verdict(view, planted[0].node_id).weights
        assert start is not None
        config = TrainConfig(epochs=30, batch_size=32, learning_rate=1e-2, optimizer="adam", seed=0)
        trained = Trainer().train(TINY, start, validation, config)
        weights = {name: t.detach().numpy() for name, t in sorted(trained.weights.items())}
        score = self.scorer.score_arrays(TINY, weights, validation, view.spec)
        kept = (planted[0].node_id,)
        return MergeResult(
            kept=kept,
            weights=weights,
            score=score,
            samples=SYBIL_SAMPLES,
            no_updates=(),
            left_out=(),
            contributions={kept[0]: 0},
        )


class UploadsNothing(LocalStore):
    """A rogue evaluator's store: `put` names the blob's CID and keeps nothing."""

    def put(self, data: bytes) -> str:
        return cid_of(data)


class InflatedScore(Evaluator):
    """A rogue evaluator: the honest merge, posted with a round score miners would prefer."""

    def merge_of(
        self, task_id: int, view: TaskView, arch_id: int, updates: list[NodeRecord]
    ) -> MergeResult:
        honest = super().merge_of(task_id, view, arch_id, updates)
        return replace(honest, score=honest.score + 10_000)


def _three_evaluators(
    market: Market,
    rogue_type: type[Evaluator],
    store: LocalStore | None = None,
    class_guard_bps: int = TaskSpec.model_fields["class_guard_bps"].default,
) -> tuple[list[Evaluator], Evaluator]:
    """A 2-round task with evaluators (first, second, rogue) and quorum 2; the honest two and
    the rogue (which reads `market.store` through `store` if given)."""
    first, second, rogue = market.evaluator_account, market.keys[3], market.keys[7]
    evaluators = [first, second, rogue]
    market.create(rounds=2, evaluators=evaluators, quorum=2, class_guard_bps=class_guard_bps)
    market.propose()
    honest = [market.make_evaluator(first), market.make_evaluator(second)]
    state = StateFile(market.folder / "state" / "rogue.json")
    conn = Connection(rogue, market.chain, store or market.store, market.chain_id)
    bad = rogue_type(conn, state)
    return honest, bad


def _sybil(market: Market) -> Miner:
    account: LocalAccount = market.keys[8]
    path = market.folder / "private" / "sybil.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_csv(market.shards[3]))
    state = StateFile(market.folder / "state" / "sybil.json")
    config = MinerConfig(epochs=2, seed=3)
    trainer = MislabellingTrainer()
    return Miner(market.connection(account), trainer, path, state, config)


def _close(market: Market, round_index: int, evaluators: list[Evaluator]) -> list[list[str]]:
    advance_to(market.w3, market.chain.task(market.task_id).round_end(round_index))
    return [evaluator.step(market.task_id) for evaluator in evaluators]


def _merges(market: Market, round_index: int) -> list[NodeRecord]:
    records = nodes_by_id(market.chain, market.task_id)
    return [r for r in records.values() if r.kind is NodeKind.MERGE and r.round == round_index]


def _confirmations(market: Market, node_id: int) -> int:
    return bin(market.chain.node(market.task_id, node_id).confirmations).count("1")


def _settle(market: Market, honest: list[Evaluator]) -> PayoutReport:
    """The honest evaluators settle the revealed task, which is finalized; the agreed report."""
    for evaluator in honest:
        evaluator.step(market.task_id)
    report = agreed_report(market.chain, market.store, market.task_id)
    market.finalize()
    return report


def _relay_claims(market: Market, report: PayoutReport) -> None:
    """Account 9 relays every claim: each account's balance grows by exactly its leaf."""
    for entry in report.payouts:
        before = market.chain.balance(entry.account)
        market.chain.claim(
            market.keys[9].address, market.task_id, entry.leaf(), entry.proof_bytes()
        )
        assert market.chain.balance(entry.account) - before == entry.amount
    return report


def _forfeits(report: PayoutReport, update: int, frontier: int, merge: int, min_gain: int) -> bool:
    """Whether a valid update in clear, in a round with a merge, forfeits its deposit (DESIGN.md,
    "Harm costs the deposit"): it improved nothing on its own, the merge left it out, and the
    merge scores at least `min_gain` lower with it added (the report's `added` score)."""
    nodes = {n.node_id: n for n in report.nodes}
    if nodes[update].score >= frontier + min_gain or update in nodes[merge].parents:
        return False
    return report.added[update] <= nodes[merge].score - min_gain


def _capped_data(market: Market, points: dict[str, int]) -> dict[str, int]:
    """The data pool split by points, each account capped at the spec's share of the pool (the
    excess stays with the sponsor)."""
    data_pool = BOUNTY * SPLIT.data_bps // BPS
    spec = read_spec(market.chain, market.store, market.task_id)
    cap = data_pool * spec.max_account_share_bps // BPS
    return {a: min(part, cap) for a, part in apportion(data_pool, points).items()}


def _verified(market: Market) -> None:
    public = verify_task(market.chain, market.store, market.task_id, market.chain_id)
    assert public.ok, public.checks
    account = market.evaluator_account
    full = verify_task(
        market.chain, market.store, market.task_id, market.chain_id, account, account_key(account)
    )
    assert full.ok and full.unreadable == [], full.checks


def test_a_merge_the_quorum_did_not_confirm_is_not_scored_and_earns_its_sybil_nothing(
    tmp_path: Path,
) -> None:
    market = new_market(tmp_path)
    # The class guard off: the sybil's round-1 update, built on the architecture, holds a class
    # the others' updates lack, and the guard would merge it; what is pinned here is the rogue.
    honest, rogue = _three_evaluators(market, ValidationMerger, class_guard_bps=0)
    sybil = _sybil(market)
    rogue.sybil = sybil.address  # type: ignore[attr-defined]
    market.add_miners(3, epochs=5)  # each improves on the architecture in round 0
    # Round 0: the rogue merges honestly first; the others recompute it and confirm it.
    for miner in market.miners:
        miner.submit_round(market.task_id)
    rogue_lines, *confirmed = _close(market, 0, [rogue, *honest])
    (merge0,) = _merges(market, 0)
    assert len(rogue_lines) == 1 and rogue_lines[0].startswith("round 0: posted merge")
    assert confirmed == [[f"round 0: confirmed merge {merge0.node_id}"]] * 2
    # Round 1: the sybil's update, and the rogue's validation-trained 'merge' of it alone. The
    # sybil, new, cannot read merge0 (it is sealed to the miners registered by then): it waits
    # out the merge window, then builds on the architecture.
    for miner in [*market.miners, sybil]:
        market.submit(miner)
    _close(market, 1, [rogue, *honest])
    planted, honest_merge = _merges(market, 1)
    (sybil_update,) = planted.parents
    assert planted.author == rogue.address and planted.samples == SYBIL_SAMPLES
    assert _confirmations(market, planted.node_id) == 1  # its poster's: nobody recomputed it
    assert _confirmations(market, honest_merge.node_id) == 2
    assert sybil_update not in honest_merge.parents  # a million rows that hurt: left out

    market.reveal()
    report = _settle(market, honest)
    _relay_claims(market, report)

    nodes = {n.node_id: n for n in report.nodes}
    assert (nodes[planted.node_id].valid, nodes[planted.node_id].reason) == (False, UNCONFIRMED_1)
    assert nodes[sybil_update].valid and nodes[sybil_update].gain == 0  # worse than its frontier
    assert report.winner != planted.node_id
    paid = {p.account: p for p in report.payouts}
    # Each round's frontier and merge: the architecture then merge0; the honest merges.
    min_gain = read_spec(market.chain, market.store, market.task_id).min_gain
    (arch,) = [n.score for n in report.nodes if n.kind is NodeKind.ARCHITECTURE]
    frontier = {0: arch, 1: max(arch, nodes[merge0.node_id].score)}
    merge_of = {0: merge0.node_id, 1: honest_merge.node_id}
    records = nodes_by_id(market.chain, market.task_id)

    def refund(account: str) -> int:
        return DEPOSIT * sum(
            1
            for r in records.values()
            if r.kind is NodeKind.UPDATE
            and r.author == account
            and not _forfeits(report, r.node_id, frontier[r.round], merge_of[r.round], min_gain)
        )

    # The sybil's update alone: valid, no gain, in no scored merge, and it pulls the honest
    # merge down by min_gain or more when added: no pool, and its deposit is forfeited.
    assert _forfeits(report, sybil_update, frontier[1], honest_merge.node_id, min_gain)
    assert refund(sybil.address) == 0 and sybil.address not in paid
    assert paid[market.scientist.address].amount == BOUNTY * SPLIT.expertise_bps // BPS + DEPOSIT
    miners = [m.address for m in market.miners]
    points = {a: paid[a].points for a in miners}
    assert {a: paid[a].data for a in miners if paid[a].data} == _capped_data(market, points)
    compute_pool = BOUNTY * SPLIT.compute_bps // BPS  # the sybil's update earned none of it
    assert compute_pool - 3 < sum(paid[a].compute for a in miners) <= compute_pool
    assert {p.account for p in report.payouts} == {*miners, market.scientist.address}
    for account in miners:
        entry = paid[account]
        assert DEPOSIT <= entry.deposits == refund(account)  # round 0's improved on its own
        assert entry.amount == entry.data + entry.compute + entry.deposits
    _verified(market)


def test_a_merge_posted_without_its_blob_is_not_confirmed_and_miners_build_on_the_honest_one(
    tmp_path: Path,
) -> None:
    market = new_market(tmp_path)
    honest, rogue = _three_evaluators(
        market, Evaluator, store=UploadsNothing(market.folder / "blobs")
    )
    market.add_miners(3, epochs=5)  # each improves on the architecture in round 0: each is paid
    events: list[str] = []
    honest_merges = []
    for round_index in range(2):
        for miner in market.miners:
            assert not miner._pass(market.task_id, events.append)
        posted, first, second = _close(market, round_index, [rogue, *honest])
        blobless, kept = _merges(market, round_index)
        assert len(posted) == 1 and posted[0].startswith(f"round {round_index}: posted")
        assert blobless.author == rogue.address and kept.author == honest[0].address
        # Copied exactly: same parents, samples and plaintext digest; only the blob is missing.
        same = ("parents", "samples", "plaintext_digest")
        assert [getattr(blobless, f) for f in same] == [getattr(kept, f) for f in same]
        assert not market.store.has(blobless.cid)
        assert first[0].startswith(f"round {round_index}: posted merge {kept.node_id}")
        assert second == [f"round {round_index}: confirmed merge {kept.node_id}"]
        assert (_confirmations(market, blobless.node_id), _confirmations(market, kept.node_id)) == (
            1,
            2,
        )
        honest_merges.append(kept.node_id)
    round_one = [
        r
        for r in nodes_by_id(market.chain, market.task_id).values()
        if r.kind is NodeKind.UPDATE and r.round == 1
    ]
    assert sorted(r.author for r in round_one) == sorted(m.address for m in market.miners)
    assert {r.parents for r in round_one} == {(honest_merges[0],)}

    market.reveal()
    report = _settle(market, honest)

    assert market.chain.phase(market.task_id) is Phase.CLAIMS
    roots = posted_reports(market.chain, market.task_id)
    assert roots[honest[0].address][:2] == roots[honest[1].address][:2]
    nodes = {n.node_id: n for n in report.nodes}
    blobless_ids = [
        m.node_id for r in (0, 1) for m in _merges(market, r) if m.author == rogue.address
    ]
    assert [(nodes[i].valid, nodes[i].reason) for i in blobless_ids] == [(False, UNCONFIRMED_1)] * 2
    assert all(nodes[i].valid for i in honest_merges)
    assert report.winner is not None and report.winner not in blobless_ids
    assert nodes[report.winner].author != rogue.address
    paid = {p.account: p for p in report.payouts}
    assert rogue.address not in paid
    assert set(paid) == {*(m.address for m in market.miners), market.scientist.address}
    points = {m.address: paid[m.address].points for m in market.miners}
    capped = _capped_data(market, points)
    assert {a: paid[a].data for a in points if paid[a].data} == capped and capped
    for miner in market.miners:  # each claims its leaf in its own pass
        assert miner._pass(market.task_id, events.append)
    claimed = market.chain.events(Claimed, task_id=market.task_id)
    assert {e.account: e.amount for e in claimed} == {
        m.address: paid[m.address].amount for m in market.miners
    }
    _verified(market)


def test_a_merge_posted_with_an_inflated_round_score_is_not_confirmed(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    honest, rogue = _three_evaluators(market, InflatedScore)
    market.add_miners(2, epochs=1)
    for miner in market.miners:
        miner.submit_round(market.task_id)

    _close(market, 0, [rogue, *honest])

    inflated, kept = _merges(market, 0)
    assert (inflated.author, kept.author) == (rogue.address, honest[0].address)
    assert inflated.plaintext_digest == kept.plaintext_digest  # the same weights
    assert (_confirmations(market, inflated.node_id), _confirmations(market, kept.node_id)) == (
        1,
        2,
    )


def test_a_confirmed_merge_whose_blob_is_gone_is_skipped_and_the_miner_builds_on_the_architecture(
    tmp_path: Path,
) -> None:
    market = new_market(tmp_path)
    market.create(rounds=2)
    architecture = market.propose()
    market.make_evaluator()
    market.add_miners(2, epochs=1)
    market.run_rounds(1)
    (merge,) = _merges(market, 0)
    assert _confirmations(market, merge.node_id) == market.chain.task(market.task_id).quorum == 1
    blob = market.store.root / merge.cid[-3:-1] / merge.cid
    blob.unlink()  # the store lost it (or it was never there)

    events: list[str] = []
    for miner in market.miners:  # the blob may still turn up: each waits for it, bounded
        assert not miner._pass(market.task_id, events.append)
    schedule = market.chain.task(market.task_id).schedule
    waiting = f"round 1: waiting for round 0's merge (until {schedule.merge_due(1)})"
    assert events == [waiting, waiting]
    advance_to(market.w3, schedule.merge_due(1))
    for miner in market.miners:
        assert not miner._pass(market.task_id, events.append)

    round_one = [
        r
        for r in nodes_by_id(market.chain, market.task_id).values()
        if r.kind is NodeKind.UPDATE and r.round == 1
    ]
    assert [r.parents for r in round_one] == [(architecture,)] * 2
    assert events[2:] == [
        f"round 1: submitted node {r.node_id} (parent {architecture}, {r.samples} rows)"
        for r in round_one
    ]


def test_a_confirmation_sent_after_the_reveal_is_refused_and_changes_no_verdict(
    tmp_path: Path,
) -> None:
    market = new_market(tmp_path)
    honest, rogue = _three_evaluators(market, InflatedScore)
    market.add_miners(2, epochs=1)
    for miner in market.miners:
        miner.submit_round(market.task_id)
    _close(market, 0, [rogue, *honest])
    _close(market, 1, [rogue, *honest])
    inflated, kept = _merges(market, 0)
    market.reveal()

    late = honest[1].address  # merges are posted and confirmed only until the reveal
    with pytest.raises(reverts.WrongPhase):
        market.chain.confirm_merge(
            late, market.task_id, inflated.node_id, inflated.plaintext_digest, inflated.parents
        )

    assert _confirmations(market, inflated.node_id) == 1
    records = nodes_by_id(market.chain, market.task_id)
    counts = settled_confirmations(market.chain, market.task_id, records)
    assert counts == {inflated.node_id: 1, kept.node_id: 2}
    report = _settle(market, honest)
    nodes = {n.node_id: n for n in report.nodes}
    assert (nodes[inflated.node_id].valid, nodes[inflated.node_id].reason) == (False, UNCONFIRMED_1)
    assert nodes[kept.node_id].valid
    _verified(market)
