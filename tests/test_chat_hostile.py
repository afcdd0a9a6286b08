"""Hostile users (issue #4, chat parts): flooding, look-alike names, forged senders, terminal
escapes, and the connection limits.

The rules are checked on the sans-IO room with explicit times (exact and instant); each is then
checked once more through the real server on 127.0.0.1, or the real command-line client, where
the claim is about what the wire or the terminal sees. Nothing asserts on elapsed wall time:
real-time waits are bounded only to turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import sys
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rudp_chat.aio import ReliableConnection, TransportError, connect, serve
from rudp_chat.chat.history import History
from rudp_chat.chat.protocol import (
    Ack,
    Bye,
    ByeCode,
    Chat,
    ChatProtocolError,
    Error,
    ErrorCode,
    Hello,
    HistoryEnd,
    HistoryStart,
    Info,
    Joined,
    LeaveReason,
    Left,
    Private,
    RefusalCode,
    Refused,
    Renamed,
    Say,
    ServerMessage,
    Users,
    Welcome,
    decode_client,
    decode_server,
    encode,
)
from rudp_chat.chat.render import Event, Notice, plain, styled
from rudp_chat.chat.room import Output, Room, RoomLimits
from rudp_chat.chat.server import ChatServer, open_room
from rudp_chat.chat.text import InvalidNameError, name_key, normalise_name
from rudp_chat.core.config import ListenerConfig
from rudp_chat.core.errors import LocalProtocolError

pytestmark = pytest.mark.usefixtures("socket_path")  # both socket paths, see conftest

WAIT_S: Final = 20.0  # bound on any real-time wait; a passing run needs a small fraction of it
ALICE, BOB, MALLORY = 0, 1, 2
SESSIONS: Final = {conn: bytes([conn + 1]) * 16 for conn in (ALICE, BOB, MALLORY)}
Address = tuple[str, int]


def room_with(*names: str, limits: RoomLimits | None = None) -> Room:
    """A room where ``names[i]`` joined on connection ``i`` at time 0."""
    room = Room(limits or RoomLimits())
    for conn, name in enumerate(names):
        [*_, (_, joined)] = room.join(conn, Hello(name, bytes([conn + 1]) * 16), 0.0)
        assert isinstance(joined, Joined)
    return room


def to(outputs: list[Output], conn: int) -> list[ServerMessage]:
    return [message for recipient, message in outputs if recipient == conn]


# === 1. Flooding: at most burst + rate x t relayed, warned, then disconnected ===================


@dataclass
class FloodTrace:
    """What a flood through the room did, as the other users and the flooder saw it."""

    relayed: list[float] = field(default_factory=list)
    """Server times of the flooder's messages that reached the others."""
    to_flooder: list[ServerMessage] = field(default_factory=list)
    kicked_at: float | None = None
    others_seqs: list[int | None] = field(default_factory=list)
    """The ``Ack.seq`` of each message a calm user sent meanwhile (None: not relayed)."""
    after_kick: list[Output] = field(default_factory=list)


def flood(limits: RoomLimits, per_second: float, seconds: float) -> FloodTrace:
    """mallory sends ``per_second`` messages for ``seconds`` while alice talks at half the
    allowed rate (at most twice a second); bob watches."""
    room = room_with("alice", "bob", "mallory", limits=limits)
    trace = FloodTrace()
    alice_id, alice_every = 0, max(0.5, 2 / limits.rate)
    for i in range(round(per_second * seconds)):
        now = i / per_second
        if now >= alice_id * alice_every:
            alice_id += 1
            out = room.receive(ALICE, Say(alice_id, f"calm {alice_id}"), now)
            [*_, (_, ack)] = out
            assert isinstance(ack, Ack)
            trace.others_seqs.append(ack.seq)
        out = room.receive(MALLORY, Say(i + 1, f"spam {i}"), now)
        if trace.kicked_at is not None:
            trace.after_kick += out
            continue
        for message in to(out, BOB):
            if isinstance(message, Chat):
                assert message.sender == "mallory"
                trace.relayed.append(message.time)
        trace.to_flooder += to(out, MALLORY)
        if any(isinstance(message, Bye) for message in to(out, MALLORY)):
            trace.kicked_at = now
            assert to(out, BOB) == [Left("mallory", LeaveReason.FLOODING)]
            assert to(out, ALICE) == [Left("mallory", LeaveReason.FLOODING)]
            assert room.names == ["alice", "bob"]
    return trace


def within_bucket(times: Sequence[float], rate: float, burst: int) -> bool:
    """Whether every run of messages ``times[i..j]`` fits ``burst + rate x (t_j - t_i)``."""
    return all(
        j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6
        for i in range(len(times))
        for j in range(i, len(times))
    )


@pytest.mark.parametrize(
    "limits",
    [
        RoomLimits(),  # the server's defaults: 20/s, burst 40, kicked after 20 more refusals
        RoomLimits(rate=10.0, burst=5, flood_kick=10),
        RoomLimits(rate=50.0, burst=100, flood_kick=50),
    ],
    ids=["defaults", "strict", "lenient"],
)
def test_a_100_per_s_flood_for_10_s_relays_at_most_burst_plus_rate_t_then_kicks(
    limits: RoomLimits,
) -> None:
    trace = flood(limits, per_second=100.0, seconds=10.0)
    relayed = trace.relayed
    # at most burst + rate x t by any time t since joining (at 0), and over any window
    assert all(k <= limits.burst + limits.rate * t for k, t in enumerate(relayed, 1))
    assert within_bucket(relayed, limits.rate, limits.burst)
    assert len(relayed) > limits.burst  # the bound's rate term was exercised, not only the burst
    # warned: the first refused message is answered by a rate-limit error and its ack
    first_refusal = next(i for i, m in enumerate(trace.to_flooder) if isinstance(m, Error))
    warning, ack = trace.to_flooder[first_refusal : first_refusal + 2]
    assert isinstance(warning, Error) and warning.code is ErrorCode.RATE_LIMITED
    assert "slow down" in warning.text and "disconnected" in warning.text
    assert isinstance(ack, Ack) and ack.seq is None and ack.id == warning.id
    # then disconnected: exactly flood_kick refusals answered with errors, then the goodbye
    errors = [m for m in trace.to_flooder if isinstance(m, Error)]
    assert len(errors) == limits.flood_kick
    assert all(e.code is ErrorCode.RATE_LIMITED for e in errors)
    assert trace.to_flooder[-1] == Bye(ByeCode.FLOODING, "disconnected for sending too fast")
    assert trace.kicked_at is not None and trace.kicked_at < 10.0
    assert trace.after_kick == []  # the rest of the 10 s reaches nobody
    # the calm user is never limited by someone else's flood
    assert trace.others_seqs and None not in trace.others_seqs


