"""Reading a room's stream entries back (``entry_of``): what a node wrote, or None."""

from __future__ import annotations

import pytest

from rudp_chat.chat.protocol import MAX_TEXT_CHARS, MAX_TOPIC_CHARS, Chat, Topic
from rudp_chat.chat.redisschema import entry_of
from rudp_chat.chat.text import MAX_NAME_CHARS

LINE = {b"time": b"1.5", b"sender": b"alice", b"text": b"hi", b"action": b"0"}


def test_lines_and_topics_read_back() -> None:
    assert entry_of("#r", b"3-0", LINE) == Chat(3, 1.5, "alice", "hi", room="#r")
    action = {**LINE, b"action": b"1"}
    assert entry_of("#r", b"3-0", action) == Chat(3, 1.5, "alice", "hi", True, room="#r")
    topic = {b"sender": b"bob", b"topic": b"news"}
    assert entry_of("#r", b"3-2", topic) == Topic("#r", "bob", "news")


@pytest.mark.parametrize(
    ("entry_id", "fields"),
    [
        (b"3", LINE),
        (b"x-0", LINE),
        (b"0-0", LINE),
        (b"3-0", {k: v for k, v in LINE.items() if k != b"text"}),
        (b"3-0", {**LINE, b"time": b"nan"}),
        (b"3-0", {**LINE, b"time": b"-1"}),
        (b"3-0", {**LINE, b"text": b"\xff"}),
        (b"3-0", {**LINE, b"text": b"x" * (MAX_TEXT_CHARS + 1)}),
        (b"3-0", {**LINE, b"sender": b""}),
        (b"3-0", {**LINE, b"sender": b"x" * (MAX_NAME_CHARS + 1)}),
        (b"3-1", LINE),
        (b"3-1", {b"sender": b"bob", b"topic": b"x" * (MAX_TOPIC_CHARS + 1)}),
    ],
)
def test_anything_else_is_none(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
    assert entry_of("#r", entry_id, fields) is None
