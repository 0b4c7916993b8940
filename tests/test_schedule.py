"""The round schedule and the round race (issue 14, attack 12): a miner polling every 2 s is
first into round r, before the evaluators can post round r - 1's merge; it must wait for that
merge (a bounded wait: the merge window) instead of building on an older node."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from marketplace.dev.devchain import advance_to, now
from marketplace.protocol.tasks import nodes_by_id
from marketplace.rules.messages import NodeKind, Phase
from marketplace.rules.phases import PhaseTimes
from marketplace.rules.schedule import RoundSchedule
from tests.market import ROUND, Market, new_market

POLL = 2  # seconds of chain time between two looks, the miner's default


# ------------------------------------------------------------------ the arithmetic


def test_round_schedule_boundaries_are_exact_to_the_second() -> None:
    schedule = RoundSchedule(start=1_000, duration=3_601, rounds=2)  # odd: divisions round down

    assert [schedule.opens(r) for r in range(3)] == [1_000, 4_601, 8_202]
    assert [schedule.closes(r) for r in range(2)] == [4_601, 8_202]
    assert schedule.end == 8_202
    assert [schedule.merge_due(r) for r in range(2)] == [1_900, 5_501]  # + 3601 // 4
    assert [schedule.midpoint(r) for r in range(2)] == [2_800, 6_401]  # + 3601 // 2
    assert [schedule.round_at(t) for t in (999, 1_000, 4_600, 4_601, 8_201, 8_202)] == [
        None,
        0,
        0,
        1,
        1,
        None,
    ]
    assert [list(schedule.closed(t)) for t in (0, 999, 4_600, 4_601, 8_201, 8_202, 10**9)] == [
        [],
        [],
        [],
        [0],
        [0],
        [0, 1],
        [0, 1],
    ]
    window = [(r, t) for r in range(2) for t in (4_600, 4_601, 5_500, 5_501)]
    assert [schedule.in_merge_window(r, t) for r, t in window] == [
        *[False] * 4,  # round 0 waits for no merge
        False,
        True,
        True,
        False,
    ]


def test_phase_times_decide_the_phase_in_the_contracts_order_to_the_second() -> None:
    times = PhaseTimes(
        schedule=RoundSchedule(start=1_000, duration=100, rounds=2),  # the rounds end at 1,200
        reveal_window=50,
        evaluation_window=60,
        claim_window=70,
        cancelled=False,
        revealed_at=None,
        agreed_at=None,
        finalized_at=None,
    )
    assert [times.phase_at(t) for t in (0, 1_199, 1_200, 1_249, 1_250)] == [
        Phase.ROUNDS,
        Phase.ROUNDS,
        Phase.REVEAL,
        Phase.REVEAL,
        Phase.UNREVEALED,
    ]
    revealed = replace(times, revealed_at=1_210)  # the evaluation window runs from the reveal
    assert [revealed.phase_at(t) for t in (1_210, 1_269, 1_270)] == [
        Phase.EVALUATION,
        Phase.EVALUATION,
        Phase.UNSETTLED,
    ]
    agreed = replace(revealed, agreed_at=1_260)
    assert agreed.phase_at(10**9) == Phase.CHALLENGE  # until someone finalizes
    final = replace(agreed, finalized_at=1_400)  # claims run from the finalize, not the agreement
    assert [final.phase_at(t) for t in (1_400, 1_469, 1_470)] == [
        Phase.CLAIMS,
        Phase.CLAIMS,
        Phase.CLOSED,
    ]
    assert replace(times, cancelled=True).phase_at(1_100) == Phase.CANCELLED


def test_the_schedule_agrees_with_the_contracts_current_round(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    market.create(rounds=2)
    schedule = market.chain.task(market.task_id).schedule
    assert schedule.duration == ROUND and schedule.rounds == 2

    for moment in (schedule.closes(0) - 1, schedule.closes(0), schedule.end - 1):
        advance_to(market.w3, moment)
        assert market.chain.current_round(market.task_id) == schedule.round_at(moment)


# ------------------------------------------------------------------ the race


def _market(tmp_path: Path, evaluators: int = 1) -> tuple[Market, int]:
    market = new_market(tmp_path)
    accounts = [market.evaluator_account, market.keys[3]][:evaluators]
    market.create(rounds=2, evaluators=accounts, quorum=evaluators)
    arch = market.propose()
    for account in accounts:
        market.make_evaluator(account)
    market.add_miners(2, epochs=1)
    return market, arch


def _round_zero(market: Market, said: list[str]) -> None:
    for miner in market.miners:
        miner._pass(market.task_id, said.append)
    assert [line.split(" (")[0] for line in said] == [
        "round 0: submitted node 2",
        "round 0: submitted node 3",
    ]
    said.clear()


def _updates_of_round(market: Market, round_index: int) -> list[tuple[int, int]]:
    """(node id, parent) of the round's updates."""
    return [
        (record.node_id, record.parents[0])
        for record in nodes_by_id(market.chain, market.task_id).values()
        if record.kind is NodeKind.UPDATE and record.round == round_index
    ]


