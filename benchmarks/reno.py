"""A Reno-like reference flow for the simulator: what rudp's congestion controller must share with.

Why: "fair to TCP" needs a TCP to compare with, and the simulator has none. This is the textbook
loss-based sender, small enough to read in one sitting: packet-counted, no SACK, no pacing,
an ACK for every datagram, echoing the number that drew it (RTT samples as TCP timestamps give
them: a hole filled late does not inflate one). Slow start and additive increase (RFC 5681), fast retransmit after
three duplicate ACKs and NewReno's fast recovery (RFC 6582: partial ACKs retransmit the next
hole; its "Impatient" timer, so a window with many losses ends in a timeout), and an RFC 6298 retransmission timer (1 s before a sample, 200 ms floor as Linux, doubled
on each expiry) after which it goes back to slow start from the first unacknowledged packet.
It is a benchmark's yardstick, not part of the library: both ends are sans-IO nodes
(``rudp_chat.sim.network.Node``) with a bulk backlog that never runs dry.
"""

from __future__ import annotations

import math
import struct
from typing import Final

from rudp_chat.sim.network import Address

__all__ = ["RenoReceiver", "RenoSender"]

SEGMENT: Final = 1200  # bytes per datagram, rudp's maximum, so both compete with equal packets
HEADER: Final = 40  # bytes of each datagram counted as header (TCP/IP's), the rest as payload
PAYLOAD: Final = SEGMENT - HEADER  # 1,160 B a packet (rudp: 1,122 B encrypted)
ACK_SIZE: Final = HEADER  # the reverse path is not the bottleneck
SEQUENCE: Final = struct.Struct("!Q")  # a data packet's number
ACK: Final = struct.Struct("!QQ")  # the next number expected, and the number that drew the ACK
INITIAL_WINDOW: Final = 10  # packets: Linux's IW10 (RFC 6928)
DUPLICATE_THRESHOLD: Final = 3  # duplicate ACKs that mean "lost" (RFC 5681)
RTO_INITIAL_S: Final = 1.0  # RFC 6298 before the first sample
RTO_MIN_S: Final = 0.2  # Linux's floor; RFC 6298 says 1 s
RTO_MAX_S: Final = 60.0  # RFC 6298's upper bound
RTT_GAIN: Final = 1 / 8  # RFC 6298's alpha
VARIANCE_GAIN: Final = 1 / 4  # RFC 6298's beta


