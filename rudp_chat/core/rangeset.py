"""A bounded set of integers kept as sorted, disjoint, inclusive ranges (received packet numbers)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

__all__ = ["RangeSet"]


class RangeSet:
    """Sorted disjoint ranges; when more than ``max_ranges`` exist the lowest are forgotten.

    Forgetting is safe for acknowledgements: the cumulative sequence number covers old data.
    """

    __slots__ = ("_firsts", "_lasts", "max_ranges")

    def __init__(self, max_ranges: int) -> None:
        self.max_ranges = max_ranges
        self._firsts: list[int] = []
        self._lasts: list[int] = []

    def __len__(self) -> int:
        return len(self._firsts)

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._firsts, value) - 1
        return i >= 0 and value <= self._lasts[i]

    def add(self, value: int) -> bool:
        """Add ``value``; returns False when it was already present."""
        firsts, lasts = self._firsts, self._lasts
        if lasts and value == lasts[-1] + 1:  # the common case: the next packet in order
            lasts[-1] = value
            return True
        i = bisect.bisect_right(firsts, value) - 1
        if i >= 0 and value <= lasts[i]:
            return False
        joins_left = i >= 0 and lasts[i] == value - 1
        joins_right = i + 1 < len(firsts) and firsts[i + 1] == value + 1
        if joins_left and joins_right:
            lasts[i] = lasts[i + 1]
            del firsts[i + 1], lasts[i + 1]
        elif joins_left:
            lasts[i] = value
        elif joins_right:
            firsts[i + 1] = value
        else:
            firsts.insert(i + 1, value)
            lasts.insert(i + 1, value)
            if len(firsts) > self.max_ranges:
                del firsts[0], lasts[0]
        return True

    def descending(self, limit: int) -> tuple[tuple[int, int], ...]:
        """The highest ``limit`` ranges as (first, last), highest first."""
        count = min(limit, len(self._firsts))
        return tuple((self._firsts[-1 - k], self._lasts[-1 - k]) for k in range(count))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._firsts, self._lasts, strict=True)

    @property
    def largest(self) -> int | None:
        return self._lasts[-1] if self._lasts else None