def test_a_miner_first_into_round_one_waits_and_builds_on_round_zeros_merge(
    tmp_path: Path,
) -> None:
    market, _ = _market(tmp_path)
    evaluator, task_id = market.evaluator, market.task_id
    assert evaluator is not None
    schedule = market.chain.task(task_id).schedule
    said: list[str] = []
    _round_zero(market, said)

    # Both roles poll every 2 s of chain time; the miners look first, as a round opens.
    advance_to(market.w3, schedule.closes(0) - POLL)
    evaluated: list[list[str]] = []
    while len(_updates_of_round(market, 1)) < 2 and now(market.w3) < schedule.merge_due(1):
        for miner in market.miners:
            miner._pass(task_id, said.append)
        evaluated.append(evaluator.step(task_id))
        advance_to(market.w3, now(market.w3) + POLL)

    assert evaluated[0] == []  # round 0 still open: the contract takes no merge yet
    (posted,) = evaluated[1]  # at the close, the first look posts it
    merge = int(re.findall(r"posted merge (\d+)", posted)[0])
    assert evaluated[2:] == [[]]  # three looks: the miners trained one poll after the merge
    waiting = f"round 1: waiting for round 0's merge (until {schedule.merge_due(1)})"
    assert said[:2] == [waiting, waiting]  # one line each, not one per poll
    assert [line.split(" (")[0] for line in said[2:]] == [
        f"round 1: submitted node {merge + 1}",
        f"round 1: submitted node {merge + 2}",
    ]
    assert _updates_of_round(market, 1) == [(merge + 1, merge), (merge + 2, merge)]


def test_without_a_merge_the_miner_waits_out_the_window_then_builds_on_the_architecture(
    tmp_path: Path,
) -> None:
    market, arch = _market(tmp_path)  # no evaluator ever steps: no merge is posted
    task_id, miner = market.task_id, market.miners[0]
    schedule = market.chain.task(task_id).schedule
    said: list[str] = []
    _round_zero(market, said)

    for moment in (schedule.closes(0), schedule.merge_due(1) - 1):
        advance_to(market.w3, moment)
        assert miner._pass(task_id, said.append) is False
        assert _updates_of_round(market, 1) == []
    advance_to(market.w3, schedule.merge_due(1))
    miner._pass(task_id, said.append)

    assert said[0] == f"round 1: waiting for round 0's merge (until {schedule.merge_due(1)})"
    assert said[1].startswith(f"round 1: submitted node 4 (parent {arch}, ")
    assert len(said) == 2
    record = nodes_by_id(market.chain, task_id)[4]
    assert (record.round, record.parents, record.author) == (1, (arch,), miner.address)
    assert now(market.w3) < schedule.closes(1)


def test_a_merge_short_of_the_quorum_is_not_waited_on_past_the_window(tmp_path: Path) -> None:
    market, arch = _market(tmp_path, evaluators=2)  # quorum 2; only the first evaluator runs
    evaluator, task_id, miner = market.evaluator, market.task_id, market.miners[0]
    assert evaluator is not None
    schedule = market.chain.task(task_id).schedule
    said: list[str] = []
    _round_zero(market, said)
    advance_to(market.w3, schedule.closes(0))
    (posted,) = evaluator.step(task_id)
    merge = int(re.findall(r"posted merge (\d+)", posted)[0])

    advance_to(market.w3, schedule.merge_due(1) - 1)
    miner._pass(task_id, said.append)
    assert _updates_of_round(market, 1) == []  # posted, but one confirmation of two
    advance_to(market.w3, schedule.merge_due(1))
    miner._pass(task_id, said.append)

    assert said[0] == f"round 1: waiting for round 0's merge (until {schedule.merge_due(1)})"
    assert _updates_of_round(market, 1) == [(merge + 1, arch)]


def test_a_miner_with_a_configured_parent_does_not_wait(tmp_path: Path) -> None:
    market, arch = _market(tmp_path)
    task_id, miner = market.task_id, market.miners[0]
    miner.config = replace(miner.config, parent=arch)
    said: list[str] = []
    _round_zero(market, said)
    advance_to(market.w3, market.chain.task(task_id).schedule.closes(0))

    miner._pass(task_id, said.append)

    assert [line.split(" (")[0] for line in said] == ["round 1: submitted node 4"]
    assert _updates_of_round(market, 1) == [(4, arch)]
