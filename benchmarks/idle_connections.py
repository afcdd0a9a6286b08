"""CPU cost of a server holding many idle, heartbeating connections over real UDP sockets.

Usage: python benchmarks/idle_connections.py [--connections N] [--client-processes P]
                                             [--heartbeat S] [--window S] [--json PATH] [--uvloop]

This process directs; a server process runs :func:`rudp_chat.aio.serve` with one reader task
per connection (an idle chat server); P client processes open the connections with
:func:`rudp_chat.aio.connect`, one UDP socket each as real clients have (so N needs N file
descriptors and N ephemeral ports, spread over the P processes), their heartbeats' phases
spread evenly over one interval so the load is steady rather than one burst per interval.
Once all are connected and a warm-up has passed, the server measures its own CPU time (user +
system, from ``getrusage``) over the window; the clients' CPU is reported separately and never
counted. The server's datagrams in per second show whether the clients kept up: N per
heartbeat interval if they did.

Targets (from the project's issues): 2,000 connections heartbeating every second cost the
server under 25 % of one core (issue 9); so do 10,000 (issue 14).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from rudp_chat.aio import (
    HandshakeTimeoutError,
    ReliableConnection,
    TransportError,
    connect,
    serve,
)
from rudp_chat.core import ConnectionConfig, ListenerConfig

HOST = "127.0.0.1"
TARGET_CPU_PERCENT = 25.0  # the issues' budget for 2,000 and for 10,000 idle connections
CONNECTIONS_PER_CLIENT_PROCESS = 2500  # the default P: one process's share of heartbeats
IDLE_TIMEOUT_HEARTBEATS = 10  # idle timeout as a multiple of the heartbeat: the default ratio
CONNECT_CONCURRENCY = 64  # handshakes in flight at once while connecting, over all clients
CONNECT_ATTEMPTS = 3  # a handshake the loaded server did not answer in time is tried again
HANDSHAKE_TIMEOUT_S = 30.0  # not the default 10 s: thousands of handshakes queue on a busy box
STARTUP_LIMIT_S = 120.0  # give up if the processes are not ready by then


@dataclass(frozen=True, slots=True)
class Sample:
    """What one role measured of itself over the window."""

    cpu_s: float
    wall_s: float
    connections: int
    datagrams_received: int
    datagrams_sent: int
    timer_wakeups: int
    read_wakeups: int
    send_errors: int
    full_batches: int = 0
    """Server: read wake-ups that left datagrams queued (its socket was backlogged)."""
    hellos_deferred: int = 0
    """Server: new clients' HELLOs it left unanswered while backlogged (all along, not just
    in the window: connecting is when they happen)."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _config(heartbeat: float) -> ConnectionConfig:
    return ConnectionConfig(
        heartbeat_interval=heartbeat, idle_timeout=heartbeat * IDLE_TIMEOUT_HEARTBEATS
    )


async def _command() -> str:
    """The next line the director writes to our stdin."""
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


def _use_uvloop() -> None:
    import uvloop

    uvloop.install()


# ------------------------------------------------------------------ server role


async def _server(args: argparse.Namespace) -> None:
    limit = args.connections + 64
    config = ListenerConfig(
        connection=_config(args.heartbeat),
        max_connections=limit,
        max_connections_per_address=limit,  # every client is on 127.0.0.1
    )
    server = await serve(HOST, 0, config=config)
    print(f"port {server.address[1]}", flush=True)
    readers: set[asyncio.Task[None]] = set()

    async def hold(connection: ReliableConnection) -> None:
        try:
            async for _ in connection:
                pass
        except TransportError:
            pass

    async def accept_all() -> None:
        async for connection in server:
            task = asyncio.create_task(hold(connection))
            readers.add(task)
            task.add_done_callback(readers.discard)

    acceptor = asyncio.create_task(accept_all())
    await _command()  # "start"
    before, cpu, wall = server.stats().socket, _cpu_s(), time.perf_counter()
    await _command()  # "stop"
    cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
    after = server.stats().socket
    sample = Sample(
        cpu,
        wall,
        len(server.connections),
        after.datagrams_received - before.datagrams_received,
        after.datagrams_sent - before.datagrams_sent,
        after.timer_wakeups - before.timer_wakeups,
        after.read_wakeups - before.read_wakeups,
        after.send_errors - before.send_errors,
        after.full_batches - before.full_batches,
        server.stats().hellos_deferred,
    )
    print(json.dumps(asdict(sample)), flush=True)
    await _command()  # "exit"
    await server.close(timeout=0.0)
    await acceptor
    for task in list(readers):
        await task


# ----------------------------------------------------------------- client role


