"""Fragments back into messages, each lane on its own, and the cumulative point of arrivals.

Sequence numbers are the connection's: one per fragment, in the sender's sending order across
all lanes. They say which fragments *arrived* (the cumulative ACK and the window count them);
a lane's ``(message id, fragment index)`` says where a fragment goes *in its lane*. A lane
delivers as soon as its own next fragment is in, whatever another lane is missing
(PROTOCOL.md §2.3).
"""

from __future__ import annotations

from .errors import PeerProtocolError
from .events import MessageReceived
from .frames import DataFrame, ErrorCode

__all__ = ["Reassembly"]


class _Lane:
    """One lane's reassembly: the message in progress and the fragments that came early."""

    __slots__ = ("next_message_id", "partial", "partial_bytes", "partial_count", "waiting")

    def __init__(self) -> None:
        self.next_message_id = 0
        self.partial: list[bytes] = []
        self.partial_bytes = 0
        self.partial_count = 0
        self.waiting: dict[tuple[int, int], int] = {}
        """(message id, fragment index) → sequence number of a fragment held for later."""

    @property
    def next_position(self) -> tuple[int, int]:
        return self.next_message_id, len(self.partial)


def _out_of_place(detail: str) -> PeerProtocolError:
    return PeerProtocolError(ErrorCode.PROTOCOL_VIOLATION, detail)


class Reassembly:
    """Delivers each message once, in order within its lane.

    Bounds: fragments held early sit above the cumulative point (a fragment the cumulative
    point passes while its lane cannot take it yet is a protocol violation: an honest sender
    sends each lane in order), so the window bounds them; each lane reassembles one message at
    a time, at most ``max_message_size``.
    """

    __slots__ = (
        "_arrived",
        "_held",
        "_lanes",
        "buffered_bytes",
        "max_message_size",
        "next_seq",
        "partial_bytes",
    )

    def __init__(self, lanes: int, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._lanes = [_Lane() for _ in range(lanes)]
        self.next_seq = 0
        """Every fragment below this has arrived (the cumulative ack)."""
        self._arrived: set[int] = set()  # sequence numbers above next_seq that arrived
        self._held: dict[int, DataFrame] = {}  # arrived, waiting for earlier ones of their lane
        self.buffered_bytes = 0
        """Fragments held early plus the messages being reassembled."""
        self.partial_bytes = 0
        """The messages being reassembled, all lanes together."""

    def has_arrived(self, seq: int) -> bool:
        return seq < self.next_seq or seq in self._arrived

    @property
    def mid_message(self) -> bool:
        """A message is partly reassembled on some lane (a CLOSE before its end is a violation)."""
        return any(lane.partial for lane in self._lanes)

    def on_data(self, frame: DataFrame) -> list[MessageReceived] | None:
        """Accept one admitted fragment; returns the messages it completes (as the events the
        application gets: no second record per message), or None for a duplicate (its sequence
        number arrived before).

        Raises :class:`PeerProtocolError` for a lane beyond those configured, or a fragment
        inconsistent with its lane (a position taken, or left behind by the cumulative point).
        """
        seq = frame.seq
        if seq < self.next_seq or seq in self._arrived:
            return None
        if frame.lane >= len(self._lanes):
            raise _out_of_place(f"lane {frame.lane} beyond the {len(self._lanes)} configured")
        lane = self._lanes[frame.lane]
        position, expected = (frame.message_id, frame.fragment_index), lane.next_position
        waiting = lane.waiting
        if position < expected or position in waiting:
            raise _out_of_place(f"fragment {seq} repeats a position of lane {frame.lane}")
        self.buffered_bytes += len(frame.payload)
        delivered: list[MessageReceived] = []
        if position == expected:
            self._assemble(lane, frame, delivered)
            while waiting and (early := waiting.pop(lane.next_position, None)) is not None:
                self._assemble(lane, self._held.pop(early), delivered)
        else:
            waiting[position] = seq
            self._held[seq] = frame
        self._arrive(seq)
        return delivered

    def _arrive(self, seq: int) -> None:
        """Move the cumulative point past ``seq`` and whatever arrived after it."""
        if seq != self.next_seq:
            self._arrived.add(seq)
            return
        arrived, held = self._arrived, self._held
        while True:
            if seq in held:
                raise _out_of_place(f"fragment {seq} out of place in lane {held[seq].lane}")
            seq += 1
            if seq not in arrived:
                break
            arrived.remove(seq)
        self.next_seq = seq

    def _assemble(self, lane: _Lane, frame: DataFrame, delivered: list[MessageReceived]) -> None:
        if lane.partial and frame.fragment_count != lane.partial_count:
            raise _out_of_place(f"fragment {frame.seq} changes its message's fragment count")
        size = len(frame.payload)
        lane.partial_bytes += size
        self.partial_bytes += size
        if lane.partial_bytes > self.max_message_size:
            raise _out_of_place("message over the size limit")
        lane.partial.append(frame.payload)
        lane.partial_count = frame.fragment_count
        if frame.fragment_index + 1 == frame.fragment_count:
            data = frame.payload if len(lane.partial) == 1 else b"".join(lane.partial)
            delivered.append(MessageReceived(lane.next_message_id, data, frame.lane))
            lane.next_message_id += 1
            self.buffered_bytes -= lane.partial_bytes
            self.partial_bytes -= lane.partial_bytes
            lane.partial = []
            lane.partial_bytes = 0
