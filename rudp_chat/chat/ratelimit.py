"""A token bucket, with time as an argument: the server polices clients with it and a client
paces itself with it, so a well-behaved client never meets the server's limit."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second accrue up to ``burst``; each message spends one.

    Starts full. Raises ``ValueError`` unless ``rate > 0`` and ``burst >= 1``.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; returns whether there was."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def is_full(self, now: float) -> bool:
        """Whether the bucket has refilled completely: the sender has been calm for a while."""
        self._refill(now)
        return self._tokens >= self.burst

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until a token is available (0 if one is)."""
        self._refill(now)
        return max(0.0, (1 - self._tokens) / self.rate)
