"""Loss recovery: which packets are in flight, which an ACK covers, which are lost, when to probe.

Packet numbers are never reused, so every acknowledgement yields an unambiguous
RTT sample (no Karn's rule needed). Loss is declared per RFC 9002 §6.1 (packet and
time thresholds); the probe timeout is RFC 6298's RTO with exponential backoff, the first
few expiries linear while the stream is thin (``linear_timeouts``). Every packet's fate also
feeds the loss estimator. Results go back to the caller as lists of acknowledged and lost
packets: the delivery callbacks of aioquic, not retransmission special cases.
"""

from __future__ import annotations

from .congestion import CongestionController, SentPacket
from .frames import AckFrame
from .lossrate import LossEstimator
from .rtt import CLOCK_GRANULARITY_S, RttEstimator

__all__ = ["AckResult", "Recovery"]

PACKET_THRESHOLD = 3  # RFC 9002 kPacketThreshold
HELD_ACK_FACTOR = 2  # an ACK reporting more than this many max_ack_delays (plus the clock's
# granularity) gives no RTT sample: a later packet triggered it (its predecessor, sent on time,
# was lost), and RFC 9002's cap would count the excess as path delay; under 30 % loss and
# jitter such samples doubled RTTVAR and pushed the RTO past 0.5 s
LATE_ACK_MEMORY = 64  # packets declared lost that a late ACK may still acknowledge (the
# newest ones: a spurious loss is one whose ACK was only delayed, by a few RTTs at most)


AckResult = tuple[list[SentPacket], list[SentPacket], list[SentPacket]]
"""What one ACK settled: the packets it acknowledged, those it shows lost, and those declared
lost before that it covers (a spurious loss: their frames arrived after all, though congestion
control counted them lost). A tuple: it is only unpacked, once per ACK."""


