"""A task's views that do not depend on the time: its model tree, its leaderboard and its
payout table (every leaf with its Merkle proof, so a claimant needs nothing else). Each is
built from the report to show, in a worker thread, and kept in the `BodyCache` until the
task's indexed rows change; it is sent gzipped when asked, with an ETag.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel

from marketplace.service.api_common import (
    MAX_ID,
    NOT_FOUND,
    BodyCache,
    IndexReader,
    PayoutRow,
    TaskIdParam,
    cached,
    epsilon_of,
    payout_rows,
)


class TreeNode(BaseModel):
    node_id: int
    kind: str
    author: str
    parent: int
    parents: list[int]
    round: int
    samples: int
    epsilon: float | None  # the DP budget an update declared it spent (None: no DP)
    cid: str
    valid: bool | None  # None until a report covers it
    score: int | None
    gain: int | None


class Tree(BaseModel):
    task_id: int
    winner: int | None
    report_cid: str | None
    agreed: bool  # the report behind the agreed root (else the first matching one, if any)
    nodes: list[TreeNode]
    next_after: int | None  # more nodes follow: ask again with after=this (None: that was all)


class LeaderboardEntry(BaseModel):
    rank: int
    node_id: int
    kind: str
    author: str
    score: int
    gain: int


class Leaderboard(BaseModel):
    task_id: int
    report_cid: str | None
    entries: list[LeaderboardEntry]


class PayoutTable(BaseModel):
    task_id: int
    root: str
    total: str
    evaluator: str
    report_cid: str
    agreed: bool
    payouts: list[PayoutRow]


def report_of(reader: IndexReader, task_id: int) -> tuple[sqlite3.Row | None, bool]:
    """(the report to show, whether it is the agreed root's): the agreed root's if there is
    one, else the first posted report that matches its own root."""
    found = reader.rows(
        """SELECT p.*, r.root, r.total, s.task_id IS NOT NULL AS agreed
           FROM reports p JOIN roots r ON r.task_id = p.task_id AND r.evaluator = p.evaluator
           LEFT JOIN settlements s ON s.task_id = r.task_id AND s.root = r.root
           WHERE p.task_id = ? AND p.matches = 1
           ORDER BY agreed DESC, p.block_number LIMIT 1""",
        task_id,
    )
    return (found[0], bool(found[0]["agreed"])) if found else (None, False)


def build_tree(reader: IndexReader, task_id: int, after: int, limit: int | None) -> Tree:
    report, agreed = report_of(reader, task_id)
    rows = reader.rows(
        """SELECT n.*, v.valid, v.score, v.gain FROM nodes n
           LEFT JOIN report_nodes v ON v.task_id = n.task_id AND v.node_id = n.node_id
             AND v.evaluator = ?
           WHERE n.task_id = ? AND n.node_id > ? ORDER BY n.node_id LIMIT ?""",
        None if report is None else report["evaluator"],
        task_id,
        after,
        -1 if limit is None else limit + 1,  # one more: whether a next page exists
    )
    more = limit is not None and len(rows) > limit
    nodes = [
        TreeNode(
            node_id=row["node_id"],
            kind=row["kind"],
            author=row["author"],
            parent=row["parent"],
            parents=json.loads(row["parents"]),
            round=row["round"],
            samples=row["samples"],
            epsilon=epsilon_of(row),
            cid=row["cid"],
            valid=None if row["valid"] is None else bool(row["valid"]),
            score=row["score"],
            gain=row["gain"],
        )
        for row in rows[:limit]
    ]
    return Tree(
        task_id=task_id,
        winner=None if report is None else report["winner"],
        report_cid=None if report is None else report["report_cid"],
        agreed=agreed,
        nodes=nodes,
        next_after=nodes[-1].node_id if more else None,
    )


def build_leaderboard(reader: IndexReader, task_id: int, limit: int) -> Leaderboard:
    report, _ = report_of(reader, task_id)
    if report is None:
        return Leaderboard(task_id=task_id, report_cid=None, entries=[])
    rows = reader.rows(
        """SELECT v.node_id, v.score, v.gain, n.kind, n.author FROM report_nodes v
           JOIN nodes n ON n.task_id = v.task_id AND n.node_id = v.node_id
           WHERE v.task_id = ? AND v.evaluator = ? AND v.valid = 1 AND n.kind != 'update'
           ORDER BY v.score DESC, v.gain DESC, v.node_id LIMIT ?""",
        task_id,
        report["evaluator"],
        limit,
    )
    return Leaderboard(
        task_id=task_id,
        report_cid=report["report_cid"],
        entries=[
            LeaderboardEntry(
                rank=rank,
                node_id=row["node_id"],
                kind=row["kind"],
                author=row["author"],
                score=row["score"],
                gain=row["gain"],
            )
            for rank, row in enumerate(rows, start=1)
        ],
    )


def build_payouts(reader: IndexReader, task_id: int) -> PayoutTable:
    report, agreed = report_of(reader, task_id)
    if report is None:
        raise HTTPException(404, f"task {task_id} has no payout report yet")
    rows = payout_rows(
        reader,
        """SELECT p.*, c.leaf AS claimed FROM report_payouts p
           LEFT JOIN claims c ON c.task_id = p.task_id AND c.leaf = p.leaf
           WHERE p.task_id = ? AND p.evaluator = ? ORDER BY p.leaf""",
        task_id,
        report["evaluator"],
    )
    return PayoutTable(
        task_id=task_id,
        root=report["root"],
        total=report["total"],
        evaluator=report["evaluator"],
        report_cid=report["report_cid"],
        agreed=agreed,
        payouts=rows,
    )


def task_views_router(reader: IndexReader, bodies: BodyCache) -> APIRouter:
    """A task's tree, leaderboard and payouts over the index `reader` reads, kept in `bodies`."""
    router = APIRouter()

    @router.get(
        "/api/v1/tasks/{task_id}/tree", response_model=Tree, responses=NOT_FOUND, tags=["tasks"]
    )
    async def tree(
        task_id: TaskIdParam,
        request: Request,
        after: Annotated[int, Query(ge=0, le=MAX_ID, description="Nodes after this id.")] = 0,
        limit: Annotated[
            int | None, Query(ge=1, le=100_000, description="At most this many (default: all).")
        ] = None,
    ) -> Response:
        """Every node with its parents, author and kind, and its score and gain once a payout
        report covers it, by id, a page at a time if asked. Sent gzipped when asked (about 17x
        smaller), with an ETag."""
        key = ("tree", task_id, after, limit)
        return await cached(
            reader, bodies, request, key, lambda: build_tree(reader, task_id, after, limit)
        )

    @router.get(
        "/api/v1/tasks/{task_id}/leaderboard",
        response_model=Leaderboard,
        responses=NOT_FOUND,
        tags=["tasks"],
    )
    async def leaderboard(
        task_id: TaskIdParam,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    ) -> Response:
        """The valid nodes by score (then gain, then age), best first."""
        key = ("leaderboard", task_id, limit)
        return await cached(
            reader, bodies, request, key, lambda: build_leaderboard(reader, task_id, limit)
        )

    @router.get(
        "/api/v1/tasks/{task_id}/payouts",
        response_model=PayoutTable,
        responses=NOT_FOUND,
        tags=["tasks"],
    )
    async def payouts(task_id: TaskIdParam, request: Request) -> Response:
        """The payout table of the (agreed) report: every leaf with its proof and whether it
        was claimed; enough to call `claim` with nothing else."""
        key = ("payouts", task_id)
        return await cached(reader, bodies, request, key, lambda: build_payouts(reader, task_id))

    return router
