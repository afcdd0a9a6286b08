"""Room operators through the real command line: two clients with different key files; the
one that made the room kicks the other, who comes back, then bans it, which holds when it
reconnects under another name."""

from __future__ import annotations

from pathlib import Path

from test_chat_cli import client, processes, server


def test_the_creator_kicks_then_bans_another_key(tmp_path: Path) -> None:
    alice_key, bob_key = (str(tmp_path / name) for name in ("alice_key", "bob_key"))
    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3")
        alice = client("alice", port, "--client-key", alice_key)
        started += [chat_server, alice]
        alice.wait_line(r"^\*\*\* alice joined$")
        alice.type("/join #dev")
        alice.wait_line(r"^\*\*\* now in #dev: 1 here: alice$")
        bob = client("bob", port, "--client-key", bob_key)
        started.append(bob)
        bob.type("/join #dev")
        alice.wait_line(r"^\*\*\* bob joined$")  # in #dev (#lobby's notices are prefixed)
        bob.wait_line(r"^\*\*\* now in #dev: 2 here: alice, bob$")

        bob.type("/kick alice")
        bob.wait_line(r"^\*\*\* error: you are not an operator of #dev$")
        alice.type("/kick bob off topic")
        alice.wait_line(r"^\*\*\* bob left \(kicked: by alice: off topic\)$")
        bob.wait_line(r"^#dev \*\*\* bob left \(kicked: by alice: off topic\)$")
        bob.type("/join #dev")  # a kick is no ban
        back = "*** now in #dev: 2 here: alice, bob"
        bob.wait_for(lambda lines: lines.count(back) == 2, f"{back!r} again")

        alice.type("/ban bob")
        alice.wait_line(r"^\*\*\* #dev: alice banned bob$")
        alice.wait_line(r"^\*\*\* bob left \(kicked: by alice: banned\)$")
        bob.type("exit")
        assert bob.exit_code() == 0
        robert = client("robert", port, "--client-key", bob_key)  # the same key, a new name
        started.append(robert)
        robert.wait_line(r"^\*\*\* robert joined$")
        robert.type("/join #dev")
        robert.wait_line(r"^\*\*\* error: you are banned from #dev$")
        robert.type("hello")
        alice.wait_line(r"^#lobby robert: hello$")
        assert "*** robert joined" not in alice.lines  # (that would be #dev's notice)
