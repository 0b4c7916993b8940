"""The task's model DAG: checking what the reward rule is given (ids, kinds, parents, no
cycle, a score for every node) and walking it (a node's architecture, an author's updates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eth_utils.address import to_checksum_address

from marketplace.errors import DagError
from marketplace.rules.messages import NodeKind, NodeRecord, Score

ROOT = 0  # the task: the parent of every architecture


def index_dag(nodes: Sequence[NodeRecord]) -> dict[int, NodeRecord]:
    """Node id -> node (author in checksum form), after checking ids, kinds, parents and
    acyclicity."""
    by_id: dict[int, NodeRecord] = {}
    for node in nodes:
        if node.node_id <= ROOT:
            raise DagError(f"node id {node.node_id} is not positive")
        if node.node_id in by_id:
            raise DagError(f"node {node.node_id} is listed twice")
        if node.samples < 0:
            raise DagError(f"node {node.node_id} declares {node.samples} samples")
        by_id[node.node_id] = node.model_copy(update={"author": checksum(node.author)})
    for node in by_id.values():
        _check_parents(node, by_id)
    _check_acyclic(by_id)
    return by_id


def _check_parents(node: NodeRecord, by_id: Mapping[int, NodeRecord]) -> None:
    where = f"node {node.node_id} ({node.kind.name.lower()})"
    if node.kind == NodeKind.ARCHITECTURE:
        if node.parents not in ((), (ROOT,)):
            raise DagError(f"{where} must be a child of the root, not of {node.parents}")
        return
    if node.kind == NodeKind.UPDATE and len(node.parents) != 1:
        raise DagError(f"{where} must have exactly one parent, not {node.parents}")
    if node.kind == NodeKind.MERGE and not node.parents:
        raise DagError(f"{where} has no parents")
    if node.kind not in (NodeKind.UPDATE, NodeKind.MERGE):
        raise DagError(f"{where} has no kind")
    if len(set(node.parents)) != len(node.parents):
        raise DagError(f"{where} lists a parent twice: {node.parents}")
    for parent in node.parents:
        if parent not in by_id:
            raise DagError(f"{where} has parent {parent}, which is not in the tree")


def _check_acyclic(by_id: Mapping[int, NodeRecord]) -> None:
    """Raise DagError if following parents ever returns to a node (iterative three-colour DFS)."""
    done: set[int] = set()
    for start in sorted(by_id):
        if start in done:
            continue
        on_path: set[int] = {start}
        stack: list[tuple[int, list[int]]] = [(start, _parents(by_id, start))]
        while stack:
            node_id, pending = stack[-1]
            if not pending:
                stack.pop()
                on_path.discard(node_id)
                done.add(node_id)
                continue
            parent = pending.pop()
            if parent in on_path:
                raise DagError(f"the tree has a cycle through node {parent}")
            if parent not in done:
                on_path.add(parent)
                stack.append((parent, _parents(by_id, parent)))


def check_scores(by_id: Mapping[int, NodeRecord], scores: Mapping[int, Score]) -> None:
    for node_id, score in scores.items():
        if node_id not in by_id:
            raise DagError(f"a score for node {node_id}, which is not in the tree")
        if score.node_id != node_id:
            raise DagError(f"the score under node {node_id} is for node {score.node_id}")
    missing = sorted(set(by_id) - set(scores))
    if missing:
        raise DagError(f"no score for nodes {missing}")


def _parents(by_id: Mapping[int, NodeRecord], node_id: int) -> list[int]:
    return [p for p in by_id[node_id].parents if p != ROOT]


def architecture_of(by_id: Mapping[int, NodeRecord], node_id: int) -> int:
    """The architecture under `node_id`, following each node's first (lowest) parent, as the
    contract records a merge's parent."""
    node = by_id[node_id]
    while node.kind != NodeKind.ARCHITECTURE:
        node = by_id[min(node.parents)]
    return node.node_id


def updates_by(by_id: Mapping[int, NodeRecord], author: str, round_index: int) -> list[int]:
    """The ids of `author`'s updates in round `round_index`, in submission order: the first is
    the one a secure aggregation group counts, those past a cap are over it."""
    author = author.lower()
    return sorted(
        node.node_id
        for node in by_id.values()
        if node.kind is NodeKind.UPDATE
        and node.round == round_index
        and node.author.lower() == author
    )


def is_valid(scores: Mapping[int, Score], node_id: int) -> bool:
    score = scores.get(node_id)
    return score is not None and score.valid


def checksum(account: str) -> str:
    try:
        return to_checksum_address(account)
    except ValueError as error:
        raise DagError(f"{account!r} is not an address") from error
