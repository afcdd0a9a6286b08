"""Round-trip time estimation and the retransmission timeout (RFC 6298, with RFC 9002's ack delay)."""

from __future__ import annotations

__all__ = ["CLOCK_GRANULARITY_S", "RttEstimator"]

CLOCK_GRANULARITY_S = 0.001  # RFC 6298's G: event loops wake with about 1 ms resolution


class RttEstimator:
    """SRTT and RTTVAR from unambiguous samples (packet numbers are never reused).

    RTO = clamp(SRTT + max(G, 4·RTTVAR) + max_ack_delay, min_rto, max_rto) (RFC 6298 §2),
    doubled per consecutive timeout up to ``max_rto`` (§5.5).
    """

    __slots__ = (
        "_has_sample",
        "latest",
        "max_ack_delay",
        "max_rto",
        "min_rto",
        "min_rtt",
        "smoothed",
        "variance",
    )

    def __init__(
        self, initial_rtt: float, min_rto: float, max_rto: float, max_ack_delay: float
    ) -> None:
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.max_ack_delay = max_ack_delay
        self.smoothed = initial_rtt
        self.variance = initial_rtt / 2
        self.latest = initial_rtt
        self.min_rtt = initial_rtt
        self._has_sample = False

    @property
    def has_sample(self) -> bool:
        return self._has_sample

    def update(self, sample: float, ack_delay: float) -> None:
        """Fold in one RTT sample; ``ack_delay`` (capped) is removed unless it would undercut min_rtt."""
        sample = max(sample, CLOCK_GRANULARITY_S / 10)
        self.latest = sample
        if not self._has_sample:
            self._has_sample = True
            self.min_rtt = self.smoothed = sample
            self.variance = sample / 2
            return
        self.min_rtt = min(self.min_rtt, sample)
        ack_delay = min(ack_delay, self.max_ack_delay)
        adjusted = sample - ack_delay if sample - ack_delay >= self.min_rtt else sample
        self.variance = 0.75 * self.variance + 0.25 * abs(self.smoothed - adjusted)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted

    def rto(self, backoff: int = 0) -> float:
        """The retransmission timeout after ``backoff`` consecutive expiries."""
        base = self.smoothed + max(CLOCK_GRANULARITY_S, 4 * self.variance) + self.max_ack_delay
        base = min(max(base, self.min_rto), self.max_rto)
        return min(base * float(2 ** min(backoff, 16)), self.max_rto)

    def loss_delay(self) -> float:
        """RFC 9002 §6.1.2 time threshold: 9/8 of the larger of SRTT and the latest sample."""
        return max(1.125 * max(self.smoothed, self.latest), CLOCK_GRANULARITY_S)
