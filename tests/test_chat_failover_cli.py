"""Failover through the real command line, without a cluster: two addresses, one chat.

The second server is the first one's history started on another port once the first is gone
(a standby on shared storage), so the session, its acknowledged message numbers and the room's
numbering carry over as they do between the nodes of a cluster.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

from test_chat_cli import CHAT_LINE, FAST_FLAGS, Chat, processes, server
from test_security_cli import FINGERPRINT


def reserved_port(tmp_path: Path) -> int:
    """A port a server ran on and left: free now, and ours to start one on later."""
    standby, port = server(tmp_path / "standby.sqlite3")
    standby.kill()
    return port


def failover_client(name: str, ports: Sequence[int], *flags: str) -> Chat:
    """A plain client of the servers on ``ports``, in that order."""
    servers = ",".join(f"127.0.0.1:{port}" for port in ports)
    return Chat(["client", "--plain", "--name", name, "--server", servers, *FAST_FLAGS, *flags])


def test_a_dead_node_is_skipped_at_start_and_left_after_kill_9(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    standby_port = reserved_port(tmp_path)
    with processes() as started:
        first, port = server(history)
        alice = failover_client("alice", [standby_port, port])  # the standby is not up yet
        started += [first, alice]
        alice.wait_line(r"^\*\*\* alice joined$")
        alice.type(*(f"alice line {i}" for i in range(5)))
        alice.wait_line(r"^alice: alice line 4$")
        first.process.send_signal(signal.SIGKILL)
        alice.wait_line(r"^\*\*\* connection lost \(timed out\); reconnecting$")
        alice.type("alice line 5")  # typed while no server is up: kept, sent to the next one

        second, _ = server(history, port=standby_port)
        started.append(second)
        alice.wait_line(rf"^\*\*\* reconnected to 127\.0\.0\.1:{standby_port}$")
        alice.wait_line(r"^alice: alice line 5$")
        bob = failover_client("bob", [standby_port, port])
        started.append(bob)
        bob.wait_line(r"^\*\*\* end of history$")
        shown = [line for line in bob.lines if CHAT_LINE.match(line)]
        assert shown == [f"alice: alice line {i}" for i in range(6)]
        assert [line for line in alice.lines if CHAT_LINE.match(line)] == shown


def test_a_rolling_restart_moves_the_client_instead_of_ending_it(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    standby_port = reserved_port(tmp_path)
    with processes() as started:
        first, port = server(history)
        alice = failover_client("alice", [port, standby_port])
        started += [first, alice]
        alice.wait_line(r"^\*\*\* alice joined$")
        alice.type("before")
        alice.wait_line(r"^alice: before$")
        first.process.send_signal(signal.SIGTERM)
        alice.wait_line(r"^\*\*\* the server is shutting down$")
        alice.wait_line(r"^\*\*\* connection lost \(the server shut down\); reconnecting$")
        assert first.exit_code() == 0
        assert alice.process.poll() is None  # still running: the other node will take it

        second, _ = server(history, port=standby_port)
        started.append(second)
        alice.wait_line(rf"^\*\*\* reconnected to 127\.0\.0\.1:{standby_port}$")
        alice.type("after")
        alice.wait_line(r"^alice: after$")
        said = [line for line in alice.lines if line.startswith("alice: ")]
        assert said == ["alice: before", "alice: after"]  # none shown twice after the move
        bye = alice.lines.index("*** the server is shutting down")
        assert alice.lines[bye + 1] == "*** connection lost (the server shut down); reconnecting"
        alice.type("exit")
        assert alice.exit_code() == 0


def test_when_no_server_answers_each_is_named() -> None:
    ports = []
    for _ in range(2):  # ports nothing listens on: bound a moment ago, now closed
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    with processes() as started:
        nobody = failover_client("alice", ports)
        started.append(nobody)
        assert nobody.exit_code() == 1
        named = "; ".join(f"127.0.0.1:{port}: nothing listens there" for port in ports)
        assert nobody.errors == [f"error: cannot connect to {named}"]


def test_one_cluster_key_is_checked_on_every_node_and_another_key_stops_the_client(
    tmp_path: Path,
) -> None:
    history, cluster_key = tmp_path / "history.sqlite3", str(tmp_path / "cluster_key")
    standby_port = reserved_port(tmp_path)
    with processes() as started:
        first, port = server(history, "--key-file", cluster_key)
        started.append(first)
        key = first.wait_line(f"^Server key: {FINGERPRINT} ")[1]
        alice = failover_client("alice", [port, standby_port], "--server-key", key)
        started.append(alice)
        alice.wait_line(rf"^\*\*\* server key {re.escape(key)} pinned")
        alice.wait_line(r"^\*\*\* alice joined$")
        first.process.send_signal(signal.SIGKILL)

        second, _ = server(history, "--key-file", cluster_key, port=standby_port)  # the same key
        started.append(second)
        alice.wait_line(rf"^\*\*\* reconnected to 127\.0\.0\.1:{standby_port}$")
        second.process.send_signal(signal.SIGKILL)

        other_key = str(tmp_path / "other_key")  # a node with a key of its own: not trusted
        third, _ = server(history, "--key-file", other_key, port=port)
        started.append(third)
        stranger = third.wait_line(f"^Server key: {FINGERPRINT} ")[1]
        assert alice.exit_code() == 1
        (error,) = alice.errors
        assert error.startswith(
            f"error: the server at 127.0.0.1:{port} presented key {stranger}, but {key} is "
            "pinned for it (--server-key)"
        )
