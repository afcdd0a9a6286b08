"""Chat server fan-out: C clients in one room, each sending one 100 B line every S seconds.

Usage: python benchmarks/fanout.py [--clients C] [--interval S] [--duration D] [--processes P]
                                   [--insecure] [--quick] [--json PATH] [--profile PATH]

The server is ``python -m rudp_chat server`` (history in memory, limits raised to let C
clients in from one address) in its own process; the clients are real
:class:`rudp_chat.chat.client.ChatClient` objects spread over P load processes (never in the
server's). Client ``i`` sends its lines at ``start + (i / C) * S + k * S``: staggered, so the
load is even. Every line carries its sender's number, its index and a ``time.monotonic()``
stamp (one clock for every process on a Linux machine); a receiver records the delivery
latency of each line from another client. Reported:

- server CPU per delivered line, µs: the server's ``utime + stime`` (``/proc/PID/stat``) over
  the sending window and its drain (not the goodbyes), divided by the lines delivered to
  other clients (C - 1 per line sent);
- p50 / p99 delivery latency, ms; lost (never delivered to a client), duplicated (delivered
  twice to one client) and out-of-order deliveries.

``--quick`` (10 clients, one line a second each, 10 s, 2 processes) runs in well under 60 s:
the smoke test's. Run with higher C or lower S until p99 passes 100 ms to find the server's
capacity (deliveries/s there). The IRC anchors of issue #14 are not measured here yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

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
PREFIX: Final = "c"  # client names: c0, c1, ...
FAILOVER_CONFIG: Final = ConnectionConfig(heartbeat_interval=0.2, idle_timeout=2.0)
"""With ``--failover``: a dead server is noticed within 2 s (README: Several servers)."""


@dataclass(slots=True)
class Report:
    """One run's figures."""

    clients: int
    interval_s: float
    duration_s: float
    insecure: bool
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
    load: str
    """``/proc/loadavg`` at the end: the machine's other work."""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, as the other benchmarks compute it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat`` fields 14, 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()  # the name may hold spaces; fields from 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _line(sender: int, index: int) -> str:
    text = f"{sender} {index} {time.monotonic():.6f} "
    return text + "x" * (LINE_BYTES - len(text))


# ------------------------------------------------------------------ load role


async def _load(args: argparse.Namespace) -> None:
    """One load process: clients ``first`` .. ``first + count - 1``; prints ``ready``, waits for
    the start time on stdin, sends on schedule, then prints what its clients received."""
    config = FAILOVER_CONFIG if args.failover else ConnectionConfig()
    config = replace(config, insecure=args.insecure)
    received: list[tuple[int, int, int, float]] = []  # receiver, sender, index, latency s
    reconnected: list[tuple[int, float]] = []  # client, time.monotonic() it was back

    def on_event(me: int) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            if isinstance(event, Chat):  # live, or missed while failing over (no history yet)
                sender, index, stamp, _ = event.text.split(" ", 3)
                if int(sender) != me:
                    received.append((me, int(sender), int(index), time.monotonic() - float(stamp)))
            elif isinstance(event, Notice) and event.text.startswith("reconnected"):
                reconnected.append((me, time.monotonic()))

        return handle

    ports = [int(port) for port in args.ports.split(",")]
    clients = {}
    for me in range(args.first, args.first + args.count):
        mine = ports[me % len(ports) :] + ports[: me % len(ports)]  # spread, then in turn
        options = ClientOptions(
            HOST,
            mine[0],
            f"{PREFIX}{me}",
            reconnect=args.failover,
            connection=config,
            alternates=tuple((HOST, port) for port in mine[1:]),
        )
        clients[me] = ChatClient(options, on_event(me))
    running = [asyncio.create_task(client.run()) for client in clients.values()]
    async with asyncio.timeout(STARTUP_LIMIT_S):
        while any(client.state != "open" for client in clients.values()):
            await asyncio.sleep(0.05)
    print("ready", flush=True)
    start = float(await asyncio.to_thread(sys.stdin.readline))
    loop = asyncio.get_running_loop()
    lines = round(args.duration / args.interval)
    offset = loop.time() - time.monotonic()  # loop.time() is monotonic too; make sure

    async def speak(me: int, client: ChatClient) -> None:
        phase = me / args.clients * args.interval
        for index in range(lines):
            await asyncio.sleep(
                max(0.0, start + offset + phase + index * args.interval - loop.time())
            )
            client.submit(_line(me, index))

    await asyncio.gather(*(speak(me, client) for me, client in clients.items()))
    if args.failover:  # until every line reached every client here, or the bound
        expected = lines * (args.clients - 1) * len(clients)
        deadline = loop.time() + FAILOVER_DRAIN_S
        while len({(r, s, i) for r, s, i, _ in received}) < expected and loop.time() < deadline:
            await asyncio.sleep(0.1)
    else:
        await asyncio.sleep(DRAIN_S)
    print("drained", flush=True)
    for client in clients.values():
        client.quit()
    await asyncio.gather(*running)
    outcome = {"sent": lines * len(clients), "received": received, "reconnected": reconnected}
    print(json.dumps(outcome), flush=True)


