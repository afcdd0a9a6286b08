"""Chat server fan-out: C clients in one room, each sending one 100 B line every S seconds,
against rudp_chat's server and against real IRC servers as anchors.

Usage: python benchmarks/fanout.py [--targets T,...] [--clients C] [--interval S]
                                   [--duration D] [--processes P] [--sweep] [--quick]
                                   [--json PATH] [--profile PATH]

Targets: ``rudp`` (``python -m rudp_chat server``, encrypted), ``rudp-insecure``, and the
anchors ``inspircd``, ``inspircd-tls``, ``ngircd``, ``ngircd-tls`` (the Debian binaries,
configured by ``ircservers.py``); ``all`` is every one. Each server runs in its own process;
the clients are spread over P load processes (never in the server's): real
:class:`rudp_chat.chat.client.ChatClient` objects for rudp, minimal IRC users
(``ircload.py``) in one channel for the anchors, the same load either way. Client ``i`` sends
its lines at ``start + (i / C) * S + k * S``: staggered, so the load is even. Every line
carries its sender's number, its index and a ``time.monotonic()`` stamp (one clock for every
process on a Linux machine); a receiver records the delivery latency of each line from another
client. Reported per run:

- server CPU per delivered line, µs: the server's ``utime + stime`` (``/proc/PID/stat``) over
  the sending window and its drain (not the goodbyes), divided by the lines delivered to
  other clients (C - 1 per line sent);
- p50 / p99 delivery latency, ms; lost (never delivered to a client), duplicated (delivered
  twice to one client) and out-of-order deliveries;
- the busiest load process's CPU, % of one core: near 100 % the load, not the server, limits.

``--sweep`` raises the load (S divided by ``--factor`` each step, from ``--interval``) until
p99 passes 100 ms or a line is lost: the deliveries/s of the last step within the bound is the
server's capacity. ``--quick`` runs in well under 60 s for one target (10 clients, one line a
second each, 10 s; with ``--sweep``: 20 clients from one line per 0.5 s, 4 s steps, at most 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

from ircload import IrcUser, tls_context
from ircservers import make_certificate, start_irc_server
from processes import HelperProcess, chat_server_command

from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.protocol import Chat
from rudp_chat.chat.render import Event, Notice
from rudp_chat.core.config import ConnectionConfig

HOST: Final = "127.0.0.1"
LINE_BYTES: Final = 100  # the chat line
STARTUP_LIMIT_S: Final = 60.0  # every client joined by then, on a loaded 2-core box
LEAD_S: Final = 0.5  # from "go" to the first line: every load process has read it
DRAIN_S: Final = 5.0  # after the last line, how long deliveries may still arrive
FAILOVER_DRAIN_S: Final = 30.0  # with --failover, the bound on waiting for every line: a moved
# client catches up on what it missed, and the lines it said while moving arrive late
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat's unit, per second
RATE_HEADROOM: Final = 4.0  # the server's per-user rate limit, x the load's rate: never binds
JOIN_CONCURRENCY: Final = 32  # IRC users registering at once in one load process
PREFIX: Final = "c"  # client names: c0, c1, ...
LATENCY_BOUND_MS: Final = 100.0  # the sweep's p99 bound: past it the server is at capacity
TARGETS: Final = ("rudp", "rudp-insecure", "inspircd", "inspircd-tls", "ngircd", "ngircd-tls")
FAILOVER_CONFIG: Final = ConnectionConfig(heartbeat_interval=0.2, idle_timeout=2.0)
"""With ``--failover``: a dead server is noticed within 2 s (README: Several servers)."""


@dataclass(slots=True)
class Report:
    """One run's figures."""

    target: str
    clients: int
    interval_s: float
    duration_s: float
    lines_sent: int
    deliveries: int
    """Lines delivered to a client other than their sender, each once."""
    lost: int
    duplicated: int
    out_of_order: int
    server_cpu_s: float
    cpu_us_per_delivery: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    load_cpu_percent: float
    """The busiest load process's CPU over the window, % of one core."""
    load: str
    """``/proc/loadavg`` at the end: the machine's other work."""

    @property
    def clean(self) -> bool:
        """Every line delivered to every other client once, in order."""
        return self.lost == self.duplicated == self.out_of_order == 0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, as the other benchmarks compute it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat`` fields 14, 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()  # the name may hold spaces; fields from 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _line(sender: int, index: int) -> str:
    text = f"{sender} {index} {time.monotonic():.6f} "
    return text + "x" * (LINE_BYTES - len(text))


# ------------------------------------------------------------------ load role


class _User(Protocol):
    """What a load process needs of one chat user, rudp or IRC."""

    async def open(self) -> None: ...
    def say(self, text: str) -> None: ...
    async def close(self) -> None: ...


