"""The delivered model's card over the API: `GET /api/v1/tasks/{id}/card` (the JSON twin of
MODEL_CARD.md, as the index's follower built it from public data) and a read-only page,
`GET /tasks/{id}/card`. The card holds digests and the sealed delivery's CID, never weights.

The page is server-rendered text: every value from the chain or a report goes in escaped,
under the dashboard's headers (its own stylesheet, no script at all).
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, HTTPException, Response
from starlette.responses import HTMLResponse

from marketplace.delivered.card import ModelCard
from marketplace.delivered.card_markdown import render_markdown
from marketplace.service.api_common import NOT_FOUND, PAGE_HEADERS, IndexReader, TaskIdParam

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/static/dashboard.css">
</head>
<body>
  <header><a href="/" class="brand">Gradient marketplace</a></header>
  <main>
    <p><a href="/#/tasks/{task_id}">&larr; task {task_id}</a>
       &middot; <a href="/api/v1/tasks/{task_id}/card">JSON</a></p>
    {body}
  </main>
  <footer class="muted">Read-only view of the chain index. The API is at <a href="/docs">/docs</a>.
  </footer>
</body>
</html>
"""
"""The page; `title` and `body` arrive escaped."""


def card_router(reader: IndexReader) -> APIRouter:
    """The card's JSON and page over the index `reader` reads."""
    router = APIRouter()

    def stored(task_id: int) -> str:
        """The card's JSON as the index keeps it (404 with a message when there is none)."""
        found = reader.rows(
            "SELECT c.card FROM tasks t LEFT JOIN cards c USING (task_id) WHERE t.task_id = ?",
            task_id,
        )
        if not found:
            raise HTTPException(404, f"no task {task_id} (indexed to block {reader.cursor()})")
        card: str | None = found[0]["card"]
        if card is None:
            raise HTTPException(
                404,
                f"task {task_id} has no model card yet: there is one once a root is agreed "
                "whose report delivers a model that holds",
            )
        return card

    @router.get(
        "/api/v1/tasks/{task_id}/card",
        response_model=ModelCard,
        responses=NOT_FOUND,
        tags=["tasks"],
    )
    async def card(task_id: TaskIdParam) -> Response:
        """The delivered model's card: the task, the winner and the digests that pin its
        weights and spec (not the weights), its validation score, the lineage from the
        architecture with every contributor's credited gain and payout (wei), and the
        transactions that settle it; `marketplace verify --card` checks it against the chain."""
        return Response(stored(task_id), media_type="application/json", headers=NO_CACHE)

    @router.get("/tasks/{task_id}/card", include_in_schema=False)
    async def card_page(task_id: TaskIdParam) -> HTMLResponse:
        """The card as MODEL_CARD.md, escaped, in a page."""
        try:
            model_card = ModelCard.model_validate_json(stored(task_id))
        except HTTPException as exc:
            title = f"Task {task_id}: no model card"
            body = f"<h1>{escape(title)}</h1>\n<p>{escape(str(exc.detail))}</p>"
            return page(task_id, title, body, exc.status_code)
        title = f"Model card: task {task_id}, {model_card.task_name}"
        markdown = render_markdown(model_card)
        body = f'<h1>{escape(title)}</h1>\n<pre class="panel mono">{escape(markdown)}</pre>'
        return page(task_id, title, body, 200)

    return router


NO_CACHE = {"cache-control": "no-cache"}


def page(task_id: int, title: str, body: str, status: int) -> HTMLResponse:
    """The page around `body` (HTML already escaped), with the dashboard's headers."""
    html = PAGE.format(title=escape(title), task_id=task_id, body=body)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
