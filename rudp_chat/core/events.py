"""What a connection tells its application, as small immutable values (:mod:`.slotted`).

Their ``repr`` is valid Python, so a failing property test prints a reproducer.
"""

from __future__ import annotations

import enum
from typing import Final

from .slotted import Slotted

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


class Event(Slotted):
    """Base of everything ``Connection.next_event`` returns."""

    __slots__ = ()


class Connected(Event):
    """The handshake completed; ``send`` may be called."""

    __match_args__ = ("connection_id",)
    __slots__ = __match_args__

    def __init__(self, connection_id: bytes) -> None:
        self.connection_id: Final = connection_id
        """Our own connection id: what the peer writes in the packets it sends us."""


class MessageReceived(Event):
    """One whole message, delivered exactly once and in order within its lane."""

    __match_args__ = ("message_id", "data", "lane")
    __slots__ = __match_args__

    def __init__(self, message_id: int, data: bytes, lane: int = 0) -> None:
        self.message_id: Final = message_id
        """Position of the message in the peer's send order on its lane, from 0."""
        self.data: Final = data
        self.lane: Final = lane
        """The lane it travelled on (``Connection.send``'s ``lane``)."""


class DatagramReceived(Event):
    """One unreliable datagram (``Connection.send_datagram``): at most once, in no particular
    order with messages or other datagrams (a latest-only lane never goes backwards)."""

    __match_args__ = ("data", "lane")
    __slots__ = __match_args__

    def __init__(self, data: bytes, lane: int) -> None:
        self.data: Final = data
        self.lane: Final = lane
        """The lane the sender named (0..255)."""


class ConnectionTerminated(Event):
    """The last event of every connection."""

    __match_args__ = ("reason", "error_code", "detail")
    __slots__ = __match_args__

    def __init__(self, reason: TerminationReason, error_code: int = 0, detail: str = "") -> None:
        self.reason: Final = reason
        self.error_code: Final = error_code
        """The code carried by CLOSE (0 = no error), see ``ErrorCode``."""
        self.detail: Final = detail
        """Human-readable reason, for logs only."""
