"""Throughput and latency of rudp beside raw UDP, TCP, KCP and aioquic, on real loopback sockets.

Usage: python benchmarks/throughput.py [--quick] [--json PATH] [--plot DIR] [--only TOKENS]
                                       [--profile DIR] [--compiled DIR]

Every case runs its two peers in two spawned processes (one core each on a 2-core box) and
counts at the receiver, from its first message on (connection setup excluded), until N messages
or T seconds, whichever comes first. MB is 10^6 bytes.

Cases:
- cpu:      no proxy, 64 B / 1 KiB / 16 KiB messages sent as fast as each peer allows:
            raw-udp (blocking sendto/recvfrom, 4 MiB receive buffer, no reliability: the
            ceiling, with the loss it suffers), tcp (length-prefixed, Nagle on), kcp (fast
            mode: nodelay, 10 ms interval, resend 2, nc=1, 1024-segment windows, 4 MiB socket
            buffers), aioquic (one stream, length-prefixed), rudp (defaults: encrypted, batched
            socket I/O where the kernel has it: UDP GSO/GRO) on the asyncio loop and, as
            rudp-uvloop, on uvloop, rudp-unbatched (``RUDP_CHAT_BATCHED_IO=off``: one datagram
            per system call), rudp-insecure (both peers with
            ``ConnectionConfig(insecure=True)``: CRC-protected plaintext) and rudp-compiled
            (rudp's defaults on the mypyc-compiled core, from ``--compiled DIR``; see
            ``peers/rudp_compiled.py``) on the asyncio loop.
- lossy:    1 KiB messages through ``python -m rudp_chat.aio.proxy``: 20 Mbit/s, 20 ms each way,
            a drop-tail queue of 1.5 x BDP (125 datagrams of 1200 B), 0/1/5/10 % loss each way.
            goodput = payload delivered / time / (2.5e6 B/s x (1 - loss)); retx = retransmitted
            payload / payload delivered, where the peer reports it (rudp). KCP has no congestion
            control (nc=1), so its window is its rate: 128 segments here, above the BDP (95
            segments of 1048 B) and below BDP + queue. (Measured at 0 % loss: 0.90 of capacity
            with 128, 0.60 with 256 and 0.33 with 1024, which flood the proxy's queue.)
- pingpong: round-trip time of 64 B messages on loopback, echoed by the server; beside the
            others, asyncio-udp (plain datagrams through ``create_datagram_endpoint``, a task
            awaiting each one on both peers, no protocol: what asyncio alone costs) and
            asyncio-udp-uvloop (the same on uvloop).
- handshake: rudp and rudp-insecure only: the time of ``connect()`` on loopback (HELLO, RETRY,
            HELLO with the token, WELCOME: the Noise NK handshake unless insecure), 200 in a
            row, each aborted once established; the note gives the mean and the CPU time per
            connection of each peer.
- chat:     one-way latency of 200 B messages at 10 per second through the proxy at 5 % loss
            (the lossy link otherwise), from ``time.monotonic()`` stamps in the messages.
- chat-10, chat-30, chat-burst: the load of ``chat-30`` in ``simulated.py`` (issue 10): a
            200 B message every 2 s each way, ``thin_messages`` of them each way (60: two
            minutes a case), through the proxy with one-way 100 ms +- 50 ms and 10 % or 30 %
            random loss each way, or 10 % in bursts of mean 3 (``--loss-burst 3``); rudp, kcp
            (fast mode) and aioquic. p50/p99/max of the one-way latency, both directions
            pooled. Each peer keeps its connection up ``LINGER_S`` after its own window closed
            so that its last messages are still retransmitted to the other.
- crypto:   in this process, no peers: CPU time per 1200 B datagram (best of 5 rounds, loop
            overhead subtracted) to build and parse one: rudp, sealed_header + Sealer.seal and
            decode_datagram + Opener.open (the AEAD's share apart); rudp-insecure,
            encode_datagram and decode_datagram of a SESSION packet (msgpack + CRC-32). The
            frames inside cost the same either way and are left out. Printed after the table.

``--plot DIR`` writes, for the cases run: ``goodput_vs_loss.png`` (lossy) and
``chat_latency_peers.png`` (the latency CDFs of chat-10, chat-30 and chat-burst). Needs
matplotlib.

``--only`` takes comma-separated tokens: case names, implementation names (exact: ``rudp`` is
not ``rudp-insecure``), sizes (64, 1024, 16384, or 1KiB) and losses (5%); a case runs when it
matches a token of every kind given (sizes only filter the cases with messages, losses only
those through the proxy): ``--only cpu,lossy,rudp,1024,0%``.
The exit status is 1 when a case failed (a peer raised, died or timed out), else 0.
``--profile DIR`` runs each peer under cProfile (wall clock: idle time shows as the event loop's
epoll) into DIR/CASE/{server,client}.prof; read them with ``python -m pstats``.
The rudp_chat measured is the one Python imports (``PYTHONPATH`` or the installed package),
in the peers and the proxy alike; rudp-compiled's alone comes from ``--compiled DIR`` (a
``RUDP_CHAT_COMPILE=1 pip install --no-deps --target DIR .``, or a compiled venv's
site-packages), or from ``RUDP_CHAT_COMPILED_PATH``; without either its rows are skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from peers import IMPLS, missing
from peers.common import LATE_S, LINGER_S, Job
from peers.harness import Link, Outcome, PeerError, run_pair
from peers.rudp_compiled import COMPILED_PATH_VARIABLE

CASES = (
    "cpu",
    "lossy",
    "pingpong",
    "handshake",
    "chat",
    "chat-10",
    "chat-30",
    "chat-burst",
    "crypto",
)
SIZES = (64, 1024, 16 * 1024)
LOSSES = (0.0, 0.01, 0.05, 0.10)
RUDP_IMPLS = ("rudp", "rudp-compiled", "rudp-unbatched", "rudp-insecure", "rudp-uvloop")
CPU_IMPLS = ("raw-udp", "tcp", "kcp", "aioquic", *RUDP_IMPLS)
LOSSY_IMPLS = ("rudp", "kcp", "aioquic")
PING_IMPLS = ("raw-udp", "asyncio-udp", "asyncio-udp-uvloop", "tcp", "kcp", "aioquic", *RUDP_IMPLS)
HANDSHAKE_IMPLS = ("rudp", "rudp-insecure")
CHAT_IMPLS = ("rudp", "kcp", "aioquic")
CRYPTO_IMPLS = ("rudp", "rudp-insecure")
MESSAGE_MODES = ("bulk", "pingpong", "oneway", "duplex")  # the jobs a size token filters

RATE_KBIT = 20_000  # the lossy link's bottleneck
CAPACITY = RATE_KBIT * 1000 / 8  # bytes per second: 2.5e6
DELAY_MS = 20.0  # one way: a 40 ms round trip
DATAGRAM = 1200  # bytes per datagram when sizing the queue (rudp's and aioquic's maximum)
BDP_DATAGRAMS = CAPACITY * 2 * DELAY_MS / 1000 / DATAGRAM  # 83.3
QUEUE = math.ceil(1.5 * BDP_DATAGRAMS)  # 125 datagrams, 60 ms of queueing at most
KCP_LOSSY_WINDOW = 128  # segments: over the BDP (95), under BDP + queue; see the docstring
CHAT_SIZE = 200  # bytes: a chat line
CHAT_INTERVAL = 0.1  # 10 messages per second
CHAT_LOSS = 0.05
THIN_LINKS = (("chat-10", 0.10, 1.0), ("chat-30", 0.30, 1.0), ("chat-burst", 0.10, 3.0))
"""The thin-stream chat cases: name, loss each way, mean loss burst (1: independent)."""
CASES_THIN = tuple(name for name, _, _ in THIN_LINKS)
THIN_INTERVAL = 2.0  # chat-30's load: a 200 B message every 2 s each way
THIN_DELAY_MS = 100.0  # chat-30's link: one way, +- THIN_JITTER_MS
THIN_JITTER_MS = 50.0
TARGET_THIN_VS_PEERS = 0.5  # chat-30: rudp p99 <= half the better peer's p99 (issue 10)
CRYPTO_ROUNDS = 5  # the crypto case keeps the fastest round: the least disturbed by other jobs

CPU_TARGETS = {
    ("rudp", 1024, "raw-udp"): 0.6,
    ("rudp-compiled", 1024, "raw-udp"): 1.0,
    ("rudp-compiled", 1024, "kcp"): 1.0,
    ("rudp", 64, "aioquic"): 2.0,
    ("rudp", 16 * 1024, "raw-udp"): 0.5,  # the same size, so bytes/s too
}
"""Issue 14's targets: (implementation, message size, peer) -> least messages/s ratio."""
TARGET_PING_VS_RAW = 2.0  # pingpong p50: rudp / raw-udp at most (issue 14)
TARGET_GOODPUT = 0.90  # lossy: rudp goodput ratio at every loss
TARGET_VS_INSECURE = 0.70  # cpu 1 KiB: rudp (encrypted) / rudp-insecure messages per second


