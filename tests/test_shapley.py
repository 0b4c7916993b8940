"""Shapley values of a round's updates (marketplace/rules/shapley.py): exact, sampled,
replayable."""

from __future__ import annotations

from itertools import combinations

import pytest

from marketplace.rules.shapley import Coalition, orders, shapley

BASE = 100


def additive(gains: dict[int, int]) -> dict[Coalition, int]:
    """Every coalition of `gains`' ids, valued at the base plus the sum of its members' gains."""
    ids = sorted(gains)
    return {
        subset: BASE + sum(gains[i] for i in subset)
        for size in range(len(ids) + 1)
        for subset in combinations(ids, size)
    }


def test_exact_values_of_an_additive_game_are_each_update_gain_times_n_factorial() -> None:
    table = additive({3: 10, 5: 4, 9: -2})
    result = shapley([9, 3, 5], table.__getitem__, exact_max=6, permutations=0)
    assert result.scale == 6
    assert result.values == {3: 60, 5: 24, 9: -12}
    assert result.positive() == {3: 60, 5: 24}
    assert len(result.coalitions) == 8  # every coalition, the empty one included


def test_two_identical_updates_split_the_value_one_of_them_adds() -> None:
    # 1 and 2 are copies: either alone adds 12, both add 12; 3 adds 6 on its own account.
    def v(coalition: Coalition) -> int:
        copies = 12 if {1, 2} & set(coalition) else 0
        return BASE + copies + (6 if 3 in coalition else 0)

    result = shapley([1, 2, 3], v, exact_max=6, permutations=0)
    assert {i: value / result.scale for i, value in result.values.items()} == {1: 6, 2: 6, 3: 6}
    assert sum(result.values.values()) == result.scale * (v((1, 2, 3)) - v(()))


def test_a_junk_update_that_hurts_only_alongside_another_gets_a_negative_value() -> None:
    # Leaving out 7 or 8 alone changes nothing (both dilute the same way), together they hurt.
    def v(coalition: Coalition) -> int:
        good = 20 if 1 in coalition else 0
        junk = len({7, 8} & set(coalition))
        return BASE + good - (0 if junk < 2 or good == 0 else 9) - (5 if junk and not good else 0)

    result = shapley([1, 7, 8], v, exact_max=6, permutations=0)
    assert result.values[7] < 0 and result.values[8] < 0
    assert result.values[7] == result.values[8]
    assert sum(result.values.values()) == result.scale * (v((1, 7, 8)) - BASE)


def test_sampled_values_replay_bit_for_bit_from_the_recorded_coalitions() -> None:
    gains = {i: (i * 7) % 11 - 3 for i in range(1, 10)}
    table = additive(gains)
    first = shapley(list(gains), table.__getitem__, exact_max=6, permutations=5)
    replayed = shapley(list(gains), first.coalitions.__getitem__, exact_max=6, permutations=5)
    assert replayed == first
    assert first.scale == 5
    # An additive game: every order gives each update exactly its own gain.
    assert first.values == {i: 5 * gain for i, gain in gains.items()}
    assert len(first.coalitions) <= 1 + 5 * 9


def test_truncation_stops_an_order_once_its_prefix_is_close_to_everyone() -> None:
    gains = {1: 50, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 1}
    table = additive(gains)
    full = shapley(list(gains), table.__getitem__, exact_max=0, permutations=4)
    cut = shapley(list(gains), table.__getitem__, exact_max=0, permutations=4, truncation=1)
    assert full.values[1] == cut.values[1] == 4 * 50
    assert len(cut.coalitions) < len(full.coalitions)


def test_orders_are_fixed_by_the_ids_alone() -> None:
    assert orders((1, 2, 3, 4), 3) == orders((1, 2, 3, 4), 3)
    assert orders((1, 2, 3, 4), 3) == [(1, 4, 2, 3), (1, 2, 3, 4), (1, 4, 2, 3)]
    assert all(sorted(order) == [1, 2, 3, 4] for order in orders((1, 2, 3, 4), 20))


def test_a_missing_coalition_in_a_replay_is_a_lookup_error() -> None:
    table = additive({1: 3, 2: 4})
    del table[(1,)]
    with pytest.raises(KeyError):
        shapley([1, 2], table.__getitem__, exact_max=6, permutations=0)


@pytest.mark.parametrize(
    ("ids", "exact_max", "permutations"),
    [([1, 1], 6, 0), ([1, 2], -1, 0), ([1, 2, 3], 2, 0)],
)
def test_bad_inputs_are_value_errors(ids: list[int], exact_max: int, permutations: int) -> None:
    with pytest.raises(ValueError):
        shapley(ids, lambda coalition: 0, exact_max=exact_max, permutations=permutations)
