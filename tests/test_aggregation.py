"""Secure aggregation rounds end to end: miners join in a round's first half, seal their clipped
deltas against the masked set once it is fixed, and the key holder posts the merge it decrypted
from the encrypted sum, never opening an update alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from marketplace.chain import reverts
from marketplace.chain.events import RoundJoined
from marketplace.dev.devchain import advance_to
from marketplace.errors import ConfigError
from marketplace.protocol.aggregation import (
    apply_mean,
    delta_values,
    groups_of,
    packing,
    round_groups,
    seal_delta,
)
from marketplace.protocol.tasks import (
    account_key,
    miner_key,
    nodes_by_id,
    open_merge,
    paillier_hex,
    paillier_key,
)
from marketplace.roles.verify import verify_task
from marketplace.rules.messages import Aggregation, NodeKind, NodeRecord, Phase
from marketplace.rules.rewards import CREDIT_SCALE, apportion
from marketplace.wire.report import coalition_of
from marketplace.wire.secagg import decrypt
from marketplace.wire.secagg_masks import self_mask_key, uncancelled_masks
from marketplace.wire.secagg_packing import SecAggError
from marketplace.wire.secagg_submission import decode_submission
from miner.trainer import Trainer, TrainResult
from tests.market import BOUNTY, DEPOSIT, ROUND, SPLIT, TINY, Market, new_market

EPOCHS = 5


class RecordingTrainer(Trainer):
    """Keeps every result, so a test can compute what the sum must be."""

    def __init__(self) -> None:
        self.results: list[TrainResult] = []

    def train(self, *args: Any, **kwargs: Any) -> TrainResult:
        result = super().train(*args, **kwargs)
        self.results.append(result)
        return result


def aggregation_of(market: Market, **overrides: Any) -> Aggregation:
    fields: dict[str, Any] = {
        "key_holder": market.evaluator_account.address,
        "paillier_n": paillier_hex(market.evaluator_account),
        "clip": 0.05,
        "max_miners": 8,
    }
    fields.update(overrides)
    return Aggregation(**fields)


@pytest.fixture
def market(tmp_path: Path) -> Market:
    m = new_market(tmp_path)
    m.create(rounds=2, aggregation=aggregation_of(m))
    m.propose()
    m.make_evaluator()
    return m


def midpoint(market: Market, round_index: int) -> int:
    return market.chain.task(market.task_id).schedule.midpoint(round_index)


def join_and_train(market: Market, miners: range | list[int]) -> None:
    for i in miners:
        assert market.miners[i].submit_round(market.task_id) is None  # joined, trained, waiting


def expected_merge(
    market: Market, base: dict[str, torch.Tensor], trained: list[TrainResult]
) -> dict[str, np.ndarray]:
    """base + the mean of the members' quantized deltas: what the decrypted sum must give."""
    layout = packing(aggregation_of(market))
    summed = sum(
        layout.quantize(delta_values(result.weights, base)) - layout.level for result in trained
    )
    assert isinstance(summed, np.ndarray)
    return apply_mean(base, layout.dequantize(summed), len(trained))


def opened(market: Market, record: NodeRecord) -> dict[str, torch.Tensor]:
    """A merge's weights, opened with the evaluator's key (merges are sealed to it)."""
    blob = market.store.get(record.cid, 8 * 1024 * 1024)
    key = account_key(market.evaluator_account)
    return open_merge(record, blob, key, TINY, 8 * 1024 * 1024, market.chain_id).weights