@dataclass(frozen=True, slots=True)
class Scale:
    """How long each kind of case runs: full, or ``--quick``."""

    cpu_s: float
    cpu_count: int
    lossy_s: float
    losses: tuple[float, ...]
    pings: int
    ping_s: float
    handshakes: int
    handshake_s: float
    chat_messages: int
    thin_messages: int
    """Messages each way in the chat-10/30/burst cases, one every ``THIN_INTERVAL``."""
    crypto_iterations: int
    """Datagrams per round of the crypto case, for each operation."""


FULL = Scale(cpu_s=3.0, cpu_count=2_000_000, lossy_s=15.0, losses=LOSSES, pings=5000,
             ping_s=5.0, handshakes=200, handshake_s=20.0, chat_messages=300,
             thin_messages=60, crypto_iterations=20_000)  # fmt: skip
QUICK = Scale(cpu_s=0.4, cpu_count=200_000, lossy_s=2.0, losses=(0.0, 0.05), pings=300,
              ping_s=0.5, handshakes=20, handshake_s=3.0, chat_messages=20,
              thin_messages=3, crypto_iterations=2000)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Case:
    """One measurement: an implementation, a job for its peers, and maybe a lossy link."""

    case: str
    impl: str
    job: Job
    loss: float | None = None
    link: Link | None = None

    @property
    def label(self) -> str:
        """A short name for the progress line and the profile directory."""
        loss = "" if self.loss is None else f"-{round(self.loss * 100)}pct"
        return f"{self.case}-{self.impl}-{self.job.size}{loss}"

    @property
    def timeout(self) -> float:
        """Seconds the case may take after setup before its peers count as hung."""
        job = self.job
        if job.mode == "duplex":
            return job.count * job.interval + LATE_S + LINGER_S + 20.0
        length = job.count * job.interval if job.mode == "oneway" else job.duration
        return length + 20.0


