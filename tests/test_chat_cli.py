"""End to end through the real command line: servers, proxies and clients as subprocesses.

Nothing here asserts on timing: every wait is for an output line, bounded only to turn a hang
into a failure.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from rudp_chat.aio import connect
from rudp_chat.aio.socketpath import SOCKET_PATH_VARIABLE, SocketPath
from rudp_chat.cli import main

pytestmark = pytest.mark.usefixtures("socket_path")  # both socket paths, see conftest
SERVER_READY = r"^Server is listening on 127\.0\.0\.1:(\d+) \(UDP socket via (\w+)\)$"

# Short keep-alives and timeouts keep the tests fast; 4 s of silence is still far beyond any
# loss burst at 20 % loss.
FAST_FLAGS = ("--heartbeat", "0.2", "--idle-timeout", "4")
WAIT_S = 60.0  # bound on any one wait; a passing run needs a small fraction of it
CHAT_LINE = re.compile(r"^(\w+): (\w+) line (\d+)$")


class Chat:
    """One ``python -m rudp_chat`` subprocess; stdout and stderr lines collected by threads."""

    def __init__(self, args: Sequence[str], *, stdin: int = subprocess.PIPE) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rudp_chat", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=_collect, args=(self.process.stdout, self.lines)),
            threading.Thread(target=_collect, args=(self.process.stderr, self.errors)),
        ]
        for reader in self._readers:
            reader.start()

    def wait_for(self, condition: Callable[[list[str]], bool], what: str) -> None:
        """Wait until ``condition(stdout lines)`` holds; fail with the output otherwise."""
        deadline = time.monotonic() + WAIT_S
        while not condition(self.lines):
            ended = self.process.poll() is not None
            if ended:
                for reader in self._readers:
                    reader.join(timeout=WAIT_S)
            if (ended and not condition(self.lines)) or time.monotonic() > deadline:
                raise AssertionError(f"no {what}: {self.lines} {self.errors}")
            time.sleep(0.02)

    def wait_line(self, pattern: str) -> re.Match[str]:
        """Wait for a stdout line matching ``pattern``; returns the first match."""
        regex = re.compile(pattern)
        self.wait_for(lambda lines: any(regex.search(line) for line in lines), repr(pattern))
        return next(m for line in self.lines if (m := regex.search(line)))

    def type(self, *lines: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write("".join(f"{line}\n" for line in lines))
        stdin.flush()

    def exit_code(self) -> int:
        code = self.process.wait(timeout=WAIT_S)
        for reader in self._readers:
            reader.join(timeout=WAIT_S)
        return code

    def kill(self) -> None:
        """End the process if it still runs, and release its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.exit_code()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _collect(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


@contextmanager
def processes() -> Iterator[list[Chat]]:
    """Everything started into the yielded list is killed at the end, pass or fail."""
    started: list[Chat] = []
    try:
        yield started
    finally:
        for chat in started:
            chat.kill()


def server(history: Path | None, *flags: str, port: int = 0) -> tuple[Chat, int]:
    """A server (``history`` None: ``--no-history``) and the port it listens on."""
    args = ["server", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--no-history"] if history is None else ["--history", str(history)]
    chat = Chat([*args, *FAST_FLAGS, *flags], stdin=subprocess.DEVNULL)
    ready = chat.wait_line(SERVER_READY)
    # the start line names the path: the forced one, else add_reader (the stock loop has it)
    assert ready[2] == os.environ.get(SOCKET_PATH_VARIABLE, SocketPath.READER)
    return chat, int(ready[1])


def joined(tmp_path: Path, name: str, started: list[Chat]) -> tuple[Chat, Chat, int]:
    """A server and a plain client ``name`` that has joined it (both in ``started``)."""
    chat_server, port = server(tmp_path / "history.sqlite3")
    started.append(chat_server)
    chat_client = client(name, port)
    started.append(chat_client)
    chat_client.wait_line(f"^\\*\\*\\* {name} joined$")
    return chat_server, chat_client, port


def proxy(upstream: int, loss: str, seed: int) -> tuple[Chat, int]:
    args = ["proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}"]
    args += ["--loss", loss, "--delay", "5", "--jitter", "3", "--seed", str(seed)]
    chat = Chat(args, stdin=subprocess.DEVNULL)
    return chat, int(chat.wait_line(r"^proxy listening on 127\.0\.0\.1:(\d+)").group(1))


def client(name: str, port: int, *flags: str) -> Chat:
    return Chat(["client", "--plain", "--name", name, "--port", str(port), *FAST_FLAGS, *flags])


def test_three_clients_through_twenty_percent_loss(tmp_path: Path) -> None:
    with processes() as started:
        chat_server, server_port = server(tmp_path / "history.sqlite3")
        started.append(chat_server)
        lossy, port = proxy(server_port, "0.2", seed=5)
        started.append(lossy)
        names = ["ann", "ben", "cat"]
        clients = {}
        for name in names:
            clients[name] = client(name, port)
            started.append(clients[name])
            clients[name].wait_line(f"^\\*\\*\\* {name} joined$")
        clients["ann"].wait_line(r"^\*\*\* cat joined$")

        twin = client("BEN", port, "--client-key", str(tmp_path / "twin_key"))  # not ben's key
        started.append(twin)
        assert twin.exit_code() == 2
        assert any("the name BEN belongs to another client key" in line for line in twin.errors)

        for name in names:
            clients[name].type(*(f"{name} line {i}" for i in range(50)))
        for chat in clients.values():
            chat.wait_for(lambda lines: sum(map(bool, map(CHAT_LINE.match, lines))) >= 150, "150")
        orders = [[line for line in c.lines if CHAT_LINE.match(line)] for c in clients.values()]
        assert orders[0] == orders[1] == orders[2]
        assert sorted(orders[0]) == sorted(f"{n}: {n} line {i}" for n in names for i in range(50))
        for name in names:  # each sender's lines in the order it typed them
            mine = [
                int(m[3]) for line in orders[0] if (m := CHAT_LINE.match(line)) and m[1] == name
            ]
            assert mine == list(range(50))

        clients["cat"].type("exit")
        assert clients["cat"].exit_code() == 0
        for name in ("ann", "ben"):
            clients[name].wait_line(r"^\*\*\* cat left \(left\)$")
        chat_server.process.send_signal(signal.SIGTERM)
        for name in ("ann", "ben"):
            clients[name].wait_line(r"^\*\*\* the server is shutting down$")
            assert clients[name].exit_code() == 0
        assert chat_server.exit_code() == 0


def test_acknowledged_messages_survive_kill_9_and_clients_reconnect(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    with processes() as started:
        first, port = server(history)
        started.append(first)
        alice = client("alice", port)
        started.append(alice)
        alice.type(*(f"alice line {i}" for i in range(5)))
        alice.wait_line(r"^alice: alice line 4$")  # shown only after the server committed it
        first.process.send_signal(signal.SIGKILL)
        assert first.exit_code() == -signal.SIGKILL

        alice.type("alice line 5")  # typed while the server is down: kept and sent later
        second, _ = server(history, port=port)
        started.append(second)
        alice.wait_line(r"^alice: alice line 5$")
        bob = client("bob", port)
        started.append(bob)
        bob.wait_line(r"^\*\*\* end of history$")
        shown = [line for line in bob.lines if CHAT_LINE.match(line)]
        assert shown == [f"alice: alice line {i}" for i in range(6)]
        assert "*** history: 6 earlier messages" in bob.lines  # its lane: maybe after "joined"
        assert [line for line in alice.lines if CHAT_LINE.match(line)] == shown


def test_a_silent_client_times_out(tmp_path: Path) -> None:
    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3", "--idle-timeout", "2")
        started.append(chat_server)
        sleeper = client("sleeper", port)
        started.append(sleeper)
        sleeper.wait_line(r"^\*\*\* sleeper joined$")
        watcher = client("watcher", port)
        started.append(watcher)
        watcher.wait_line(r"^\*\*\* watcher joined$")
        sleeper.process.send_signal(signal.SIGSTOP)  # alive, but silent
        try:
            watcher.wait_line(r"^\*\*\* sleeper left \(timed out\)$")
        finally:
            sleeper.process.send_signal(signal.SIGCONT)


def test_an_unreachable_server_is_a_clear_failure() -> None:
    with processes() as started:
        nobody = client("alice", 9, "--handshake-timeout", "2")  # discard port: nothing listens
        started.append(nobody)
        assert nobody.exit_code() == 1
        problems = ("nothing listens there", "no answer within 2 s")  # ICMP?
        assert nobody.errors in ([f"error: cannot connect to 127.0.0.1:9: {p}"] for p in problems)


def test_interactive_input_line_survives_incoming_messages(tmp_path: Path) -> None:
    with processes() as started:
        _, bob, port = joined(tmp_path, "bob", started)
        with on_a_terminal("alice", port) as (alice, screen):
            screen.wait_for("alice joined")
            screen.wait_for(f" alice @ 127.0.0.1:{port} | ")  # the bottom toolbar
            screen.type(b"/stats\r")
            screen.wait_for("*** open, rtt ")
            screen.wait_for(f"UDP via {os.environ[SOCKET_PATH_VARIABLE]}")  # forced: pytestmark
            bob.wait_line(r"^\*\*\* alice joined$")
            screen.type(b"hello wor")
            screen.wait_for("hello wor")
            bob.type("interrupting while alice types")
            screen.wait_for("interrupting while alice types")
            screen.type(b"ld, all in one piece\r")
            bob.wait_line(r"^alice: hello world, all in one piece$")
            screen.type(b"exit\r")
            assert alice.wait(timeout=WAIT_S) == 0


@contextmanager
def on_a_terminal(name: str, port: int) -> Iterator[tuple[subprocess.Popen[bytes], Screen]]:
    """An interactive client on a 24x120 pseudo-terminal, killed at the end if still running."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "rudp_chat", "client", "--name", name, "--port", str(port)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=dict(os.environ, TERM="xterm-256color"),
        start_new_session=True,
    )
    os.close(terminal)
    screen = Screen(master)
    try:
        yield process, screen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        screen.close()


class Screen:
    """A terminal on a pseudo-terminal: reads the output on a thread (a full pty would block the
    child), and answers cursor position requests as a terminal would."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.output = b""
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO once the child closed its side
                return
            if not chunk:
                return
            self.output += chunk
            for _ in range(chunk.count(b"\x1b[6n")):  # where is the cursor? (CPR): top left
                os.write(self.master, b"\x1b[1;1R")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while text.encode() not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} on the terminal: {self.output!r}")
            time.sleep(0.02)

    def close(self) -> None:
        os.close(self.master)
        self._reader.join(timeout=WAIT_S)


def test_demo_checks_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--pause", "0.1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "--- as carol saw it ---" in out
    assert "FAIL" not in out
    assert "ok   every user saw all 8 messages exactly once, in the same order" in out


# --- refusing bad input ---------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m rudp_chat ARGS`` to completion (for commands that end on their own)."""
    return subprocess.run(
        [sys.executable, "-m", "rudp_chat", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("server", "--port", "70000"), "argument --port: expected a port within 0..65535"),
        (("server", "--port", "-1"), "argument --port: expected a port within 0..65535"),
        (
            ("client", "--name", "a", "--port", "0"),
            "argument --port: expected a port within 1..65535",
        ),
        (("client", "--name", "a", "--port", "65536"), "argument --port: expected a port within"),
        (("server", "--history", "{tmp}/missing/h.sqlite3"), "argument --history: {tmp}/missing/h"),
        (("server", "--history", "{tmp}"), "argument --history: {tmp} is a directory"),
        (("server", "--history", "{tmp}/text"), "argument --history: cannot use {tmp}/text: file"),
        (
            ("client", "--name", "a", "--server-key", "SHA256:bogus"),
            "argument --server-key: expected",
        ),
        (("server", "--max-clients", "0"), "argument --max-clients: expected a number of users"),
        (("server", "--history-size", "-1"), "argument --history-size: expected a number"),
        (("server", "--rate", "0"), "argument --rate: expected finite messages per second > 0"),
        (("server", "--burst", "0"), "argument --burst: expected a number of messages >= 1"),
        (
            ("server", "--heartbeat", "5", "--idle-timeout", "2"),
            "--heartbeat (5 s) must be shorter",
        ),
        (("client", "--name", "a", "--handshake-timeout", "nan"), "argument --handshake-timeout"),
        (("client", "--name", "a", "--server", "127.0.0.1"), "argument --server: expected HOST:"),
        (("server", "--metrics", "9100"), "argument --metrics: expected HOST:PORT, got '9100'"),
        (
            ("client", "--name", "a", "--server", "127.0.0.1:1,127.0.0.1:0"),
            "argument --server: expected a port within 1..65535",
        ),
        (
            ("client", "--name", "a", "--server", "h:1", "--server", "h:2,h:1"),
            "argument --server: h:1 is given twice",
        ),
        (
            ("client", "--name", "a", "--server", "h:1", "--port", "2"),
            "argument --server: give either --server or --host and --port",
        ),
        (
            ("proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--report", "0"),
            "argument --report: expected finite seconds > 0",
        ),
    ],
)
def test_a_bad_flag_exits_2_with_one_line_naming_it(
    tmp_path: Path, args: tuple[str, ...], error: str
) -> None:
    (tmp_path / "text").write_text("no database here, only a line of text that is long enough\n")
    flags = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    if args[0] == "server":  # a refused start must not get as far as making a key anywhere
        flags += ["--key-file", str(tmp_path / "key")]
    completed = run_cli(*flags)
    assert completed.returncode == 2, completed
    *usage, last = completed.stderr.splitlines()
    assert all(line.startswith(("usage:", " ")) for line in usage), completed.stderr
    assert last.startswith(f"rudp-chat {args[0]}: error: "), completed.stderr
    assert error.replace("{tmp}", str(tmp_path)) in last, completed.stderr
    assert not completed.stdout  # refused before anything started


def test_without_a_command_the_commands_are_listed_and_there_is_a_version() -> None:
    bare = run_cli()
    assert bare.returncode == 2
    for command in ("server", "client", "proxy", "demo"):
        assert re.search(rf"^\s+{command}\s+\S", bare.stderr, re.MULTILINE), bare.stderr
    version = run_cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"rudp-chat \d+\.\d+\.\d+\n", version.stdout)
    for command in ("server", "client", "proxy"):  # every flag explained
        described = run_cli(command, "--help").stdout
        assert "--port" in described or "--listen" in described
        lines = described.splitlines()
        bare_flags = [
            line.strip()
            for line, after in zip(lines, [*lines[1:], ""], strict=True)
            if line.startswith("  -")
            and not re.search(r"\S  +\S", line.strip())  # no help on its own line
            and not re.match(r" {8,}\S", after)  # nor on the next
        ]
        assert not bare_flags, f"{command}: flags without help: {bare_flags}"


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3")
        started.append(chat_server)
        second = run_cli(
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-history",
            "--key-file",
            str(tmp_path / "key"),
        )
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"error: cannot start the server: 127.0.0.1:{port}: Address already in use"
        ]


