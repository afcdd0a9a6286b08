"""Names that belong to their owner's key, through the real command line: clients with
different key files compete for a name, the owner comes back at once after ``kill -9``, and a
server that takes no guests ends a guest's client instead of letting it retry."""

from __future__ import annotations

import signal
from pathlib import Path

from test_chat_cli import client, processes, run_cli, server

OWNED = "belongs to another client key; the first client key to use a name owns it"


def test_two_keys_compete_for_a_name_the_first_owns_it(tmp_path: Path) -> None:
    first, second = (str(tmp_path / name) for name in ("first_key", "second_key"))
    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3")
        alice = client("alice", port, "--client-key", first)
        started += [chat_server, alice]
        alice.wait_line(r"^\*\*\* alice joined$")
        rival = client("Alice", port, "--client-key", second)
        started.append(rival)
        assert rival.exit_code() == 2
        assert rival.errors[-1] == f"error: refused: the name Alice {OWNED}"
        alice.type("exit")
        assert alice.exit_code() == 0

        rival = client("\u0430lice", port, "--client-key", second)  # Cyrillic a, owner away
        started.append(rival)
        assert rival.exit_code() == 2
        assert rival.errors[-1] == (
            "error: refused: the name \u0430lice looks like alice, which belongs to another "
            "client key (names that look alike count as one); the first client key to use a "
            "name owns it"
        )
        guest = client("alice", port, "--guest")
        started.append(guest)
        assert guest.exit_code() == 2
        assert guest.errors[-1].endswith("and guests may use only names no key owns")
        back = client("ALICE", port, "--client-key", first)
        started.append(back)
        back.wait_line(r"^\*\*\* ALICE joined$")


def test_the_owner_reconnects_at_once_after_kill_9(tmp_path: Path) -> None:
    key = str(tmp_path / "bob_key")
    with processes() as started:
        # an idle timeout far beyond the test: only reclaiming can let bob back in
        chat_server, port = server(tmp_path / "history.sqlite3", "--idle-timeout", "600")
        watcher = client("watcher", port, "--guest")
        started += [chat_server, watcher]
        watcher.wait_line(r"^\*\*\* watcher joined$")
        bob = client("bob", port, "--client-key", key)
        started.append(bob)
        watcher.wait_line(r"^\*\*\* bob joined$")
        bob.process.send_signal(signal.SIGKILL)
        assert bob.exit_code() == -signal.SIGKILL
        again = client("bob", port, "--client-key", key)
        started.append(again)
        again.wait_line(r"^\*\*\* bob joined$")
        watcher.wait_line(r"^\*\*\* bob left \(reconnected\)$")
        again.type("back")
        watcher.wait_line(r"^bob: back$")


def test_a_server_without_guests_ends_a_guests_client_even_on_reconnect(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite3"
    with processes() as started:
        first, port = server(history)
        guest = client("guest", port, "--guest")
        started += [first, guest]
        guest.wait_line(r"^\*\*\* guest joined$")
        first.process.send_signal(signal.SIGKILL)
        guest.wait_line(r"^\*\*\* connection lost \(.+\); reconnecting$")
        second, _ = server(history, "--no-guests", port=port)
        started.append(second)
        assert guest.exit_code() == 1
        assert guest.errors[-1] == (
            f"error: 127.0.0.1:{port}: this server takes no guests: connect with a client key "
            "(leave out --guest)"
        )
        keyed = client("keyed", port)
        started.append(keyed)
        keyed.wait_line(r"^\*\*\* keyed joined$")


def test_no_guests_needs_encryption() -> None:
    refused = run_cli("server", "--no-guests", "--insecure", "--no-history", "--port", "0")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].endswith(
        "error: --no-guests needs encryption: without it no client presents a key"
    )