@dataclass(slots=True)
class Row:
    """One line of the table and of the JSON; None where a figure does not apply."""

    case: str
    impl: str
    size: int
    loss: float | None
    status: str = "ok"
    """"ok", "failed" (see ``note``) or "skipped" (an optional package is missing)."""
    msgs_per_s: float | None = None
    mb_per_s: float | None = None
    goodput_ratio: float | None = None
    retransmit_ratio: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    """chat-10/30/burst: the slowest message."""
    samples_ms: list[float] | None = None
    """chat-10/30/burst: every message's one-way latency (both directions), for the CDFs."""
    delivered: int | None = None
    """Messages counted: delivered (bulk, chat) or round trips (pingpong)."""
    seconds: float | None = None
    """Length of the receiver's window."""
    udp_loss: float | None = None
    """raw-udp: datagrams lost inside the receiver's window."""
    queue_drops: int | None = None
    """Proxy, client to server: datagrams dropped by the full bottleneck queue."""
    send_us: float | None = None
    """crypto: CPU microseconds to build one datagram (rudp: header and seal; else encode)."""
    receive_us: float | None = None
    """crypto: CPU microseconds to parse one datagram (rudp: decode and open; else decode)."""
    seal_us: float | None = None
    """crypto, rudp: the share of ``send_us`` in ``Sealer.seal``."""
    open_us: float | None = None
    """crypto, rudp: the share of ``receive_us`` in ``Opener.open``."""
    note: str = ""


def plan(scale: Scale) -> list[Case]:
    """Every case of a run, in order."""
    cases: list[Case] = []
    for size in SIZES:
        for impl in CPU_IMPLS:
            job = _job(impl, "bulk", size, scale.cpu_count, scale.cpu_s)
            cases.append(Case("cpu", impl, job))
    for loss in scale.losses:
        link = Link(loss, DELAY_MS, RATE_KBIT, QUEUE)
        for impl in LOSSY_IMPLS:
            job = Job("bulk", 1024, 10**9, scale.lossy_s, window=KCP_LOSSY_WINDOW)
            cases.append(Case("lossy", impl, job, loss, link))
    for impl in PING_IMPLS:
        job = _job(impl, "pingpong", 64, scale.pings, scale.ping_s)
        cases.append(Case("pingpong", impl, job))
    for impl in HANDSHAKE_IMPLS:
        job = _job(impl, "handshake", 0, scale.handshakes, scale.handshake_s)
        cases.append(Case("handshake", impl, job))
    chat_link = Link(CHAT_LOSS, DELAY_MS, RATE_KBIT, QUEUE)
    for impl in CHAT_IMPLS:
        job = Job("oneway", CHAT_SIZE, scale.chat_messages, 0.0, interval=CHAT_INTERVAL)
        cases.append(Case("chat", impl, job, CHAT_LOSS, chat_link))
    for name, loss, burst in THIN_LINKS:
        link = Link(loss, THIN_DELAY_MS, RATE_KBIT, QUEUE, jitter_ms=THIN_JITTER_MS,
                    loss_burst=burst)  # fmt: skip
        for impl in CHAT_IMPLS:
            job = Job("duplex", CHAT_SIZE, scale.thin_messages, 0.0, interval=THIN_INTERVAL)
            cases.append(Case(name, impl, job, loss, link))
    for impl in CRYPTO_IMPLS:
        job = _job(impl, "crypto", DATAGRAM, scale.crypto_iterations, 0.0)
        cases.append(Case("crypto", impl, job))
    return cases


def _job(impl: str, mode: str, size: int, count: int, duration: float) -> Job:
    """A job on ``impl``'s event loop and, for rudp, in its mode (encrypted or insecure)."""
    flavour = IMPLS[impl]
    return Job(
        mode,
        size,
        count,
        duration,
        loop=flavour.loop,
        insecure=flavour.insecure,
        batched_io=flavour.batched_io,
    )


