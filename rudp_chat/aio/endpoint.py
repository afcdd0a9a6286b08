"""One UDP socket driving one sans-IO node (a client ``Connection`` or a server ``Listener``).

The socket is read directly with ``loop.add_reader`` and a ``recvfrom`` loop rather than through
``loop.create_datagram_endpoint``: the stock event loop's datagram transport reads one datagram
per readiness callback, which measured about six times the CPU per datagram here and lost two
thirds of a 100 k datagrams/s burst; uvloop runs both equally fast. Each wake-up feeds every
readable datagram (up to a batch) to the node, then drains ``datagrams_to_send`` once, lets the
owner read the events it produced, and re-arms the one loop timer from
``get_timer``. Sends go straight to ``sendto``; only when the socket would block are they queued
(bounded) behind ``add_writer``. Any other OS error on a send is a lost datagram: counted, and
repaired by the protocol's loss recovery.

Where the running loop has no ``add_reader`` (Windows' proactor loop) the same socket is driven
through ``loop.create_datagram_endpoint`` instead (:mod:`.socketpath`): same batches, same
backlog bound, same counters; chosen once per endpoint and shown as :attr:`DatagramEndpoint.path`.

On the ``add_reader`` path, where the kernel has them (probed once per socket, see
:mod:`.batching`), the datagrams of one wake-up to one peer leave in one GSO ``sendmsg`` and
the socket reads with GRO on: many datagrams per system call, the same datagrams on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.listener import Listener

from .batching import (
    GRO_CONTROL_BYTES,
    batched_io_wanted,
    enable_batched_io,
    runs,
    segment_control,
    segment_size,
    split,
)
from .socketpath import DatagramChannel, SocketPath, choose_socket_path

__all__ = [
    "RECEIVE_BATCH",
    "RECEIVE_SIZE",
    "SOCKET_BUFFER_BYTES",
    "DatagramEndpoint",
    "SocketStats",
    "open_udp_socket",
    "resolve",
]

RECEIVE_BATCH = 256  # datagrams per readiness callback: drains a burst, yet lets timers run
RECEIVE_SIZE = 65_535  # bytes: the largest UDP payload, so nothing a peer sends is truncated
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024  # requested SO_RCVBUF/SO_SNDBUF: ~3,500 full datagrams
# absorb a 30 ms stall of a 1 Gbit/s burst; Linux caps the request at rmem_max/wmem_max
TIMER_RETRY_S = 0.001  # uvloop rounds a timer to whole milliseconds and may run it up to 0.5 ms
# early; waiting 1 ms more then beats spinning through call_soon until the deadline
clock = time.monotonic
"""The protocol's ``now``: ``loop.time()`` is the same clock on the stock loop, but uvloop's moves
in 1 ms steps, which turns loopback RTT samples into zeros and starves the congestion window.
Timers are armed with ``call_later`` from this clock, so the two clocks never mix."""
GSO_REFUSED = frozenset((errno.EIO, errno.EINVAL, errno.EOPNOTSUPP))
"""Errors of a segmented send that mean the route cannot segment (Linux returns EIO where the
device has no checksum offload), not that the datagrams were bad: they go again one by one."""
SEND_BACKLOG_MAX = 1024  # datagrams held while sendto would block; past it they are dropped
# (counted), as a router queue would: the protocol resends what matters


def _ignore() -> None:
    """Dispatch before ``start``: nothing can arrive yet."""


@dataclass(slots=True)
class SocketStats:
    """Counters of one UDP socket, below the protocol."""

    datagrams_received: int = 0
    bytes_received: int = 0
    datagrams_sent: int = 0
    """Datagrams the OS accepted (queued ones count once actually sent); on the
    datagram-endpoint path, those handed to the transport or its bounded backlog."""
    bytes_sent: int = 0
    send_errors: int = 0
    """Datagrams lost at our end: refused by the OS (ENOBUFS, EMSGSIZE, ECONNREFUSED, ...) or
    dropped because the would-block backlog was full."""
    receive_errors: int = 0
    """``recv`` failures, e.g. ECONNREFUSED from an ICMP port unreachable on a client socket, or
    Windows' ConnectionResetError for the same on any socket. On the datagram-endpoint path
    also the send errors the transport reports after the send returned (the proactor's)."""
    read_wakeups: int = 0
    """Readiness callbacks (datagram-endpoint path: batches); ``datagrams_received /
    read_wakeups`` is the mean batch."""
    timer_wakeups: int = 0
    """Times the one protocol timer fired."""
    full_batches: int = 0
    """Read wake-ups that took a whole batch (``RECEIVE_BATCH``), leaving datagrams queued: a
    server's listener is backlogged until a wake-up empties the socket (it then rations
    handshakes, see ``Listener.backlogged``)."""
    receive_buffer: int = 0
    """SO_RCVBUF the OS granted, bytes (Linux reports double the usable size)."""
    send_buffer: int = 0
    """SO_SNDBUF the OS granted, bytes."""
    batched_io: bool = False
    """Whether this socket sends with GSO and receives with GRO (see :mod:`.batching`); turned
    off for sends if the route refuses a segmented send (a device without checksum offload)."""
    segmented_sends: int = 0
    """GSO ``sendmsg`` calls that carried more than one datagram; ``datagrams_sent`` counts
    each datagram."""
    coalesced_receives: int = 0
    """``recvmsg`` calls that returned more than one datagram (GRO); ``datagrams_received``
    counts each datagram."""


async def resolve(host: str, port: int, *, passive: bool) -> tuple[int, tuple[Any, ...]]:
    """The address family and socket address for ``host``; numeric hosts skip the resolver thread.

    Raises ``socket.gaierror`` for a name that does not resolve.
    """
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=flags | socket.AI_NUMERICHOST
        )
    except socket.gaierror:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    family, _, _, _, address = infos[0]
    return family, tuple(address)


