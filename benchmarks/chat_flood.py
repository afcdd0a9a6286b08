"""What a flooding client does to everyone else, on a real chat server over 127.0.0.1.

Usage: python benchmarks/chat_flood.py [--users N] [--user-rate PER_S] [--duration S]
                                       [--flood-rate PER_S] [--once] [--same-session]
                                       [--history memory|file] [--seed N] [--json PATH]

Target (from the project's issue #4): "A client flooding 100 messages/s for 10 s gets at most
burst + rate x t relayed, is warned, then disconnected; the other users' p99 delivery latency
stays within 2 x its baseline meanwhile."

Three processes, as deployed: ``python -m rudp_chat server`` with its default limits; this
process, running the normal users with :class:`rudp_chat.chat.client.ChatClient` (so their
messages take the real client's path, pacing included); and a flooder process, which sends
raw ``say`` frames on the schedule it was given and ignores every warning. The normal users
talk for ``--duration`` seconds alone (the baseline), then as long again while the flooder
floods. Latency is from a user's ``submit`` to another user's client handing over the message,
on one clock; each (message, receiver) pair is one sample.

The server kicks a flooder within a second, so by default the flooder then tries to reconnect
every 50 ms (a new connection, and a new session unless ``--same-session``) and floods on
whenever it is let in; ``--once`` floods on one connection only. The bound is per person: the
server refuses the kicked session and its address for a cool-down (``RoomLimits.flood_cooldown``,
30 s), so the reconnects are refused and what keeps the pressure on is their handshakes. Each
connection, and the total over all of them, is checked against burst + rate x t, with ``t``
from the server's own timestamps on the relayed messages. Prints ``ok``/``MISS`` lines and
exits 1 on any MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from processes import HelperProcess, chat_server_command

from rudp_chat.aio import ConnectError, TransportError, connect
from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.protocol import (
    SESSION_BYTES,
    Ack,
    Bye,
    Chat,
    Error,
    ErrorCode,
    Hello,
    LeaveReason,
    Left,
    Refused,
    Say,
    Welcome,
    decode_server,
    encode,
)
from rudp_chat.chat.render import Event
from rudp_chat.chat.room import RoomLimits
from rudp_chat.core.errors import LocalProtocolError

HOST: Final = "127.0.0.1"
LATENCY_FACTOR: Final = 2.0  # the budget: p99 during the flood <= 2 x the baseline p99
STARTUP_LIMIT_S: Final = 30.0  # the server and the users must be up by then
DRAIN_LIMIT_S: Final = 10.0  # after a phase, how long stragglers may still arrive
FLOODER_PREFIX: Final = "flooder"
SERVER_LIMITS: Final = RoomLimits()  # the server runs with the defaults
CLOCK_SLACK_S: Final = 0.5  # the flooder's clock sees a kick late, by up to a delivery
_PROBE: Final = re.compile(r"^probe (\d+) (\d+)$")


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, as the other benchmarks compute it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ----------------------------------------------------------------- flooder role


@dataclass(slots=True)
class FloodConnection:
    """One connection of the flooder, as the flooder saw it."""

    name: str
    rate: float = 0.0
    burst: int = 0
    sent: int = 0
    admitted: int = 0
    """Acks that carry a ``seq``: messages the server relayed."""
    warnings: int = 0
    """``rate_limited`` errors."""
    answered: int = 0
    """Acks of any kind: every ``say`` gets one."""
    bye: str | None = None
    warned_before_bye: bool = False
    cut_off: bool = False
    """The flood's time was up before the server disconnected this connection."""
    failure: str | None = None
    """Why this connection never joined (refused, ...)."""
    refused: str | None = None
    """The server's refusal code, if it refused the ``hello``."""
    answered_at: float | None = None
    """Seconds from the flood's start to the server's answer to ``hello``."""
    kicked_at: float | None = None
    """Seconds from the flood's start to the goodbye."""


