"""A snapshot of one connection's counters and path estimates."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parts a snapshot reads; they import this module's counters
    from .congestion import CongestionController
    from .pmtu import PathMtu
    from .recovery import Recovery
    from .rtt import RttEstimator
    from .sendbuffer import SendBuffer

__all__ = ["ConnectionCounters", "ConnectionStats", "snapshot"]


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
    path_datagram_size: int = 0
    """The largest datagram sent now: the path MTU discovery confirmed (``pmtu``)."""
    pmtu_probes_sent: int = 0
    """Path MTU probes sent (padded PINGs, PROTOCOL.md §14), in ``datagrams_sent`` too."""
    pmtu_probes_lost: int = 0
    """Probes not acknowledged in time (the size did not pass, or plain loss): never counted
    in ``packets_lost``."""
    pmtu_black_holes: int = 0
    """Times datagrams above the base vanished while smaller ones arrived: the size fell back."""
    datagram_frames_sent: int = 0
    """Unreliable datagrams (DATAGRAM frames, ``send_datagram``) sent, each once."""
    datagram_frames_lost: int = 0
    """Of those, in packets declared lost (never sent again)."""
    datagram_frames_dropped: int = 0
    """Ours never sent: the queue was full, they waited past ``datagram_max_age``, a newer
    latest-only one replaced them, or the path's datagrams shrank below them (those still
    queued when the connection ends are not counted)."""
    datagram_frames_received: int = 0
    """The peer's that arrived (delivered, or discarded as below)."""
    datagram_frames_discarded: int = 0
    """Of those, not delivered: older than the newest of their latest-only lane, a lane at or
    above ``datagram_lanes``, or pushed out of a full queue of unread ones."""


@dataclass(slots=True)
class ConnectionCounters:
    """What one connection counted so far (the live record behind :class:`ConnectionStats`:
    each field is the statistic of the same name)."""

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
    datagram_frames_sent: int = 0
    datagram_frames_lost: int = 0
    datagram_frames_dropped: int = 0
    datagram_frames_received: int = 0
    datagram_frames_discarded: int = 0


def snapshot(
    state: str,
    counters: ConnectionCounters,
    rtt: RttEstimator,
    recovery: Recovery,
    congestion: CongestionController,
    send: SendBuffer,
    pmtu: PathMtu,
    *,
    duplicates: int,
    thin: bool,
) -> ConnectionStats:
    """One connection's :class:`ConnectionStats`, read from its parts."""
    return ConnectionStats(
        **asdict(counters),  # every counter is the statistic of its name
        state=state,
        messages_sent=send.messages_pushed,
        duplicates_received=duplicates,
        smoothed_rtt=rtt.smoothed,
        rtt_variance=rtt.variance,
        min_rtt=rtt.min_rtt,
        rto=rtt.rto(recovery.backoff),
        congestion_window=congestion.congestion_window,
        pacing_rate=congestion.pacing_rate,
        bytes_in_flight=recovery.bytes_in_flight,
        send_buffered_bytes=send.buffered_bytes,
        loss_rate=recovery.loss.rate,
        burst_loss_rate=recovery.loss.burst_rate,
        thin_stream=thin,
        path_datagram_size=pmtu.size,
        pmtu_probes_sent=pmtu.probes_sent,
        pmtu_probes_lost=pmtu.probes_lost,
        pmtu_black_holes=pmtu.black_holes,
    )
