"""The asyncio face of the protocol: ``connect``, ``serve``, their connections and servers.

All protocol logic stays in the core; this module only turns its events into awaitables.

Flow control: ``recv`` takes events out of the core one at a time, as the application reads, so
unread messages stay in the core, where they count against the receive window it advertises: a
slow reader stalls its sender instead of growing a queue here. The end of a connection is seen
from the core's ``state`` without taking messages out; the remaining messages are then moved here
(they were already received, so this holds nothing new) and stay readable before ``recv`` raises.
While ``close`` waits, messages are moved here as they arrive, so a peer's last messages can
still be delivered (and read afterwards) even if nobody reads during the close.

Which connections an input reached is the listener's to say (``Listener.flushed``): only those
are polled, whether a datagram, a timer or an API call reached them.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.errors import ConnectionClosedError, SendBufferFullError
from rudp_chat.core.events import (
    Connected,
    ConnectionTerminated,
    DatagramReceived,
    Event,
    MessageReceived,
    TerminationReason,
)
from rudp_chat.core.frames import ErrorCode
from rudp_chat.core.listener import Listener, ListenerStats
from rudp_chat.core.noise import StaticKey
from rudp_chat.core.state import Role, State
from rudp_chat.core.stats import ConnectionStats

from .endpoint import DatagramEndpoint, SocketStats, clock, open_udp_socket, resolve
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
from .qlog import QlogDirectory
from .socketpath import SocketPath

__all__ = ["ReliableConnection", "Server", "ServerStats", "connect", "serve"]

_GRACEFUL = frozenset({TerminationReason.CLOSED, TerminationReason.CLOSED_BY_PEER})


class ReliableConnection:
    """One reliable, ordered, message-oriented connection, as awaitable calls.

    Made by :func:`connect` (a client, which owns its UDP socket) or handed out by
    :meth:`Server.accept` (sharing the server's socket).
    """

    def __init__(
        self,
        connection: Connection,
        endpoint: DatagramEndpoint,
        server: Server | None = None,
        wake: Callable[[Connection], None] | None = None,
        qlog: QlogDirectory | None = None,
    ) -> None:
        """Internal: use :func:`connect` or :meth:`Server.accept`. ``qlog`` holds a client's
        trace, closed with its socket."""
        loop = endpoint.loop
        self._core = connection
        self._endpoint = endpoint
        self._server = server
        self._wake = wake
        self._qlog = qlog
        self._unread: deque[Event] = deque()  # taken from the core, not yet returned by recv
        self._termination: ConnectionTerminated | None = None
        self._terminated: asyncio.Future[ConnectionTerminated] = loop.create_future()
        self._released: asyncio.Future[None] = loop.create_future()  # nothing left to drive
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._recv_waiter: asyncio.Future[Event] | None = None
        self._datagram_waiter: asyncio.Future[DatagramReceived] | None = None
        self._send_waiters: dict[int, tuple[int, asyncio.Future[None]]] = {}
        """Per lane, the sender waiting for room: (bytes it needs, its future)."""
        self._send_locks: dict[int, asyncio.Lock] = {}  # FIFO per lane: senders keep their order
        self._queued_senders: dict[int, int] = {}
        """Per lane, senders on the waiting path (holding the lock or queued for it): while
        any is, a new sender queues too instead of overtaking them."""
        self._closing = False
        self._discard = False  # after abort: unread messages are dropped
        self._unreachable = False
        connection.on_change = self._on_change
        if connection.state is not State.CONNECTING:
            self._handshake.set_result(None)

    # ------------------------------------------------------------------ API

    @property
    def state(self) -> State:
        return self._core.state

    @property
    def termination(self) -> ConnectionTerminated | None:
        """The core's final event, once the connection has ended."""
        return self._termination

    @property
    def peer_address(self) -> Address:
        """Where the peer is now: an encrypted connection follows it to a new address."""
        return self._core.peer_address

    @property
    def server_fingerprint(self) -> str | None:
        """Client: the fingerprint of the server's key (None when ``insecure``)."""
        return self._core.server_fingerprint

    @property
    def peer_static_key(self) -> bytes | None:
        """The peer's static key, authenticated by the handshake. Accepted by a server: the
        client's key, None for a guest (or insecure); a client: the server's key."""
        return self._core.peer_static_key

    @property
    def peer_fingerprint(self) -> str | None:
        """The fingerprint of :attr:`peer_static_key` (None when there is none)."""
        return self._core.peer_fingerprint

    @property
    def socket_path(self) -> SocketPath:
        """How the UDP socket under this connection is driven (``/stats`` shows it)."""
        return self._endpoint.path

    def stats(self) -> ConnectionStats:
        return self._core.stats()

    def socket_stats(self) -> SocketStats:
        """Counters of the UDP socket under this connection (the server's, if accepted)."""
        return replace(self._endpoint.stats)

    async def send(self, data: bytes, lane: int = 0) -> None:
        """Queue one message on ``lane`` (``ConnectionConfig.lanes``); waits while the send
        buffer is full (the peer has not acknowledged). Each lane waits on its own: a bulk lane
        waiting for room does not hold a message for another lane back.

        Raises ``MessageTooLargeError``; ``LocalProtocolError`` for a lane not configured;
        ``ConnectionClosedError`` after a close by either side; :class:`ConnectionLostError`
        after an abnormal end (:class:`ConnectionRefusedByServer` when the end was the
        server's refusal).
        """
        if self.send_nowait(data, lane):
            return  # the usual case: room, and nobody ahead on this lane to overtake
        queued = self._queued_senders
        queued[lane] = queued.get(lane, 0) + 1
        try:
            async with self._send_locks.setdefault(lane, asyncio.Lock()):
                while not self._try_send(data, lane):
                    waiter = self._endpoint.loop.create_future()
                    self._send_waiters[lane] = len(data), waiter
                    try:
                        await waiter
                    finally:
                        del self._send_waiters[lane]
        finally:
            queued[lane] -= 1

    def send_nowait(self, data: bytes, lane: int = 0) -> bool:
        """:meth:`send` if it need not wait: False, nothing queued, when it would (the lane's
        send buffer is full, or an earlier :meth:`send` on the lane still waits, which keeps
        the lane's order). No task switch: a server fanning one line out to many connections
        queues it in each at once. Raises as :meth:`send` does."""
        return not self._queued_senders.get(lane) and self._try_send(data, lane)

    def _try_send(self, data: bytes, lane: int) -> bool:
        """Hand ``data`` to the core; False while its send buffer is full. Raises as
        :meth:`send` does."""
        try:
            self._core.send(data, lane)
        except SendBufferFullError:
            return False
        except ConnectionClosedError:
            termination = self._termination
            if termination is not None and termination.reason not in _GRACEFUL:
                raise self._end_error() from None
            raise
        return True

    async def recv(self) -> bytes:
        """The next message. Raises ``EOFError`` once a graceful close by either side delivered
        everything, :class:`ConnectionLostError` after an abnormal end (messages that arrived
        before it are returned first; :class:`ConnectionRefusedByServer` when the end was the
        server's refusal), ``RuntimeError`` if another ``recv`` is waiting."""
        return (await self.receive()).data

    async def receive(self) -> MessageReceived:
        """:meth:`recv`, as the core's event: the message with its lane and its position in
        the lane. Raises as :meth:`recv` does."""
        if self._recv_waiter is not None:
            raise RuntimeError("recv() is already being awaited on this connection")
        while True:
            event = self._take_event()
            if event is None:
                if self._termination is not None:
                    raise self._end_error()
                if self._endpoint.flush_pending():
                    continue  # sent what we queued (an echo) before waiting; look again
                self._recv_waiter = waiter = self._endpoint.loop.create_future()
                try:
                    event = await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._unread.appendleft(waiter.result())  # not lost to the cancel
                    raise
                finally:
                    self._recv_waiter = None
            if type(event) is MessageReceived:
                return event
            if type(event) is ConnectionTerminated:
                raise self._end_error()

    def send_datagram(self, data: bytes, lane: int = 0, latest_only: bool = False) -> None:
        """Queue one unreliable datagram (``Connection.send_datagram``): sent at most once, never
        waits; dropped rather than queued long when the path is full (PROTOCOL.md §5).

        Raises ``DatagramTooLargeError`` above :attr:`max_datagram_payload`,
        ``LocalProtocolError`` for a lane out of range, ``ConnectionClosedError`` once closing.
        """
        self._core.send_datagram(data, lane, latest_only)

    @property
    def max_datagram_payload(self) -> int:
        """The largest datagram :meth:`send_datagram` takes now."""
        return self._core.max_datagram_payload

    async def recv_datagram(self) -> DatagramReceived:
        """The next unreliable datagram, read apart from messages (unread ones wait in the
        core's bounded queue, the oldest dropped first). Raises like :meth:`recv` once the
        connection has ended and no datagram is left; ``RuntimeError`` if another
        ``recv_datagram`` is waiting."""
        if self._datagram_waiter is not None:
            raise RuntimeError("recv_datagram() is already being awaited on this connection")
        datagram = self._core.next_datagram()
        if datagram is not None:
            return datagram
        if self._termination is not None:
            raise self._end_error()
        waiter: asyncio.Future[DatagramReceived] = self._endpoint.loop.create_future()
        self._datagram_waiter = waiter
        try:
            return await waiter
        finally:
            self._datagram_waiter = None

    def __aiter__(self) -> ReliableConnection:
        return self

    async def __anext__(self) -> bytes:
        """Ends at a graceful close; raises :class:`ConnectionLostError` otherwise."""
        try:
            return await self.recv()
        except EOFError:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Close gracefully: returns once queued messages were delivered both ways and the core
        reported the end. After a graceful end a client also waits out the core's drain (a few
        RTOs, answering the peer's retransmitted CLOSE), then closes its socket; after an
        abnormal end there is nothing to answer, so it closes at once. Bounded by the idle
        timeout if the peer vanishes. Cancelling it aborts the connection."""
        try:
            if self._termination is None:
                self._begin_close()
                termination = await asyncio.shield(self._terminated)
            else:
                termination = self._termination
            if self._server is None:
                if termination.reason not in _GRACEFUL:
                    self._release()
                await asyncio.shield(self._released)
        except asyncio.CancelledError:
            self.abort("close cancelled")
            raise

    def abort(self, detail: str = "") -> None:
        """End now: unread and unacknowledged messages are dropped, the peer is told once."""
        self._discard = True
        self._unread.clear()
        self._core.abort(detail)
        self._poll()
        if self._server is None:
            self._endpoint.flush()
            self._release()

    async def wait_closed(self) -> ConnectionTerminated:
        """Wait until the connection has ended (by anyone); returns the core's final event."""
        return await asyncio.shield(self._terminated)

    async def __aenter__(self) -> ReliableConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------- internals

    def _begin_close(self) -> None:
        self._closing = True
        self._core.close()
        self._poll()

    def _on_change(self, connection: Connection) -> None:
        if self._wake is not None:
            self._wake(connection)  # the listener's own hook, which this one replaces
        self._endpoint.request_flush()

    def _on_input(self) -> None:
        """A client's endpoint dispatch: every input concerns its one connection."""
        self._poll()

    def _on_socket_error(self, error: OSError) -> None:
        """ICMP port unreachable during the handshake: nothing listens there, fail now. Later it
        only costs a datagram (it may be forged, or the server may be restarting)."""
        if isinstance(error, ConnectionRefusedError) and self._core.state is State.CONNECTING:
            self._unreachable = True
            self._core.abort("port unreachable")

    def _poll(self) -> None:
        """After an input that may have reached this connection: wake whoever waits on it."""
        core = self._core
        state = core.state
        if self._termination is None and (
            self._closing or state is State.DRAINING or state is State.CLOSED
        ):  # DRAINING or CLOSED: the core has emitted ConnectionTerminated
            self._collect()
        if not self._handshake.done() and state is not State.CONNECTING:
            self._handshake.set_result(None)
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            event = self._take_event()
            if event is not None:
                waiter.set_result(event)
        datagrams = self._datagram_waiter
        if datagrams is not None and not datagrams.done():
            datagram = core.next_datagram()
            if datagram is not None:
                datagrams.set_result(datagram)
            elif self._termination is not None:
                datagrams.set_exception(self._end_error())
        for lane, (need, sender) in self._send_waiters.items():
            if not sender.done() and (
                self._termination is not None
                or state is State.CLOSING  # the peer closed: the retry raises
                or core.send_capacity_on(lane) >= need
            ):
                sender.set_result(None)
        if core.is_closed:
            self._release()

    def _collect(self) -> None:
        """Move the core's pending events here (at the end, or while closing)."""
        while (event := self._core.next_event(datagrams=False)) is not None:
            if type(event) is ConnectionTerminated:
                self._unread.append(event)
                self._set_terminated(event)
            elif type(event) is MessageReceived and not self._discard:
                self._unread.append(event)

    def _take_event(self) -> Event | None:
        while True:
            if self._unread:
                event = self._unread.popleft()
            else:
                core_event = self._core.next_event(datagrams=False)
                if core_event is None:
                    return None
                event = core_event
                if type(event) is ConnectionTerminated:
                    self._set_terminated(event)
            if type(event) is not Connected:
                return event

    def _set_terminated(self, event: ConnectionTerminated) -> None:
        if self._termination is None:
            self._termination = event
            self._terminated.set_result(event)

    def _end_error(self) -> Exception:
        termination = self._termination
        if termination is None or termination.reason in _GRACEFUL:
            return EOFError("connection closed")
        return _refusal(termination) or ConnectionLostError(
            termination.reason, termination.detail, termination.error_code
        )

    def _release(self) -> None:
        """The core is done (or abandoned): free the socket (client) or the table slot (server)."""
        if self._released.done():
            return
        self._released.set_result(None)
        if self._qlog is not None:
            self._qlog.close()
        if self._server is None:
            self._endpoint.close()
        else:
            self._server._forget(self)

    async def _wait_established(self) -> None:
        """Client: wait out the handshake; raises a :class:`ConnectError` if it fails."""
        await asyncio.shield(self._handshake)
        termination = self._termination
        if self._unreachable:
            raise PortUnreachableError(f"nothing listens on {self.peer_address} (ICMP)")
        if termination is None or termination.reason in _GRACEFUL:
            return
        refusal = _refusal(termination)
        if refusal is not None:
            raise refusal
        if termination.reason is TerminationReason.HANDSHAKE_TIMEOUT:
            raise HandshakeTimeoutError(f"no answer from {self.peer_address}")
        if termination.reason is TerminationReason.UNTRUSTED:
            raise UntrustedServerError(termination.detail, self._core.server_fingerprint)
        raise ConnectError(f"connection to {self.peer_address} failed: {termination.detail}")


def _refusal(termination: ConnectionTerminated) -> ConnectionRefusedByServer | None:
    """The server's refusal, if that is how the connection ended. A refusal is a WELCOME and
    then a CLOSE, so the CLOSE may reach a client after ``connect`` returned: its ``recv`` and
    ``send`` raise the refusal then, not a :class:`ConnectionLostError`."""
    if termination.error_code == ErrorCode.KEY_REQUIRED:
        return GuestsNotAllowedError(termination.detail)
    if termination.error_code == ErrorCode.REFUSED:
        return ConnectionRefusedByServer(termination.detail)
    return None


async def connect(
    host: str,
    port: int,
    *,
    config: ConnectionConfig | None = None,
    server_fingerprint: str | None = None,
    client_key: StaticKey | None = None,
    socket_path: SocketPath | None = None,
) -> ReliableConnection:
    """Open a connection to a server, on a UDP socket of its own ``connect()``-ed to it.

    ``server_fingerprint`` pins the server's key; without it any key is accepted and
    :attr:`ReliableConnection.server_fingerprint` tells which, for the caller to pin.
    ``client_key`` is the identity the handshake proves to the server (see
    ``rudp_chat.identity.load_or_create_client_key``); without it we are a guest.
    Raises :class:`HandshakeTimeoutError`, :class:`PortUnreachableError`,
    :class:`ConnectionRefusedByServer` (:class:`GuestsNotAllowedError` for a guest at a
    server that takes none), :class:`UntrustedServerError` or another
    :class:`ConnectError`; ``OSError`` if the address does not resolve, the socket
    cannot be made or ``config.qlog`` names a directory that cannot be made.
    ``socket_path`` forces how the socket is driven (see
    :func:`~.socketpath.choose_socket_path`, which raises ``ValueError`` for one the loop lacks).
    """
    qlog_dir = None if config is None else config.qlog
    qlog = None if qlog_dir is None else QlogDirectory(qlog_dir, Role.CLIENT)
    family, address = await resolve(host, port, passive=False)
    sock = open_udp_socket(family, connect=address)
    peer: Address = (address[0], address[1])  # the core compares 2-tuples; IPv6 gives 4
    core = Connection.connect(
        peer,
        clock(),
        os.urandom,
        config,
        server_fingerprint=server_fingerprint,
        client_key=client_key,
        trace=None if qlog is None else qlog.open(),
    )
    try:
        endpoint = DatagramEndpoint(sock, core, peer=peer, path=socket_path)
    except BaseException:
        sock.close()
        raise
    connection = ReliableConnection(core, endpoint, qlog=qlog)
    try:
        await endpoint.start(connection._on_input, on_error=connection._on_socket_error)
        await connection._wait_established()
    except BaseException:
        connection.abort("connect failed")
        raise
    return connection


@dataclass(slots=True)
class ServerStats(ListenerStats):
    """The listener's counters, plus the server socket's and the live connection count."""

    connections: int = 0
    socket: SocketStats = field(default_factory=SocketStats)
    socket_path: SocketPath = SocketPath.AUTO
    """How the server socket is driven (``AUTO`` only in a default-made instance)."""


class Server:
    """Accepts connections on one UDP socket, demultiplexed by connection id (the Listener).

    Accepted connections and the server share the socket; closing the server closes them.
    """

    def __init__(
        self, listener: Listener, endpoint: DatagramEndpoint, qlog: QlogDirectory | None = None
    ) -> None:
        """Internal: use :func:`serve`. ``qlog`` holds the connections' traces."""
        self.address: Address = endpoint.local_address
        self._listener = listener
        self._endpoint = endpoint
        self._qlog = qlog
        self._wrappers: dict[bytes, ReliableConnection] = {}  # until the core forgets them
        self._pending: deque[ReliableConnection] = deque()  # not yet accepted
        self._accept_waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._drained: asyncio.Future[None] = endpoint.loop.create_future()  # see _check_drained
        self._closed: asyncio.Future[None] = endpoint.loop.create_future()

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the key clients pin (None when ``insecure``)."""
        return self._listener.fingerprint

    @property
    def connections(self) -> list[ReliableConnection]:
        """Connections not yet ended, accepted or waiting to be."""
        return [wrapper for wrapper in self._wrappers.values() if wrapper.termination is None]

    def stats(self) -> ServerStats:
        return ServerStats(
            **asdict(self._listener.stats),
            connections=len(self.connections),
            socket=replace(self._endpoint.stats),
            socket_path=self._endpoint.path,
        )

    async def accept(self) -> ReliableConnection:
        """The next new connection; raises :class:`TransportError` once the server is closing."""
        while not self._pending:
            if self._closing:
                raise TransportError("the server is closed")
            if self._accept_waiter is None:
                self._accept_waiter = self._endpoint.loop.create_future()
            await asyncio.shield(self._accept_waiter)
        return self._pending.popleft()

    def __aiter__(self) -> Server:
        return self

    async def __anext__(self) -> ReliableConnection:
        """Stops once the server is closing."""
        try:
            return await self.accept()
        except TransportError:
            raise StopAsyncIteration from None

    async def close(self, timeout: float = 5.0) -> None:
        """Close every connection gracefully: queued data is delivered both ways and each
        gracefully ended connection drains (answering its peer's retransmitted CLOSE). After
        ``timeout`` seconds the rest are aborted; then the socket closes. Idempotent; concurrent
        calls wait together."""
        if self._closing:
            await asyncio.shield(self._closed)
            return
        self._closing = True
        self._wake_acceptors()
        try:
            for wrapper in list(self._wrappers.values()):
                if wrapper.termination is None:
                    wrapper._begin_close()
            self._endpoint.request_flush()
            self._check_drained()
            if not self._drained.done():
                try:
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(self._drained)
                except TimeoutError:
                    pass
        finally:
            for wrapper in list(self._wrappers.values()):
                if wrapper.termination is None:
                    wrapper.abort("server closed")
            self._endpoint.flush()
            self._endpoint.close()
            for wrapper in list(self._wrappers.values()):
                wrapper._release()
            if self._qlog is not None:
                self._qlog.close()
            self._closed.set_result(None)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------- internals

    def _on_input(self) -> None:
        """Endpoint dispatch: adopt new connections, wake those the input reached."""
        listener = self._listener
        while (core := listener.accept()) is not None:
            wrapper = ReliableConnection(core, self._endpoint, self, listener.wake)
            self._wrappers[core.local_id] = wrapper
            wrapper._poll()
            if self._closing:
                wrapper.abort("server closing")
            else:
                self._pending.append(wrapper)
                self._wake_acceptors()
        wrappers = self._wrappers
        for core in listener.flushed():
            reached = wrappers.get(core.local_id)
            if reached is not None:
                reached._poll()
        if self._closing:
            self._check_drained()

    def _wake_acceptors(self) -> None:
        waiter = self._accept_waiter
        if waiter is not None:
            self._accept_waiter = None
            waiter.set_result(None)

    def _forget(self, wrapper: ReliableConnection) -> None:
        del self._wrappers[wrapper._core.local_id]

    def _check_drained(self) -> None:
        """While closing: done once no connection is open or draining after a graceful end (an
        abnormal end leaves no CLOSE handshake to finish, so its drain is not waited for)."""
        if self._drained.done():
            return
        for wrapper in self._wrappers.values():
            termination = wrapper.termination
            if termination is None or termination.reason in _GRACEFUL:
                return
        self._drained.set_result(None)


async def serve(
    host: str,
    port: int,
    *,
    config: ListenerConfig | None = None,
    secret: bytes | None = None,
    static_key: StaticKey | None = None,
    socket_path: SocketPath | None = None,
) -> Server:
    """Bind a UDP socket (port 0 picks a free one, see ``Server.address``) and start accepting.

    ``secret`` (32 random bytes kept across restarts) lets a restarted server reset its old
    clients' connections; by default each start makes a new one. ``static_key`` is the
    identity clients pin (see ``rudp_chat.identity``); by default each start makes a new
    one, which suits tests only. With ``config.connection.qlog`` set, each accepted
    connection writes its qlog trace there. ``socket_path`` forces how the socket is driven
    (see :func:`~.socketpath.choose_socket_path`). Raises ``OSError`` if the address does not
    resolve or cannot be bound, or the qlog directory cannot be made; ``ValueError`` for a
    socket path the loop lacks.
    """
    qlog_dir = None if config is None else config.connection.qlog
    qlog = None if qlog_dir is None else QlogDirectory(qlog_dir, Role.SERVER)
    family, address = await resolve(host, port, passive=True)
    sock = open_udp_socket(family, bind=address)
    try:
        listener = Listener(
            os.urandom,
            config,
            secret=secret,
            static_key=static_key,
            trace=None if qlog is None else qlog.open,
        )
        endpoint = DatagramEndpoint(sock, listener, path=socket_path)
    except BaseException:
        sock.close()
        raise
    server = Server(listener, endpoint, qlog)
    try:
        await endpoint.start(server._on_input)
    except BaseException:
        endpoint.close()
        raise
    return server
