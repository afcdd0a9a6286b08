"""kcp: the C KCP through PyPI ``kcp`` (sans-IO), in fast mode, driven by a plain select loop.

Fast mode as KCP's README gives it: nodelay=1, a 10 ms update interval, fast resend after 2
duplicate ACKs, no congestion control (nc=1); windows from ``Job.window``. Enqueued messages and
queued ACKs are flushed right away rather than at the next 10 ms tick, as KCP's own "ikcp_update
after send" advice does. KCP has no handshake: the server learns its peer from the first datagram. Socket buffers are
4 MiB each way, kcptun's default.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import time

from kcp.extension import KCP

from .common import (
    LINGER_S,
    POLL_S,
    WARMUP_PINGS,
    Address,
    Job,
    Meter,
    Ready,
    Result,
    StopFlag,
    stamped,
)

__all__ = ["client", "server"]

CONVERSATION = 0x52554450  # both ends must agree; any constant does
MTU = 1400  # KCP's default
UPDATE_MS = 10  # fast mode's interval
RESEND = 2  # fast resend after this many duplicate ACKs
BATCH = 256  # datagrams read before KCP gets to flush its ACKs
SOCKET_BUFFER = 4 * 1024 * 1024  # kcptun's default sockbuf: a 1024-segment window fits
BACKLOG_WINDOWS = 2  # the sender keeps at most this many windows of segments queued in KCP


class _Pump:
    """One KCP endpoint on a non-blocking UDP socket."""

    def __init__(self, sock: socket.socket, window: int, peer: Address | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.kcp = KCP(
            CONVERSATION,
            max_transmission=MTU,
            no_delay=True,
            update_interval=UPDATE_MS,
            resend_count=RESEND,
            no_congestion_control=True,
            send_window_size=window,
            receive_window_size=window,
        )
        self.kcp.include_outbound_handler(self._output)
        self.kcp.update()

    def _output(self, _kcp: KCP, data: bytes) -> None:
        if self.peer is not None:
            # a full socket buffer or a vanished peer: KCP retransmits, or the case is ending
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                self.sock.sendto(data, self.peer)

    def send(self, data: bytes) -> None:
        """Queue one message; it goes out at the next ``poll`` or ``flush``."""
        self.kcp.enqueue(data)

    def flush(self) -> None:
        """Send what KCP's windows allow now, and the ACKs it owes."""
        self.kcp.flush()

    def backlog(self) -> int:
        """Segments queued or in flight."""
        return self.kcp.get_outbound_packets()

    def poll(self, wait: float) -> list[bytearray]:
        """Feed arrived datagrams to KCP, flush, run its clock; the messages delivered.

        When nothing has arrived, first waits up to ``wait`` seconds (bounded by KCP's timer).
        """
        fed = self._drain()
        if not fed and wait > 0:
            due = max(0, self.kcp.update_check()) / 1000
            select.select([self.sock], [], [], min(wait, due))
            fed = self._drain()
        self.kcp.flush()
        self.kcp.update()
        return list(self.kcp.get_all_received()) if fed else []

    def _drain(self) -> int:
        fed = 0
        while fed < BATCH:
            try:
                data, self.peer = self.sock.recvfrom(65_536)
            except BlockingIOError:
                break
            try:
                self.kcp.receive(data)
            except Exception:  # KCPException: not KCP's or garbled, and KCP took none of it
                continue
            fed += 1
        return fed


def _socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """Receive (bulk, one-way), echo (ping-pong) or talk (duplex, from the client's first
    message on) until the window closes or ``stop``."""
    with _socket(job.host) as sock:
        ready(sock.getsockname())
        pump = _Pump(sock, job.window)
        meter = Meter(job)
        while not stop.is_set():
            messages = pump.poll(POLL_S)
            if job.mode == "duplex" and messages:  # the client's address is known now
                for message in messages:
                    meter.add(message)
                return _talk(pump, job, stop, meter)
            if job.mode == "pingpong":
                for message in messages:
                    pump.send(bytes(message))
                if messages:
                    pump.flush()
                continue
            if any(meter.add(message) for message in messages) or meter.expired():
                break
        return meter.result() if job.mode != "pingpong" else {}


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """Send (bulk: keeping KCP's queue full; one-way: every ``interval``), talk (duplex) or
    ping."""
    with _socket(job.host) as sock:
        pump = _Pump(sock, job.window, address)
        if job.mode == "pingpong":
            return _ping(pump, job, stop)
        if job.mode == "duplex":
            return _talk(pump, job, stop, Meter(job))
        payload = bytes(job.size)
        limit = BACKLOG_WINDOWS * job.window
        sent = 0
        next_check = next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_check:
                if stop.is_set():
                    break
                next_check = now + POLL_S
            if job.mode == "oneway":
                if sent < job.count and now >= next_send:
                    pump.send(stamped(job.size))
                    pump.flush()
                    sent += 1
                    next_send += job.interval
                wait = max(0.0, min(next_send - now, POLL_S))
            else:
                while sent < job.count and pump.backlog() < limit:
                    pump.send(payload)
                    sent += 1
                wait = POLL_S
            pump.poll(wait)
        return {"sent": sent}


def _talk(pump: _Pump, job: Job, stop: StopFlag, meter: Meter) -> Result:
    """Duplex: send ``count`` stamped messages every ``interval`` from now while ``meter``
    counts the other side's; return ``LINGER_S`` after both are done (KCP keeps retransmitting
    ours meanwhile), or on ``stop``."""
    sent = 0
    start = time.monotonic()
    linger_until = math.inf
    while not stop.is_set():
        now = time.monotonic()
        if now >= linger_until:
            break
        if sent < job.count and now >= start + sent * job.interval:
            pump.send(stamped(job.size))
            pump.flush()
            sent += 1
        due = start + sent * job.interval if sent < job.count else now + POLL_S
        for message in pump.poll(min(POLL_S, max(0.0, due - now))):
            meter.add(message)
        if linger_until == math.inf and sent >= job.count and (meter.full() or meter.expired()):
            linger_until = now + LINGER_S
    return meter.result()


def _ping(pump: _Pump, job: Job, stop: StopFlag) -> Result:
    payload = bytes(job.size)
    rtts: list[float] = []
    end = time.perf_counter() + job.duration
    for seq in range(job.count + WARMUP_PINGS):
        started = time.perf_counter()
        if started > end or stop.is_set():
            break
        pump.send(payload)
        pump.flush()
        while not pump.poll(POLL_S):
            if stop.is_set() or time.perf_counter() > end + 1.0:
                return {"rtts_ms": rtts}
        if seq >= WARMUP_PINGS:
            rtts.append(1000 * (time.perf_counter() - started))
    return {"rtts_ms": rtts}
