"""rudp: this project's protocol through its asyncio transport (``rudp_chat.aio``), defaults only.

Runs on the default event loop, or on uvloop when ``Job.loop`` says so (``rudp-uvloop``);
encrypted (the default), or in the clear on both peers when ``Job.insecure`` says so
(``rudp-insecure``); with batched socket I/O where the kernel has it, or, when
``Job.batched_io`` is False (``rudp-unbatched``), one datagram per system call. Handshake mode
times ``connect()`` alone: the client connects ``count`` times in a row (after
``WARMUP_PINGS // 4`` untimed ones) and aborts each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time

from rudp_chat.aio import ConnectionLostError, ReliableConnection, Server, connect, serve
from rudp_chat.aio.batching import BATCHED_IO_VARIABLE
from rudp_chat.core.config import ConnectionConfig, ListenerConfig

from .common import (
    WARMUP_PINGS,
    Address,
    Job,
    Meter,
    Ready,
    Result,
    StopFlag,
    converse,
    guard,
    paced,
    run_loop,
)

__all__ = ["client", "server"]

CLOSE_WAIT_S = 0.5  # how long the server waits for its socket to close gracefully
HANDSHAKE_WARMUP = WARMUP_PINGS // 4  # untimed connects first: lazy imports, first key use
PER_ADDRESS = 1024  # handshake mode: aborted connections may linger past the default 16


def _config(job: Job) -> ConnectionConfig:
    return ConnectionConfig(insecure=job.insecure)


def _socket_io(job: Job) -> None:
    """This peer process's sockets batch or not, as ``job`` says (before any is opened)."""
    os.environ[BATCHED_IO_VARIABLE] = "on" if job.batched_io else "off"


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """Accept one connection; receive (bulk, one-way), echo (ping-pong) or talk (duplex) until
    done or ``stop``.

    Handshake mode: accept every connection until ``stop``; report how many and the CPU time.
    """
    _socket_io(job)
    return run_loop(_serve(job, ready, stop), job.loop)


async def _serve(job: Job, ready: Ready, stop: StopFlag) -> Result:
    meter = Meter(job)
    config = ListenerConfig(connection=_config(job))
    if job.mode == "handshake":
        config = dataclasses.replace(config, max_connections_per_address=PER_ADDRESS)
    listener = await serve(job.host, 0, config=config)
    try:
        ready(listener.address)
        if job.mode == "handshake":
            return await _accept_all(listener, stop)
        accepted: list[ReliableConnection] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        await guard(accept(), stop)
        if not accepted:
            return {}
        conn = accepted[0]

        async def receive() -> None:
            while not meter.add(await conn.recv()):
                pass

        async def echo() -> None:
            while True:
                await conn.send(await conn.recv())

        async def talk() -> None:
            await converse(job, conn.send, meter, receive())

        body = {"pingpong": echo, "duplex": talk}.get(job.mode, receive)
        try:
            await guard(body(), stop, lambda: meter.expired() and not meter.full())
        except (ConnectionLostError, EOFError):
            pass  # the client left first: its result (or error) tells the parent
        finally:
            conn.abort()
    finally:
        # Server.close() lets the aborted connection drain for 3 RTOs first (3 s on a receiver
        # that never sampled an RTT): not part of any measurement, so do not wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.close(), CLOSE_WAIT_S)
    return meter.result() if job.mode != "pingpong" else {}


async def _accept_all(listener: Server, stop: StopFlag) -> Result:
    """Handshake mode: accept until stopped (each connection ends on the client's abort)."""
    accepted = 0
    started = time.process_time()

    async def accept() -> None:
        nonlocal accepted
        while True:
            await listener.accept()
            accepted += 1

    await guard(accept(), stop)
    return {"accepted": accepted, "cpu_s": time.process_time() - started}


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """Send (bulk: as fast as backpressure allows; one-way: every ``interval``), talk (duplex:
    send and meter), ping, or connect ``count`` times (handshake)."""
    _socket_io(job)
    return run_loop(_client(job, address, stop), job.loop)


async def _client(job: Job, address: Address, stop: StopFlag) -> Result:
    if job.mode == "handshake":
        return await _connect_many(job, address, stop)
    conn = await asyncio.wait_for(connect(address[0], address[1], config=_config(job)), 15.0)
    result: Result = {"sent": 0}
    meter = Meter(job)

    async def bulk() -> None:
        payload = bytes(job.size)
        while result["sent"] < job.count:
            await conn.send(payload)
            result["sent"] += 1
        await asyncio.Event().wait()  # keep retransmitting until stopped

    async def oneway() -> None:
        await paced(job, conn.send)
        await asyncio.Event().wait()

    async def receive() -> None:
        while not meter.add(await conn.recv()):
            pass

    async def talk() -> None:
        await converse(job, conn.send, meter, receive())

    async def ping() -> None:
        rtts: list[float] = result.setdefault("rtts_ms", [])
        payload = bytes(job.size)
        end = time.perf_counter() + job.duration
        for seq in range(job.count + WARMUP_PINGS):
            started = time.perf_counter()
            if started > end:
                break
            await conn.send(payload)
            await conn.recv()
            if seq >= WARMUP_PINGS:
                rtts.append(1000 * (time.perf_counter() - started))

    try:
        try:
            modes = {"bulk": bulk, "oneway": oneway, "duplex": talk, "pingpong": ping}
            await guard(modes[job.mode](), stop)
        except (ConnectionLostError, EOFError):
            if job.mode == "pingpong":
                raise
            # else the receiver closed its window and left: the expected end of a sender
        stats = conn.stats()
        result["retransmitted_bytes"] = stats.retransmitted_bytes
        result["datagrams_sent"] = stats.datagrams_sent
        result["smoothed_rtt"] = stats.smoothed_rtt
        if job.mode == "duplex":
            result.update(meter.result())
    finally:
        conn.abort()
    return result


async def _connect_many(job: Job, address: Address, stop: StopFlag) -> Result:
    """Handshake mode: time ``count`` sequential ``connect()`` calls, wall and CPU."""
    config = _config(job)
    result: Result = {"handshakes_ms": [], "cpu_s": 0.0}
    times: list[float] = result["handshakes_ms"]

    async def run() -> None:
        end = time.perf_counter() + job.duration
        for index in range(job.count + HANDSHAKE_WARMUP):
            cpu = time.process_time()
            started = time.perf_counter()
            if started > end:
                break
            conn = await connect(address[0], address[1], config=config)
            elapsed = time.perf_counter() - started
            if index >= HANDSHAKE_WARMUP:
                times.append(1000 * elapsed)
                result["cpu_s"] += time.process_time() - cpu
            conn.abort()

    await guard(run(), stop)
    return result