def parse_only(text: str) -> dict[str, set[str]]:
    """``--only`` tokens grouped by kind; raises ``ValueError`` for a token of no kind."""
    kinds: dict[str, set[str]] = {}
    for token in filter(None, (part.strip() for part in text.split(","))):
        if token in CASES:
            kind, value = "case", token
        elif token in IMPLS:
            kind, value = "impl", token
        elif token.endswith("%"):
            kind, value = "loss", str(round(float(token[:-1]), 3))
        else:
            kind, value = "size", str(_size(token))
        kinds.setdefault(kind, set()).add(value)
    return kinds


def _size(token: str) -> int:
    lowered = token.lower()
    for suffix, factor in (("kib", 1024), ("k", 1024), ("b", 1)):
        if lowered.endswith(suffix) and lowered[: -len(suffix)].isdigit():
            return int(lowered[: -len(suffix)]) * factor
    if token.isdigit():
        return int(token)
    raise ValueError(f"--only: {token!r} is no case, implementation, size or loss")


def selected(case: Case, only: dict[str, set[str]]) -> bool:
    """Whether ``case`` matches a token of every kind in ``only`` (sizes: if it has messages;
    losses: if it has a loss)."""
    values = {"case": case.case, "impl": case.impl}
    if case.job.mode in MESSAGE_MODES:
        values["size"] = str(case.job.size)
    if case.loss is not None:
        values["loss"] = str(round(100 * case.loss, 3))
    return all(kind not in values or values[kind] in tokens for kind, tokens in only.items())


class Progress:
    """One line on stderr: the case running, its number, and the time spent so far."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.index = 0
        self.label = ""
        self.started = self.case_started = time.monotonic()
        self.live = sys.stderr.isatty()
        self.last = 0.0

    def start(self, label: str) -> None:
        """A new case begins."""
        self.index += 1
        self.label = label
        self.case_started = time.monotonic()
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        """Refresh the line (on a terminal: in place, at most 5 times a second)."""
        now = time.monotonic()
        if not force and (not self.live or now - self.last < 0.2):
            return
        self.last = now
        done = "#" * (20 * (self.index - 1) // max(self.total, 1))
        timing = f"{now - self.case_started:4.1f} s, " if self.live else ""
        line = (
            f"[{done:<20}] {self.index}/{self.total} {self.label} "
            f"({timing}total {now - self.started:5.1f} s)"
        )
        if self.live:
            sys.stderr.write("\r\x1b[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        """Clear the line."""
        if self.live:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def measure(case: Case, outcome: Outcome) -> Row:
    """The row for a case from its peers' reports."""
    row = Row(case.case, case.impl, case.job.size, case.loss)
    server, client = outcome.server, outcome.client
    if case.job.mode == "pingpong":
        rtts = client.get("rtts_ms", [])
        if not rtts:
            raise PeerError("no round trip completed")
        row.delivered = len(rtts)
        row.p50_ms = _round(_percentile(rtts, 0.50))
        row.p99_ms = _round(_percentile(rtts, 0.99))
        if client.get("lost"):
            row.note = f"{client['lost']} pings lost"
        return row
    if case.job.mode == "handshake":
        return _handshakes(row, outcome)
    if case.job.mode == "duplex":
        return _conversation(row, case, outcome)
    delivered, elapsed = server["delivered"], server["elapsed"]
    if delivered < 2 or elapsed <= 0:
        raise PeerError(f"only {delivered} messages arrived")
    row.delivered = delivered
    row.seconds = _round(elapsed)
    row.msgs_per_s = round(delivered / elapsed, 1)
    row.mb_per_s = round(server["bytes"] / elapsed / 1e6, 3)
    if "offered" in server:
        lost = 1 - delivered / max(server["offered"], 1)
        row.udp_loss = round(lost, 4)
        row.note = f"lost {100 * lost:.1f}% of datagrams"
    if "retransmitted_bytes" in client:
        row.retransmit_ratio = _round(client["retransmitted_bytes"] / server["bytes"], 4)
    if "up_queue_drops" in outcome.proxy:
        row.queue_drops = outcome.proxy["up_queue_drops"]
    if case.case == "lossy" and case.loss is not None:
        row.goodput_ratio = _round(server["bytes"] / elapsed / (CAPACITY * (1 - case.loss)), 4)
    if case.job.mode == "oneway":
        latencies = server["latencies_ms"]
        row.p50_ms = _round(_percentile(latencies, 0.50))
        row.p99_ms = _round(_percentile(latencies, 0.99))
        row.msgs_per_s = row.mb_per_s = None
        if delivered < case.job.count:
            row.note = f"only {delivered} of {case.job.count} messages arrived"
    return row