class _RudpUser:
    """A :class:`ChatClient` behind the :class:`_User` interface. With ``failover`` it moves to
    the next of ``ports`` when its server dies, and calls ``on_back`` once it is back."""

    def __init__(
        self,
        ports: Sequence[int],
        nick: str,
        insecure: bool,
        failover: bool,
        on_text: Callable[[str], None],
        on_back: Callable[[], None],
    ):
        def handle(event: Event) -> None:
            if isinstance(event, Chat):  # live, or missed while failing over (no history yet)
                on_text(event.text)
            elif isinstance(event, Notice) and event.text.startswith("reconnected"):
                on_back()

        config = replace(FAILOVER_CONFIG if failover else ConnectionConfig(), insecure=insecure)
        options = ClientOptions(
            HOST,
            ports[0],
            nick,
            reconnect=failover,
            connection=config,
            alternates=tuple((HOST, port) for port in ports[1:]),
        )
        self._client = ChatClient(options, handle)
        self._running: asyncio.Task[int] | None = None

    async def open(self) -> None:
        self._running = asyncio.create_task(self._client.run())
        while self._client.state != "open":
            if self._running.done():
                raise ConnectionError(f"{self._client.state}: {self._running.result()}")
            await asyncio.sleep(0.05)

    def say(self, text: str) -> None:
        self._client.submit(text)

    async def close(self) -> None:
        self._client.quit()
        if self._running is not None:
            await self._running


async def _load(args: argparse.Namespace) -> None:
    """One load process: clients ``first`` .. ``first + count - 1``; prints ``ready``, waits for
    the start time on stdin, sends on schedule, then prints what its clients received."""
    received: list[tuple[int, int, int, float]] = []  # receiver, sender, index, latency s
    reconnected: list[tuple[int, float]] = []  # client, time.monotonic() it was back

    def on_text(me: int) -> Callable[[str], None]:
        def handle(text: str) -> None:
            sender, index, stamp, _ = text.split(" ", 3)
            if int(sender) != me:
                received.append((me, int(sender), int(index), time.monotonic() - float(stamp)))

        return handle

    def on_back(me: int) -> Callable[[], None]:
        return lambda: reconnected.append((me, time.monotonic()))

    ports = [int(port) for port in args.ports.split(",")]
    tls = tls_context(Path(args.cafile)) if args.cafile else None
    users: dict[int, _User] = {}
    for me in range(args.first, args.first + args.count):
        nick = f"{PREFIX}{me}"
        if args.target.startswith("rudp"):
            mine = ports[me % len(ports) :] + ports[: me % len(ports)]  # spread, then in turn
            insecure = args.target == "rudp-insecure"
            users[me] = _RudpUser(mine, nick, insecure, args.failover, on_text(me), on_back(me))
        else:
            users[me] = IrcUser(HOST, ports[0], nick, tls, on_text(me))
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def join(user: _User) -> None:
        async with gate:
            await user.open()

    async with asyncio.timeout(STARTUP_LIMIT_S):
        await asyncio.gather(*(join(user) for user in users.values()))
    print("ready", flush=True)
    start = float(await asyncio.to_thread(sys.stdin.readline))
    cpu = _own_cpu_s()
    loop = asyncio.get_running_loop()
    lines = round(args.duration / args.interval)
    offset = loop.time() - time.monotonic()  # loop.time() is monotonic too; make sure

    async def speak(me: int, user: _User) -> None:
        phase = me / args.clients * args.interval
        for index in range(lines):
            await asyncio.sleep(
                max(0.0, start + offset + phase + index * args.interval - loop.time())
            )
            user.say(_line(me, index))

    await asyncio.gather(*(speak(me, user) for me, user in users.items()))
    if args.failover:  # until every line reached every client here, or the bound
        expected = lines * (args.clients - 1) * len(users)
        deadline = loop.time() + FAILOVER_DRAIN_S
        while len({(r, s, i) for r, s, i, _ in received}) < expected and loop.time() < deadline:
            await asyncio.sleep(0.1)
    else:
        await asyncio.sleep(args.drain)
    wall = time.monotonic() - start
    cpu = _own_cpu_s() - cpu
    print("drained", flush=True)
    await asyncio.gather(*(user.close() for user in users.values()))
    output = {"sent": lines * len(users), "received": received, "reconnected": reconnected}
    print(json.dumps({**output, "cpu_s": cpu, "wall_s": wall}), flush=True)


# -------------------------------------------------------------- director role


