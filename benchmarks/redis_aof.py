"""What a cluster's acknowledgement costs and keeps under each Redis AOF setting: commits of one
line each (the cluster's commit script, one at a time, as a node under light load sends them),
then ``kill -9`` of redis-server, a restart on the same files, and a count of the lines kept.

    python benchmarks/redis_aof.py [--lines 5000] [--fsync everysec always]

Needs ``redis-server`` on the PATH and the ``cluster`` extra. A process crash only: what a
power loss keeps rests on fsync and the disk (README, Durability in a cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import subprocess
import tempfile
import time
from typing import Final

from redis.asyncio import Redis

from rudp_chat.chat.protocol import Chat
from rudp_chat.chat.redisschema import COMMIT_SCRIPT, Keys, commit_arguments
from rudp_chat.chat.store import Journal, Proposal

START_TIMEOUT_S: Final = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(port: int, directory: str, fsync: str) -> subprocess.Popen[bytes]:
    """redis-server with AOF at ``fsync``, once it answers PING (its AOF read back)."""
    flags = ["--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", ""]
    flags += ["--appendonly", "yes", "--appendfsync", fsync]
    process = subprocess.Popen(["redis-server", *flags], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            pass
        time.sleep(0.02)
    process.kill()
    raise SystemExit(f"redis-server did not answer within {START_TIMEOUT_S} s")


async def _measure(fsync: str, lines: int) -> None:
    directory, port = tempfile.mkdtemp(prefix="redis-aof-"), _free_port()
    server = _start(port, directory, fsync)
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    script, keys = redis.register_script(COMMIT_SCRIPT), Keys()
    started = time.perf_counter()
    for number in range(1, lines + 1):
        session = number.to_bytes(16, "big")
        line = Chat(0, time.time(), "bench", f"line {number}", room="#bench")
        journal = Journal((), ((session, 1),), proposed=(Proposal(session, 1, line),))
        names, args = commit_arguments(keys, journal, lines)
        await script(keys=names, args=args)  # acknowledged: the script answered
    took = time.perf_counter() - started
    await redis.aclose()
    server.send_signal(signal.SIGKILL)
    server.wait()
    server = _start(port, directory, fsync)
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    kept = await redis.xlen(keys.room("#bench"))
    await redis.aclose()
    server.terminate()
    server.wait()
    print(
        f"appendfsync {fsync}: {lines} lines acknowledged one at a time in {took:.2f} s "
        f"({took / lines * 1000:.3f} ms each); after kill -9 and a restart {kept} of {lines} kept"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--fsync", nargs="+", default=["everysec", "always"])
    args = parser.parse_args()
    for fsync in args.fsync:
        asyncio.run(_measure(fsync, args.lines))


if __name__ == "__main__":
    main()