def _conversation(row: Row, case: Case, outcome: Outcome) -> Row:
    """Duplex (chat-10/30/burst): both directions' one-way latencies, pooled."""
    server, client = outcome.server, outcome.client
    latencies = [*server.get("latencies_ms", []), *client.get("latencies_ms", [])]
    if len(latencies) < 2:
        raise PeerError(f"only {len(latencies)} messages arrived")
    row.delivered = len(latencies)
    row.p50_ms = _round(_percentile(latencies, 0.50), 1)
    row.p99_ms = _round(_percentile(latencies, 0.99), 1)
    row.max_ms = _round(max(latencies), 1)
    row.samples_ms = [round(value, 1) for value in latencies]
    if client.get("retransmitted_bytes") is not None and server.get("bytes"):
        row.retransmit_ratio = _round(client["retransmitted_bytes"] / server["bytes"], 4)
    notes = [f"max {row.max_ms:,.0f} ms"]
    if case.link is not None and case.link.loss_burst > 1:
        notes.append(f"loss in bursts of mean {case.link.loss_burst:g}")
    if row.delivered < 2 * case.job.count:
        notes.append(f"only {row.delivered} of {2 * case.job.count} messages arrived")
    row.note = ", ".join(notes)
    return row


def _handshakes(row: Row, outcome: Outcome) -> Row:
    """Handshake: ``connect()`` times, and each peer's CPU time per connection."""
    server, client = outcome.server, outcome.client
    times = client.get("handshakes_ms", [])
    if not times:
        raise PeerError("no handshake completed")
    row.delivered = len(times)
    row.p50_ms = _round(_percentile(times, 0.50))
    row.p99_ms = _round(_percentile(times, 0.99))
    notes = [
        f"mean {sum(times) / len(times):.3f} ms",
        f"CPU/connect client {1000 * client['cpu_s'] / len(times):.3f} ms",
    ]
    if server.get("accepted"):
        notes.append(f"server {1000 * server['cpu_s'] / server['accepted']:.3f} ms")
    row.note = ", ".join(notes)
    return row


def crypto_costs(case: Case) -> Row:
    """The crypto case: CPU microseconds per datagram built and parsed, in this process.

    rudp: ``sealed_header`` + ``Sealer.seal`` and ``decode_datagram`` + ``Opener.open`` on
    a ``DATAGRAM``-byte datagram; rudp-insecure: ``encode_datagram`` and ``decode_datagram``
    of a SESSION packet of the same size. Raises ``ImportError`` without rudp_chat's crypto.
    """
    from rudp_chat.core.codec import decode_datagram, encode_datagram, sealed_header
    from rudp_chat.core.frames import (
        AEAD_TAG_SIZE,
        CONNECTION_ID_SIZE,
        SealedPacket,
        SessionPacket,
    )
    from rudp_chat.core.records import Opener, Sealer

    iterations = case.job.count
    row = Row(case.case, case.impl, case.job.size, None)
    connection_id = os.urandom(CONNECTION_ID_SIZE)
    first = 1 << 20  # packet numbers past 65535, as in any long transfer: uint32 in msgpack
    numbers = itertools.count(first)
    if case.job.insecure:
        empty = len(encode_datagram(SessionPacket(connection_id, first, bytes(1000))))
        payload = bytes(case.job.size - (empty - 1000))
        datagram = encode_datagram(SessionPacket(connection_id, first, payload))
        row.send_us = _cpu_us(
            lambda: encode_datagram(SessionPacket(connection_id, next(numbers), payload)),
            iterations,
        )
        row.receive_us = _cpu_us(lambda: decode_datagram(datagram), iterations)
        row.note = f"payload {len(payload)} B, {len(datagram) - len(payload)} B header and CRC"
        return row
    header_size = len(sealed_header(connection_id, first, case.job.size))
    ciphertext_size = case.job.size - header_size
    plaintext = bytes(ciphertext_size - AEAD_TAG_SIZE)
    key = os.urandom(32)
    sealer, opener = Sealer(key), Opener(key)
    header = sealed_header(connection_id, first, ciphertext_size)
    datagram = header + sealer.seal(first, plaintext, header)
    packet = decode_datagram(datagram)
    if (
        type(packet) is not SealedPacket
        or opener.open(first, packet.ciphertext, header) != plaintext
    ):
        raise RuntimeError("crypto: a sealed datagram does not open")

    def build() -> bytes:
        number = next(numbers)
        header = sealed_header(connection_id, number, ciphertext_size)
        return header + sealer.seal(number, plaintext, header)

    def parse() -> bytes | None:
        packet = decode_datagram(datagram)
        if type(packet) is not SealedPacket:  # as the connection tells the kinds apart
            return None
        return opener.open(packet.number, packet.ciphertext, packet.header)

    ciphertext = packet.ciphertext
    row.send_us = _cpu_us(build, iterations)
    row.seal_us = _cpu_us(lambda: sealer.seal(next(numbers), plaintext, header), iterations)
    row.receive_us = _cpu_us(parse, iterations)
    row.open_us = _cpu_us(lambda: opener.open(first, ciphertext, header), iterations)
    row.note = f"plaintext {len(plaintext)} B, {header_size} B header, {AEAD_TAG_SIZE} B tag"
    return row


