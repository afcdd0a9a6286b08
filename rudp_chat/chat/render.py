"""What a client shows for each event: a plain line for scripts, styled text for a terminal.

Every string that came from the network goes through :func:`neutralise` here, whatever the
server did, so what reaches the terminal holds no control or format character but the newlines
between lines we add ourselves.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Final

from .protocol import (
    Ack,
    Bye,
    Chat,
    Error,
    HistoryEnd,
    HistoryStart,
    Info,
    Joined,
    Left,
    Private,
    Refused,
    Renamed,
    ServerMessage,
    Users,
    Welcome,
)
from .text import name_key, neutralise

__all__ = ["Event", "Notice", "name_style", "plain", "styled"]

NOTICE_PREFIX: Final = "*** "
NOTICE_STYLE: Final = "#888888 italic"
TIME_STYLE: Final = "#666666"
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
        case HistoryStart(count):
            return [f"history: {count} earlier message{'' if count == 1 else 's'}"]
        case HistoryEnd():
            return ["end of history"]
        case Joined(name):
            return [f"{name} joined"]
        case Left(name, reason):
            return [f"{name} left ({reason.value})"]
        case Renamed(old, new):
            return [f"{old} is now known as {new}"]
        case Users(names):
            return [f"{len(names)} here: {', '.join(names)}"]
        case Info(lines):
            return list(lines)
        case Error(_, text):
            return [f"error: {text}"]
        case Bye(_, text):
            return [text]
    return None


def plain(event: Event) -> str | None:
    """One line per event (lines for ``info``), no trailing newline; None if not shown.

    ``NAME: TEXT`` for a message, ``* NAME TEXT`` for ``/me``, ``FROM -> TO: TEXT`` for a
    private message, ``*** ...`` for everything else.
    """
    match event:
        case Chat(sender=sender, text=text, action=action):
            if action:
                return f"* {neutralise(sender)} {neutralise(text)}"
            return f"{neutralise(sender)}: {neutralise(text)}"
        case Private(sender=sender, recipient=recipient, text=text):
            return f"{neutralise(sender)} -> {neutralise(recipient)}: {neutralise(text)}"
        case Ack():
            return None
    lines = _notice(event)
    if lines is None:
        return None
    return "\n".join(NOTICE_PREFIX + neutralise(line) for line in lines)


def styled(event: Event, now: float) -> StyledText | None:
    """The interactive form of :func:`plain`: a timestamp, names in their colours.

    Messages show the server's time (history shows when it was said), notices ``now``.
    """
    match event:
        case Chat(time=sent, sender=sender, text=text, action=action):
            name = neutralise(sender)
            if action:
                return [
                    *_stamp(sent),
                    ("", "* "),
                    (name_style(name), name),
                    ("", f" {neutralise(text)}"),
                ]
            return [*_stamp(sent), (name_style(name), name), ("", f": {neutralise(text)}")]
        case Private(time=sent, sender=sender, recipient=recipient, text=text):
            # styled by the shown names, as above: a raw one may not even encode (a surrogate)
            sender, recipient = neutralise(sender), neutralise(recipient)
            return [
                *_stamp(sent),
                (name_style(sender), sender),
                ("", " -> "),
                (name_style(recipient), recipient),
                ("italic", f": {neutralise(text)}"),
            ]
    line = plain(event)
    if line is None:
        return None
    return [*_stamp(now), (NOTICE_STYLE, line)]


def _stamp(moment: float) -> StyledText:
    return [(TIME_STYLE, time.strftime("%H:%M:%S ", time.localtime(moment)))]
