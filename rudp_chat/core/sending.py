"""The DATA a packet carries: retransmissions, new fragments, redundant copies, probes.

The connection builds each packet (ACK first, then this, then PING and CLOSE) and leaves
the choice of fragments here: a thin stream's copy when one is due (:mod:`.thin`), else what
the congestion window, pacing and the peer's flow-control window allow, lost fragments first.
Each fragment placed registers its delivery handler; a copy registers the original's again.
"""

from __future__ import annotations

from functools import partial

from .codec import fragment_cost
from .congestion import CongestionController
from .delivery import DeliveryHandler
from .frames import MAX_FRAMES, DataFrame, Frame
from .pacing import Pacer
from .receiving import INITIAL_WINDOW_FRAGMENTS
from .recovery import Recovery
from .sendbuffer import SendBuffer
from .stats import ConnectionCounters
from .thin import ThinStream

__all__ = ["BUNDLE_MAX_FRAGMENTS", "DATA_FRAMES_PER_PACKET", "DataSender"]

BUNDLE_MAX_FRAGMENTS = 8  # redundant fragments one thin-stream packet may repeat
DATA_FRAMES_PER_PACKET = MAX_FRAMES - 3  # leaves room for ACK, PING and CLOSE


class DataSender:
    """Chooses the fragments of each packet from one connection's send buffer."""

    __slots__ = (
        "_congestion",
        "_counters",
        "_recovery",
        "buffer",
        "datagram_size",
        "pacer",
        "peer_window",
        "thin",
    )

    def __init__(
        self,
        buffer: SendBuffer,
        recovery: Recovery,
        congestion: CongestionController,
        pacer: Pacer,
        thin: ThinStream,
        max_datagram_size: int,
        counters: ConnectionCounters,
    ) -> None:
        self.buffer = buffer
        self.pacer = pacer
        self.thin = thin
        self._recovery = recovery
        self._congestion = congestion
        self.datagram_size = max_datagram_size
        """The largest datagram the path takes now (path MTU discovery raises it)."""
        self._counters = counters
        self.peer_window = INITIAL_WINDOW_FRAGMENTS
        """The peer accepts DATA below this sequence number (its ACKs raise it)."""

    def add_probe(
        self, frames: list[Frame], handlers: list[DeliveryHandler], room: int, now: float
    ) -> int | None:
        """A timeout probe's fragment: the lowest lost one, else the oldest in flight (a thin
        stream sends the first consecutive probe with the most copies, later ones alone).

        Returns the room left (unchanged, with ``frames`` empty, when there is no fragment),
        or None when the fragment does not fit in ``room`` (beside an owed ACK).
        """
        send = self.buffer
        fragment = send.next_retransmission() or send.oldest_in_flight()
        if fragment is None:
            return room
        cost = fragment_cost(fragment)
        if cost > room:
            return None
        if fragment is send.next_retransmission():
            send.pop_retransmission()
        self._add(frames, handlers, fragment, retransmission=True)
        self.thin.on_data_sent(
            [fragment], handlers, now, self._recovery, send.is_urgent, probe=True
        )
        return room - cost

    def fill(
        self, frames: list[Frame], handlers: list[DeliveryHandler], room: int, now: float
    ) -> int:
        """Fill ``frames`` with a thin stream's due copy, else with retransmissions, then new
        fragments, then redundant bundling, as far as the congestion window and pacing allow;
        returns the room left. ``frames`` and ``handlers`` come empty."""
        copy_room = self._add_copy(frames, handlers, room, now)
        if copy_room is not None:
            return copy_room
        room = self._add_fresh(frames, handlers, room, now)
        if frames:  # (the call that ends each flush has nothing to send)
            fragments = [frame for frame in frames if isinstance(frame, DataFrame)]
            self.thin.on_data_sent(fragments, handlers, now, self._recovery, self.buffer.is_urgent)
        return room

    def _add_fresh(
        self, frames: list[Frame], handlers: list[DeliveryHandler], room: int, now: float
    ) -> int:
        send = self.buffer
        congestion = self._congestion
        pacer = self.pacer
        mtu = self.datagram_size
        if self._recovery.bytes_in_flight + mtu > congestion.congestion_window:
            return room
        pacer.refill(now, congestion.pacing_rate, congestion.pacing_burst())
        if pacer.budget < mtu:
            if send.has_pending or send.next_retransmission() is not None:
                pacer.wait(now, mtu, congestion.pacing_rate)
            return room
        while len(frames) < DATA_FRAMES_PER_PACKET:
            fragment = send.next_retransmission()
            if fragment is not None:
                cost = fragment_cost(fragment)
                if cost > room:
                    return room
                send.pop_retransmission()
                self._add(frames, handlers, fragment, retransmission=True)
                room -= cost
                continue
            fragment = send.next_new()
            if fragment is None or fragment.seq >= self.peer_window - send.window_reserve(fragment):
                break
            cost = fragment_cost(fragment)
            if cost > room:
                return room
            send.pop_new()
            self._add(frames, handlers, fragment, retransmission=False)
            room -= cost
        if not send.has_pending:
            if frames:
                budget = self.thin.bundle_room(room)
                room -= budget - self._bundle(frames, handlers, budget)
            congestion.on_app_limited(self._recovery.bytes_in_flight)
        return room

    def _add_copy(
        self, frames: list[Frame], handlers: list[DeliveryHandler], room: int, now: float
    ) -> int | None:
        """Place the still unacknowledged fragments of the first due copy that has any, with
        the original's handlers (outside the congestion window: the stream is thin); returns
        the room left, or None when no copy is due."""
        unacked = self.buffer.unacked
        while (copy := self.thin.take_due(now)) is not None:
            for fragment, handler in zip(copy.fragments, copy.handlers, strict=True):
                cost = fragment_cost(fragment)
                if fragment.seq in unacked and cost <= room:
                    room -= cost
                    self._place(frames, handlers, fragment, handler, retransmission=True)
            if frames:
                return room
        return None

    def _bundle(self, frames: list[Frame], handlers: list[DeliveryHandler], room: int) -> int:
        """Thin streams: repeat recent unacknowledged fragments in the spare room of this packet.

        With a message every few tens of milliseconds, a lost datagram's content then
        arrives with the next one instead of a loss-detection delay later (redundant
        data bundling, as in thin-stream TCP). Costs bandwidth only where there is room.
        """
        carried = {frame.seq for frame in frames if type(frame) is DataFrame}
        bundled = 0
        for fragment in reversed(self.buffer.unacked.values()):
            if bundled == BUNDLE_MAX_FRAGMENTS or len(frames) >= DATA_FRAMES_PER_PACKET:
                break
            if fragment.seq in carried:
                continue
            cost = fragment_cost(fragment)
            if cost > room:
                break
            self._add(frames, handlers, fragment, retransmission=True)
            room -= cost
            bundled += 1
        return room

    def _add(
        self,
        frames: list[Frame],
        handlers: list[DeliveryHandler],
        fragment: DataFrame,
        *,
        retransmission: bool,
    ) -> None:
        handler = partial(self.buffer.on_delivery, fragment.seq)
        self._place(frames, handlers, fragment, handler, retransmission=retransmission)

    def _place(
        self,
        frames: list[Frame],
        handlers: list[DeliveryHandler],
        fragment: DataFrame,
        handler: DeliveryHandler,
        *,
        retransmission: bool,
    ) -> None:
        frames.append(fragment)
        handlers.append(handler)
        if retransmission:
            self._counters.retransmitted_fragments += 1
            self._counters.retransmitted_bytes += len(fragment.payload)
