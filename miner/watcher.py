"""`miner watch` as a library: one miner over every task of the market, a pass at a time.

Each pass submits to each open round the data fits and collects what each task owes. A task
whose spec the data does not fit is skipped for good (said once); a miner waiting for a round's
merge says so once per round; anything another party did that fails becomes a line, never an
exception out of the pass, so a long-running watch keeps going.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from marketplace.errors import MarketplaceError
from marketplace.protocol.tasks import read_spec
from miner.parents import Waiting
from miner.worker import Miner, load_private_data


@dataclass
class Watcher:
    """`miner` going over every task, with what it learned between passes."""

    miner: Miner
    data: Path
    fits: dict[int, bool] = field(default_factory=dict)  # task -> whether the data fits
    waited: set[tuple[int, int]] = field(default_factory=set)  # (task, round) said once

    def one_pass(self) -> list[str]:
        """Submit and collect on every task once; what happened, a line each."""
        lines: list[str] = []
        chain = self.miner.chain
        for task_id in range(1, chain.task_count() + 1):
            if self.miner.finished(task_id) or not self._fits(task_id, lines):
                continue
            try:
                lines += self._step(task_id)
            except MarketplaceError as exc:
                lines.append(f"[yellow]task {task_id}: {exc}[/]")
        return lines

    def _fits(self, task_id: int, lines: list[str]) -> bool:
        if task_id not in self.fits:
            try:
                load_private_data(self.data, read_spec(self.miner.chain, self.miner.store, task_id))
                self.fits[task_id] = True
            except MarketplaceError as exc:
                lines.append(f"task {task_id}: skipped, your data does not fit ({exc})")
                self.fits[task_id] = False
        return self.fits[task_id]

    def _step(self, task_id: int) -> list[str]:
        lines = []
        submission = self.miner.submit_round(task_id)
        if isinstance(submission, Waiting):
            if (task_id, submission.round) not in self.waited:  # once, not every pass
                self.waited.add((task_id, submission.round))
                lines.append(f"task {task_id} {submission}")
        elif submission is not None and not submission.found:
            lines.append(f"task {task_id} round {submission.round}: node {submission.node_id}")
        lines += [f"task {task_id}: {line}" for line in self.miner.collect(task_id)]
        return lines