def test_aggregate_rounds_post_the_decrypted_sum_and_share_gains_equally(
    market: Market,
) -> None:
    trainer = RecordingTrainer()
    market.add_miners(3, trainer=trainer, epochs=EPOCHS)
    chain, task_id = market.chain, market.task_id
    evaluator = market.evaluator
    assert evaluator is not None
    base = evaluator.verdict(evaluator.view(task_id), 1).weights
    assert base is not None

    # Round 0: three miners join on the architecture and train; nothing is submitted yet.
    join_and_train(market, range(3))
    joins = chain.round_joins(task_id, 0)
    assert [e.account for e in joins] == [m.address for m in market.miners]
    assert {e.base for e in joins} == {1}
    assert chain.task(task_id).node_count == 1
    advance_to(market.w3, midpoint(market, 0))
    submitted = [m.submit_round(task_id) for m in market.miners]
    assert [(s.node_id, s.parent) for s in submitted if s] == [(2, 1), (3, 1), (4, 1)]
    assert len(trainer.results) == 3  # each trained once, in the first half

    # One submission alone, decrypted by the key holder, is noise: no sum opens from it.
    aggregation = aggregation_of(market)
    records = nodes_by_id(chain, task_id)
    group = groups_of(joins, market.chain_id, chain.address, task_id, 0, 8)[1]
    public, private = paillier_key(market.evaluator_account)
    count = sum(t.numel() for t in base.values())
    alone = decode_submission(
        market.store.get(records[2].cid, 10**7), public, packing(aggregation), group.masked, count
    )
    with pytest.raises(SecAggError, match="out of range"):
        packing(aggregation).unpack(decrypt(private, alone), count, 1)

    lines = market.end_round(0)
    assert lines[0].startswith("round 0: posted merge 5, the decrypted sum of [2, 3, 4] on 1")
    records = nodes_by_id(chain, task_id)
    merge = records[5]
    assert merge.kind is NodeKind.MERGE and merge.parents == (2, 3, 4)
    assert merge.samples == sum(len(market.shards[i]) for i in range(3))
    want = expected_merge(market, base, trainer.results[:3])
    got = opened(market, merge)
    assert all(np.array_equal(got[name].numpy(), want[name]) for name in want)

    # Round 1 builds on the merge, every member from the same base.
    join_and_train(market, range(3))
    assert {e.base for e in chain.round_joins(task_id, 1)} == {5}
    advance_to(market.w3, midpoint(market, 1))
    submitted = [m.submit_round(task_id) for m in market.miners]
    assert [(s.node_id, s.parent) for s in submitted if s] == [(6, 5), (7, 5), (8, 5)]
    assert market.end_round(1)[0].startswith("round 1: posted merge 9, the decrypted sum of")
    records = nodes_by_id(chain, task_id)
    want = expected_merge(market, opened(market, records[5]), trainer.results[3:])
    got = opened(market, records[9])
    assert all(np.array_equal(got[name].numpy(), want[name]) for name in want)

    # Settlement: an update never seen alone stands at its base's score and gains nothing;
    # a merge's credit goes to its members in equal parts (nobody saw them apart).
    market.reveal()
    evaluator.step(task_id)
    report = evaluator.evaluate(task_id)
    nodes = {n.node_id: n for n in report.nodes}
    for update, parent in ((2, 1), (3, 1), (4, 1), (6, 5), (7, 5), (8, 5)):
        assert nodes[update].valid and nodes[update].score == nodes[parent].score
        assert nodes[update].gain == 0
    assert nodes[5].gain == max(0, nodes[5].score - nodes[1].score)
    assert nodes[9].gain == max(0, nodes[9].score - max(nodes[1].score, nodes[5].score))
    assert report.coalitions == {}
    assert report.winner in (1, 5, 9)
    lineage = {1: [], 5: [5], 9: [5, 9]}[report.winner]
    points: dict[str, int] = {}
    frontier = nodes[1].score
    for merge_id in lineage:
        gain = nodes[merge_id].score - frontier
        if gain >= 2:  # the spec's min_gain
            weight = gain * CREDIT_SCALE // (report.ceiling - frontier)
            updates = [p for p in records[merge_id].parents if records[p].kind is NodeKind.UPDATE]
            members = dict.fromkeys(updates, 1)
            for parent, share in apportion(weight, members).items():
                author = records[parent].author
                points[author] = points.get(author, 0) + share
        frontier = max(frontier, nodes[merge_id].score)
    points = {a: p for a, p in points.items() if p}
    data_pool = BOUNTY * SPLIT.data_bps // 10_000
    expected_data = apportion(data_pool, points)
    for miner in market.miners:
        payout = next(p for p in report.payouts if p.account == miner.address)
        assert payout.deposits == 4 * DEPOSIT  # two updates, and the two joins they followed
        assert payout.points == points.get(miner.address, 0)
        assert payout.data == expected_data.get(miner.address, 0)
    assert verify_task(
        chain, market.store, task_id, market.chain_id, key=account_key(market.sponsor)
    ).ok


