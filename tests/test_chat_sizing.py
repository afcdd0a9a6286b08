"""The chat server's connection sizes: every message the server sends fits, and the caps stay a
small fraction of the library's bulk-transfer defaults."""

from __future__ import annotations

import pytest

from rudp_chat.chat.protocol import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_ID,
    MAX_TEXT_CHARS,
    Chat,
    Error,
    ErrorCode,
    Info,
    Joined,
    Private,
    Renamed,
    ServerMessage,
    Users,
    Welcome,
    encode,
)
from rudp_chat.chat.room import HELP
from rudp_chat.chat.sizing import WIDEST_LETTER, chat_connection_config, largest_server_message
from rudp_chat.chat.text import MAX_NAME_CHARS, normalise_name
from rudp_chat.core.config import ConnectionConfig

NAME = WIDEST_LETTER * MAX_NAME_CHARS
TEXT = WIDEST_LETTER * MAX_TEXT_CHARS


def worst_cases(max_users: int) -> list[ServerMessage]:
    """The largest of each kind of message the server sends with ``max_users`` users."""
    names = (NAME,) * max_users
    return [
        Welcome(NAME, names, MAX_ID, MAX_TEXT_CHARS, 1e9, MAX_ID),
        Users(names),
        Chat(MAX_ID, 1e9, NAME, TEXT, True, True),
        Private(1e9, NAME, NAME, TEXT),
        Renamed(NAME, NAME),
        Joined(NAME),
        Info(HELP),
        Error(ErrorCode.TOO_LONG, f"message too long: {MAX_CLIENT_FRAME_BYTES} characters", MAX_ID),
    ]


def test_the_widest_letter_is_a_valid_name() -> None:
    assert normalise_name(NAME) == NAME
    assert len(NAME.encode()) == 4 * MAX_NAME_CHARS


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
