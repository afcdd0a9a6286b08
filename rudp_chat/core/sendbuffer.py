"""Outgoing messages as numbered fragments, held until acknowledged."""

from __future__ import annotations

import heapq
from collections import deque

from .codec import LANE_FIELD_SIZE, fragment_cost
from .delivery import Delivery
from .errors import LocalProtocolError, MessageTooLargeError, SendBufferFullError
from .frames import MAX_FRAGMENTS, DataFrame
from .lanes import WINDOW_RESERVE_FRAGMENTS, LaneConfig, LaneScheduler

__all__ = ["FRAGMENT_COST", "SEND_RESERVE_DIVISOR", "SendBuffer"]

FRAGMENT_COST = 64  # bytes charged per fragment besides its payload, so empty messages count too
SEND_RESERVE_DIVISOR = 4  # the last quarter of the send buffer is the first priority group's:
# a bulk lane that fills the buffer to the brim would make a live message wait for its ACKs


class _Outgoing:
    """A message not yet wholly sent: its fragments are cut as they leave."""

    __slots__ = ("count", "data", "index", "message_id", "step")

    def __init__(self, message_id: int, data: bytes, count: int, step: int) -> None:
        self.message_id = message_id
        self.data = data
        self.count = count
        self.step = step
        self.index = 0
        """The next fragment to send."""


