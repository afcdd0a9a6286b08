"""A UDP proxy that impairs real traffic with the simulator's own link model.

Each direction is one :class:`~rudp_chat.sim.link.Link` ("up" = client to server, "down" = back),
the one place impairments are defined: the proxy only hands each datagram to
``link.transmit(data, loop.time())`` and sends the copies it returns at their arrival times with
``loop.call_at``. Every client address gets its own upstream socket, so the server sees distinct
clients. Both links are shared by all clients, like one bottleneck in front of the server.

Its sockets are read with ``add_reader`` where the loop has it, else through
``loop.create_datagram_endpoint`` (see :mod:`.socketpath`); ``socket_path`` forces either.

Run it as ``rudp-chat proxy ...`` or ``python -m rudp_chat.aio.proxy ...`` (same flags).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import random
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rudp_chat.arguments import host_port, number, positive
from rudp_chat.core.connection import Address
from rudp_chat.sim.link import Link, LinkProfile, LinkStats
from rudp_chat.stopsignals import on_stop_signals

from .endpoint import RECEIVE_BATCH, RECEIVE_SIZE, SEND_BACKLOG_MAX, open_udp_socket, resolve
from .socketpath import DatagramChannel, SocketPath, choose_socket_path

__all__ = ["CLIENT_IDLE_S", "MAX_CLIENTS", "ProxyCounters", "UdpProxy", "add_parser", "main"]

MAX_CLIENTS = 1024  # client addresses forwarded at once: each costs an upstream socket (a fd)
CLIENT_IDLE_S = 60.0  # a client silent both ways this long is forgotten: far past the protocol's
# 10 s idle timeout, so only dead clients expire
SWEEP_INTERVAL_S = 15.0  # how often idle clients are looked for; expiry is CLIENT_IDLE_S..+15 s
BITS_PER_BYTE = 8
MS_PER_S = 1000.0

T = TypeVar("T")


@dataclass(slots=True)
class ProxyCounters:
    """What the proxy itself did, besides the links' impairments."""

    clients: int = 0
    """Client addresses seen."""
    clients_expired: int = 0
    clients_refused: int = 0
    """Datagrams dropped because the client table was full of live clients."""
    send_errors: int = 0
    """Datagrams the OS would not send (e.g. ECONNREFUSED: nothing listens upstream)."""
    receive_errors: int = 0


class _Client:
    """One client address and the upstream socket that speaks for it."""

    __slots__ = ("address", "channel", "closed", "last_active", "sock")

    def __init__(self, address: Address, sock: socket.socket, now: float) -> None:
        self.address = address
        self.sock = sock
        self.channel: DatagramChannel | None = None  # the datagram-endpoint path's
        self.last_active = now
        self.closed = False