def open_udp_socket(
    family: int, *, bind: tuple[Any, ...] | None = None, connect: tuple[Any, ...] | None = None
) -> socket.socket:
    """A non-blocking UDP socket with large kernel buffers (what the OS grants, see stats),
    bound to ``bind`` and/or ``connect()``-ed to ``connect`` when given.

    Raises ``OSError`` (the socket is closed then) if it cannot be made, bound or connected.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # on refusal keep the default: a smaller buffer only means more drops under bursts
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        if bind is not None:
            sock.bind(bind)
        if connect is not None:
            sock.connect(connect)
    except BaseException:
        sock.close()
        raise
    return sock


class DatagramEndpoint:
    """Drives ``node`` from ``sock`` on the running loop until :meth:`close`.

    ``peer`` is set for a client: the socket is ``connect()``-ed there, so every datagram comes
    from it and ICMP errors surface as ``ConnectionRefusedError``. ``path`` forces how the
    socket is driven (see :func:`~.socketpath.choose_socket_path`; raises ``ValueError`` for
    a path the loop cannot take).
    """

    def __init__(
        self,
        sock: socket.socket,
        node: Connection | Listener,
        *,
        peer: Address | None = None,
        path: SocketPath | None = None,
        batched_io: bool | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.path = choose_socket_path(self.loop, path)
        """The path chosen for this socket: ``READER`` or ``DATAGRAM_ENDPOINT``."""
        self.stats = SocketStats(
            receive_buffer=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            send_buffer=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            batched_io=self.path is SocketPath.READER
            and batched_io_wanted(batched_io)
            and enable_batched_io(sock),
        )
        self.closed = False
        self._sock = sock
        self._fd = sock.fileno()
        self._node = node
        self._listener = node if isinstance(node, Listener) else None
        self._peer = peer
        self._dispatch: Callable[[], None] = _ignore
        self._on_error: Callable[[OSError], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # the node's next timer, as last read
        self._armed: float | None = None  # when ``_timer`` fires: at or before ``_deadline``
        self._flush_handle: asyncio.Handle | None = None
        self._backlog: deque[tuple[bytes, Address]] = deque()
        self._writing = False  # add_writer is active
        self._channel: DatagramChannel | None = None  # the datagram-endpoint path's

    @property
    def local_address(self) -> Address:
        """The bound ``(host, port)`` (port 0 resolved to the one the OS chose)."""
        name = self._sock.getsockname()
        return (name[0], name[1])

    async def start(
        self,
        dispatch: Callable[[], None],
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        """Watch the socket and send whatever the node has queued (a client's first HELLO).

        ``dispatch`` runs after every input (datagrams, a timer, a flush request), once the
        node's datagrams were sent: the owner then reads events (a ``Listener`` names the
        connections it drove in ``flushed()``).
        ``on_error`` sees each OS error of the socket (ECONNREFUSED is the interesting one).
        """
        self._dispatch = dispatch
        self._on_error = on_error
        if self.path is SocketPath.READER:
            reader = self._on_readable_batched if self.stats.batched_io else self._on_readable
            self.loop.add_reader(self._fd, reader)
        else:
            self._channel = DatagramChannel(
                self._on_datagram,
                self._on_channel_error,
                self._on_backlog_full,
                batch_done=self._on_batch,
                batch=RECEIVE_BATCH,
                backlog_max=SEND_BACKLOG_MAX,
                peer=self._peer,
            )
            await self._channel.attach(self._sock)
        self._after_input()

    def request_flush(self) -> None:
        """An API call queued output: send it on the next loop iteration, batched with others."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.loop.call_soon(self._on_flush)

    def flush_pending(self) -> bool:
        """Run a requested flush now instead of on the next loop iteration; False if none was
        requested. For an owner about to wait (``recv``): what it queued goes out a loop
        iteration sooner, with the ACK it carries, and that iteration is not spent."""
        handle = self._flush_handle
        if handle is None:
            return False
        handle.cancel()
        self._on_flush()
        return True

    def flush(self) -> None:
        """Send what the node has queued now, without dispatching (``abort`` before ``close``)."""
        if not self.closed:
            self._send_all(self._node.datagrams_to_send(clock()))

    def close(self) -> None:
        """Stop driving the node and close the socket; idempotent. Queued datagrams are lost."""
        if self.closed:
            return
        self.closed = True
        for handle in (self._timer, self._flush_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._flush_handle = None
        self._armed = None
        if self._channel is not None:
            self._channel.close()  # the transport closes the socket
            return
        if self.path is SocketPath.READER:
            self.loop.remove_reader(self._fd)
        if self._writing:
            self.loop.remove_writer(self._fd)
        self._backlog.clear()
        self._sock.close()

    # ------------------------------------------------------------------ input

    def _on_readable(self) -> None:
        stats = self.stats
        stats.read_wakeups += 1
        node = self._node
        now = clock()
        peer = self._peer
        received = size = 0
        full = True  # until the socket runs dry
        for _ in range(RECEIVE_BATCH):
            try:
                if peer is None:
                    data, sender = self._sock.recvfrom(RECEIVE_SIZE)
                    address: Address = sender[:2]  # IPv6 adds flow info and scope id
                else:
                    data = self._sock.recv(RECEIVE_SIZE)
                    address = peer
            except (BlockingIOError, InterruptedError):
                full = False
                break
            except OSError as error:  # also Windows' ConnectionResetError: counted, not fatal
                self._receive_failed(error)
                if self.closed:
                    return
                continue
            received += 1
            size += len(data)
            node.receive_datagram(data, address, now)
        stats.datagrams_received += received
        stats.bytes_received += size
        self._read_done(full)
        self._after_input()

    def _on_readable_batched(self) -> None:
        """``_on_readable`` with GRO: one ``recvmsg`` may carry several datagrams."""
        stats = self.stats
        stats.read_wakeups += 1
        node = self._node
        now = clock()
        peer = self._peer
        recvmsg = self._sock.recvmsg
        received = size = 0
        full = True  # until the socket runs dry
        for _ in range(RECEIVE_BATCH):
            try:
                data, ancillary, _flags, sender = recvmsg(RECEIVE_SIZE, GRO_CONTROL_BYTES)
            except (BlockingIOError, InterruptedError):
                full = False
                break
            except OSError as error:
                self._receive_failed(error)
                if self.closed:
                    return
                continue
            address: Address = peer or sender[:2]  # IPv6 adds flow info and scope id
            size += len(data)
            segment = segment_size(ancillary) if ancillary else 0
            if segment and len(data) > segment:
                stats.coalesced_receives += 1
                for datagram in split(data, segment):
                    received += 1
                    node.receive_datagram(datagram, address, now)
                continue
            received += 1
            node.receive_datagram(data, address, now)
        stats.datagrams_received += received
        stats.bytes_received += size
        self._read_done(full)
        self._after_input()

    def _read_done(self, full: bool) -> None:
        """A read wake-up ended; ``full``: it took a whole batch, so more datagrams wait (a
        listener is backlogged until a wake-up empties the socket)."""
        if full:
            self.stats.full_batches += 1
        if self._listener is not None:
            self._listener.backlogged = full

    def _receive_failed(self, error: OSError) -> None:
        self.stats.receive_errors += 1
        if self._on_error is not None:
            self._on_error(error)

    def _on_datagram(self, data: bytes, sender: Address) -> None:
        """Datagram-endpoint path: one datagram; ``_on_batch`` follows a run of them."""
        stats = self.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(data)
        self._node.receive_datagram(data, self._peer or sender, clock())

    def _on_batch(self) -> None:
        self.stats.read_wakeups += 1
        if not self.closed:
            self._after_input()

    def _on_channel_error(self, error: OSError, sending: bool) -> None:
        if sending:
            self._send_failed(error)
            return
        self._receive_failed(error)
        self.request_flush()  # what the error did to the node (an aborted handshake) goes out

    def _on_backlog_full(self) -> None:
        self.stats.send_errors += 1

    def _on_timer(self) -> None:
        self.stats.timer_wakeups += 1
        now = clock()
        deadline = self._deadline
        if deadline is not None and now < deadline:  # armed early (see _after_input), or uvloop
            self._armed = deadline  # (see TIMER_RETRY_S)
            self._timer = self.loop.call_later(max(deadline - now, TIMER_RETRY_S), self._on_timer)
            return
        self._timer = None
        self._deadline = self._armed = None
        self._node.handle_timer(now)
        self._after_input()

    def _on_flush(self) -> None:
        self._flush_handle = None
        self._after_input()

    def _after_input(self) -> None:
        """Send once, let the owner read events, re-arm the timer once."""
        self._send_all(self._node.datagrams_to_send(clock()))
        self._dispatch()
        if self.closed:
            return
        deadline = self._deadline = self._node.get_timer()
        armed = self._armed
        if deadline is not None and armed is not None and armed <= deadline:
            return  # fires first, then waits out the rest: a deadline that moves later on each
            # send and receive (an RTO, a delayed ACK) costs no new loop timer each time
        if self._timer is not None:
            self._timer.cancel()
        self._armed = deadline
        self._timer = (
            None if deadline is None else self.loop.call_later(deadline - clock(), self._on_timer)
        )

    # ----------------------------------------------------------------- output

    def _send_all(self, datagrams: list[tuple[bytes, Address]]) -> None:
        if not datagrams:
            return
        if self._backlog:
            self._queue(datagrams, 0)
            return
        stats = self.stats
        channel = self._channel
        if channel is not None:
            for data, address in datagrams:
                if channel.send(data, address):
                    stats.datagrams_sent += 1
                    stats.bytes_sent += len(data)
                if self.closed:
                    return
            return
        if stats.batched_io:
            self._send_batched(datagrams)
            return
        sock = self._sock
        connected = self._peer is not None
        for index, (data, address) in enumerate(datagrams):
            try:
                if connected:
                    sock.send(data)
                else:
                    sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                self._queue(datagrams, index)
                self._writing = True
                self.loop.add_writer(self._fd, self._on_writable)
                return
            except OSError as error:
                self._send_failed(error)
                if self.closed:
                    return
                continue
            stats.datagrams_sent += 1
            stats.bytes_sent += len(data)

    def _send_batched(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """``_send_all`` with GSO: each run of equal-size datagrams to one peer in one call."""
        stats = self.stats
        sock = self._sock
        connected = self._peer is not None
        for start, stop in runs(datagrams):
            data, address = datagrams[start]
            try:
                if stop - start == 1:
                    sent = sock.send(data) if connected else sock.sendto(data, address)
                else:
                    payloads = [item[0] for item in datagrams[start:stop]]
                    control = segment_control(len(data))
                    if connected:
                        sent = sock.sendmsg(payloads, control)
                    else:
                        sent = sock.sendmsg(payloads, control, 0, address)
                    stats.segmented_sends += 1
            except (BlockingIOError, InterruptedError):
                self._queue(datagrams, start)
                self._writing = True
                self.loop.add_writer(self._fd, self._on_writable)
                return
            except OSError as error:
                if stop - start > 1 and error.errno in GSO_REFUSED:
                    stats.batched_io = False  # this route cannot segment: one per call from now
                    self._send_all(datagrams[start:])
                    return
                stats.send_errors += stop - start - 1  # the whole run is lost, one error
                self._send_failed(error)
                if self.closed:
                    return
                continue
            stats.datagrams_sent += stop - start
            stats.bytes_sent += sent

    def _queue(self, datagrams: list[tuple[bytes, Address]], start: int) -> None:
        backlog = self._backlog
        for item in datagrams[start:]:
            if len(backlog) < SEND_BACKLOG_MAX:
                backlog.append(item)
            else:
                self.stats.send_errors += 1

    def _on_writable(self) -> None:
        backlog = self._backlog
        stats = self.stats
        connected = self._peer is not None
        while backlog:
            data, address = backlog[0]
            try:
                if connected:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                backlog.popleft()
                self._send_failed(error)
                if self.closed:
                    return
                continue
            backlog.popleft()
            stats.datagrams_sent += 1
            stats.bytes_sent += len(data)
        self._writing = False
        self.loop.remove_writer(self._fd)

    def _send_failed(self, error: OSError) -> None:
        self.stats.send_errors += 1
        if self._on_error is not None:
            self._on_error(error)