class Recovery:
    """Tracks ack-eliciting packets in flight for one connection."""

    __slots__ = (
        "bytes_in_flight",
        "congestion",
        "largest_acked",
        "largest_sent",
        "linear_timeouts",
        "loss",
        "loss_time",
        "probe_count",
        "recently_lost",
        "rtt",
        "sent",
        "time_of_last_ack_eliciting",
    )

    def __init__(self, rtt: RttEstimator, congestion: CongestionController) -> None:
        self.rtt = rtt
        self.congestion = congestion
        self.sent: dict[int, SentPacket] = {}
        """Ack-eliciting packets neither acknowledged nor declared lost, in packet-number order."""
        self.bytes_in_flight = 0
        self.largest_sent = -1
        self.largest_acked = -1
        self.loss_time: float | None = None
        self.probe_count = 0
        """Consecutive probe timeouts without an acknowledgement."""
        self.linear_timeouts = 0
        """How many of the first consecutive timeouts do not double the RTO (thin streams)."""
        self.loss = LossEstimator()
        self.time_of_last_ack_eliciting = 0.0
        self.recently_lost: dict[int, SentPacket] = {}
        """The last ``LATE_ACK_MEMORY`` packets declared lost, by number."""

    def on_packet_sent(self, number: int, now: float, packet: SentPacket | None) -> None:
        """Record a sent packet; ``packet`` is None for one that elicits no ACK (pure ACKs)."""
        self.largest_sent = number
        if packet is None:
            return
        self.congestion.on_packet_sent(packet, self.bytes_in_flight, now)
        self.sent[number] = packet
        self.bytes_in_flight += packet.size
        self.time_of_last_ack_eliciting = now

    def is_plausible(self, ack: AckFrame) -> bool:
        """RFC 5961 spirit: an ACK for a packet never sent is dropped, not believed."""
        return ack.ranges[0][1] <= self.largest_sent

    def on_ack(self, ack: AckFrame, now: float, ack_delay: float) -> AckResult:
        """Apply one plausible ACK frame."""
        sent = self.sent
        acked: list[SentPacket] = []
        largest = ack.ranges[0][1]
        newest = sent.get(largest)
        lowest = next(iter(sent), None)
        if lowest is not None:
            for first, last in ack.ranges:
                if last < lowest:
                    break
                for number in range(max(first, lowest), last + 1):
                    packet = sent.pop(number, None)
                    if packet is not None:
                        acked.append(packet)
        self.largest_acked = max(self.largest_acked, largest)
        if acked:
            rtt = self.rtt
            held = ack_delay > HELD_ACK_FACTOR * rtt.max_ack_delay + CLOCK_GRANULARITY_S
            if newest is not None and not held:
                rtt.update(now - newest.time_sent, ack_delay)
            self.probe_count = 0
            for packet in acked:
                self.bytes_in_flight -= packet.size
                self.loss.on_delivered(packet.number)
                self.congestion.on_packet_acked(packet, now)
        late: list[SentPacket] = []
        recently_lost = self.recently_lost
        if recently_lost:
            ranges = ack.ranges
            for number in [n for n in recently_lost if any(lo <= n <= hi for lo, hi in ranges)]:
                late.append(recently_lost.pop(number))
                self.loss.on_delivered(number)  # late, not lost: the estimate forgets the loss
        lost = self.detect_losses(now)
        self.congestion.on_ack_processed(now, self.rtt, self.bytes_in_flight)
        return acked, lost, late

    def detect_losses(self, now: float) -> list[SentPacket]:
        """Declare lost what the packet or time threshold condemns; set ``loss_time`` for the rest."""
        self.loss_time = None
        lost: list[SentPacket] = []
        largest_acked = self.largest_acked
        loss_delay = self.rtt.loss_delay()
        for number, packet in self.sent.items():
            if number > largest_acked:
                break
            deadline = packet.time_sent + loss_delay  # one expression for test and timer
            if deadline <= now or largest_acked - number >= PACKET_THRESHOLD:
                lost.append(packet)
            else:
                self.loss_time = deadline
                break
        for packet in lost:
            del self.sent[packet.number]
            self.bytes_in_flight -= packet.size
            self._declare_lost(packet)
        self._remember(lost)
        return lost

    def _declare_lost(self, packet: SentPacket) -> None:
        if not self.congestion.is_queue_drop(packet, self.rtt):
            self.loss.on_lost(packet.number)
        self.congestion.on_packet_lost(packet, self.rtt)

    def _remember(self, lost: list[SentPacket]) -> None:
        """Keep the newest lost packets for a late ACK (``AckResult``'s third list)."""
        recently_lost = self.recently_lost
        for packet in lost:
            recently_lost[packet.number] = packet
        while len(recently_lost) > LATE_ACK_MEMORY:
            del recently_lost[next(iter(recently_lost))]

    @property
    def backoff(self) -> int:
        """The RTO's doubling exponent: consecutive timeouts past the linear ones."""
        return max(self.probe_count - self.linear_timeouts, 0)

    def probe_deadline(self, awaiting_ack: bool) -> float | None:
        """When the retransmission timer fires, or None with nothing in flight, or with nothing
        in flight that still awaits its ACK (``awaiting_ack``: DATA or our graceful CLOSE).
        Copies whose DATA another copy delivered, and heartbeats, are left to the loss
        thresholds: probing for them would cost a thin stream a PING and an ACK per message
        and tell it nothing it needs."""
        if not self.sent or not awaiting_ack:
            return None
        return self.time_of_last_ack_eliciting + self.rtt.rto(self.backoff)

    def on_probe_timeout(self) -> list[SentPacket]:
        """The RTO fired: back off; from the second expiry on, everything in flight is lost.

        The first expiry is a tail-loss probe: the caller resends the oldest fragment
        without condemning the rest.
        """
        self.probe_count += 1
        if self.probe_count < 2:
            return []
        lost = list(self.sent.values())
        self.sent.clear()
        self.bytes_in_flight = 0
        self.loss_time = None
        for packet in lost:
            self._declare_lost(packet)
        self._remember(lost)
        return lost

    def discard(self) -> None:
        """Forget everything in flight: the connection failed and will not retransmit."""
        self.sent.clear()
        self.recently_lost.clear()
        self.bytes_in_flight = 0
        self.loss_time = None