async def _flood_one(
    port: int, name: str, session: bytes, schedule: list[float], start: float, deadline: float
) -> FloodConnection:
    """Join as ``name`` and send a ``say`` at each tick of ``schedule`` (shared across
    reconnects, so the overall rate holds) until kicked or ``deadline``."""
    loop = asyncio.get_running_loop()
    record = FloodConnection(name)
    try:
        connection = await connect(HOST, port)
    except (ConnectError, OSError) as exc:
        record.failure = f"connect: {exc}"
        return record
    try:
        await connection.send(encode(Hello(name, session)))
        welcome = decode_server(await connection.recv())
        record.answered_at = loop.time() - start
        if isinstance(welcome, Refused):
            record.refused = welcome.code.value
            record.failure = f"refused ({welcome.code.value}): {welcome.reason}"
            return record
        if not isinstance(welcome, Welcome):
            record.failure = f"not welcomed: {welcome}"
            return record
        record.rate, record.burst = welcome.rate, welcome.burst
        kicked = asyncio.Event()

        async def listen() -> None:
            try:
                async for data in connection:
                    message = decode_server(data)
                    if isinstance(message, Ack):
                        record.answered += 1
                        record.admitted += message.seq is not None
                    elif isinstance(message, Error) and message.code is ErrorCode.RATE_LIMITED:
                        record.warnings += 1
                    elif isinstance(message, Bye):
                        record.kicked_at = loop.time() - start
                        record.bye = message.code.value
                        record.warned_before_bye = record.warnings > 0
                        kicked.set()
            except TransportError:
                pass
            kicked.set()

        listening = asyncio.create_task(listen())
        say_id = 0
        try:
            while not kicked.is_set() and loop.time() < deadline:
                tick = start + schedule.pop(0) if schedule else deadline
                await asyncio.sleep(max(0.0, tick - loop.time()))
                while schedule and start + schedule[0] < loop.time():  # missed while away
                    schedule.pop(0)
                if kicked.is_set() or loop.time() >= deadline:
                    break
                say_id += 1
                await connection.send(encode(Say(say_id, f"flood {say_id}")))
                record.sent += 1
        except (TransportError, LocalProtocolError):
            pass  # the server hung up after its goodbye
        record.cut_off = not kicked.is_set()
        try:
            async with asyncio.timeout(DRAIN_LIMIT_S):
                if record.cut_off:  # still connected: wait for the answers in flight only
                    while record.answered < record.sent and not kicked.is_set():
                        await asyncio.sleep(0.01)
                else:
                    await listening
        except TimeoutError:
            pass
        listening.cancel()
        return record
    finally:
        connection.abort("flooder done")