class RenoSender:
    """Sends numbered ``SEGMENT``-byte datagrams to ``peer`` forever, Reno-paced by its ACKs."""

    def __init__(self, peer: Address) -> None:
        self.peer = peer
        self.window = float(INITIAL_WINDOW)
        """Congestion window, packets (inflated by duplicate ACKs during fast recovery)."""
        self.threshold = math.inf
        """Slow-start threshold, packets."""
        self.next_number = 0
        self.unacked = 0
        """The cumulative ACK: every packet below it has arrived."""
        self.duplicates = 0
        self.recovery_end: int | None = None
        """While in fast recovery: the highest number sent when it began (NewReno's recover)."""
        self.retransmissions = 0
        self.timeouts = 0
        self._smoothed: float | None = None
        self._variance = 0.0
        self._rto = RTO_INITIAL_S
        self._deadline: float | None = None
        self._sent_at: dict[int, float] = {}
        """Send times of packets sent once only (Karn: no sample from a retransmission)."""
        self._fresh = 0
        self._partial_seen = False
        """In fast recovery: whether a partial ACK has restarted the timer already."""
        """The first number never sent: below it, a send is a retransmission."""
        self._repeat: list[int] = []
        self._padding = bytes(SEGMENT - SEQUENCE.size)

    @property
    def in_flight(self) -> int:
        """Packets sent and not cumulatively acknowledged."""
        return self.next_number - self.unacked

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take an ACK: grow the window, or count a duplicate and maybe retransmit."""
        acked, echoed = ACK.unpack_from(data)
        sent = self._sent_at.pop(echoed, None)
        if sent is not None:
            self._sample(now - sent)
        if acked > self.unacked:
            self._advance(acked, now)
        elif acked == self.unacked and self.in_flight:
            self._duplicate()

    def _advance(self, acked: int, now: float) -> None:
        newly = acked - self.unacked
        for number in range(self.unacked, acked):
            self._sent_at.pop(number, None)
        self.unacked = acked
        self.duplicates = 0
        restart = True
        if self.recovery_end is not None:
            if acked > self.recovery_end:  # a full ACK: recovery is over (RFC 6582 3.2 step 3)
                self.window = self.threshold
                self.recovery_end = None
            else:  # partial: the next hole is lost too; deflate by what was acked, plus one
                self._retransmit(acked)
                self.window = max(1.0, self.window - newly + 1)
                restart = not self._partial_seen  # "Impatient" (RFC 6582 4.3): many holes
                self._partial_seen = True  # are left to the timer, not one per round trip
        else:
            for _ in range(newly):
                self.window += 1 if self.window < self.threshold else 1 / self.window
        if restart or not self.in_flight:
            self._deadline = now + self._rto if self.in_flight else None

    def _duplicate(self) -> None:
        self.duplicates += 1
        if self.recovery_end is not None:
            self.window += 1  # each duplicate ACK: a packet has left the network
        elif self.duplicates == DUPLICATE_THRESHOLD:
            self.threshold = max(self.in_flight / 2, 2.0)
            self.window = self.threshold + DUPLICATE_THRESHOLD
            self.recovery_end = self.next_number - 1
            self._partial_seen = False
            self._retransmit(self.unacked)

    def _sample(self, rtt: float) -> None:
        """RFC 6298 2.2-2.3: update the smoothed RTT, its variance and the timeout."""
        if self._smoothed is None:
            self._smoothed, self._variance = rtt, rtt / 2
        else:
            self._variance += VARIANCE_GAIN * (abs(self._smoothed - rtt) - self._variance)
            self._smoothed += RTT_GAIN * (rtt - self._smoothed)
        self._rto = min(RTO_MAX_S, max(RTO_MIN_S, self._smoothed + 4 * self._variance))

    def _retransmit(self, number: int) -> None:
        self._sent_at.pop(number, None)
        self._repeat.append(number)
        self.retransmissions += 1

    def handle_timer(self, now: float) -> None:
        """The retransmission timer expired: back to slow start from the first hole."""
        if self._deadline is None or now < self._deadline:
            return
        self.timeouts += 1
        self.threshold = max(self.in_flight / 2, 2.0)
        self.window = 1.0
        self.recovery_end = None
        self.duplicates = 0
        self._sent_at.clear()  # everything in flight may be sent again: no samples from it
        self._repeat.clear()
        self.next_number = self.unacked  # go back N, as a sender without SACK does
        self._rto = min(RTO_MAX_S, 2 * self._rto)
        self._deadline = now + self._rto

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Repeats first, then new packets while the window allows."""
        out = [(SEQUENCE.pack(number) + self._padding, self.peer) for number in self._repeat]
        self._repeat.clear()
        while self.in_flight < self.window:
            if self.next_number >= self._fresh:
                self._sent_at[self.next_number] = now
                self._fresh = self.next_number + 1
            else:
                self.retransmissions += 1
            out.append((SEQUENCE.pack(self.next_number) + self._padding, self.peer))
            self.next_number += 1
        if out and self._deadline is None:
            self._deadline = now + self._rto
        return out

    def get_timer(self) -> float | None:
        """When the retransmission timer expires, or None with nothing in flight."""
        return self._deadline


class RenoReceiver:
    """Acknowledges every datagram with the next number it expects; counts in-order bytes."""

    def __init__(self) -> None:
        self.expected = 0
        self.delivered_bytes = 0
        """Payload delivered in order, ``PAYLOAD`` bytes a packet."""
        self._ahead: set[int] = set()
        self._acks: list[tuple[bytes, Address]] = []
        self._padding = bytes(ACK_SIZE - ACK.size)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take a data packet; queue the cumulative ACK."""
        (number,) = SEQUENCE.unpack_from(data)
        if number == self.expected:
            self.expected += 1
            while self.expected in self._ahead:
                self._ahead.remove(self.expected)
                self.expected += 1
            self.delivered_bytes = self.expected * PAYLOAD
        elif number > self.expected:
            self._ahead.add(number)
        self._acks.append((ACK.pack(self.expected, number) + self._padding, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """The ACKs queued since the last call."""
        out, self._acks = self._acks, []
        return out

    def get_timer(self) -> float | None:
        """None: a receiver that only answers needs no timer."""
        return None

    def handle_timer(self, now: float) -> None:
        """Never due (see ``get_timer``)."""
