"""The accounting of one simulated market: what each agent was paid (from the agreed report's
leaves and the chain's Claimed events), every wei into and out of the escrow, the run's figures,
and the audit that the money adds up to the wei.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from marketplace.rules.messages import NodeRecord
from marketplace.wire.report import PayoutReport

from .market_setup import MarketConfig


@dataclass(frozen=True)
class Paid:
    """What some accounts were paid by the task, from the agreed report's leaves (wei), the
    reputation points of those leaves, and what the chain's Claimed events paid them."""

    data: int = 0
    compute: int = 0
    expertise: int = 0
    deposits: int = 0
    points: int = 0
    claimed: int = 0

    def __add__(self, other: Paid) -> Paid:
        return Paid(
            self.data + other.data,
            self.compute + other.compute,
            self.expertise + other.expertise,
            self.deposits + other.deposits,
            self.points + other.points,
            self.claimed + other.claimed,
        )

    @property
    def amount(self) -> int:
        return self.data + self.compute + self.expertise + self.deposits


@dataclass(frozen=True)
class Outcome:
    """One agent (or the data scientists) in one market."""

    name: str
    kind: str
    accounts: tuple[str, ...]
    submissions: int
    valid: int
    paid: Paid


@dataclass(frozen=True)
class Escrow:
    """Every wei into and out of the contract for the task, from the chain."""

    bounty: int
    deposits_in: int  # the deposit of every architecture and update submitted
    held: int  # the contract's balance before the first claim
    claimed: int  # Claimed events
    refunded: int  # Refunded events
    reclaimed: int  # Reclaimed events
    left: int  # the contract's balance after the reclaim

    @property
    def balanced(self) -> bool:
        """bounty + deposits in == claims + refunds + reclaim, to the wei, nothing left."""
        paid_out = self.claimed + self.refunded + self.reclaimed
        return self.held == self.bounty + self.deposits_in == paid_out and self.left == 0


@dataclass(frozen=True)
class MarketRun:
    config: MarketConfig
    agents: tuple[Outcome, ...]
    scientists: Outcome
    escrow: Escrow
    pools: int  # the data and compute pools, wei
    report: PayoutReport
    records: dict[int, NodeRecord]
    reputation: dict[str, int]  # account -> the chain's reputation after the claims
    winner_score: int  # validation rows right
    winner_accuracy: float  # on the test split
    central_accuracy: float | None  # the winner's architecture trained on the honest union
    seconds: float

    def share(self, outcomes: Iterable[Outcome]) -> float:
        """What these took of the data + compute pools."""
        return sum(o.paid.data + o.paid.compute for o in outcomes) / self.pools

    def of_kind(self, kind: str) -> list[Outcome]:
        return [o for o in self.agents if o.kind == kind]

    @property
    def sponsor_paid(self) -> int:
        """What the sponsor gave away: the bounty less what it reclaimed (the deposits paid
        back are the submitters' own money)."""
        return self.escrow.bounty - self.escrow.reclaimed


def audit(run: MarketRun) -> list[str]:
    """What is wrong with the run's money (nothing, for any sane reward rule): the escrow
    balanced to the wei, the sponsor paying at most the bounty, every agent claiming exactly
    its leaves and holding exactly their reputation points."""
    problems = []
    escrow = run.escrow
    if not escrow.balanced:
        problems.append(f"the escrow does not balance: {escrow}")
    beyond_deposits = sum(e.amount - e.deposits for e in run.report.payouts)
    if run.sponsor_paid > escrow.bounty or beyond_deposits > escrow.bounty:
        problems.append(
            f"the sponsor paid {run.sponsor_paid} (leaves less deposits: {beyond_deposits}), "
            f"over the bounty {escrow.bounty}"
        )
    for outcome in (*run.agents, run.scientists):
        paid = outcome.paid
        if paid.claimed != paid.amount:
            problems.append(f"{outcome.name} claimed {paid.claimed}, its leaves say {paid.amount}")
        points = sum(run.reputation[a] for a in outcome.accounts)
        if points != outcome.paid.points:
            problems.append(
                f"{outcome.name} holds {points} points, its leaves say {outcome.paid.points}"
            )
    return problems
