"""The service's own routes: the dashboard page (static files of this package, under the
page headers) and `/health`, the indexed block next to the chain's head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import FileResponse

from marketplace.service.api_common import PAGE_HEADERS, IndexReader

DASHBOARD = Path(__file__).parent / "dashboard"  # the page and its script and style, no others


class Health(BaseModel):
    indexed_block: int
    chain_head: int | None  # None: the node did not answer
    chain_time: int | None  # the head's timestamp: what phases and deadlines are measured by
    lag: int | None


def service_router(
    reader: IndexReader, chain_head: Callable[[], tuple[int, int] | None]
) -> APIRouter:
    """The dashboard page and the health check (the app mounts the page's `/static` files)."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The dashboard: a page of this app's own static files that reads this API."""
        return FileResponse(DASHBOARD / "index.html", headers=PAGE_HEADERS)

    @router.get("/api/v1/health", response_model=Health, tags=["service"])
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

    return router
