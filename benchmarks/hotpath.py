"""The protocol core's work per message, with no sockets and no event loop: what the hot path
costs in Python (or in the compiled core), apart from system calls and scheduling.

Usage: python benchmarks/hotpath.py [--mode bulk|pingpong] [--count N] [--size B] [--insecure]
                                    [--instructions]

bulk: a client Connection sends N messages of B bytes (default 1 KiB) to a Listener's
connection in this process, every datagram handed over at once, a virtual clock moving 1 ms per
round; pingpong: N round trips of B bytes (default 64), the server echoing each message. Prints
process CPU time per message (noisy on a shared machine). ``--instructions`` runs the same
transfer under ``valgrind --tool=callgrind`` twice, with N and 2N messages, and prints the
difference over N: instructions per message, handshake and imports excluded, the same on a
loaded machine as on a quiet one (valgrind must be installed; a run takes a minute or two).
Both runs hash strings with the same seed (``PYTHONHASHSEED``, 0 unless set): string hashes
steer dictionary probing, and with a random seed per run the same code read 1,133,506
instructions per ping-pong message where seed 0 reads 1,262,242.
The rudp_chat measured is the one Python imports: run it with PYTHONPATH on a compiled tree.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time

from rudp_chat.build import core_is_compiled
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Connection
from rudp_chat.core.events import MessageReceived
from rudp_chat.core.listener import Listener

CLIENT = ("10.0.0.2", 50000)
SERVER = ("10.0.0.1", 4433)
ROUND_S = 0.001  # virtual time per round: lets pacing release the next burst
TOTAL_LINE = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


class Pair:
    """A client and the Listener it connects to, in this process, on a virtual clock."""

    def __init__(self, config: ConnectionConfig) -> None:
        draw = random.Random(1).randbytes
        self.now = 0.0
        self.listener = Listener(draw, ListenerConfig(connection=config))
        self.client = Connection.connect(SERVER, self.now, draw, config)
        self.server: Connection | None = None

    def round(self) -> list[bytes]:
        """Hand over every datagram both ways once, advance the clock; the server's messages."""
        now = self.now
        for data, _ in self.client.datagrams_to_send(now):
            self.listener.receive_datagram(data, CLIENT, now)
        for data, _ in self.listener.datagrams_to_send(now):
            self.client.receive_datagram(data, SERVER, now)
        self.server = self.server or self.listener.accept()
        received: list[bytes] = []
        while self.server is not None and (event := self.server.next_event()) is not None:
            if type(event) is MessageReceived:
                received.append(event.data)
        self.now += ROUND_S
        for node in (self.client, self.listener):
            deadline = node.get_timer()
            if deadline is not None and deadline <= self.now:
                node.handle_timer(self.now)
        return received


def bulk(pair: Pair, count: int, size: int) -> None:
    """Send ``count`` messages of ``size`` bytes as fast as the send buffer takes them."""
    message = bytes(size)
    sent = received = 0
    while received < count:
        while sent < count and pair.client.send_capacity >= size:
            pair.client.send(message)
            sent += 1
        received += len(pair.round())
        while pair.client.next_event() is not None:
            pass


def pingpong(pair: Pair, count: int, size: int) -> None:
    """``count`` round trips: the client sends, the server echoes, the client reads the echo."""
    message = bytes(size)
    for _ in range(count):
        pair.client.send(message)
        echoed = False
        while not echoed:
            for data in pair.round():
                assert pair.server is not None
                pair.server.send(data)
            while (event := pair.client.next_event()) is not None:
                echoed = echoed or type(event) is MessageReceived


def run(mode: str, count: int, size: int, insecure: bool) -> float:
    """Connect, warm up, then process seconds for ``count`` messages of ``mode``."""
    pair = Pair(ConnectionConfig(insecure=insecure))
    work = bulk if mode == "bulk" else pingpong
    work(pair, 100, size)  # the handshake and the first rounds, outside the measurement
    started = time.process_time()
    work(pair, count, size)
    return time.process_time() - started


def instructions(args: argparse.Namespace, count: int) -> int:
    """Instructions of a whole run of ``count`` messages, counted by callgrind."""
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, __file__, "--mode", args.mode, "--count", str(count),
            "--size", str(args.size), *(["--insecure"] if args.insecure else []),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
        subprocess.run(command, check=True, capture_output=True, env=env)
        return callgrind_total(out)


def callgrind_total(path: str) -> int:
    """The instructions a callgrind output file counts in all."""
    with open(path, encoding="utf-8") as profile:
        found = TOTAL_LINE.search(profile.read())
    if found is None:
        raise RuntimeError(f"no total in {path}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("bulk", "pingpong"), default="bulk")
    parser.add_argument("--count", type=int, help="messages (20,000 bulk, 5,000 pingpong)")
    parser.add_argument("--size", type=int, help="bytes (1024 bulk, 64 pingpong)")
    parser.add_argument("--insecure", action="store_true", help="CRC instead of encryption")
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    args = parser.parse_args(argv)
    args.size = args.size or (1024 if args.mode == "bulk" else 64)
    count = args.count or (20_000 if args.mode == "bulk" else 5_000)
    build = "compiled" if core_is_compiled() else "pure"
    label = f"{args.mode} {args.size} B, {build}{', insecure' if args.insecure else ''}"
    if args.instructions:
        small, large = instructions(args, count), instructions(args, 2 * count)
        print(f"{label}: {(large - small) / count:,.0f} instructions per message")
    else:
        seconds = run(args.mode, count, args.size, args.insecure)
        print(f"{label}: {seconds * 1e6 / count:.2f} us of CPU per message ({count} messages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
