"""Lanes: independent ordered message flows on one connection, and the sender's scheduler.

Messages are ordered within a lane and independent across lanes (ENet channels, GNS lanes,
QUIC streams): the receiver reassembles each lane on its own (:mod:`.reassembly`), so a lost
fragment of one lane's large message never holds another lane's delivery. The sender chooses
which lane's next fragment goes when the congestion window has room (GameNetworkingSockets'
semantics): strict priority between priority groups (lower number first), weighted fair
among the lanes of one group. Retransmissions go before any new fragment, whatever their lane.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .frames import MAX_LANES

__all__ = ["MAX_LANE_WEIGHT", "WINDOW_RESERVE_FRAGMENTS", "LaneConfig", "LaneScheduler"]

MAX_LANE_WEIGHT = 1_000_000  # beyond this a weight only starves its group's other lanes longer
WINDOW_RESERVE_FRAGMENTS = 8  # the end of the peer's window that only the first priority
# group may take: a bulk lane stalled on a loss (its data above the gap fills the window until
# the repair) then still leaves room for a burst of live lines; half the window a receiver
# opens before its first ACK, so bulk lanes may start in the first round trip too


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """How the sender schedules one lane (the receiver needs only the number of lanes)."""

    priority: int = 0
    """Lower goes first: a lane sends only while no lane of a lower priority number has a
    fragment waiting (GNS's convention). Retransmissions precede every priority."""

    weight: int = 1
    """Share of the sending rate among the lanes of one priority that all have data waiting:
    bytes are sent in proportion to the weights (weighted fair queueing)."""

    def __post_init__(self) -> None:
        if type(self.priority) is not int or not 0 <= self.priority < 2**31:
            raise ValueError("lane priority must be an integer in 0..2**31-1")
        if type(self.weight) is not int or not 1 <= self.weight <= MAX_LANE_WEIGHT:
            raise ValueError(f"lane weight must be an integer in 1..{MAX_LANE_WEIGHT}")


class LaneScheduler:
    """Which lane with data waiting sends the next new fragment.

    Start-time fair queueing within a priority group: each lane carries a virtual time, the
    bytes it has sent divided by its weight; the waiting lane with the least goes next. A lane
    that becomes busy starts at its group's current virtual time, so an idle lane banks no
    credit to burst with later. One heap of ``(priority, virtual time, lane)`` holds the busy
    lanes: the next lane is its top, O(log lanes) a fragment.
    """

    __slots__ = ("_busy", "_clock", "_heap", "_lanes", "_top", "_virtual")

    def __init__(self, lanes: tuple[LaneConfig, ...]) -> None:
        if not 1 <= len(lanes) <= MAX_LANES:
            raise ValueError(f"a connection has 1..{MAX_LANES} lanes")
        self._lanes = lanes
        self._top = min(lane.priority for lane in lanes)
        self._virtual = [0.0] * len(lanes)
        self._clock: dict[int, float] = {}  # per priority: the virtual time of its last send
        self._busy = [False] * len(lanes)
        self._heap: list[tuple[int, float, int]] = []

    @property
    def idle(self) -> bool:
        """No lane has a fragment waiting."""
        return not self._heap

    def activate(self, lane: int) -> None:
        """Lane ``lane`` has fragments waiting (harmless if it had already)."""
        if self._busy[lane]:
            return
        priority = self._lanes[lane].priority
        start = max(self._virtual[lane], self._clock.get(priority, 0.0))
        self._virtual[lane] = start
        self._busy[lane] = True
        heapq.heappush(self._heap, (priority, start, lane))

    def next_lane(self) -> int | None:
        """The lane whose fragment goes next, or None when none waits."""
        return self._heap[0][2] if self._heap else None

    def is_urgent(self, lane: int) -> bool:
        """Whether ``lane`` is of the first priority group: the group that may take the end of
        the peer's window (:data:`WINDOW_RESERVE_FRAGMENTS`) and stays a thin stream while
        later groups carry bulk (:mod:`.thin`). With one group, every lane is."""
        return self._lanes[lane].priority == self._top

    def charge(self, lane: int, size: int, still_busy: bool) -> None:
        """``lane`` (the one :meth:`next_lane` named) sent ``size`` bytes; ``still_busy`` says
        whether it has more waiting."""
        priority, start, _ = self._heap[0]
        self._clock[priority] = start
        virtual = start + size / self._lanes[lane].weight
        self._virtual[lane] = virtual
        if still_busy:
            heapq.heapreplace(self._heap, (priority, virtual, lane))
        else:
            heapq.heappop(self._heap)
            self._busy[lane] = False
