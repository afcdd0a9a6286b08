"""A Reno reference flow for the simulator: what rudp's congestion controller must share with.

Why: "fair to TCP" needs a TCP to compare with, and the simulator has none. This is Reno as TCPs
run it, small enough to read in one sitting: packet-counted, no pacing, slow start and additive
increase (RFC 5681), the window halved once per loss episode, and SACK-based loss recovery
(RFC 6675): every ACK echoes the number of the packet that drew it, which tells the sender what
arrived (as SACK blocks do) and gives RTT samples as TCP timestamps would. A packet is lost
once three packets sent after it have arrived; the lost are sent again first, within the
window. An RFC 6298 retransmission timer (1 s before a sample, Linux's 200 ms floor, doubled on
each expiry) restarts slow start from one packet and marks everything unaccounted for as lost.
It is a yardstick for ``benchmarks/simulated.py``'s congestion rows and the tests, not part of the
library: both ends are sans-IO nodes (``rudp_chat.sim.network.Node``), the sender with a bulk
backlog that never runs dry.
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
REORDER_THRESHOLD: Final = 3  # packets arrived after one that make it lost (RFC 6675 DupThresh)
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
        """Congestion window, packets."""
        self.threshold = math.inf
        """Slow-start threshold, packets."""
        self.next_number = 0
        """The next new packet's number."""
        self.unacked = 0
        """The cumulative ACK: every packet below it has arrived."""
        self.retransmissions = 0
        self.timeouts = 0
        self.loss_episodes = 0
        """Times the window was halved by a loss detected from ACKs (not a timeout)."""
        self._arrived: set[int] = set()
        """Packets at or above ``unacked`` known to have arrived (the SACK scoreboard)."""
        self._highest_arrived = -1
        self._scanned = 0
        """Packets below this number were checked for loss already."""
        self._lost: list[int] = []
        """Deemed lost, waiting to be sent again (oldest first)."""
        self._recover = -1
        """The highest number sent when the current loss episode began (RFC 6675's RecoveryPoint):
        losses up to it belong to that episode and halve the window no further."""
        self._smoothed: float | None = None
        self._variance = 0.0
        self._rto = RTO_INITIAL_S
        self._deadline: float | None = None
        self._sent_at: dict[int, float] = {}
        """Send times of packets sent once only (Karn: no sample from a retransmission)."""
        self._padding = bytes(SEGMENT - SEQUENCE.size)

    @property
    def pipe(self) -> int:
        """Packets believed in the network (RFC 6675): sent, not known arrived, not deemed lost
        and waiting to be sent again."""
        return self.next_number - self.unacked - len(self._arrived) - len(self._lost)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take an ACK: note what arrived, grow the window, detect losses."""
        acked, arrived = ACK.unpack_from(data)
        sent = self._sent_at.pop(arrived, None)
        if sent is not None:
            self._sample(now - sent)
        fresh = arrived >= self.unacked and arrived not in self._arrived
        if fresh:
            self._arrived.add(arrived)
            self._highest_arrived = max(self._highest_arrived, arrived)
        if acked > self.unacked:
            for number in range(self.unacked, acked):
                self._arrived.discard(number)
            self.unacked = acked
            self._deadline = now + self._rto if self.next_number > acked else None
        if fresh and self.unacked > self._recover:  # outside a loss episode: Reno's growth
            self.window += 1 if self.window < self.threshold else 1 / self.window
        self._detect_losses()

    def _detect_losses(self) -> None:
        """Mark as lost each unarrived packet with ``REORDER_THRESHOLD`` arrivals above it; the
        first loss of an episode halves the window (RFC 6675 5, RFC 5681 3.1)."""
        limit = self._highest_arrived - REORDER_THRESHOLD + 1
        start = max(self._scanned, self.unacked)
        newly = [n for n in range(start, limit) if n not in self._arrived]
        self._scanned = max(self._scanned, limit)
        if not newly:
            return
        self._lost.extend(newly)
        if newly[0] > self._recover:
            self.loss_episodes += 1
            self.threshold = max((self.next_number - self.unacked) / 2, 2.0)
            self.window = self.threshold
            self._recover = self.next_number - 1

    def _sample(self, rtt: float) -> None:
        """RFC 6298 2.2-2.3: update the smoothed RTT, its variance and the timeout."""
        if self._smoothed is None:
            self._smoothed, self._variance = rtt, rtt / 2
        else:
            self._variance += VARIANCE_GAIN * (abs(self._smoothed - rtt) - self._variance)
            self._smoothed += RTT_GAIN * (rtt - self._smoothed)
        self._rto = min(RTO_MAX_S, max(RTO_MIN_S, self._smoothed + 4 * self._variance))

    def handle_timer(self, now: float) -> None:
        """The retransmission timer expired: slow start from one packet; everything sent and
        not known to have arrived is lost (RFC 6675 5.1)."""
        if self._deadline is None or now < self._deadline:
            return
        self.timeouts += 1
        self.threshold = max((self.next_number - self.unacked) / 2, 2.0)
        self.window = 1.0
        self._lost = [n for n in range(self.unacked, self.next_number) if n not in self._arrived]
        self._scanned = self.next_number
        self._recover = self.next_number - 1
        self._sent_at.clear()  # all of it may be sent again: no samples from it
        self._rto = min(RTO_MAX_S, 2 * self._rto)
        self._deadline = now + self._rto

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """The lost first, then new packets, while the window allows."""
        out: list[tuple[bytes, Address]] = []
        while self.pipe < self.window:
            if self._lost:
                number = self._lost.pop(0)
                if number < self.unacked or number in self._arrived:
                    continue  # arrived after all
                self.retransmissions += 1
            else:
                number = self.next_number
                self._sent_at[number] = now
                self.next_number += 1
            out.append((SEQUENCE.pack(number) + self._padding, self.peer))
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
