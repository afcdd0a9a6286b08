"""Congestion control: a model-based (BBR-style) controller that tells random loss from congestion.

Loss-based controllers (Reno, CUBIC) halve their rate on every loss, so 5 % random
loss on a wireless hop holds them near 1 Mbit/s whatever the capacity. This one
paces at the bottleneck bandwidth it measures (a windowed maximum of delivery-rate
samples) and caps the data in flight at twice the bandwidth-delay product. A loss
seen while the path shows no queue (latest RTT close to the minimum) is classed as
random: the lost datagram still crossed the bottleneck, so it counts as delivered
for the bandwidth model and cuts nothing. A loss with a standing queue is a queue drop:
congestion. A round trip that loses more than 2 % of its bytes to queue drops bounds the
data in flight (``inflight_hi``, as BBRv2 does) to 0.7 x what was in flight, and the bound
then grows by one datagram a round trip, as Reno's window does: a model alone (2 x BDP in
flight) keeps a drop-tail queue full and starves a loss-based flow sharing it.
See PROTOCOL.md, "Congestion control".
"""

from __future__ import annotations

import enum
import math
from collections import deque

from .delivery import DeliveryHandler
from .rtt import RttEstimator

__all__ = ["CongestionController", "SentPacket"]

STARTUP_GAIN = 2 / math.log(2)  # doubles the delivery rate each round (BBR)
PROBE_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # one probe-up, one drain, six cruise
CWND_GAIN = 2.0  # room for delayed and stretched acks
FULL_BW_GROWTH = 1.25  # startup ends when three rounds grow the estimate by less than this
FULL_BW_ROUNDS = 3
BW_FILTER_ROUNDS = 10  # the bandwidth estimate is the max over this many round trips
MIN_RTT_WINDOW_S = 10.0  # the min RTT is the minimum of the samples this recent
MIN_RTT_STEP_S = MIN_RTT_WINDOW_S / 64  # rising samples closer than this share a slot (bound)
RANDOM_LOSS_QUEUE_FRACTION = 0.5  # a loss is random while queueing delay < this × min RTT
RANDOM_LOSS_QUEUE_FLOOR_S = 0.002  # ... or less than 2 ms, whichever is larger
MIN_CWND_PACKETS = 4
MIN_RATE_INTERVAL_S = 1e-6  # a delivery-rate sample over less measures the clock, not the path
AGGREGATION_CAP_S = 0.01  # ack bursts are credited up to 10 ms of bandwidth: batching receivers
# need well under that, and a larger credit only builds queues on slow links
PACING_BURST_S = 0.002  # bytes worth this much time may leave back-to-back
LOSS_THRESHOLD = 0.02  # BBRv2's BBRLossThresh: a round losing more of its bytes to queue drops
# is congested; below it, a few drops as a probe fills the queue are the price of probing
INFLIGHT_BETA = 0.7  # BBRv2's BBRBeta: a congested round bounds inflight to this x its peak
INFLIGHT_GROWTH_PACKETS = 1  # the bound grows this much a round without congestion: Reno's
# additive increase, so a Reno flow sharing the queue keeps its share (RFC 5681)


class SentPacket:
    """An ack-eliciting packet in flight, with the stamps delivery-rate estimation needs
    (:meth:`CongestionController.on_packet_sent` sets them). A plain slotted class, not a
    dataclass: one is made per packet sent, and a dataclass's generated ``__init__`` stays
    interpreted in the compiled build (:mod:`.slotted`)."""

    __slots__ = (
        "app_limited",
        "delivered",
        "delivered_time",
        "first_sent_time",
        "handlers",
        "number",
        "size",
        "time_sent",
    )

    def __init__(
        self,
        number: int,
        time_sent: float,
        size: int,
        handlers: tuple[DeliveryHandler, ...] = (),
    ) -> None:
        self.number = number
        self.time_sent = time_sent
        self.size = size
        self.handlers = handlers
        """Called with the packet's fate, one per frame that cares (see ``delivery``)."""
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.app_limited = False


