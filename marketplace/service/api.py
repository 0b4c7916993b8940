"""The marketplace service's read-only REST API over the chain index
(`marketplace.service.indexer`), versioned under `/api/v1`, OpenAPI at `/docs`: tasks (filtered,
paginated), one task with its phases, its model tree, leaderboard and payout table (every leaf
with its Merkle proof, so a claimant needs nothing else), the delivered model's card
(`marketplace.service.api_card`, with a read-only page per task), an account's submissions and
earnings, and `/health`.

Amounts are decimal strings of base units (wei): JSON numbers lose precision past 2**53.
Bad ids, addresses or parameters are 4xx with a message; the database is opened read-only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from marketplace.service.api_accounts import accounts_router
from marketplace.service.api_card import card_router
from marketplace.service.api_common import (
    BODY_CACHE_SIZE,
    PAGE_HEADERS,
    Body,
    BodyCache,
    IndexReader,
    PhaseName,
)
from marketplace.service.api_service import DASHBOARD, service_router
from marketplace.service.api_task_views import task_views_router
from marketplace.service.api_tasks import tasks_router

# The routers live beside their queries (`api_tasks`, `api_task_views`, `api_accounts`,
# `api_service`, `api_card`, sharing `api_common`); these names stay importable from here.
__all__ = [
    "HEAD_VARIABLE",
    "INDEX_VARIABLE",
    "PAGE_HEADERS",
    "Body",
    "HeadFile",
    "PhaseName",
    "app_from_environment",
    "create_app",
]


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

    app.mount("/static", StaticFiles(directory=DASHBOARD), name="static")
    # In this order: it is the order of the OpenAPI document's paths.
    app.include_router(service_router(reader, chain_head))
    app.include_router(tasks_router(reader, now))
    app.include_router(task_views_router(reader, bodies))
    app.include_router(accounts_router(reader))
    app.include_router(card_router(reader))
    return app
