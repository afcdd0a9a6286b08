"""What a client shows for each event: a plain line for scripts, styled text for a terminal.

Every string that came from the network goes through :func:`neutralise` here, whatever the
server did, so what reaches the terminal holds no control or format character but the newlines
between lines we add ourselves.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Final

from .protocol import (
    LOBBY,
    Ack,
    Bye,
    Chat,
    Entered,
    Error,
    HistoryEnd,
    HistoryKind,
    HistoryStart,
    Info,
    Joined,
    Left,
    Private,
    Refused,
    Renamed,
    ServerMessage,
    Topic,
    TypingNotice,
    TypingState,
    Users,
    Welcome,
)
from .text import name_key, neutralise

__all__ = ["Event", "Notice", "mentions", "name_style", "plain", "room_of", "styled"]

NOTICE_PREFIX: Final = "*** "
NOTICE_STYLE: Final = "#888888 italic"
TIME_STYLE: Final = "#666666"
ROOM_STYLE: Final = "#5fafaf"
MENTION_STYLE: Final = "bold bg:#5f3f00"
# Colours distinct from each other on both dark and light backgrounds; a name hashes to one.
PALETTE: Final = (
    "#e06c75",
    "#98c379",
    "#e5c07b",
    "#61afef",
    "#c678dd",
    "#56b6c2",
    "#d19a66",
    "#be5046",
    "#7ec699",
    "#f08d49",
    "#6f9ef8",
    "#cc99cd",
)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the client itself has to say (connection lost, statistics, ...)."""

    text: str


Event = ServerMessage | Notice
StyledText = list[tuple[str, str]]
"""prompt_toolkit's formatted text: ``(style, text)`` fragments."""


def name_style(name: str) -> str:
    """A colour for ``name`` that is the same in every client and every session.

    Hashes the name's key, so ``Bob`` and ``bob`` (one user) get one colour.
    """
    digest = hashlib.blake2b(name_key(name).encode(), digest_size=4).digest()
    return PALETTE[int.from_bytes(digest, "big") % len(PALETTE)] + " bold"


def _notice(event: Event) -> list[str] | None:
    """The text of the ``***`` lines of a notice, None for a message or nothing to show."""
    match event:
        case Notice(text):
            return [text]
        case Welcome(name, users):
            return [f"you are {name}; here: {', '.join(users)}"]
        case Refused(_, reason):
            return [reason]
        case HistoryStart(count, _, HistoryKind.SEARCH, hits):
            return [f"search: {len(hits)} hit{'' if len(hits) == 1 else 's'}, newest last"]
        case HistoryStart(count):
            return [f"history: {count} earlier message{'' if count == 1 else 's'}"]
        case HistoryEnd(_, more):
            return ["end of history", *(["older lines: /history"] if more else [])]
        case Entered(room, topic, users):
            here = (
                [] if room == LOBBY else [f"now in {room}: {len(users)} here: {', '.join(users)}"]
            )
            return here + ([f"topic: {topic}"] if topic else [])
        case Topic(_, name, topic):
            return [f"{name} set the topic: {topic}"]
        case Joined(name):
            return [f"{name} joined"]
        case Left(name, reason, _, text):
            return [f"{name} left ({reason.value}{': ' + text if text else ''})"]
        case Renamed(old, new):
            return [f"{old} is now known as {new}"]
        case Users(names, _, away):
            gone = set(away)
            listed = [f"{name} (away)" if name in gone else name for name in names]
            return [f"{len(names)} here: {', '.join(listed)}"]
        case Info(lines):
            return list(lines)
        case Error(_, text):
            return [f"error: {text}"]
        case Bye(_, text):
            return [text]
        case TypingNotice(_, name, state):
            return [f"{name} {'is typing' if state is TypingState.ACTIVE else 'stopped typing'}"]
    return None


def room_of(event: Event) -> str | None:
    """The room an event belongs to; None for one of no room (private, welcome, ...)."""
    match event:
        case Chat(room=room) | HistoryStart(room=room) | HistoryEnd(room=room):
            return room
        case Entered(room=room) | Topic(room=room) | Joined(room=room) | Left(room=room):
            return room
        case Users(room=room) | TypingNotice(room=room):
            return room
    return None


def plain(event: Event, active: str = LOBBY) -> str | None:
    """One line per event (lines for ``info``), no trailing newline; None if not shown.

    ``NAME: TEXT`` for a message, ``* NAME TEXT`` for ``/me``, ``FROM -> TO: TEXT`` for a
    private message, ``*** ...`` for everything else; a line of a room other than ``active``
    starts with the room and a space (``#dev NAME: TEXT``).
    """
    room = room_of(event)
    prefix = "" if room is None or room == active else neutralise(room) + " "
    match event:
        case Chat(sender=sender, text=text, action=action):
            if action:
                return f"{prefix}* {neutralise(sender)} {neutralise(text)}"
            return f"{prefix}{neutralise(sender)}: {neutralise(text)}"
        case Private(sender=sender, recipient=recipient, text=text):
            return f"{neutralise(sender)} -> {neutralise(recipient)}: {neutralise(text)}"
        case Ack():
            return None
    lines = _notice(event)
    if not lines:
        return None
    return "\n".join(prefix + NOTICE_PREFIX + neutralise(line) for line in lines)


def styled(event: Event, now: float, active: str = LOBBY, me: str = "") -> StyledText | None:
    """The interactive form of :func:`plain`: a timestamp, the room when not ``active``, names
    in their colours, a line naming ``me`` highlighted.

    Messages show the server's time (history shows when it was said), notices ``now``; a time
    not of today's date shows the date too.
    """
    room = room_of(event)
    where: StyledText = (
        [] if room is None or room == active else [(ROOM_STYLE, neutralise(room) + " ")]
    )
    match event:
        case Chat(time=sent, sender=sender, text=text, action=action):
            name, text = neutralise(sender), neutralise(text)
            body = MENTION_STYLE if me and mentions(text, me) else ""
            if action:
                return [
                    *_stamp(sent, now),
                    *where,
                    (body, "* "),
                    (name_style(name), name),
                    (body, f" {text}"),
                ]
            return [*_stamp(sent, now), *where, (name_style(name), name), (body, f": {text}")]
        case Private(time=sent, sender=sender, recipient=recipient, text=text):
            # styled by the shown names, as above: a raw one may not even encode (a surrogate)
            sender, recipient = neutralise(sender), neutralise(recipient)
            return [
                *_stamp(sent, now),
                (name_style(sender), sender),
                ("", " -> "),
                (name_style(recipient), recipient),
                ("italic", f": {neutralise(text)}"),
            ]
    line = plain(event, room or active)
    if line is None:
        return None
    return [*_stamp(now, now), *where, (NOTICE_STYLE, line)]


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a word (``bob:``, ``@Bob``), caselessly."""
    pattern = r"(?<![\w.-])" + re.escape(name_key(name)) + r"(?![\w-])"
    return re.search(pattern, name_key(text)) is not None


def _stamp(moment: float, now: float) -> StyledText:
    when = time.localtime(moment)
    today = time.localtime(now)[:3] == when[:3]
    return [(TIME_STYLE, time.strftime("%H:%M:%S " if today else "%Y-%m-%d %H:%M:%S ", when))]
