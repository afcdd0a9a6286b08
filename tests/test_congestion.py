"""The congestion controller's loss rule (PROTOCOL.md §7): queue drops bound inflight, random
loss on an empty queue does not.

The controller is driven directly on a virtual clock by :class:`Path`, a sender clocked at a
bottleneck's rate with a fixed queueing delay and seeded random loss: the queueing delay
decides what a loss means (a drop at a queue we filled, or the path's own), so one model covers
both sides of the rule with nothing else changed.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable

from rudp_chat.core.congestion import (
    INFLIGHT_BETA,
    INFLIGHT_GROWTH_PACKETS,
    LOSS_THRESHOLD,
    CongestionController,
    Mode,
    SentPacket,
)
from rudp_chat.core.rtt import RttEstimator

MTU = 1200
BANDWIDTH = 1.25e6  # bytes per second: the bulk rows' 10 Mbit/s
BASE_RTT_S = 0.05
BDP = BANDWIDTH * BASE_RTT_S
QUEUED_S = 0.04  # a standing queue: well above the classifier's half a min RTT
WARMUP_S = 5.0  # startup and drain are long over (the bandwidth estimate is settled)


class Path:
    """One sender clocked at ``BANDWIDTH`` (no faster, whatever the window), whose packets are
    acknowledged ``BASE_RTT_S + queueing`` after leaving, or lost (the loss is learnt when the
    ACK would have come)."""

    def __init__(self, seed: int) -> None:
        self.controller = CongestionController(MTU, 10, BASE_RTT_S)
        self.rtt = RttEstimator(BASE_RTT_S, 0.05, 4.0, 0.0)
        self.now = 0.0
        self.in_flight = 0
        self.rng = random.Random(seed)
        self._number = 0
        self._next_send = 0.0
        self._arrivals: list[tuple[float, int, SentPacket, bool]] = []

    def run(self, until: float, queueing: float, lost: Callable[[int], bool]) -> None:
        """Advance the clock to ``until``: send on every tick the window allows, and feed each
        packet's fate to the controller when it is learnt."""
        controller, arrivals = self.controller, self._arrivals
        while self.now < until:
            if not arrivals or self._next_send <= arrivals[0][0]:
                self.now = self._next_send
                self._next_send += MTU / BANDWIDTH
                if self.in_flight + MTU <= controller.congestion_window:
                    self._send(queueing, lost(self._number))
                continue
            self.now, _, packet, dropped = heapq.heappop(arrivals)
            self.in_flight -= packet.size
            if dropped:
                controller.on_packet_lost(packet, self.rtt)
                continue
            self.rtt.update(self.now - packet.time_sent, 0.0)
            controller.on_packet_acked(packet, self.now)
            controller.on_ack_processed(self.now, self.rtt, self.in_flight)

    def _send(self, queueing: float, lost: bool) -> None:
        packet = SentPacket(self._number, self.now, MTU)
        self.controller.on_packet_sent(packet, self.in_flight, self.now)
        self.in_flight += MTU
        fate = (self.now + BASE_RTT_S + queueing, self._number, packet, lost)
        heapq.heappush(self._arrivals, fate)
        self._number += 1


def never(number: int) -> bool:
    return False


def randomly(path: Path, loss: float) -> Callable[[int], bool]:
    """Each packet lost with probability ``loss``, from the path's seeded source."""
    return lambda number: path.rng.random() < loss


def settled(seed: int) -> Path:
    """A path after ``WARMUP_S`` without loss or queue: the controller is probing bandwidth."""
    path = Path(seed)
    path.run(WARMUP_S, 0.0, never)
    assert path.controller.mode is Mode.PROBE_BW
    assert path.controller.bottleneck_bandwidth >= 0.95 * BANDWIDTH
    assert path.controller.inflight_hi == math.inf
    return path


def test_queue_drops_bound_inflight() -> None:
    """5 % loss while a queue stands (> 2 % a round): the window falls below one BDP."""
    path = settled(1)
    window = path.controller.congestion_window
    assert window >= 2 * BDP
    path.run(WARMUP_S + 1.0, QUEUED_S, randomly(path, 0.05))
    controller = path.controller
    assert controller.inflight_hi < INFLIGHT_BETA * window
    assert controller.congestion_window <= controller.inflight_hi < BDP


def test_random_loss_on_an_empty_queue_cuts_nothing() -> None:
    """10 % loss with no queueing delay: no bound, the same window, the same bandwidth."""
    path = settled(1)
    window = path.controller.congestion_window
    path.run(WARMUP_S + 5.0, 0.0, randomly(path, 0.10))
    controller = path.controller
    assert controller.inflight_hi == math.inf
    assert controller.congestion_window >= 0.95 * window
    assert controller.bottleneck_bandwidth >= 0.95 * BANDWIDTH


def test_queue_drops_under_the_threshold_cut_nothing() -> None:
    """Queue drops of under ``LOSS_THRESHOLD`` of every round (a probe's price) leave inflight
    unbounded; at twice the threshold they bound it."""
    spacing = round(2 / LOSS_THRESHOLD)  # one drop in this many packets: half the threshold
    path = settled(2)
    # a round (about a window) holds over 1 / LOSS_THRESHOLD packets: its one drop is too few
    assert path.controller.congestion_window > MTU / LOSS_THRESHOLD
    path.run(WARMUP_S + 5.0, QUEUED_S, lambda number: number % spacing == 0)
    assert path.controller.inflight_hi == math.inf
    path.run(WARMUP_S + 6.0, QUEUED_S, lambda number: number % (spacing // 4) == 0)
    assert path.controller.inflight_hi < math.inf


def test_the_bound_grows_a_datagram_a_round_then_lifts() -> None:
    """Once the drops stop, the bound grows by ``INFLIGHT_GROWTH_PACKETS`` a round trip (Reno's
    additive increase) and is lifted when the path model's own window is the smaller."""
    path = settled(3)
    path.run(WARMUP_S + 1.0, QUEUED_S, randomly(path, 0.05))
    controller = path.controller
    bound, round_count = controller.inflight_hi, controller.round
    path.run(WARMUP_S + 2.0, 0.0, never)
    grown = controller.inflight_hi - bound
    rounds = controller.round - round_count
    assert rounds > 5
    assert grown == INFLIGHT_GROWTH_PACKETS * MTU * rounds
    path.run(WARMUP_S + 20.0, 0.0, never)
    assert controller.inflight_hi == math.inf
    assert controller.congestion_window >= 2 * BDP
