"""Instructions per ping-pong round trip of each peer through the real asyncio shell: deterministic
where CPU time on a shared machine is not.

Usage: python benchmarks/pingpong_instructions.py [--loop asyncio|uvloop] [--floor] [--count N]

A server (echo) and a client (ping, 64 B) on loopback in two processes, as in throughput.py's
pingpong case; one of them runs under ``valgrind --tool=callgrind``, twice, with N and 2N round
trips, and the difference over N is that peer's instructions per round trip (startup, imports
and the handshake cancel out). Then the same for the other peer. The protocol runs with the
cyclic GC off and timers stretched (``min_rto`` 1 s, ``max_ack_delay`` 0.5 s) so that a peer
slowed down 50 times by valgrind takes the same path as a real ping-pong, where the echo always
beats them; without that the count varies by ~10 % between runs. ``--floor`` measures plain
datagrams through ``create_datagram_endpoint`` and a task instead (throughput.py's
asyncio-udp). Needs valgrind; a run takes a few minutes.
The rudp_chat measured is the one Python imports (``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from typing import Any

from hotpath import callgrind_total
from peers.asyncio_udp import Inbox

from rudp_chat.aio import connect, serve
from rudp_chat.core.config import ConnectionConfig, ListenerConfig

HOST = "127.0.0.1"
SIZE = 64  # bytes per ping, as throughput.py's pingpong
WARMUP = 50  # round trips before the counted ones: lazy imports, first key use
SLOW = ConnectionConfig(min_rto=1.0, max_ack_delay=0.5, initial_rtt=1.0)
"""Timers that never fire in a real ping-pong stay quiet at valgrind's pace too."""


async def _rudp_server(count: int) -> None:
    server = await serve(HOST, 0, config=ListenerConfig(connection=SLOW))
    print(server.address[1], flush=True)
    connection = await server.accept()
    for _ in range(count + WARMUP):
        await connection.send(await connection.recv())
    await asyncio.sleep(0.05)  # the last echo leaves before the socket closes
    connection.abort()
    await server.close(0.1)


async def _rudp_client(count: int, port: int) -> None:
    connection = await connect(HOST, port, config=SLOW)
    payload = bytes(SIZE)
    for _ in range(count + WARMUP):
        await connection.send(payload)
        await connection.recv()
    connection.abort()


async def _floor_server(count: int) -> None:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, local_addr=(HOST, 0))
    print(transport.get_extra_info("sockname")[1], flush=True)
    for _ in range(count + WARMUP):
        data, peer = await inbox.get()
        transport.sendto(data, peer)
    transport.close()


async def _floor_client(count: int, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, remote_addr=(HOST, port))
    payload = bytes(SIZE)
    for _ in range(count + WARMUP):
        transport.sendto(payload)
        await inbox.get()
    transport.close()


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
        return
    asyncio.run(main)


def _peer(role: str, args: argparse.Namespace) -> None:
    """One peer, in this process (a child of :func:`_pair`)."""
    gc.disable()
    if role == "server":
        _run((_floor_server if args.floor else _rudp_server)(args.count), args.loop)
    else:
        client = _floor_client if args.floor else _rudp_client
        _run(client(args.count, args.port), args.loop)


def _pair(args: argparse.Namespace, count: int, counted: str) -> int:
    """Run both peers with ``count`` round trips, ``counted`` under callgrind; its total."""
    base = [sys.executable, __file__, "--loop", args.loop, "--count", str(count)]
    base += ["--floor"] if args.floor else []
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        wrap = ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}"]
        server_cmd = [*(wrap if counted == "server" else []), *base, "--role", "server"]
        with subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True) as server:
            assert server.stdout is not None
            port = server.stdout.readline().strip()
            client_cmd = [*(wrap if counted == "client" else []), *base, "--role", "client"]
            subprocess.run([*client_cmd, "--port", port], check=True, capture_output=True)
            server.wait(120)
        return callgrind_total(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--floor", action="store_true", help="plain asyncio datagrams instead")
    parser.add_argument("--count", type=int, default=300, help="round trips (then twice that)")
    parser.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        _peer(args.role, args)
        return 0
    label = f"{'asyncio-udp floor' if args.floor else 'rudp'} on {args.loop}"
    for side in ("client", "server"):
        small = _pair(args, args.count, side)
        large = _pair(args, 2 * args.count, side)
        per_trip = (large - small) / args.count
        print(f"{label}, {side}: {per_trip:,.0f} instructions per round trip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