def test_the_default_flood_numbers() -> None:
    """The defaults' figures, written out: a regression in the bucket shows here first."""
    limits = RoomLimits()
    trace = flood(limits, per_second=100.0, seconds=10.0)
    assert trace.kicked_at is not None
    bound = limits.burst + limits.rate * trace.kicked_at
    assert (len(trace.relayed), trace.kicked_at) == (54, 0.74)
    assert bound == pytest.approx(54.8)


@example(rate=1.0, burst=3, flood_kick=2, gaps=[(0.0, False)] * 10)  # all at once
@example(rate=2.0, burst=1, flood_kick=1, gaps=[(0.5, True)] * 4 + [(0.25, False)] * 8)
@given(
    rate=st.floats(0.5, 200.0),
    burst=st.integers(1, 50),
    flood_kick=st.integers(1, 30),
    gaps=st.lists(st.tuples(st.just(0.0) | st.floats(0.0, 0.3), st.booleans()), max_size=300),
)
def test_any_schedule_relays_within_the_bucket_and_warns_before_kicking(
    rate: float, burst: int, flood_kick: int, gaps: list[tuple[float, bool]]
) -> None:
    limits = RoomLimits(rate=rate, burst=burst, flood_kick=flood_kick)
    room = room_with("alice", "mallory", limits=limits)
    mallory = 1
    now, relayed, errors, kicked = 0.0, [], 0, False
    for say_id, (gap, garbage) in enumerate(gaps, 1):
        now += gap
        if garbage:  # undecodable frames cost a token too
            out = room.malformed(mallory, "junk", now)
        else:
            out = room.receive(mallory, Say(say_id, "x"), now)
        if kicked:
            assert out == []
            continue
        relayed += [m.time for m in to(out, ALICE) if isinstance(m, Chat)]
        mine = to(out, mallory)
        if any(isinstance(m, Bye) for m in mine):
            assert mine == [Bye(ByeCode.FLOODING, "disconnected for sending too fast")]
            assert errors >= flood_kick  # warned (at least flood_kick times) before the kick
            assert to(out, ALICE) == [Left("mallory", LeaveReason.FLOODING)]
            kicked = True
        elif any(isinstance(m, Error) and m.code is ErrorCode.RATE_LIMITED for m in mine):
            assert not any(isinstance(m, Chat) for _, m in out)
            errors += 1
    assert within_bucket(relayed, rate, burst)


@asynccontextmanager
async def chat_server(
    limits: RoomLimits | None = None, listener: ListenerConfig | None = None
) -> AsyncIterator[tuple[Address, list[ReliableConnection]]]:
    """A real chat server on 127.0.0.1 (transport defaults unless ``listener``), in memory.

    Yields its address and a list; connections put there are aborted after the server stopped
    (a client's socket would otherwise outlive the test's event loop in its close drain).
    """
    transport = await serve("127.0.0.1", 0, config=listener)
    history = History(None, 0.0)
    server = ChatServer(transport, open_room(history, limits or RoomLimits()), history)
    stop = asyncio.Event()
    serving = asyncio.create_task(server.run(stop))
    opened: list[ReliableConnection] = []
    try:
        yield transport.address, opened
    finally:
        stop.set()
        assert await serving == 0
        history.close()
        for connection in opened:
            connection.abort("test over")


async def join(
    address: Address, name: str, session: bytes, opened: list[ReliableConnection]
) -> tuple[ReliableConnection, Welcome]:
    connection = await connect(*address)
    opened.append(connection)
    await connection.send(encode(Hello(name, session)))
    welcome = decode_server(await connection.recv())
    assert isinstance(welcome, Welcome), welcome
    return connection, welcome


async def read_all(connection: ReliableConnection, into: list[ServerMessage]) -> None:
    """Collect what arrives until the connection ends."""
    try:
        async for data in connection:
            into.append(decode_server(data))
    except TransportError:
        pass


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)


