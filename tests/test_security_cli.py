"""Encryption as people meet it: the server's key file, pinning on first use, a changed key
refused with both fingerprints and the way forward, ``--insecure`` on both ends, and a
capture of every datagram the proxy forwarded showing no chat text and no names."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from test_chat_cli import client, processes, server

from rudp_chat.aio import serve
from rudp_chat.aio.proxy import UdpProxy
from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.history import History
from rudp_chat.chat.protocol import Chat
from rudp_chat.chat.render import Event
from rudp_chat.chat.room import RoomLimits
from rudp_chat.chat.server import ChatServer, open_room
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.sim import LinkProfile

pytestmark = pytest.mark.usefixtures("socket_path")  # both socket paths, see conftest

FINGERPRINT = r"(SHA256:[A-Za-z0-9+/]{43})"


def test_a_client_pins_the_key_and_refuses_a_changed_one(tmp_path: Path) -> None:
    history, known = tmp_path / "history.sqlite3", tmp_path / "known_servers"
    with processes() as started:
        first, port = server(history, "--key-file", str(tmp_path / "old_key"))
        started.append(first)
        old = first.wait_line(f"^Server key: {FINGERPRINT} \\(created in ").group(1)
        alice = client("alice", port, "--known-servers", str(known))
        started.append(alice)
        alice.wait_line(r"^\*\*\* alice joined$")
        assert known.read_text() == f"127.0.0.1:{port} {old}\n"
        alice.type("exit")
        assert alice.exit_code() == 0
        first.process.send_signal(signal.SIGTERM)
        assert first.exit_code() == 0

        again, _ = server(history, "--key-file", str(tmp_path / "old_key"), port=port)
        started.append(again)
        assert again.wait_line(f"^Server key: {FINGERPRINT} \\(from ").group(1) == old
        bob = client("bob", port, "--known-servers", str(known))
        started.append(bob)
        bob.wait_line(r"^\*\*\* bob joined$")
        bob.type("exit")
        assert bob.exit_code() == 0
        again.process.send_signal(signal.SIGTERM)
        assert again.exit_code() == 0

        changed, _ = server(history, "--key-file", str(tmp_path / "new_key"), port=port)
        started.append(changed)
        new = changed.wait_line(f"^Server key: {FINGERPRINT} \\(created in ").group(1)
        refused = client("carol", port, "--known-servers", str(known))
        started.append(refused)
        assert refused.exit_code() == 1
        error = " ".join(refused.errors)
        assert old in error and new in error and f"--server-key {new}" in error
        assert not any("carol joined" in line for line in changed.lines)

        accepted = client("carol", port, "--known-servers", str(known), "--server-key", new)
        started.append(accepted)
        accepted.wait_line(r"^\*\*\* carol joined$")
        assert known.read_text() == f"127.0.0.1:{port} {new}\n"
        accepted.type("exit")
        assert accepted.exit_code() == 0


def test_insecure_must_be_asked_for_on_both_ends(tmp_path: Path) -> None:
    with processes() as started:
        plain, port = server(tmp_path / "history.sqlite3", "--insecure")
        started.append(plain)
        plain.wait_line(r"^WARNING: encryption is off")
        encrypted = client("dave", port)
        started.append(encrypted)
        assert encrypted.exit_code() == 1
        assert any("connect with --insecure" in line for line in encrypted.errors)
        insecure = client("dave", port, "--insecure")
        started.append(insecure)
        insecure.wait_line(r"^\*\*\* dave joined$")
        assert any("encryption is off" in line for line in insecure.errors)
        insecure.type("exit")
        assert insecure.exit_code() == 0


def test_a_capture_through_the_proxy_holds_no_text_and_no_names(tmp_path: Path) -> None:
    captured: list[bytes] = []
    names = ("zanzibar", "quixotic")
    lines = [f"the {word} password is {word}42" for word in ("walrus", "hippo", "okapi")]
    secrets = [*names, *lines, "walrus", "hippo", "okapi"]
    seen: dict[str, list[Event]] = {name: [] for name in names}

    async def chat() -> None:
        config = ConnectionConfig(heartbeat_interval=0.2, idle_timeout=5.0)
        history = History(tmp_path / "history.sqlite3", 0.0)
        transport = await serve("127.0.0.1", 0, config=ListenerConfig(connection=config))
        room = open_room(history, RoomLimits())
        stop = asyncio.Event()
        serving = asyncio.create_task(ChatServer(transport, room, history).run(stop))
        lossy = LinkProfile(loss=0.1, delay=0.002)
        proxy = UdpProxy(
            ("127.0.0.1", 0),
            transport.address,
            lossy,
            lossy,
            seed=3,
            capture=lambda _, datagram: captured.append(datagram),
        )
        await proxy.start()
        clients = [
            ChatClient(
                ClientOptions(*proxy.listen_address, name, connection=config),
                seen[name].append,
            )
            for name in names
        ]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        async with asyncio.timeout(30):
            while not all(c.state == "open" for c in clients):
                await asyncio.sleep(0.01)
            for line in lines:
                clients[0].submit(line)
            while sum(isinstance(e, Chat) for e in seen[names[1]]) < len(lines):
                await asyncio.sleep(0.01)
            for c in clients:
                c.quit()
            assert await asyncio.gather(*tasks) == [0, 0]
        stop.set()
        await serving
        await proxy.close()
        history.close()

    asyncio.run(chat())
    assert [e.text for e in seen[names[1]] if isinstance(e, Chat)] == lines
    assert len(captured) > 20
    for secret in secrets:
        for encoded in (secret.encode(), secret.upper().encode(), secret.encode("utf-16-le")):
            assert not any(encoded in datagram for datagram in captured), secret
