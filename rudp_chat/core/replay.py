"""The replay window (RFC 6479's sliding bitmap): which recent packet numbers arrived.

A packet number is accepted once. Numbers more than ``size`` below the highest seen are
refused outright: such a packet is older than anything reordering delivers, and whatever
it carried has been sent again under a new number.
"""

from __future__ import annotations

__all__ = ["REPLAY_WINDOW", "ReplayWindow"]

REPLAY_WINDOW = 4096  # packet numbers: more than a full send buffer of reordering at 1200 B


class ReplayWindow:
    """Bit ``i`` of the bitmap stands for packet number ``highest - i``."""

    __slots__ = ("_bits", "_mask", "highest", "size")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        if size < 1:
            raise ValueError("a replay window holds at least one packet number")
        self.size = size
        self.highest = -1
        self._bits = 0
        self._mask = (1 << size) - 1

    def is_fresh(self, number: int) -> bool:
        """Not seen yet and not too old: worth authenticating."""
        offset = self.highest - number
        if offset < 0:
            return True
        return offset < self.size and not (self._bits >> offset) & 1

    def mark(self, number: int) -> bool:
        """Record an authenticated ``number`` (checked fresh); True if it is the new highest."""
        offset = self.highest - number
        if offset >= 0:
            self._bits |= 1 << offset
            return False
        self._bits = ((self._bits << -offset) | 1) & self._mask if -offset < self.size else 1
        self.highest = number
        return True