def test_a_flood_through_the_real_server_is_bounded_warned_and_kicked() -> None:
    """100 messages/s on a real connection against the default limits: bob sees at most
    burst + rate x t of them (t from the server's own timestamps), mallory a warning, then a
    goodbye, and everyone that mallory was kicked."""

    async def main() -> None:
        async with chat_server() as (address, opened):
            bob, _ = await join(address, "bob", SESSIONS[BOB], opened)
            mallory, welcome = await join(address, "mallory", SESSIONS[MALLORY], opened)
            to_bob: list[ServerMessage] = []
            to_mallory: list[ServerMessage] = []
            watching = asyncio.create_task(read_all(bob, to_bob))
            hearing = asyncio.create_task(read_all(mallory, to_mallory))
            start = asyncio.get_running_loop().time()
            try:
                for i in range(1000):  # 100/s for 10 s, or until the server hangs up
                    if any(isinstance(m, Bye) for m in to_mallory):
                        break
                    delay = start + i / 100 - asyncio.get_running_loop().time()
                    await asyncio.sleep(max(0.0, delay))
                    await mallory.send(encode(Say(i + 1, f"spam {i}")))
            except (TransportError, LocalProtocolError):
                pass  # closed by the server after its goodbye
            await until(lambda: Left("mallory", LeaveReason.FLOODING) in to_bob)
            await asyncio.wait_for(hearing, WAIT_S)
            watching.cancel()

        relayed = [m for m in to_bob if isinstance(m, Chat) and m.sender == "mallory"]
        assert len(relayed) >= welcome.burst
        span = relayed[-1].time - relayed[0].time
        assert within_bucket([m.time for m in relayed], welcome.rate, welcome.burst), span
        assert to_bob.index(Left("mallory", LeaveReason.FLOODING)) > to_bob.index(relayed[-1])
        admitted = [m for m in to_mallory if isinstance(m, Ack) and m.seq is not None]
        assert [a.seq for a in admitted] == [m.seq for m in relayed]
        kinds = [type(m) for m in to_mallory if isinstance(m, Error | Bye)]
        assert kinds[0] is Error and kinds[-1] is Bye and kinds.count(Bye) == 1
        assert all(m.code is ErrorCode.RATE_LIMITED for m in to_mallory if isinstance(m, Error))
        assert to_mallory[-1] == Bye(ByeCode.FLOODING, "disconnected for sending too fast")

    asyncio.run(main())


# === 1b. The bound holds per person, not per session: reconnecting buys no fresh burst ===========

FLOODER_AT: Final = "203.0.113.7"  # documentation addresses (RFC 5737)
ELSEWHERE: Final = ("198.51.100.1", "198.51.100.2", "192.0.2.1")


def flood_until_kicked(room: Room, conn: int, start: float) -> tuple[list[float], float]:
    """``conn`` sends 100 messages/s from ``start`` until kicked; the server times of its
    messages relayed to alice (connection 0, who must be here), and the time of the kick.
    Message ids grow with the time, so a session's later flood is no resend of its earlier."""
    relayed: list[float] = []
    for i in range(10_000):
        now = start + i / 100
        out = room.receive(conn, Say(1 + round(now * 100), f"spam {i}"), now)
        relayed += [m.time for m in to(out, ALICE) if isinstance(m, Chat)]
        if any(isinstance(m, Bye) for m in to(out, conn)):
            return relayed, now
    raise AssertionError("never kicked")


def test_a_kicked_flooder_is_refused_for_the_cool_down_by_session_and_by_address() -> None:
    limits = RoomLimits()
    room = Room(limits)
    room.join(ALICE, Hello("alice", SESSIONS[ALICE]), 0.0, ELSEWHERE[0])
    room.join(BOB, Hello("bob", SESSIONS[BOB]), 0.0, FLOODER_AT)  # behind the same NAT
    room.join(MALLORY, Hello("mallory", SESSIONS[MALLORY]), 0.0, FLOODER_AT)
    relayed, kicked_at = flood_until_kicked(room, MALLORY, 0.0)
    assert limits.burst < len(relayed) <= limits.burst + limits.rate * kicked_at
    fresh = bytes([99]) * 16
    attempts = [
        (SESSIONS[MALLORY], FLOODER_AT, "you were"),
        (SESSIONS[MALLORY], ELSEWHERE[2], "you were"),  # the session, from anywhere
        (fresh, FLOODER_AT, "someone at your address was"),  # anyone, from the address
    ]
    conn = 10
    for now in (kicked_at, kicked_at + 1.0, kicked_at + limits.flood_cooldown - 0.001):
        wait = math.ceil(kicked_at + limits.flood_cooldown - now)
        for session, address, whose in attempts:
            conn += 1
            reason = f"{whose} kicked for flooding; try again in {wait} s"
            out = room.join(conn, Hello("mallory", session), now, address)
            assert out == [(conn, Refused(RefusalCode.COOLING_DOWN, reason))]  # only to it
            assert room.receive(conn, Say(1, "spam"), now) == []  # nothing more relayed
    assert room.names == ["alice", "bob"]
    # the neighbour who was already here stays, and may replace its own connection; a stranger
    # at an address that only tried a kicked session is welcome
    out = room.join(30, Hello("bob", SESSIONS[BOB]), kicked_at + 1.0, FLOODER_AT)
    assert isinstance(to(out, 30)[0], Welcome)
    out = room.join(31, Hello("carol", bytes([7]) * 16), kicked_at + 1.0, ELSEWHERE[2])
    assert isinstance(to(out, 31)[0], Welcome)
    # after the cool-down both are admitted, with a full burst (refilled by then anyway)
    later = kicked_at + limits.flood_cooldown
    out = room.join(40, Hello("mal2", fresh), later, FLOODER_AT)
    assert isinstance(to(out, 40)[0], Welcome)
    out = room.join(41, Hello("mallory", SESSIONS[MALLORY]), later, FLOODER_AT)
    assert isinstance(to(out, 41)[0], Welcome)
    again, _ = flood_until_kicked(room, 41, later)
    assert again[0] == later and len(again) == len(relayed)  # the same as the first time
    assert within_bucket(relayed + again, limits.rate, limits.burst)


