"""The chat server's connection sizes: every message the server sends fits, and the caps stay a
small fraction of the library's bulk-transfer defaults."""

from __future__ import annotations

import pytest

from rudp_chat.chat.protocol import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_ID,
    MAX_TEXT_CHARS,
    MAX_TOPIC_CHARS,
    Chat,
    Entered,
    Error,
    ErrorCode,
    HistoryEnd,
    HistoryKind,
    HistoryStart,
    Info,
    Joined,
    LeaveReason,
    Left,
    Private,
    Renamed,
    ServerMessage,
    Topic,
    Users,
    Welcome,
    encode,
)
from rudp_chat.chat.room import HELP, SEARCH_PAGE
from rudp_chat.chat.sizing import WIDEST_LETTER, chat_connection_config, largest_server_message
from rudp_chat.chat.text import MAX_NAME_CHARS, MAX_ROOM_CHARS, normalise_name, normalise_room
from rudp_chat.core.config import ConnectionConfig

NAME = WIDEST_LETTER * MAX_NAME_CHARS
TEXT = WIDEST_LETTER * MAX_TEXT_CHARS
ROOM = "#" + WIDEST_LETTER * (MAX_ROOM_CHARS - 1)
TOPIC = WIDEST_LETTER * MAX_TOPIC_CHARS


def worst_cases(max_users: int) -> list[ServerMessage]:
    """The largest of each kind of message the server sends with ``max_users`` users."""
    names = (NAME,) * max_users
    return [
        Welcome(NAME, names, MAX_ID, MAX_TEXT_CHARS, 1e9, MAX_ID),
        Users(names, ROOM, names),
        Entered(ROOM, TOPIC, names),
        Topic(ROOM, NAME, TOPIC),
        Left(NAME, LeaveReason.RECONNECTED, ROOM, TOPIC),
        HistoryStart(MAX_ID, ROOM, HistoryKind.SEARCH, (MAX_ID,) * SEARCH_PAGE),
        HistoryEnd(ROOM, True),
        Chat(MAX_ID, 1e9, NAME, TEXT, True, True, ROOM),
        Private(1e9, NAME, NAME, TEXT),
        Renamed(NAME, NAME),
        Joined(NAME, ROOM),
        Info(HELP),
        Error(ErrorCode.TOO_LONG, f"message too long: {MAX_CLIENT_FRAME_BYTES} characters", MAX_ID),
    ]


def test_the_widest_letter_is_a_valid_name() -> None:
    assert normalise_name(NAME) == NAME
    assert len(NAME.encode()) == 4 * MAX_NAME_CHARS
    assert normalise_room(ROOM) == ROOM


@pytest.mark.parametrize("max_users", [1, 100, 1000, 5000])
def test_every_message_the_server_sends_fits_its_connections(max_users: int) -> None:
    config = chat_connection_config(ConnectionConfig(), max_users)
    largest = max(len(encode(message)) for message in worst_cases(max_users))
    assert largest == largest_server_message(max_users)
    assert largest <= config.max_message_size
    assert config.max_message_size >= 2 * MAX_CLIENT_FRAME_BYTES  # the chat answers oversize
    assert config.send_buffer_size == config.receive_window == 2 * config.max_message_size


def test_with_the_default_room_the_caps_are_a_sixteenth_of_the_defaults() -> None:
    defaults = ConnectionConfig()
    sized = chat_connection_config(defaults, 100)
    assert sized.max_message_size == 2 * MAX_CLIENT_FRAME_BYTES
    assert 16 * sized.send_buffer_size == defaults.send_buffer_size
    assert 16 * sized.receive_window == defaults.receive_window
    assert sized.idle_timeout == defaults.idle_timeout  # everything else as given
