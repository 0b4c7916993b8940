"""Long-running programs (the miner, the evaluator) ride out an engine's outage: a pass over
the chain that fails because the Ethereum node or the IPFS node cannot be reached is logged
and tried again at the next poll, until the outage has lasted `limit` seconds.

Every pass starts again from the chain and the state file, so a pass cut off half-way is safe
to repeat: nothing is submitted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

from marketplace.errors import ChainUnavailable, StoreUnavailable

T = TypeVar("T")

UNREACHABLE: tuple[type[Exception], ...] = (
    StoreUnavailable,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
"""What an engine that is down (or restarting) looks like to a program."""


class OutageGuard:
    """Runs passes of a loop; one that fails on an unreachable engine returns None instead."""

    def __init__(
        self,
        limit: float,
        on_event: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.on_event = on_event
        self.clock = clock
        self._since: float | None = None

    def attempt(self, step: Callable[[], T]) -> T | None:
        """`step`'s result; None if an engine could not be reached (logged)."""
        ran, result = self._run(step)
        return result if ran else None

    def retry(
        self, step: Callable[[], T], pause: float, sleep: Callable[[float], None] = time.sleep
    ) -> T:
        """`step`'s result, trying again every `pause` seconds while an engine is away."""
        while True:
            ran, result = self._run(step)
            if ran:
                return result  # type: ignore[return-value]  # T itself may be Optional
            sleep(pause)

    def _run(self, step: Callable[[], T]) -> tuple[bool, T | None]:
        try:
            result = step()
        except UNREACHABLE as exc:
            now = self.clock()
            if self._since is None:
                self._since = now
            waited = now - self._since
            if waited > self.limit:
                raise ChainUnavailable(
                    f"an engine has been unreachable for {waited:.0f} s: {_brief(exc)}"
                ) from exc
            self.on_event(f"waiting for the engines ({_brief(exc)}); trying again")
            return False, None
        if self._since is not None:
            self.on_event(f"the engines answer again after {self.clock() - self._since:.1f} s")
            self._since = None
        return True, result


def _brief(exc: Exception) -> str:
    if isinstance(exc, StoreUnavailable):
        return f"IPFS: {exc}"
    return f"Ethereum node: {type(exc).__name__}"
