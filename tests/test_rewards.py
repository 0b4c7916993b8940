"""The reward rule: exact payouts for hand-computed trees, each gaming strategy run against it,
and its invariants on random ones."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.errors import DagError
from marketplace.rules.messages import (
    DataSchema,
    Metric,
    NodeKind,
    NodeRecord,
    Payout,
    RewardSplit,
    Score,
    TaskSpec,
)
from marketplace.rules.rewards import (
    BPS,
    CREDIT_SCALE,
    Evidence,
    apportion,
    compute_payouts,
    find_winner,
    node_gains,
)
from marketplace.rules.shapley import Coalition
from marketplace.wire.crypto import payout_leaves, payout_tree, verify_proof

FAST = settings(max_examples=150, deadline=None, derandomize=True)
ETHER = 10**18
CEILING = 1000  # the validation rows of these trees


def account(n: int) -> str:
    return to_checksum_address(f"0x{n:02x}" + "5e" * 19)


SCIENTIST, M1, M2, M3, M4, EVALUATOR = (account(n) for n in (0x10, 0x21, 0x32, 0x43, 0x54, 0xE0))


def node(
    node_id: int,
    kind: NodeKind,
    author: str,
    parents: tuple[int, ...],
    samples: int = 0,
    round_index: int = 0,
) -> NodeRecord:
    return NodeRecord(
        task_id=1,
        node_id=node_id,
        kind=kind,
        author=author,
        parents=parents,
        round=round_index,
        samples=samples,
        digest=bytes(32),
        cid=f"node-{node_id}",
        block_number=node_id,
    )


def arch(node_id: int, author: str) -> NodeRecord:
    return node(node_id, NodeKind.ARCHITECTURE, author, (0,))


def update(
    node_id: int, author: str, parent: int, samples: int, round_index: int = 0
) -> NodeRecord:
    return node(node_id, NodeKind.UPDATE, author, (parent,), samples, round_index)


def merge(node_id: int, parents: tuple[int, ...], round_index: int = 0) -> NodeRecord:
    return node(node_id, NodeKind.MERGE, EVALUATOR, parents, 0, round_index)


def spec(
    expertise: int, data: int, compute: int, max_samples: int = 1_000_000, **rule: int
) -> TaskSpec:
    return TaskSpec(
        name="digits",
        metric=Metric.ACCURACY,
        data=DataSchema(num_features=64, num_classes=10),
        split=RewardSplit(expertise_bps=expertise, data_bps=data, compute_bps=compute),
        max_samples_credited=max_samples,
        **rule,
    )


def valid(values: Mapping[int, int], invalid: Mapping[int, str] | None = None) -> dict[int, Score]:
    """Scores: every node in `values` valid with that value, those in `invalid` not."""
    scores = {i: Score(node_id=i, valid=True, value=v) for i, v in values.items()}
    for i, reason in (invalid or {}).items():
        scores[i] = Score(node_id=i, valid=False, reason=reason)
    return scores


def game(members: Sequence[int], value: Callable[[set[int]], int]) -> dict[Coalition, int]:
    """Every non-empty coalition of `members` valued by `value` (of the coalition as a set)."""
    return {
        subset: value(set(subset))
        for size in range(1, len(members) + 1)
        for subset in combinations(sorted(members), size)
    }


def by_account(payouts: Sequence[Payout]) -> dict[str, Payout]:
    return {p.account: p for p in payouts}


def owed(payouts: Sequence[Payout], account: str) -> Payout:
    """The payout of `account`, or an empty one if it is owed nothing."""
    return by_account(payouts).get(account, Payout(account=account, amount=0, points=0))


# ------------------------------------------------------------------ the design note's scenario


def design_scenario() -> tuple[list[NodeRecord], dict[int, Score], Evidence]:
    """One architecture (50 of 1,000 rows), two rounds of four miners.

    Round 0 starts at the architecture: M1, M2 and M3 add 250, 150 and 250 rows to any
    average they join (an additive game); M4's update (5) is left out, and merge 6 would
    score 690 with it: it hurts. Round 1 starts at merge 6 (700): M1 and M2 submit the same
    update (7, 8: either adds 40, both still 40), M3 adds 20; M4 resubmits merge 6 (10, no
    update: invalid). Merge 11 scores 760.
    """
    nodes = [
        arch(1, SCIENTIST),
        update(2, M1, 1, 100),
        update(3, M2, 1, 200),
        update(4, M3, 1, 300),
        update(5, M4, 1, 400),
        merge(6, (2, 3, 4)),
        update(7, M1, 6, 100, 1),
        update(8, M2, 6, 200, 1),
        update(9, M3, 6, 300, 1),
        update(10, M4, 6, 400, 1),
        merge(11, (7, 8, 9), 1),
    ]
    values = {1: 50, 2: 300, 3: 200, 4: 300, 5: 40, 6: 700, 7: 740, 8: 740, 9: 720, 11: 760}
    round0 = {2: 250, 3: 150, 4: 250}
    coalitions = {
        6: game((2, 3, 4), lambda s: 50 + sum(round0[i] for i in s)),
        11: game((7, 8, 9), lambda s: 700 + (40 if s & {7, 8} else 0) + (20 if 9 in s else 0)),
    }
    evidence = Evidence(coalitions, added={5: 690}, flops_per_sample={1: 1000}, ceiling=CEILING)
    return nodes, valid(values, {10: "no update"}), evidence


def test_design_scenario_pays_exact_wei() -> None:
    nodes, scores, evidence = design_scenario()
    bounty, deposit = 10 * ETHER, ETHER // 100

    payouts = by_account(
        compute_payouts(nodes, scores, evidence, spec(2000, 5000, 2000, 250), bounty, deposit)
    )

    # Round 0 closed 650 of the 950 rows left; round 1, 60 of 300: credit in millionths.
    round0, round1 = 650 * CREDIT_SCALE // 950, 60 * CREDIT_SCALE // 300
    assert (round0, round1) == (684_210, 200_000)
    # Shapley values x 3!: 1500, 900, 1500 in round 0; the copies 7 and 8 split one value.
    points = {
        M1: round0 * 1500 // 3900 + round1 // 3,
        M2: round0 * 900 // 3900 + round1 // 3,
        M3: round0 * 1500 // 3900 + round1 // 3,
    }
    assert points == {M1: 329_823, M2: 224_560, M3: 329_823}
    total = sum(points.values())
    # Compute: each merge pays its 3 positive contributors' FLOPs per sample, each counted once
    # (equal weights: declared samples change nothing), split by Shapley value.
    flops = {
        M1: 3000 * 1500 // 3900 + 1000,
        M2: 3000 * 900 // 3900 + 1000,
        M3: 3000 * 1500 // 3900 + 1000,
    }
    for miner in (M1, M2, M3):
        assert payouts[miner].points == points[miner]
        assert payouts[miner].data == 5 * ETHER * points[miner] // total
        assert payouts[miner].compute == 2 * ETHER * flops[miner] // sum(flops.values())
        assert payouts[miner].deposits == 2 * deposit
    assert payouts[SCIENTIST] == Payout(
        account=SCIENTIST,
        amount=2 * ETHER + deposit,
        points=0,
        expertise=2 * ETHER,
        deposits=deposit,
    )
    assert M4 not in payouts  # its update hurt round 0 and its copy was no update: no deposit
    assert sum(p.amount for p in payouts.values()) <= bounty * 9000 // BPS + 7 * deposit


def test_design_scenario_leaves_build_a_tree_whose_proofs_verify() -> None:
    nodes, scores, evidence = design_scenario()
    payouts = compute_payouts(nodes, scores, evidence, spec(2000, 5000, 2000), 10 * ETHER, 1)

    leaves = payout_leaves(payouts)
    tree = payout_tree(leaves)

    assert [leaf.index for leaf in leaves] == list(range(len(payouts)))
    assert [(leaf.account, leaf.amount, leaf.points) for leaf in leaves] == [
        (p.account, p.amount, p.points) for p in payouts
    ]
    assert all(verify_proof(tree.proof(i), tree.root, leaf.hash()) for i, leaf in enumerate(leaves))


def test_design_scenario_gains_are_over_the_frontier_and_a_merge_wins() -> None:
    nodes, scores, _ = design_scenario()

    gains = node_gains(nodes, scores)

    # Round 1 updates are measured from merge 6 (700), whatever parent they name.
    assert gains == {1: 0, 2: 250, 3: 150, 4: 250, 5: 0, 6: 650, 7: 40, 8: 40, 9: 20, 10: 0, 11: 60}
    assert find_winner(nodes, scores) == 11


# ------------------------------------------------------------------ the attacks of issue 15


def two_rounds(extra: Sequence[NodeRecord], extra_scores: Mapping[int, int]) -> list[NodeRecord]:
    """Round 0: M1 and M2 (adding 200 and 100) merged into 4 (350); round 1 built on it."""
    return [
        arch(1, SCIENTIST),
        update(2, M1, 1, 100),
        update(3, M2, 1, 100),
        merge(4, (2, 3)),
        *extra,
    ]


ROUND0 = {4: game((2, 3), lambda s: 50 + (200 if 2 in s else 0) + (100 if 3 in s else 0))}


def test_a_rewind_copier_is_measured_from_the_frontier_and_cannot_win() -> None:
    # Round 1: M1 trains merge 4 (to 420); M3 copies merge 4, trains it a little and names the
    # architecture as parent; its update scores 470, above every merge. Merge 7 (M1 alone)
    # left it out: with it, merge 7 scores 400.
    nodes = two_rounds([update(5, M1, 4, 100, 1), update(6, M3, 1, 16, 1), merge(7, (5,), 1)], {})
    scores = valid({1: 50, 2: 250, 3: 150, 4: 350, 5: 420, 6: 470, 7: 420})
    evidence = Evidence({**ROUND0, 7: {(5,): 420}}, {6: 400}, {1: 1}, CEILING)

    payouts = by_account(compute_payouts(nodes, scores, evidence, spec(0, BPS, 0), 10**6, 7))

    assert node_gains(nodes, scores)[6] == 120  # over merge 4, not 420 over the architecture
    assert find_winner(nodes, scores) == 7
    # No credit; its deposit comes back (it did improve on the frontier on its own).
    assert payouts[M3] == Payout(account=M3, amount=7, points=0, deposits=7)
    noise = valid({1: 50, 2: 250, 3: 150, 4: 350, 5: 420, 6: 351, 7: 420})
    assert M3 not in by_account(compute_payouts(nodes, noise, evidence, spec(0, BPS, 0), 10**6, 7))


def test_sybil_copies_of_one_update_share_one_update_value() -> None:
    # Round 0: M1 adds 30; M2, M3 and M4 submit the same update, which adds 30 once.
    nodes = [
        arch(1, SCIENTIST),
        update(2, M1, 1, 100),
        update(3, M2, 1, 100),
        update(4, M3, 1, 100),
        update(5, M4, 1, 100),
        merge(6, (2, 3, 4, 5)),
    ]
    scores = valid({1: 100, 2: 130, 3: 130, 4: 130, 5: 130, 6: 160})
    table = game((2, 3, 4, 5), lambda s: 100 + (30 if 2 in s else 0) + (30 if s & {3, 4, 5} else 0))
    evidence = Evidence({6: table}, {}, {1: 1}, CEILING)

    payouts = by_account(compute_payouts(nodes, scores, evidence, spec(0, BPS, 0), 9 * 10**6, 0))

    sybils = [payouts[m].data for m in (M2, M3, M4)]
    assert sybils[0] == sybils[1] == sybils[2]
    assert abs(sum(sybils) - payouts[M1].data) <= 3  # three accounts, one update's worth


def test_declaring_more_samples_earns_nothing_more() -> None:
    def paid(declared: int) -> Payout:
        nodes = [
            arch(1, SCIENTIST),
            update(2, M1, 1, 300),
            update(3, M2, 1, declared),
            update(4, M3, 1, 500),
            merge(5, (2, 3, 4)),
        ]
        scores = valid({1: 100, 2: 150, 3: 120, 4: 150, 5: 220})
        gains = {2: 50, 3: 20, 4: 50}
        evidence = Evidence(
            {5: game((2, 3, 4), lambda s: 100 + sum(gains[i] for i in s))}, {}, {1: 9}, CEILING
        )
        return owed(compute_payouts(nodes, scores, evidence, spec(0, 6000, 4000), 10**9, 5), M2)

    honest, inflated = paid(30), paid(3_000_000)
    assert honest == inflated
    assert honest.data > 0 and honest.compute > 0


def test_a_free_riders_noise_copy_left_out_forfeits_its_deposit_and_earns_nothing() -> None:
    # M3 submits merge 4 plus noise in round 1 (scores 351): merge 7 of M1 and M2 left it out,
    # and with it merge 7 drops from 420 to 400.
    nodes = two_rounds(
        [
            update(5, M1, 4, 100, 1),
            update(6, M2, 4, 100, 1),
            update(8, M3, 4, 1_000_000, 1),
            merge(7, (5, 6), 1),
        ],
        {},
    )
    scores = valid({1: 50, 2: 250, 3: 150, 4: 350, 5: 400, 6: 380, 7: 420, 8: 351})
    table = game((5, 6), lambda s: 350 + (50 if 5 in s else 0) + (20 if 6 in s else 0))
    evidence = Evidence({**ROUND0, 7: table}, {8: 400}, {1: 1}, CEILING)

    payouts = by_account(compute_payouts(nodes, scores, evidence, spec(0, 5000, 5000), 10**9, 7))

    assert M3 not in payouts
    assert payouts[M1].deposits == payouts[M2].deposits == 14
    # Neutral once added (419, within min_gain): left out, but its deposit comes back.
    lenient = replace(evidence, added={8: 419})
    kept = by_account(compute_payouts(nodes, scores, lenient, spec(0, 5000, 5000), 10**9, 7))
    assert (kept[M3].deposits, kept[M3].data, kept[M3].compute) == (7, 0, 0)


def test_an_update_that_hurts_only_alongside_others_earns_nothing_from_the_merge() -> None:
    # Merge 5 kept M2's junk (3): alone it adds 0, with M1's update it costs 10 rows.
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 1), update(3, M2, 1, 1), merge(5, (2, 3))]
    scores = valid({1: 100, 2: 160, 3: 100, 5: 150})
    evidence = Evidence({5: {(2,): 160, (3,): 100, (2, 3): 150}}, {}, {1: 1}, CEILING)

    payouts = by_account(compute_payouts(nodes, scores, evidence, spec(0, 5000, 5000), 10**6, 1))

    assert (payouts[M2].data, payouts[M2].compute, payouts[M2].points) == (0, 0, 0)
    assert payouts[M1].data == 250_000  # alone: the data pool (500,000) up to the 50% cap
    assert payouts[M1].compute == 500_000


def test_a_gain_under_min_gain_is_noise_and_credits_nobody() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 1), merge(3, (2,))]
    scores = valid({1: 100, 2: 101, 3: 101})
    evidence = Evidence({3: {(2,): 101}}, {}, {1: 1}, CEILING)

    payouts = by_account(compute_payouts(nodes, scores, evidence, spec(0, 5000, 5000), 10**6, 1))

    assert find_winner(nodes, scores) == 3
    assert payouts[M1] == Payout(account=M1, amount=1, points=0, deposits=1)
    bigger = spec(0, 5000, 5000, min_gain=1)
    assert owed(compute_payouts(nodes, scores, evidence, bigger, 10**6, 1), M1).data > 0


def test_no_account_takes_more_than_the_cap_of_the_data_pool() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 1), update(3, M2, 1, 1), merge(4, (2, 3))]
    scores = valid({1: 100, 2: 190, 3: 110, 4: 200})
    table = {(2,): 190, (3,): 110, (2, 3): 200}  # M1: 90 x 2! ... M2: 10 (additive)
    evidence = Evidence({4: table}, {}, {1: 1}, CEILING)

    def data(cap_bps: int) -> tuple[int, int]:
        task = spec(0, BPS, 0, max_account_share_bps=cap_bps)
        payouts = compute_payouts(nodes, scores, evidence, task, 10**6, 0)
        return owed(payouts, M1).data, owed(payouts, M2).data

    assert data(BPS) == (900_000, 100_000)
    assert data(5000) == (500_000, 100_000)  # the rest stays with the sponsor


def test_a_merge_short_of_the_quorum_neither_wins_nor_credits() -> None:
    nodes, scores, evidence = design_scenario()
    scores[11] = Score(node_id=11, valid=False, reason="unconfirmed: 1 of the 2 confirmations")

    payouts = by_account(compute_payouts(nodes, scores, evidence, spec(0, BPS, 0), 10**6, 0))

    assert find_winner(nodes, scores) == 6
    assert {m: payouts[m].points for m in (M1, M2, M3)} == {
        M1: 650 * CREDIT_SCALE // 950 * 1500 // 3900,
        M2: 650 * CREDIT_SCALE // 950 * 900 // 3900,
        M3: 650 * CREDIT_SCALE // 950 * 1500 // 3900,
    }


def test_ties_go_to_the_latest_merge_and_an_update_never_wins() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 1, 1), merge(3, (2,)), merge(4, (2,))]
    assert find_winner(nodes, valid({1: 5, 2: 99, 3: 7, 4: 7})) == 4  # a holding merge
    assert find_winner(nodes, valid({1: 5, 2: 99, 3: 8, 4: 7})) == 3
    assert find_winner(nodes[:2], valid({1: 5, 2: 99})) == 1
    assert find_winner(nodes[:2], valid({}, {1: "bad", 2: "bad"})) is None


def test_authors_are_matched_and_returned_in_checksum_form() -> None:
    nodes = [arch(1, SCIENTIST.lower()), update(2, M1.lower(), 1, 1), merge(3, (2,))]
    scores = valid({1: 10, 2: 20, 3: 20})
    evidence = Evidence({3: {(2,): 20}}, {}, {1: 1}, CEILING)

    payouts = compute_payouts(nodes, scores, evidence, spec(0, BPS, 0), 100, 1)

    assert [p.account for p in payouts] == [SCIENTIST, M1]
    assert by_account(payouts)[M1] == Payout(
        account=M1, amount=51, points=10 * CREDIT_SCALE // 990, data=50, deposits=1
    )


def test_accounts_are_sorted_by_address_value() -> None:
    high, low = to_checksum_address("0x" + "ab" * 20), to_checksum_address("0x" + "0c" * 20)
    nodes = [arch(1, high), arch(2, low)]

    payouts = compute_payouts(nodes, valid({1: 1, 2: 0}), Evidence(ceiling=9), spec(0, 0, 0), 0, 1)

    assert [p.account for p in payouts] == [low, high]


def test_apportion_floors_and_leaves_the_dust_unpaid() -> None:
    assert apportion(10, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 3, "c": 3}
    assert apportion(10, {"a": 0, "b": 2}) == {"b": 10}
    assert apportion(10, {"a": 0}) == {}
    with pytest.raises(ValueError):
        apportion(-1, {"a": 1})


# ------------------------------------------------------------------ inconsistent input


def base_tree() -> tuple[list[NodeRecord], dict[int, Score]]:
    return [arch(1, SCIENTIST), update(2, M1, 1, 1), merge(3, (2,))], valid({1: 1, 2: 5, 3: 5})


def payouts_of(
    nodes: Sequence[NodeRecord], scores: Mapping[int, Score], evidence: Evidence | None = None
) -> list[Payout]:
    evidence = evidence or Evidence({3: {(2,): 5}}, {}, {1: 1}, CEILING)
    return compute_payouts(nodes, scores, evidence, spec(3000, 3000, 3000), 10, 1)


@pytest.mark.parametrize(
    "extra",
    [
        update(4, M2, 9, 1),  # unknown parent
        update(2, M2, 1, 1),  # duplicate id
        update(4, M2, 0, 1),  # an update of the root
        node(4, NodeKind.UPDATE, M2, (1, 2)),  # two parents
        node(4, NodeKind.ARCHITECTURE, M2, (2,)),  # an architecture under a node
        node(4, NodeKind.MERGE, EVALUATOR, ()),  # a merge of nothing
        node(4, NodeKind.MERGE, EVALUATOR, (2, 2)),  # a parent twice
        update(-1, M2, 1, 1),  # a non-positive id
        update(4, M2, 1, -5),  # negative samples
        update(4, "not an address", 1, 1),
    ],
)
def test_an_inconsistent_tree_raises_dag_error(extra: NodeRecord) -> None:
    nodes, scores = base_tree()
    scores[extra.node_id] = Score(node_id=extra.node_id, valid=True, value=1)
    with pytest.raises(DagError):
        payouts_of([*nodes, extra], scores)


def test_a_cycle_raises_dag_error() -> None:
    nodes = [arch(1, SCIENTIST), update(2, M1, 3, 1), update(3, M1, 2, 1)]
    with pytest.raises(DagError, match="cycle"):
        payouts_of(nodes, valid({1: 1, 2: 2, 3: 3}), Evidence(ceiling=CEILING))


def test_scores_that_do_not_match_the_tree_raise_dag_error() -> None:
    nodes, scores = base_tree()
    with pytest.raises(DagError, match="no score for nodes"):
        payouts_of(nodes, {1: scores[1], 3: scores[3]})
    with pytest.raises(DagError, match="not in the tree"):
        payouts_of(nodes, {**scores, 9: Score(node_id=9, valid=True)})
    with pytest.raises(DagError, match="is for node"):
        payouts_of(nodes, {**scores, 2: Score(node_id=1, valid=True)})
    with pytest.raises(DagError, match="above the validation set's ceiling"):
        payouts_of(nodes, {**scores, 3: Score(node_id=3, valid=True, value=CEILING + 1)})


@pytest.mark.parametrize(
    ("evidence", "match"),
    [
        (Evidence({3: {}}, {}, {1: 1}, CEILING), "no score for coalition"),
        (Evidence({2: {(2,): 5}}, {}, {1: 1}, CEILING), "not a merge"),
        (Evidence({3: {(1,): 5}}, {}, {1: 1}, CEILING), "not parents of merge 3"),
        (Evidence({3: {(2,): 5}}, {1: 4}, {1: 1}, CEILING), "not an update"),
        (Evidence({3: {(2,): 5}}, {}, {}, CEILING), "no valid FLOPs"),
    ],
)
def test_evidence_that_does_not_fit_the_tree_raises_dag_error(
    evidence: Evidence, match: str
) -> None:
    nodes, scores = base_tree()
    with pytest.raises(DagError, match=match):
        payouts_of(nodes, scores, evidence)


def test_a_left_out_update_without_an_added_score_raises_dag_error() -> None:
    nodes, scores = base_tree()
    nodes.append(update(4, M2, 1, 1))
    scores[4] = Score(node_id=4, valid=True, value=2)
    with pytest.raises(DagError, match="no added score"):
        payouts_of(nodes, scores)


# ------------------------------------------------------------------ invariants, random trees


@dataclass(frozen=True)
class Case:
    nodes: list[NodeRecord]
    scores: dict[int, Score]
    evidence: Evidence
    spec: TaskSpec
    bounty: int
    deposit: int

    def payouts(self) -> list[Payout]:
        return compute_payouts(
            self.nodes, self.scores, self.evidence, self.spec, self.bounty, self.deposit
        )


ACCOUNTS = [account(n) for n in (0x10, 0x21, 0x32, 0x43)]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Up to two architectures and three rounds; each round's merges average some of its
    updates; every coalition and added score drawn at random."""
    nodes: list[NodeRecord] = []
    authors = st.sampled_from(ACCOUNTS)
    for node_id in range(1, draw(st.integers(1, 2)) + 1):
        nodes.append(arch(node_id, draw(authors)))
    for round_index in range(draw(st.integers(1, 3))):
        earlier = [n.node_id for n in nodes if n.kind != NodeKind.UPDATE]
        start = len(nodes) + 1
        for node_id in range(start, start + draw(st.integers(0, 4))):
            parent = draw(st.sampled_from(earlier))
            nodes.append(
                update(node_id, draw(authors), parent, draw(st.integers(0, 10**4)), round_index)
            )
        updates = [n.node_id for n in nodes if n.round == round_index and n.kind == NodeKind.UPDATE]
        if updates and draw(st.booleans()):
            parents = draw(st.lists(st.sampled_from(updates), min_size=1, max_size=4, unique=True))
            nodes.append(merge(len(nodes) + 1, tuple(sorted(parents)), round_index))
    scores = {
        n.node_id: Score(
            node_id=n.node_id, valid=draw(st.integers(0, 5)) > 0, value=draw(st.integers(0, 60))
        )
        for n in nodes
    }
    value = st.integers(0, 60)
    coalitions = {
        n.node_id: game(n.parents, lambda s: draw(value)) for n in nodes if n.kind == NodeKind.MERGE
    }
    added = {n.node_id: draw(value) for n in nodes if n.kind == NodeKind.UPDATE}
    flops = {
        n.node_id: draw(st.integers(0, 10**6)) for n in nodes if n.kind == NodeKind.ARCHITECTURE
    }
    e = draw(st.integers(0, BPS))
    d = draw(st.integers(0, BPS - e))
    c = draw(st.integers(0, BPS - e - d))
    task = spec(
        e, d, c, draw(st.integers(1, 10**4)), max_account_share_bps=draw(st.integers(1, BPS))
    )
    bounty, deposit = draw(st.integers(0, 10**24)), draw(st.integers(0, 10**18))
    evidence = Evidence(coalitions, added, flops, ceiling=100)
    return Case(nodes, scores, evidence, task, bounty, deposit)