def test_quitting_before_the_kick_buys_no_fresh_burst_either() -> None:
    """The allowance, not only the cool-down, outlives the connection: a flooder that leaves
    before it is kicked comes back, by session or by address, to its spent bucket."""
    limits = RoomLimits()
    room = Room(limits)
    room.join(ALICE, Hello("alice", SESSIONS[ALICE]), 0.0, ELSEWHERE[0])
    room.join(MALLORY, Hello("mallory", SESSIONS[MALLORY]), 0.0, FLOODER_AT)
    ids = itertools.count(1)  # never a resend, whichever session

    def burst_from(conn: int, now: float, count: int = 50) -> int:
        """How many of ``count`` messages sent at once at ``now`` are relayed (short of a
        kick: at most ``flood_kick`` of them refused)."""
        said = [room.receive(conn, Say(next(ids), "spam"), now) for _ in range(count)]
        assert room.names == ["alice", "mallory"]
        return sum(isinstance(m, Chat) for out in said for m in to(out, ALICE))

    assert burst_from(MALLORY, 0.0) == limits.burst
    room.receive(MALLORY, Say(next(ids), "/quit"), 0.0)  # refused too (no token), so:
    room.leave(MALLORY, LeaveReason.LEFT, 0.0)  # it hangs up instead
    other = bytes([42]) * 16
    for conn, session, address, now in [
        (10, other, FLOODER_AT, 0.5),  # a new session from the same address
        (11, other, ELSEWHERE[1], 1.0),  # that session from elsewhere
        (12, SESSIONS[MALLORY], ELSEWHERE[2], 1.5),  # the first session from elsewhere
    ]:
        out = room.join(conn, Hello("mallory", session), now, address)
        assert isinstance(to(out, conn)[0], Welcome)
        assert burst_from(conn, now, 15) == limits.rate * 0.5  # only what refilled since
        room.leave(conn, LeaveReason.LOST, now)
    # a bucket that would have refilled is forgotten: a full burst, as for anyone new
    refilled = 1.5 + limits.burst / limits.rate
    out = room.join(13, Hello("mallory", SESSIONS[MALLORY]), refilled, FLOODER_AT)
    assert isinstance(to(out, 13)[0], Welcome)
    assert burst_from(13, refilled) == limits.burst


def test_neighbours_returning_from_one_address_do_not_share_a_bucket() -> None:
    """Each carries on with the spent allowance it found, on its own: the address's memory
    slows down who comes back, it does not tie two users' rates together."""
    limits = RoomLimits()
    room = Room(limits)
    room.join(ALICE, Hello("alice", SESSIONS[ALICE]), 0.0, ELSEWHERE[0])
    room.join(MALLORY, Hello("mallory", SESSIONS[MALLORY]), 0.0, FLOODER_AT)
    for say_id in range(1, limits.burst + 1):
        room.receive(MALLORY, Say(say_id, "spam"), 0.0)
    room.leave(MALLORY, LeaveReason.LEFT, 0.0)
    neighbours = {10: "ann", 11: "ben"}
    for conn, name in neighbours.items():
        room.join(conn, Hello(name, bytes([conn]) * 16), 0.5, FLOODER_AT)
    relayed = {}
    for conn, name in neighbours.items():
        said = [room.receive(conn, Say(i, "hi"), 0.5) for i in range(1, 16)]
        relayed[name] = sum(isinstance(m, Chat) for out in said for m in to(out, ALICE))
    assert relayed == {"ann": limits.rate * 0.5, "ben": limits.rate * 0.5}  # each, not together


@pytest.mark.parametrize(
    "limits",
    [
        RoomLimits(),
        RoomLimits(rate=10.0, burst=5, flood_kick=10),
        RoomLimits(rate=50.0, burst=100, flood_kick=50),
        RoomLimits(flood_cooldown=0.0),  # still refused until the bucket would have refilled
        RoomLimits(rate=10.0, burst=5, flood_kick=10, flood_cooldown=1.0),
    ],
    ids=["defaults", "strict", "lenient", "no-cooldown", "short-cooldown"],
)
@pytest.mark.parametrize("sessions", ["same", "new"])
def test_a_reconnecting_100_per_s_flood_for_10_s_relays_at_most_burst_plus_rate_t_in_all(
    limits: RoomLimits, sessions: str
) -> None:
    """The flooder tries to rejoin at every tick after each kick, with its session or a new
    one, from its address: what all its connections got relayed together fits one bucket."""
    room = Room(limits)
    room.join(ALICE, Hello("alice", SESSIONS[ALICE]), 0.0, ELSEWHERE[0])
    relayed: list[float] = []
    conn: int | None = None
    joins = refusals = 0
    for i in range(1000):
        now = i / 100
        if conn is None:
            session = SESSIONS[MALLORY] if sessions == "same" else i.to_bytes(16, "big")
            out = room.join(100 + i, Hello("mallory", session), now, FLOODER_AT)
            [first, *_] = to(out, 100 + i)
            if isinstance(first, Refused):
                assert first.code is RefusalCode.COOLING_DOWN
                refusals += 1
                continue
            assert isinstance(first, Welcome)
            conn, joins = 100 + i, joins + 1
        out = room.receive(conn, Say(i + 1, f"spam {i}"), now)
        relayed += [m.time for m in to(out, ALICE) if isinstance(m, Chat)]
        if any(isinstance(m, Bye) for m in to(out, conn)):
            conn = None
    assert len(relayed) <= limits.burst + limits.rate * 10.0
    assert within_bucket(relayed, limits.rate, limits.burst)  # and over every window
    assert refusals > 0
    cooldown = max(limits.flood_cooldown, limits.burst / limits.rate)
    assert (joins > 1) == (cooldown < 9.0)  # readmitted after each cool-down, never before