def _cpu_us(operation: Callable[[], object], iterations: int) -> float:
    """CPU microseconds per call of ``operation``: the fastest of ``CRYPTO_ROUNDS`` rounds of
    ``iterations`` calls, less the cost of calling a no-op the same way."""

    def best(call: Callable[[], object]) -> int:
        fastest = math.inf
        for _ in range(CRYPTO_ROUNDS):
            started = time.process_time_ns()
            for _ in range(iterations):
                call()
            fastest = min(fastest, time.process_time_ns() - started)
        return int(fastest)

    overhead = best(lambda: None)
    return round(max(0, best(operation) - overhead) / iterations / 1000, 3)


def run_case(case: Case, progress: Progress, profile_dir: str | None) -> Row:
    """Run one case; a failure becomes a row with status "failed", never an exception."""
    impl = IMPLS[case.impl]
    absent = missing(impl)
    if absent:
        return Row(case.case, case.impl, case.job.size, case.loss, "skipped",
                   note=f"skipped: {absent} is not installed")  # fmt: skip
    if case.case == "crypto":
        try:
            return crypto_costs(case)
        except ImportError as error:
            return Row(case.case, case.impl, case.job.size, None, "skipped",
                       note=f"skipped: {error}")  # fmt: skip
        except Exception as error:
            print(f"{case.label} failed: {error!r}", file=sys.stderr)
            return Row(case.case, case.impl, case.job.size, None, "failed",
                       note=repr(error)[:120])  # fmt: skip
    directory = None
    if profile_dir:
        directory = os.path.join(profile_dir, case.label)
        os.makedirs(directory, exist_ok=True)
    try:
        outcome = run_pair(
            impl.module,
            case.job,
            timeout=case.timeout,
            link=case.link,
            profile_dir=directory,
            tick=progress.tick,
        )
        return measure(case, outcome)
    except PeerError as error:
        progress.done()
        print(f"{case.label} failed: {error}", file=sys.stderr)
        first = str(error).strip().splitlines()[0] if str(error).strip() else "failed"
        return Row(case.case, case.impl, case.job.size, case.loss, "failed", note=first[:120])


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def table(rows: Iterable[Row]) -> str:
    """The rows as a fixed-width table (crypto rows aside: see :func:`crypto_section`)."""
    lines = [
        f"{'case':<10} {'impl':<18} {'size':>6} {'loss':>5} {'msgs/s':>11} {'MB/s':>9} "
        f"{'goodput':>7} {'retx':>6} {'p50 ms':>8} {'p99 ms':>8}  note"
    ]
    previous = ""
    for row in rows:
        if row.case == "crypto":
            continue
        if previous and row.case != previous:
            lines.append("")
        previous = row.case
        loss = "-" if row.loss is None else f"{100 * row.loss:.0f}%"
        size = str(row.size) if row.size else "-"
        lines.append(
            f"{row.case:<10} {row.impl:<18} {size:>6} {loss:>5} "
            f"{_cell(row.msgs_per_s, ',.0f', 11)} {_cell(row.mb_per_s, '.2f', 9)} "
            f"{_cell(row.goodput_ratio, '.3f', 7)} {_cell(row.retransmit_ratio, '.3f', 6)} "
            f"{_cell(row.p50_ms, '.3f', 8)} {_cell(row.p99_ms, '.3f', 8)}  "
            f"{row.note if row.status != 'failed' else 'FAILED: ' + row.note}"
        )
    return "\n".join(lines)


def crypto_section(rows: list[Row]) -> list[str]:
    """The crypto rows as lines: CPU per datagram built and parsed, and what sealing adds."""
    found = {row.impl: row for row in rows if row.case == "crypto"}
    if not found:
        return []
    lines = [f"crypto: CPU microseconds per {DATAGRAM} B datagram, in-process, best of "
             f"{CRYPTO_ROUNDS} rounds"]  # fmt: skip
    for impl, row in found.items():
        if row.status != "ok" or row.send_us is None or row.receive_us is None:
            lines.append(f"  {impl:<13} {row.status}: {row.note}")
            continue
        if row.seal_us is None or row.open_us is None:
            build, parse = "encode_datagram", "decode_datagram"
        else:
            build = f"of which seal {row.seal_us:.2f}"
            parse = f"of which open {row.open_us:.2f}"
        lines.append(
            f"  {impl:<13} send {row.send_us:6.2f} us ({build}), "
            f"receive {row.receive_us:6.2f} us ({parse}); {row.note}"
        )
    sealed = _find(rows, "crypto", "rudp", DATAGRAM)
    plain = _find(rows, "crypto", "rudp-insecure", DATAGRAM)
    if sealed is not None and plain is not None:
        extra = [
            ours - theirs
            for ours, theirs in (
                (sealed.send_us, plain.send_us),
                (sealed.receive_us, plain.receive_us),
            )
            if ours is not None and theirs is not None
        ]
        if len(extra) == 2:
            lines.append(
                f"  encryption adds {extra[0]:+.2f} us per datagram sent, "
                f"{extra[1]:+.2f} us per datagram received"
            )
    return lines


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def _find(
    rows: list[Row], case: str, impl: str, size: int, loss: float | None = None
) -> Row | None:
    for row in rows:
        if (row.case, row.impl, row.size, row.loss) == (case, impl, size, loss) and (
            row.status == "ok"
        ):
            return row
    return None