class SendBuffer:
    """Fragments messages and remembers every fragment until the peer acknowledges it.

    A message waits in its lane's queue until its fragments leave; a fragment takes the next
    sequence number when it is first sent (so sequence numbers follow the sending order
    whichever lane goes first), is *in flight* until acknowledged, and a lost one is queued
    for retransmission, lowest sequence number first.
    """

    __slots__ = (
        "_candidate",
        "_lost",
        "_queues",
        "_reserve",
        "_scheduler",
        "acked_below",
        "buffered_bytes",
        "capacity",
        "fragment_size",
        "max_message_size",
        "messages_pushed",
        "next_message_ids",
        "next_seq",
        "unacked",
        "urgent_bytes",
    )

    def __init__(
        self,
        capacity: int,
        fragment_size: int,
        max_message_size: int,
        lanes: tuple[LaneConfig, ...] = (LaneConfig(),),
    ) -> None:
        self.capacity = capacity
        self.fragment_size = fragment_size
        """Payload bytes of a lane-0 fragment (other lanes' leave room for the lane field)."""
        self.max_message_size = max_message_size
        self.next_seq = 0
        """The sequence number the next fragment sent for the first time takes."""
        self.next_message_ids = [0] * len(lanes)
        """Per lane, the message id the next ``push`` returns."""
        self.messages_pushed = 0
        self.acked_below = 0
        """Every sequence number below this is acknowledged."""
        self.buffered_bytes = 0
        """Payload plus ``FRAGMENT_COST`` per fragment, of everything unacknowledged."""
        self.urgent_bytes = 0
        """The part of ``buffered_bytes`` on the first priority group's lanes."""
        self.unacked: dict[int, DataFrame] = {}
        """Every fragment sent and not yet acknowledged, in sequence order."""
        self._queues: list[deque[_Outgoing]] = [deque() for _ in lanes]
        self._scheduler = LaneScheduler(lanes)
        self._reserve = capacity // SEND_RESERVE_DIVISOR
        self._candidate: DataFrame | None = None  # next_new's answer until pop_new or a push
        self._lost: list[int] = []  # heap of sequence numbers to retransmit

    @property
    def free_bytes(self) -> int:
        """The largest message ``push`` accepts now on the first priority group's lanes (a
        message up to ``max_message_size`` fits an empty buffer): the room left, less
        ``FRAGMENT_COST`` for each fragment it needs."""
        return self._free_bytes(self.fragment_size, urgent=True)

    def free_bytes_on(self, lane: int) -> int:
        """:attr:`free_bytes` for ``lane``: later priority groups leave the last
        ``capacity // SEND_RESERVE_DIVISOR`` bytes to the first."""
        step = self.fragment_size - (LANE_FIELD_SIZE if lane else 0)
        return self._free_bytes(step, urgent=self._scheduler.is_urgent(lane))

    def _room(self, urgent: bool) -> int:
        return self.capacity - self.buffered_bytes - (0 if urgent else self._reserve)

    def _free_bytes(self, fragment_size: int, *, urgent: bool) -> int:
        whole, rest = divmod(max(self._room(urgent), 0), fragment_size + FRAGMENT_COST)
        return whole * fragment_size + max(rest - FRAGMENT_COST, 0)

    def push(self, data: bytes, lane: int = 0) -> int:
        """Queue one message on ``lane``; returns its message id (its position in the lane).

        Raises :class:`LocalProtocolError` for a lane not configured,
        :class:`MessageTooLargeError` or, when it does not fit now,
        :class:`SendBufferFullError`.
        """
        if type(lane) is not int or not 0 <= lane < len(self._queues):
            raise LocalProtocolError(f"lane {lane!r} is not one of the {len(self._queues)} configured")
        size = len(data)
        if size > self.max_message_size:
            raise MessageTooLargeError(f"message of {size} bytes exceeds {self.max_message_size}")
        step = self.fragment_size - (LANE_FIELD_SIZE if lane else 0)
        count = max(1, -(-size // step))
        if count > MAX_FRAGMENTS:
            raise MessageTooLargeError(f"message needs {count} fragments, over {MAX_FRAGMENTS}")
        cost = size + count * FRAGMENT_COST
        urgent = self._scheduler.is_urgent(lane)
        if cost > self._room(urgent) and self.buffered_bytes:
            raise SendBufferFullError(
                f"send buffer holds {self.buffered_bytes} of {self.capacity} bytes"
            )
        message_id = self.next_message_ids[lane]
        self.next_message_ids[lane] += 1
        self.messages_pushed += 1
        self._queues[lane].append(_Outgoing(message_id, bytes(data), count, step))
        self._scheduler.activate(lane)
        self._candidate = None  # a higher-priority lane may go first now
        self.buffered_bytes += cost
        if urgent:
            self.urgent_bytes += cost
        return message_id

    def acknowledge(self, seq: int) -> None:
        fragment = self.unacked.pop(seq, None)
        if fragment is not None:
            cost = len(fragment.payload) + FRAGMENT_COST
            self.buffered_bytes -= cost
            if self._scheduler.is_urgent(fragment.lane):
                self.urgent_bytes -= cost

    def acknowledge_below(self, cumulative: int) -> None:
        """Everything below ``cumulative`` arrived (the ACK's cumulative field)."""
        if cumulative <= self.acked_below:
            return
        unacked = self.unacked
        if cumulative - self.acked_below <= len(unacked):
            for seq in range(self.acked_below, cumulative):
                self.acknowledge(seq)
        else:
            for seq in [s for s in unacked if s < cumulative]:
                self.acknowledge(seq)
        self.acked_below = cumulative

    def on_delivery(self, seq: int, delivery: Delivery) -> None:
        """The delivery handler of fragment ``seq``: forget it once acked, resend it once lost.

        A late ACK changes nothing: the fragment is queued again already, and the ACK of the
        copy (or the cumulative ACK) settles it, as it did before delivery handlers existed."""
        if delivery is Delivery.ACKED:
            self.acknowledge(seq)
        elif delivery is Delivery.LOST:
            self.mark_lost(seq)

    def mark_lost(self, seq: int) -> None:
        if seq in self.unacked:
            heapq.heappush(self._lost, seq)

    def next_retransmission(self) -> DataFrame | None:
        """The lowest lost fragment still unacknowledged, without removing it."""
        lost = self._lost
        while lost:
            fragment = self.unacked.get(lost[0])
            if fragment is not None:
                return fragment
            heapq.heappop(lost)
        return None

    def pop_retransmission(self) -> None:
        seq = heapq.heappop(self._lost)
        while self._lost and self._lost[0] == seq:  # lost again before it was resent
            heapq.heappop(self._lost)

    def next_new(self) -> DataFrame | None:
        """The fragment to send for the first time next (the scheduler's lane's), without
        removing it: it takes sequence number ``next_seq`` when :meth:`pop_new` commits it."""
        if self._candidate is None:
            lane = self._scheduler.next_lane()
            if lane is None:
                return None
            message = self._queues[lane][0]
            start = message.index * message.step
            self._candidate = DataFrame(
                self.next_seq,
                message.message_id,
                message.index,
                message.count,
                message.data[start : start + message.step],
                lane,
            )
        return self._candidate

    def pop_new(self) -> None:
        """Commit :meth:`next_new`'s fragment as sent; raises :class:`LocalProtocolError` when
        nothing waits."""
        fragment = self._candidate or self.next_new()
        if fragment is None:
            raise LocalProtocolError("no fragment waits to be sent")
        self._candidate = None
        self.unacked[fragment.seq] = fragment
        self.next_seq += 1
        queue = self._queues[fragment.lane]
        message = queue[0]
        message.index += 1
        if message.index == message.count:
            queue.popleft()
        self._scheduler.charge(fragment.lane, fragment_cost(fragment), bool(queue))

    def window_reserve(self, fragment: DataFrame) -> int:
        """Fragments of the peer's window ``fragment`` (from :meth:`next_new`) must leave free
        for more urgent lanes (:data:`.lanes.WINDOW_RESERVE_FRAGMENTS`, unless urgent)."""
        return 0 if self._scheduler.is_urgent(fragment.lane) else WINDOW_RESERVE_FRAGMENTS

    def is_urgent(self, fragment: DataFrame) -> bool:
        """Whether ``fragment``'s lane is of the first priority group."""
        return self._scheduler.is_urgent(fragment.lane)

    @property
    def sent_bound(self) -> int:
        """Every sequence number below this has been sent at least once."""
        return self.next_seq

    @property
    def has_pending(self) -> bool:
        return not self._scheduler.idle

    @property
    def all_acknowledged(self) -> bool:
        return not self.unacked and self._scheduler.idle

    def oldest_in_flight(self) -> DataFrame | None:
        """The lowest fragment sent but unacknowledged (what a timeout probe resends)."""
        return next(iter(self.unacked.values()), None)
