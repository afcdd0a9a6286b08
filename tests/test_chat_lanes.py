"""The chat's lanes (PROTOCOL.md §12, "Lanes"): history read back travels on the low-priority
lane, everything else (the lines a reconnect missed included) on the live lane."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from test_chat_server import FAST, S1, S2, Live, next_message, run_with_server

from rudp_chat.aio import ReliableConnection, serve
from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.lanes import HISTORY_LANE, LIVE_LANE, LaneRouter
from rudp_chat.chat.protocol import (
    Ack,
    Bye,
    ByeCode,
    Chat,
    Entered,
    Hello,
    HistoryEnd,
    HistoryKind,
    HistoryStart,
    Joined,
    Say,
    Welcome,
    decode_client,
    decode_server,
    encode,
)
from rudp_chat.chat.render import Event, Notice
from rudp_chat.chat.room import RoomLimits
from rudp_chat.chat.sizing import chat_connection_config
from rudp_chat.core.config import ListenerConfig


def line(seq: int) -> Chat:
    return Chat(seq, 0.0, "alice", f"line {seq}", history=True)


def test_a_history_block_goes_whole_on_the_history_lane_unless_it_replays_missed_lines() -> None:
    router = LaneRouter()
    read_back = [HistoryStart(2, kind=HistoryKind.BEFORE), line(1), line(2), HistoryEnd()]
    assert [router.lane(m) for m in read_back] == [HISTORY_LANE] * 4
    assert router.lane(Joined("bob")) == LIVE_LANE  # the block ended
    missed = [HistoryStart(1, kind=HistoryKind.MISSED), line(3), HistoryEnd()]
    assert [router.lane(m) for m in missed] == [LIVE_LANE] * 3
    assert router.lane(Chat(4, 0.0, "alice", "live")) == LIVE_LANE


def test_entering_sends_the_latest_lines_on_the_history_lane() -> None:
    async def body(live: Live) -> None:
        alice = await live.join("alice", S1)
        for say_id in (1, 2):
            await alice.send(encode(Say(say_id, f"line {say_id}")))
            assert isinstance(await next_message(alice, Ack), Ack)
        bob = await live.join("bob", S2)
        lanes: dict[str, int] = {}
        while "HistoryEnd" not in lanes or "Joined" not in lanes:
            received = await bob.receive()
            message = decode_server(received.data)
            assert lanes.setdefault(type(message).__name__, received.lane) == received.lane
        assert lanes["Entered"] == lanes["Joined"] == LIVE_LANE
        assert lanes["HistoryStart"] == lanes["Chat"] == lanes["HistoryEnd"] == HISTORY_LANE
        await alice.send(encode(Say(3, "live")))
        while True:
            received = await bob.receive()
            message = decode_server(received.data)
            if isinstance(message, Chat):
                assert (message.text, message.history, received.lane) == ("live", False, LIVE_LANE)
                break
            assert not isinstance(message, Entered)
        await alice.close()
        await bob.close()

    assert run_with_server(body) == 0


def test_the_client_shows_a_history_block_whole_even_when_a_live_line_overtakes_it() -> None:
    """A server (played by the test) sends a block's start and a line on the history lane, a
    live ``joined`` on the live lane, then the block's end: the client shows ``joined`` first
    and the block after it, uncut."""

    async def script(carol: ReliableConnection) -> None:
        await carol.send(encode(Welcome("carol", ("carol",), 0, 1000, 10.0, 10)))
        await carol.send(encode(HistoryStart(1)), HISTORY_LANE)
        await carol.send(encode(line(1)), HISTORY_LANE)
        await acknowledged(carol)  # the block's start is in, and shown without the fix
        await carol.send(encode(Joined("dave")), LIVE_LANE)
        await acknowledged(carol)  # the live line arrives while the block is open
        await carol.send(encode(HistoryEnd()), HISTORY_LANE)

    seen = shown_by_client(script)
    kinds = [type(event).__name__ for event in seen if not isinstance(event, Notice)]
    assert kinds[kinds.index("Joined") :][:4] == ["Joined", "HistoryStart", "Chat", "HistoryEnd"]


def test_the_client_keeps_a_history_block_that_overtakes_the_welcome() -> None:
    """Lanes are independent, so on a lossy path the history read back on joining can arrive
    before the welcome (its datagram lost, the block's not): the client takes the welcome as
    the answer to its hello and shows the block after it, instead of giving up on the
    connection. The test plays the server and sends the block first."""

    async def script(carol: ReliableConnection) -> None:
        for message in (HistoryStart(1), line(1), HistoryEnd()):
            await carol.send(encode(message), HISTORY_LANE)
        await acknowledged(carol)  # the whole block is in before the welcome is sent
        await carol.send(encode(Welcome("carol", ("carol",), 0, 1000, 10.0, 10)))

    seen = shown_by_client(script)
    assert not [e for e in seen if isinstance(e, Notice) and "welcome" in e.text]
    kinds = [type(event).__name__ for event in seen if not isinstance(event, Notice)]
    assert kinds[kinds.index("Welcome") :][:4] == ["Welcome", "HistoryStart", "Chat", "HistoryEnd"]


def shown_by_client(script: Callable[[ReliableConnection], Awaitable[None]]) -> list[Event]:
    """What a chat client (carol) shows while the test plays its server: ``script`` runs
    after carol's hello, then the server says goodbye and the client must exit 0."""
    seen: list[Event] = []

    async def main() -> None:
        sized = chat_connection_config(FAST, RoomLimits().max_users)
        async with await serve("127.0.0.1", 0, config=ListenerConfig(connection=sized)) as server:
            options = ClientOptions(*server.address, "carol", connection=FAST)
            running = asyncio.create_task(ChatClient(options, seen.append).run())
            carol = await server.accept()
            assert isinstance(decode_client(await carol.recv()), Hello)
            await script(carol)
            await acknowledged(carol)  # the live lane goes first: the goodbye must not overtake
            await carol.send(encode(Bye(ByeCode.SHUTDOWN, "test over")), LIVE_LANE)
            assert await running == 0
            await carol.close()

    asyncio.run(asyncio.wait_for(main(), 20))
    return seen


async def acknowledged(connection: ReliableConnection) -> None:
    """Until the peer has acknowledged everything sent."""
    while connection.stats().send_buffered_bytes:
        await asyncio.sleep(0.01)