def test_no_history_says_what_it_does() -> None:
    with processes() as started:
        chat, _ = server(None)
        started.append(chat)
        assert chat.lines[-2] == (
            "History: not stored (--no-history); the last 10,000 lines of all rooms are kept in "
            "memory (50 shown on entering a room), until the server stops"
        )


def test_the_proxy_reports_while_running(tmp_path: Path) -> None:
    with processes() as started:
        chat_server, server_port = server(tmp_path / "history.sqlite3")
        started.append(chat_server)
        args = ["proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{server_port}"]
        lossy = Chat([*args, "--report", "0.2"], stdin=subprocess.DEVNULL)
        started.append(lossy)
        port = int(lossy.wait_line(r"^proxy listening on 127\.0\.0\.1:(\d+)").group(1))
        alice = client("alice", port)
        started.append(alice)
        alice.wait_line(r"^\*\*\* alice joined$")
        lossy.wait_line(
            r"^proxy: up forwarded [1-9]\d* of \d+, down forwarded [1-9]\d* of \d+, 1 clients"
        )


# --- the client, as a user meets it -----------------------------------------------------------


def test_quit_with_unconfirmed_lines_says_so_and_the_second_quit_leaves(tmp_path: Path) -> None:
    with processes() as started:
        chat_server, alice, _ = joined(tmp_path, "alice", started)
        chat_server.process.send_signal(signal.SIGKILL)
        alice.type("into the void", "/quit")
        alice.wait_line(
            r"^\*\*\* 1 unconfirmed \(oldest \d+ s\): leaving once the server confirms them; "
            r"/quit again leaves now$"
        )
        alice.type("/quit")
        assert alice.exit_code() == 1
        assert alice.errors[-1] == "error: left with 1 message not delivered"


