"""The asyncio transport over real UDP sockets, and (in :mod:`.proxy`) the lossy UDP proxy.

The proxy is not re-exported: ``python -m rudp_chat.aio.proxy`` must find it unimported.
"""

from __future__ import annotations

from .endpoint import SocketStats
from .errors import (
    ConnectError,
    ConnectionLostError,
    ConnectionRefusedByServer,
    GuestsNotAllowedError,
    HandshakeTimeoutError,
    PortUnreachableError,
    TransportError,
    UntrustedServerError,
)
from .transport import ReliableConnection, Server, ServerStats, connect, serve

__all__ = [
    "ConnectError",
    "ConnectionLostError",
    "ConnectionRefusedByServer",
    "GuestsNotAllowedError",
    "HandshakeTimeoutError",
    "PortUnreachableError",
    "ReliableConnection",
    "Server",
    "ServerStats",
    "SocketStats",
    "TransportError",
    "UntrustedServerError",
    "connect",
    "serve",
]