async def start_load(
    args: argparse.Namespace,
    target: str,
    ports: Sequence[int],
    cafile: Path | None,
    first: int,
    count: int,
) -> asyncio.subprocess.Process:
    """A load process for clients ``first`` .. ``first + count - 1`` of the ``target`` servers
    on ``ports``."""
    flags = ["--failover"] if getattr(args, "failover", False) else []
    return await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role=load",
        *flags,
        f"--targets={target}",
        f"--ports={','.join(map(str, ports))}",
        f"--cafile={cafile or ''}",
        f"--first={first}",
        f"--count={count}",
        f"--clients={args.clients}",
        f"--interval={args.interval}",
        f"--duration={args.duration}",
        f"--drain={getattr(args, 'drain', DRAIN_S)}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=2**30,
    )


async def _start_server(
    args: argparse.Namespace, target: str, directory: Path
) -> tuple[HelperProcess, int, Path | None]:
    """The ``target`` server, started in ``directory``: its process, port and (for TLS) the
    certificate its clients verify."""
    if target.startswith("rudp"):
        command = chat_server_command(host=HOST, history=None, extra=server_flags(args, target))
        if args.profile is not None:  # cProfile writes the file when the server exits
            command[1:1] = ["-m", "cProfile", "-o", args.profile]
        server = HelperProcess("server", command, directory)
        return server, await server.ready(timeout=STARTUP_LIMIT_S), None
    name, _, tls = target.partition("-")
    cert, key = make_certificate(directory)
    irc = await start_irc_server(name, directory, tls=bool(tls), cert=cert, key=key)
    return irc.process, irc.port, cert if tls else None


