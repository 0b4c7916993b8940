"""The round schedule every role shares, in chain time (seconds), as the contract computes it.

Round r of a task opens at `start + r * duration` and closes when round r + 1 opens. The first
quarter of each round r >= 1 is its merge window: round r - 1's merge is due by its end (the
evaluators post it as soon as round r - 1 closes, which the contract allows no earlier), and so
are a secure aggregation group's mask seeds. A miner does not train for round r inside the
window until it can read that merge; once the window has passed it builds on the best it can
read (docs/DESIGN.md, "The round race"). A secure aggregation round's joins close at its
midpoint (`joinRound`). Nothing here reads the chain: `TaskState.schedule` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass

MERGE_WINDOW_FRACTION = 4  # the merge window is the first 1/4 of a round (rounded down)


@dataclass(frozen=True)
class RoundSchedule:
    """When each of a task's `rounds` rounds of `duration` seconds from `start` opens, merges,
    reaches its midpoint and closes (integer division as in Solidity)."""

    start: int
    duration: int
    rounds: int

    def opens(self, round_index: int) -> int:
        return self.start + round_index * self.duration

    def closes(self, round_index: int) -> int:
        """The first second round `round_index` no longer takes updates: merges may be posted."""
        return self.opens(round_index + 1)

    def merge_due(self, round_index: int) -> int:
        """The end of round `round_index`'s merge window: the previous round's merge (and its
        survivors' mask seeds) is due by then, and miners wait for it no longer."""
        return self.opens(round_index) + self.duration // MERGE_WINDOW_FRACTION

    def midpoint(self, round_index: int) -> int:
        """The first second nobody can join round `round_index` (the masked set is fixed)."""
        return self.opens(round_index) + self.duration // 2

    @property
    def end(self) -> int:
        """When the last round closes."""
        return self.opens(self.rounds)

    def round_at(self, now: int) -> int | None:
        """The round open at `now`, None before the first opens or after the last closes."""
        if now < self.start or now >= self.end:
            return None
        return (now - self.start) // self.duration

    def closed(self, now: int) -> range:
        """The rounds closed at `now`, in order."""
        if now < self.start:
            return range(0)
        return range(min(self.rounds, (now - self.start) // self.duration))

    def in_merge_window(self, round_index: int, now: int) -> bool:
        """Whether `now` is inside round `round_index`'s merge window (never for round 0: no
        round before it has a merge to wait for)."""
        return round_index > 0 and self.opens(round_index) <= now < self.merge_due(round_index)