class RoundsMax:
    """The maximum of the samples of the last ``rounds`` round trips (a monotonic deque of
    ``(round, value)`` with decreasing values: BBR's windowed-max filter)."""

    __slots__ = ("_samples", "rounds")

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self._samples: deque[tuple[int, float]] = deque()

    def update(self, round_count: int, value: float) -> float:
        """Add the sample of round ``round_count``; returns the maximum over the window."""
        samples = self._samples
        while samples and samples[-1][1] <= value:
            samples.pop()
        samples.append((round_count, value))
        while samples[0][0] <= round_count - self.rounds:
            samples.popleft()
        return samples[0][1]


class Mode(enum.Enum):
    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"


class CongestionController:
    """Decides how much may be in flight (``congestion_window``) and how fast it leaves (``pacing_rate``)."""

    def __init__(
        self, max_datagram_size: int, initial_window_packets: int, initial_rtt: float
    ) -> None:
        self.mtu = max_datagram_size
        self.mode = Mode.STARTUP
        self.congestion_window = initial_window_packets * max_datagram_size
        self.pacing_rate = STARTUP_GAIN * self.congestion_window / initial_rtt
        self.bottleneck_bandwidth = 0.0
        self._bw_filter = RoundsMax(BW_FILTER_ROUNDS)
        self._min_rtt = math.inf
        self._rtt_samples: deque[tuple[float, float]] = deque()  # (time, rtt), rtts increasing
        # delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation)
        self.delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._app_limited_until = 0
        self._sample_prior_delivered = -1
        self._sample_interval = 0.0
        self._sample_app_limited = False
        # round counting
        self.round = 0
        self._next_round_delivered = 0
        self._round_started = False
        # startup exit
        self._full_bw = 0.0
        self._full_bw_rounds = 0
        # probe_bw cycling
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._pacing_gain = STARTUP_GAIN
        self._cwnd_gain = STARTUP_GAIN
        self._lost_in_round = False
        # the congestive-loss bound (BBRv2's inflight_hi): inf until a round is congested
        self.inflight_hi = math.inf
        self._round_start_delivered = 0
        self._round_queue_lost = 0  # bytes of this round's packets lost to queue drops
        self._round_peak_inflight = 0  # the most in flight this round, bytes
        self._bound_time = -math.inf  # losses of packets sent before this were already answered
        # ack aggregation: ACKs that arrive in bursts (batched receivers, delayed ACKs)
        self._acked_now = 0  # bytes newly acknowledged by the ACK being processed
        self._epoch_start = 0.0
        self._epoch_acked = 0
        self._extra_acked_filter = RoundsMax(BW_FILTER_ROUNDS)
        self.extra_acked = 0.0

    # ----------------------------------------------------------------- inputs

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:
        """Stamp ``packet`` before it leaves; ``bytes_in_flight`` excludes it."""
        if bytes_in_flight == 0:
            self._first_sent_time = self._delivered_time = now
        packet.delivered = self.delivered
        packet.delivered_time = self._delivered_time
        packet.first_sent_time = self._first_sent_time
        packet.app_limited = self._app_limited_until > 0
        self._round_peak_inflight = max(self._round_peak_inflight, bytes_in_flight + packet.size)

    def on_app_limited(self, bytes_in_flight: int) -> None:
        """The sender ran out of data with window to spare: samples until it refills undercount."""
        self._app_limited_until = max(self.delivered + bytes_in_flight, 1)

    def on_packet_acked(self, packet: SentPacket, now: float) -> None:
        self.delivered += packet.size
        self._acked_now += packet.size
        self._delivered_time = now
        if packet.delivered >= self._sample_prior_delivered:
            self._sample_prior_delivered = packet.delivered
            self._sample_app_limited = packet.app_limited
            send_elapsed = packet.time_sent - packet.first_sent_time
            ack_elapsed = now - packet.delivered_time
            self._sample_interval = max(send_elapsed, ack_elapsed)
            self._first_sent_time = packet.time_sent
        if packet.delivered >= self._next_round_delivered:
            self._next_round_delivered = self.delivered
            self.round += 1
            self._round_started = True

    def on_packet_lost(self, packet: SentPacket, rtt: RttEstimator) -> None:
        """A random loss still crossed the bottleneck, so it counts as delivered for the model;
        a queue drop (see ``is_queue_drop``) counts toward the round's congestive loss, unless
        the packet left before the last bound was set: that was answered already, as Reno's
        recovery point answers a loss episode once."""
        if not self._queue_seen(rtt):
            self.delivered += packet.size
            return
        self._lost_in_round = True
        if not packet.app_limited and packet.time_sent >= self._bound_time:
            self._round_queue_lost += packet.size

    def is_queue_drop(self, packet: SentPacket, rtt: RttEstimator) -> bool:
        """Whether a lost packet was probably dropped by a queue we filled, not by the path.

        A packet sent while application-limited cannot have met a queue of our making, so its
        loss is the path's even when jitter makes the RTT look queued.
        """
        return not packet.app_limited and self._queue_seen(rtt)

    @staticmethod
    def _queue_seen(rtt: RttEstimator) -> bool:
        min_rtt = rtt.min_rtt  # lifetime: a queue we built can never pass for the path's floor
        queueing = rtt.latest - min_rtt
        return queueing >= max(RANDOM_LOSS_QUEUE_FRACTION * min_rtt, RANDOM_LOSS_QUEUE_FLOOR_S)

    def on_ack_processed(self, now: float, rtt: RttEstimator, bytes_in_flight: int) -> None:
        """Update the path model after all packets one ACK covered were passed in."""
        if self._app_limited_until and self.delivered > self._app_limited_until:
            self._app_limited_until = 0
        if rtt.has_sample:
            self._track_min_rtt(rtt.latest, now)
        self._take_rate_sample()
        self._update_aggregation(now)
        new_round, self._round_started = self._round_started, False
        if new_round:
            self._end_round(now)
        if self.mode is Mode.STARTUP and new_round:
            self._check_full_bandwidth()
        if self.mode is Mode.DRAIN and bytes_in_flight <= self._bdp(1.0):
            self._enter_probe_bw(now)
        if self.mode is Mode.PROBE_BW:
            self._advance_cycle(now, bytes_in_flight)
        self._lost_in_round = self._lost_in_round and not new_round
        self._set_outputs(rtt)

    # ------------------------------------------------------------- internals

    def _track_min_rtt(self, sample: float, now: float) -> None:
        """The minimum RTT over the last ``MIN_RTT_WINDOW_S`` (a monotonic deque).

        A true windowed minimum, not "the latest sample once the old minimum expires":
        with no PROBE_RTT phase, the latest sample carries our own queue and would
        inflate the window and hide congestion from the loss classifier.
        """
        samples = self._rtt_samples
        replaced = False
        while samples and samples[-1][1] >= sample:
            samples.pop()
            replaced = True
        if replaced or not samples or now - samples[-1][0] >= MIN_RTT_STEP_S:
            samples.append((now, sample))
        while samples[0][0] < now - MIN_RTT_WINDOW_S:
            samples.popleft()
        self._min_rtt = samples[0][1]

    def _end_round(self, now: float) -> None:
        """Bound inflight after a congested round; otherwise let the bound grow, and lift it
        once it no longer binds (the model's own window is smaller)."""
        lost = self._round_queue_lost
        delivered = self.delivered - self._round_start_delivered
        if lost > LOSS_THRESHOLD * (lost + delivered):
            peak = self._round_peak_inflight
            self.inflight_hi = max(INFLIGHT_BETA * peak, MIN_CWND_PACKETS * self.mtu)
            self._bound_time = now
            if self.mode is Mode.STARTUP:  # the pipe is full: queue drops say so (BBRv2)
                self._enter_drain()
        elif self.inflight_hi != math.inf:
            self.inflight_hi += INFLIGHT_GROWTH_PACKETS * self.mtu
            if self.inflight_hi >= self._model_window():
                self.inflight_hi = math.inf
        self._round_start_delivered = self.delivered
        self._round_queue_lost = 0
        self._round_peak_inflight = 0

    def _take_rate_sample(self) -> None:
        if self._sample_prior_delivered < 0:
            return
        interval = self._sample_interval
        prior, self._sample_prior_delivered = self._sample_prior_delivered, -1
        if interval < MIN_RATE_INTERVAL_S or (
            self._min_rtt != math.inf and interval < self._min_rtt
        ):
            return
        rate = (self.delivered - prior) / interval
        if self._sample_app_limited and rate < self.bottleneck_bandwidth:
            return
        self.bottleneck_bandwidth = self._bw_filter.update(self.round, rate)

    def _update_aggregation(self, now: float) -> None:
        """How far ACKs run ahead of the bandwidth estimate (BBR's extra_acked).

        A receiver that drains its socket in batches acknowledges in bursts; with only
        2 x BDP in flight the sender would stall between bursts. The largest excess seen
        over the last rounds is added to the window so the pipe stays full.
        """
        acked, self._acked_now = self._acked_now, 0
        bandwidth = self.bottleneck_bandwidth
        if not acked or not bandwidth:
            return
        expected = bandwidth * (now - self._epoch_start)
        if self._epoch_acked <= expected:  # on pace again: a new epoch starts here
            self._epoch_start, self._epoch_acked, expected = now, 0, 0.0
        self._epoch_acked += acked
        extra = min(self._epoch_acked - expected, bandwidth * AGGREGATION_CAP_S)
        self.extra_acked = self._extra_acked_filter.update(self.round, extra)

    def _check_full_bandwidth(self) -> None:
        if self._sample_app_limited:
            return
        if self.bottleneck_bandwidth >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = self.bottleneck_bandwidth
            self._full_bw_rounds = 0
            return
        self._full_bw_rounds += 1
        if self._full_bw_rounds >= FULL_BW_ROUNDS:
            self._enter_drain()

    def _enter_drain(self) -> None:
        self.mode = Mode.DRAIN
        self._pacing_gain = 1 / STARTUP_GAIN

    def _enter_probe_bw(self, now: float) -> None:
        self.mode = Mode.PROBE_BW
        self._cwnd_gain = CWND_GAIN
        self._cycle_index = 2  # start cruising; probing comes around soon enough
        self._cycle_stamp = now
        self._pacing_gain = PROBE_GAINS[self._cycle_index]

    def _advance_cycle(self, now: float, bytes_in_flight: int) -> None:
        elapsed = now - self._cycle_stamp > self._min_rtt
        gain = PROBE_GAINS[self._cycle_index]
        if gain > 1:
            full = min(self._bdp(gain), self.inflight_hi - self.mtu)  # the bound caps a probe
            done = elapsed and (bytes_in_flight >= full or self._lost_in_round)
        elif gain < 1:
            done = elapsed or bytes_in_flight <= self._bdp(1.0)
        else:
            done = elapsed
        if done:
            self._cycle_index = (self._cycle_index + 1) % len(PROBE_GAINS)
            self._cycle_stamp = now
            self._pacing_gain = PROBE_GAINS[self._cycle_index]

    def _bdp(self, gain: float) -> float:
        if self._min_rtt == math.inf or not self.bottleneck_bandwidth:
            return float(self.congestion_window)
        return gain * self.bottleneck_bandwidth * self._min_rtt

    def _set_outputs(self, rtt: RttEstimator) -> None:
        if not self.bottleneck_bandwidth or self._min_rtt == math.inf:
            self.pacing_rate = self._pacing_gain * self.congestion_window / rtt.smoothed
            return
        self.pacing_rate = self._pacing_gain * self.bottleneck_bandwidth
        target = self._model_window()
        if self.mode is Mode.STARTUP:
            target = max(target, self.congestion_window)  # never shrink while still growing
        target = min(target, self.inflight_hi)
        self.congestion_window = max(int(target), MIN_CWND_PACKETS * self.mtu)

    def _model_window(self) -> float:
        """What the path model allows in flight: the gain x BDP, plus ACK-burst and rounding room."""
        if not self.bottleneck_bandwidth or self._min_rtt == math.inf:
            return float(self.congestion_window)
        return (
            self._cwnd_gain * self.bottleneck_bandwidth * self._min_rtt
            + self.extra_acked
            + 3 * self.mtu
        )

    def pacing_burst(self) -> float:
        """Bytes that may leave back-to-back before pacing spaces them."""
        return max(2 * self.mtu, self.pacing_rate * PACING_BURST_S)
