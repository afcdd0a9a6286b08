"""A snapshot of one connection's counters and path estimates."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionCounters", "ConnectionStats"]


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    state: str
    datagrams_sent: int
    datagrams_received: int
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    packets_lost: int
    """Ack-eliciting packets declared lost (threshold or timeout)."""
    retransmitted_fragments: int
    retransmitted_bytes: int
    """Payload bytes sent again: loss repair, probes and redundant bundling."""
    duplicates_received: int
    dropped_invalid: int
    """Datagrams that did not decode (CRC, msgpack, field checks)."""
    dropped_unexpected: int
    """Decodable datagrams refused: wrong address or id, implausible ACK, out of window."""
    dropped_unauthenticated: int
    """Sealed packets that did not open: forged, altered, or under a key we do not hold."""
    dropped_replayed: int
    """Packet numbers seen before or older than the replay window."""
    migrations: int
    """Times the peer's address changed (only after an authenticated, fresh packet)."""
    smoothed_rtt: float
    rtt_variance: float
    min_rtt: float
    rto: float
    congestion_window: int
    pacing_rate: float
    """Bytes per second."""
    bytes_in_flight: int
    send_buffered_bytes: int
    loss_rate: float
    """Fraction of the latest ack-eliciting packets lost, queue drops excluded (``lossrate``)."""
    burst_loss_rate: float
    """How often the packet after a lost one was lost too: above ``loss_rate`` on bursty paths."""
    thin_stream: bool
    """Application-limited with few fragments in flight: packets go out with copies."""


@dataclass(slots=True)
class ConnectionCounters:
    """What one connection counted so far (the live record behind :class:`ConnectionStats`)."""

    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_received: int = 0
    packets_lost: int = 0
    retransmitted_fragments: int = 0
    retransmitted_bytes: int = 0
    dropped_invalid: int = 0
    dropped_unexpected: int = 0
    dropped_unauthenticated: int = 0
    dropped_replayed: int = 0
    migrations: int = 0
