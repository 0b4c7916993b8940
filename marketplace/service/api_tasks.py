"""The task routes whose answer depends on the chain's time: the task list (filtered by
sponsor, token and phase, paginated) and one task with when each of its phases starts and
ends. The views that do not (tree, leaderboard, payouts) are in
`marketplace.service.api_task_views`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Annotated

from eth_utils.address import to_checksum_address
from fastapi import APIRouter, Query
from pydantic import BaseModel

from marketplace.service.api_common import (
    ADDRESS,
    MAX_ID,
    NOT_FOUND,
    TASKS,
    IndexReader,
    PhaseName,
    TaskIdParam,
    no_task,
    phase_of,
    schedule_of,
)


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


def task_page(
    reader: IndexReader,
    at: int,
    sponsor: str | None,
    token: str | None,
    phase: PhaseName | None,
    offset: int,
    limit: int,
) -> TaskPage:
    """Tasks, newest first: sponsor and token filter in SQL, the phase (a function of the
    time `at`) after it."""
    where, params = [], []
    if sponsor is not None:
        where.append("sponsor = ?")
        params.append(to_checksum_address(sponsor))
    if token is not None:
        where.append("token = ?")
        params.append(to_checksum_address(token))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = reader.rows(f"{TASKS} {clause} ORDER BY task_id DESC", *params)
    items = [summary(row, at) for row in rows]
    if phase is not None:
        items = [item for item in items if item.phase == phase]
    return TaskPage(
        items=items[offset : offset + limit], total=len(items), offset=offset, limit=limit
    )


def task_detail(reader: IndexReader, task_id: int, now: Callable[[], int]) -> TaskDetail:
    """One task at chain time `now()`, with when each phase starts and ends."""
    found = reader.rows(f"{TASKS} WHERE task_id = ?", task_id)
    if not found:
        raise no_task(reader, task_id)
    row = found[0]
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


def tasks_router(reader: IndexReader, now: Callable[[], int]) -> APIRouter:
    """The task list and one task, over the index `reader` reads, at chain time `now()`."""
    router = APIRouter()

    @router.get("/api/v1/tasks", response_model=TaskPage, tags=["tasks"])
    async def tasks(
        sponsor: Annotated[str | None, Query(pattern=ADDRESS)] = None,
        token: Annotated[str | None, Query(pattern=ADDRESS)] = None,
        phase: PhaseName | None = None,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> TaskPage:
        """Tasks, newest first, filtered by sponsor, bounty token and phase."""
        return task_page(reader, now(), sponsor, token, phase, offset, limit)

    @router.get(
        "/api/v1/tasks/{task_id}", response_model=TaskDetail, responses=NOT_FOUND, tags=["tasks"]
    )
    async def task(task_id: TaskIdParam) -> TaskDetail:
        """One task: its parameters, its phase and when each phase starts and ends."""
        return task_detail(reader, task_id, now)

    return router