def targets(rows: list[Row]) -> list[str]:
    """The issue's target ratios, for the rows that were measured."""
    lines: list[str] = []

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISS"

    for size in SIZES:
        ours = _find(rows, "cpu", "rudp", size)
        theirs = _find(rows, "cpu", "rudp-insecure", size)
        if ours is None or theirs is None or not ours.msgs_per_s or not theirs.msgs_per_s:
            continue
        ratio = ours.msgs_per_s / theirs.msgs_per_s
        wanted = (
            f"(target >= {100 * TARGET_VS_INSECURE:.0f} %) {verdict(ratio >= TARGET_VS_INSECURE)}"
        )
        lines.append(
            f"cpu {_size_label(size)} rudp / rudp-insecure: {100 * ratio:.1f} % "
            f"{wanted if size == 1024 else '(info)'}"
        )
    ours, theirs = _find(rows, "handshake", "rudp", 0), _find(rows, "handshake", "rudp-insecure", 0)
    if ours and theirs and ours.p50_ms is not None and theirs.p50_ms is not None:
        lines.append(
            f"handshake p50 rudp / rudp-insecure: {ours.p50_ms:.3f} / {theirs.p50_ms:.3f} ms "
            f"(info: the Noise NK handshake adds {ours.p50_ms - theirs.p50_ms:+.3f} ms)"
        )
    for size in SIZES:
        for impl in ("rudp", "rudp-compiled"):
            ours = _find(rows, "cpu", impl, size)
            for peer in ("rudp-unbatched", "raw-udp", "kcp", "aioquic"):
                theirs = _find(rows, "cpu", peer, size)
                if ours and theirs and ours.msgs_per_s and theirs.msgs_per_s:
                    ratio = ours.msgs_per_s / theirs.msgs_per_s
                    target = CPU_TARGETS.get((impl, size, peer))
                    wanted = "(info)" if target is None else (
                        f"(target >= {target:g}x) {verdict(ratio >= target)}"
                    )
                    lines.append(f"cpu {_size_label(size)} {impl} / {peer}: {ratio:.2f}x {wanted}")
    raw = _find(rows, "pingpong", "raw-udp", 64)
    for impl in ("asyncio-udp", "asyncio-udp-uvloop", *RUDP_IMPLS):
        ours = _find(rows, "pingpong", impl, 64)
        if ours and raw and ours.p50_ms and raw.p50_ms:
            ratio = ours.p50_ms / raw.p50_ms
            wanted = "(info: the event loop's floor)" if impl.startswith("asyncio") else (
                f"(target <= {TARGET_PING_VS_RAW:g}x) {verdict(ratio <= TARGET_PING_VS_RAW)}"
            )
            lines.append(f"pingpong p50 {impl} / raw-udp: {ratio:.2f}x {wanted}")
    for loss in sorted({row.loss for row in rows if row.case == "lossy" and row.loss is not None}):
        ours = _find(rows, "lossy", "rudp", 1024, loss)
        if ours is None or ours.goodput_ratio is None:
            continue
        others = {
            impl: row.goodput_ratio
            for impl in ("kcp", "aioquic")
            if (row := _find(rows, "lossy", impl, 1024, loss)) and row.goodput_ratio is not None
        }
        ok = ours.goodput_ratio >= TARGET_GOODPUT and all(
            ours.goodput_ratio >= theirs for theirs in others.values()
        )
        peers = ", ".join(f"{impl} {value:.3f}" for impl, value in others.items()) or "no peers"
        lines.append(
            f"lossy {100 * loss:.0f}%: rudp goodput {ours.goodput_ratio:.3f} "
            f"(target >= {TARGET_GOODPUT:.2f} and >= peers: {peers}) {verdict(ok)}"
        )
    for name, *_ in THIN_LINKS:
        ours = _find(rows, name, "rudp", CHAT_SIZE, _loss_of(name))
        peers_p99 = [
            row.p99_ms
            for impl in ("kcp", "aioquic")
            if (row := _find(rows, name, impl, CHAT_SIZE, _loss_of(name))) and row.p99_ms
        ]
        if ours is None or ours.p99_ms is None or not peers_p99:
            continue
        bound = TARGET_THIN_VS_PEERS * min(peers_p99)
        wanted = (
            f"(target <= {100 * TARGET_THIN_VS_PEERS:.0f} % of it: {bound:,.0f} ms) "
            f"{verdict(ours.p99_ms <= bound)}"
            if name == "chat-30"
            else "(info)"
        )
        lines.append(
            f"{name}: rudp p99 {ours.p99_ms:,.0f} ms, better peer's {min(peers_p99):,.0f} ms "
            f"{wanted}"
        )
    return lines


def _loss_of(name: str) -> float:
    return next(loss for case, loss, _ in THIN_LINKS if case == name)


