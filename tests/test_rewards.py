"""The reward rule: exact payouts for hand-computed trees, and its invariants on random ones."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.crypto import payout_tree, verify_proof
from marketplace.errors import DagError
from marketplace.merge import Candidate, merge_round
from marketplace.messages import (
    DataSchema,
    Metric,
    NodeKind,
    NodeRecord,
    Payout,
    RewardSplit,
    Score,
    TaskSpec,
)
from marketplace.rewards import (
    BPS,
    aggregate_shares,
    apportion,
    compute_payouts,
    find_winner,
    node_gains,
    payout_leaves,
)

FAST = settings(max_examples=150, deadline=None, derandomize=True)
ETHER = 10**18


def account(n: int) -> str:
    return to_checksum_address(f"0x{n:02x}" + "5e" * 19)


SCIENTIST, M1, M2, M3, M4, EVALUATOR = (account(n) for n in (0x10, 0x21, 0x32, 0x43, 0x54, 0xE0))


def node(
    node_id: int, kind: NodeKind, author: str, parents: tuple[int, ...], samples: int = 0
) -> NodeRecord:
    return NodeRecord(
        task_id=1,
        node_id=node_id,
        kind=kind,
        author=author,
        parents=parents,
        round=0,
        samples=samples,
        digest=bytes(32),
        cid=f"node-{node_id}",
        block_number=node_id,
    )


def arch(node_id: int, author: str) -> NodeRecord:
    return node(node_id, NodeKind.ARCHITECTURE, author, (0,))


def update(node_id: int, author: str, parent: int, samples: int) -> NodeRecord:
    return node(node_id, NodeKind.UPDATE, author, (parent,), samples)


def merge(node_id: int, parents: tuple[int, ...], samples: int = 0) -> NodeRecord:
    return node(node_id, NodeKind.MERGE, EVALUATOR, parents, samples)


def spec(expertise: int, data: int, compute: int, max_samples: int = 1_000_000) -> TaskSpec:
    return TaskSpec(
        name="digits",
        metric=Metric.ACCURACY,
        data=DataSchema(num_features=64, num_classes=10),
        split=RewardSplit(expertise_bps=expertise, data_bps=data, compute_bps=compute),
        max_samples_credited=max_samples,
    )


def valid(values: Mapping[int, int], invalid: Mapping[int, str] | None = None) -> dict[int, Score]:
    """Scores: every node in `values` valid with that value, those in `invalid` not."""
    scores = {i: Score(node_id=i, valid=True, value=v) for i, v in values.items()}
    for i, reason in (invalid or {}).items():
        scores[i] = Score(node_id=i, valid=False, reason=reason)
    return scores


def by_account(payouts: Sequence[Payout]) -> dict[str, Payout]:
    return {p.account: p for p in payouts}


def owed(payouts: Sequence[Payout], account: str) -> Payout:
    """The payout of `account`, or an empty one if it is owed nothing."""
    return by_account(payouts).get(account, Payout(account=account, amount=0, points=0))


# ------------------------------------------------------------------ DESIGN.md's scenario


def design_scenario() -> tuple[list[NodeRecord], dict[int, Score], dict[int, dict[int, int]]]:
    """One architecture, four updates, a merge that keeps three, a second round and its merge.

    Round 0 builds on the architecture (1): M4's update (5) hurts and is left out of merge 6.
    Round 1 builds on merge 6: M4 resubmits a copy of it (10, no update, so invalid).
    """
    nodes = [
        arch(1, SCIENTIST),
        update(2, M1, 1, 100),
        update(3, M2, 1, 200),
        update(4, M3, 1, 300),
        update(5, M4, 1, 400),
        merge(6, (2, 3, 4), 600),
        update(7, M1, 6, 100),
        update(8, M2, 6, 200),
        update(9, M3, 6, 300),
        update(10, M4, 6, 400),
        merge(11, (7, 8, 9), 600),
    ]
    values = {1: 50, 2: 400, 3: 300, 4: 450, 5: 40, 6: 700, 7: 720, 8: 690, 9: 710, 11: 760}
    scores = valid(values, {10: "no update"})
    loo = {6: {2: 600, 3: 650, 4: 550}, 11: {7: 750, 8: 760, 9: 730}}
    return nodes, scores, loo


def test_design_scenario_pays_exact_wei() -> None:
    nodes, scores, loo = design_scenario()
    bounty, deposit = 10 * ETHER, ETHER // 100

    payouts = compute_payouts(
        nodes, scores, loo, {1: 1000}, spec(2000, 5000, 2000, 250), bounty, deposit
    )

    # Gains: 2: 350, 3: 250, 4: 400, 5: 0 (below its parent); 7: 20, 8: 0, 9: 10.
    # Merge 6 gains 700 - 450 = 250, split by leave-one-out 100:50:150 -> 83, 41, 125.
    # Merge 11 gains 760 - 720 = 40, split 10:0:30 -> 10, 0, 30.
    # Credited: M1 350+83+20+10 = 463, M2 250+41 = 291, M3 400+125+10+30 = 565 (of 1319).
    # Data 5 ETH x credited / 1319, floored. Compute 2 ETH by FLOPs, samples capped at 250:
    # M1 100+100, M2 200+200, M3 250+250 -> 2:4:5. Expertise 2 ETH to the scientist.
    # Deposits: every valid submission; 10 (a copy) forfeits. The evaluator gets nothing.
    assert payouts == [
        Payout(
            account=SCIENTIST,
            amount=2 * ETHER + deposit,
            points=0,
            expertise=2 * ETHER,
            deposits=deposit,
        ),
        Payout(
            account=M1,
            amount=1_755_117_513_267_626_990 + 363_636_363_636_363_636 + 2 * deposit,
            points=463,
            data=1_755_117_513_267_626_990,
            compute=363_636_363_636_363_636,
            deposits=2 * deposit,
        ),
        Payout(
            account=M2,
            amount=1_103_108_415_466_262_319 + 727_272_727_272_727_272 + 2 * deposit,
            points=291,
            data=1_103_108_415_466_262_319,
            compute=727_272_727_272_727_272,
            deposits=2 * deposit,
        ),
        Payout(
            account=M3,
            amount=2_141_774_071_266_110_689 + 909_090_909_090_909_090 + 2 * deposit,
            points=565,
            data=2_141_774_071_266_110_689,
            compute=909_090_909_090_909_090,
            deposits=2 * deposit,
        ),
        Payout(account=M4, amount=deposit, points=0, deposits=deposit),
    ]
    # The sponsor reclaims the unsplit 10%, 4 wei of dust and the copy's forfeited deposit.
    escrow = bounty + 9 * deposit
    assert escrow - sum(p.amount for p in payouts) == ETHER + 4 + deposit


def test_design_scenario_leaves_build_a_tree_whose_proofs_verify() -> None:
    nodes, scores, loo = design_scenario()
    payouts = compute_payouts(nodes, scores, loo, {1: 1000}, spec(2000, 5000, 2000), ETHER, 10)

    leaves = payout_leaves(payouts)
    tree = payout_tree(leaves)

    assert [leaf.index for leaf in leaves] == list(range(len(payouts)))
    assert [(leaf.account, leaf.amount, leaf.points) for leaf in leaves] == [
        (p.account, p.amount, p.points) for p in payouts
    ]
    assert all(verify_proof(tree.proof(i), tree.root, leaf.hash()) for i, leaf in enumerate(leaves))


def test_design_scenario_gains_and_winner() -> None:
    nodes, scores, _ = design_scenario()

    assert find_winner(nodes, scores) == 11
    assert node_gains(nodes, scores) == {
        1: 0,
        2: 350,
        3: 250,
        4: 400,
        5: 0,
        6: 250,
        7: 20,
        8: 0,
        9: 10,
        10: 0,
        11: 40,
    }


# ------------------------------------------------------------------ smaller hand examples


def test_merge_gain_falls_back_to_declared_samples_when_every_leave_one_out_is_zero() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 1), update(3, M2, 1, 3), merge(4, (2, 3))]
    scores = valid({1: 10, 2: 10, 3: 10, 4: 30})
    loo = {4: {2: 30, 3: 30}}

    payouts = compute_payouts(nodes, scores, loo, {1: 1}, spec(0, BPS, 0), 1000, 0)

    # Gain 30 - 10 = 20, split 1:3 by samples -> 5 and 15; data 1000 x 5/20 and x 15/20.
    assert payouts == [
        Payout(account=M1, amount=250, points=5, data=250),
        Payout(account=M2, amount=750, points=15, data=750),
    ]


def test_without_gain_among_the_winners_ancestors_the_data_share_stays_with_the_sponsor() -> None:
    # Every update scores below the architecture, so the architecture wins and nothing gained.
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 10), update(3, M2, 2, 10)]
    scores = valid({1: 90, 2: 80, 3: 85})

    payouts = compute_payouts(nodes, scores, {}, {1: 7}, spec(1000, 6000, 3000), 10_000, 5)

    # 3 gained 5 over 2, so it earns compute, but it is not an ancestor of the winner.
    assert payouts == [
        Payout(account=SCIENTIST, amount=1000 + 5, points=0, expertise=1000, deposits=5),
        Payout(account=M1, amount=5, points=0, deposits=5),
        Payout(account=M2, amount=3000 + 5, points=0, compute=3000, deposits=5),
    ]


def test_ties_go_to_the_earliest_node() -> None:
    nodes = [arch(1, SCIENTIST), arch(2, M1), update(3, M2, 2, 1)]
    scores = valid({1: 70, 2: 60, 3: 70})

    payouts = by_account(compute_payouts(nodes, scores, {}, {1: 1, 2: 1}, spec(BPS, 0, 0), 100, 0))

    assert find_winner(nodes, scores) == 1
    assert payouts[SCIENTIST].expertise == 100
    assert M1 not in payouts


def test_an_invalid_node_cannot_win_and_the_best_valid_one_does() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 1), update(3, M2, 1, 1)]
    scores = valid({1: 10, 3: 20}, {2: "non-finite"})

    assert find_winner(nodes, scores) == 3
    assert find_winner(nodes, valid({}, {1: "x", 2: "x", 3: "x"})) is None


def test_a_gain_over_an_invalid_parent_is_not_credited() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 1), update(3, M2, 2, 1)]
    scores = valid({1: 10, 3: 90}, {2: "undecryptable"})

    assert node_gains(nodes, scores)[3] == 0


def test_authors_are_matched_and_returned_in_checksum_form() -> None:
    nodes = [arch(1, SCIENTIST.lower()), update(2, M1.lower(), 1, 1), update(3, M1, 1, 1)]
    scores = valid({1: 10, 2: 20, 3: 30})

    payouts = compute_payouts(nodes, scores, {}, {1: 1}, spec(0, BPS, 0), 100, 1)

    assert [p.account for p in payouts] == [SCIENTIST, M1]
    assert by_account(payouts)[M1] == Payout(
        account=M1, amount=102, points=20, data=100, deposits=2
    )


def test_accounts_are_sorted_by_address_value() -> None:
    high, low = to_checksum_address("0x" + "ab" * 20), to_checksum_address("0x" + "0c" * 20)
    nodes = [arch(1, high), arch(2, low)]

    payouts = compute_payouts(nodes, valid({1: 1, 2: 0}), {}, {}, spec(0, 0, 0), 0, 1)

    assert [p.account for p in payouts] == [low, high]


def test_apportion_floors_and_leaves_the_dust_unpaid() -> None:
    assert apportion(10, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 3, "c": 3}
    assert apportion(10, {"a": 0, "b": 2}) == {"b": 10}
    assert apportion(10, {"a": 0}) == {}
    with pytest.raises(ValueError):
        apportion(-1, {"a": 1})


# ------------------------------------------------------------------ inconsistent input


def base_tree() -> tuple[list[NodeRecord], dict[int, Score]]:
    return [arch(1, SCIENTIST), update(2, M1, 1, 1)], valid({1: 1, 2: 2})


def payouts_of(
    nodes: Sequence[NodeRecord],
    scores: Mapping[int, Score],
    loo: Mapping[int, Mapping[int, int]] | None = None,
    flops: Mapping[int, int] | None = None,
) -> list[Payout]:
    flops = {1: 1} if flops is None else flops
    return compute_payouts(nodes, scores, loo or {}, flops, spec(3000, 3000, 3000), 10, 1)


@pytest.mark.parametrize(
    "extra",
    [
        update(3, M2, 9, 1),  # unknown parent
        update(2, M2, 1, 1),  # duplicate id
        node(3, NodeKind.UPDATE, M2, (1, 2)),  # an update with two parents
        node(3, NodeKind.UPDATE, M2, (0,)),  # an update of the root
        node(3, NodeKind.ARCHITECTURE, M2, (1,)),  # an architecture under a node
        node(3, NodeKind.MERGE, EVALUATOR, ()),  # a merge without parents
        node(3, NodeKind.MERGE, EVALUATOR, (2, 2)),  # a parent listed twice
        node(3, NodeKind.NONE, M2, (1,)),  # no kind
        update(3, "not an address", 1, 1),
        update(3, M2, 1, -1),
    ],
)
def test_an_inconsistent_tree_raises_dag_error(extra: NodeRecord) -> None:
    nodes, scores = base_tree()
    scores[3] = Score(node_id=3, valid=True, value=3)

    with pytest.raises(DagError):
        payouts_of([*nodes, extra], scores)


def test_a_cycle_raises_dag_error() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 3, 1), update(3, M2, 2, 1)]

    with pytest.raises(DagError, match="cycle"):
        payouts_of(nodes, valid({1: 1, 2: 2, 3: 3}))


def test_scores_that_do_not_match_the_tree_raise_dag_error() -> None:
    nodes, scores = base_tree()
    with pytest.raises(DagError):
        payouts_of(nodes, {**scores, 7: Score(node_id=7, valid=True)})
    with pytest.raises(DagError):
        payouts_of(nodes, {1: scores[1]})
    with pytest.raises(DagError):
        payouts_of(nodes, {1: scores[1], 2: Score(node_id=1, valid=True)})


def test_leave_one_out_scores_that_do_not_match_the_tree_raise_dag_error() -> None:
    nodes = [*base_tree()[0], merge(3, (2,))]
    scores = valid({1: 1, 2: 2, 3: 3})
    with pytest.raises(DagError):
        payouts_of(nodes, scores, {2: {1: 0}})  # not a merge
    with pytest.raises(DagError):
        payouts_of(nodes, scores, {3: {1: 0}})  # not a parent of the merge
    with pytest.raises(DagError):
        payouts_of(nodes, scores, {})  # a valid merge without its leave-one-out scores


def test_missing_flops_for_an_architecture_that_earns_compute_raise_dag_error() -> None:
    with pytest.raises(DagError):
        payouts_of(*base_tree(), flops={})


# ------------------------------------------------------------------ merge, then pay


def test_an_update_that_hurts_the_merge_and_a_copy_earn_nothing_from_it() -> None:
    target = np.array([1.0, 1.0])

    def score(weights: Mapping[str, npt.NDArray[np.float32]]) -> int:
        return round(-1000 * float(np.sum((weights["w"] - target) ** 2)))

    parent = {"w": np.zeros(2, np.float32)}
    trained = {
        2: (M1, [2.5, 0.0]),  # alone below the parent; with 3, a gain
        3: (M2, [0.0, 2.5]),
        4: (M3, [-10.0, -10.0]),  # poison
        5: (M4, [0.0, 0.0]),  # a copy of the parent
    }
    candidates = [
        Candidate(i, {"w": np.array(v, np.float32)}, 10, parent) for i, (_, v) in trained.items()
    ]
    result = merge_round(candidates, score, 1e-6, base_score=score(parent))
    nodes = [
        arch(1, SCIENTIST),
        *(update(i, author, 1, 10) for i, (author, _) in trained.items()),
        merge(6, result.kept),
    ]
    values = {i: score(c.weights) for i, c in enumerate(candidates, start=2) if i != 5}
    scores = valid({1: score(parent), 6: result.score, **values}, {5: "no update"})

    payouts = by_account(
        compute_payouts(
            nodes, scores, {6: result.loo_scores}, {1: 1}, spec(1, 5000, 4000), 10**6, 7
        )
    )

    assert result.kept == (2, 3)
    assert payouts[M3] == Payout(account=M3, amount=7, points=0, deposits=7)
    assert M4 not in payouts
    assert payouts[M1].data == payouts[M2].data > 0
    assert payouts[M1].compute == payouts[M2].compute > 0


# ------------------------------------------------------------------ invariants on random trees


@dataclass(frozen=True)
class Case:
    nodes: list[NodeRecord]
    scores: dict[int, Score]
    loo: dict[int, dict[int, int]]
    flops: dict[int, int]
    spec: TaskSpec
    bounty: int
    deposit: int

    def payouts(self) -> list[Payout]:
        return compute_payouts(
            self.nodes, self.scores, self.loo, self.flops, self.spec, self.bounty, self.deposit
        )


ACCOUNTS = [account(n) for n in (0x10, 0x21, 0x32, 0x43)]
PROBE = account(0xF0)  # an author with a single node, added by some tests


@st.composite
def cases(draw: st.DrawFn) -> Case:
    nodes: list[NodeRecord] = []
    authors = st.sampled_from(ACCOUNTS)
    for node_id in range(1, draw(st.integers(1, 2)) + 1):
        nodes.append(arch(node_id, draw(authors)))
    for node_id in range(len(nodes) + 1, len(nodes) + draw(st.integers(0, 10)) + 1):
        updates = [n.node_id for n in nodes if n.kind == NodeKind.UPDATE]
        if updates and draw(st.integers(0, 2)) == 0:
            # Mostly the round's updates, as `merge_round` posts; sometimes any earlier node.
            pool = updates if draw(st.integers(0, 3)) else list(range(1, node_id))
            parents = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
            nodes.append(merge(node_id, tuple(sorted(parents)), draw(st.integers(0, 10**4))))
        else:
            parent = draw(st.integers(1, node_id - 1))
            nodes.append(update(node_id, draw(authors), parent, draw(st.integers(0, 10**4))))
    scores = {
        n.node_id: Score(
            node_id=n.node_id, valid=draw(st.integers(0, 5)) > 0, value=draw(st.integers(0, 60))
        )
        for n in nodes
    }
    loo = {
        n.node_id: {p: draw(st.integers(0, 60)) for p in n.parents}
        for n in nodes
        if n.kind == NodeKind.MERGE
    }
    flops = {
        n.node_id: draw(st.integers(0, 10**6)) for n in nodes if n.kind == NodeKind.ARCHITECTURE
    }
    e = draw(st.integers(0, BPS))
    d = draw(st.integers(0, BPS - e))
    c = draw(st.integers(0, BPS - e - d))
    task = spec(e, d, c, draw(st.integers(1, 10**4)))
    bounty, deposit = draw(st.integers(0, 10**24)), draw(st.integers(0, 10**18))
    return Case(nodes, scores, loo, flops, task, bounty, deposit)


def submissions(case: Case, valid_only: bool) -> int:
    return sum(
        1
        for n in case.nodes
        if n.kind != NodeKind.MERGE and (case.scores[n.node_id].valid or not valid_only)
    )


@FAST
@given(cases())
def test_the_total_never_exceeds_the_split_bounty_plus_refunded_deposits(case: Case) -> None:
    payouts = case.payouts()

    split = case.spec.split
    refunded = case.deposit * submissions(case, valid_only=True)
    rewards = sum(p.expertise + p.data + p.compute for p in payouts)
    assert all(p.amount == p.expertise + p.data + p.compute + p.deposits for p in payouts)
    assert sum(p.deposits for p in payouts) == refunded
    assert (
        rewards <= case.bounty * (split.expertise_bps + split.data_bps + split.compute_bps) // BPS
    )
    assert sum(p.amount for p in payouts) <= case.bounty + case.deposit * submissions(case, False)
    assert sum(p.expertise for p in payouts) <= case.bounty * split.expertise_bps // BPS
    assert sum(p.data for p in payouts) <= case.bounty * split.data_bps // BPS
    assert sum(p.compute for p in payouts) <= case.bounty * split.compute_bps // BPS


@FAST
@given(cases())
def test_the_sponsor_keeps_what_is_not_earned(case: Case) -> None:
    payouts = case.payouts()

    split = case.spec.split
    forfeited = case.deposit * (submissions(case, False) - submissions(case, True))
    reclaimed = (
        case.bounty + case.deposit * submissions(case, False) - sum(p.amount for p in payouts)
    )
    assert (
        reclaimed
        >= forfeited
        + case.bounty * (BPS - split.expertise_bps - split.data_bps - split.compute_bps) // BPS
    )
    if sum(p.points for p in payouts) == 0:  # no gain among the winner's ancestors
        assert all(p.data == 0 for p in payouts)
    if find_winner(case.nodes, case.scores) is None:
        assert all(p.expertise == p.data == p.points == 0 for p in payouts)
    # Points are the credited gains and the data share follows them.
    assert all(p.data == 0 for p in payouts if p.points == 0)
    assert [p.account for p in payouts] == sorted(
        (p.account for p in payouts), key=lambda a: int(a, 16)
    )


@FAST
@given(cases(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_the_order_nodes_are_listed_in(
    case: Case, rng: random.Random
) -> None:
    shuffled = list(case.nodes)
    rng.shuffle(shuffled)

    assert replace(case, nodes=shuffled).payouts() == case.payouts()


@FAST
@given(cases(), st.data())
def test_an_update_without_gain_or_leave_one_out_share_earns_no_data_share(
    case: Case, data: Any
) -> None:
    # A probe update that scores no better than its parent; then a merge that keeps it with a
    # zero leave-one-out weight while another parent has a positive one.
    node_id = len(case.nodes) + 1
    parent = data.draw(st.integers(1, len(case.nodes)))
    ceiling = case.scores[parent].value
    probe = update(node_id, PROBE, parent, data.draw(st.integers(0, 10**4)))
    probe_score = Score(node_id=node_id, valid=True, value=data.draw(st.integers(0, ceiling)))
    case = replace(case, nodes=[*case.nodes, probe], scores={**case.scores, node_id: probe_score})

    alone = owed(case.payouts(), PROBE)
    assert (alone.expertise, alone.data, alone.compute, alone.points) == (0, 0, 0, 0)
    assert alone.deposits == case.deposit

    others = [
        n.node_id
        for n in case.nodes
        if n.kind == NodeKind.UPDATE and n.node_id != node_id and case.scores[n.node_id].valid
    ]
    if others:
        other = data.draw(st.sampled_from(others))
        merged = merge(node_id + 1, tuple(sorted((other, node_id))))
        top = max(s.value for s in case.scores.values()) + 1 + data.draw(st.integers(0, 5))
        kept = replace(
            case,
            nodes=[*case.nodes, merged],
            scores={**case.scores, node_id + 1: Score(node_id=node_id + 1, valid=True, value=top)},
            loo={**case.loo, node_id + 1: {other: 0, node_id: top}},
        )
        payout = owed(kept.payouts(), PROBE)
        assert payout.data == payout.points == 0
        assert payout.deposits == case.deposit


@FAST
@given(cases(), st.data())
def test_a_copy_of_its_parent_earns_nothing_not_even_its_deposit(case: Case, data: Any) -> None:
    node_id = len(case.nodes) + 1
    parent = data.draw(st.integers(1, len(case.nodes)))
    copy = update(node_id, PROBE, parent, data.draw(st.integers(0, 10**4)))
    verdict = Score(
        node_id=node_id, valid=False, value=case.scores[parent].value, reason="no update"
    )
    case = replace(case, nodes=[*case.nodes, copy], scores={**case.scores, node_id: verdict})

    assert PROBE not in by_account(case.payouts())


@FAST
@given(
    st.integers(0, 50),
    st.integers(0, 100),
    st.integers(0, 10**4),
    st.integers(1, 10**6),
    st.integers(0, 10**20),
    st.booleans(),
)
def test_permuting_submission_order_among_equal_scores_changes_only_the_tie_break(
    arch_score: int, update_score: int, samples: int, flops: int, bounty: int, swap: bool
) -> None:
    # Two identical lineages (architecture -> update) by different people, submitted in either
    # order: whichever came first wins the tie, and the payouts are the same up to who is who.
    s1, s2, m1, m2 = ACCOUNTS

    def payouts(first: tuple[str, str], second: tuple[str, str]) -> dict[str, Payout]:
        nodes = [
            arch(1, first[0]),
            arch(2, second[0]),
            update(3, first[1], 1, samples),
            update(4, second[1], 2, samples),
        ]
        scores = valid({1: arch_score, 2: arch_score, 3: update_score, 4: update_score})
        result = compute_payouts(
            nodes, scores, {}, {1: flops, 2: flops}, spec(3000, 4000, 2000), bounty, 1
        )
        return by_account(result)

    before = payouts((s1, m1), (s2, m2))
    after = payouts((s2, m2), (s1, m1))
    rename = {s1: s2, s2: s1, m1: m2, m2: m1}

    assert {
        rename[a]: p.model_copy(update={"account": rename[a]}) for a, p in after.items()
    } == before
    if update_score > arch_score and bounty >= BPS:
        assert before[m1].data > 0
        assert before[m2].data == 0
    assert before[s1].expertise == bounty * 3000 // BPS and before[s2].expertise == 0


def test_an_aggregate_merges_gain_is_shared_by_declared_samples_up_to_the_cap() -> None:
    nodes = {
        1: node(1, NodeKind.ARCHITECTURE, "s", (0,)),
        2: node(2, NodeKind.UPDATE, "a", (1,), samples=300),
        3: node(3, NodeKind.UPDATE, "b", (1,), samples=100),
        4: node(4, NodeKind.UPDATE, "c", (1,), samples=5_000_000),  # declares far too much
    }
    merge = node(5, NodeKind.MERGE, "e", (1, 2, 3, 4))
    # Capped at 600: weights 300, 100, 600 of 1,000; the architecture parent gets nothing.
    assert aggregate_shares(merge, 1001, nodes, cap=600) == {2: 300, 3: 100, 4: 600}
    assert sum(aggregate_shares(merge, 1001, nodes, cap=600).values()) == 1000  # 1 unit of dust
    assert aggregate_shares(merge, 0, nodes, cap=600) == {2: 0, 3: 0, 4: 0}
    with pytest.raises(ValueError, match="cap must be positive"):
        aggregate_shares(merge, 10, nodes, cap=0)