# -------------------------------------------------------------- director role


async def start_load(
    args: argparse.Namespace, ports: Sequence[int], first: int, count: int
) -> asyncio.subprocess.Process:
    """A load process for clients ``first`` .. ``first + count - 1`` of the servers on
    ``ports``."""
    flags = ["--insecure"] if args.insecure else []
    flags += ["--failover"] if getattr(args, "failover", False) else []
    return await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role=load",
        f"--ports={','.join(map(str, ports))}",
        f"--first={first}",
        f"--count={count}",
        f"--clients={args.clients}",
        f"--interval={args.interval}",
        f"--duration={args.duration}",
        *flags,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=2**30,
    )


async def drive(
    args: argparse.Namespace,
    ports: Sequence[int],
    pids: Sequence[int],
    during: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[dict[str, Any]], list[float]]:
    """Run the load (``args.clients`` clients in ``args.processes`` processes; client ``i``
    starts on ``ports[i % len(ports)]``) until it drained. ``during`` runs once sending has
    started (a fault to inject). Returns the load processes' outputs and the CPU seconds each of
    the processes ``pids`` (which must outlive the run) used from the start to the drain."""
    share = -(-args.clients // args.processes)
    loads = [
        await start_load(args, ports, first, min(share, args.clients - first))
        for first in range(0, args.clients, share)
    ]
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


def server_flags(args: argparse.Namespace) -> list[str]:
    """The flags that let the load in: limits raised for C clients from one address."""
    extra = [f"--max-clients={args.clients}", f"--max-per-address={args.clients}"]
    extra += [f"--rate={RATE_HEADROOM / args.interval}"]
    return extra + (["--insecure"] if args.insecure else [])


async def _director(args: argparse.Namespace) -> Report:
    with tempfile.TemporaryDirectory() as directory:
        command = chat_server_command(host=HOST, history=None, extra=server_flags(args))
        if args.profile is not None:  # cProfile writes the file when the server exits
            command[1:1] = ["-m", "cProfile", "-o", args.profile]
        server = HelperProcess("server", command, Path(directory))
        try:
            port = await server.ready(timeout=STARTUP_LIMIT_S)
            outputs, (cpu,) = await drive(args, [port], [server.process.pid])
        finally:
            await server.stop(timeout=STARTUP_LIMIT_S)
    return tally(args, outputs, cpu)


async def next_line(load: asyncio.subprocess.Process) -> bytes:
    """The load process's next stdout line, stripped (its stdout is a pipe)."""
    assert load.stdout is not None
    return (await load.stdout.readline()).strip()


def tally(args: argparse.Namespace, outputs: list[dict[str, Any]], cpu: float) -> Report:
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
        clients=args.clients,
        interval_s=args.interval,
        duration_s=args.duration,
        insecure=args.insecure,
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
        load=Path("/proc/loadavg").read_text().strip(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="C (default %(default)s)")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between a client's lines"
    )
    parser.add_argument("--duration", type=float, default=60.0, metavar="D", help="seconds sending")
    parser.add_argument("--processes", type=int, default=2, help="load processes")
    parser.add_argument("--insecure", action="store_true", help="server and clients unencrypted")
    parser.add_argument("--quick", action="store_true", help="10 clients, 10 s: under 60 s")
    parser.add_argument("--json", metavar="PATH", help="also write the report as a JSON list")
    parser.add_argument(
        "--profile", metavar="PATH", help="run the server under cProfile into PATH (pstats)"
    )
    parser.add_argument("--role", choices=("director", "load"), default="director")
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--failover", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "load":
        asyncio.run(_load(args))
        return 0
    if args.quick:
        args.clients, args.interval, args.duration = 10, 1.0, 10.0
    report = asyncio.run(_director(args))
    print(
        f"fanout: {report.clients} clients x 1 line / {report.interval_s:g} s for "
        f"{report.duration_s:g} s{' (insecure)' if report.insecure else ''}: "
        f"{report.deliveries:,} deliveries ({report.deliveries_per_s:,.0f}/s); server CPU "
        f"{report.cpu_us_per_delivery:.1f} us per delivered line ({report.server_cpu_s:.2f} s); "
        f"latency p50 {report.p50_ms:.2f} ms, p99 {report.p99_ms:.2f} ms; lost {report.lost}, "
        f"duplicated {report.duplicated}, out of order {report.out_of_order}; "
        f"load {report.load}"
    )
    if args.json is not None:
        Path(args.json).write_text(json.dumps([asdict(report)], indent=2), encoding="utf-8")
    return 0 if report.lost == report.duplicated == report.out_of_order == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
