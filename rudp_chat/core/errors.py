"""Exceptions of the protocol core, sorted by whom to blame.

A peer's fault never escapes ``receive_datagram``: undecodable bytes raise
:class:`FrameError` inside the codec and are dropped and counted by the caller;
a protocol violation closes the connection with an error code and an event.
Misuse by the local application raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

__all__ = [
    "ConnectionClosedError",
    "DatagramTooLargeError",
    "FrameError",
    "HandshakeError",
    "LocalProtocolError",
    "MessageTooLargeError",
    "PeerProtocolError",
    "SendBufferFullError",
]


class FrameError(ValueError):
    """Bytes from the network that are not a valid datagram (the one decode error)."""


class HandshakeError(ValueError):
    """A handshake message that does not authenticate or carries an invalid key (dropped)."""


class LocalProtocolError(RuntimeError):
    """The local application asked for something the protocol does not allow now."""


class ConnectionClosedError(LocalProtocolError):
    """``send`` after ``close``, or on a connection that has terminated."""


class MessageTooLargeError(LocalProtocolError):
    """A message longer than ``ConnectionConfig.max_message_size``."""


class DatagramTooLargeError(LocalProtocolError):
    """A datagram that does not fit one packet (``Connection.max_datagram_payload``)."""


class SendBufferFullError(LocalProtocolError):
    """The send buffer cannot take the message now: wait until acknowledgements free it.

    This is the backpressure signal; the transport awaits ``Connection.send_capacity``.
    """


class PeerProtocolError(Exception):
    """Internal: the peer broke the protocol. Caught inside the connection, which closes with
    ``error_code``; never raised out of ``receive_datagram``."""

    def __init__(self, error_code: int, detail: str) -> None:
        super().__init__(detail)
        self.error_code = error_code
        self.detail = detail