@example(
    rate=20.0,
    burst=40,
    flood_kick=20,
    cooldown=0.0,
    steps=[(0.0, "say")] * 60 + [(0.01, "say")] * 30 + [(0.0, "new"), (0.0, "say")] * 10,
)
@example(
    rate=20.0,
    burst=40,
    flood_kick=20,
    cooldown=30.0,
    steps=([(0.0, "say")] * 39 + [(0.0, "drop"), (0.0, "new")]) * 5,
)
@example(  # leaves by one session, comes back by a new one, then by the first from elsewhere
    rate=20.0,
    burst=40,
    flood_kick=20,
    cooldown=30.0,
    steps=[(0.0, "say")] * 45
    + [(0.0, "new"), (0.5, "say")]
    + [(0.0, "say")] * 14
    + [(0.0, "drop"), (0.5, "first"), (0.0, "move")]
    + [(0.0, "say")] * 20,
)
@given(
    rate=st.floats(0.5, 200.0),
    burst=st.integers(1, 50),
    flood_kick=st.integers(1, 30),
    cooldown=st.just(30.0) | st.floats(0.0, 3.0),
    steps=st.lists(
        st.tuples(
            st.just(0.0) | st.floats(0.0, 0.3),
            st.sampled_from(["say"] * 6 + ["garbage", "quit", "drop", "same", "new", "move"]),
        ),
        max_size=300,
    ),
)
def test_any_reconnecting_schedule_relays_within_one_bucket(
    rate: float, burst: int, flood_kick: int, cooldown: float, steps: list[tuple[float, str]]
) -> None:
    """One person, one connection at a time: it says, sends garbage, quits, drops its
    connection, reconnects (replacing a live connection or not) with its session from the same
    or a new address, or with a new session from the same address (each reconnect keeps one of
    the two, else it would be someone new). Everything relayed from all of it fits one bucket;
    it is refused exactly while its session or address is cooling down after a kick."""
    limits = RoomLimits(rate=rate, burst=burst, flood_kick=flood_kick, flood_cooldown=cooldown)
    room = Room(limits)
    room.join(ALICE, Hello("alice", SESSIONS[ALICE]), 0.0, ELSEWHERE[0])
    session, address, conn = SESSIONS[MALLORY], FLOODER_AT, MALLORY
    room.join(conn, Hello("mallory", session), 0.0, address)
    live: int | None = conn
    now, relayed = 0.0, []
    cooling: dict[bytes | str, float] = {}  # session or address -> refused until
    for say_id, (gap, step) in enumerate(steps, 1):
        now += gap
        if step in ("same", "first", "new", "move"):
            if live is not None and step != "same":  # the server noticed: no parallel join
                room.leave(live, LeaveReason.LOST, now)
                live = None
            if step == "first":
                session = SESSIONS[MALLORY]
            elif step == "new":
                session = say_id.to_bytes(16, "big")
            elif step == "move":
                address = f"2001:db8::{say_id:x}"
            conn = 100 + say_id
            [first, *_] = to(room.join(conn, Hello("mallory", session), now, address), conn)
            if live is None and max(cooling.get(session, 0.0), cooling.get(address, 0.0)) > now:
                assert isinstance(first, Refused) and first.code is RefusalCode.COOLING_DOWN
            else:
                assert isinstance(first, Welcome), first
                live = conn
            continue
        if live is None:
            continue
        if step == "drop":
            room.leave(live, LeaveReason.LOST, now)
            live = None
            continue
        if step == "garbage":
            out = room.malformed(live, "junk", now)
        else:
            out = room.receive(live, Say(say_id, "/quit" if step == "quit" else "x"), now)
        relayed += [m.time for m in to(out, ALICE) if isinstance(m, Chat)]
        bye = next((m for m in to(out, live) if isinstance(m, Bye)), None)
        if bye is not None:
            if bye.code is ByeCode.FLOODING:
                cooling[session] = cooling[address] = now + max(cooldown, burst / rate)
            live = None
    assert within_bucket(relayed, rate, burst)


