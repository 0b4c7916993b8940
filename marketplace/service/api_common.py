"""What the API's routers share: the read-only index reader, the cache of task views' bodies,
the path and query parameter types, the 404 shape, and the phase rule over a task's row.

Each router (`api_tasks`, `api_accounts`, `api_service`, `api_card`) imports from here and
`marketplace.service.api` assembles them; nothing here imports a router.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, create_model
from starlette.concurrency import run_in_threadpool

from marketplace.rules.messages import PAYOUT_PARTS, Phase
from marketplace.rules.phases import PhaseTimes
from marketplace.rules.schedule import RoundSchedule

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
MAX_ID = 2**63 - 1  # SQLite's integers
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


class ErrorDetail(BaseModel):
    """What a 4xx says (FastAPI's shape: `detail` holds the message)."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail}}


class _LeafRow(BaseModel):
    leaf: int
    account: str
    amount: str  # wei and points as decimal text: JSON numbers lose precision past 2**53
    points: str


_PART_FIELDS: dict[str, Any] = {part: (str, ...) for part in PAYOUT_PARTS}
_PartsRow = create_model("_PartsRow", **_PART_FIELDS)
"""One decimal text field per payout part (`messages.PayoutParts`), in its order."""


# mypy cannot check a base made at run time; the bases reversed give the fields' order (leaf,
# account, amount, points, the parts, proof, claimed), which the OpenAPI document shows.
class PayoutRow(_PartsRow, _LeafRow):  # type: ignore[misc,valid-type]
    proof: list[str]
    claimed: bool


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
    """The phase at chain time `now` of a row of TASKS, by the contract's rule (`PhaseTimes`)."""
    return PhaseTimes(
        schedule=schedule_of(task),
        reveal_window=task["reveal_window"],
        evaluation_window=task["evaluation_window"],
        claim_window=task["claim_window"],
        cancelled=bool(task["cancelled"]),
        revealed_at=task["revealed_at"],
        agreed_at=task["settled_at"],
        finalized_at=task["finalized_at"],
    ).phase_at(now)


# ------------------------------------------------------------------ the index


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


def no_task(reader: IndexReader, task_id: int) -> HTTPException:
    """The 404 for a task the index does not hold (yet: it says how far it has read)."""
    return HTTPException(404, f"no task {task_id} (indexed to block {reader.cursor()})")


def payout_rows(reader: IndexReader, sql: str, *params: Any) -> list[PayoutRow]:
    """Leaves from rows of report_payouts with a `claimed` column (NULL: not claimed)."""
    return [
        PayoutRow.model_validate(
            {**row, "proof": json.loads(row["proof"]), "claimed": row["claimed"] is not None}
        )
        for row in map(dict, reader.rows(sql, *params))
    ]


# ------------------------------------------------------------------ cached bodies


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


async def cached(
    reader: IndexReader,
    bodies: BodyCache,
    request: Request,
    key: tuple[Any, ...],
    build: Callable[[], BaseModel],
) -> Response:
    """The body of view `key` of task `key[1]` as of the index's current state."""
    state = reader.task_state(key[1])
    if state is None:
        raise no_task(reader, key[1])
    return (await bodies.get(key, state, build)).response(request)
