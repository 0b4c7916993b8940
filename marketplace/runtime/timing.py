"""Where the time goes: a stopwatch with named categories, and proxies that charge a store's
or a chain client's calls to one (the demo's wall-time split, the per-update overhead)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Stopwatch:
    """Seconds and call counts per category; nested measures are charged to each level."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def measure(self, category: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[category] += time.perf_counter() - started
            self.calls[category] += 1

    def total(self, category: str) -> float:
        return self.seconds.get(category, 0.0)


class Timed:
    """Every method call on `target` charged to `category` of `watch` (attributes pass through)."""

    def __init__(self, target: Any, watch: Stopwatch, category: str) -> None:
        self._target = target
        self._watch = watch
        self._category = category

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._watch.measure(self._category):
                return value(*args, **kwargs)

        return timed