def test_a_drop_out_is_recovered_from_the_survivors_mask_seeds(market: Market) -> None:
    trainer = RecordingTrainer()
    market.add_miners(3, trainer=trainer, epochs=EPOCHS)
    chain, task_id = market.chain, market.task_id
    evaluator = market.evaluator
    assert evaluator is not None
    join_and_train(market, range(3))
    advance_to(market.w3, midpoint(market, 0))
    for miner in market.miners[:2]:  # the third joined, trained and never submits
        assert miner.submit_round(task_id) is not None
    advance_to(market.w3, chain.task(task_id).round_end(0))
    assert evaluator.step(task_id) == []  # the members have a quarter round to reveal seeds
    lines = [line for miner in market.miners for line in miner.secure.reveal_masks(task_id)]
    assert lines == ["round 0: revealed its mask seeds (drop-outs: 1)"] * 2
    assert [miner.secure.reveal_masks(task_id) for miner in market.miners] == [[], [], []]  # once
    (reveal, _) = chain.seed_reveals(task_id, 0)
    assert (reveal.base, len(reveal.seeds)) == (1, 2)  # its own, the drop-out's
    line = evaluator.step(task_id)[0]
    assert re.fullmatch(
        r"round 0: posted merge 4, the decrypted sum of \[2, 3\] on 1 "
        r"\(score \d+, base \d+, drop-outs: 1\)",
        line,
    ), line
    base = evaluator.verdict(evaluator.view(task_id), 1).weights
    assert base is not None
    want = expected_merge(market, base, trainer.results[:2])
    got = opened(market, nodes_by_id(chain, task_id)[4])
    assert all(np.array_equal(got[name].numpy(), want[name]) for name in want)

    # Had the drop-out's blob surfaced late, the revealed pairwise keys would not open it: its
    # own mask, never revealed, still hides it.
    aggregation = aggregation_of(market)
    group = round_groups(chain, market.chain_id, task_id, 0, 8)[1]
    late = seal_delta(
        trainer.results[2].weights,
        base,
        aggregation,
        miner_key(market.keys[6], task_id).private_key,
        group,
        market.miners[2].address,
    )
    count = sum(t.numel() for t in base.values())
    public, private = paillier_key(market.evaluator_account)
    layout = packing(aggregation)
    ciphertexts = decode_submission(late, public, layout, group.masked, count)
    pairwise = [bytes(e.seeds[1]) for e in chain.seed_reveals(task_id, 0)]
    guess = uncancelled_masks({2: [bytes(32), *pairwise]}, [0, 1], len(ciphertexts), public.n)
    plain = [(p - c) % public.n for p, c in zip(decrypt(private, ciphertexts), guess, strict=True)]
    truth = layout.quantize(delta_values(trainer.results[2].weights, base))
    assert np.mean(layout.slot_values(plain, count)[:count] == truth) < 0.01


def test_without_every_survivors_seeds_the_group_is_abandoned_and_rerun(market: Market) -> None:
    market.add_miners(4, epochs=EPOCHS)
    chain, task_id = market.chain, market.task_id
    evaluator = market.evaluator
    assert evaluator is not None
    join_and_train(market, range(4))
    advance_to(market.w3, midpoint(market, 0))
    for miner in market.miners[:3]:
        assert miner.submit_round(task_id) is not None
    task = chain.task(task_id)
    advance_to(market.w3, task.round_end(0))
    assert evaluator.step(task_id) == []
    assert market.miners[0].secure.reveal_masks(task_id)  # the other two survivors stay silent
    advance_to(market.w3, task.schedule.merge_due(1) - 5)
    assert evaluator.step(task_id) == []  # still waiting
    advance_to(market.w3, task.schedule.merge_due(1))
    assert evaluator.step(task_id) == [
        "round 0, base 1: abandoned: 2 of the 3 miners who submitted revealed no mask seeds by "
        "a quarter round after the close, so the masks cannot be taken out; no update was "
        "opened, and the next round re-runs with fresh masks"
    ]
    assert evaluator.step(task_id) == []  # decided once
    assert [r.kind for r in nodes_by_id(chain, task_id).values()].count(NodeKind.MERGE) == 0

    # The re-run: round 1 on the architecture again, in its first half (the deadline was a
    # quarter round in), with masks bound to the new round.
    join_and_train(market, range(3))
    advance_to(market.w3, midpoint(market, 1))
    rerun = [m.submit_round(task_id) for m in market.miners[:3]]
    assert [(s.node_id, s.parent) for s in rerun if s] == [(5, 1), (6, 1), (7, 1)]
    line = market.end_round(1)[0]
    assert line.startswith("round 1: posted merge 8, the decrypted sum of [5, 6, 7] on 1")

    # Those who submitted in the abandoned round keep their deposits (of their updates and of
    # the joins they followed up); the drop-out joined and never submitted: it forfeits its join.
    market.reveal()
    report = evaluator.evaluate(task_id)
    nodes = {n.node_id: n for n in report.nodes}
    assert nodes[2].valid and nodes[3].valid and nodes[4].valid and nodes[2].gain == 0
    deposits = {p.account: p.deposits for p in report.payouts}
    assert deposits[market.miners[0].address] == 4 * DEPOSIT
    assert market.miners[3].address not in deposits