class UdpProxy:
    """Forwards datagrams between clients at ``listen`` and the server at ``upstream``.

    ``up`` impairs client-to-server datagrams, ``down`` the replies; ``seed`` makes the
    impairment draws repeatable (their timing still follows the real clock).
    """

    def __init__(
        self,
        listen: Address,
        upstream: Address,
        up: LinkProfile,
        down: LinkProfile,
        *,
        seed: int = 0,
        capture: Callable[[str, bytes], None] | None = None,
        socket_path: SocketPath | None = None,
    ) -> None:
        """``capture`` sees every datagram forwarded, with its direction (``up``/``down``);
        ``socket_path`` forces how every socket of the proxy is driven (chosen at ``start``)."""
        self.listen_address = listen
        """The bound address once started (port 0 resolved)."""
        self.upstream_address = upstream
        self.counters = ProxyCounters()
        self._random = (random.Random(f"{seed}:up"), random.Random(f"{seed}:down"))
        self._up = Link(up, self._random[0])  # re-made at start, with the outage clock's origin
        self._down = Link(down, self._random[1])
        self._clients: dict[Address, _Client] = {}
        self._sock: socket.socket | None = None
        self._upstream_family: int = socket.AF_INET
        self._upstream_sockaddr: tuple[Any, ...] = upstream
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capture = capture
        self._requested_path = socket_path
        self.socket_path = SocketPath.AUTO
        """How the proxy's sockets are driven, once started."""
        self._channel: DatagramChannel | None = None  # the listening socket's, datagram path
        self._attaching: set[asyncio.Task[None]] = set()  # upstream channels being attached

    @property
    def stats(self) -> dict[str, LinkStats]:
        """The links' counters: ``"up"`` (client to server) and ``"down"``."""
        return {"up": self._up.stats, "down": self._down.stats}

    async def start(self) -> None:
        """Bind the listening socket and start forwarding. Raises ``OSError`` if it cannot."""
        loop = self._loop = asyncio.get_running_loop()
        self.socket_path = choose_socket_path(loop, self._requested_path)
        family, address = await resolve(*self.listen_address, passive=True)
        self._upstream_family, self._upstream_sockaddr = await resolve(
            *self.upstream_address, passive=False
        )
        self.upstream_address = (self._upstream_sockaddr[0], self._upstream_sockaddr[1])
        sock = open_udp_socket(family, bind=address)
        self._sock = sock
        name = sock.getsockname()
        self.listen_address = (name[0], name[1])
        now = loop.time()
        self._up = Link(self._up.profile, self._random[0], origin=now)
        self._down = Link(self._down.profile, self._random[1], origin=now)
        if self.socket_path is SocketPath.READER:
            loop.add_reader(sock.fileno(), self._on_client_readable)
        else:
            self._channel = self._make_channel(self._on_client_datagram)
            try:
                await self._channel.attach(sock)
            except BaseException:
                self._sock = self._channel = None
                sock.close()
                raise
        self._sweeper = loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    async def close(self) -> None:
        """Stop forwarding and close every socket; datagrams still in flight are dropped."""
        loop, sock = self._loop, self._sock
        if loop is None or sock is None:
            return
        self._sock = None
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._channel is not None:
            self._channel.close()  # the transport closes the socket
            self._channel = None
        else:
            loop.remove_reader(sock.fileno())
            sock.close()
        for client in list(self._clients.values()):
            self._drop_client(client)
        if self._attaching:  # each ends in an iteration; its channel, closed, drops the socket
            await asyncio.gather(*self._attaching)

    async def __aenter__(self) -> UdpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------- forwarding

    def _on_client_readable(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        now = loop.time()
        for _ in range(RECEIVE_BATCH):
            try:
                data, sender = sock.recvfrom(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # Windows: ConnectionResetError after an ICMP port unreachable
                self.counters.receive_errors += 1
                continue
            self._from_client(loop, data, sender[:2], now)

    def _on_client_datagram(self, data: bytes, sender: Address) -> None:
        if self._loop is not None and self._sock is not None:
            self._from_client(self._loop, data, sender, self._loop.time())

    def _from_client(
        self, loop: asyncio.AbstractEventLoop, data: bytes, address: Address, now: float
    ) -> None:
        client = self._clients.get(address) or self._add_client(address, now)
        if client is None:
            return
        client.last_active = now
        for arrival, payload in self._up.transmit(data, now):
            if arrival <= now:
                self._send_up(client, payload)
            else:
                loop.call_at(arrival, self._send_up, client, payload)

    def _on_upstream_readable(self, client: _Client) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        for _ in range(RECEIVE_BATCH):
            try:
                data = client.sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNREFUSED: nothing listens upstream (yet)
                self.counters.receive_errors += 1
                continue
            self._from_upstream(loop, client, data, now)

    def _from_upstream(
        self, loop: asyncio.AbstractEventLoop, client: _Client, data: bytes, now: float
    ) -> None:
        client.last_active = now
        for arrival, payload in self._down.transmit(data, now):
            if arrival <= now:
                self._send_down(client, payload)
            else:
                loop.call_at(arrival, self._send_down, client, payload)

    def _send_up(self, client: _Client, payload: bytes) -> None:
        if client.closed:
            return
        if client.channel is not None:
            if not client.channel.send(payload, self.upstream_address):
                return  # counted by the channel's callbacks
        else:
            try:
                client.sock.send(payload)
            except OSError:
                self.counters.send_errors += 1
                return
        if self._capture is not None:
            self._capture("up", payload)

    def _send_down(self, client: _Client, payload: bytes) -> None:
        sock = self._sock
        if sock is None or client.closed:
            return
        if self._channel is not None:
            if not self._channel.send(payload, client.address):
                return  # counted by the channel's callbacks
        else:
            try:
                sock.sendto(payload, client.address)
            except OSError:
                self.counters.send_errors += 1
                return
        if self._capture is not None:
            self._capture("down", payload)

    # ---------------------------------------------------------------- clients

    def _add_client(self, address: Address, now: float) -> _Client | None:
        if len(self._clients) >= MAX_CLIENTS:
            self._expire(now)
            if len(self._clients) >= MAX_CLIENTS:
                self.counters.clients_refused += 1
                return None
        try:  # an OSError (out of descriptors, say) drops this datagram; the next one retries
            sock = open_udp_socket(self._upstream_family, connect=self._upstream_sockaddr)
        except OSError:
            self.counters.send_errors += 1
            return None
        client = self._clients[address] = _Client(address, sock, now)
        self.counters.clients += 1
        if self.socket_path is SocketPath.READER:
            if self._loop is not None:
                self._loop.add_reader(sock.fileno(), self._on_upstream_readable, client)
        else:  # attached on the next iterations; what is sent before waits in its backlog
            client.channel = self._make_channel(
                functools.partial(self._on_upstream_datagram, client), peer=self.upstream_address
            )
            task = asyncio.get_running_loop().create_task(self._attach(client, client.channel))
            self._attaching.add(task)
            task.add_done_callback(self._attaching.discard)
        return client

    def _make_channel(
        self, receive: Callable[[bytes, Address], None], *, peer: Address | None = None
    ) -> DatagramChannel:
        return DatagramChannel(
            receive,
            self._on_channel_error,
            self._on_backlog_full,
            batch=RECEIVE_BATCH,
            backlog_max=SEND_BACKLOG_MAX,
            peer=peer,
        )

    def _on_channel_error(self, error: OSError, sending: bool) -> None:
        """An OS error on the datagram-endpoint path (ConnectionResetError included): counted."""
        if sending:
            self.counters.send_errors += 1
        else:
            self.counters.receive_errors += 1

    def _on_backlog_full(self) -> None:
        self.counters.send_errors += 1

    async def _attach(self, client: _Client, channel: DatagramChannel) -> None:
        """Attach a client's upstream channel; the socket is its transport's from then on, even
        if the client was dropped meanwhile (the channel, closed, aborts the transport)."""
        try:
            await channel.attach(client.sock)
        except OSError:
            self.counters.send_errors += 1
            client.sock.close()
            if not client.closed:
                self._drop_client(client)

    def _on_upstream_datagram(self, client: _Client, data: bytes, sender: Address) -> None:
        if self._loop is not None and not client.closed:
            self._from_upstream(self._loop, client, data, self._loop.time())

    def _drop_client(self, client: _Client) -> None:
        client.closed = True
        del self._clients[client.address]
        if client.channel is not None:
            client.channel.close()  # its transport closes the socket, see _attach
            return
        if self._loop is not None:
            self._loop.remove_reader(client.sock.fileno())
        client.sock.close()

    def _expire(self, now: float) -> None:
        for client in [c for c in self._clients.values() if now - c.last_active > CLIENT_IDLE_S]:
            self._drop_client(client)
            self.counters.clients_expired += 1

    def _sweep(self) -> None:
        if self._loop is not None and self._sock is not None:
            self._expire(self._loop.time())
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)


# ------------------------------------------------------------------ command line


def _format(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _probability(text: str) -> float:
    return number(text, 0.0, 1.0, "a probability within 0..1")


def _burst_length(text: str) -> float:
    length = number(text, 1.0, math.inf, "a mean burst length >= 1 datagram")
    if math.isinf(length):
        raise argparse.ArgumentTypeError(f"expected a finite mean burst length, got {text!r}")
    return length


def _seconds_from_ms(text: str) -> float:
    return number(text, 0.0, math.inf, "milliseconds >= 0") / MS_PER_S


def _bytes_per_s_from_kbit(text: str) -> float:
    kbit = number(text, 0.0, math.inf, "kbit/s > 0")
    if kbit == 0.0 or math.isinf(kbit):
        raise argparse.ArgumentTypeError(f"expected kbit/s > 0, got {text!r}")
    return kbit * MS_PER_S / BITS_PER_BYTE  # 1 kbit = 1000 bits


def _packets(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of packets >= 0, got {text!r}")
    return int(text)


def _datagram_bytes(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a datagram size in bytes >= 1, got {text!r}")
    return int(text)


def _pair(convert: Callable[[str], T]) -> Callable[[str], tuple[T, T]]:
    """``V`` for both directions, or ``UP:DOWN``."""

    def parse(text: str) -> tuple[T, T]:
        up, sep, down = text.partition(":")
        return (convert(up), convert(down if sep else up))

    return parse


def _outage(text: str) -> tuple[float, float]:
    up, sep, down = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected UP_S:DOWN_S, got {text!r}")
    what = "seconds > 0"
    periods = (number(up, 0.0, math.inf, what), number(down, 0.0, math.inf, what))
    if min(periods) <= 0.0 or math.isinf(max(periods)):
        raise argparse.ArgumentTypeError(f"expected finite UP_S:DOWN_S > 0, got {text!r}")
    return periods


# Per-direction flags: (LinkProfile field, parser of one value, default, metavar, help).
_DIRECTIONAL: tuple[tuple[str, Callable[[str], Any], Any, str, str], ...] = (
    ("loss", _probability, 0.0, "P", "drop probability, 0.2 = 20%%"),
    ("loss_burst", _burst_length, 1.0, "LEN", "mean run of drops (Gilbert-Elliott); 1 = independent"),
    ("duplicate", _probability, 0.0, "P", "duplication probability"),
    ("reorder", _probability, 0.0, "P", "probability a datagram is held back 10 ms"),
    ("delay", _seconds_from_ms, 0.0, "MS", "one-way delay"),
    ("jitter", _seconds_from_ms, 0.0, "MS", "delay varies by up to +-MS"),
    ("rate", _bytes_per_s_from_kbit, None, "KBIT", "bottleneck in kbit/s"),
    ("queue", _packets, None, "PACKETS", "drop-tail limit of the bottleneck (needs --rate)"),
    ("corrupt", _probability, 0.0, "P", "probability one byte is changed"),
    ("mtu", _datagram_bytes, None, "BYTES", "larger datagrams are dropped silently (a PMTU black hole)"),
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=host_port,
        required=True,
        metavar="HOST:PORT",
        help="where clients send to (port 0: any free port, printed at start)",
    )
    parser.add_argument(
        "--upstream",
        type=host_port,
        required=True,
        metavar="HOST:PORT",
        help="the server the datagrams are forwarded to",
    )
    for name, convert, default, metavar, description in _DIRECTIONAL:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=_pair(convert),
            default=(default, default),
            metavar=metavar,
            help=f"{description}; V or UP:DOWN (UP = client to server)",
        )
    parser.add_argument(
        "--outage",
        type=_outage,
        default=None,
        metavar="UP_S:DOWN_S",
        help="the link (both ways) is up UP_S seconds, then down DOWN_S, repeating",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the impairment draws")
    parser.add_argument(
        "--report",
        type=positive("seconds"),
        default=None,
        metavar="S",
        help="print a one-line summary every S seconds while running (default: only at exit)",
    )


def _profiles(args: argparse.Namespace) -> tuple[LinkProfile, LinkProfile]:
    """Raises ``ValueError`` for combinations the link model rejects (``--queue`` sans rate)."""
    up, down = (
        LinkProfile(
            outage=args.outage,
            **{name: getattr(args, name)[i] for name, *_ in _DIRECTIONAL},
        )
        for i in (0, 1)
    )
    return up, down


def _report(proxy: UdpProxy) -> str:
    lines = []
    for direction, stats in proxy.stats.items():
        lines.append(
            f"{direction:<4} forwarded {stats.delivered}, dropped {stats.lost}, "
            f"duplicated {stats.duplicated}, reordered {stats.reordered}, "
            f"corrupted {stats.corrupted}, queue drops {stats.queue_drops}, "
            f"outage drops {stats.outage_drops}, mtu drops {stats.mtu_drops} (of {stats.sent} offered)"
        )
    counters = proxy.counters
    lines.append(
        f"clients {counters.clients} (expired {counters.clients_expired}, refused "
        f"{counters.clients_refused}), send errors {counters.send_errors}"
    )
    return "\n".join(lines)


def _summary(proxy: UdpProxy) -> str:
    """One line of running totals, for ``--report``."""
    parts = [
        f"{direction} forwarded {stats.delivered} of {stats.sent}"
        for direction, stats in proxy.stats.items()
    ]
    counters = proxy.counters
    return (
        f"proxy: {', '.join(parts)}, {counters.clients} clients, {counters.send_errors} send errors"
    )


async def _print_summaries(proxy: UdpProxy, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        print(_summary(proxy), flush=True)


async def _serve(args: argparse.Namespace, up: LinkProfile, down: LinkProfile) -> int:
    proxy = UdpProxy(args.listen, args.upstream, up, down, seed=args.seed)
    try:
        await proxy.start()
    except OSError as error:
        print(f"proxy: cannot start: {error}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    try:
        with on_stop_signals(asyncio.get_running_loop(), stop.set):
            print(
                f"proxy listening on {_format(proxy.listen_address)} -> "
                f"{_format(proxy.upstream_address)} (UDP sockets via {proxy.socket_path})",
                flush=True,
            )
            if args.report is None:
                await stop.wait()
            else:
                reporting = asyncio.create_task(_print_summaries(proxy, args.report))
                await stop.wait()
                reporting.cancel()
    finally:
        await proxy.close()
    print(_report(proxy), flush=True)
    return 0


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        up, down = _profiles(args)
    except ValueError as error:
        parser.error(str(error))  # exits 2, like every other bad flag
    return asyncio.run(_serve(args, up, down))


_DESCRIPTION = "Forward UDP between clients and a server, with loss, delay and other impairments."


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``proxy`` subcommand; its ``run(args)`` default returns the exit code."""
    parser = subparsers.add_parser("proxy", help="lossy UDP proxy", description=_DESCRIPTION)
    _add_arguments(parser)
    parser.set_defaults(run=functools.partial(_run, parser))


def main(argv: list[str] | None = None) -> int:
    """The standalone entry: ``python -m rudp_chat.aio.proxy``. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m rudp_chat.aio.proxy", description=_DESCRIPTION)
    _add_arguments(parser)
    return _run(parser, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
