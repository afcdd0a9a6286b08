"""rudp: this project's protocol through its asyncio transport (``rudp_chat.aio``), defaults only.

Runs on the default event loop, or on uvloop when ``Job.loop`` says so (``rudp-uvloop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from rudp_chat.aio import ConnectionLostError, ReliableConnection, connect, serve

from .common import (
    WARMUP_PINGS,
    Address,
    Job,
    Meter,
    Ready,
    Result,
    StopFlag,
    guard,
    run_loop,
    stamped,
)

__all__ = ["client", "server"]

CLOSE_WAIT_S = 0.5  # how long the server waits for its socket to close gracefully


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """Accept one connection; receive (bulk, one-way) or echo (ping-pong) until done or ``stop``."""
    return run_loop(_serve(job, ready, stop), job.loop)


async def _serve(job: Job, ready: Ready, stop: StopFlag) -> Result:
    meter = Meter(job)
    listener = await serve(job.host, 0)
    try:
        ready(listener.address)
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

        try:
            await guard(echo() if job.mode == "pingpong" else receive(), stop, meter.expired)
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


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """Send (bulk: as fast as backpressure allows; one-way: every ``interval``) or ping."""
    return run_loop(_client(job, address, stop), job.loop)


async def _client(job: Job, address: Address, stop: StopFlag) -> Result:
    conn = await asyncio.wait_for(connect(address[0], address[1]), 15.0)
    result: Result = {"sent": 0}

    async def bulk() -> None:
        payload = bytes(job.size)
        while result["sent"] < job.count:
            await conn.send(payload)
            result["sent"] += 1
        await asyncio.Event().wait()  # keep retransmitting until stopped

    async def oneway() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(job.count):
            await asyncio.sleep(max(0.0, start + index * job.interval - loop.time()))
            await conn.send(stamped(job.size))
            result["sent"] += 1
        await asyncio.Event().wait()

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
            await guard({"bulk": bulk, "oneway": oneway, "pingpong": ping}[job.mode](), stop)
        except (ConnectionLostError, EOFError):
            if job.mode == "pingpong":
                raise
            # else the receiver closed its window and left: the expected end of a sender
        stats = conn.stats()
        result["retransmitted_bytes"] = stats.retransmitted_bytes
        result["datagrams_sent"] = stats.datagrams_sent
        result["smoothed_rtt"] = stats.smoothed_rtt
    finally:
        conn.abort()
    return result