def plot(rows: list[Row], directory: str) -> list[str]:
    """The pictures of the cases run, as PNGs in ``directory``: goodput against loss (lossy)
    and the latency CDFs of the thin-stream chat cases; the paths written. Needs matplotlib."""
    from figures import draw_cdf, latency_axis, plt, save

    ok = [row for row in rows if row.status == "ok"]
    written: list[str] = []
    if any(row.case == "lossy" for row in ok):
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for impl in LOSSY_IMPLS:
            points = sorted(
                (row.loss * 100, row.goodput_ratio)
                for row in ok
                if row.case == "lossy" and row.impl == impl and row.loss is not None
                and row.goodput_ratio is not None
            )  # fmt: skip
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=impl)
        axis.axhline(TARGET_GOODPUT, linestyle="--", color="grey", label="rudp's target")
        axis.set_xlabel("random loss each way (%)")
        axis.set_ylabel("goodput / (20 Mbit/s x (1 - loss))")
        axis.set_ylim(0, 1.15)  # room above the lines for the legend
        axis.grid(True, alpha=0.3)
        axis.set_title(
            f"1 KiB messages through rudp-chat proxy: 20 Mbit/s, {2 * DELAY_MS:.0f} ms RTT, "
            f"queue {QUEUE} datagrams",
            fontsize="medium",
        )
        axis.legend(loc="upper center", ncol=4, fontsize="small")
        written.append(save(figure, directory, "goodput_vs_loss.png"))
    thin = [(name, loss, burst) for name, loss, burst in THIN_LINKS
            if any(row.case == name for row in ok)]  # fmt: skip
    if thin:
        figure, axes = plt.subplots(1, len(thin), figsize=(6 * len(thin), 4.5), squeeze=False)
        for axis, (name, loss, burst) in zip(axes[0], thin, strict=True):
            for impl in CHAT_IMPLS:
                row = _find(ok, name, impl, CHAT_SIZE, loss)
                if row is not None and row.samples_ms:
                    draw_cdf(axis, row.samples_ms, impl)
            kind = f"in bursts of mean {burst:g}" if burst > 1 else "random"
            latency_axis(axis, f"{name}: {100 * loss:.0f} % loss each way, {kind}",
                         "one-way latency (ms, log scale)")  # fmt: skip
        figure.suptitle(
            f"A {CHAT_SIZE} B message every {THIN_INTERVAL:g} s each way through rudp-chat proxy, "
            f"{THIN_DELAY_MS:.0f} \u00b1 {THIN_JITTER_MS:.0f} ms each way"
        )
        written.append(save(figure, directory, "chat_latency_peers.png"))
    return written


def _as_json(row: Row) -> dict[str, Any]:
    return {key.name: getattr(row, key.name) for key in fields(Row)}


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases, print the table and targets; the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a few minutes in all")
    parser.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    parser.add_argument(
        "--plot", metavar="DIR", help="write the pictures of the cases run into DIR (matplotlib)"
    )
    parser.add_argument("--only", metavar="TOKENS", help="e.g. cpu,rudp,raw-udp,1024 or lossy,5%%")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile each peer process into DIR/CASE/{server,client}.prof",
    )
    parser.add_argument(
        "--compiled",
        metavar="DIR",
        help=f"the compiled build rudp-compiled runs (else ${COMPILED_PATH_VARIABLE})",
    )
    args = parser.parse_args(argv)
    if args.compiled:  # the peer processes inherit it
        os.environ[COMPILED_PATH_VARIABLE] = os.path.abspath(args.compiled)
    try:
        only = parse_only(args.only) if args.only else {}
    except ValueError as error:
        parser.error(str(error))
    cases = [case for case in plan(QUICK if args.quick else FULL) if selected(case, only)]
    if not cases:
        parser.error("--only selects no case")
    progress = Progress(len(cases))
    rows: list[Row] = []
    try:
        for case in cases:
            progress.start(case.label)
            rows.append(run_case(case, progress, args.profile))
    finally:
        progress.done()
    print(table(rows))
    skipped = sorted({row.note for row in rows if row.status == "skipped"})
    for note in skipped:
        print(f"note: {note}")
    if any(row.case in ("lossy", "chat") for row in rows):
        print(
            f"lossy/chat link: {RATE_KBIT} kbit/s, {DELAY_MS:.0f} ms each way, queue {QUEUE} "
            f"datagrams (1.5 x BDP of {BDP_DATAGRAMS:.1f} x {DATAGRAM} B)"
        )
    if any(row.case in CASES_THIN for row in rows):
        print(
            f"chat-10/30/burst link: {THIN_DELAY_MS:.0f} +- {THIN_JITTER_MS:.0f} ms each way, "
            f"a {CHAT_SIZE} B message every {THIN_INTERVAL:g} s each way"
        )
    for line in crypto_section(rows):
        print(line)
    verdicts = targets(rows)
    if verdicts:
        print("targets:")
        for line in verdicts:
            print(f"  {line}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([_as_json(row) for row in rows], handle, indent=2)
    if args.plot:
        try:
            for path in plot(rows, args.plot):
                print(f"wrote {path}")
        except ImportError:
            print("note: --plot skipped: matplotlib is not installed")
    return 1 if any(row.status == "failed" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
