"""The chat's lanes (PROTOCOL.md §12, "Lanes"): history read back travels on the low-priority
lane, everything else (the lines a reconnect missed included) on the live lane."""

from __future__ import annotations

from test_chat_server import S1, S2, Live, next_message, run_with_server

from rudp_chat.chat.lanes import HISTORY_LANE, LIVE_LANE, LaneRouter
from rudp_chat.chat.protocol import (
    Ack,
    Chat,
    Entered,
    HistoryEnd,
    HistoryKind,
    HistoryStart,
    Joined,
    Say,
    decode_server,
    encode,
)


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
