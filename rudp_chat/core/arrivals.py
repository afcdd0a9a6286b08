"""What arrives, per state: PROTOCOL.md §4's table as code.

Each cell names the connection's reaction to one kind of packet or frame in one state; the
connection looks the reaction up and calls the one handler for it, so no handler asks which
state it is in. Frame rows apply inside a SESSION (or SEALED) packet that passed the checks
of §5; their columns are the states in which such a packet is processed.
"""

from __future__ import annotations

import enum

from .frames import (
    AckFrame,
    CloseFrame,
    DataFrame,
    DatagramFrame,
    ErrorCode,
    Frame,
    HelloPacket,
    Packet,
    PingFrame,
    ResetPacket,
    RetryPacket,
    SealedPacket,
    SessionPacket,
    WelcomePacket,
)
from .state import Role, State

__all__ = [
    "ARRIVALS",
    "CLIENT_ONLY",
    "FRAME_ARRIVALS",
    "PACKET_ARRIVALS",
    "SERVER_ONLY",
    "SESSION_STATES",
    "Arrival",
    "Reaction",
    "frame_arrival",
    "packet_arrival",
]


class Arrival(enum.Enum):
    """A kind of packet (for this connection: right id, address and token) or frame."""

    RETRY = "RETRY"
    WELCOME = "WELCOME"
    HELLO = "HELLO"
    """A HELLO again from the client a server connection was made for."""
    RESET = "valid RESET"
    SESSION = "SESSION or SEALED"
    DATA = "DATA"
    ACK = "ACK"
    PING = "PING"
    CLOSE = "CLOSE code 0"
    ERROR_CLOSE = "CLOSE code ≠ 0"
    DATAGRAM = "DATAGRAM"

    __hash__ = object.__hash__  # members are singletons: identity hashing keeps the
    # per-frame lookup cheap (Enum's own hashes the name in Python)


PACKET_ARRIVALS = (Arrival.RETRY, Arrival.WELCOME, Arrival.HELLO, Arrival.RESET, Arrival.SESSION)
FRAME_ARRIVALS = (
    Arrival.DATA,
    Arrival.ACK,
    Arrival.PING,
    Arrival.CLOSE,
    Arrival.ERROR_CLOSE,
    Arrival.DATAGRAM,
)
SESSION_STATES = (State.OPEN, State.CLOSING, State.DRAINING)
"""The states in which a session packet's frames are applied (the frame rows' columns)."""
CLIENT_ONLY = frozenset({Arrival.RETRY, Arrival.WELCOME, Arrival.RESET})
"""A server connection drops these whatever its state."""
SERVER_ONLY = frozenset({Arrival.HELLO})
"""A client drops these whatever its state."""


class Reaction(enum.Enum):
    """What the connection does with one arrival (each member is one handler)."""

    DROP = "drop"
    """Counted ``dropped_unexpected``; not acknowledged, not heard (PROTOCOL.md §5)."""
    TAKE_RETRY = "new token, HELLO now"
    COMPLETE_HANDSHAKE = "→ OPEN"
    RESEND_WELCOME = "re-send WELCOME"
    RESET = "→ CLOSED, RESET"
    """Reported as RESET from CONNECTING, OPEN or CLOSING; silent from DRAINING."""
    PROCESS = "check, record and apply its frames"
    DELIVER = "deliver"
    APPLY_ACK = "apply"
    ACK_AT_ONCE = "ACK at once"
    """Nothing beyond the immediate ACK the packet's recording scheduled."""
    PEER_CLOSED = "→ CLOSING (peer closed)"
    NOTE_FINAL_SEQ = "note final_seq"
    PEER_ERROR = "→ DRAINING, PEER_ERROR"
    DELIVER_DATAGRAM = "deliver unless stale"
    """Latest-only: unless older than the newest delivered on its lane (PROTOCOL.md §5)."""
    IGNORE = "ignored"
    """The packet is acknowledged, the frame does nothing (DRAINING: the connection ended)."""

    __hash__ = object.__hash__  # as Arrival's: the connection looks its handler up per packet


