"""The market end to end in one process: the sponsor's functions, `Miner` and `Evaluator` on an
in-process chain and a local store, with real training and scoring on digits shards."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from marketplace.chain.events import Claimed, Reclaimed
from marketplace.dev.devchain import advance_to
from marketplace.errors import StoreUnavailable
from marketplace.protocol.reports import agreed_report, claim_payout, posted_reports
from marketplace.protocol.tasks import account_key, miner_key, nodes_by_id
from marketplace.roles import evaluator as evaluator_module
from marketplace.roles import settlement as settlement_module
from marketplace.roles.verify import verify_task
from marketplace.rules.datafiles import to_csv
from marketplace.rules.messages import NodeKind, Payout, Phase
from marketplace.wire.envelope import envelope_recipients
from marketplace.wire.report import PayoutReport
from miner import submission as submission_module
from miner.train_config import TrainConfig
from miner.trainer import Trainer
from miner.worker import Miner
from tests.market import BOUNTY, DEPOSIT, Market, new_market


class Crashed(Exception):
    """Stands in for SIGKILL at a crash point."""


class CountingTrainer(Trainer):
    def __init__(self) -> None:
        self.calls = 0

    def train(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().train(*args, **kwargs)


class RecordingTrainer(Trainer):
    """Trains as usual and keeps every run's TrainConfig."""

    def __init__(self) -> None:
        self.configs: list[TrainConfig] = []

    def train(self, spec, weights, dataset, config, progress=None):  # type: ignore[no-untyped-def]
        self.configs.append(config)
        return super().train(spec, weights, dataset, config, progress)


def restarted(market: Market, miner: Miner, trainer: Trainer) -> Miner:
    """`miner` (the first of the market's) started again: a new process, its state re-read."""
    return Miner(
        market.connection(market.keys[4]), trainer, miner.data, type(miner.state)(miner.state.path)
    )


@pytest.fixture
def market(tmp_path: Path) -> Market:
    m = new_market(tmp_path)
    m.create(rounds=2)
    m.propose()
    m.make_evaluator()
    return m


def _settled(market: Market) -> PayoutReport:
    market.add_miners(3)
    market.run_rounds(2)
    assert market.chain.phase(market.task_id) is Phase.REVEAL
    market.reveal()
    assert market.evaluator is not None
    lines = market.evaluator.step(market.task_id)
    assert len(lines) == 1 and lines[0].startswith("posted the payout root")
    return agreed_report(market.chain, market.store, market.task_id)


def test_rounds_build_on_the_previous_merge(market: Market) -> None:
    market.add_miners(3)
    market.run_rounds(2)

    records = nodes_by_id(market.chain, market.task_id)
    updates = [r for r in records.values() if r.kind is NodeKind.UPDATE]
    merges = [r for r in records.values() if r.kind is NodeKind.MERGE]
    assert sorted((u.round, u.author) for u in updates) == sorted(
        (r, m.address) for r in (0, 1) for m in market.miners
    )
    assert [m.round for m in merges] == [0, 1]
    round_one = [u for u in updates if u.round == 1]
    assert {u.parents for u in round_one} == {(merges[0].node_id,)}
    assert all(records[p].round == 0 for p in merges[0].parents)


def test_merge_is_sealed_to_the_evaluator_and_registered_miners_not_the_sponsor(
    market: Market,
) -> None:
    """The miners build on merges; the sponsor is given the winner alone, at settlement."""
    market.add_miners(3)
    market.run_rounds(1)

    merge = next(r for r in market.chain.nodes(market.task_id) if r.kind is NodeKind.MERGE)
    readers = set(envelope_recipients(market.store.get(merge.cid, 1 << 26)))
    expected = {account_key(market.evaluator_account).public_bytes}
    expected.update(miner_key(m.account, market.task_id).public_bytes for m in market.miners)
    assert readers == expected
    assert account_key(market.sponsor).public_bytes not in readers


def test_settlement_pays_what_the_report_says_and_verifies(market: Market) -> None:
    report = _settled(market)
    chain, task_id = market.chain, market.task_id
    submissions = sum(1 for r in chain.nodes(task_id) if r.kind is not NodeKind.MERGE)

    task = chain.task(task_id)
    assert "0x" + task.payout_root.hex() == report.root
    assert task.payout_total == report.total == sum(p.amount for p in report.payouts)
    assert report.total <= BOUNTY + DEPOSIT * submissions
    (root, total, cid) = posted_reports(chain, task_id)[market.evaluator_account.address]
    assert (root.hex(), total) == (report.root[2:], report.total) and cid
    assert report.winner is not None

    market.finalize()
    assert claim_payout(chain, market.store, market.keys[9].address, task_id) == (None, False)
    for entry in report.payouts:  # anyone may send a claim: account 9 relays every leaf
        before = chain.balance(entry.account)
        result = chain.claim(market.keys[9].address, task_id, entry.leaf(), entry.proof_bytes())
        assert result.event(Claimed).amount == entry.amount
        assert chain.balance(entry.account) == before + entry.amount
        assert chain.reputation(entry.account) == entry.points
    reclaimed = chain.reclaim(market.sponsor.address, task_id).event(Reclaimed).amount
    assert reclaimed == BOUNTY + DEPOSIT * submissions - report.total

    verification = verify_task(chain, market.store, task_id, market.chain_id)
    assert verification.ok, verification.checks
    assert verification.rescored == [1]  # the public architecture; updates are sealed
    full = verify_task(
        chain,
        market.store,
        task_id,
        market.chain_id,
        market.evaluator_account,
        account_key(market.evaluator_account),
    )
    assert full.ok and full.unreadable == [] and len(full.rescored) == len(report.nodes)


