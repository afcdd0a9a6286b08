"""A cluster as deployed: ``rudp-chat server --redis`` processes, plain clients, a real
``redis-server``; a node killed with ``kill -9``."""

from __future__ import annotations

import signal
from pathlib import Path

from redisserver import RedisServer
from test_chat_cli import client, processes, server

TTL = ("--name-ttl", "1.5")  # a dead node's users time out within 1.5 s (15 s by default)


def test_a_dead_node_s_users_time_out_on_the_others(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with processes() as started:
        nodes = {}
        for name in "ab":
            flags = ("--redis", redis_server.url, "--node", name, *TTL)
            nodes[name] = server(tmp_path / f"{name}.sqlite3", *flags)
            started.append(nodes[name][0])
        alice = client("alice", nodes["a"][1])
        started.append(alice)
        alice.wait_line(r"^\*\*\* alice joined$")
        bob = client("bob", nodes["b"][1])
        started.append(bob)
        alice.wait_line(r"^\*\*\* bob joined$")  # announced by node a, from b's heartbeat
        bob.type("hello from b")
        alice.wait_line(r"^bob: hello from b$")
        alice.type("hello from a")
        bob.wait_line(r"^alice: hello from a$")
        node_b = nodes["b"][0]
        node_b.process.send_signal(signal.SIGKILL)
        assert node_b.exit_code() == -signal.SIGKILL
        alice.wait_line(r"^\*\*\* bob left \(timed out\)$")
