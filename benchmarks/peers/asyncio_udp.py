"""asyncio-udp: plain datagrams through asyncio, no protocol: the floor of any asyncio transport.

Ping-pong only. Both peers use ``loop.create_datagram_endpoint`` and, like an application on
rudp, a task that awaits each datagram and answers it: the server's task echoes, the client's
task sends the next ping. So a round trip costs what asyncio itself costs (a readiness callback
per datagram, a future resolved, the awaiting task resumed, a ``sendto``), beside raw-udp's
blocking loop and rudp's full protocol in the same run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .common import SEQ, WARMUP_PINGS, Address, Job, Ready, Result, StopFlag, guard, run_loop

__all__ = ["Inbox", "client", "server"]


class Inbox(asyncio.DatagramProtocol):
    """Datagrams as they arrive, handed to one awaiting task (the minimum an application has)."""

    def __init__(self) -> None:
        self.queue: deque[tuple[bytes, Address]] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.queue.append((data, addr))
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> tuple[bytes, Address]:
        """The next datagram, waiting for it if none is queued."""
        while not self.queue:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.queue.popleft()


def _check(job: Job) -> None:
    if job.mode != "pingpong":
        raise ValueError(f"asyncio-udp runs ping-pong only, not {job.mode}")


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """Echo every datagram from a task until ``stop``."""
    _check(job)
    return run_loop(_serve(job, ready, stop), job.loop)


async def _serve(job: Job, ready: Ready, stop: StopFlag) -> Result:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, local_addr=(job.host, 0))
    try:
        ready(transport.get_extra_info("sockname")[:2])

        async def echo() -> None:
            while True:
                data, peer = await inbox.get()
                transport.sendto(data, peer)

        await guard(echo(), stop)
    finally:
        transport.close()
    return {}


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """Ping: send a numbered datagram, await its echo, ``job.count`` times or ``job.duration``."""
    _check(job)
    return run_loop(_ping(job, address, stop), job.loop)


async def _ping(job: Job, address: Address, stop: StopFlag) -> Result:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, remote_addr=address)
    rtts: list[float] = []
    tail = bytes(max(0, job.size - SEQ.size))

    async def ping() -> None:
        end = time.perf_counter() + job.duration
        for seq in range(job.count + WARMUP_PINGS):
            started = time.perf_counter()
            if started > end:
                break
            transport.sendto(SEQ.pack(seq) + tail)
            while SEQ.unpack_from((await inbox.get())[0])[0] != seq:
                pass  # never on loopback; a stale echo would not end this ping
            if seq >= WARMUP_PINGS:
                rtts.append(1000 * (time.perf_counter() - started))

    try:
        await guard(ping(), stop)
    finally:
        transport.close()
    return {"rtts_ms": rtts}