_S, _A, _R = State, Arrival, Reaction
ARRIVALS: dict[tuple[State, Arrival], Reaction] = {
    # packets
    (_S.CONNECTING, _A.RETRY): _R.TAKE_RETRY,
    (_S.CONNECTING, _A.WELCOME): _R.COMPLETE_HANDSHAKE,
    (_S.CONNECTING, _A.HELLO): _R.DROP,  # a server connection is never CONNECTING
    (_S.CONNECTING, _A.RESET): _R.DROP,  # no token yet: nothing can be a valid RESET
    (_S.CONNECTING, _A.SESSION): _R.DROP,  # sent before our WELCOME; it will come again
    (_S.OPEN, _A.RETRY): _R.DROP,
    (_S.OPEN, _A.WELCOME): _R.DROP,
    (_S.OPEN, _A.HELLO): _R.RESEND_WELCOME,
    (_S.OPEN, _A.RESET): _R.RESET,
    (_S.OPEN, _A.SESSION): _R.PROCESS,
    (_S.CLOSING, _A.RETRY): _R.DROP,
    (_S.CLOSING, _A.WELCOME): _R.DROP,
    (_S.CLOSING, _A.HELLO): _R.RESEND_WELCOME,
    (_S.CLOSING, _A.RESET): _R.RESET,
    (_S.CLOSING, _A.SESSION): _R.PROCESS,
    (_S.DRAINING, _A.RETRY): _R.DROP,
    (_S.DRAINING, _A.WELCOME): _R.DROP,
    (_S.DRAINING, _A.HELLO): _R.RESEND_WELCOME,
    (_S.DRAINING, _A.RESET): _R.RESET,
    (_S.DRAINING, _A.SESSION): _R.PROCESS,
    (_S.CLOSED, _A.RETRY): _R.DROP,
    (_S.CLOSED, _A.WELCOME): _R.DROP,
    (_S.CLOSED, _A.HELLO): _R.DROP,
    (_S.CLOSED, _A.RESET): _R.DROP,
    (_S.CLOSED, _A.SESSION): _R.DROP,
    # frames, inside a processed packet
    (_S.OPEN, _A.DATA): _R.DELIVER,
    (_S.OPEN, _A.ACK): _R.APPLY_ACK,
    (_S.OPEN, _A.PING): _R.ACK_AT_ONCE,
    (_S.OPEN, _A.CLOSE): _R.PEER_CLOSED,
    (_S.OPEN, _A.ERROR_CLOSE): _R.PEER_ERROR,
    (_S.CLOSING, _A.DATA): _R.DELIVER,  # must be below the peer's final_seq
    (_S.CLOSING, _A.ACK): _R.APPLY_ACK,
    (_S.CLOSING, _A.PING): _R.ACK_AT_ONCE,
    (_S.CLOSING, _A.CLOSE): _R.NOTE_FINAL_SEQ,
    (_S.CLOSING, _A.ERROR_CLOSE): _R.PEER_ERROR,
    (_S.DRAINING, _A.DATA): _R.IGNORE,
    (_S.DRAINING, _A.ACK): _R.APPLY_ACK,
    (_S.DRAINING, _A.PING): _R.ACK_AT_ONCE,
    (_S.DRAINING, _A.CLOSE): _R.IGNORE,
    (_S.DRAINING, _A.ERROR_CLOSE): _R.IGNORE,
    (_S.OPEN, _A.DATAGRAM): _R.DELIVER_DATAGRAM,
    (_S.CLOSING, _A.DATAGRAM): _R.DELIVER_DATAGRAM,
    (_S.DRAINING, _A.DATAGRAM): _R.IGNORE,
}


def packet_arrival(
    packet: Packet,
    role: Role,
    local_id: bytes,
    remote_id: bytes | None,
    reset_token: bytes | None,
) -> Arrival | None:
    """The row a packet falls in, or None when it is not for this connection (another client
    id, connection id or reset token) or not for this side (``CLIENT_ONLY``, ``SERVER_ONLY``)."""
    match packet:
        case SessionPacket() | SealedPacket():
            arrival, ours = Arrival.SESSION, packet.connection_id == local_id
        case RetryPacket():
            arrival, ours = Arrival.RETRY, packet.client_id == local_id
        case WelcomePacket():
            arrival, ours = Arrival.WELCOME, packet.client_id == local_id
        case ResetPacket():
            arrival = Arrival.RESET
            ours = (packet.connection_id, packet.reset_token) == (remote_id, reset_token)
        case HelloPacket():
            arrival, ours = Arrival.HELLO, packet.client_id == remote_id
    other_side = SERVER_ONLY if role is Role.CLIENT else CLIENT_ONLY
    return arrival if ours and arrival not in other_side else None


_FRAME_ARRIVAL: dict[type, Arrival] = {
    DataFrame: Arrival.DATA,
    AckFrame: Arrival.ACK,
    PingFrame: Arrival.PING,
    DatagramFrame: Arrival.DATAGRAM,
}


def frame_arrival(frame: Frame) -> Arrival:
    """The row a frame falls in."""
    if type(frame) is CloseFrame:
        graceful = frame.error_code == ErrorCode.NO_ERROR
        return Arrival.CLOSE if graceful else Arrival.ERROR_CLOSE
    return _FRAME_ARRIVAL[type(frame)]