def test_a_lone_survivor_reveals_nothing_and_the_group_is_abandoned(market: Market) -> None:
    market.add_miners(3, epochs=1)
    task_id = market.task_id
    join_and_train(market, range(3))
    advance_to(market.w3, midpoint(market, 0))
    assert market.miners[0].submit_round(task_id) is not None
    assert market.end_round(0) == [
        "round 0, base 1: abandoned: 1 of 3 miners who joined submitted a well-formed update, "
        "and a sum needs two (a sum of one is that update)"
    ]
    assert market.miners[0].secure.reveal_masks(task_id) == []  # its seeds would expose its update
    assert market.chain.seed_reveals(task_id, 0) == []


def test_a_copied_submission_abandons_the_group_and_outsiders_are_refused(
    market: Market,
) -> None:
    market.add_miners(4, epochs=EPOCHS)
    chain, task_id = market.chain, market.task_id
    join_and_train(market, range(3))
    advance_to(market.w3, midpoint(market, 0))
    first = market.miners[0].submit_round(task_id)
    second = market.miners[1].submit_round(task_id)
    assert first is not None and second is not None
    copier, outsider = market.miners[2], market.miners[3]
    record = nodes_by_id(chain, task_id)[first.node_id]
    chain.submit_update(copier.address, task_id, 1, 300, record.digest, record.cid)
    chain.submit_update(outsider.address, task_id, 1, 300, record.digest, record.cid)
    chain.submit_update(market.miners[1].address, task_id, 1, 300, record.digest, record.cid)
    assert market.end_round(0) == []  # the copier has not revealed its own mask key yet
    evaluator = market.evaluator
    assert evaluator is not None
    group = round_groups(chain, market.chain_id, task_id, 0, 8)[1]
    own = self_mask_key(miner_key(market.keys[6], task_id).private_key, group.masked.context)
    chain.reveal_mask_seeds(copier.address, task_id, 0, 1, [own])
    lines = evaluator.step(task_id)
    assert len(lines) == 1 and lines[0].startswith(
        "round 0, base 1: abandoned: the decrypted sum is out of range"
    )
    view = evaluator.view(task_id)
    verdicts = {n: evaluator.verdict(view, n) for n in (2, 3, 4, 5, 6)}
    assert [verdicts[n].valid for n in (2, 3, 4)] == [True, True, True]  # well-formed, all
    assert verdicts[5].reason == f"binding: {outsider.address} did not join round 0 on node 1"
    assert verdicts[6].reason == "binding: a second submission in round 0"


def test_a_lone_joiner_does_not_submit_and_a_late_one_does_not_join(market: Market) -> None:
    market.add_miners(2, epochs=1)
    chain, task_id = market.chain, market.task_id
    join_and_train(market, [0])
    advance_to(market.w3, midpoint(market, 0))
    assert market.miners[1].submit_round(task_id) is None  # too late to join
    assert market.miners[0].submit_round(task_id) is None  # alone: its "sum" would be its update
    assert [e.account for e in chain.round_joins(task_id, 0)] == [market.miners[0].address]
    assert chain.task(task_id).node_count == 1
    with pytest.raises(reverts.JoinWindowClosed):
        chain.join_round(market.miners[1].address, task_id, 1, b"\x01" * 32)