async def _flooder(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + args.duration
    schedule = [i / args.flood_rate for i in range(round(args.flood_rate * args.duration))]
    records: list[FloodConnection] = []
    session = os.urandom(SESSION_BYTES)
    while loop.time() < deadline:
        name = f"{FLOODER_PREFIX}{len(records) + 1}"
        if not args.same_session:
            session = os.urandom(SESSION_BYTES)
        record = await _flood_one(args.port, name, session, schedule, start, deadline)
        records.append(record)
        if record.failure is not None:
            await asyncio.sleep(0.05)  # refused (cooling down, per-address limit): try again
        if args.once and record.failure is None:
            break
    print(json.dumps([asdict(record) for record in records]), flush=True)


# ----------------------------------------------------------------- director


@dataclass(slots=True)
class Observed:
    """What the normal users' clients handed over, stamped on arrival."""

    sent: dict[tuple[int, int], float] = field(default_factory=dict)
    """(sender, n) -> submit time."""
    received: dict[tuple[int, int], dict[int, float]] = field(default_factory=dict)
    """(sender, n) -> receiver -> arrival time."""
    flood_chats: dict[str, list[Chat]] = field(default_factory=dict)
    """Flooder name -> its messages as user 0 saw them."""
    flood_lefts: dict[str, int] = field(default_factory=dict)
    """Flooder name -> index in ``flood_order`` of the notice that it was kicked for flooding."""
    flood_order: list[str] = field(default_factory=list)
    """Flooder names, one entry per message or notice user 0 saw about them."""
    limited: int = 0
    """Rate-limit errors a normal user got (should be none)."""


def _on_event(observed: Observed, me: int) -> Any:
    def on_event(event: Event) -> None:
        now = time.perf_counter()
        if isinstance(event, Error) and event.code is ErrorCode.RATE_LIMITED:
            observed.limited += 1
        if isinstance(event, Chat) and not event.history:
            probe = _PROBE.match(event.text)
            if probe is not None:
                key = (int(probe[1]), int(probe[2]))
                observed.received.setdefault(key, {})[me] = now
            elif me == 0 and event.sender.startswith(FLOODER_PREFIX):
                observed.flood_chats.setdefault(event.sender, []).append(event)
                observed.flood_order.append(event.sender)
        if me == 0 and isinstance(event, Left) and event.reason is LeaveReason.FLOODING:
            observed.flood_lefts[event.name] = len(observed.flood_order)
            observed.flood_order.append(event.name)

    return on_event


async def _talk(
    clients: list[ChatClient], observed: Observed, args: argparse.Namespace, first: int
) -> list[float]:
    """Each user submits a probe every 1/user_rate s (seeded phases) for ``duration``; returns
    the latencies (ms) of every delivery to another user. Probe numbers start at ``first``."""
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed + first)
    interval = 1.0 / args.user_rate
    count = round(args.duration * args.user_rate)
    start = loop.time()

    async def speak(me: int, client: ChatClient) -> None:
        phase = rng.uniform(0.0, interval)
        for k in range(count):
            await asyncio.sleep(max(0.0, start + phase + k * interval - loop.time()))
            n = first + k
            observed.sent[me, n] = time.perf_counter()
            client.submit(f"probe {me} {n}")

    await asyncio.gather(*(speak(me, client) for me, client in enumerate(clients)))
    keys = [(me, first + k) for me in range(len(clients)) for k in range(count)]
    expected = len(clients) - 1
    try:
        async with asyncio.timeout(DRAIN_LIMIT_S):
            while any(len(observed.received.get(key, {})) < len(clients) for key in keys):
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass  # counted as missing below
    latencies = []
    for key in keys:
        for receiver, at in observed.received.get(key, {}).items():
            if receiver != key[0]:
                latencies.append((at - observed.sent[key]) * 1000)
    missing = len(keys) * expected - len(latencies)
    if missing:
        print(f"MISS {missing} deliveries to other users never arrived", flush=True)
    return latencies


@asynccontextmanager
async def _server(history: str) -> AsyncIterator[int]:
    """``python -m rudp_chat server`` with default limits; yields its port."""
    with tempfile.TemporaryDirectory() as directory:
        stored = None if history == "memory" else Path(directory) / "h.db"
        server = HelperProcess(
            "server", chat_server_command(host=HOST, history=stored), Path(directory)
        )
        try:
            yield await server.ready(timeout=STARTUP_LIMIT_S)
        finally:
            await server.stop(timeout=STARTUP_LIMIT_S)


async def _run_flooder(port: int, args: argparse.Namespace) -> list[FloodConnection]:
    flags = ["--once"] if args.once else []
    flags += ["--same-session"] if args.same_session else []
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role",
        "flooder",
        "--port",
        str(port),
        "--duration",
        str(args.duration),
        "--flood-rate",
        str(args.flood_rate),
        *flags,
        stdout=subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the flooder failed with exit code {process.returncode}")
    return [FloodConnection(**row) for row in json.loads(out)]


def _check(ok: bool, text: str, misses: list[str]) -> None:
    print(f"{'ok  ' if ok else 'MISS'} {text}", flush=True)
    if not ok:
        misses.append(text)


