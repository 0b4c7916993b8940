"""Shapley values of a round's updates: how much each one added to the round's merge.

A coalition is a set of updates (node ids, sorted); its value is the score of their merge, and
the empty coalition's is the score of the model the round started from (its frontier). The
Shapley value of an update is its marginal value averaged over every order in which the
updates could join, so the values add up to v(all) - v(none), two identical updates split
their value between them, and an update that only hurts gets a negative value (DESIGN.md,
"Credit for verified improvement").

Exact for up to `exact_max` updates (every coalition is scored: 2^k - 1 scorings); above that,
estimated from `permutations` orders drawn from a seed that is the updates' ids, with GTG-Shapley's
truncation: once a prefix scores within `truncation` of v(all), the rest of that order adds
nothing and is not scored. Everything is integers and the orders are derived from sha256, so
anyone with the same coalition scores recomputes the same values bit for bit: the evaluator
scores coalitions through a real scorer, the reward rule replays them from the report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import factorial

Coalition = tuple[int, ...]
"""Node ids, sorted ascending."""

Value = Callable[[Coalition], int]
"""The score of a coalition's merge (the empty coalition: the round's starting score)."""


@dataclass(frozen=True)
class Contributions:
    """Each update's Shapley value, scaled to an integer.

    Attributes:
        values: node id -> its Shapley value times `scale`.
        scale: n! when exact, the number of orders when sampled.
        coalitions: every coalition whose value was asked for, with that value (the empty
            coalition included): what a report records so that the values can be replayed.
    """

    values: dict[int, int]
    scale: int
    coalitions: dict[Coalition, int]

    def positive(self) -> dict[int, int]:
        """The updates that added something, with their (scaled) values."""
        return {node_id: value for node_id, value in self.values.items() if value > 0}


def shapley(
    ids: Sequence[int],
    value: Value,
    *,
    exact_max: int,
    permutations: int,
    truncation: int = 0,
) -> Contributions:
    """The Shapley values of `ids` under `value` (see the module docstring).

    Raises:
        ValueError: an id twice, a negative budget, or no orders to sample when they are needed.
    """
    members = tuple(sorted(ids))
    if len(set(members)) != len(members):
        raise ValueError(f"an update is listed twice: {list(ids)}")
    if exact_max < 0 or permutations < 0 or truncation < 0:
        raise ValueError("the Shapley budget must not be negative")
    asked: dict[Coalition, int] = {}

    def v(coalition: Coalition) -> int:
        if coalition not in asked:
            asked[coalition] = int(value(coalition))
        return asked[coalition]

    v(())
    if len(members) <= exact_max:
        values, scale = _exact(members, v), factorial(len(members))
    else:
        if permutations == 0:
            raise ValueError(f"{len(members)} updates need sampled orders, and the budget is 0")
        values, scale = _sampled(members, v, permutations, truncation), permutations
    return Contributions(values=values, scale=scale, coalitions=asked)


def orders(members: Coalition, count: int) -> list[Coalition]:
    """`count` orders of `members` drawn by Fisher-Yates from sha256 of the members' ids and a
    counter: fixed by the ids alone, on every machine and Python version."""
    seed = ",".join(map(str, members)).encode()
    drawn = []
    for index in range(count):
        order = list(members)
        for position in range(len(order) - 1, 0, -1):
            digest = hashlib.sha256(b"%s/%d/%d" % (seed, index, position)).digest()
            other = int.from_bytes(digest, "big") % (position + 1)
            order[position], order[other] = order[other], order[position]
        drawn.append(tuple(order))
    return drawn


def _exact(members: Coalition, v: Callable[[Coalition], int]) -> dict[int, int]:
    """phi_i * n! = sum over S not holding i of |S|! (n - |S| - 1)! (v(S + i) - v(S))."""
    n = len(members)
    values = dict.fromkeys(members, 0)
    for size in range(n):
        weight = factorial(size) * factorial(n - size - 1)
        for member in members:
            others = tuple(m for m in members if m != member)
            for subset in combinations(others, size):
                joined = tuple(sorted((*subset, member)))
                values[member] += weight * (v(joined) - v(subset))
    return values


def _sampled(
    members: Coalition, v: Callable[[Coalition], int], count: int, truncation: int
) -> dict[int, int]:
    """phi_i * count = sum over the orders of i's marginal value, truncated (GTG-Shapley)."""
    values = dict.fromkeys(members, 0)
    everyone = v(members)
    for order in orders(members, count):
        prefix: Coalition = ()
        before = v(prefix)
        for member in order:
            if truncation and abs(everyone - before) <= truncation:
                break  # what is left of this order adds (almost) nothing: not scored
            prefix = tuple(sorted((*prefix, member)))
            after = v(prefix)
            values[member] += after - before
            before = after
    return values