def submissions(case: Case) -> int:
    return sum(1 for n in case.nodes if n.kind != NodeKind.MERGE)


@FAST
@given(cases())
def test_the_total_never_exceeds_the_bounty_plus_the_deposits(case: Case) -> None:
    payouts = case.payouts()

    split = case.spec.split
    pool = case.bounty * split.data_bps // BPS
    assert all(p.amount == p.expertise + p.data + p.compute + p.deposits for p in payouts)
    assert sum(p.deposits for p in payouts) <= case.deposit * submissions(case)
    assert sum(p.amount for p in payouts) <= case.bounty + case.deposit * submissions(case)
    assert sum(p.expertise for p in payouts) <= case.bounty * split.expertise_bps // BPS
    assert sum(p.data for p in payouts) <= pool
    assert sum(p.compute for p in payouts) <= case.bounty * split.compute_bps // BPS
    assert all(p.data <= pool * case.spec.max_account_share_bps // BPS for p in payouts)
    assert all(p.data == 0 for p in payouts if p.points == 0)
    assert [p.account for p in payouts] == sorted(
        (p.account for p in payouts), key=lambda a: int(a, 16)
    )


@FAST
@given(cases())
def test_only_a_merges_updates_are_paid_for_data_and_compute(case: Case) -> None:
    merged = {
        case.nodes[i].author
        for n in case.nodes
        if n.kind == NodeKind.MERGE and case.scores[n.node_id].valid
        for p in n.parents
        for i in [p - 1]
    }
    for payout in case.payouts():
        if payout.account not in merged:
            assert payout.data == payout.compute == payout.points == 0
    if find_winner(case.nodes, case.scores) is None:
        assert all(p.expertise == p.data == p.points == 0 for p in case.payouts())


@FAST
@given(cases(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_the_order_nodes_are_listed_in(
    case: Case, rng: random.Random
) -> None:
    shuffled = list(case.nodes)
    rng.shuffle(shuffled)

    assert replace(case, nodes=shuffled).payouts() == case.payouts()


@FAST
@given(cases(), st.integers(0, 10**6))
def test_declared_samples_never_change_the_data_or_compute_share(case: Case, samples: int) -> None:
    inflated = [
        n.model_copy(update={"samples": samples}) if n.kind == NodeKind.UPDATE else n
        for n in case.nodes
    ]
    before = {p.account: (p.data, p.compute, p.points) for p in case.payouts()}
    after = {
        p.account: (p.data, p.compute, p.points) for p in replace(case, nodes=inflated).payouts()
    }
    assert {a: v for a, v in before.items() if v != (0, 0, 0)} == {
        a: v for a, v in after.items() if v != (0, 0, 0)
    }
