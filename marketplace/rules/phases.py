"""The contract's phase rule (`GradientMarketplace._phase`) in Python, stated once: where a task
is in its lifecycle at chain time `now`, from its schedule, windows and recorded times. The
contract's `phase` view is the authority on chain; this is for what only has the recorded times
(the API's index rows). Nothing here reads the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from marketplace.rules.messages import Phase
from marketplace.rules.schedule import RoundSchedule


@dataclass(frozen=True)
class PhaseTimes:
    """What a task's phase depends on: its schedule and windows (fixed at creation) and when it
    was revealed, agreed and finalized (None until then)."""

    schedule: RoundSchedule
    reveal_window: int
    evaluation_window: int
    claim_window: int
    cancelled: bool
    revealed_at: int | None
    agreed_at: int | None
    finalized_at: int | None

    def phase_at(self, now: int) -> Phase:
        """The phase at chain time `now`, decided in the contract's order."""
        if self.cancelled:
            return Phase.CANCELLED
        if self.finalized_at is not None:
            claims = now < self.finalized_at + self.claim_window
            return Phase.CLAIMS if claims else Phase.CLOSED
        if self.agreed_at is not None:
            return Phase.CHALLENGE
        rounds_end = self.schedule.end
        if now < rounds_end:
            return Phase.ROUNDS
        if self.revealed_at is None:
            reveal_deadline = rounds_end + self.reveal_window
            return Phase.REVEAL if now < reveal_deadline else Phase.UNREVEALED
        evaluation_deadline = self.revealed_at + self.evaluation_window  # from the reveal
        return Phase.EVALUATION if now < evaluation_deadline else Phase.UNSETTLED
