"""Typing notices (PROTOCOL.md §12, Typing notices): the client's timings, the board's expiry,
the messages' bytes, and over a live server: relayed to the room's other members as datagrams,
rate-limited, shown in a client's status bar until they expire."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_chat_server import FAST, S1, S2, Live, next_message, run_with_server

from rudp_chat.aio import ReliableConnection
from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.protocol import (
    LOBBY,
    ChatProtocolError,
    Error,
    ErrorCode,
    Say,
    Typing,
    TypingNotice,
    TypingState,
    decode_client,
    decode_server,
    encode,
)
from rudp_chat.chat.render import Event, plain
from rudp_chat.chat.typing import (
    MAX_SHOWN,
    RELAY_BURST,
    TYPING_EXPIRY_S,
    TYPING_REPEAT_S,
    TypingBoard,
    TypingNotifier,
    typing_line,
)

ACTIVE, DONE = TypingState.ACTIVE, TypingState.DONE


def test_the_notifier_follows_ircv3_timings() -> None:
    notifier = TypingNotifier()
    assert notifier.edited(LOBBY, "h", 0.0) == [Typing(LOBBY, ACTIVE)]
    assert notifier.edited(LOBBY, "he", 1.0) == []
    assert notifier.edited(LOBBY, "hel", TYPING_REPEAT_S - 0.01) == []
    assert notifier.edited(LOBBY, "hell", TYPING_REPEAT_S) == [Typing(LOBBY, ACTIVE)]
    assert notifier.edited(LOBBY, "", 4.0) == [Typing(LOBBY, DONE)]  # erased
    assert notifier.edited(LOBBY, "", 4.5) == []
    assert notifier.edited(LOBBY, "/join #dev", 5.0) == []  # a command is no line
    assert notifier.edited(LOBBY, "//not a command", 5.5) == [Typing(LOBBY, ACTIVE)]
    assert notifier.edited("#dev", "x", 6.0) == [Typing(LOBBY, DONE), Typing("#dev", ACTIVE)]
    assert notifier.finished() == [Typing("#dev", DONE)]  # the line was sent
    assert notifier.finished() == []


def test_the_board_expires_notices_and_forgets_on_done_or_a_line() -> None:
    board = TypingBoard()
    board.notice(TypingNotice(LOBBY, "bob", ACTIVE), 0.0)
    board.notice(TypingNotice(LOBBY, "carol", ACTIVE), 1.0)
    board.notice(TypingNotice("#dev", "dave", ACTIVE), 1.0)
    assert board.typing(LOBBY, TYPING_EXPIRY_S - 0.01) == ["bob", "carol"]
    assert board.typing(LOBBY, TYPING_EXPIRY_S) == ["carol"]  # bob's expired
    board.notice(TypingNotice(LOBBY, "carol", DONE), 2.0)
    assert board.typing(LOBBY, 2.0) == [] and board.typing("#dev", 2.0) == ["dave"]
    board.stopped("#dev", "dave")
    assert board.typing("#dev", 2.0) == []
    for index in range(MAX_SHOWN + 10):  # a server naming everyone: the board stays bounded
        board.notice(TypingNotice(LOBBY, f"n{index}", ACTIVE), 3.0)
    assert len(board.typing(LOBBY, 3.0)) == MAX_SHOWN


def test_the_status_line_and_the_plain_line() -> None:
    assert typing_line([]) == ""
    assert typing_line(["bob"]) == "bob is typing…"
    assert typing_line(["bob", "carol"]) == "bob and carol are typing…"
    assert typing_line(["a", "b", "c"]) == "3 people are typing…"
    assert plain(TypingNotice(LOBBY, "bob", ACTIVE)) == "*** bob is typing"
    assert plain(TypingNotice("#dev", "bob", DONE)) == "#dev *** bob stopped typing"


def test_the_worked_bytes_of_protocol_md() -> None:
    typing = encode(Typing(LOBBY, ACTIVE))
    assert typing.hex(" ") == (
        "83 a4 74 79 70 65 a6 74 79 70 69 6e 67 a4 72 6f 6f 6d a6 23 6c 6f 62 62 79"
        " a5 73 74 61 74 65 a6 61 63 74 69 76 65"
    )
    notice = encode(TypingNotice(LOBBY, "bob", DONE))
    assert notice.hex(" ") == (
        "84 a4 74 79 70 65 a6 74 79 70 69 6e 67 a4 72 6f 6f 6d a6 23 6c 6f 62 62 79"
        " a4 6e 61 6d 65 a3 62 6f 62 a5 73 74 61 74 65 a4 64 6f 6e 65"
    )
    assert decode_client(typing) == Typing(LOBBY, ACTIVE)
    assert decode_server(notice) == TypingNotice(LOBBY, "bob", DONE)
    with pytest.raises(ChatProtocolError):
        decode_client(encode(Typing(LOBBY, "paused")))  # type: ignore[arg-type]


async def _datagram(connection: ReliableConnection, timeout: float = 2.0) -> TypingNotice | None:
    """The next typing notice on ``connection`` (None if none comes within ``timeout``)."""
    try:
        async with asyncio.timeout(timeout):
            datagram = await connection.recv_datagram()
    except TimeoutError:
        return None
    notice = decode_server(datagram.data)
    assert isinstance(notice, TypingNotice)
    return notice


def test_a_notice_reaches_the_other_members_only_and_is_rate_limited() -> None:
    async def body(live: Live) -> None:
        alice = await live.join("alice", S1)
        bob = await live.join("bob", S2)
        alice.send_datagram(encode(Typing(LOBBY, ACTIVE)))
        assert await _datagram(bob) == TypingNotice(LOBBY, "alice", ACTIVE)
        assert await _datagram(alice, 0.3) is None  # not echoed to the typist
        alice.send_datagram(encode(Typing("#elsewhere", ACTIVE)))  # not a member there
        alice.send_datagram(encode(Say(1, "a line, not a notice")))
        assert await _datagram(bob, 0.5) is None
        for _ in range(20):  # a flood: the relay's burst, then its rate (1 per second)
            alice.send_datagram(encode(Typing(LOBBY, ACTIVE)))
        relayed = 0
        while await _datagram(bob, 0.5) is not None:
            relayed += 1
        assert 1 <= relayed <= RELAY_BURST  # one token went to the first notice

    run_with_server(body)


def test_a_notice_sent_as_a_message_is_answered_malformed() -> None:
    async def body(live: Live) -> None:
        alice = await live.join("alice", S1)
        await alice.send(encode(Typing(LOBBY, ACTIVE)))
        error = await next_message(alice, Error)
        assert isinstance(error, Error) and error.code is ErrorCode.MALFORMED
        assert "datagram" in error.text

    run_with_server(body)


def test_a_client_shows_who_is_typing_until_it_expires_and_tells_others() -> None:
    seen: list[Event] = []

    async def body(live: Live) -> None:
        alice = await live.join("alice", S1)
        options = ClientOptions(*live.address, "bob", connection=FAST, show_typing=True)
        bob = ChatClient(options, seen.append)
        running = asyncio.create_task(bob.run())
        while bob.state != "open" or "bob" not in bob.members.get(LOBBY, ()):
            await asyncio.sleep(0.01)
        alice.send_datagram(encode(Typing(LOBBY, ACTIVE)))
        while not bob.typing():
            await asyncio.sleep(0.01)
        assert bob.typing() == ["alice"] and "alice is typing…" in bob.status()
        assert bob.typing(time.monotonic() + TYPING_EXPIRY_S) == []  # expired 6 s on
        assert [e for e in seen if isinstance(e, TypingNotice)] == [
            TypingNotice(LOBBY, "alice", ACTIVE)
        ]
        await alice.send(encode(Say(1, "hello bob")))
        while bob.typing():  # her line arrived: she is done
            await asyncio.sleep(0.01)
        bob.edited("hi al")
        assert await _datagram(alice) == TypingNotice(LOBBY, "bob", ACTIVE)
        bob.submit("hi alice")
        assert await _datagram(alice) == TypingNotice(LOBBY, "bob", DONE)
        bob.quit()
        assert await running == 0

    run_with_server(body)
