"""Pacing: a token bucket that spaces datagrams at the congestion controller's rate."""

from __future__ import annotations

__all__ = ["INITIAL_PACING_DATAGRAMS", "PACING_MIN_WAIT_S", "Pacer"]

INITIAL_PACING_DATAGRAMS = 2  # the bucket starts with two datagrams: the smallest burst
# the controller ever allows (``CongestionController.pacing_burst``)
PACING_MIN_WAIT_S = 1e-4  # a pacing wake-up never rounds down to "now"


class Pacer:
    """Bytes that may leave now (``budget``: each tracked packet spends its size); refilled
    at ``pacing_rate`` up to ``pacing_burst``."""

    __slots__ = ("_time", "budget", "wake")

    def __init__(self, max_datagram_size: int, now: float) -> None:
        self.budget = float(INITIAL_PACING_DATAGRAMS * max_datagram_size)
        self._time = now
        self.wake: float | None = None
        """When data waiting for the bucket may leave (a timer), or None."""

    def refill(self, now: float, rate: float, burst: float) -> None:
        """Add what ``rate`` (bytes per second) earned since the last refill, up to ``burst``."""
        elapsed = now - self._time
        self._time = now
        self.budget = min(self.budget + elapsed * rate, burst)

    def wait(self, now: float, size: int, rate: float) -> None:
        """Data waits for ``size`` bytes of budget: set the wake-up when they will be there."""
        self.wake = now + max((size - self.budget) / rate, PACING_MIN_WAIT_S)
