"""Unreliable datagrams (RFC 9221): sent at most once, never retransmitted, congestion-controlled.

``send_datagram`` queues a DATAGRAM frame here; the connection asks :meth:`Datagrams.reserve`
how much room the queue takes in the packet it builds, lets DATA fill the rest, then
:meth:`Datagrams.place` the frames. A packet carrying one is ack-eliciting and tracked like any
other (bytes in flight, pacing, loss detection, RTT), so datagrams share the congestion
controller's budget; its delivery handler only counts a loss: nothing is sent again, and a
datagram-only flight never arms the retransmission timer (nothing in it awaits an ACK).
A latest-only lane numbers its datagrams; the receiver drops one older than the newest it
delivered on that lane (ENet's unreliable sequenced). PROTOCOL.md §5 "Unreliable datagrams".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import partial

from .codec import DATAGRAM_FRAME_OVERHEAD
from .config import ConnectionConfig
from .congestion import CongestionController
from .delivery import Delivery, DeliveryHandler
from .errors import DatagramTooLargeError, LocalProtocolError
from .events import DatagramReceived
from .frames import MAX_FRAMES, DatagramFrame, Frame
from .pacing import Pacer
from .recovery import Recovery
from .stats import ConnectionCounters

__all__ = ["FRAMES_BESIDE_DATAGRAMS", "Datagrams"]

FRAMES_BESIDE_DATAGRAMS = 2  # an ACK and a CLOSE still fit under MAX_FRAMES (PING is only
# added to a packet with no other ack-eliciting frame)


@dataclass(slots=True)
class _Queued:
    frame: DatagramFrame
    since: float | None = None
    """When a packet was first built after it was queued (API calls take no time): its age
    bounds the wait."""

    @property
    def size(self) -> int:
        return len(self.frame.payload) + DATAGRAM_FRAME_OVERHEAD


class Datagrams:
    """One connection's datagrams both ways: the bounded send queue, the per-lane latest-only
    numbering, and the bounded queue of received ones not yet read."""

    __slots__ = (
        "_blocked",
        "_congestion",
        "_counters",
        "_incoming",
        "_lanes",
        "_limit",
        "_max_age",
        "_newest",
        "_next_sequence",
        "_outgoing",
        "_pacer",
        "_recovery",
        "_reserved",
    )

    def __init__(
        self,
        config: ConnectionConfig,
        counters: ConnectionCounters,
        recovery: Recovery,
        congestion: CongestionController,
        pacer: Pacer,
    ) -> None:
        self._lanes = config.datagram_lanes
        self._limit = config.datagram_queue
        self._max_age = config.datagram_max_age
        self._counters = counters
        self._recovery = recovery
        self._congestion = congestion
        self._pacer = pacer
        self._outgoing: deque[_Queued] = deque()
        self._next_sequence: dict[int, int] = {}  # lane -> its next latest-only number
        self._incoming: deque[DatagramReceived] = deque()
        self._newest: dict[int, int] = {}  # lane -> the newest latest-only number delivered
        self._blocked = False
        self._reserved = 0  # datagrams the packet being built takes

    # ------------------------------------------------------------------ sending

    def push(self, data: bytes, lane: int, latest_only: bool, max_payload: int) -> None:
        """Queue one datagram. A full queue drops its oldest; a latest-only datagram replaces
        the one of its lane still queued (each counted ``datagram_frames_dropped``).

        Raises :class:`DatagramTooLargeError` above ``max_payload`` bytes and
        :class:`LocalProtocolError` for a lane outside ``0..datagram_lanes − 1``.
        """
        if not 0 <= lane < self._lanes:
            raise LocalProtocolError(f"lane must be within 0..{self._lanes - 1}")
        if len(data) > max_payload:
            raise DatagramTooLargeError(
                f"a datagram of {len(data)} bytes does not fit one packet ({max_payload} do)"
            )
        sequence = None
        outgoing = self._outgoing
        if latest_only:
            sequence = self._next_sequence.get(lane, 0)
            self._next_sequence[lane] = sequence + 1
            stale = [q for q in outgoing if q.frame.lane == lane and q.frame.sequence is not None]
            for queued in stale:
                outgoing.remove(queued)
            self._counters.datagram_frames_dropped += len(stale)
        if len(outgoing) >= self._limit:
            outgoing.popleft()
            self._counters.datagram_frames_dropped += 1
        outgoing.append(_Queued(DatagramFrame(lane, data, sequence)))

    @property
    def blocked(self) -> bool:
        """The last :meth:`reserve` found the first datagram too large beside the owed ACK:
        the ACK should leave alone now, so the datagram follows in the next packet."""
        return self._blocked

    def reserve(self, room: int, max_room: int, mtu: int, now: float) -> int:
        """Bytes of the packet being built that queued datagrams will take (:meth:`place`),
        0 when the congestion window or pacing holds a packet back (pacing then sets its
        wake-up, as for DATA). First drops what waited past ``datagram_max_age`` or no longer
        fits ``max_room`` (a packet's room alone: the path's datagrams shrank)."""
        self._blocked = False
        self._reserved = 0
        outgoing = self._outgoing
        for queued in reversed(outgoing):
            if queued.since is not None:
                break
            queued.since = now
        while outgoing and (
            now - (outgoing[0].since or now) > self._max_age or outgoing[0].size > max_room
        ):
            outgoing.popleft()
            self._counters.datagram_frames_dropped += 1
        if not outgoing or not self._window_open(mtu, now):
            return 0
        reserved = 0
        for queued in outgoing:
            if reserved + queued.size > room:
                break
            reserved += queued.size
            self._reserved += 1
        self._blocked = reserved == 0
        return reserved

    def _window_open(self, mtu: int, now: float) -> bool:
        """The congestion window and pacing admit one more packet (DATA's test: a packet
        carrying only datagrams counts the same)."""
        congestion, pacer = self._congestion, self._pacer
        if self._recovery.bytes_in_flight + mtu > congestion.congestion_window:
            return False
        pacer.refill(now, congestion.pacing_rate, congestion.pacing_burst())
        if pacer.budget < mtu:
            pacer.wait(now, mtu, congestion.pacing_rate)
            return False
        return True

    def place(self, frames: list[Frame], handlers: list[DeliveryHandler], room: int) -> int:
        """Append the datagrams :meth:`reserve` counted (``room`` holds them: DATA took only
        the rest) and one delivery handler for them; returns the room left."""
        outgoing = self._outgoing
        placed = 0
        while placed < self._reserved and len(frames) < MAX_FRAMES - FRAMES_BESIDE_DATAGRAMS:
            queued = outgoing.popleft()
            frames.append(queued.frame)
            room -= queued.size
            placed += 1
        self._reserved = 0
        if placed:
            self._counters.datagram_frames_sent += placed
            handlers.append(partial(self._on_delivery, placed))
        return room

    def _on_delivery(self, count: int, delivery: Delivery) -> None:
        """Only counted: a lost datagram is never sent again."""
        if delivery is Delivery.LOST:
            self._counters.datagram_frames_lost += count
        elif delivery is Delivery.ACKED_LATE:
            self._counters.datagram_frames_lost -= count

    # ---------------------------------------------------------------- receiving

    def on_frame(self, frame: DatagramFrame, now: float) -> None:
        """Deliver an arrived datagram, unless its lane is not ours or a newer one of its
        latest-only lane came first (discarded and counted)."""
        counters = self._counters
        counters.datagram_frames_received += 1
        lane, sequence = frame.lane, frame.sequence
        if lane >= self._lanes:
            counters.datagram_frames_discarded += 1
            return
        if sequence is not None:
            if sequence <= self._newest.get(lane, -1):
                counters.datagram_frames_discarded += 1
                return
            self._newest[lane] = sequence
        incoming = self._incoming
        if len(incoming) >= self._limit:
            incoming.popleft()
            counters.datagram_frames_discarded += 1
        incoming.append(DatagramReceived(frame.payload, lane))

    @property
    def unread(self) -> int:
        """Datagrams received and not yet taken."""
        return len(self._incoming)

    def next_received(self) -> DatagramReceived | None:
        """The oldest datagram not yet taken, or None."""
        return self._incoming.popleft() if self._incoming else None
