"""Which way a UDP socket is read and written: the fast ``add_reader`` path or the portable one.

The fast path (:mod:`.endpoint`, :mod:`.proxy`) watches the socket with ``loop.add_reader`` and
drains it with a ``recvfrom`` loop: about six times less CPU per datagram than the stock loop's
datagram transport. Windows' default loop (the proactor) implements neither ``add_reader`` nor
``add_writer``; there the socket is handed to ``loop.create_datagram_endpoint`` instead
(:class:`DatagramChannel`), with the same receive batch and the same bounded send backlog. The
choice is made once per socket, when it is opened; tests force either path to run the whole
real-socket suite under both.
"""

from __future__ import annotations

import asyncio
import enum
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from rudp_chat.core.connection import Address

__all__ = [
    "SOCKET_PATH_VARIABLE",
    "DatagramChannel",
    "SocketPath",
    "choose_socket_path",
    "has_reader_api",
]

SOCKET_PATH_VARIABLE = "RUDP_CHAT_SOCKET_PATH"
"""Environment variable that forces a path for every socket a process opens without an explicit
choice (``reader`` or ``datagram_endpoint``): how the test suite reaches subprocesses."""


class SocketPath(enum.StrEnum):
    """How a socket is driven; ``str`` values are what ``/stats`` and start lines show."""

    AUTO = "auto"
    """``READER`` where the running loop implements ``add_reader``/``add_writer``, else
    ``DATAGRAM_ENDPOINT``."""
    READER = "add_reader"
    """``add_reader`` + a ``recvfrom`` loop, ``add_writer`` only while a send would block."""
    DATAGRAM_ENDPOINT = "datagram_endpoint"
    """``loop.create_datagram_endpoint`` on the same socket: runs on every loop, slower."""


def has_reader_api(loop_type: type[asyncio.AbstractEventLoop]) -> bool:
    """Whether loops of ``loop_type`` implement ``add_reader`` and ``add_writer`` (the proactor
    loop inherits ``AbstractEventLoop``'s, which raise ``NotImplementedError``)."""
    base = asyncio.AbstractEventLoop
    return all(
        getattr(loop_type, name, None) is not getattr(base, name)
        for name in ("add_reader", "add_writer")
    )


def choose_socket_path(
    loop: asyncio.AbstractEventLoop, requested: SocketPath | None = None
) -> SocketPath:
    """The path a new socket on ``loop`` takes: ``requested``, else the environment's
    :data:`SOCKET_PATH_VARIABLE`, else ``AUTO``; ``AUTO`` resolved for this loop.

    Raises ``ValueError`` for ``READER`` on a loop without ``add_reader``, or an unknown value
    in the environment.
    """
    if requested is None:
        requested = SocketPath(os.environ.get(SOCKET_PATH_VARIABLE) or SocketPath.AUTO)
    supported = has_reader_api(type(loop))
    if requested is SocketPath.AUTO:
        return SocketPath.READER if supported else SocketPath.DATAGRAM_ENDPOINT
    if requested is SocketPath.READER and not supported:
        raise ValueError(f"{type(loop).__name__} implements no add_reader: use the datagram path")
    return requested


class DatagramChannel(asyncio.DatagramProtocol):
    """One socket driven through ``loop.create_datagram_endpoint``: the portable path.

    Each datagram goes to ``receive(data, address)``; ``batch_done`` runs once after a run of
    datagrams (on the next loop iteration, or at once after ``batch`` of them). OS errors go to
    ``error(exc, sending)``: ``sending`` is True for one raised by a send the transport tried at
    once, False otherwise (receive errors, and send errors of a transport that sends later, like
    the proactor's). ``ConnectionResetError`` (Windows' ICMP port unreachable) is one of them:
    reported, never fatal. Until the transport is attached, and while its buffer is over its
    high-water mark, sends wait in a backlog of at most ``backlog_max`` datagrams; past it they
    are dropped and reported as ``dropped()``.

    ``peer`` is set for a ``connect()``-ed socket. Sends on it then name no address where the
    loop has the reader API (uvloop refuses one with EISCONN), but name ``peer`` on the proactor,
    whose datagram transport made from a socket always calls ``WSASendTo``.
    """

    def __init__(
        self,
        receive: Callable[[bytes, Address], None],
        error: Callable[[OSError, bool], None],
        dropped: Callable[[], None],
        *,
        batch_done: Callable[[], None] | None = None,
        batch: int,
        backlog_max: int,
        peer: Address | None = None,
    ) -> None:
        self._receive = receive
        self._error = error
        self._dropped = dropped
        self._batch_done = batch_done
        self._batch = batch
        self._backlog_max = backlog_max
        self._connected = peer is not None
        self._peer = peer  # the address sends name on a connected socket: None, or peer
        self._transport: asyncio.DatagramTransport | None = None
        self._pending = 0  # datagrams received since batch_done last ran
        self._batch_handle: asyncio.Handle | None = None
        self._paused = True  # until connection_made
        self._closed = False
        self._sending = False  # inside transport.sendto: an error now is this send's
        self._failed = False  # the send in progress was refused
        self._backlog: deque[tuple[bytes, Address]] = deque()

    async def attach(self, sock: socket.socket) -> None:
        """Start reading ``sock`` (bound, or connected); it is the transport's from now on."""
        loop = asyncio.get_running_loop()
        if self._peer is not None and has_reader_api(type(loop)):
            self._peer = None  # see the class docstring
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def send(self, data: bytes, address: Address) -> bool:
        """Hand one datagram to the transport (``address`` is ignored on a connected socket);
        returns False if it was lost at once (an OS error, reported, or a full backlog)."""
        transport = self._transport
        if self._closed or (transport is not None and transport.is_closing()):
            return False
        if transport is None or self._paused or self._backlog:
            if len(self._backlog) >= self._backlog_max:
                self._dropped()
                return False
            self._backlog.append((data, address))
            return True
        return self._transmit(transport, data, address)

    def _transmit(self, transport: asyncio.DatagramTransport, data: bytes, address: Address) -> bool:
        self._sending = True
        self._failed = False
        try:
            transport.sendto(data, self._peer if self._connected else address)
        finally:
            self._sending = False
        return not self._failed

    def close(self) -> None:
        """Stop at once: unsent datagrams are dropped, the transport closes the socket (the
        caller closes it if it was never attached)."""
        self._closed = True
        if self._batch_handle is not None:
            self._batch_handle.cancel()
            self._batch_handle = None
        self._backlog.clear()
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # what the loop makes
        if self._closed:
            self._transport.abort()
        else:
            self.resume_writing()  # what was sent before

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._receive(data, (addr[0], addr[1]))  # IPv6 adds flow info and scope id
        if self._batch_done is None:
            return
        self._pending += 1
        if self._pending >= self._batch:
            self._end_batch()
        elif self._batch_handle is None:
            self._batch_handle = asyncio.get_running_loop().call_soon(self._end_batch)

    def error_received(self, exc: Exception) -> None:
        if self._sending:
            self._failed = True
        if isinstance(exc, OSError):
            self._error(exc, self._sending)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        backlog, transport = self._backlog, self._transport
        while backlog and not self._paused and transport is not None:
            data, address = backlog.popleft()
            self._transmit(transport, data, address)

    def _end_batch(self) -> None:
        if self._batch_handle is not None:
            self._batch_handle.cancel()
            self._batch_handle = None
        self._pending = 0
        if self._batch_done is not None:
            self._batch_done()