def test_exit_leaves_only_as_the_exact_line_and_say_sends_anything(tmp_path: Path) -> None:
    with processes() as started:
        _, alice, _ = joined(tmp_path, "alice", started)
        alice.type("exit now", " exit", "/say exit", "/say /quit", "/say //x", "/say  two")
        for shown in ("exit now", " exit", "exit", "/quit", "//x", " two"):
            alice.wait_line(f"^alice: {re.escape(shown)}$")
        alice.type("exit")
        assert alice.exit_code() == 0


def test_a_reconnect_is_one_line_lost_and_one_line_back(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    with processes() as started:
        first, port = server(history)
        alice = client("alice", port)
        started += [first, alice]
        alice.wait_line(r"^\*\*\* alice joined$")
        first.process.send_signal(signal.SIGKILL)
        alice.wait_line(r"^\*\*\* connection lost \(.+\); reconnecting$")
        time.sleep(3)  # several attempts fail meanwhile: none of them is a line
        second, _ = server(history, port=port)
        started.append(second)
        alice.wait_line(r"^\*\*\* alice joined$")
        alice.wait_for(lambda lines: lines.count("*** alice joined") == 2, "a second join")
        lost = next(i for i, line in enumerate(alice.lines) if "connection lost" in line)
        assert alice.lines[lost + 1 :] == [
            "*** reconnected",
            "*** you are alice; here: alice",
            "*** alice joined",
        ]


def test_a_guests_taken_name_says_when_a_dead_holder_frees_it(tmp_path: Path) -> None:
    with processes() as started:  # a client with a key reclaims its name at once instead
        chat_server, port = server(tmp_path / "history.sqlite3")
        bob = client("bob", port, "--guest")
        started += [chat_server, bob]
        bob.wait_line(r"^\*\*\* bob joined$")
        bob.process.send_signal(signal.SIGKILL)
        again = client("bob", port, "--guest")
        started.append(again)
        assert again.exit_code() == 2
        assert again.errors[-1] == (
            "error: refused: the name bob is taken; if it was yours on a connection that died, "
            "it frees within 4 s"  # FAST_FLAGS' idle timeout
        )


def test_a_connection_dropped_before_hello_is_logged_with_the_reason(tmp_path: Path) -> None:
    async def hang_up(port: int) -> None:
        connection = await connect("127.0.0.1", port)
        await connection.close()

    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3")
        started.append(chat_server)
        asyncio.run(hang_up(port))
        pattern = re.compile(r"dropped 127\.0\.0\.1:\d+ before hello: (.*)$")
        deadline = time.monotonic() + WAIT_S
        while not any(pattern.search(line) for line in chat_server.errors):
            assert time.monotonic() < deadline, chat_server.errors
            time.sleep(0.02)
        reasons = [m[1] for line in chat_server.errors if (m := pattern.search(line))]
        assert reasons == ["it closed the connection"]


def test_the_status_bar_shows_a_line_the_server_has_not_confirmed(tmp_path: Path) -> None:
    with processes() as started:
        chat_server, bob, port = joined(tmp_path, "bob", started)
        with on_a_terminal("alice", port) as (alice, screen):
            screen.wait_for(f" #lobby (2 here) | open | alice @ 127.0.0.1:{port} | ")
            chat_server.process.send_signal(signal.SIGSTOP)  # alive, but it confirms nothing
            try:
                screen.type(b"are you there\r")
                screen.wait_for("| open | 1 unconfirmed (oldest ")
                screen.wait_for("#lobby are you there")  # dimmed above the prompt
            finally:
                chat_server.process.send_signal(signal.SIGCONT)
            bob.wait_line(r"^alice: are you there$")
            screen.type(b"exit\r")
            assert alice.wait(timeout=WAIT_S) == 0


def test_typing_shows_in_the_status_bar_and_with_show_typing_in_plain_mode(
    tmp_path: Path,
) -> None:
    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3")
        started.append(chat_server)
        bob = client("bob", port, "--show-typing")
        started.append(bob)
        bob.wait_line(r"^\*\*\* bob joined$")
        with on_a_terminal("carol", port) as (carol, carol_screen):
            carol_screen.wait_for(" #lobby (2 here) | open | ")
            with on_a_terminal("alice", port) as (alice, screen):
                carol_screen.wait_for("alice joined")
                screen.wait_for(" #lobby (3 here) | open | ")
                screen.type(b"hel")
                bob.wait_line(r"^\*\*\* alice is typing$")
                carol_screen.wait_for("is typing…")  # redrawn in place: "alice" just before
                screen.type(b"lo\r")
                bob.wait_line(r"^alice: hello$")
                bob.wait_line(r"^\*\*\* alice stopped typing$")
                screen.type(b"exit\r")
                assert alice.wait(timeout=WAIT_S) == 0
            carol_screen.type(b"exit\r")
            assert carol.wait(timeout=WAIT_S) == 0


def test_plain_mode_prefixes_lines_of_other_rooms_and_rooms_survive_a_restart(
    tmp_path: Path,
) -> None:
    history = tmp_path / "history.sqlite3"
    with processes() as started:
        first, bob, port = joined(tmp_path, "bob", started)
        alice = client("alice", port)
        started.append(alice)
        alice.wait_line(r"^\*\*\* alice joined$")
        alice.type("/join #Dev", "in dev")
        alice.wait_line(r"^\*\*\* now in #dev: 1 here: alice$")
        alice.wait_line(r"^alice: in dev$")
        bob.type("in the lobby")
        alice.wait_line(r"^#lobby bob: in the lobby$")
        first.process.send_signal(signal.SIGKILL)
        first.exit_code()
        alice.wait_line(r"^\*\*\* connection lost \(.+\); reconnecting$")
        second, _ = server(history, port=port)
        started.append(second)
        alice.wait_for(lambda lines: lines.count("*** reconnected") == 1, "a reconnect")
        alice.type("still in dev")  # the room survived the restart, still the active one
        alice.wait_line(r"^alice: still in dev$")
        assert not any("in dev" in line for line in bob.lines)
        assert [line for line in alice.lines if line.endswith("in dev")] == [
            "alice: in dev",
            "alice: still in dev",
        ]


def test_a_quit_reason_is_shown_to_the_others(tmp_path: Path) -> None:
    with processes() as started:
        _, alice, port = joined(tmp_path, "alice", started)
        bob = client("bob", port)
        started.append(bob)
        alice.wait_line(r"^\*\*\* bob joined$")
        bob.type("/quit gone fishing")
        alice.wait_line(r"^\*\*\* bob left \(left: gone fishing\)$")
        assert bob.exit_code() == 0


def test_interactive_paste_completion_and_input_history(tmp_path: Path) -> None:
    with processes() as started:
        _, bob, port = joined(tmp_path, "bob", started)
        with on_a_terminal("alice", port) as (alice, screen):
            screen.wait_for("alice joined")
            screen.type(b"\x1b[200~first pasted\nsecond pasted\x1b[201~\r")  # bracketed paste
            bob.wait_line(r"^alice: first pasted$")
            bob.wait_line(r"^alice: second pasted$")
            screen.type(b"/jo")
            screen.wait_for("/join")  # offered as it is typed
            screen.type(b"\t #dev\r")  # Tab takes it
            screen.wait_for("now in #dev: 1 here: alice")
            screen.type(b"exit\r")
            assert alice.wait(timeout=WAIT_S) == 0
    remembered = Path(os.environ["XDG_CONFIG_HOME"]) / "rudp_chat" / "input_history"
    typed = [line for line in remembered.read_text().splitlines() if line.startswith("+")]
    assert typed == ["+first pasted", "+second pasted", "+/join #dev", "+exit"]
