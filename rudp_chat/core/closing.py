"""Closing, as its own small machine: our CLOSE (queued, sent, acknowledged) and the peer's.

The connection's state table says *when* a close moves the connection (CLOSE_CALLED,
PEER_CLOSED, CLOSE_DONE, FAILED); this object holds *what* the close has exchanged so far,
and the rules PROTOCOL.md §9 sets for it. Our graceful CLOSE is retransmitted through its
delivery handler (:meth:`Closing.on_delivery`), like a DATA fragment; an error CLOSE goes out
once, in a packet nobody tracks.
"""

from __future__ import annotations

from .delivery import Delivery
from .errors import PeerProtocolError
from .frames import CloseFrame, ErrorCode

__all__ = ["CLOSE_FRAME_BOUND", "MAX_ERROR_REASON_BYTES", "Closing"]

MAX_ERROR_REASON_BYTES = 128  # of the 256 a CLOSE may carry: room to spare
CLOSE_FRAME_BOUND = 32  # a CLOSE frame's bytes besides its reason's (msgpack worst case)


class Closing:
    """What one connection's close has exchanged: our CLOSE and the peer's ``final_seq``."""

    __slots__ = ("_due", "_frame_size", "acked", "by_peer", "failed", "frame", "peer_final_seq")

    def __init__(self) -> None:
        self.frame: CloseFrame | None = None
        """Our CLOSE, once queued (graceful: resent until acknowledged; error: sent once)."""
        self._due = False
        self._frame_size = 0
        self.acked = False
        """Our CLOSE was acknowledged, or will not be awaited (the connection failed)."""
        self.peer_final_seq: int | None = None
        """The peer's CLOSE said it sends no DATA at or beyond this sequence number."""
        self.by_peer = False
        """The peer's graceful CLOSE started the close (it reports CLOSED_BY_PEER)."""
        self.failed = False
        """The connection failed: packets are no longer tracked (an error CLOSE goes once)."""

    # ------------------------------------------------------------------ ours

    def queue_graceful(self, final_seq: int) -> None:
        """Queue ``CLOSE(NO_ERROR, final_seq)`` once (our data is all acknowledged)."""
        if self.frame is None:
            self._queue(CloseFrame(ErrorCode.NO_ERROR, final_seq))

    def queue_error(self, error_code: int, final_seq: int, detail: str) -> None:
        """Queue an error CLOSE (it replaces a graceful one not yet acknowledged)."""
        encoded = detail.encode(errors="replace")[:MAX_ERROR_REASON_BYTES]
        self._queue(CloseFrame(error_code, final_seq, encoded.decode(errors="ignore")))

    def _queue(self, frame: CloseFrame) -> None:
        self.frame = frame
        self._frame_size = CLOSE_FRAME_BOUND + len(frame.reason.encode())
        self._due = True

    def take(self, room: int) -> CloseFrame | None:
        """Our CLOSE if it is due and fits in ``room`` bytes; it is then no longer due."""
        if not self._due or self.frame is None or room < self._frame_size:
            return None
        self._due = False
        return self.frame

    def on_delivery(self, delivery: Delivery) -> None:
        """The delivery handler of a packet that carried our graceful CLOSE: acknowledged, also
        late (a CLOSE wrongly deemed lost is not awaited again), or due again."""
        if delivery is not Delivery.LOST:
            self.acked = True
        elif not self.acked:
            self._due = True

    @property
    def awaiting_ack(self) -> bool:
        """Our graceful CLOSE was queued and is not acknowledged yet."""
        return self.frame is not None and not self.acked

    def probe(self) -> bool:
        """A timeout probe repeats our unacknowledged CLOSE; False if there is none."""
        if self.frame is None or self.acked:
            return False
        self._due = True
        return True

    def abandon(self) -> None:
        """The connection failed: nothing will be retransmitted or awaited any more."""
        self.acked = self.failed = True

    # ---------------------------------------------------------------- theirs

    def on_peer_close(self, frame: CloseFrame, next_seq: int) -> None:
        """Note the peer's graceful CLOSE.

        Raises :class:`PeerProtocolError` when it denies data already received or contradicts
        an earlier CLOSE's ``final_seq``.
        """
        if frame.final_seq < next_seq or (
            self.peer_final_seq is not None and frame.final_seq != self.peer_final_seq
        ):
            raise PeerProtocolError(ErrorCode.PROTOCOL_VIOLATION, "CLOSE contradicts the data")
        self.peer_final_seq = frame.final_seq

    def check_data(self, seq: int) -> None:
        """Raises :class:`PeerProtocolError` for DATA at or beyond the peer's ``final_seq``."""
        if self.peer_final_seq is not None and seq >= self.peer_final_seq:
            raise PeerProtocolError(ErrorCode.PROTOCOL_VIOLATION, "DATA after CLOSE")

    def is_complete(self, next_seq: int, mid_message: bool) -> bool:
        """Our CLOSE is queued, the peer's arrived, and all its data is in (PROTOCOL.md §9)."""
        return (
            self.frame is not None
            and self.peer_final_seq is not None
            and next_seq >= self.peer_final_seq
            and not mid_message
        )