def _join(account: str, base: int, key: int) -> RoundJoined:
    return RoundJoined(
        block_number=1,
        tx_hash="0x",
        log_index=0,
        task_id=3,
        round=0,
        account=account,
        base=base,
        mask_key=bytes([key]) * 32,
    )


def test_groups_take_each_accounts_first_join_by_base_up_to_the_cap() -> None:
    a, b, c, d = (f"0x{str(i) * 40}" for i in range(1, 5))
    e = "0x" + "5" * 40
    low_order = _join(e, 1, 0)  # all zeros: nobody can agree a mask with it
    joins = [low_order, _join(a, 1, 1), _join(b, 1, 2), _join(a, 7, 3), _join(c, 7, 4)]
    groups = groups_of([*joins, _join(d, 1, 5)], 1, "0xC0", 3, 0, max_miners=2)
    assert sorted(groups) == [1, 7]
    assert [m.lower() for m in groups[1].members] == [a, b]  # d is over the cap
    assert [m.lower() for m in groups[7].members] == [c]  # a's second join does not count
    assert not groups[7].viable and groups[1].viable
    assert groups[1].masked.context == b"gm-secagg/v1 chain 1 contract 0xc0 task 3 round 0 base 1"
    assert groups[1].index_of(b.upper().replace("0X", "0x")) == 1


def test_an_aggregation_task_has_its_key_holder_as_sole_evaluator(tmp_path: Path) -> None:
    m = new_market(tmp_path)
    with pytest.raises(ConfigError, match="secure aggregation needs exactly one evaluator"):
        m.create(
            aggregation=aggregation_of(m), evaluators=[m.evaluator_account, m.keys[3]], quorum=2
        )
    with pytest.raises(ConfigError, match="key holder"):
        m.create(aggregation=aggregation_of(m, key_holder=m.keys[3].address))


