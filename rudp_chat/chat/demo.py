"""``rudp-chat demo``: a server, a lossy proxy and three scripted users in one process.

Alice and Bob chat, Carol joins (and gets the history), Bob whispers to Carol, Alice leaves,
all through a seeded proxy that drops and delays datagrams both ways. Then it prints what each
user saw, the connections' statistics, and checks the promise the chat makes: every user saw
every message exactly once and in the same order. Exits 0 only if that holds.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rudp_chat.aio import serve
from rudp_chat.aio.proxy import UdpProxy
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.sim.link import LinkProfile

from .client import ChatClient, ClientOptions
from .history import History
from .protocol import Chat, Joined, LeaveReason, Left, Private
from .render import Event, plain
from .room import RoomLimits
from .server import ChatServer, open_room

__all__ = ["DemoSettings", "run_demo"]

# Short heartbeats keep the RTT estimate fresh between scripted lines; the idle timeout stays
# far above any loss burst at these rates, so nobody is dropped.
CONNECTION: Final = ConnectionConfig(heartbeat_interval=0.5, idle_timeout=10.0)
STEP_TIMEOUT_S: Final = 20.0  # a scripted step that takes this long means something broke

BEFORE_CAROL: Final = (
    ("alice", "hi bob! this chat runs over UDP, through a proxy that drops datagrams"),
    ("bob", "hi alice. every line still arrives once, in order"),
    ("alice", "/me checks the retransmission counters"),
    ("bob", "carol should be here any moment"),
)
AFTER_CAROL: Final = (
    ("carol", "hello both, I got the history when I joined"),
    ("bob", "/msg carol welcome! this one is just for you"),
    ("carol", "/msg bob thanks :)"),
    ("alice", "I have to go, bye!"),
    ("bob", "bye alice"),
    ("carol", "see you"),
)


@dataclass(frozen=True, slots=True)
class DemoSettings:
    seed: int = 1
    loss: float = 0.15
    """Drop probability each way."""
    delay: float = 0.040
    """One-way delay, seconds."""
    jitter: float = 0.020
    """Delay varies by up to this, seconds."""
    pause: float = 0.8
    """Seconds between scripted lines: the script takes about ten seconds."""


@dataclass(slots=True)
class _User:
    client: ChatClient
    task: asyncio.Task[int]
    seen: list[Event] = field(default_factory=list)

    def chats(self) -> list[Chat]:
        return [event for event in self.seen if isinstance(event, Chat)]


async def run_demo(settings: DemoSettings) -> int:
    """Run the scripted chat and print what happened; returns 0 if every check passed."""
    with tempfile.TemporaryDirectory(prefix="rudp-chat-demo-") as directory:
        history = History(Path(directory) / "history.sqlite3", time.time())
        try:
            return await _run(settings, history)
        finally:
            history.close()


async def _run(settings: DemoSettings, history: History) -> int:
    transport = await serve("127.0.0.1", 0, config=ListenerConfig(connection=CONNECTION))
    server = ChatServer(transport, open_room(history, RoomLimits(history_size=50)), history)
    stop = asyncio.Event()
    serving = asyncio.create_task(server.run(stop))
    link = LinkProfile(loss=settings.loss, delay=settings.delay, jitter=settings.jitter)
    proxy = UdpProxy(("127.0.0.1", 0), transport.address, link, link, seed=settings.seed)
    await proxy.start()
    host, port = proxy.listen_address
    print(
        f"server on {transport.address[0]}:{transport.address[1]}, clients connect through a"
        f" proxy on {host}:{port} that drops {settings.loss:.0%} of datagrams and delays them"
        f" {settings.delay * 1000:.0f} ± {settings.jitter * 1000:.0f} ms, each way"
        f" (seed {settings.seed}); encrypted, server key {transport.fingerprint}\n",
        flush=True,
    )
    users: dict[str, _User] = {}

    def join(name: str) -> None:
        seen: list[Event] = []
        options = ClientOptions(
            host, port, name, connection=CONNECTION, server_key=transport.fingerprint
        )
        client = ChatClient(options, seen.append)
        users[name] = _User(client, asyncio.create_task(client.run()), seen)

    codes: dict[str, int] = {}
    try:
        for name in ("alice", "bob"):
            join(name)
        await _until(lambda: all(u.client.state == "open" for u in users.values()))
        await _say(users, BEFORE_CAROL, settings.pause)
        join("carol")
        await _until(lambda: Joined("carol") in users["bob"].seen)
        await _say(users, AFTER_CAROL, settings.pause)
        await _until(lambda: all(u.client.unacknowledged == 0 for u in users.values()))
        await _until(lambda: _caught_up(users))
        users["alice"].client.quit()
        await users["alice"].task
        await _until(lambda: Left("alice", LeaveReason.LEFT) in users["carol"].seen)
        for name in ("bob", "carol"):
            users[name].client.quit()
        codes = {name: await user.task for name, user in users.items()}
    except TimeoutError:
        print(f"FAIL a scripted step took over {STEP_TIMEOUT_S:.0f} s; what happened so far:\n")
    finally:
        for user in users.values():
            user.task.cancel()
        await asyncio.gather(*(user.task for user in users.values()), return_exceptions=True)
        stop.set()
        await serving
        await proxy.close()
    _print_transcripts(users)
    _print_statistics(users, proxy)
    return _check(users, codes) if codes else 1


async def _say(users: dict[str, _User], script: tuple[tuple[str, str], ...], pause: float) -> None:
    for speaker, line in script:
        users[speaker].client.submit(line)
        await asyncio.sleep(pause)


def _caught_up(users: dict[str, _User]) -> bool:
    """Whether everyone has seen the newest message. Once all lines are acknowledged, the
    newest is the highest anyone has seen: its sender saw it before the acknowledgement."""
    lasts = {user.chats()[-1].seq if user.chats() else 0 for user in users.values()}
    return len(lasts) == 1


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (polling) until ``condition`` holds; raises ``TimeoutError`` after a while."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.02)


def _print_transcripts(users: dict[str, _User]) -> None:
    for name, user in users.items():
        print(f"--- as {name} saw it ---")
        for event in user.seen:
            line = plain(event)
            if line is not None:
                print(f"  {line}")
        print()


def _print_statistics(users: dict[str, _User], proxy: UdpProxy) -> None:
    header = f"{'connection':<12}{'rtt ms':>8}{'min ms':>8}{'dgrams out':>12}{'dgrams in':>11}"
    print(f"{header}{'lost':>6}{'retransmitted':>15}{'duplicates':>12}")
    for name, user in users.items():
        stats = user.client.stats()
        if stats is None:
            continue
        print(
            f"{name:<12}{stats.smoothed_rtt * 1000:>8.0f}{stats.min_rtt * 1000:>8.0f}"
            f"{stats.datagrams_sent:>12}{stats.datagrams_received:>11}{stats.packets_lost:>6}"
            f"{stats.retransmitted_fragments:>15}{stats.duplicates_received:>12}"
        )
    for direction, link in proxy.stats.items():
        share = link.lost / link.sent if link.sent else 0.0
        print(
            f"proxy {direction:<5}: {link.sent} datagrams offered, {link.lost} dropped ({share:.1%})"
        )
    print()


def _check(users: dict[str, _User], codes: dict[str, int]) -> int:
    """Print each check and return 0 if all passed, 1 otherwise."""
    orders = {
        name: [(c.seq, c.sender, c.text) for c in user.chats()] for name, user in users.items()
    }
    everything = max(orders.values(), key=len)
    total = len(everything)
    whispers = [e for e in users["carol"].seen if isinstance(e, Private) and e.sender == "bob"]
    checks = {
        f"every user saw all {total} messages exactly once, in the same order": all(
            order == everything for order in orders.values()
        ),
        "the message ids run 1, 2, 3, ... without a gap": [s for s, _, _ in everything]
        == list(range(1, total + 1)),
        "carol got bob's private message once; alice never saw it": len(whispers) == 1
        and not any(isinstance(e, Private) for e in users["alice"].seen),
        "bob and carol were told that alice left": all(
            Left("alice", LeaveReason.LEFT) in users[name].seen for name in ("bob", "carol")
        ),
        "every client left cleanly (exit code 0)": all(code == 0 for code in codes.values()),
    }
    for description, passed in checks.items():
        print(f"{'ok  ' if passed else 'FAIL'} {description}")
    return 0 if all(checks.values()) else 1
