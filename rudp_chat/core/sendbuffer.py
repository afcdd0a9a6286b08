"""Outgoing messages as numbered fragments, held until acknowledged."""

from __future__ import annotations

import heapq
from collections import deque

from .delivery import Delivery
from .errors import MessageTooLargeError, SendBufferFullError
from .frames import MAX_FRAGMENTS, DataFrame

__all__ = ["FRAGMENT_COST", "SendBuffer"]

FRAGMENT_COST = 64  # bytes charged per fragment besides its payload, so empty messages count too


class SendBuffer:
    """Fragments messages and remembers every fragment until the peer acknowledges it.

    A fragment is *pending* until first sent, then *in flight* until acknowledged;
    a lost one is queued for retransmission, lowest sequence number first.
    """

    __slots__ = (
        "_lost",
        "_pending",
        "acked_below",
        "buffered_bytes",
        "capacity",
        "fragment_size",
        "max_message_size",
        "next_message_id",
        "next_seq",
        "unacked",
    )

    def __init__(self, capacity: int, fragment_size: int, max_message_size: int) -> None:
        self.capacity = capacity
        self.fragment_size = fragment_size
        self.max_message_size = max_message_size
        self.next_seq = 0
        self.next_message_id = 0
        self.acked_below = 0
        """Every sequence number below this is acknowledged."""
        self.buffered_bytes = 0
        """Payload plus ``FRAGMENT_COST`` per fragment, of everything unacknowledged."""
        self.unacked: dict[int, DataFrame] = {}
        """Every fragment not yet acknowledged, pending or in flight, in sequence order."""
        self._pending: deque[DataFrame] = deque()
        self._lost: list[int] = []  # heap of sequence numbers to retransmit

    @property
    def free_bytes(self) -> int:
        """The largest message ``push`` accepts now (a message up to ``max_message_size`` fits
        an empty buffer): the room left, less ``FRAGMENT_COST`` for each fragment it needs."""
        room = self.capacity - self.buffered_bytes
        step = self.fragment_size + FRAGMENT_COST
        whole, rest = divmod(max(room, 0), step)
        return whole * self.fragment_size + max(rest - FRAGMENT_COST, 0)

    def push(self, data: bytes) -> int:
        """Fragment one message; returns its message id.

        Raises :class:`MessageTooLargeError` or, when it does not fit now,
        :class:`SendBufferFullError`.
        """
        size = len(data)
        if size > self.max_message_size:
            raise MessageTooLargeError(f"message of {size} bytes exceeds {self.max_message_size}")
        step = self.fragment_size
        count = max(1, -(-size // step))
        if count > MAX_FRAGMENTS:
            raise MessageTooLargeError(f"message needs {count} fragments, over {MAX_FRAGMENTS}")
        cost = size + count * FRAGMENT_COST
        if cost > self.capacity - self.buffered_bytes and self.buffered_bytes:
            raise SendBufferFullError(
                f"send buffer holds {self.buffered_bytes} of {self.capacity} bytes"
            )
        message_id = self.next_message_id
        self.next_message_id += 1
        view = memoryview(data)
        for index in range(count):
            fragment = DataFrame(
                self.next_seq,
                message_id,
                index,
                count,
                bytes(view[index * step : (index + 1) * step]),
            )
            self.unacked[fragment.seq] = fragment
            self._pending.append(fragment)
            self.next_seq += 1
        self.buffered_bytes += cost
        return message_id

    def acknowledge(self, seq: int) -> None:
        fragment = self.unacked.pop(seq, None)
        if fragment is not None:
            self.buffered_bytes -= len(fragment.payload) + FRAGMENT_COST

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
        """The oldest fragment never sent, without removing it."""
        return self._pending[0] if self._pending else None

    def pop_new(self) -> None:
        self._pending.popleft()

    @property
    def sent_bound(self) -> int:
        """Every sequence number below this has been sent at least once."""
        return self._pending[0].seq if self._pending else self.next_seq

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def all_acknowledged(self) -> bool:
        return not self.unacked

    def oldest_in_flight(self) -> DataFrame | None:
        """The lowest fragment sent but unacknowledged (what a timeout probe resends)."""
        oldest = next(iter(self.unacked.values()), None)
        if oldest is None or (self._pending and oldest is self._pending[0]):
            return None
        return oldest