def _judge_flooders(
    records: list[FloodConnection], observed: Observed, misses: list[str], duration: float
) -> dict[str, Any]:
    joined = [record for record in records if record.failure is None]
    failures = [record.failure for record in records if record.failure is not None]
    _check(bool(joined), f"the flooder joined ({len(joined)} connections)", misses)
    if failures:
        codes = Counter(record.refused or "not refused" for record in records if record.failure)
        print(f"info {len(failures)} flooder connects failed {dict(codes)}, e.g. {failures[0]}")
    total = 0
    worst_slack = float("inf")
    for record in joined:
        chats = observed.flood_chats.get(record.name, [])
        total += len(chats)
        span = chats[-1].time - chats[0].time if chats else 0.0
        bound = record.burst + record.rate * span
        worst_slack = min(worst_slack, bound - len(chats))
        _check(
            len(chats) <= bound + 1e-6,
            f"{record.name}: {len(chats)} relayed <= burst + rate x t = {record.burst} + "
            f"{record.rate:g} x {span:.3f} s = {bound:.1f} (sent {record.sent})",
            misses,
        )
        left_at = observed.flood_lefts.get(record.name)
        last_chat = max(
            (i for i, name in enumerate(observed.flood_order) if name == record.name),
            default=-1,
        )
        kicked = record.bye == "flooding" and left_at is not None and left_at >= last_chat
        if record.cut_off and record.bye is None:
            print(
                f"info {record.name}: the flood's time ran out before the server disconnected it"
                f" ({record.warnings} rate-limit errors so far)"
            )
        else:
            _check(
                record.warned_before_bye and kicked,
                f"{record.name}: warned ({record.warnings} rate-limit errors), then disconnected"
                f" (goodbye {record.bye!r}, others told: {left_at is not None})",
                misses,
            )
        _check(
            record.admitted == len(chats),
            f"{record.name}: the server acknowledged as relayed {record.admitted}, the others "
            f"saw {len(chats)}",
            misses,
        )
    sent = sum(record.sent for record in records)
    total_bound = math.nan
    if joined:  # the bound is per person: all connections together fit one bucket
        rate, burst = joined[0].rate, joined[0].burst
        times = sorted(c.time for r in joined for c in observed.flood_chats.get(r.name, []))
        span = times[-1] - times[0] if times else 0.0
        total_bound = burst + rate * span
        _check(
            total <= total_bound + 1e-6,
            f"all {len(joined)} flooder connections together: {total} relayed <= burst + rate "
            f"x t = {burst} + {rate:g} x {span:.3f} s = {total_bound:.1f} (sent {sent}; over the "
            f"whole {duration:g} s the bound is {burst + rate * duration:g})",
            misses,
        )
    _judge_cool_down(records, misses)
    return {
        "flooder_connections": len(joined),
        "flooder_attempts": len(records),
        "flooder_refused_cooling_down": sum(r.refused == "cooling_down" for r in records),
        "flooder_sent": sent,
        "flooder_relayed": total,
        "flooder_total_bound": total_bound,
        "worst_bound_slack": worst_slack,
    }


def _judge_cool_down(records: list[FloodConnection], misses: list[str]) -> None:
    """No reconnect is let in sooner than the cool-down after a kick (on the flooder's clock,
    which sees the kick a delivery late); the attempts within it are refused as cooling down."""
    cooldown = max(SERVER_LIMITS.flood_cooldown, SERVER_LIMITS.burst / SERVER_LIMITS.rate)
    kicked_at: float | None = None
    within = admitted = refused = 0
    for record in records:
        answered = math.inf if record.answered_at is None else record.answered_at
        if kicked_at is not None and answered < kicked_at + cooldown - CLOCK_SLACK_S:
            within += 1
            admitted += record.failure is None
            refused += record.refused == "cooling_down"
        if record.bye == "flooding" and record.kicked_at is not None:
            kicked_at = record.kicked_at
    if within:
        _check(
            admitted == 0 and refused == within,
            f"the flooder's {within} reconnects within the {cooldown:g} s cool-down after its "
            f"kick: {refused} refused as cooling_down, {admitted} let in",
            misses,
        )


