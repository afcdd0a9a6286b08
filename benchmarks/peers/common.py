"""What the peers share: the job, the receiver's meter, framing, stamps and asyncio helpers."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

__all__ = [
    "IDLE_S",
    "LATE_S",
    "LENGTH",
    "LINGER_S",
    "POLL_S",
    "SEQ",
    "STAMP",
    "WARMUP_PINGS",
    "Address",
    "Job",
    "Meter",
    "Ready",
    "Result",
    "StopFlag",
    "converse",
    "guard",
    "paced",
    "run_loop",
    "split_frames",
    "stamped",
]

Address: TypeAlias = tuple[str, int]
Result: TypeAlias = dict[str, Any]
"""What a peer returns: plain numbers and lists, so it pickles across processes."""
Ready: TypeAlias = Callable[[Address], None]
T = TypeVar("T")

LENGTH = struct.Struct(">I")
"""Message length prefix on byte streams (tcp, aioquic)."""
STAMP = struct.Struct(">d")
"""``time.monotonic()`` at sending: CLOCK_MONOTONIC is system-wide on Linux, so one-way latency
across processes is a subtraction."""
SEQ = struct.Struct(">Q")
"""Datagram number (raw-udp), so the receiver can count what was lost inside its window."""

IDLE_S = 2.0  # a receiver that has heard nothing this long since the last message gives up
POLL_S = 0.05  # how often a blocked peer looks at the stop flag: short against any case's length
LATE_S = 12.0  # paced modes: how late a message may still count: RTO backoff to 4 s, twice, + delay
LINGER_S = 8.0  # duplex: a peer whose window closed keeps its connection up this long, so that
# its own last messages are still retransmitted to the other side (a 4 s RTO, and then some)
WARMUP_PINGS = 20  # round trips left out of ping-pong figures: caches, ARP-free but lazy imports


class StopFlag(Protocol):
    """The part of ``multiprocessing.Event`` a peer uses: set by the parent to end the peer."""

    def is_set(self) -> bool:
        """Whether the peer should wrap up and return."""
        ...


@dataclass(frozen=True, slots=True)
class Job:
    """What one case asks of a pair of peers. Sizes are bytes, times seconds."""

    mode: str
    """"bulk" (send as fast as the peer allows), "pingpong" (echo), "oneway" (paced stamps,
    client to server), "duplex" (paced stamps both ways: each peer sends ``count`` and meters the
    other's) or "handshake" (rudp only: ``count`` sequential connects, each aborted once
    established)."""
    size: int
    """Message size."""
    count: int
    """Most messages: the receiver closes its window after this many (bulk, oneway, duplex: each
    way); handshakes timed (handshake)."""
    duration: float
    """Bulk: the receiver's window from its first message; ping-pong, handshake: the client's
    run."""
    interval: float = 0.0
    """One-way, duplex: time between two messages."""
    loop: str = "asyncio"
    """Event loop of asyncio peers: "asyncio" or "uvloop"."""
    insecure: bool = False
    """rudp: ``ConnectionConfig(insecure=True)`` on both peers (plaintext, CRC-protected)."""
    batched_io: bool = True
    """rudp: GSO/GRO where the kernel has them; False sets ``RUDP_CHAT_BATCHED_IO=off``."""
    window: int = 1024
    """KCP send and receive windows, in segments."""
    host: str = "127.0.0.1"


class Meter:
    """The receiver's count: delivered messages and bytes from the first message on.

    The window closes after ``job.count`` messages or ``job.duration`` seconds, whichever comes
    first; in the paced modes (one-way, duplex) it closes ``LATE_S`` after the last message was
    due, and it records each message's latency from its stamp.
    """

    __slots__ = (
        "bytes", "count", "deadline", "first", "idle", "last", "latencies_ms", "limit", "paced",
    )  # fmt: skip

    def __init__(self, job: Job) -> None:
        self.limit = job.count
        self.paced = job.mode in ("oneway", "duplex")
        self.count = 0
        self.bytes = 0
        self.first = 0.0
        self.last = 0.0
        self.deadline = job.duration if not self.paced else job.count * job.interval + LATE_S
        self.idle = job.interval + LATE_S if self.paced else IDLE_S
        self.latencies_ms: list[float] = []

    def add(self, message: bytes | bytearray) -> bool:
        """Count one delivered message; True when the window has closed."""
        now = time.perf_counter()
        if not self.count:
            self.first = now
            self.deadline += now
        if self.paced:
            self.latencies_ms.append(1000 * (time.monotonic() - STAMP.unpack_from(message)[0]))
        self.count += 1
        self.bytes += len(message)
        self.last = now
        return self.count >= self.limit or now >= self.deadline

    def full(self) -> bool:
        """Whether all ``job.count`` messages arrived."""
        return self.count >= self.limit

    def expired(self) -> bool:
        """Whether the window has closed by time, or nothing arrived for the idle limit
        (``IDLE_S``; paced modes: ``LATE_S`` past the interval) after a start."""
        now = time.perf_counter()
        return self.count > 0 and (now >= self.deadline or now - self.last > self.idle)

    def result(self) -> Result:
        """The figures, for the parent."""
        result: Result = {
            "delivered": self.count,
            "bytes": self.bytes,
            "elapsed": self.last - self.first,
        }
        if self.paced:
            result["latencies_ms"] = self.latencies_ms
        return result


def split_frames(buffer: bytearray) -> tuple[list[bytearray], int]:
    """The complete length-prefixed messages at the start of ``buffer``, and the bytes they took."""
    messages: list[bytearray] = []
    pos = 0
    end = len(buffer)
    unpack = LENGTH.unpack_from
    while end - pos >= LENGTH.size:
        (size,) = unpack(buffer, pos)
        stop = pos + LENGTH.size + size
        if stop > end:
            break
        messages.append(buffer[pos + LENGTH.size : stop])
        pos = stop
    return messages, pos


def stamped(size: int) -> bytes:
    """A one-way message of ``size`` bytes stamped with the current ``time.monotonic()``."""
    return STAMP.pack(time.monotonic()) + bytes(max(0, size - STAMP.size))


async def paced(job: Job, send: Callable[[bytes], Awaitable[object]]) -> None:
    """Send ``job.count`` stamped messages of ``job.size`` bytes, one every ``job.interval``
    from now (on schedule: a late one does not push the next back)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(job.count):
        await asyncio.sleep(max(0.0, start + index * job.interval - loop.time()))
        await send(stamped(job.size))


