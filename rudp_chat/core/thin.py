"""Thin-stream mode: spend bandwidth on latency where, and only where, a stream is thin.

A stream is *thin* while it is application-limited (nothing queued waits to be sent for the
first time) and has less than ``thin_max_in_flight`` full datagrams' worth unacknowledged
(RFC 4653 and Linux's ``tcp_stream_is_thin`` count 4 packets; we count bytes, so that twenty
small chat lines in flight are as thin as one). A thin stream has too little later data for
its acknowledgements to reveal a loss quickly, so each loss waits for a timeout. While thin,
the reference implementation:

- sends every packet carrying DATA ``k`` times, each copy a packet of its own (its own number,
  so never a nonce twice), ``k`` the smallest number of copies whose joint loss the loss
  estimator puts at or under ``thin_loss_target``, at most ``thin_max_copies``, the copies
  ``thin_copy_spacing`` apart so that a short fade does not take them all;
- does not double the RTO for the first ``thin_linear_timeouts`` consecutive timeouts
  (Linux ``tcp_thin_linear_timeouts``); past them the backoff is exponential as before, so an
  unresponsive peer is not flooded;
- bundles recent unacknowledged fragments into at most ``thin_bundle_bytes`` of a packet
  (the connection does that part), so tiny messages ride along while chat lines do not.

A copy is an ordinary packet, so the receiver needs nothing new. See PROTOCOL.md, "Thin streams".
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConnectionConfig
from .lossrate import LossEstimator
from .recovery import Recovery
from .sendbuffer import SendBuffer

__all__ = ["Copy", "ThinStream"]


@dataclass(frozen=True, slots=True)
class Copy:
    """A copy of a packet's DATA due to be sent."""

    due: float
    """When it may leave (seconds, the connection's clock)."""
    seqs: tuple[int, ...]
    """The DATA sequence numbers the original carried; those acknowledged by then are left out."""
    with_ack: bool
    """The original carried an ACK: the copy carries the then-current one (ACK redundancy)."""


class ThinStream:
    """Whether the connection is thin now, and the copies it still owes."""

    __slots__ = ("_config", "_copies", "active")

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._copies: list[Copy] = []  # a few per packet in flight: short, so kept unsorted
        self.active = False
        """Thin as of the last :meth:`refresh`."""

    def refresh(self, send: SendBuffer, recovery: Recovery) -> None:
        """Re-decide thinness from the send buffer; leaving it drops the copies still owed.

        Sets ``recovery.linear_timeouts``: the RTO backs off linearly only while thin.
        """
        config = self._config
        self.active = (
            not send.has_pending  # so every buffered byte is in flight
            and send.buffered_bytes < config.thin_max_in_flight * config.max_datagram_size
        )
        recovery.linear_timeouts = config.thin_linear_timeouts if self.active else 0
        if not self.active:
            self._copies.clear()

    def copies_needed(self, loss: LossEstimator) -> int:
        """How many times to send a packet: the fewest copies all lost with a probability at
        most ``thin_loss_target`` on the measured path, at most ``thin_max_copies``."""
        config = self._config
        for copies in range(1, config.thin_max_copies):
            if loss.all_lost_probability(copies) <= config.thin_loss_target:
                return copies
        return config.thin_max_copies

    def on_data_sent(
        self, seqs: tuple[int, ...], with_ack: bool, now: float, loss: LossEstimator
    ) -> None:
        """A packet carrying DATA ``seqs`` left: while thin, owe its further copies."""
        if not self.active or not seqs:
            return
        spacing = self._config.thin_copy_spacing
        for index in range(1, self.copies_needed(loss)):
            self._copies.append(Copy(now + index * spacing, seqs, with_ack))

    def next_due(self) -> float | None:
        """When the next owed copy may leave, or None."""
        return min(copy.due for copy in self._copies) if self._copies else None

    def take_due(self, now: float) -> list[Copy]:
        """Remove and return the copies due at ``now``, in the order they were owed."""
        due = [copy for copy in self._copies if copy.due <= now]
        if due:
            self._copies = [copy for copy in self._copies if copy.due > now]
        return due
