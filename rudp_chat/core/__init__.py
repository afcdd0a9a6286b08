"""The sans-IO protocol core: no sockets, no event loop, no clock, no global randomness.

Time enters as ``now`` arguments and randomness as an injected ``random_bytes``
callable; datagrams enter as bytes and leave as ``(bytes, address)`` pairs.
"""

from __future__ import annotations

from .config import ConnectionConfig, ListenerConfig
from .connection import Address, Connection
from .errors import (
    ConnectionClosedError,
    DatagramTooLargeError,
    FrameError,
    LocalProtocolError,
    MessageTooLargeError,
    SendBufferFullError,
)
from .events import (
    Connected,
    ConnectionTerminated,
    DatagramReceived,
    Event,
    MessageReceived,
    TerminationReason,
)
from .frames import ErrorCode
from .lanes import LaneConfig
from .listener import Listener, ListenerStats
from .state import Role, State
from .stats import ConnectionStats
from .trace import TraceSink

__all__ = [
    "Address",
    "Connected",
    "Connection",
    "ConnectionClosedError",
    "ConnectionConfig",
    "ConnectionStats",
    "ConnectionTerminated",
    "DatagramReceived",
    "DatagramTooLargeError",
    "ErrorCode",
    "Event",
    "FrameError",
    "LaneConfig",
    "Listener",
    "ListenerConfig",
    "ListenerStats",
    "LocalProtocolError",
    "MessageReceived",
    "MessageTooLargeError",
    "Role",
    "SendBufferFullError",
    "State",
    "TerminationReason",
    "TraceSink",
]
