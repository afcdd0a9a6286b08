"""What the asyncio transport raises, so callers can tell a refused connect from a lost one.

The connect failures also derive from the builtin they resemble (``TimeoutError``,
``ConnectionRefusedError``), so code written for TCP-style errors catches them unchanged.
"""

from __future__ import annotations

from rudp_chat.core.events import TerminationReason

__all__ = [
    "ConnectError",
    "ConnectionLostError",
    "ConnectionRefusedByServer",
    "GuestsNotAllowedError",
    "HandshakeTimeoutError",
    "PortUnreachableError",
    "TransportError",
    "UntrustedServerError",
]


class TransportError(Exception):
    """Base of every error the transport raises itself (core errors pass through unchanged)."""


class ConnectError(TransportError):
    """``connect`` failed: no connection was established."""


class HandshakeTimeoutError(ConnectError, TimeoutError):
    """Nothing answered the handshake within ``ConnectionConfig.handshake_timeout``."""


class PortUnreachableError(ConnectError, ConnectionRefusedError):
    """The server host answered ICMP port unreachable: nothing listens there, so fail at once."""


class ConnectionRefusedByServer(ConnectError):  # noqa: N818 - the name the chat codes against
    """The server answered, then refused the connection (full, or too many from this address)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"connection refused by server: {detail}")
        self.detail = detail


class GuestsNotAllowedError(ConnectionRefusedByServer):
    """The server takes only clients with a key (CLOSE ``KEY_REQUIRED``), and we came as a guest."""


class UntrustedServerError(ConnectError):
    """The server's key is not the pinned one, or it does not speak our encryption setting."""

    def __init__(self, detail: str, presented: str | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.presented = presented
        """The fingerprint of the key the server presented (None if it presented none)."""


class ConnectionLostError(TransportError):
    """The connection ended abnormally: timeout, reset, the peer's error, a protocol error or an
    abort. A graceful close by either side is reported as ``EOFError`` instead."""

    def __init__(self, reason: TerminationReason, detail: str = "", error_code: int = 0) -> None:
        super().__init__(f"connection {reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.error_code = error_code
        """The code the CLOSE carried (see ``ErrorCode``), 0 for timeouts and resets."""
