"""Typing notices ("bob is typing…"), IRCv3 ``typing`` timings, over unreliable datagrams.

Three small machines, time as an argument: the client's :class:`TypingNotifier` (what to send
as the user edits the input line), the server's :class:`TypingRelay` (to whom, rate-limited,
never stored) and the client's :class:`TypingBoard` (who is typing where, until it expires).
A lost notice costs nothing: ``active`` is repeated every 3 s while typing lasts, and a lost
``done`` only lets the notice expire 6 s after the last ``active``. PROTOCOL.md §12.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .protocol import (
    ChatProtocolError,
    Typing,
    TypingNotice,
    TypingState,
    decode_client,
)
from .ratelimit import TokenBucket
from .room import Output, Room

__all__ = [
    "TYPING_EXPIRY_S",
    "TYPING_REPEAT_S",
    "TypingBoard",
    "TypingNotifier",
    "TypingRelay",
    "typing_line",
]

TYPING_REPEAT_S: Final = 3.0  # IRCv3 typing: a client repeats "active" at most this often
TYPING_EXPIRY_S: Final = 6.0  # IRCv3 typing: "active" not repeated within this is over
RELAY_RATE: Final = 1.0  # notices per second the server relays from one connection: one
# user typing in three rooms at once sends 1 per second, plus a "done" per line
RELAY_BURST: Final = 4
MAX_SHOWN: Final = 64  # notices a client keeps (a server could name anyone): the oldest go


def _typable(text: str) -> bool:
    """Whether the input line is a line the room will see: not blank, not a command."""
    stripped = text.lstrip()
    return bool(stripped) and (not stripped.startswith("/") or stripped.startswith("//"))


class TypingNotifier:
    """Client: turns edits of the input line into the notices to send (IRCv3 timings)."""

    __slots__ = ("_last", "_room")

    def __init__(self) -> None:
        self._room: str | None = None  # the room we told we are typing in, if any
        self._last = 0.0  # when we last told it

    def edited(self, room: str, text: str, now: float) -> list[Typing]:
        """The input line holds ``text`` for ``room`` now: ``active`` when typing starts (or
        moves to another room, after ``done`` for the old one) and every 3 s while it goes
        on; ``done`` once the line is erased or turns into a command."""
        if not _typable(text):
            return self.finished()
        out: list[Typing] = []
        if self._room != room:
            out = self.finished()
        elif now - self._last < TYPING_REPEAT_S:
            return out
        self._room, self._last = room, now
        out.append(Typing(room, TypingState.ACTIVE))
        return out

    def finished(self) -> list[Typing]:
        """The line was sent or erased: ``done``, if ``active`` was sent."""
        room, self._room = self._room, None
        return [] if room is None else [Typing(room, TypingState.DONE)]


class TypingRelay:
    """Server: relays a member's notices to the room's other members, at most ``RELAY_RATE``
    per second per connection; drops anything else (not a notice, not a member, too fast)."""

    __slots__ = ("_buckets", "_room", "dropped")

    def __init__(self, room: Room) -> None:
        self._room = room
        self._buckets: dict[int, TokenBucket] = {}  # one per connection that sent a notice
        self.dropped = 0
        """Datagrams not relayed: undecodable, not a notice, not a member, over the rate."""

    def relay(self, conn: int, data: bytes, now: float) -> list[Output]:
        """The notices to send for one datagram from ``conn``."""
        try:
            notice = decode_client(data)
        except ChatProtocolError:
            notice = None
        if not isinstance(notice, Typing):
            self.dropped += 1
            return []
        audience = self._room.audience(conn, notice.room)
        bucket = self._buckets.get(conn)
        if bucket is None:
            bucket = self._buckets[conn] = TokenBucket(RELAY_RATE, RELAY_BURST, now)
        if audience is None or not bucket.take(now):
            self.dropped += 1
            return []
        name, others = audience
        relayed = TypingNotice(notice.room, name, notice.state)
        return [(other, relayed) for other in others]

    def forget(self, conn: int) -> None:
        """``conn`` is gone (bounds the table by the connections alive)."""
        self._buckets.pop(conn, None)


class TypingBoard:
    """Client: who is typing in which room, each until ``TYPING_EXPIRY_S`` after their last
    ``active``, their ``done``, or their line arriving."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}  # (room, name) -> when it expires

    def notice(self, notice: TypingNotice, now: float) -> None:
        key = (notice.room, notice.name)
        self._until.pop(key, None)  # re-inserted last: the oldest are dropped first
        if notice.state is TypingState.ACTIVE:
            self._until[key] = now + TYPING_EXPIRY_S
            if len(self._until) > MAX_SHOWN:
                del self._until[next(iter(self._until))]

    def stopped(self, room: str, name: str) -> None:
        """``name``'s line in ``room`` arrived (or they left it): they are done typing."""
        self._until.pop((room, name), None)

    def typing(self, room: str, now: float) -> list[str]:
        """Who is typing in ``room`` at ``now``, in the order they started."""
        expired = [key for key, until in self._until.items() if until <= now]
        for key in expired:
            del self._until[key]
        return [name for (where, name) in self._until if where == room]


def typing_line(names: Iterable[str]) -> str:
    """``bob is typing…``, ``bob and carol are typing…``, ``3 people are typing…`` (or "")."""
    shown = list(names)
    if not shown:
        return ""
    if len(shown) == 1:
        return f"{shown[0]} is typing…"
    if len(shown) == 2:
        return f"{shown[0]} and {shown[1]} are typing…"
    return f"{len(shown)} people are typing…"