async def _director(args: argparse.Namespace) -> int:
    misses: list[str] = []
    observed = Observed()
    async with _server(args.history) as port:
        print(f"server: python -m rudp_chat server (default limits), history {args.history}")
        clients = [
            ChatClient(ClientOptions(HOST, port, f"user{me}"), _on_event(observed, me))
            for me in range(args.users)
        ]
        running = [asyncio.create_task(client.run()) for client in clients]
        async with asyncio.timeout(STARTUP_LIMIT_S):
            while any(client.state != "open" for client in clients):
                await asyncio.sleep(0.05)
        how = "one connection" if args.once else "reconnecting"
        how += ", the same session" if args.same_session and not args.once else ""
        print(
            f"{args.users} users, each sending {args.user_rate:g} messages/s; "
            f"{args.duration:g} s baseline, then {args.duration:g} s with a flooder at "
            f"{args.flood_rate:g}/s ({how})",
            flush=True,
        )
        baseline = await _talk(clients, observed, args, first=0)
        flooding = asyncio.create_task(_run_flooder(port, args))
        await asyncio.sleep(0.2)  # the flooder process starts and connects
        during = await _talk(clients, observed, args, first=1_000_000)
        records = await flooding
        for client in clients:
            client.quit()
        await asyncio.gather(*running)

    p99_base, p99_flood = _percentile(baseline, 0.99), _percentile(during, 0.99)
    for label, values in (("baseline", baseline), ("flood", during)):
        print(
            f"{label:8} latency over {len(values)} deliveries: p50 "
            f"{statistics.median(values):.2f} ms, p99 {_percentile(values, 0.99):.2f} ms, "
            f"max {max(values):.2f} ms"
        )
    summary = _judge_flooders(records, observed, misses, args.duration)
    _check(
        p99_flood <= LATENCY_FACTOR * p99_base,
        f"others' p99 during the flood {p99_flood:.2f} ms <= {LATENCY_FACTOR:g} x baseline "
        f"{p99_base:.2f} ms = {LATENCY_FACTOR * p99_base:.2f} ms",
        misses,
    )
    _check(observed.limited == 0, f"normal users rate-limited: {observed.limited}", misses)
    if args.json is not None:
        summary |= {
            "p50_baseline_ms": statistics.median(baseline),
            "p99_baseline_ms": p99_base,
            "p50_flood_ms": statistics.median(during),
            "p99_flood_ms": p99_flood,
            "misses": misses,
        }
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 1 if misses else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4, help="normal users (default %(default)s)")
    parser.add_argument(
        "--user-rate",
        type=float,
        default=5.0,
        metavar="PER_S",
        help="messages per second each normal user sends (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds of baseline and of flood (default %(default)s)",
    )
    parser.add_argument(
        "--flood-rate",
        type=float,
        default=100.0,
        metavar="PER_S",
        help="messages per second the flooder sends (default %(default)s)",
    )
    parser.add_argument(
        "--once", action="store_true", help="the flooder does not reconnect once kicked"
    )
    parser.add_argument(
        "--same-session",
        action="store_true",
        help="the flooder reconnects with its session, not a new one",
    )
    parser.add_argument(
        "--history",
        choices=("memory", "file"),
        default="file",
        help="the server stores in SQLite in memory, or in a file as deployed (default "
        "%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="users' phases (default %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--role", choices=("director", "flooder"), default="director")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "flooder":
        asyncio.run(_flooder(args))
        return 0
    return asyncio.run(_director(args))


if __name__ == "__main__":
    sys.exit(main())