def test_verify_flags_a_root_that_the_reward_rule_does_not_give(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = settlement_module.compute_payouts

    def greedy(*args, **kwargs):  # type: ignore[no-untyped-def]
        payouts = honest(*args, **kwargs)
        total = sum(p.amount for p in payouts)
        return [Payout(account=market.evaluator_account.address, amount=total, points=0)]

    monkeypatch.setattr(settlement_module, "compute_payouts", greedy)
    _settled(market)

    verification = verify_task(market.chain, market.store, market.task_id, market.chain_id)
    assert not verification.ok
    failed = [check.name for check in verification.checks if not check.ok]
    assert failed == [f"{market.evaluator_account.address[:10]}... root"]


def test_submitting_twice_in_a_round_returns_the_first_submission(market: Market) -> None:
    trainer = CountingTrainer()
    market.add_miners(1, trainer=trainer)
    miner = market.miners[0]

    first = miner.submit_round(market.task_id)
    again = miner.submit_round(market.task_id)

    assert first is not None and again is not None
    assert (again.node_id, again.cid, again.resumed) == (first.node_id, first.cid, True)
    assert trainer.calls == 1
    assert market.chain.task(market.task_id).submission_count == 2  # the architecture and one


def test_a_miner_killed_after_uploading_submits_that_blob_without_training_again(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(name: str) -> None:
        if name == "miner:uploaded":
            raise Crashed(name)

    monkeypatch.setattr(submission_module, "crash_point", crash)
    market.add_miners(1)
    with pytest.raises(Crashed):
        market.miners[0].submit_round(market.task_id)
    uploaded = market.miners[0].state.section("tasks", market.task_id, "rounds", 0)["cid"]
    assert not [r for r in market.chain.nodes(market.task_id) if r.kind is NodeKind.UPDATE]

    monkeypatch.setattr(submission_module, "crash_point", lambda name: None)
    trainer = CountingTrainer()
    submission = restarted(market, market.miners[0], trainer).submit_round(market.task_id)

    assert submission is not None and submission.resumed and submission.cid == uploaded
    assert trainer.calls == 0
    updates = [r for r in market.chain.nodes(market.task_id) if r.kind is NodeKind.UPDATE]
    assert [(u.author, u.cid) for u in updates] == [(market.keys[4].address, uploaded)]


def test_an_evaluator_killed_after_scoring_posts_the_saved_report(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    market.add_miners(2)
    market.run_rounds(2)
    market.reveal()

    def crash(name: str) -> None:
        if name == "evaluator:scored":
            raise Crashed(name)

    monkeypatch.setattr(evaluator_module, "crash_point", crash)
    assert market.evaluator is not None
    with pytest.raises(Crashed):
        market.evaluator.step(market.task_id)
    saved = market.evaluator.state.section("tasks", market.task_id)["report_cid"]  # type: ignore[union-attr]
    assert posted_reports(market.chain, market.task_id) == {}

    monkeypatch.setattr(evaluator_module, "crash_point", lambda name: None)
    restarted = market.make_evaluator()
    monkeypatch.setattr(restarted, "evaluate", lambda task_id: pytest.fail("scored again"))
    assert len(restarted.step(market.task_id)) == 1
    assert restarted.step(market.task_id) == []

    posted = posted_reports(market.chain, market.task_id)
    assert posted[market.evaluator_account.address][2] == saved


def test_a_copy_of_the_parent_is_no_update_and_forfeits_its_deposit(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    class CopyTrainer(Trainer):
        def train(self, spec, weights, dataset, config, progress=None):  # type: ignore[no-untyped-def]
            result = super().train(spec, weights, dataset, config, progress)
            return replace(result, weights={k: v.clone() for k, v in weights.items()})

    market.add_miners(2)
    market.miners[1].trainer = CopyTrainer()
    copier = market.miners[1].address
    market.run_rounds(2)
    market.reveal()
    assert market.evaluator is not None
    market.evaluator.step(market.task_id)
    report = agreed_report(market.chain, market.store, market.task_id)

    copies = [n for n in report.nodes if n.author == copier]
    assert [n.reason.split(":")[0] for n in copies] == ["no-update", "no-update"]
    assert report.entry_for(copier) is None  # no deposit back, no share
    merges = [n for n in report.nodes if n.kind is NodeKind.MERGE]
    assert all(not set(m.parents) & {n.node_id for n in copies} for m in merges)


def test_private_data_is_in_no_blob_state_file_or_transaction(market: Market) -> None:
    _settled(market)
    market.finalize()
    for miner in market.miners:
        miner.collect(market.task_id)

    haystack = [p.read_bytes() for p in market.store.root.rglob("*") if p.is_file()]
    haystack += [p.read_bytes() for p in (market.folder / "state").rglob("*") if p.is_file()]
    w3 = market.w3
    for number in range(w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            haystack.append(bytes(tx.get("input", tx.get("data", b""))))  # type: ignore[union-attr]
            receipt = w3.eth.get_transaction_receipt(tx["hash"])  # type: ignore[index]
            haystack.extend(bytes(log["data"]) for log in receipt["logs"])
    everything = b"\0".join(haystack)
    assert len(everything) > 100_000
    for shard in market.shards[:3]:
        lines = to_csv(shard).splitlines()[1:]
        rows = np.ascontiguousarray(shard.features)
        for i in range(0, len(shard), 37):
            assert lines[i] not in everything
            assert rows[i].tobytes() not in everything


def test_no_round_open_means_no_submission(market: Market) -> None:
    market.add_miners(1)
    market.run_rounds(2)  # the miner submits in both rounds; the rounds are then over

    assert market.miners[0].submit_round(market.task_id) is None


def test_a_private_miner_reports_the_epsilon_it_spent(market: Market) -> None:
    market.add_miners(1)
    miner = market.miners[0]
    miner.config = replace(miner.config, dp_epsilon=4.0, dp_delta=1e-4, max_grad_norm=1.0)

    submission = miner.submit_round(market.task_id)

    assert submission is not None and submission.epsilon is not None
    assert 0 < submission.epsilon <= 4.0
    saved = miner.state.section("tasks", market.task_id, "rounds", 0)
    assert saved["status"] == "submitted" and saved["epsilon"] == submission.epsilon


def test_two_evaluators_confirm_each_others_merges_and_agree_on_the_root(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    first, second = market.evaluator_account, market.keys[3]
    market.create(rounds=2, evaluators=[first, second], quorum=2)
    market.propose()
    evaluators = [market.make_evaluator(first), market.make_evaluator(second)]
    market.add_miners(2)

    for round_index in range(2):
        for miner in market.miners:
            miner.submit_round(market.task_id)
        advance_to(market.w3, market.chain.task(market.task_id).round_end(round_index))
        posted, confirmed = (e.step(market.task_id) for e in evaluators)
        assert posted[0].startswith(f"round {round_index}: posted merge")
        assert confirmed == [f"round {round_index}: confirmed merge {posted[0].split()[4]}"]
    records = nodes_by_id(market.chain, market.task_id)
    merges = [r for r in records.values() if r.kind is NodeKind.MERGE]
    assert len(merges) == 2  # one per round: the second evaluator confirmed, it did not post
    assert {records[u].parents for u in merges[1].parents} == {(merges[0].node_id,)}
    for merge in merges:
        assert market.chain.node(market.task_id, merge.node_id).confirmations == 0b11

    market.reveal()
    for evaluator in evaluators:
        evaluator.step(market.task_id)
    posted_roots = posted_reports(market.chain, market.task_id)
    assert posted_roots[first.address][:2] == posted_roots[second.address][:2]
    task = market.chain.task(market.task_id)
    assert task.agreed_at > 0 and task.payout_root == posted_roots[first.address][0]


def test_an_upload_that_fails_is_retried_with_the_same_sealed_blob_without_training(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    market.add_miners(1)
    miner = market.miners[0]
    real_put = market.store.put

    def unreachable(data: bytes) -> str:
        raise StoreUnavailable("/add: ConnectError after 4 tries")

    monkeypatch.setattr(market.store, "put", unreachable)
    with pytest.raises(StoreUnavailable):
        miner.submit_round(market.task_id)
    saved = miner.state.section("tasks", market.task_id, "rounds", 0)
    assert saved["status"] == "sealed"
    (kept,) = (miner.state.path.parent / "sealed").iterdir()
    assert kept.name == f"{saved['digest']}.blob"

    monkeypatch.setattr(market.store, "put", real_put)
    trainer = CountingTrainer()
    submission = restarted(market, market.miners[0], trainer).submit_round(market.task_id)

    assert submission is not None and submission.resumed and trainer.calls == 0
    (update,) = [r for r in market.chain.nodes(market.task_id) if r.kind is NodeKind.UPDATE]
    assert update.digest.hex() == saved["digest"] and update.cid == submission.cid
    assert not kept.exists()  # uploaded: the kept copy is let go


def test_a_miner_trains_with_the_task_specs_prox_mu_unless_it_sets_its_own(
    tmp_path: Path,
) -> None:
    market = new_market(tmp_path)
    market.create(rounds=1, prox_mu=0.3)
    market.propose()
    market.make_evaluator()
    trainer = RecordingTrainer()
    market.add_miners(2, trainer=trainer, epochs=1)
    market.miners[1].config = replace(market.miners[1].config, prox_mu=0.0)

    for miner in market.miners:
        market.submit(miner)

    assert [config.prox_mu for config in trainer.configs] == [0.3, 0.0]