async def _clients(args: argparse.Namespace) -> None:
    """Connections ``args.first``, ``args.first + P``, ... of N: this process's share."""
    config = replace(_config(args.heartbeat), handshake_timeout=HANDSHAKE_TIMEOUT_S)
    spacing = args.heartbeat / args.connections  # spread the heartbeats' phases evenly
    gate = asyncio.Semaphore(max(1, CONNECT_CONCURRENCY // args.client_processes))
    start = asyncio.get_running_loop().time()

    async def open_one(index: int) -> ReliableConnection:
        async with gate:
            await asyncio.sleep(
                max(0.0, start + index * spacing - asyncio.get_running_loop().time())
            )
            for _ in range(CONNECT_ATTEMPTS - 1):
                with contextlib.suppress(HandshakeTimeoutError):
                    return await connect(HOST, args.port, config=config)
            return await connect(HOST, args.port, config=config)

    mine = range(args.first, args.connections, args.client_processes)
    connections = await asyncio.gather(*(open_one(i) for i in mine))
    print(f"connected {len(connections)}", flush=True)
    await _command()  # "start"
    cpu, wall = _cpu_s(), time.perf_counter()
    sent = sum(c.socket_stats().datagrams_sent for c in connections)
    received = sum(c.socket_stats().datagrams_received for c in connections)
    await _command()  # "stop"
    cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
    sample = Sample(
        cpu,
        wall,
        sum(c.termination is None for c in connections),
        sum(c.socket_stats().datagrams_received for c in connections) - received,
        sum(c.socket_stats().datagrams_sent for c in connections) - sent,
        sum(c.socket_stats().timer_wakeups for c in connections),
        sum(c.socket_stats().read_wakeups for c in connections),
        sum(c.socket_stats().send_errors for c in connections),
    )
    print(json.dumps(asdict(sample)), flush=True)
    await _command()  # "exit"
    for connection in connections:
        connection.abort("benchmark over")


# ---------------------------------------------------------------------- director


class _Role:
    """A child process running one role, spoken to line by line."""

    def __init__(self, args: argparse.Namespace, role: str, *extra: str) -> None:
        command = [sys.executable, __file__, "--role", role, "--heartbeat", str(args.heartbeat)]
        command += ["--connections", str(args.connections), *extra]
        if args.uvloop:
            command.append("--uvloop")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a benchmark process died (exit code {self.process.wait()})")
        return line.strip()

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        self.tell("exit")
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _direct(args: argparse.Namespace) -> int:
    if args.client_processes is None:
        args.client_processes = -(-args.connections // CONNECTIONS_PER_CLIENT_PROCESS)
    server = _Role(args, "server")
    port = server.read().split()[1]
    started = time.perf_counter()
    share = ["--port", port, "--client-processes", str(args.client_processes)]
    clients = [
        _Role(args, "clients", *share, "--first", str(first))
        for first in range(args.client_processes)
    ]
    try:
        for role in clients:
            print(role.read(), f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        time.sleep(args.warmup)
        for role in (server, *clients):
            role.tell("start")
        time.sleep(args.window)
        for role in (server, *clients):
            role.tell("stop")
        measured = Sample(**json.loads(server.read()))
        client_side = [Sample(**json.loads(role.read())) for role in clients]
    finally:
        for role in clients:
            role.finish()
        server.finish()
    _report(args, measured, client_side)
    return 0


def _report(args: argparse.Namespace, server: Sample, clients: list[Sample]) -> None:
    percent = 100.0 * server.cpu_s / server.wall_s
    per_s = 1.0 / server.wall_s
    rows: list[tuple[str, str]] = [
        ("connections (server live)", f"{server.connections}"),
        ("heartbeat interval", f"{args.heartbeat:g} s"),
        ("measured window", f"{server.wall_s:.1f} s"),
        ("event loop", "uvloop" if args.uvloop else "asyncio"),
        ("server CPU", f"{percent:.1f} % of one core (target < {TARGET_CPU_PERCENT:g} %)"),
        (
            "server datagrams in / out",
            f"{server.datagrams_received * per_s:.0f} / {server.datagrams_sent * per_s:.0f} per s",
        ),
        (
            "server wake-ups read / timer",
            f"{server.read_wakeups * per_s:.0f} / {server.timer_wakeups * per_s:.0f} per s",
        ),
        (
            "server CPU per datagram in+out",
            f"{1e6 * server.cpu_s / max(1, server.datagrams_received + server.datagrams_sent):.1f} us",
        ),
        ("server send errors", f"{server.send_errors}"),
        ("server full read batches (backlogged)", f"{server.full_batches}"),
        ("server HELLOs deferred while connecting", f"{server.hellos_deferred}"),
        (
            "client processes' CPU (not counted)",
            f"{len(clients)} using "
            + ", ".join(f"{100.0 * c.cpu_s / c.wall_s:.0f}" for c in clients)
            + " % of a core",
        ),
        ("verdict", "PASS" if percent < TARGET_CPU_PERCENT else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        result: dict[str, Any] = {
            "connections": args.connections,
            "heartbeat_s": args.heartbeat,
            "uvloop": args.uvloop,
            "server_cpu_percent": percent,
            "target_cpu_percent": TARGET_CPU_PERCENT,
            "server": asdict(server),
            "clients": [asdict(sample) for sample in clients],
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument(
        "--client-processes",
        type=int,
        metavar="P",
        help=f"default: one per {CONNECTIONS_PER_CLIENT_PROCESS:,} connections",
    )
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after connecting")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument("--uvloop", action="store_true", help="run both sides on uvloop")
    parser.add_argument("--role", choices=("server", "clients"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is None:
        return _direct(args)
    if args.uvloop:
        _use_uvloop()
    asyncio.run(_server(args) if args.role == "server" else _clients(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
