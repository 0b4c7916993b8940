"""OutageGuard: a long-running program waits out an unreachable engine, then carries on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from marketplace.errors import ChainUnavailable, SpecError, StoreUnavailable
from marketplace.runtime.outage import OutageGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failing(*errors: Exception) -> Callable[[], str]:
    """A step that raises each of `errors` in turn, then returns "done"."""
    queue = list(errors)

    def step() -> str:
        if queue:
            raise queue.pop(0)
        return "done"

    return step


def test_a_pass_that_cannot_reach_an_engine_returns_none_and_says_so() -> None:
    events: list[str] = []
    clock = Clock()
    guard = OutageGuard(60, events.append, clock)
    step = failing(requests.exceptions.ConnectionError("refused"), StoreUnavailable("/add: down"))

    assert guard.attempt(step) is None
    clock.now += 2
    assert guard.attempt(step) is None
    clock.now += 1.5
    assert guard.attempt(step) == "done"
    assert events == [
        "waiting for the engines (Ethereum node: ConnectionError); trying again",
        "waiting for the engines (IPFS: /add: down); trying again",
        "the engines answer again after 3.5 s",
    ]


def test_an_outage_longer_than_the_limit_is_an_error() -> None:
    clock = Clock()
    guard = OutageGuard(10, lambda _: None, clock)
    down = requests.exceptions.ConnectionError("refused")
    assert guard.attempt(failing(down)) is None
    clock.now += 10.5
    with pytest.raises(ChainUnavailable, match="unreachable for 10 s: Ethereum node"):
        guard.attempt(failing(down))


def test_a_recovery_starts_the_next_outage_afresh() -> None:
    clock = Clock()
    guard = OutageGuard(10, lambda _: None, clock)
    down = requests.exceptions.Timeout("slow")
    assert guard.attempt(failing(down)) is None
    clock.now += 9
    assert guard.attempt(failing()) == "done"
    clock.now += 9
    assert guard.attempt(failing(down)) is None  # 18 s after the first


def test_other_errors_are_not_an_outage() -> None:
    guard = OutageGuard(10, lambda _: None, Clock())
    with pytest.raises(SpecError):
        guard.attempt(failing(SpecError("bad spec")))


def test_retry_pauses_between_tries_and_returns_the_result_even_if_none() -> None:
    pauses: list[float] = []
    guard = OutageGuard(60, lambda _: None, Clock())
    step = failing(StoreUnavailable("a"), StoreUnavailable("b"))
    assert guard.retry(step, 0.2, pauses.append) == "done"
    assert pauses == [0.2, 0.2]
    assert guard.retry(lambda: None, 0.2, pauses.append) is None
    assert pauses == [0.2, 0.2]
