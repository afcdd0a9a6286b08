"""What tracing costs the core: CPU time per datagram of a bulk transfer, with tracing off, to a
sink that drops every event, and to qlog files.

Usage: python benchmarks/trace_cost.py [--megabytes MB] [--rounds N] [--insecure]

One client Connection sends MB megabytes (10^6 B, 8 KiB messages) to a Listener's connection
in this process, no sockets and no simulator: every datagram is handed over at once and a
virtual clock moves 1 ms per round, so the CPU time is the core's (and the sink's) alone. The
figure is process time over datagrams (both directions), best of N rounds. Run it with
PYTHONPATH on another tree for the cost of the hooks with tracing off (a tree without tracing
runs the ``off`` mode only).
"""

from __future__ import annotations

import argparse
import inspect
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Connection
from rudp_chat.core.events import MessageReceived
from rudp_chat.core.listener import Listener
from rudp_chat.core.state import Role

CLIENT = ("10.0.0.2", 50000)
SERVER = ("10.0.0.1", 4433)
MESSAGE = bytes(8 * 1024)
ROUND_S = 0.001  # virtual time per round: lets pacing release the next burst


class NullSink:
    """Takes every event and keeps nothing: the cost of building the events alone."""

    def event(self, now: float, name: str, data: dict[str, Any]) -> None:
        pass


Sinks = tuple[Callable[[], Any], Callable[[], Any]] | None
"""The client's and the server's trace sink factories; None: tracing off."""


def transfer(megabytes: float, config: ConnectionConfig, sinks: Sinks) -> tuple[float, int]:
    """Process seconds and datagrams (both ways) to deliver ``megabytes``."""
    draw = random.Random(1).randbytes
    now = 0.0
    if sinks is None:  # the keywords a tree without tracing lacks
        listener = Listener(draw, ListenerConfig(connection=config))
        client = Connection.connect(SERVER, now, draw, config)
    else:
        listener = Listener(draw, ListenerConfig(connection=config), trace=sinks[1])
        client = Connection.connect(SERVER, now, draw, config, trace=sinks[0]())
    goal = int(megabytes * 1e6)
    received = datagrams = 0
    server: Connection | None = None
    started = time.process_time()
    while received < goal:
        while client.send_capacity >= len(MESSAGE):
            client.send(MESSAGE)
        for data, _ in client.datagrams_to_send(now):
            datagrams += 1
            listener.receive_datagram(data, CLIENT, now)
        for data, _ in listener.datagrams_to_send(now):
            datagrams += 1
            client.receive_datagram(data, SERVER, now)
        server = server or listener.accept()
        while server is not None and (event := server.next_event()) is not None:
            if type(event) is MessageReceived:
                received += len(event.data)
        while client.next_event() is not None:
            pass
        now += ROUND_S
        for node in (client, listener):
            deadline = node.get_timer()
            if deadline is not None and deadline <= now:
                node.handle_timer(now)
    return time.process_time() - started, datagrams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--insecure", action="store_true", help="CRC instead of encryption")
    args = parser.parse_args(argv)
    config = ConnectionConfig(insecure=args.insecure)
    supported = "trace" in inspect.signature(Connection.connect).parameters
    with tempfile.TemporaryDirectory() as directory:
        modes: dict[str, Sinks] = {"off": None}
        if supported:
            from rudp_chat.aio.qlog import QlogDirectory

            ends = (QlogDirectory(directory, Role.CLIENT), QlogDirectory(directory, Role.SERVER))
            modes["null sink"] = (NullSink, NullSink)
            modes["qlog files"] = (ends[0].open, ends[1].open)
        for mode, sinks in modes.items():
            best = min(transfer(args.megabytes, config, sinks) for _ in range(args.rounds))
            seconds, datagrams = best
            print(
                f"{mode:>10}: {seconds * 1e6 / datagrams:6.2f} us per datagram "
                f"({datagrams} datagrams, {seconds:.2f} s CPU)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
