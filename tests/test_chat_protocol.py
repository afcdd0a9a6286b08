"""The chat codec: every message round-trips, and any bytes decode or raise ChatProtocolError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp_chat.chat.protocol import (
    MAX_CLIENT_FRAME_BYTES,
    SESSION_BYTES,
    Ack,
    Bye,
    ByeCode,
    Chat,
    ChatProtocolError,
    ClientMessage,
    Entered,
    Error,
    ErrorCode,
    Hello,
    HistoryEnd,
    HistoryKind,
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
    Topic,
    Typing,
    TypingNotice,
    TypingState,
    Users,
    Welcome,
    decode_client,
    decode_server,
    encode,
)

SESSION = bytes(range(SESSION_BYTES))

CLIENT_MESSAGES: list[ClientMessage] = [
    Hello("alice", SESSION),
    Hello("", SESSION, 7),
    Say(1, "hello"),
    Say(2**63 - 1, "/msg bob \x1b[2J"),
    Say(3, "/part bye", "#dev"),
    Hello("alice", SESSION, rooms=(("#lobby", 7), ("#dev", 0))),
    Typing("#dev", TypingState.ACTIVE),
]

SERVER_MESSAGES: list[ServerMessage] = [
    Welcome("alice", ("alice", "bob"), 0, 4000, 20.0, 40),
    Refused(RefusalCode.NAME_TAKEN, "the name bob is taken"),
    HistoryStart(3),
    HistoryStart(4, "#dev", HistoryKind.SEARCH, (12, 17)),
    HistoryEnd(),
    HistoryEnd("#dev", more=True),
    Entered("#dev", "rooms and history", ("alice", "bob")),
    Topic("#dev", "alice", "rooms and history"),
    Chat(1, 1700000000.5, "bob", "hi", False, True),
    Chat(2, 0.0, "bob", "waves", action=True),
    Chat(3, 0.0, "bob", "in dev", room="#dev"),
    Private(1700000000.0, "bob", "carol", "psst"),
    Joined("carol"),
    Left("carol", LeaveReason.TIMED_OUT),
    Left("carol", LeaveReason.PARTED, "#dev", "lunch"),
    Renamed("bob", "robert"),
    Users(("alice", "robert")),
    Users(("alice", "robert"), "#dev", ("robert",)),
    Info(("commands:", "  /who")),
    Ack(5, 17),
    Ack(6, None),
    Error(ErrorCode.TOO_LONG, "message too long", 7),
    Error(ErrorCode.MALFORMED, "malformed message"),
    Bye(ByeCode.SHUTDOWN, "the server is shutting down"),
    TypingNotice("#dev", "bob", TypingState.DONE),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=repr)
def test_client_messages_round_trip(message: ClientMessage) -> None:
    assert decode_client(encode(message)) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=repr)
def test_server_messages_round_trip(message: ServerMessage) -> None:
    assert decode_server(encode(message)) == message


def test_a_direction_does_not_accept_the_other_directions_messages() -> None:
    with pytest.raises(ChatProtocolError, match="unknown message type"):
        decode_client(encode(Ack(1, None)))
    with pytest.raises(ChatProtocolError, match="unknown message type"):
        decode_server(encode(Say(1, "hi")))


def _packed(body: object) -> bytes:
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([1, 2], "is a map"),
        ({"type": "say", "id": 1}, "exactly the fields"),
        ({"type": "say", "id": 1, "text": "x", "sender": "mallory"}, "exactly the fields"),
        ({"type": "say", "id": True, "text": "x", "room": "#lobby"}, r"say\.id must be an integer"),
        ({"type": "say", "id": 0, "text": "x", "room": "#lobby"}, r"say\.id must be an integer"),
        ({"type": "say", "id": 1, "text": b"x", "room": "#lobby"}, r"say\.text must be a string"),
        (
            {"type": "hello", "name": "a", "session": b"short", "version": 2, "rooms": []},
            "16 bytes",
        ),
        (
            {"type": "hello", "name": "a", "session": bytes(16), "version": 2, "rooms": [["#a"]]},
            "pair",
        ),
        ({"type": 3}, "unknown message type"),
        ({b"type": "say"}, "unknown message type"),
    ],
)
def test_malformed_client_frames_raise_one_error(body: object, complaint: str) -> None:
    with pytest.raises(ChatProtocolError, match=complaint):
        decode_client(_packed(body))


def test_oversized_and_truncated_frames_raise_one_error() -> None:
    with pytest.raises(ChatProtocolError, match="exceeds"):
        decode_client(encode(Say(1, "x" * MAX_CLIENT_FRAME_BYTES)))
    with pytest.raises(ChatProtocolError, match="not msgpack"):
        decode_client(encode(Say(1, "hello"))[:-2])


def test_times_and_rates_must_be_plausible() -> None:
    chat = {"type": "chat", "seq": 1, "sender": "a", "text": "", "action": False, "room": "#a"}
    with pytest.raises(ChatProtocolError, match=r"chat\.time"):
        decode_server(_packed(chat | {"history": False, "time": 1e300}))
    welcome = {"type": "welcome", "name": "a", "users": [], "acked": 0, "max_text": 1}
    with pytest.raises(ChatProtocolError, match=r"welcome\.rate"):
        decode_server(_packed(welcome | {"rate": float("nan"), "burst": 1}))
    with pytest.raises(ChatProtocolError, match=r"left\.reason"):
        left = {"type": "left", "name": "a", "reason": "vanished", "room": "#a", "text": ""}
        decode_server(_packed(left))


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_the_one_error(data: bytes) -> None:
    for decode in (decode_client, decode_server):
        with contextlib.suppress(ChatProtocolError):
            decode(data)


_TAGS = ["hello", "say", "welcome", "chat", "private", "ack", "error", "bye", "users", "info"]
_TAGS += ["history", "history_end", "entered", "topic", "left", "typing"]
_FIELDS = ["name", "session", "version", "id", "text", "seq", "time", "sender", "users", "lines"]
_FIELDS += ["room", "rooms", "kind", "hits", "more", "topic", "away", "count", "reason", "state"]
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@given(st.sampled_from(_TAGS), st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=7))
def test_structured_garbage_decodes_or_raises_the_one_error(
    tag: str, body: dict[str, object]
) -> None:
    data = _packed({"type": tag, **body})
    for decode in (decode_client, decode_server):
        try:
            message = decode(data)
        except ChatProtocolError:
            continue
        assert decode(encode(message)) == message
