"""Random trees: the contract accepts exactly the DAG operations a plain Python model allows,
and the tree read back from its events is the model's tree."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.chain import reverts
from marketplace.dev.devchain import advance_to
from marketplace.rules.messages import NodeKind
from tests.helpers import ETHER, create_task, digest, eth_task, new_market


@dataclass(frozen=True)
class Op:
    kind: NodeKind
    author: int  # index into the dev accounts (2..8)
    parents: tuple[int, ...]  # ids as drawn: may be missing, unsorted or repeated


def _ops(kind: NodeKind) -> st.SearchStrategy[Op]:
    authors = st.integers(min_value=2, max_value=8)
    ids = st.integers(min_value=0, max_value=14)
    if kind == NodeKind.ARCHITECTURE:
        return st.builds(Op, st.just(kind), authors, st.just((0,)))
    if kind == NodeKind.UPDATE:
        return st.builds(Op, st.just(kind), authors, st.tuples(ids))
    return st.builds(Op, st.just(kind), st.just(1), st.lists(ids, max_size=5).map(tuple))


round_zero = st.lists(st.one_of(_ops(NodeKind.ARCHITECTURE), _ops(NodeKind.UPDATE)), max_size=6)
round_one = st.lists(st.one_of(_ops(NodeKind.UPDATE), _ops(NodeKind.MERGE)), max_size=6)
after_rounds = st.lists(_ops(NodeKind.MERGE), max_size=2)


def _valid(op: Op, node_count: int) -> bool:
    """The model: what the contract must accept, given the nodes that exist."""
    if op.kind == NodeKind.ARCHITECTURE:
        return True
    if op.kind == NodeKind.UPDATE:
        return 1 <= op.parents[0] <= node_count
    ids = op.parents
    increasing = all(b > a for a, b in zip(ids, ids[1:], strict=False))
    return len(ids) > 0 and ids[0] >= 1 and increasing and ids[-1] <= node_count


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(round_zero, round_one, after_rounds)
def test_contract_accepts_exactly_the_valid_dag_operations(
    first: list[Op], second: list[Op], last: list[Op]
) -> None:
    w3, market, accounts = new_market()
    deposit = ETHER // 100
    params = eth_task(accounts[1], bounty=ETHER, deposit=deposit)
    task_id = create_task(market, accounts[0], params)
    model: list[tuple[NodeKind, str, tuple[int, ...], int]] = []  # kind, author, parents, round

    def apply(op: Op, round_index: int) -> None:
        author = accounts[op.author]
        label = f"{len(model)}-{op}"
        try:
            if op.kind == NodeKind.ARCHITECTURE:
                market.propose_architecture(author, task_id, digest(label), "bafkreiarch")
            elif op.kind == NodeKind.UPDATE:
                market.submit_update(author, task_id, op.parents[0], 1, digest(label), "bafkreiu")
            else:
                merge_round = round_index - 1
                market.post_merge(
                    author,
                    task_id,
                    merge_round,
                    list(op.parents),
                    1,
                    digest(label),
                    digest("p" + label),
                    "bafkreim",
                )
        except (reverts.InvalidParent, reverts.InvalidMergeParents):
            assert not _valid(op, len(model)), f"refused a valid {op}"
            return
        assert _valid(op, len(model)), f"accepted an invalid {op}"
        merge_round = round_index - 1 if op.kind == NodeKind.MERGE else round_index
        model.append((op.kind, author, op.parents, merge_round))

    for op in first:
        apply(op, 0)
    task = market.task(task_id)
    advance_to(w3, task.round_end(0))
    for op in second:
        apply(op, 1)
    advance_to(w3, task.rounds_end)
    for op in last:
        apply(op, 2)

    records = market.nodes(task_id)
    assert [(r.kind, r.author, r.parents, r.round) for r in records] == model
    assert [r.node_id for r in records] == list(range(1, len(model) + 1))
    submissions = sum(1 for kind, *_ in model if kind != NodeKind.MERGE)
    task = market.task(task_id)
    assert (task.node_count, task.submission_count) == (len(model), submissions)
    assert task.escrow == ETHER + deposit * submissions == market.balance(market.address)