async def drive(
    args: argparse.Namespace,
    target: str,
    ports: Sequence[int],
    pids: Sequence[int],
    cafile: Path | None = None,
    during: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[dict[str, Any]], list[float]]:
    """Run the load (``args.clients`` clients in ``args.processes`` processes; client ``i``
    starts on ``ports[i % len(ports)]``) until it drained. ``during`` runs once sending has
    started (a fault to inject). Returns the load processes' outputs and the CPU seconds each of
    the processes ``pids`` (which must outlive the run) used from the start to the drain."""
    share = -(-args.clients // args.processes)
    loads: list[asyncio.subprocess.Process] = []
    try:
        for first in range(0, args.clients, share):
            count = min(share, args.clients - first)
            loads.append(await start_load(args, target, ports, cafile, first, count))
        for load in loads:
            if await next_line(load) != b"ready":
                raise RuntimeError("a load process did not start")
        start = time.monotonic() + LEAD_S
        for load in loads:
            assert load.stdin is not None  # opened with a pipe
            load.stdin.write(f"{start}\n".encode())
            await load.stdin.drain()
        cpu_before = [cpu_s(pid) for pid in pids]
        if during is not None:
            await during()
        for load in loads:
            if await next_line(load) != b"drained":
                raise RuntimeError("a load process failed")
        cpu = [cpu_s(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
        return [json.loads((await load.communicate())[0]) for load in loads], cpu  # no goodbyes
    finally:
        for load in loads:
            if load.returncode is None:
                load.kill()
                await load.wait()


def server_flags(args: argparse.Namespace, target: str) -> list[str]:
    """The rudp server's flags that let the load in: limits raised for C clients from one
    address, unencrypted for ``rudp-insecure``."""
    extra = [f"--max-clients={args.clients}", f"--max-per-address={args.clients}"]
    extra += [f"--rate={RATE_HEADROOM / args.interval}"]
    return extra + (["--insecure"] if target == "rudp-insecure" else [])


async def _run(args: argparse.Namespace, target: str) -> Report:
    """One run of the load against a fresh ``target`` server."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        server, port, cafile = await _start_server(args, target, directory)
        try:
            outputs, (cpu,) = await drive(args, target, [port], [server.process.pid], cafile)
        finally:
            await server.stop(timeout=STARTUP_LIMIT_S)
    return tally(args, target, outputs, cpu)


async def next_line(load: asyncio.subprocess.Process) -> bytes:
    """The load process's next stdout line, stripped (its stdout is a pipe)."""
    assert load.stdout is not None
    return (await load.stdout.readline()).strip()


def tally(
    args: argparse.Namespace, target: str, outputs: list[dict[str, Any]], cpu: float
) -> Report:
    sent = sum(output["sent"] for output in outputs)
    latencies: list[float] = []
    seen: set[tuple[int, int, int]] = set()
    last: dict[tuple[int, int], int] = {}
    duplicated = out_of_order = 0
    for output in outputs:
        for receiver, sender, index, latency in output["received"]:
            key = (receiver, sender, index)
            if key in seen:
                duplicated += 1
                continue
            seen.add(key)
            latencies.append(latency * 1000)
            if last.get((receiver, sender), -1) > index:
                out_of_order += 1
            last[receiver, sender] = index
    deliveries = len(seen)
    return Report(
        target=target,
        clients=args.clients,
        interval_s=args.interval,
        duration_s=args.duration,
        lines_sent=sent,
        deliveries=deliveries,
        lost=sent * (args.clients - 1) - deliveries,
        duplicated=duplicated,
        out_of_order=out_of_order,
        server_cpu_s=cpu,
        cpu_us_per_delivery=cpu / deliveries * 1e6 if deliveries else 0.0,
        deliveries_per_s=deliveries / args.duration,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        load_cpu_percent=max(100 * output["cpu_s"] / output["wall_s"] for output in outputs),
        load=Path("/proc/loadavg").read_text().strip(),
    )


def _show(report: Report) -> None:
    print(
        f"fanout {report.target}: {report.clients} clients x 1 line / {report.interval_s:g} s "
        f"for {report.duration_s:g} s: {report.deliveries:,} deliveries "
        f"({report.deliveries_per_s:,.0f}/s); server CPU {report.cpu_us_per_delivery:.1f} us "
        f"per delivered line ({report.server_cpu_s:.2f} s); latency p50 {report.p50_ms:.2f} ms, "
        f"p99 {report.p99_ms:.2f} ms; lost {report.lost}, duplicated {report.duplicated}, "
        f"out of order {report.out_of_order}; busiest load process "
        f"{report.load_cpu_percent:.0f} % of a core; load {report.load}",
        flush=True,
    )


async def _sweep(args: argparse.Namespace, target: str) -> list[Report]:
    """Raise the rate step by step until p99 passes :data:`LATENCY_BOUND_MS` or a line is lost;
    prints the capacity (the last step within the bound)."""
    reports: list[Report] = []
    first = args.interval
    for step in range(args.max_steps):
        args.interval = first / args.factor**step
        reports.append(report := await _run(args, target))
        _show(report)
        if report.p99_ms > LATENCY_BOUND_MS or not report.clean:
            break
    args.interval = first
    within = [r for r in reports if r.p99_ms <= LATENCY_BOUND_MS and r.clean]
    best = f"{within[-1].deliveries_per_s:,.0f} deliveries/s" if within else "below the first step"
    bound = "reached" if len(within) < len(reports) else "not reached (raise --max-steps)"
    print(f"capacity {target}: {best} with p99 <= {LATENCY_BOUND_MS:g} ms; bound {bound}")
    return reports


async def _director(args: argparse.Namespace, targets: list[str]) -> list[Report]:
    reports: list[Report] = []
    for target in targets:
        if args.sweep:
            reports += await _sweep(args, target)
        else:
            reports.append(report := await _run(args, target))
            _show(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--targets", default="rudp", help=f"comma-separated, of {', '.join(TARGETS)}, or all"
    )
    parser.add_argument("--clients", type=int, default=50, help="C (default %(default)s)")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between a client's lines"
    )
    parser.add_argument("--duration", type=float, default=60.0, metavar="D", help="seconds sending")
    parser.add_argument(
        "--drain", type=float, default=DRAIN_S, help="seconds after the last line for deliveries"
    )
    parser.add_argument("--processes", type=int, default=2, help="load processes")
    parser.add_argument("--sweep", action="store_true", help="raise the rate until p99 > 100 ms")
    parser.add_argument("--factor", type=float, default=1.5, help="the sweep's rate step")
    parser.add_argument("--max-steps", type=int, default=8, help="the sweep's steps at most")
    parser.add_argument("--quick", action="store_true", help="a short run: under 60 s")
    parser.add_argument("--json", metavar="PATH", help="also write the reports as a JSON list")
    parser.add_argument(
        "--profile", metavar="PATH", help="run the rudp server under cProfile into PATH (pstats)"
    )
    parser.add_argument("--role", choices=("director", "load"), default="director")
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--failover", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "load":
        args.target = args.targets
        asyncio.run(_load(args))
        return 0
    targets = list(TARGETS) if args.targets == "all" else args.targets.split(",")
    if unknown := set(targets) - set(TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.quick and args.sweep:
        args.clients, args.interval, args.duration, args.drain = 20, 0.5, 4.0, 2.0
        args.factor, args.max_steps = 2.0, 3
    elif args.quick:
        args.clients, args.interval, args.duration, args.drain = 10, 1.0, 10.0, 2.0
    reports = asyncio.run(_director(args, targets))
    if args.json is not None:
        rows = [asdict(report) for report in reports]
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    within = [r for r in reports if r.p99_ms <= LATENCY_BOUND_MS] if args.sweep else reports
    return 0 if all(report.clean for report in within) else 1


if __name__ == "__main__":
    sys.exit(main())