@pytest.mark.parametrize(
    "bad",
    [
        {"flood_cooldown": -1.0},
        {"flood_cooldown": math.nan},
        {"flood_cooldown": math.inf},
        {"remembered": 1},
    ],
    ids=str,
)
def test_room_limits_refuse_an_unworkable_cool_down_or_memory(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RoomLimits(**bad)  # type: ignore[arg-type]


def test_what_the_room_remembers_is_bounded_the_oldest_forgotten_first() -> None:
    """The price of bounded memory: enough churn elsewhere lets a kicked flooder back early."""
    limits = RoomLimits(remembered=4)
    room = Room(limits)
    room.join(ALICE, Hello("alice", SESSIONS[ALICE]), 0.0, ELSEWHERE[0])
    room.join(MALLORY, Hello("mallory", SESSIONS[MALLORY]), 0.0, FLOODER_AT)
    _, kicked_at = flood_until_kicked(room, MALLORY, 0.0)

    def churn(n: int, now: float) -> None:
        """``n`` users join from other addresses, spend a token, and leave."""
        for k in range(n):
            conn, address = 1_000 + k, f"192.0.2.{k % 250 + 1}"
            room.join(conn, Hello(f"u{k}", (k + 7).to_bytes(16, "big")), now, address)
            room.receive(conn, Say(1, "hi"), now)
            room.leave(conn, LeaveReason.LEFT, now)

    churn(1, kicked_at)  # two more entries: four, the limit
    [(_, refused)] = room.join(20, Hello("mallory", SESSIONS[MALLORY]), kicked_at, FLOODER_AT)
    assert isinstance(refused, Refused) and refused.code is RefusalCode.COOLING_DOWN
    churn(1_000, kicked_at)
    assert room.remembered <= limits.remembered  # the table itself
    out = room.join(21, Hello("mallory", SESSIONS[MALLORY]), kicked_at + 1.0, FLOODER_AT)
    assert isinstance(to(out, 21)[0], Welcome)


# === 2. Look-alike names collide or are refused ==================================================

INVISIBLE: Final = [
    "\u200b",  # zero width space
    "\u200c",  # zero width non-joiner
    "\u200d",  # zero width joiner
    "\u2060",  # word joiner
    "\u2061",  # function application (invisible operator)
    "\ufeff",  # zero width no-break space (BOM)
    "\u00ad",  # soft hyphen
    "\u034f",  # combining grapheme joiner: a combining mark, invisible
    "\ufe0f",  # variation selector 16: a combining mark, invisible
    "\U000e0100",  # variation selector 17
    "\u180b",  # Mongolian free variation selector 1
    "\u180e",  # Mongolian vowel separator
    "\u17b4",  # Khmer vowel inherent AQ
    "\u3164",  # Hangul filler: a letter that shows as nothing
    "\uffa0",  # halfwidth Hangul filler
    "\u115f",  # Hangul choseong filler
    "\U000e0041",  # tag latin capital A
    "\U0001d173",  # musical symbol begin beam
]
BIDI: Final = [
    "\u202a",  # left-to-right embedding
    "\u202b",  # right-to-left embedding
    "\u202c",  # pop directional formatting
    "\u202d",  # left-to-right override
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\u2067",  # right-to-left isolate
    "\u2068",  # first strong isolate
    "\u2069",  # pop directional isolate
    "\u200e",  # left-to-right mark
    "\u200f",  # right-to-left mark
    "\u061c",  # Arabic letter mark
]
SAME_AS_ALICE: Final = [
    "Alice",
    "alice",
    "ALICE",
    "aLiCe",
    "\uff21lice",  # fullwidth A
    "\uff21\uff4c\uff49\uff43\uff45",  # all fullwidth
    "\U0001d400\U0001d425\U0001d422\U0001d41c\U0001d41e",  # mathematical bold
    "\u1d2c" + "lice",  # modifier letter capital A: NFKC makes it A
]
HIDDEN_IN_ALICE: Final = [
    variant
    for char in INVISIBLE + BIDI
    for variant in (f"Alice{char}", f"{char}Alice", f"Al{char}ice", f"Alice{char}{char}")
]


@pytest.mark.parametrize("variant", SAME_AS_ALICE + HIDDEN_IN_ALICE, ids=ascii)
def test_every_alice_variant_collides_or_is_refused(variant: str) -> None:
    room = room_with("Alice")
    [(conn, refused)] = room.join(9, Hello(variant, bytes([9]) * 16), 0.0)
    assert conn == 9 and isinstance(refused, Refused), refused
    assert refused.code in (RefusalCode.NAME_TAKEN, RefusalCode.INVALID_NAME)
    assert room.names == ["Alice"]
    # and by renaming: bob cannot become any of them either
    room.join(1, Hello("bob", SESSIONS[BOB]), 0.0)
    [(_, error), (_, ack)] = room.receive(1, Say(1, f"/nick {variant}"), 0.0)
    assert isinstance(error, Error), error
    assert error.code in (ErrorCode.NAME_TAKEN, ErrorCode.INVALID_NAME)
    assert ack == Ack(1, None)
    assert room.names == ["Alice", "bob"]


@pytest.mark.parametrize("variant", HIDDEN_IN_ALICE, ids=ascii)
def test_invisible_and_bidi_characters_are_refused_even_with_nobody_to_collide(
    variant: str,
) -> None:
    with pytest.raises(InvalidNameError, match="U\\+"):
        normalise_name(variant)
    [(_, refused)] = Room(RoomLimits()).join(0, Hello(variant, SESSIONS[ALICE]), 0.0)
    assert isinstance(refused, Refused) and refused.code is RefusalCode.INVALID_NAME


@pytest.mark.parametrize("invisible", [*INVISIBLE, *BIDI, "\u115f\u1160", "\u3164" * 3], ids=ascii)
def test_a_name_of_only_invisible_characters_is_refused(invisible: str) -> None:
    with pytest.raises(InvalidNameError):
        normalise_name(invisible)


@pytest.mark.parametrize("variant", SAME_AS_ALICE[1:], ids=ascii)
def test_the_first_variant_holds_the_name_whichever_it_is(variant: str) -> None:
    room = room_with(variant)
    [(_, refused)] = room.join(9, Hello("Alice", bytes([9]) * 16), 0.0)
    assert isinstance(refused, Refused) and refused.code is RefusalCode.NAME_TAKEN


COMPOSED: Final = [
    "Al\u00edce",  # precomposed í
    "Ali\u0301ce",  # i + combining acute
    "ALI\u0301CE",
    "\uff21li\u0301ce",  # fullwidth A, decomposed í
    "al\u00cdce",  # precomposed capital Í
]


@pytest.mark.parametrize("first", COMPOSED, ids=ascii)
@pytest.mark.parametrize("second", COMPOSED, ids=ascii)
def test_composed_and_decomposed_forms_are_one_name(first: str, second: str) -> None:
    assert name_key(normalise_name(first)) == name_key(normalise_name(second))
    room = room_with(first)
    [(_, refused)] = room.join(9, Hello(second, bytes([9]) * 16), 0.0)
    assert isinstance(refused, Refused) and refused.code is RefusalCode.NAME_TAKEN


def test_a_visible_accent_is_a_different_name() -> None:
    """Not over-eager: ``Alicé`` looks different from ``Alice``, so both may be here."""
    room = room_with("Alice", "Alice\u0301")
    assert room.names == ["Alice", "Alic\u00e9"]


# === 3. The sender comes from the session, never from the frame ==================================

FORGED_FRAMES: Final[list[dict[str, Any]]] = [
    {"type": "say", "id": 1, "text": "I owe mallory $100", "sender": "alice"},
    {"type": "say", "id": 1, "text": "I owe mallory $100", "name": "alice"},
    {"type": "say", "id": 1, "text": "I owe mallory $100", "from": "alice"},
    {
        "type": "chat",
        "seq": 1,
        "time": 1.0,
        "sender": "alice",
        "text": "I owe mallory $100",
        "action": False,
        "history": False,
    },
    {"type": "private", "time": 1.0, "sender": "alice", "recipient": "bob", "text": "psst"},
    {"type": "hello", "name": "alice", "session": SESSIONS[ALICE], "version": 1},
]


@pytest.mark.parametrize("frame", FORGED_FRAMES[:-1], ids=lambda f: str(sorted(f)))
def test_a_frame_naming_a_sender_is_not_a_client_message(frame: dict[str, Any]) -> None:
    with pytest.raises(ChatProtocolError):
        decode_client(msgpack.packb(frame, use_bin_type=True))


def test_the_room_names_the_sender_from_the_session_whatever_the_text_says() -> None:
    room = room_with("alice", "bob", "mallory")
    out = room.receive(MALLORY, Say(1, "alice\nalice: I owe mallory $100\r"), 0.0)
    [chat] = {m for m in to(out, BOB) if isinstance(m, Chat)}
    assert chat.sender == "mallory"
    assert plain(chat) == "mallory: alice␊alice: I owe mallory $100␍"  # one line, hers
    out = room.receive(MALLORY, Say(2, "/msg bob alice says hi"), 0.0)
    assert {m.sender for m in to(out, BOB) if isinstance(m, Private)} == {"mallory"}
    room.receive(MALLORY, Say(3, "/nick mal"), 0.0)
    out = room.receive(MALLORY, Say(4, "/me is alice"), 0.0)
    assert {m.sender for m in to(out, BOB) if isinstance(m, Chat)} == {"mal"}


def test_forged_frames_through_the_real_server_are_refused_and_never_relayed() -> None:
    async def main() -> None:
        async with chat_server() as (address, opened):
            await join(address, "alice", SESSIONS[ALICE], opened)
            bob, _ = await join(address, "bob", SESSIONS[BOB], opened)
            mallory, _ = await join(address, "mallory", SESSIONS[MALLORY], opened)
            to_bob: list[ServerMessage] = []
            to_mallory: list[ServerMessage] = []
            tasks = [
                asyncio.create_task(read_all(bob, to_bob)),
                asyncio.create_task(read_all(mallory, to_mallory)),
            ]
            for frame in FORGED_FRAMES:
                await mallory.send(msgpack.packb(frame, use_bin_type=True))
            await mallory.send(encode(Say(1, "the real one")))
            await until(lambda: Ack(1, 1) in to_mallory)
            await until(lambda: any(isinstance(m, Chat) for m in to_bob))
            for task in tasks:
                task.cancel()
        errors = [m for m in to_mallory if isinstance(m, Error)]
        assert [e.code for e in errors] == [ErrorCode.MALFORMED] * len(FORGED_FRAMES)
        shown = [m for m in to_bob if isinstance(m, Chat | Private)]
        assert [(m.sender, m.text) for m in shown] == [("mallory", "the real one")]

    asyncio.run(main())


# === 4. Nothing a client renders can drive the terminal ==========================================

_FORBIDDEN: Final = {"Cc", "Cf", "Cs", "Zl", "Zp"}
HOSTILE: Final = [
    "\x1b]52;c;ZXZpbA==\x07",  # OSC 52: write the clipboard, BEL-terminated
    "\x1b]52;c;ZXZpbA==\x1b\\",  # the same, ST-terminated
    "\x1b]0;pwned\x07",  # set the window title
    "\x1b[2J\x1b[H",  # clear the screen
    "\x1b[31mred",
    "\x9b31m",  # 8-bit CSI
    "\x9d0;t\x9c",  # 8-bit OSC and ST
    "\x85",  # NEL
    "\x07",  # bell
    "over\rwrite",  # bare carriage return
    "line\nbreak",
    "\u2028\u2029",  # line and paragraph separators
    "\u202egnp.exe",  # right-to-left override
    "\u2066x\u2069",  # isolates
    "\u200e\u200f\u061c",  # marks
    "\u200b\u200d\ufeff\u00ad",  # invisible format characters
    "\x00\x7f",
    "\ud800",  # a lone surrogate
]


def is_safe(rendered: str) -> bool:
    """No control character but newline, no format, surrogate or line/paragraph separator."""
    return all(c == "\n" or unicodedata.category(c) not in _FORBIDDEN for c in rendered)


def every_event(a: str, b: str, c: str) -> list[Event]:
    """Every kind of thing a client shows, with the given strings in every string field (the
    names in joins, leaves, renames, lists and refusals included)."""
    return [
        Welcome(a, (b, c), 0, 4000, 20.0, 40),
        Refused(RefusalCode.NAME_TAKEN, a),
        Refused(RefusalCode.INVALID_NAME, f"invalid name: {b}"),
        HistoryStart(1),
        Chat(1, 0.0, a, b, history=True),
        HistoryEnd(),
        Chat(2, 0.0, a, b),
        Chat(3, 0.0, b, c, action=True),
        Private(0.0, a, b, c),
        Joined(a),
        Left(b, LeaveReason.FLOODING),
        Renamed(a, b),
        Users((a, b, c)),
        Info((a, b, c)),
        Error(ErrorCode.NO_SUCH_USER, a, 7),
        Error(ErrorCode.MALFORMED, b),
        Bye(ByeCode.FLOODING, c),
        Notice(a),
    ]


def rendered_forms(event: Event) -> list[str]:
    line = plain(event)
    fragments = styled(event, 0.0)
    assert line is not None and fragments is not None
    return [line, "".join(text for _, text in fragments), "".join(s for s, _ in fragments)]


@pytest.mark.parametrize("payload", HOSTILE, ids=ascii)
def test_each_known_attack_is_defused_in_every_field_of_every_event(payload: str) -> None:
    for event in every_event(payload, f"x{payload}y", payload * 2):
        for form in rendered_forms(event):
            assert is_safe(form), (event, form)
            assert not set(form) & set("\x1b\x07\x9b\x9d\x9c\r\u202e\u2066\u2069"), form


_fragments = st.sampled_from(HOSTILE) | st.text(st.characters(codec=None), max_size=8)
_strings = st.lists(_fragments, max_size=5).map("".join)


@given(_strings, _strings, _strings)
def test_any_strings_in_any_event_render_safely(a: str, b: str, c: str) -> None:
    for event in every_event(a, b, c):
        for form in rendered_forms(event):
            assert is_safe(form), (event, form)


async def _cli_client(port: int, *flags: str) -> tuple[int, str, str]:
    """Run ``rudp_chat client --plain`` until it exits; its exit code, stdout and stderr."""
    args = ["client", "--plain", "--no-reconnect", "--name", "eve", "--port", str(port)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rudp_chat",
        *args,
        *flags,
        stdin=asyncio.subprocess.PIPE,  # kept open: the client stays until the server ends it
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(WAIT_S):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8"), err.decode("utf-8")


def test_the_real_client_prints_hostile_server_input_harmlessly() -> None:
    """A malicious server sends every event with an attack in every field (names up to the
    protocol's 32 characters), a frame that is no message, and a goodbye; then refuses a second
    session with an attack as the reason. What the client writes holds none of it."""
    payload = "\x1b]52;c;ZXZpbA==\x07\x9b2J\r\u202e"

    async def serve_one(connection: ReliableConnection, refuse: bool) -> None:
        assert isinstance(decode_client(await connection.recv()), Hello)
        if refuse:
            await connection.send(encode(Refused(RefusalCode.INVALID_NAME, payload)))
        else:
            for event in every_event(payload, f"b{payload}", f"c{payload}"):
                if not isinstance(event, Notice | Refused | Bye):
                    await connection.send(encode(event))
            await connection.send(msgpack.packb({"type": payload}))
            await connection.send(encode(Bye(ByeCode.FLOODING, payload)))
        await connection.close()

    async def main() -> list[tuple[int, str, str]]:
        server = await serve("127.0.0.1", 0)
        try:
            results = []
            for refuse in (False, True):
                client = asyncio.create_task(_cli_client(server.address[1]))
                connection = await asyncio.wait_for(server.accept(), WAIT_S)
                await asyncio.wait_for(serve_one(connection, refuse), WAIT_S)
                results.append(await client)
            return results
        finally:
            await server.close(timeout=1.0)

    [(code, out, err), (refused_code, refused_out, refused_err)] = asyncio.run(main())
    assert code == 1 and refused_code == 2, (out, err, refused_out, refused_err)
    pinned, *lines = out.splitlines()
    assert pinned.startswith("*** server key SHA256:"), pinned  # trusted on first use
    assert lines[0].startswith("*** you are ␛]52;c;ZXZpbA==␇\ufffd2J␍; here: b␛]52"), lines
    assert any(line.startswith("*** ignored a malformed message") for line in lines)
    assert err.startswith("error: ␛]52;c;ZXZpbA==␇"), err
    assert refused_err.startswith("error: refused: ␛]52"), refused_err
    assert len(lines) >= len(every_event("a", "b", "c")) - 2
    for text in (out, err, refused_out, refused_err):
        assert is_safe(text), text


# === 5. --max-clients, the per-address limit and the flood cool-down: refusals the client prints


@asynccontextmanager
async def cli_server(*flags: str) -> AsyncIterator[int]:
    """``rudp_chat server`` on 127.0.0.1 with in-memory history; yields its port."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rudp_chat",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-history",
        *flags,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        listening = re.compile(
            rb"^Server is listening on 127\.0\.0\.1:(\d+) \(UDP socket via \w+\)$"
        )
        async with asyncio.timeout(WAIT_S):
            while not (match := listening.match((await process.stdout.readline()).strip())):
                pass
        yield int(match[1])
    finally:
        process.kill()
        await process.wait()


def test_max_clients_refusal_is_printed_by_the_client() -> None:
    async def main() -> tuple[int, str, str]:
        async with cli_server("--max-clients", "1") as port:
            opened: list[ReliableConnection] = []
            try:
                await join(("127.0.0.1", port), "ann", SESSIONS[ALICE], opened)
                return await _cli_client(port)
            finally:
                for connection in opened:
                    connection.abort("test over")

    code, out, err = asyncio.run(main())
    assert code == 1, (out, err)
    assert err == "error: refused: the server is full (1 user)\n"


def test_per_address_refusal_is_printed_by_the_client() -> None:
    per_address = ListenerConfig().max_connections_per_address  # what the server runs with

    async def main() -> tuple[int, str, str]:
        async with cli_server() as port:
            opened: list[ReliableConnection] = []
            try:
                for n in range(per_address):
                    await join(("127.0.0.1", port), f"u{n}", bytes([n]) * 16, opened)
                return await _cli_client(port)
            finally:
                for connection in opened:
                    connection.abort("test over")

    code, out, err = asyncio.run(main())
    assert code == 1, (out, err)
    assert re.fullmatch(
        r"error: cannot connect to 127\.0\.0\.1:\d+: connection refused by server: "
        r"too many connections from this address\n",
        err,
    ), err


def test_the_cool_down_refusal_is_printed_by_the_client() -> None:
    """Through the real server, which keys the cool-down on the peer's host: once mallory is
    kicked for flooding, a new session from the same address is refused, and says why, with
    the cool-down less the time the kick and the client's start took (however long that was:
    a loaded machine may take seconds to start a Python process)."""
    limits = RoomLimits()  # what the server runs with
    cooldown = max(limits.flood_cooldown, limits.burst / limits.rate)

    async def main() -> tuple[int, str, str, float]:
        async with cli_server() as port:
            opened: list[ReliableConnection] = []
            try:
                mallory, _ = await join(("127.0.0.1", port), "mallory", SESSIONS[MALLORY], opened)
                heard: list[ServerMessage] = []
                hearing = asyncio.create_task(read_all(mallory, heard))
                started = asyncio.get_running_loop().time()  # before the kick
                for i in range(200):  # at once: far past burst + flood_kick
                    await mallory.send(encode(Say(i + 1, f"spam {i}")))
                await asyncio.wait_for(hearing, WAIT_S)
                assert heard[-1] == Bye(ByeCode.FLOODING, "disconnected for sending too fast")
                code, out, err = await _cli_client(port)
                return code, out, err, asyncio.get_running_loop().time() - started
            finally:
                for connection in opened:
                    connection.abort("test over")

    code, out, err, elapsed = asyncio.run(main())
    assert code == 1, (out, err)
    refusal = re.fullmatch(
        r"error: refused: someone at your address was kicked for flooding; "
        r"try again in (\d+) s\n",
        err,
    )
    assert refusal, err
    assert cooldown - elapsed <= int(refusal[1]) <= math.ceil(cooldown), (err, elapsed)
