"""The account route: an account's submissions (with their scores) and claims, a page of
each, and what it earned per bounty token and its reputation over every task."""

from __future__ import annotations

from typing import Annotated

from eth_utils.address import to_checksum_address
from fastapi import APIRouter, Query
from pydantic import BaseModel

from marketplace.service.api_common import (
    MAX_ID,
    AddressParam,
    IndexReader,
    PayoutRow,
    epsilon_of,
    payout_rows,
)


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


def submissions_of(reader: IndexReader, account: str, offset: int, limit: int) -> list[Submission]:
    """A page of `account`'s nodes, each with the score of the first report that covers it."""
    return [
        Submission.model_validate({**row, "epsilon": epsilon_of(row)})
        for row in reader.rows(
            """SELECT n.*, (SELECT v.score FROM report_nodes v
                 WHERE v.task_id = n.task_id AND v.node_id = n.node_id
                 ORDER BY v.block_number LIMIT 1) AS score
               FROM nodes n WHERE n.author = ? ORDER BY n.task_id, n.node_id
               LIMIT ? OFFSET ?""",
            account,
            limit,
            offset,
        )
    ]


def claims_of(reader: IndexReader, account: str, offset: int, limit: int) -> list[PayoutRow]:
    """A page of the leaves `account` claimed."""
    return payout_rows(
        reader,
        """SELECT p.*, c.leaf AS claimed FROM claims c JOIN report_payouts p
           ON p.task_id = c.task_id AND p.leaf = c.leaf AND p.account = c.account
           WHERE c.account = ? GROUP BY c.task_id, c.leaf ORDER BY c.task_id, c.leaf
           LIMIT ? OFFSET ?""",
        account,
        limit,
        offset,
    )


def earnings_of(reader: IndexReader, account: str) -> tuple[dict[str, str], str]:
    """(claimed amounts by token, points claimed), as decimal strings, over every task."""
    earned: dict[str, int] = {}
    reputation = 0
    for row in reader.rows(
        """SELECT t.token, c.amount, c.points FROM claims c JOIN tasks t USING (task_id)
           WHERE c.account = ?""",
        account,
    ):
        earned[row["token"]] = earned.get(row["token"], 0) + int(row["amount"])
        reputation += int(row["points"])
    return {token: str(amount) for token, amount in sorted(earned.items())}, str(reputation)


def account_view(reader: IndexReader, address: str, offset: int, limit: int) -> AccountView:
    checksummed = to_checksum_address(address)
    submissions = submissions_of(reader, checksummed, offset, limit)
    claims = claims_of(reader, checksummed, offset, limit)
    (counts,) = reader.rows(
        """SELECT (SELECT count(*) FROM nodes WHERE author = ?) AS submissions,
                  (SELECT count(*) FROM claims WHERE account = ?) AS claims""",
        checksummed,
        checksummed,
    )
    earned, reputation = earnings_of(reader, checksummed)
    return AccountView(
        address=checksummed,
        submissions=submissions,
        submission_count=counts["submissions"],
        claims=claims,
        claim_count=counts["claims"],
        offset=offset,
        limit=limit,
        earned=earned,
        reputation=reputation,
    )


def accounts_router(reader: IndexReader) -> APIRouter:
    """The account view over the index `reader` reads."""
    router = APIRouter()

    @router.get("/api/v1/accounts/{address}", response_model=AccountView, tags=["accounts"])
    async def account(
        address: AddressParam,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AccountView:
        """An account's submissions (with their scores) and claims, a page of each (oldest
        first), and what it earned, per bounty token, and its reputation over all of them."""
        return account_view(reader, address, offset, limit)

    return router
