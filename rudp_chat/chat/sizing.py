"""The chat server's per-connection buffers, sized to what a chat sends rather than to the
transport's bulk-transfer defaults.

The library's defaults (4 MiB send buffer, 4 MiB receive window, 1 MiB messages) suit a file
transfer; a chat's messages are at most a 64 KiB client frame one way and a ``welcome`` naming
every user the other. A client that never acknowledges and leaves gaps everywhere can make the
server hold up to its send buffer plus its receive budget (receive window, one datagram, one
message per lane), about 12 MiB at the defaults (four lanes) and about 0.8 MiB with these
sizes (the chat's two lanes): what 100 hostile clients can pin drops from over a gigabyte to
well under 100 MiB (``benchmarks/hostile.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Final

from rudp_chat.core.config import ConnectionConfig

from .lanes import CHAT_LANES
from .protocol import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_ID,
    MAX_TEXT_CHARS,
    Chat,
    Private,
    Users,
    Welcome,
    encode,
)
from .text import MAX_NAME_CHARS, MAX_ROOM_CHARS

__all__ = ["chat_connection_config", "largest_server_message"]

WIDEST_LETTER: Final = "\U00020000"  # a CJK letter: 4 bytes of UTF-8, allowed in names
MESSAGE_SLACK: Final = 2
"""The transport takes client messages up to twice the chat's limit, so that one over the limit
is still answered by the chat (``error malformed``) instead of ending the connection."""
BUFFERED_MESSAGES: Final = 2
"""Send buffer and receive window each hold two of the largest messages: one being repaired
while the next is already on its way, ample for a chat's rates at any RTT up to seconds."""


def largest_server_message(max_users: int) -> int:
    """Bytes of the largest message the server sends with ``max_users`` users: a ``welcome``
    listing all of them, a ``users`` listing them twice (all away), or a ``chat`` or a
    ``private`` of the longest text (an ``entered`` is smaller), all names and room names of
    the widest characters."""
    name = WIDEST_LETTER * MAX_NAME_CHARS
    welcome = Welcome(name, (name,) * max_users, MAX_ID, MAX_TEXT_CHARS, 1e9, MAX_ID)
    everyone, room = (name,) * max_users, "#" + WIDEST_LETTER * (MAX_ROOM_CHARS - 1)
    users = Users(everyone, room, everyone)
    text = WIDEST_LETTER * MAX_TEXT_CHARS
    chat = Chat(MAX_ID, 1e9, name, text, True, True, room)
    private = Private(1e9, name, name, text)
    return max(len(encode(message)) for message in (welcome, users, chat, private))


def chat_connection_config(connection: ConnectionConfig, max_users: int) -> ConnectionConfig:
    """``connection`` with message size, send buffer and receive window sized for the chat
    server's connections, and the chat's two lanes (everything else as given)."""
    message = max(MESSAGE_SLACK * MAX_CLIENT_FRAME_BYTES, largest_server_message(max_users))
    return dataclasses.replace(
        connection,
        max_message_size=message,
        send_buffer_size=BUFFERED_MESSAGES * message,
        receive_window=BUFFERED_MESSAGES * message,
        lanes=CHAT_LANES,
    )
