"""Thin-stream mode: spend bandwidth on latency where, and only where, a stream is thin.

A stream is *thin* while it is application-limited: everything it holds, sent or not yet
sent, is less than ``thin_max_in_flight`` full datagrams' worth (RFC 4653 and Linux's
``tcp_stream_is_thin`` count 4 packets in flight; we count bytes, so that twenty small chat
lines are as thin as one, and the fragments of one long line that pacing spaces out stay thin
while they leave). A thin stream has too little later data for
its acknowledgements to reveal a loss quickly, so each loss waits for a timeout. While thin,
the reference implementation:

- sends every packet carrying DATA ``k`` times, each copy a packet of its own (its own number,
  so never a nonce twice), ``k`` the smallest number of copies whose joint loss the loss
  estimator puts at or under ``thin_loss_target`` (with its doubt as a margin where the
  packet follows the previous one within an RTO), at most ``thin_max_copies`` (the first
  timeout probe gets ``thin_max_copies``, a later consecutive one none), the copies
  ``thin_copy_spacing`` apart so that a short fade does not take them all;
- does not double the RTO for the first ``thin_linear_timeouts`` consecutive timeouts
  (Linux ``tcp_thin_linear_timeouts``); past them the backoff is exponential as before, so an
  unresponsive peer is not flooded;
- bundles recent unacknowledged fragments into at most ``thin_bundle_bytes`` of a packet
  (:mod:`.sending` asks :meth:`ThinStream.bundle_room`), so tiny messages ride along while chat
  lines do not.

A copy is an ordinary packet, so the receiver needs nothing new; it carries the original's
fragments with the original's delivery handlers, so whichever copy is acknowledged or lost
settles the fragment as the original would have. See PROTOCOL.md, "Thin streams".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .config import ConnectionConfig
from .delivery import DeliveryHandler
from .frames import DataFrame
from .lossrate import LossEstimator
from .recovery import Recovery
from .sendbuffer import SendBuffer
from .slotted import Slotted

__all__ = ["Copy", "ThinStream"]


class Copy(Slotted):
    """A copy of a packet's DATA due to be sent."""

    __match_args__ = ("due", "fragments", "handlers")
    __slots__ = __match_args__

    def __init__(
        self,
        due: float,
        fragments: tuple[DataFrame, ...],
        handlers: tuple[DeliveryHandler, ...],
    ) -> None:
        self.due: Final = due
        """When it may leave (seconds, the connection's clock)."""
        self.fragments: Final = fragments
        """The fragments the original carried; those acknowledged by then are left out."""
        self.handlers: Final = handlers
        """Their delivery handlers (one per fragment), registered again with the copy."""


class ThinStream:
    """Whether the connection is thin now, and the copies it still owes."""

    __slots__ = ("_config", "_copies", "_last_sent", "active", "urgent_active")

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._copies: list[Copy] = []  # a few per packet in flight: short, so kept unsorted
        self._last_sent: float | None = None  # when the last packet with DATA (not a probe) left
        self.active = False
        """Thin as of the last :meth:`refresh`."""
        self.urgent_active = False
        """The first priority group's lanes alone are thin (as of the last :meth:`refresh`):
        while later lanes carry bulk, their fragments still get copies (:mod:`.lanes`)."""

    def refresh(self, send: SendBuffer, recovery: Recovery) -> None:
        """Re-decide thinness from the send buffer; leaving it drops the copies still owed.

        Sets ``recovery.linear_timeouts``: the RTO backs off linearly only while thin.
        """
        config = self._config
        limit = config.thin_max_in_flight * config.max_datagram_size
        self.active = send.buffered_bytes < limit
        self.urgent_active = send.urgent_bytes < limit
        recovery.linear_timeouts = config.thin_linear_timeouts if self.active else 0
        if not self.urgent_active:
            self._copies.clear()

    def copies_needed(self, loss: LossEstimator, *, margin: bool) -> int:
        """How many times to send a packet: the fewest copies all lost with a probability at
        most ``thin_loss_target`` on the measured path (with ``margin``: at the rate the path
        likely does not exceed), at most ``thin_max_copies``."""
        config = self._config
        return loss.copies_for(config.thin_loss_target, config.thin_max_copies, margin=margin)

    def bundle_room(self, room: int) -> int:
        """How much of ``room`` a packet may spend repeating recent fragments: all of it unless
        thin, where copies carry the stream and only ``thin_bundle_bytes`` of small ones ride."""
        return min(room, self._config.thin_bundle_bytes) if self.active else room

    def on_data_sent(
        self,
        fragments: list[DataFrame],
        handlers: list[DeliveryHandler],
        now: float,
        recovery: Recovery,
        urgent: Callable[[DataFrame], bool],
        *,
        probe: bool = False,
    ) -> None:
        """A packet carrying ``fragments`` (with their ``handlers``) leaves: while thin, owe its
        further copies (while only the ``urgent`` lanes are thin, of their fragments). A timeout
        ``probe`` gets ``thin_max_copies`` if it is the first consecutive one: no copy of what
        it repeats was acknowledged within an RTO, so the path (or its ACKs) lost more than the
        estimate expects, and a second set lost whole would cost a second RTO (the worst chat
        line at 30 % loss took 746 ms that way). A later consecutive probe gets none: that whole
        set going unanswered means, far more likely than its loss (under 1 %), that the ACKs are
        being lost; one packet draws the ACK as well, where the most copies cost 4 packets each
        time (at 10 % loss in bursts, 66 such probes per 1,000 lines, 0.3 bytes on the wire per
        payload byte).

        A packet that follows the previous one within an RTO gets copies for the loss rate
        with a margin (``LossEstimator.upper_rate``): were it lost whole, every message sent
        until its recovery would wait behind it (delivery is in order), so a low reading of
        the rate costs several late messages (without it, a chat line every 0.1 s at 30 % loss
        missed p99 <= 300 ms on 1 seed of 5, 315 ms). A sparser stream's lost packet delays
        itself only, and the measured rate suffices: 4 copies at 30 % loss (0.8 % all
        lost), not 5, for 0.3 fewer bytes on the wire per payload byte."""
        if not self.active and self.urgent_active:  # copy only the urgent lanes' fragments
            kept = [(f, h) for f, h in zip(fragments, handlers, strict=True) if urgent(f)]
            fragments, handlers = [f for f, _ in kept], [h for _, h in kept]
        elif not self.active:
            return
        if not fragments:
            return
        spacing = self._config.thin_copy_spacing
        if probe:
            copies = self._config.thin_max_copies if recovery.probe_count < 2 else 1
        else:
            previous, self._last_sent = self._last_sent, now
            dense = previous is not None and now - previous < recovery.rtt.rto()
            copies = self.copies_needed(recovery.loss, margin=dense)
        copied, registered = tuple(fragments), tuple(handlers)
        for index in range(1, copies):
            self._copies.append(Copy(now + index * spacing, copied, registered))

    def next_due(self) -> float | None:
        """When the next owed copy may leave, or None."""
        return min(copy.due for copy in self._copies) if self._copies else None

    def take_due(self, now: float) -> Copy | None:
        """Remove and return the earliest-owed copy due at ``now``, or None."""
        for index, copy in enumerate(self._copies):
            if copy.due <= now:
                del self._copies[index]
                return copy
        return None
