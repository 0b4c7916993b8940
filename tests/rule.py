"""Two clauses of the reward rule restated from DESIGN.md ("Credit for verified improvement"),
apart from `marketplace.rules.rewards`, for the market tests to check an agreed report against:
which valid updates forfeit their deposit (the harm clause) and each account's data share under
the per-account cap. They hold whichever updates a round's merge keeps, so the tests assert
them instead of a merge's incidental outcome. Rounds in clear only (no secure aggregation).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from eth_utils.address import to_checksum_address

from marketplace.rules.messages import NodeKind, NodeRecord
from marketplace.wire.report import NodeVerdict, PayoutReport

BPS = 10_000
MIN_GAIN = 2  # TaskSpec.min_gain's default
SHARE_CAP_BPS = 5_000  # TaskSpec.max_account_share_bps's default


def _architecture(records: Mapping[int, NodeRecord], node_id: int) -> int:
    node = records[node_id]
    while node.kind is not NodeKind.ARCHITECTURE:
        node = records[min(node.parents)]
    return node.node_id


def _valid_merges(
    report: PayoutReport, records: Mapping[int, NodeRecord], architecture: int
) -> list[NodeVerdict]:
    return [
        n
        for n in report.nodes
        if n.kind is NodeKind.MERGE
        and n.valid
        and _architecture(records, n.node_id) == architecture
    ]


def frontier(report: PayoutReport, records: Mapping[int, NodeRecord], node_id: int) -> int:
    """The best score among the node's architecture and its valid merges of earlier rounds."""
    architecture = _architecture(records, node_id)
    scores = {n.node_id: n.score for n in report.nodes}
    earlier = [
        m.score
        for m in _valid_merges(report, records, architecture)
        if records[m.node_id].round < records[node_id].round
    ]
    return max([scores[architecture], *earlier])


def round_merge(
    report: PayoutReport, records: Mapping[int, NodeRecord], node_id: int
) -> NodeVerdict | None:
    """The best valid merge of the node's round and architecture (ties: the lowest id)."""
    same = [
        m
        for m in _valid_merges(report, records, _architecture(records, node_id))
        if records[m.node_id].round == records[node_id].round
    ]
    return min(same, key=lambda m: (-m.score, m.node_id), default=None)


def forfeited(
    report: PayoutReport, records: Mapping[int, NodeRecord], min_gain: int = MIN_GAIN
) -> set[int]:
    """The valid updates whose deposit the harm clause takes: scoring under frontier +
    `min_gain`, left out of their round's merge, and that merge scoring `min_gain` or more
    above its `added` score (with the update added); or, with no merge that round, scoring
    `min_gain` or more below the frontier."""
    harmful = set()
    for node in report.nodes:
        if node.kind is not NodeKind.UPDATE or not node.valid:
            continue
        base = frontier(report, records, node.node_id)
        merge = round_merge(report, records, node.node_id)
        if merge is None:
            hurt = node.score <= base - min_gain
        elif node.score >= base + min_gain or node.node_id in merge.parents:
            hurt = False
        else:
            hurt = report.added[node.node_id] <= merge.score - min_gain
        if hurt:
            harmful.add(node.node_id)
    return harmful


def refunded_deposits(
    report: PayoutReport, records: Mapping[int, NodeRecord], deposit: int
) -> dict[str, int]:
    """Account (checksum) -> the deposits it gets back: one per valid architecture or update
    it submitted that is not `forfeited`."""
    lost = forfeited(report, records)
    owed: dict[str, int] = defaultdict(int)
    for node in report.nodes:
        if node.kind is not NodeKind.MERGE and node.valid and node.node_id not in lost:
            owed[to_checksum_address(node.author)] += deposit
    return dict(owed)


def capped_data(report: PayoutReport, pool: int, cap_bps: int = SHARE_CAP_BPS) -> dict[str, int]:
    """Account -> its data share: the pool split by points, floored, each part capped at
    `cap_bps` of the pool (the excess stays with the sponsor)."""
    points = {p.account: p.points for p in report.payouts if p.points > 0}
    total = sum(points.values())
    cap = pool * cap_bps // BPS
    return {account: min(pool * credited // total, cap) for account, credited in points.items()}
