"""The marketplace service's read-only REST API over the chain index (`marketplace.indexer`),
versioned under `/api/v1`, OpenAPI at `/docs`: tasks (filtered, paginated), one task with its
phases, its model tree, leaderboard and payout table (every leaf with its Merkle proof, so a
claimant needs nothing else), an account's submissions and earnings, and `/health`.

Amounts are decimal strings of base units (wei): JSON numbers lose precision past 2**53.
Bad ids, addresses or parameters are 4xx with a message; the database is opened read-only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from eth_utils.address import to_checksum_address
from fastapi import FastAPI, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel

from marketplace.messages import Phase

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
MAX_ID = 2**63 - 1  # SQLite's integers
TREE_CACHE_TASKS = 32
TaskIdParam = Annotated[int, PathParam(ge=1, le=MAX_ID, description="The task id.")]
AddressParam = Annotated[str, PathParam(pattern=ADDRESS, description="A 0x address.")]
PhaseName = Literal[
    "rounds",
    "reveal",
    "evaluation",
    "challenge",
    "claims",
    "closed",
    "unrevealed",
    "unsettled",
    "cancelled",
]
"""Every `Phase` but NONE, lower-case (a test keeps the two the same)."""


# ------------------------------------------------------------------ response models


class PhaseSpan(BaseModel):
    phase: str
    starts: int
    ends: int | None  # None: until something happens (a reveal, a root, a finalize)


class TaskSummary(BaseModel):
    task_id: int
    sponsor: str
    token: str
    bounty: str
    deposit: str
    phase: str
    start: int
    rounds: int
    rounds_end: int
    nodes: int
    spec_cid: str


class TaskDetail(TaskSummary):
    evaluators: list[str]
    quorum: int
    round_duration: int
    spec_digest: str
    validation_commit: str
    settled_at: int | None  # when the payout root was agreed
    finalized_at: int | None  # when it became final: the claim window opens
    payout_root: str | None
    phases: list[PhaseSpan]


class TaskPage(BaseModel):
    items: list[TaskSummary]
    total: int
    offset: int
    limit: int


class TreeNode(BaseModel):
    node_id: int
    kind: str
    author: str
    parent: int
    parents: list[int]
    round: int
    samples: int
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


class PayoutRow(BaseModel):
    leaf: int
    account: str
    amount: str
    points: str
    expertise: str
    data: str
    compute: str
    deposits: str
    proof: list[str]
    claimed: bool


class PayoutTable(BaseModel):
    task_id: int
    root: str
    total: str
    evaluator: str
    report_cid: str
    agreed: bool
    payouts: list[PayoutRow]


class Submission(BaseModel):
    task_id: int
    node_id: int
    kind: str
    round: int
    samples: int
    score: int | None


class AccountView(BaseModel):
    address: str
    submissions: list[Submission]
    earned: str  # claimed, in base units, over every task and token
    reputation: str  # points claimed
    claims: list[PayoutRow]


class ErrorDetail(BaseModel):
    """What a 4xx says (FastAPI's shape: `detail` holds the message)."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail}}


class Health(BaseModel):
    indexed_block: int
    chain_head: int | None  # None: the node did not answer
    lag: int | None


# ------------------------------------------------------------------ phases


TASKS = """SELECT t.*,
    (SELECT count(*) FROM nodes n WHERE n.task_id = t.task_id) AS node_count,
    EXISTS (SELECT 1 FROM events e WHERE e.task_id = t.task_id AND e.name = 'TaskCancelled')
        AS cancelled,
    EXISTS (SELECT 1 FROM events e WHERE e.task_id = t.task_id AND e.name = 'ValidationRevealed')
        AS revealed,
    s.settled_at, s.root AS payout_root, f.finalized_at
    FROM tasks t LEFT JOIN settlements s USING (task_id) LEFT JOIN finalizations f USING (task_id)
"""
"""Every task with what its phase depends on, in one query (filter with WHERE after it)."""


def phase_of(task: sqlite3.Row, now: int) -> Phase:
    """The phase at chain time `now` of a row of TASKS, as the contract's `_phase` computes it."""
    if task["cancelled"]:
        return Phase.CANCELLED
    if task["finalized_at"] is not None:
        claims = now < task["finalized_at"] + task["claim_window"]
        return Phase.CLAIMS if claims else Phase.CLOSED
    if task["settled_at"] is not None:
        return Phase.CHALLENGE
    rounds_end = task["start"] + task["rounds"] * task["round_duration"]
    if now < rounds_end:
        return Phase.ROUNDS
    reveal_deadline = rounds_end + task["reveal_window"]
    if not task["revealed"]:
        return Phase.REVEAL if now < reveal_deadline else Phase.UNREVEALED
    return (
        Phase.EVALUATION if now < reveal_deadline + task["evaluation_window"] else Phase.UNSETTLED
    )


# ------------------------------------------------------------------ the app


class IndexReader:
    """Read-only access to the index file, one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        connection = getattr(self._local, "db", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            connection.row_factory = sqlite3.Row
            self._local.db = connection
        return connection.execute(sql, params).fetchall()

    def cursor(self) -> int:
        (row,) = self.rows("SELECT value FROM meta WHERE key = 'cursor'")
        return int(row["value"])


def create_app(
    index_path: Path,
    chain_head: Callable[[], tuple[int, int] | None],
) -> FastAPI:
    """The API over the index at `index_path`; `chain_head()` gives the chain's (head block,
    its timestamp), or None when the node does not answer (phases then use the index's time)."""
    app = FastAPI(
        title="Gradient marketplace",
        version="1",
        description=__doc__,
        docs_url="/docs",
        openapi_url="/api/v1/openapi.json",
    )
    reader = IndexReader(index_path)
    tree_cache: dict[int, tuple[str, bytes]] = {}  # task -> (index state, JSON body)
    tree_lock = threading.Lock()

    def now() -> int:
        head = chain_head()
        return head[1] if head is not None else 0

    def summary(task: sqlite3.Row, at: int) -> TaskSummary:
        return TaskSummary(
            task_id=task["task_id"],
            sponsor=task["sponsor"],
            token=task["token"],
            bounty=task["bounty"],
            deposit=task["deposit"],
            phase=phase_of(task, at).name.lower(),
            start=task["start"],
            rounds=task["rounds"],
            rounds_end=task["start"] + task["rounds"] * task["round_duration"],
            nodes=task["node_count"],
            spec_cid=task["spec_cid"],
        )

    def task_row(task_id: int) -> sqlite3.Row:
        found = reader.rows(f"{TASKS} WHERE task_id = ?", task_id)
        if not found:
            raise HTTPException(404, f"no task {task_id} (indexed to block {reader.cursor()})")
        return found[0]

    def report_of(task_id: int) -> tuple[sqlite3.Row | None, bool]:
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

    @app.get("/api/v1/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """The indexed block next to the chain's head."""
        head = chain_head()
        indexed = reader.cursor()
        return Health(
            indexed_block=indexed,
            chain_head=None if head is None else head[0],
            lag=None if head is None else head[0] - indexed,
        )

    @app.get("/api/v1/tasks", response_model=TaskPage, tags=["tasks"])
    def tasks(
        sponsor: Annotated[str | None, Query(pattern=ADDRESS)] = None,
        token: Annotated[str | None, Query(pattern=ADDRESS)] = None,
        phase: PhaseName | None = None,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> TaskPage:
        """Tasks, newest first, filtered by sponsor, bounty token and phase."""
        where, params = [], []
        if sponsor is not None:
            where.append("sponsor = ?")
            params.append(to_checksum_address(sponsor))
        if token is not None:
            where.append("token = ?")
            params.append(to_checksum_address(token))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        at = now()
        rows = reader.rows(f"{TASKS} {clause} ORDER BY task_id DESC", *params)
        items = [summary(row, at) for row in rows]
        if phase is not None:
            items = [item for item in items if item.phase == phase]
        return TaskPage(
            items=items[offset : offset + limit], total=len(items), offset=offset, limit=limit
        )

    @app.get(
        "/api/v1/tasks/{task_id}", response_model=TaskDetail, responses=NOT_FOUND, tags=["tasks"]
    )
    def task(task_id: TaskIdParam) -> TaskDetail:
        """One task: its parameters, its phase and when each phase starts and ends."""
        row = task_row(task_id)
        base = summary(row, now())
        rounds_end = base.rounds_end
        reveal_end = rounds_end + row["reveal_window"]
        spans = [
            PhaseSpan(phase="rounds", starts=row["start"], ends=rounds_end),
            PhaseSpan(phase="reveal", starts=rounds_end, ends=reveal_end),
            PhaseSpan(
                phase="evaluation", starts=reveal_end, ends=reveal_end + row["evaluation_window"]
            ),
        ]
        settled_at, finalized_at = row["settled_at"], row["finalized_at"]
        if settled_at is not None:
            challenge_end = settled_at + row["challenge_window"]
            spans.append(PhaseSpan(phase="challenge", starts=settled_at, ends=challenge_end))
        if finalized_at is not None:
            claim_end = finalized_at + row["claim_window"]
            spans.append(PhaseSpan(phase="claims", starts=finalized_at, ends=claim_end))
        return TaskDetail(
            **base.model_dump(),
            evaluators=json.loads(row["evaluators"]),
            quorum=row["quorum"],
            round_duration=row["round_duration"],
            spec_digest=row["spec_digest"],
            validation_commit=row["validation_commit"],
            settled_at=settled_at,
            finalized_at=finalized_at,
            payout_root=row["payout_root"],
            phases=spans,
        )

    @app.get(
        "/api/v1/tasks/{task_id}/tree", response_model=Tree, responses=NOT_FOUND, tags=["tasks"]
    )
    def tree(task_id: TaskIdParam) -> Response:
        """Every node with its parents, author and kind, and its score and gain once a payout
        report covers it."""
        task_row(task_id)
        # The body is built once per state of the index (a 10,000-node tree is 2.4 MB of JSON):
        # the index changes only when its cursor moves or a report arrives.
        (version,) = reader.rows(
            "SELECT (SELECT value FROM meta WHERE key = 'cursor') || '/' || "
            "(SELECT count(*) FROM reports WHERE task_id = ?) AS v",
            task_id,
        )
        with tree_lock:
            cached = tree_cache.get(task_id)
        if cached is None or cached[0] != version["v"]:
            body = build_tree(task_id).model_dump_json().encode()
            with tree_lock:
                tree_cache[task_id] = (version["v"], body)
                while len(tree_cache) > TREE_CACHE_TASKS:
                    tree_cache.pop(next(iter(tree_cache)))
        else:
            body = cached[1]
        return Response(content=body, media_type="application/json")

    def build_tree(task_id: int) -> Tree:
        report, agreed = report_of(task_id)
        verdicts: dict[int, sqlite3.Row] = {}
        if report is not None:
            verdicts = {
                row["node_id"]: row
                for row in reader.rows(
                    "SELECT * FROM report_nodes WHERE task_id = ? AND evaluator = ?",
                    task_id,
                    report["evaluator"],
                )
            }
        nodes = []
        for row in reader.rows("SELECT * FROM nodes WHERE task_id = ? ORDER BY node_id", task_id):
            verdict = verdicts.get(row["node_id"])
            nodes.append(
                TreeNode(
                    node_id=row["node_id"],
                    kind=row["kind"],
                    author=row["author"],
                    parent=row["parent"],
                    parents=json.loads(row["parents"]),
                    round=row["round"],
                    samples=row["samples"],
                    cid=row["cid"],
                    valid=None if verdict is None else bool(verdict["valid"]),
                    score=None if verdict is None else verdict["score"],
                    gain=None if verdict is None else verdict["gain"],
                )
            )
        return Tree(
            task_id=task_id,
            winner=None if report is None else report["winner"],
            report_cid=None if report is None else report["report_cid"],
            agreed=agreed,
            nodes=nodes,
        )

    @app.get(
        "/api/v1/tasks/{task_id}/leaderboard",
        response_model=Leaderboard,
        responses=NOT_FOUND,
        tags=["tasks"],
    )
    def leaderboard(
        task_id: TaskIdParam, limit: Annotated[int, Query(ge=1, le=1000)] = 20
    ) -> Leaderboard:
        """The valid nodes by score (then gain, then age), best first."""
        task_row(task_id)
        report, _ = report_of(task_id)
        if report is None:
            return Leaderboard(task_id=task_id, report_cid=None, entries=[])
        rows = reader.rows(
            """SELECT v.node_id, v.score, v.gain, n.kind, n.author FROM report_nodes v
               JOIN nodes n ON n.task_id = v.task_id AND n.node_id = v.node_id
               WHERE v.task_id = ? AND v.evaluator = ? AND v.valid = 1
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

    def payout_rows(sql: str, *params: Any) -> list[PayoutRow]:
        """Leaves from rows of report_payouts with a `claimed` column (NULL: not claimed)."""
        return [
            PayoutRow.model_validate(
                {**row, "proof": json.loads(row["proof"]), "claimed": row["claimed"] is not None}
            )
            for row in map(dict, reader.rows(sql, *params))
        ]

    @app.get(
        "/api/v1/tasks/{task_id}/payouts",
        response_model=PayoutTable,
        responses=NOT_FOUND,
        tags=["tasks"],
    )
    def payouts(task_id: TaskIdParam) -> PayoutTable:
        """The payout table of the (agreed) report: every leaf with its proof and whether it
        was claimed; enough to call `claim` with nothing else."""
        task_row(task_id)
        report, agreed = report_of(task_id)
        if report is None:
            raise HTTPException(404, f"task {task_id} has no payout report yet")
        rows = payout_rows(
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

    @app.get("/api/v1/accounts/{address}", response_model=AccountView, tags=["accounts"])
    def account(address: AddressParam) -> AccountView:
        """An account's submissions (with their scores), what it claimed, and its reputation."""
        checksummed = to_checksum_address(address)
        submissions = [
            Submission.model_validate(dict(row))
            for row in reader.rows(
                """SELECT n.*, (SELECT v.score FROM report_nodes v
                     WHERE v.task_id = n.task_id AND v.node_id = n.node_id
                     ORDER BY v.block_number LIMIT 1) AS score
                   FROM nodes n WHERE n.author = ? ORDER BY n.task_id, n.node_id""",
                checksummed,
            )
        ]
        claims = payout_rows(
            """SELECT p.*, c.leaf AS claimed FROM claims c JOIN report_payouts p
               ON p.task_id = c.task_id AND p.leaf = c.leaf AND p.account = c.account
               WHERE c.account = ? GROUP BY c.task_id, c.leaf ORDER BY c.task_id, c.leaf""",
            checksummed,
        )
        totals = reader.rows("SELECT amount, points FROM claims WHERE account = ?", checksummed)
        return AccountView(
            address=checksummed,
            submissions=submissions,
            earned=str(sum(int(row["amount"]) for row in totals)),
            reputation=str(sum(int(row["points"]) for row in totals)),
            claims=claims,
        )

    return app
