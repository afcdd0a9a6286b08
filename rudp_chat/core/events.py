"""What a connection tells its application, as small frozen dataclasses.

Their ``repr`` is valid Python, so a failing property test prints a reproducer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Connected",
    "ConnectionTerminated",
    "DatagramReceived",
    "Event",
    "MessageReceived",
    "TerminationReason",
]


class TerminationReason(enum.Enum):
    """Why a connection ended; the ``value`` is what logs and the chat show."""

    CLOSED = "closed"
    """We called ``close`` and the graceful close completed: all data both ways was delivered."""
    CLOSED_BY_PEER = "closed by peer"
    """The peer closed gracefully; everything it sent was delivered before this event."""
    IDLE_TIMEOUT = "timed out"
    """Nothing was heard from the peer for ``idle_timeout``."""
    HANDSHAKE_TIMEOUT = "handshake timed out"
    """The server never completed the handshake within ``handshake_timeout``."""
    UNTRUSTED = "server not trusted"
    """The server's key is not the one pinned, or its encryption setting is not ours."""
    RESET = "reset by peer"
    """The peer no longer knows this connection (it restarted, or forgot us)."""
    PEER_ERROR = "peer error"
    """The peer closed with an error code."""
    PROTOCOL_ERROR = "protocol error"
    """The peer broke the protocol; we closed with an error code."""
    ABORTED = "aborted"
    """We called ``abort``; unacknowledged data was discarded."""

    def __repr__(self) -> str:
        return f"TerminationReason.{self.name}"


@dataclass(frozen=True, slots=True)
class Event:
    """Base of everything ``Connection.next_event`` returns."""


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The handshake completed; ``send`` may be called."""

    connection_id: bytes
    """Our own connection id: what the peer writes in the packets it sends us."""


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """One whole message, delivered exactly once and in order within its lane."""

    message_id: int
    """Position of the message in the peer's send order on its lane, from 0."""
    data: bytes
    lane: int = 0
    """The lane it travelled on (``Connection.send``'s ``lane``)."""


@dataclass(frozen=True, slots=True)
class DatagramReceived(Event):
    """One unreliable datagram (``Connection.send_datagram``): at most once, in no particular
    order with messages or other datagrams (a latest-only lane never goes backwards)."""

    data: bytes
    lane: int
    """The lane the sender named (0..255)."""


@dataclass(frozen=True, slots=True)
class ConnectionTerminated(Event):
    """The last event of every connection."""

    reason: TerminationReason
    error_code: int = 0
    """The code carried by CLOSE (0 = no error), see ``ErrorCode``."""
    detail: str = ""
    """Human-readable reason, for logs only."""
