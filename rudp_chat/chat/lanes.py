"""Which transport lane carries each chat message (PROTOCOL.md §12, "Lanes").

Live traffic (lines, notices, acks) goes on a high-priority lane; the history blocks a user
reads back (the latest lines on entering a room, ``/history`` pages, ``/search`` hits) on a
low-priority one, so a long scrollback never delays a live line: the transport sends the live
lane's fragments first and delivers each lane on its own (:mod:`rudp_chat.core.lanes`). The
lines a reconnect missed stay on the live lane: the client shows them as live lines, in order
with what follows them.
"""

from __future__ import annotations

from typing import Final

from rudp_chat.core.lanes import LaneConfig

from .protocol import HistoryEnd, HistoryKind, HistoryStart, ServerMessage

__all__ = ["CHAT_LANES", "HISTORY_LANE", "LIVE_LANE", "LaneRouter"]

LIVE_LANE: Final = 0
HISTORY_LANE: Final = 1
CHAT_LANES: Final = (LaneConfig(priority=0), LaneConfig(priority=1))
"""The chat's connections have these two lanes; a client may send on the live lane only."""


class LaneRouter:
    """The lane of each message the server sends one client, in sending order: a history block
    (``history`` start, its lines, ``history-end``) read back goes on :data:`HISTORY_LANE`
    whole, everything else on :data:`LIVE_LANE`."""

    __slots__ = ("_in_block",)

    def __init__(self) -> None:
        self._in_block = False

    def lane(self, message: ServerMessage) -> int:
        if isinstance(message, HistoryStart):
            self._in_block = message.kind is not HistoryKind.MISSED
        lane = HISTORY_LANE if self._in_block else LIVE_LANE
        if isinstance(message, HistoryEnd):
            self._in_block = False
        return lane
