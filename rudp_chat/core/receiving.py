"""The receiving half: which packets arrived (for ACKs), and fragments back into ordered messages."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from .events import MessageReceived
from .frames import MAX_ACK_RANGES, AckFrame, DataFrame, Frame
from .rangeset import RangeSet
from .reassembly import Reassembly

__all__ = ["INITIAL_WINDOW_FRAGMENTS", "Receiver"]

MAX_ACK_DELAY_US = 2**32 - 1  # the wire field's limit
INITIAL_WINDOW_FRAGMENTS = 16  # what a sender may assume before the first ACK says otherwise;
# every receiver buffers at least this many full datagrams (ConnectionConfig checks), and the
# initial congestion window (10 datagrams) would not let more leave in the first RTT anyway
TRACKED_RANGES = 2 * MAX_ACK_RANGES  # older gaps are covered by the cumulative ack
ACK_EVERY = 2  # ack-eliciting packets that force an immediate ACK (RFC 9000 §13.2.2)
ACK_RANGE_REPEATS = 4  # ACKs that report a range after a packet in it arrived: all four lost
# at 30 % loss is under 1 %, and older ranges only bloat ACKs (32 of them are ~200 bytes)
ARRIVALS_REMEMBERED = 4 * MAX_ACK_RANGES  # bound on arrivals awaiting their repeats


class Receiver:
    """Delivers each message once, in order within its lane (:mod:`.reassembly`), and
    decides when an ACK is owed.

    Memory is bounded twice: the advertised window bounds sequence numbers, and a byte
    budget (``window_bytes``) bounds what any sender, honest or not, can make us hold.
    """

    __slots__ = (
        "_acks_built",
        "_advertised",
        "_arrivals",
        "_eliciting_since_ack",
        "_max_ack_delay",
        "_refused",
        "_window_fragments",
        "_window_sent",
        "ack_deadline",
        "duplicates",
        "fragment_size",
        "largest_time",
        "packets",
        "reassembly",
        "unread_bytes",
        "window_bytes",
    )

    def __init__(
        self,
        window_bytes: int,
        fragment_size: int,
        max_message_size: int,
        max_ack_delay: float,
        lanes: int = 1,
    ) -> None:
        self._max_ack_delay = max_ack_delay
        self.window_bytes = window_bytes
        self.fragment_size = fragment_size
        self._window_fragments = -(-window_bytes // fragment_size)  # a full message must fit
        self.packets = RangeSet(TRACKED_RANGES)
        self.largest_time = 0.0
        self.ack_deadline: float | None = None
        """When an owed ACK must leave; None when none is owed."""
        self._eliciting_since_ack = 0
        self._acks_built = 0
        self._arrivals: deque[tuple[int, int]] = deque(maxlen=ARRIVALS_REMEMBERED)
        """(ACKs built before it arrived, packet number) of packets still to be reported."""
        self.reassembly = Reassembly(lanes, max_message_size)
        self.unread_bytes = 0
        """Delivered messages the application has not taken yet (see ``on_read``)."""
        self._advertised = INITIAL_WINDOW_FRAGMENTS
        self._window_sent = INITIAL_WINDOW_FRAGMENTS  # the window our last ACK carried
        self.duplicates = 0
        self._refused = -1  # the number of the packet that broke the protocol, if one did

    # --------------------------------------------------------------- packets

    def on_packet(
        self, number: int, now: float, ack_eliciting: bool, urgent: bool, *, repeat: bool = False
    ) -> bool:
        """Record a packet number for acknowledgement (after its frames were applied without a
        violation); returns False for a duplicate (already recorded: an ACK is due at once).

        Encrypted, the replay window has turned duplicates away before; in the clear,
        :meth:`is_duplicate` catches a duplicated datagram before its frames are applied. A
        ``repeat`` (a packet whose DATA all arrived before: a thin stream's copy) is
        acknowledged within the delay, never at once: the first copy's ACK already stopped the
        sender, and the later ones, arriving a few ms apart, then share one ACK instead of
        drawing one each."""
        largest = self.packets.largest
        if not self.packets.add(number):
            self.duplicates += 1
            self.ack_deadline = now  # our ACK was probably lost
            return False
        self._arrivals.append((self._acks_built, number))
        if largest is None or number > largest:
            self.largest_time = now
        if ack_eliciting and repeat:
            if self.ack_deadline is None:
                self.ack_deadline = now + self._max_ack_delay
        elif ack_eliciting:
            self._eliciting_since_ack += 1
            out_of_order = largest is not None and number != largest + 1
            if urgent or out_of_order or self._eliciting_since_ack >= ACK_EVERY:
                self.ack_deadline = now
            elif self.ack_deadline is None:
                self.ack_deadline = now + self._max_ack_delay
        return True

    def build_ack(self, now: float) -> AckFrame:
        """The ACK to send now; clears the debt."""
        self.ack_deadline = None
        self._eliciting_since_ack = 0
        delay_us = min(int(max(now - self.largest_time, 0.0) * 1e6), MAX_ACK_DELAY_US)
        self._window_sent = self.window()
        cumulative = self.reassembly.next_seq
        return AckFrame(cumulative, self._ranges_to_report(), delay_us, self._window_sent)

    def _ranges_to_report(self) -> tuple[tuple[int, int], ...]:
        """The highest range, and every range a packet arrived in within the last
        ``ACK_RANGE_REPEATS`` ACKs: repeated so one lost ACK costs no spurious retransmission,
        then dropped, so ACKs stay small on a lossy path (ranges are many there)."""
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] <= self._acks_built - ACK_RANGE_REPEATS:
            arrivals.popleft()
        self._acks_built += 1
        ranges = self.packets.descending(TRACKED_RANGES)
        if len(ranges) < 2:  # no gap (the loss-free case): the highest range is all there is
            return ranges
        fresh = sorted((number for _, number in arrivals), reverse=True)
        reported = list(ranges[:1])
        index = 0
        for first, last in ranges[1:]:
            while index < len(fresh) and fresh[index] > last:
                index += 1
            if index == len(fresh):
                break
            if fresh[index] >= first:
                reported.append((first, last))
                if len(reported) == MAX_ACK_RANGES:
                    break
        return tuple(reported)

    def holds_all(self, frames: Iterable[Frame]) -> bool:
        """Whether the frames carry DATA and every fragment of it has arrived before."""
        seen = False
        arrived = self.reassembly.has_arrived
        for frame in frames:
            if type(frame) is DataFrame:
                if not arrived(frame.seq):
                    return False
                seen = True
        return seen

    def on_read(self, size: int) -> None:
        """The application took a delivered message of ``size`` bytes."""
        self.unread_bytes -= size

    def schedule_window_update(self) -> bool:
        """Owe an ACK at once if reading opened the window enough (see ``window_update_due``);
        returns whether it did."""
        if not self.window_update_due():
            return False
        self.ack_deadline = -math.inf  # due now
        return True

    def is_duplicate(self, number: int, now: float) -> bool:
        """Whether packet ``number`` was recorded before (insecure: a duplicated datagram), or
        is the one we refused. A recorded one makes an ACK due at once: ours was probably lost."""
        if number == self._refused:
            self.duplicates += 1
            return True
        if number not in self.packets:
            return False
        self.duplicates += 1
        self.ack_deadline = now
        return True

    def refuse(self, number: int) -> None:
        """Packet ``number`` broke the protocol: it is never recorded, so no ACK ever covers it,
        and the ACK owed now is cancelled (the error CLOSE leaves without one)."""
        self._refused = number
        self.ack_deadline = None

    def window_update_due(self) -> bool:
        """Reading opened the window by a quarter since our last ACK: tell the sender now."""
        return self.window() - self._window_sent >= max(self._window_fragments // 4, 1)

    def window(self) -> int:
        """The sequence number the sender must stay below; it never shrinks.

        With nothing unread it lets at least the next fragment in: messages being reassembled
        on several lanes at once may fill the budget, and only more fragments finish them."""
        unread = self.unread_bytes
        used = -(-(self.reassembly.partial_bytes + unread) // self.fragment_size)
        room = self._window_fragments - used if unread else max(self._window_fragments - used, 1)
        self._advertised = max(self._advertised, self.reassembly.next_seq + room)
        return self._advertised

    # ------------------------------------------------------------------ data

    def admits(self, frames: Iterable[Frame]) -> bool:
        """Whether every DATA frame of a packet fits the window and the byte budget.

        A packet that does not is dropped unacknowledged (RFC 5961 spirit): an honest
        sender never exceeds the window, and a dishonest one cannot make us hold more
        than the budget (out-of-order, partial and unread data together).
        The one exception: with nothing unread, the fragment that delivery waits for is always
        admitted (a budget full of later fragments must not block the one that frees it). New
        fragments in its packet come along only if we were within the budget, so they overshoot
        it by one datagram at most; otherwise every in-order fragment could carry a datagram of
        out-of-order data past the budget, up to a window of 64 KB fragments. With lanes, the
        fragment at the cumulative point is always one its lane takes (else :mod:`.reassembly`
        fails the connection), so the exception only grows messages being reassembled: at most
        one per lane, ``max_message_size`` each.
        """
        window = self.window()
        reassembly = self.reassembly
        next_seq = reassembly.next_seq
        new_bytes = passenger_bytes = 0
        unblocks = False
        for frame in frames:
            if type(frame) is DataFrame and frame.seq >= next_seq:
                if frame.seq >= window:
                    return False
                size = len(frame.payload)
                new_bytes += size
                if frame.seq == next_seq:
                    unblocks = True
                elif not reassembly.has_arrived(frame.seq):  # a bundled copy costs nothing
                    passenger_bytes += size
        held = reassembly.buffered_bytes + self.unread_bytes
        if not new_bytes or held + new_bytes <= self.window_bytes:
            return True  # a packet without new data (ACK, PING, CLOSE) always gets through
        return (
            unblocks
            and not self.unread_bytes
            and (not passenger_bytes or held <= self.window_bytes)
        )

    def on_data(self, frame: DataFrame) -> list[MessageReceived]:
        """Accept one admitted fragment; returns the messages it completes.

        Raises :class:`PeerProtocolError` for fragments inconsistent with their lane.
        """
        delivered = self.reassembly.on_data(frame)
        if delivered is None:
            self.duplicates += 1
            return []
        for message in delivered:
            self.unread_bytes += len(message.data)
        return delivered

    @property
    def next_seq(self) -> int:
        """Every fragment below this has arrived (the cumulative ack)."""
        return self.reassembly.next_seq

    @property
    def buffered_bytes(self) -> int:
        """Fragments held early plus the messages being reassembled."""
        return self.reassembly.buffered_bytes

    @property
    def mid_message(self) -> bool:
        """A message is partly reassembled (a CLOSE before its end is a violation)."""
        return self.reassembly.mid_message
