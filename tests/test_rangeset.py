"""RangeSet against a plain ``set`` model, including its bound (the lowest ranges are forgotten)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rudp_chat.core.rangeset import RangeSet


def ranges_of(values: set[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers, ascending."""
    result: list[tuple[int, int]] = []
    for value in sorted(values):
        if result and result[-1][1] == value - 1:
            result[-1] = (result[-1][0], value)
        else:
            result.append((value, value))
    return result


class Model:
    """The specification: a set, of which only the highest ``max_ranges`` runs are kept."""

    def __init__(self, max_ranges: int) -> None:
        self.max_ranges = max_ranges
        self.values: set[int] = set()

    def add(self, value: int) -> bool:
        if value in self.values:
            return False
        self.values.add(value)
        runs = ranges_of(self.values)
        if len(runs) > self.max_ranges:
            first, last = runs[0]
            self.values -= set(range(first, last + 1))
        return True


def test_empty() -> None:
    rs = RangeSet(4)
    assert len(rs) == 0 and list(rs) == [] and rs.largest is None
    assert 0 not in rs
    assert rs.descending(10) == ()


def test_merging_from_both_sides() -> None:
    rs = RangeSet(8)
    for value in (1, 3, 5):
        assert rs.add(value)
    assert list(rs) == [(1, 1), (3, 3), (5, 5)]
    assert rs.add(2)  # joins 1 and 3
    assert list(rs) == [(1, 3), (5, 5)]
    assert rs.add(4)  # joins everything
    assert list(rs) == [(1, 5)]
    assert rs.add(0) and rs.add(6)
    assert list(rs) == [(0, 6)]
    assert not rs.add(3)
    assert rs.descending(1) == ((0, 6),)
    assert rs.largest == 6


def test_bound_forgets_the_lowest_range() -> None:
    rs = RangeSet(2)
    for value in (10, 20, 30):
        rs.add(value)
    assert list(rs) == [(20, 20), (30, 30)]
    assert 10 not in rs
    assert rs.add(10)  # forgotten, so "new" again, and it is the lowest: forgotten at once
    assert list(rs) == [(20, 20), (30, 30)]


def test_descending_returns_the_highest_ranges_first() -> None:
    rs = RangeSet(10)
    for value in (1, 2, 5, 9, 10, 11):
        rs.add(value)
    assert rs.descending(2) == ((9, 11), (5, 5))
    assert rs.descending(99) == ((9, 11), (5, 5), (1, 2))


@given(st.integers(1, 6), st.lists(st.integers(0, 60), max_size=120))
def test_matches_the_model(max_ranges: int, values: list[int]) -> None:
    rs = RangeSet(max_ranges)
    model = Model(max_ranges)
    for value in values:
        assert rs.add(value) == model.add(value), value
        assert list(rs) == ranges_of(model.values)
    for probe in range(-1, 62):
        assert (probe in rs) == (probe in model.values)
    assert rs.largest == (max(model.values) if model.values else None)


@given(st.lists(st.integers(0, 2**62 - 1), max_size=80), st.integers(0, 40))
def test_ranges_are_sorted_disjoint_non_adjacent_and_bounded(values: list[int], limit: int) -> None:
    rs = RangeSet(32)
    for value in values:
        rs.add(value)
    runs = list(rs)
    assert len(runs) == len(rs) <= 32
    for first, last in runs:
        assert first <= last
    for (_, low_last), (high_first, _) in itertools.pairwise(runs):
        assert high_first > low_last + 1
    descending = rs.descending(limit)
    assert list(descending) == list(reversed(runs))[:limit]


class RangeSetMachine(RuleBasedStateMachine):
    """Mostly-in-order arrivals with gaps and repeats: what packet numbers look like."""

    def __init__(self) -> None:
        super().__init__()
        self.rs = RangeSet(4)
        self.model = Model(4)
        self.next = 0

    @rule(step=st.integers(1, 3))
    def in_order(self, step: int) -> None:
        self.next += step
        assert self.rs.add(self.next) == self.model.add(self.next)

    @rule(back=st.integers(0, 12))
    def late_or_duplicate(self, back: int) -> None:
        value = max(self.next - back, 0)
        assert self.rs.add(value) == self.model.add(value)

    @invariant()
    def agrees(self) -> None:
        assert list(self.rs) == ranges_of(self.model.values)


TestRangeSetMachine = RangeSetMachine.TestCase


@pytest.mark.parametrize("max_ranges", [1, 2, 32])
def test_in_order_arrivals_stay_one_range(max_ranges: int) -> None:
    rs = RangeSet(max_ranges)
    for value in range(1_000):
        assert rs.add(value)
    assert list(rs) == [(0, 999)]