def test_the_programs_loops_run_an_aggregate_task_from_join_to_claim(market: Market) -> None:
    """`Miner.run`'s pass and `Evaluator.step`, polled while the clock moves an eighth of a
    round at a time: joins, seals, reveals, merges and claims happen on their own."""
    market.add_miners(3, epochs=EPOCHS)
    chain, task_id, evaluator = market.chain, market.task_id, market.evaluator
    assert evaluator is not None
    said: list[str] = []
    revealed = finalized = False
    for _ in range(60):
        if all([miner._pass(task_id, said.append) for miner in market.miners]):  # each passes
            break
        evaluator.step(task_id)
        task, phase = chain.task(task_id), chain.phase(task_id)
        if phase is Phase.REVEAL and not revealed:
            market.reveal()
            revealed = True
        now = int(market.w3.eth.get_block("latest")["timestamp"])
        if phase is Phase.CHALLENGE and now >= task.challenge_end and not finalized:
            chain.finalize(market.sponsor.address, task_id)
            finalized = True
        advance_to(market.w3, now + ROUND // 8)
    else:
        pytest.fail(f"the task did not finish: {said}")
    records = nodes_by_id(chain, task_id)
    merges = [r for r in records.values() if r.kind is NodeKind.MERGE]
    assert [(m.round, m.parents) for m in merges] == [(0, (2, 3, 4)), (1, (6, 7, 8))]
    assert {records[p].parents[0] for p in merges[1].parents} == {5}  # round 1 on round 0's merge
    assert sum("submitted node" in line for line in said) == 6
    assert sum("revealed its mask seeds (drop-outs: 0)" in line for line in said) == 6
    assert sum(line.startswith("claimed") for line in said) == 3


def test_a_task_can_aggregate_some_rounds_and_merge_the_others_in_clear(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    market.create(rounds=2, aggregation=aggregation_of(market, rounds=(1,)))
    market.propose()
    evaluator = market.make_evaluator()
    market.add_miners(3, epochs=EPOCHS)
    chain, task_id = market.chain, market.task_id

    # Round 0 in clear: updates sealed to the evaluator, the leave-one-out merge.
    assert [m.submit_round(task_id) is not None for m in market.miners] == [True] * 3
    assert chain.round_joins(task_id, 0) == []
    (line,) = market.end_round(0)
    merge0 = int(re.findall(r"posted merge (\d+)", line)[0])
    # Round 1 aggregated, on round 0's merge.
    join_and_train(market, range(3))
    assert {e.base for e in chain.round_joins(task_id, 1)} == {merge0}
    advance_to(market.w3, midpoint(market, 1))
    assert all(m.submit_round(task_id) is not None for m in market.miners)
    (line,) = market.end_round(1)
    assert "the decrypted sum of" in line and f"on {merge0}" in line

    market.reveal()
    evaluator.step(task_id)
    report = evaluator.evaluate(task_id)
    records = nodes_by_id(chain, task_id)
    merges = [r for r in records.values() if r.kind is NodeKind.MERGE]
    assert [m.round for m in merges] == [0, 1]
    # Coalition scores for the merge in clear; none for the aggregate one (shared equally).
    assert set(report.coalitions) == {merge0}
    members = {i for key in report.coalitions[merge0] for i in coalition_of(key)}
    assert members == set(records[merge0].parents)
    nodes = {n.node_id: n for n in report.nodes}
    for parent in merges[1].parents:  # sealed: at its base's score
        assert nodes[parent].score == nodes[merge0].score and nodes[parent].valid
    sponsor_key = account_key(market.sponsor)
    assert verify_task(chain, market.store, task_id, market.chain_id, key=sponsor_key).ok


def test_join_spam_forfeits_its_deposits_and_followed_joins_are_refunded(tmp_path: Path) -> None:
    """Issue 14, attack 9: joins were free, so three of them filled a group and locked the honest
    miners out. Now each join pays the deposit: a spammer that fills the group and never submits
    forfeits its joins; a miner kept out of the group, or one whose submission counted, gets its
    join back at settlement."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    market = new_market(tmp_path)
    market.create(rounds=2, aggregation=aggregation_of(market, max_miners=2))
    market.propose()
    evaluator = market.make_evaluator()
    market.add_miners(2, epochs=1)
    task_id, chain = market.task_id, market.chain
    spammers = [market.keys[8].address, market.keys[9].address]
    for spammer in spammers:  # round 0: they fill the group on the architecture first
        key = X25519PrivateKey.generate().public_key().public_bytes_raw()
        joined = chain.join_round(spammer, task_id, 1, key)
        assert joined.event(RoundJoined).account == spammer
    assert chain.task(task_id).join_count == 2
    assert chain.balance(chain.address) == BOUNTY + 3 * DEPOSIT  # the architecture, two joins
    join_and_train(market, range(2))  # the honest miners join too, past the group's two places
    assert chain.task(task_id).join_count == 4
    advance_to(market.w3, midpoint(market, 0))
    assert [m.submit_round(task_id) for m in market.miners] == [None, None]  # kept out
    assert market.end_round(0) == [  # the spammers' group never submits: no merge
        "round 0, base 1: abandoned: 0 of 2 miners who joined submitted a well-formed update, "
        "and a sum needs two (a sum of one is that update)"
    ]
    # Round 1: no merge to wait for past a quarter round; the honest miners join alone.
    advance_to(market.w3, chain.task(task_id).schedule.merge_due(1))
    join_and_train(market, range(2))
    advance_to(market.w3, midpoint(market, 1))
    assert all(m.submit_round(task_id) is not None for m in market.miners)
    assert market.end_round(1) == [  # opened and scored, but one epoch does not beat the base
        "round 1, base 1: the mean of 2 updates scores 41, below its base's 48: not posted, and "
        "the next round builds on the base again"
    ]

    market.reveal()
    evaluator.step(task_id)
    report = evaluator.evaluate(task_id)
    deposits = {p.account: p.deposits for p in report.payouts}
    # Each honest miner: its update's deposit, its round-1 join (followed by a submission that
    # counted) and its round-0 join (kept out of the group): three deposits.
    assert [deposits[m.address] for m in market.miners] == [3 * DEPOSIT, 3 * DEPOSIT]
    assert not set(spammers) & set(deposits)  # the spam joins are forfeited
    task = chain.task(task_id)
    assert (task.join_count, task.escrow) == (6, BOUNTY + 9 * DEPOSIT)
    assert task.escrow - task.payout_total >= 2 * DEPOSIT  # the forfeits stay for the sponsor
    assert verify_task(chain, market.store, task_id, market.chain_id).ok