async def converse(
    job: Job,
    send: Callable[[bytes], Awaitable[object]],
    meter: Meter,
    receive: Coroutine[Any, Any, object] | None = None,
) -> None:
    """Duplex mode, one side: send paced messages while ``receive`` (or a callback) feeds
    ``meter`` with the other side's; return ``LINGER_S`` after both are done (the meter full,
    or expired). Re-raises what ``receive`` raised; cancels it at the end."""
    receiving = asyncio.ensure_future(receive if receive is not None else asyncio.sleep(0))
    try:
        await paced(job, send)
        while not (meter.full() or meter.expired()):
            await asyncio.wait((receiving,), timeout=POLL_S)
            if receiving.done():
                receiving.result()
        await asyncio.sleep(LINGER_S)
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving


async def guard(
    body: Coroutine[Any, Any, object], stop: StopFlag, done: Callable[[], bool] = lambda: False
) -> None:
    """Run ``body`` until it returns, ``stop`` is set or ``done()`` is true, then cancel it.

    The hot loop in ``body`` stays free of timeouts: this watchdog polls every ``POLL_S``.
    Re-raises what ``body`` raised.
    """
    task = asyncio.ensure_future(body)
    try:
        while not task.done():
            await asyncio.wait((task,), timeout=POLL_S)
            if stop.is_set() or done():
                break
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()


def run_loop(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` on a fresh event loop: the default one, or uvloop's."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
