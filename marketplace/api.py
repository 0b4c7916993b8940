"""The marketplace service's read-only REST API over the chain index (`marketplace.indexer`),
versioned under `/api/v1`, OpenAPI at `/docs`: tasks (filtered, paginated), one task with its
phases, its model tree, leaderboard and payout table (every leaf with its Merkle proof, so a
claimant needs nothing else), the delivered model's card (`marketplace.api_card`, with a
read-only page per task), an account's submissions and earnings, and `/health`.

Amounts are decimal strings of base units (wei): JSON numbers lose precision past 2**53.
Bad ids, addresses or parameters are 4xx with a message; the database is opened read-only.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from eth_utils.address import to_checksum_address
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from marketplace.messages import Phase
from marketplace.schedule import RoundSchedule

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
MAX_ID = 2**63 - 1  # SQLite's integers
DASHBOARD = Path(__file__).parent / "dashboard"  # the page and its script and style, no others
PAGE_HEADERS = {
    # Only the app's own files run or load: the page puts chain data in as text, never as HTML.
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}
BODY_CACHE_SIZE = 64  # task views kept (see BodyCache)
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
    epsilon: float | None  # declared DP spend (None: no DP)
    score: int | None


class AccountView(BaseModel):
    address: str
    submissions: list[Submission]  # a page: `offset`, `limit`
    submission_count: int  # in all
    claims: list[PayoutRow]  # a page: `offset`, `limit`
    claim_count: int
    offset: int
    limit: int
    earned: dict[str, str]  # claimed, in base units, by bounty token (its address)
    reputation: str  # points claimed, over every task


class ErrorDetail(BaseModel):
    """What a 4xx says (FastAPI's shape: `detail` holds the message)."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail}}


class Health(BaseModel):
    indexed_block: int
    chain_head: int | None  # None: the node did not answer
    chain_time: int | None  # the head's timestamp: what phases and deadlines are measured by
    lag: int | None


# ------------------------------------------------------------------ phases


TASKS = """SELECT t.*,
    (SELECT count(*) FROM nodes n WHERE n.task_id = t.task_id) AS node_count,
    EXISTS (SELECT 1 FROM events e WHERE e.task_id = t.task_id AND e.name = 'TaskCancelled')
        AS cancelled,
    r.revealed_at, r.revealed_at IS NOT NULL AS revealed,
    s.settled_at, s.root AS payout_root, f.finalized_at
    FROM tasks t LEFT JOIN reveals r USING (task_id) LEFT JOIN settlements s USING (task_id)
    LEFT JOIN finalizations f USING (task_id)
"""
"""Every task with what its phase depends on, in one query (filter with WHERE after it)."""


def epsilon_of(node: sqlite3.Row) -> float | None:
    """A node's declared DP spend: the chain keeps thousandths, 0 for none."""
    return node["epsilon"] / 1000 if node["epsilon"] else None


def schedule_of(task: sqlite3.Row) -> RoundSchedule:
    """The round schedule of a row of TASKS."""
    return RoundSchedule(task["start"], task["round_duration"], task["rounds"])


def phase_of(task: sqlite3.Row, now: int) -> Phase:
    """The phase at chain time `now` of a row of TASKS, as the contract's `_phase` computes it."""
    if task["cancelled"]:
        return Phase.CANCELLED
    if task["finalized_at"] is not None:
        claims = now < task["finalized_at"] + task["claim_window"]
        return Phase.CLAIMS if claims else Phase.CLOSED
    if task["settled_at"] is not None:
        return Phase.CHALLENGE
    rounds_end = schedule_of(task).end
    if now < rounds_end:
        return Phase.ROUNDS
    reveal_deadline = rounds_end + task["reveal_window"]
    if not task["revealed"]:
        return Phase.REVEAL if now < reveal_deadline else Phase.UNREVEALED
    evaluation_deadline = task["revealed_at"] + task["evaluation_window"]  # from the reveal
    return Phase.EVALUATION if now < evaluation_deadline else Phase.UNSETTLED


# ------------------------------------------------------------------ the app


class IndexReader:
    """Read-only access to the index file, one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "db", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            connection.row_factory = sqlite3.Row
            self._local.db = connection
            self._local.states = (None, {})
        return connection

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        return self._connection().execute(sql, params).fetchall()

    def cursor(self) -> int:
        (row,) = self.rows("SELECT value FROM meta WHERE key = 'cursor'")
        return int(row["value"])

    def task_state(self, task_id: int) -> str | None:
        """A string that changes whenever the task's indexed rows do (None: no such task).
        Rows are only inserted, or deleted by a reorg's unwind, which the index counts; a
        report can arrive after its root's event."""
        connection = self._connection()
        # data_version moves only when another connection commits: most calls cost no query.
        (version,) = connection.execute("PRAGMA data_version").fetchone()
        seen, states = self._local.states
        if seen != version:
            states = {}
            self._local.states = (version, states)
        if task_id not in states:
            found = self.rows(
                """SELECT (SELECT count(*) FROM events e WHERE e.task_id = t.task_id) || '/' ||
                     (SELECT count(*) FROM reports r WHERE r.task_id = t.task_id) || '/' ||
                     coalesce((SELECT value FROM meta WHERE key = 'unwinds'), '0') AS state
                   FROM tasks t WHERE t.task_id = ?""",
                task_id,
            )
            if not found:
                return None
            states[task_id] = found[0]["state"]
        state: str = states[task_id]
        return state


@dataclass(frozen=True)
class Body:
    """A JSON response body, built once, with its gzip form and an entity tag."""

    raw: bytes
    gzipped: bytes
    tag: str

    @classmethod
    def of(cls, model: BaseModel) -> Body:
        raw = model.model_dump_json().encode()
        return cls(
            raw, gzip.compress(raw, 6), f'"{hashlib.blake2b(raw, digest_size=12).hexdigest()}"'
        )

    def response(self, request: Request) -> Response:
        headers = {"etag": self.tag, "vary": "accept-encoding", "cache-control": "no-cache"}
        if request.headers.get("if-none-match") == self.tag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            return Response(self.gzipped, media_type="application/json", headers=headers)
        return Response(self.raw, media_type="application/json", headers=headers)


class BodyCache:
    """Bodies of the task views that do not depend on the time (tree, leaderboard, payouts),
    each kept with the task state it was built from: a 10,000-node tree is 2.4 MB of JSON and
    a leaderboard sorts every scored node, so each is built once per change of its task, in a
    worker thread, while the event loop goes on serving."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._bodies: OrderedDict[tuple[Any, ...], tuple[str, Body]] = OrderedDict()
        self._building: dict[tuple[Any, ...], asyncio.Lock] = {}

    async def get(self, key: tuple[Any, ...], state: str, build: Callable[[], BaseModel]) -> Body:
        lock = self._building.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent requests for a stale body wait for one build
            cached = self._bodies.get(key)
            if cached is not None and cached[0] == state:
                self._bodies.move_to_end(key)
                return cached[1]
            body = await run_in_threadpool(lambda: Body.of(build()))
            self._bodies[key] = (state, body)
            self._bodies.move_to_end(key)
            while len(self._bodies) > self.size:
                evicted, _ = self._bodies.popitem(last=False)
                self._building.pop(evicted, None)
            return body


class HeadFile:
    """The chain head (block, its time) the service's follower last saw, handed to the API's
    worker processes through a small file next to the index; re-read when it changes."""

    STALE_SECONDS = 60.0  # a follower this long silent is gone: no head rather than an old one

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[tuple[int, ...], tuple[int, int] | None] = ((), None)  # (stat, head)

    def write(self, head: tuple[int, int] | None) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(None if head is None else list(head)))
        os.replace(tmp, self.path)  # readers see a whole file; losing it on a crash is harmless

    def read(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        if time.time() - stat.st_mtime > self.STALE_SECONDS:
            return None
        # Each write is a new file: its inode, time or size differ even within a clock tick.
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if version != self._seen[0]:
            try:
                value = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return self._seen[1]  # replaced while read: the next call sees the new one
            head = (int(value[0]), int(value[1])) if isinstance(value, list) else None
            self._seen = (version, head)
        return self._seen[1]


INDEX_VARIABLE, HEAD_VARIABLE = "GM_API_INDEX", "GM_API_HEAD"


def app_from_environment() -> FastAPI:
    """The app a `marketplace serve` worker process runs: the index and head file it names in
    the environment."""
    head = HeadFile(Path(os.environ[HEAD_VARIABLE]))
    return create_app(Path(os.environ[INDEX_VARIABLE]), head.read)


def create_app(
    index_path: Path,
    chain_head: Callable[[], tuple[int, int] | None],
) -> FastAPI:
    """The API over the index at `index_path`; `chain_head()` gives the chain's (head block,
    its timestamp), or None when the node does not answer (phases then use the index's time).

    Handlers are coroutines: their queries take well under a millisecond (or come from
    `BodyCache`), so running them on the event loop beats a hop through the thread pool."""
    app = FastAPI(
        title="Gradient marketplace",
        version="1",
        description=__doc__,
        docs_url="/docs",
        openapi_url="/api/v1/openapi.json",
    )
    reader = IndexReader(index_path)
    bodies = BodyCache(BODY_CACHE_SIZE)

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
            rounds_end=schedule_of(task).end,
            nodes=task["node_count"],
            spec_cid=task["spec_cid"],
        )

    def no_task(task_id: int) -> HTTPException:
        return HTTPException(404, f"no task {task_id} (indexed to block {reader.cursor()})")

    def task_row(task_id: int) -> sqlite3.Row:
        found = reader.rows(f"{TASKS} WHERE task_id = ?", task_id)
        if not found:
            raise no_task(task_id)
        return found[0]

    async def cached(
        request: Request, key: tuple[Any, ...], build: Callable[[], BaseModel]
    ) -> Response:
        """The body of view `key` of task `key[1]` as of the index's current state."""
        state = reader.task_state(key[1])
        if state is None:
            raise no_task(key[1])
        return (await bodies.get(key, state, build)).response(request)

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

    app.mount("/static", StaticFiles(directory=DASHBOARD), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The dashboard: a page of this app's own static files that reads this API."""
        return FileResponse(DASHBOARD / "index.html", headers=PAGE_HEADERS)

    @app.get("/api/v1/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        """The indexed block next to the chain's head."""
        head = chain_head()
        indexed = reader.cursor()
        return Health(
            indexed_block=indexed,
            chain_head=None if head is None else head[0],
            chain_time=None if head is None else head[1],
            lag=None if head is None else head[0] - indexed,
        )

    @app.get("/api/v1/tasks", response_model=TaskPage, tags=["tasks"])
    async def tasks(
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
    async def task(task_id: TaskIdParam) -> TaskDetail:
        """One task: its parameters, its phase and when each phase starts and ends."""
        row = task_row(task_id)
        base = summary(row, now())
        rounds_end = base.rounds_end
        reveal_end = rounds_end + row["reveal_window"]
        # The evaluation window runs from the reveal; before it, from the latest it can be.
        evaluation_start = row["revealed_at"] or reveal_end
        evaluation_end = evaluation_start + row["evaluation_window"]
        spans = [
            PhaseSpan(phase="rounds", starts=row["start"], ends=rounds_end),
            PhaseSpan(phase="reveal", starts=rounds_end, ends=reveal_end),
            PhaseSpan(phase="evaluation", starts=evaluation_start, ends=evaluation_end),
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
        return await cached(
            request, ("tree", task_id, after, limit), lambda: build_tree(task_id, after, limit)
        )

    def build_tree(task_id: int, after: int, limit: int | None) -> Tree:
        report, agreed = report_of(task_id)
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

    @app.get(
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
        return await cached(
            request, ("leaderboard", task_id, limit), lambda: build_leaderboard(task_id, limit)
        )

    def build_leaderboard(task_id: int, limit: int) -> Leaderboard:
        report, _ = report_of(task_id)
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
    async def payouts(task_id: TaskIdParam, request: Request) -> Response:
        """The payout table of the (agreed) report: every leaf with its proof and whether it
        was claimed; enough to call `claim` with nothing else."""
        return await cached(request, ("payouts", task_id), lambda: build_payouts(task_id))

    def build_payouts(task_id: int) -> PayoutTable:
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
    async def account(
        address: AddressParam,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AccountView:
        """An account's submissions (with their scores) and claims, a page of each (oldest
        first), and what it earned, per bounty token, and its reputation over all of them."""
        checksummed = to_checksum_address(address)
        submissions = [
            Submission.model_validate({**row, "epsilon": epsilon_of(row)})
            for row in reader.rows(
                """SELECT n.*, (SELECT v.score FROM report_nodes v
                     WHERE v.task_id = n.task_id AND v.node_id = n.node_id
                     ORDER BY v.block_number LIMIT 1) AS score
                   FROM nodes n WHERE n.author = ? ORDER BY n.task_id, n.node_id
                   LIMIT ? OFFSET ?""",
                checksummed,
                limit,
                offset,
            )
        ]
        claims = payout_rows(
            """SELECT p.*, c.leaf AS claimed FROM claims c JOIN report_payouts p
               ON p.task_id = c.task_id AND p.leaf = c.leaf AND p.account = c.account
               WHERE c.account = ? GROUP BY c.task_id, c.leaf ORDER BY c.task_id, c.leaf
               LIMIT ? OFFSET ?""",
            checksummed,
            limit,
            offset,
        )
        (counts,) = reader.rows(
            """SELECT (SELECT count(*) FROM nodes WHERE author = ?) AS submissions,
                      (SELECT count(*) FROM claims WHERE account = ?) AS claims""",
            checksummed,
            checksummed,
        )
        earned: dict[str, int] = {}
        reputation = 0
        for row in reader.rows(
            """SELECT t.token, c.amount, c.points FROM claims c JOIN tasks t USING (task_id)
               WHERE c.account = ?""",
            checksummed,
        ):
            earned[row["token"]] = earned.get(row["token"], 0) + int(row["amount"])
            reputation += int(row["points"])
        return AccountView(
            address=checksummed,
            submissions=submissions,
            submission_count=counts["submissions"],
            claims=claims,
            claim_count=counts["claims"],
            offset=offset,
            limit=limit,
            earned={token: str(amount) for token, amount in sorted(earned.items())},
            reputation=str(reputation),
        )

    from marketplace.api_card import card_router  # here: it builds on this module's names

    app.include_router(card_router(reader))
    return app
