"""Chat messages ↔ bytes: the only module that encodes or decodes them.

Decoding is total, like the core's codec: any bytes give a valid message or raise
:class:`ChatProtocolError`, never anything else, and allocate no more than the input's size.

Chat protocol (version 2)
=========================

Each chat message is one transport message (delivered reliably, once, in order within its lane:
live traffic and history read back travel on two lanes, see :mod:`.lanes`) holding one
msgpack map with string keys. ``type`` names the message; the other keys are exactly the fields
of its dataclass below (a missing or extra key is an error). Strings are UTF-8, lengths count
characters (code points), times are Unix seconds as float64 (up to year 9999), ``int?`` may be
nil. PROTOCOL.md §12 is the specification, with every field's meaning and worked bytes; the
tables ``_CLIENT`` and ``_SERVER`` below are its checks.

A session starts with ``hello`` (naming the rooms to rejoin after a reconnect); the server
answers ``welcome`` and, for ``#lobby`` and each of those rooms, ``entered``, a ``history``
block and ``joined``; or ``refused`` (then closes). Every ``say`` names its room and gets
exactly one ``ack``, after anything it caused was stored durably and sent; a rejected ``say``
is answered by ``error`` and then its ``ack``. The sender of a message is always taken from
the session, never from the message. Each room numbers its lines 1, 2, 3, ... (``chat.seq``).

Typing notices (``typing``) are the exception: they travel as unreliable datagrams
(``send_datagram``), are never stored or acknowledged, and the server relays them.

Client messages are at most 64 KiB, server messages at most 1 MiB. Names in server messages are
1–32 characters. Every string may still hold anything: clients must pass what they print
through :func:`rudp_chat.chat.text.neutralise`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final, cast

import msgpack

from .text import MAX_NAME_CHARS, MAX_ROOM_CHARS

__all__ = [
    "LOBBY",
    "MAX_AWAY_CHARS",
    "MAX_CLIENT_FRAME_BYTES",
    "MAX_HELLO_ROOMS",
    "MAX_ID",
    "MAX_SERVER_FRAME_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_TOPIC_CHARS",
    "PROTOCOL_VERSION",
    "SESSION_BYTES",
    "Ack",
    "Bye",
    "ByeCode",
    "Chat",
    "ChatProtocolError",
    "ClientMessage",
    "Entered",
    "Error",
    "ErrorCode",
    "Hello",
    "HistoryEnd",
    "HistoryKind",
    "HistoryStart",
    "Info",
    "Joined",
    "LeaveReason",
    "Left",
    "Private",
    "RefusalCode",
    "Refused",
    "Renamed",
    "Say",
    "ServerMessage",
    "Topic",
    "Typing",
    "TypingNotice",
    "TypingState",
    "Users",
    "Welcome",
    "decode_client",
    "decode_server",
    "encode",
]

PROTOCOL_VERSION: Final = 2  # 2: rooms, per-room ids, history paging and search
LOBBY: Final = "#lobby"  # the room everyone is in on joining
MAX_HELLO_ROOMS: Final = 64  # rooms a hello may ask to rejoin (the server's own limit is lower)
MAX_HITS: Final = 64  # search hits in one answer (the server sends fewer)
SESSION_BYTES: Final = 16  # 128 random bits: unguessable, so a session cannot be hijacked
MAX_TEXT_CHARS: Final = 4000  # a long paragraph; at 4 bytes per character still 16 KB
MAX_HELLO_NAME_CHARS: Final = 128  # raw names longer than this are not worth normalising
MAX_ID: Final = 2**63 - 1  # msgpack int64
MAX_TIME: Final = 253_402_300_799.0  # 9999-12-31T23:59:59Z: every platform can format it
MAX_INFO_LINES: Final = 64
MAX_TOPIC_CHARS: Final = 400  # a sentence or two; longer is cut by the server
MAX_AWAY_CHARS: Final = 200  # "in a meeting until 3"; IRC servers allow about as much
# 4,000 characters of 4-byte UTF-8 is 16 KB: room to answer longer text with a clear error.
MAX_CLIENT_FRAME_BYTES: Final = 64 * 1024
# The transport's default message limit; bounds a /who of a very full room.
MAX_SERVER_FRAME_BYTES: Final = 1024 * 1024


class ChatProtocolError(ValueError):
    """Bytes that are not a valid chat message (the one decode error)."""


class RefusalCode(enum.StrEnum):
    """Why ``hello`` was refused."""

    INVALID_NAME = "invalid_name"
    NAME_TAKEN = "name_taken"
    SERVER_FULL = "server_full"
    BAD_HELLO = "bad_hello"
    """Not a ``hello``, or an unsupported version."""
    COOLING_DOWN = "cooling_down"
    """The session, or someone at the same address, was just kicked for flooding."""


class ErrorCode(enum.StrEnum):
    """What was wrong with a ``say`` (or an invalid message)."""

    TOO_LONG = "too_long"
    EMPTY = "empty"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_COMMAND = "unknown_command"
    NO_SUCH_USER = "no_such_user"
    INVALID_NAME = "invalid_name"
    NAME_TAKEN = "name_taken"
    MALFORMED = "malformed"
    INVALID_ROOM = "invalid_room"
    NOT_IN_ROOM = "not_in_room"
    """The ``say`` names a room its sender is not in, or ``/part`` of such a room."""
    ROOM_FULL = "room_full"
    TOO_MANY_ROOMS = "too_many_rooms"
    """The user is in as many rooms as allowed, or the server holds as many as allowed."""
    NOT_OPERATOR = "not_operator"
    """An operator's command (``/op``, ``/kick``, ``/ban``, ``/unban``, ``/mode``, or
    ``/topic`` in a ``+t`` room) from a user who is not an operator of the room."""
    BANNED = "banned"
    """The user's key is banned from the room it asked to join."""


class ByeCode(enum.StrEnum):
    """Why the server is closing this session."""

    SHUTDOWN = "shutdown"
    FLOODING = "flooding"
    REPLACED = "replaced"
    """The same session joined again on a new connection."""
    LEFT = "left"
    """The client sent ``/quit``."""


class LeaveReason(enum.StrEnum):
    """Why a user left, as everyone else is told."""

    LEFT = "left"
    TIMED_OUT = "timed out"
    LOST = "connection lost"
    FLOODING = "kicked for flooding"
    RECONNECTED = "reconnected"
    PARTED = "parted"
    """Left this room only (``/part``), still connected."""
    KICKED = "kicked"
    """Removed from this room by an operator (``/kick``, ``/ban``), still connected."""


class TypingState(enum.StrEnum):
    """IRCv3 ``typing``'s states (``paused`` left out: nothing here would show it)."""

    ACTIVE = "active"
    """Typing now; repeated at most every 3 s while it lasts, shown for 6 s after each."""
    DONE = "done"
    """The line was sent or erased: show nothing any more."""


class HistoryKind(enum.StrEnum):
    """Which lines a ``history`` block holds."""

    LATEST = "latest"
    """The room's newest lines, on joining it."""
    BEFORE = "before"
    """Older lines, asked for by ``/history``."""
    MISSED = "missed"
    """What a reconnecting client missed since the last line it saw."""
    SEARCH = "search"
    """``/search`` hits (listed in ``hits``), each after one line of context."""


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """Base of what a client sends."""


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """Base of what the server sends."""


@dataclass(frozen=True, slots=True)
class Hello(ClientMessage):
    name: str
    session: bytes
    version: int = PROTOCOL_VERSION
    rooms: tuple[tuple[str, int], ...] = ()
    """Rooms to be in besides ``#lobby``, each with the last ``chat.seq`` seen there (0: none):
    a reconnecting client is sent what it missed."""


@dataclass(frozen=True, slots=True)
class Say(ClientMessage):
    id: int
    text: str
    room: str = LOBBY
    """The room the text is said in, and that commands act on."""


@dataclass(frozen=True, slots=True)
class Typing(ClientMessage):
    """Sent as an unreliable datagram, never as a message (PROTOCOL.md §12, Typing notices)."""

    room: str
    state: TypingState


@dataclass(frozen=True, slots=True)
class TypingNotice(ServerMessage):
    """A member's :class:`Typing`, relayed as a datagram to the room's other members."""

    room: str
    name: str
    state: TypingState


@dataclass(frozen=True, slots=True)
class Welcome(ServerMessage):
    name: str
    users: tuple[str, ...]
    acked: int
    max_text: int
    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class Refused(ServerMessage):
    code: RefusalCode
    reason: str


@dataclass(frozen=True, slots=True)
class HistoryStart(ServerMessage):
    count: int
    room: str = LOBBY
    kind: HistoryKind = HistoryKind.LATEST
    hits: tuple[int, ...] = ()
    """For ``search``: the ``seq`` of each hit among the ``count`` lines (the rest is context)."""


@dataclass(frozen=True, slots=True)
class HistoryEnd(ServerMessage):
    room: str = LOBBY
    more: bool = False
    """Whether older lines (or further hits) exist beyond this block."""


@dataclass(frozen=True, slots=True)
class Chat(ServerMessage):
    seq: int
    time: float
    sender: str
    text: str
    action: bool = False
    history: bool = False
    room: str = LOBBY


@dataclass(frozen=True, slots=True)
class Private(ServerMessage):
    time: float
    sender: str
    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class Joined(ServerMessage):
    name: str
    room: str = LOBBY


@dataclass(frozen=True, slots=True)
class Left(ServerMessage):
    name: str
    reason: LeaveReason
    room: str = LOBBY
    text: str = ""
    """The user's own words (``/part #room TEXT``, ``/quit TEXT``), possibly empty."""


@dataclass(frozen=True, slots=True)
class Renamed(ServerMessage):
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Users(ServerMessage):
    names: tuple[str, ...]
    room: str = LOBBY
    away: tuple[str, ...] = ()
    """The names among ``names`` marked away (``/away``)."""


@dataclass(frozen=True, slots=True)
class Entered(ServerMessage):
    """You are now in ``room`` (on joining the server, ``/join``, or rejoining after a
    reconnect): who is there, you included, and its topic."""

    room: str
    topic: str
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Topic(ServerMessage):
    """``name`` set the topic of ``room``."""

    room: str
    name: str
    topic: str


@dataclass(frozen=True, slots=True)
class Info(ServerMessage):
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ack(ServerMessage):
    id: int
    seq: int | None


@dataclass(frozen=True, slots=True)
class Error(ServerMessage):
    code: ErrorCode
    text: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Bye(ServerMessage):
    code: ByeCode
    text: str


# --- field checks: each returns the value or raises ChatProtocolError -----------------------

_Check = Callable[[object], object]


def _str(low: int, high: int) -> _Check:
    def check(value: object) -> object:
        if type(value) is not str or not low <= len(value) <= high:
            raise ChatProtocolError(f"must be a string of {low}..{high} characters")
        return value

    return check


def _int(low: int) -> _Check:
    def check(value: object) -> object:
        if type(value) is not int or not low <= value <= MAX_ID:
            raise ChatProtocolError(f"must be an integer in {low}..{MAX_ID}")
        return value

    return check


def _optional(inner: _Check) -> _Check:
    def check(value: object) -> object:
        return None if value is None else inner(value)

    return check


def _list(item: _Check, limit: int) -> _Check:
    def check(value: object) -> object:
        if type(value) is not tuple or len(value) > limit:
            raise ChatProtocolError(f"must be an array of at most {limit}")
        return tuple(item(element) for element in value)

    return check


def _enum(kind: type[enum.StrEnum]) -> _Check:
    allowed = {member.value: member for member in kind}

    def check(value: object) -> object:
        if type(value) is not str or value not in allowed:
            raise ChatProtocolError(f"must be one of {sorted(allowed)}")
        return allowed[value]

    return check


def _rate(value: object) -> object:
    if type(value) is not float or not 0 < value < math.inf:
        raise ChatProtocolError("must be a positive finite float")
    return value


def _time(value: object) -> object:
    if type(value) is not float or not 0 <= value <= MAX_TIME:
        raise ChatProtocolError(f"must be a float in 0..{MAX_TIME}")
    return value


def _bool(value: object) -> object:
    if type(value) is not bool:
        raise ChatProtocolError("must be a boolean")
    return value


def _pair(first: _Check, second: _Check) -> _Check:
    def check(value: object) -> object:
        if type(value) is not tuple or len(value) != 2:
            raise ChatProtocolError("must be a pair")
        return (first(value[0]), second(value[1]))

    return check


def _session(value: object) -> object:
    if type(value) is not bytes or len(value) != SESSION_BYTES:
        raise ChatProtocolError(f"must be {SESSION_BYTES} bytes")
    return value


_NAME = _str(1, MAX_NAME_CHARS)
_TEXT = _str(0, MAX_TEXT_CHARS)
_NAMES = _list(_NAME, MAX_SERVER_FRAME_BYTES)
_ROOM = _str(2, MAX_ROOM_CHARS)
_TOPIC = _str(0, MAX_TOPIC_CHARS)

_CLIENT: Final[dict[str, tuple[type[ClientMessage], dict[str, _Check]]]] = {
    "hello": (
        Hello,
        {
            "name": _str(0, MAX_HELLO_NAME_CHARS),
            "session": _session,
            "version": _int(0),
            "rooms": _list(_pair(_str(0, MAX_HELLO_NAME_CHARS), _int(0)), MAX_HELLO_ROOMS),
        },
    ),
    "say": (
        Say,
        {"id": _int(1), "text": _str(0, MAX_CLIENT_FRAME_BYTES), "room": _str(0, 128)},
    ),
    "typing": (Typing, {"room": _str(0, 128), "state": _enum(TypingState)}),
}

_SERVER: Final[dict[str, tuple[type[ServerMessage], dict[str, _Check]]]] = {
    "welcome": (
        Welcome,
        {
            "name": _NAME,
            "users": _NAMES,
            "acked": _int(0),
            "max_text": _int(1),
            "rate": _rate,
            "burst": _int(1),
        },
    ),
    "refused": (Refused, {"code": _enum(RefusalCode), "reason": _TEXT}),
    "history": (
        HistoryStart,
        {
            "count": _int(0),
            "room": _ROOM,
            "kind": _enum(HistoryKind),
            "hits": _list(_int(1), MAX_HITS),
        },
    ),
    "history_end": (HistoryEnd, {"room": _ROOM, "more": _bool}),
    "chat": (
        Chat,
        {
            "seq": _int(1),
            "time": _time,
            "sender": _NAME,
            "text": _TEXT,
            "action": _bool,
            "history": _bool,
            "room": _ROOM,
        },
    ),
    "private": (
        Private,
        {"time": _time, "sender": _NAME, "recipient": _NAME, "text": _TEXT},
    ),
    "joined": (Joined, {"name": _NAME, "room": _ROOM}),
    "left": (
        Left,
        {"name": _NAME, "reason": _enum(LeaveReason), "room": _ROOM, "text": _TEXT},
    ),
    "renamed": (Renamed, {"old": _NAME, "new": _NAME}),
    "users": (
        Users,
        {"names": _NAMES, "room": _ROOM, "away": _list(_TEXT, MAX_SERVER_FRAME_BYTES)},
    ),
    "entered": (Entered, {"room": _ROOM, "topic": _TOPIC, "users": _NAMES}),
    "topic": (Topic, {"room": _ROOM, "name": _NAME, "topic": _TOPIC}),
    "info": (Info, {"lines": _list(_TEXT, MAX_INFO_LINES)}),
    "ack": (Ack, {"id": _int(1), "seq": _optional(_int(1))}),
    "error": (Error, {"code": _enum(ErrorCode), "text": _TEXT, "id": _optional(_int(1))}),
    "bye": (Bye, {"code": _enum(ByeCode), "text": _TEXT}),
    "typing": (TypingNotice, {"room": _ROOM, "name": _NAME, "state": _enum(TypingState)}),
}

_TAGS: Final[dict[type, str]] = {  # one tag may name a client and a server message (typing)
    cls: tag for table in (_CLIENT, _SERVER) for tag, (cls, _) in table.items()
}
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode(message: ClientMessage | ServerMessage) -> bytes:
    """Serialise one message as a msgpack map (no validation: the decoder checks)."""
    body: dict[str, Any] = {"type": _TAGS[type(message)]}
    for field in fields(message):
        body[field.name] = getattr(message, field.name)
    packed: bytes = _packer.pack(body)
    return packed


def _decode(
    data: bytes, limit: int, schemas: dict[str, tuple[type[Any], dict[str, _Check]]]
) -> Any:
    size = len(data)
    if size > limit:
        raise ChatProtocolError(f"message of {size} bytes exceeds {limit}")
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types; the edge turns all into one
        raise ChatProtocolError(f"not msgpack: {exc}") from None
    if type(body) is not dict:
        raise ChatProtocolError("a chat message is a map")
    tag = body.pop("type", None)
    if type(tag) is not str or tag not in schemas:
        raise ChatProtocolError(f"unknown message type {tag!r}")
    cls, checks = schemas[tag]
    if body.keys() != checks.keys():
        raise ChatProtocolError(f"{tag} needs exactly the fields {sorted(checks)}")
    values: dict[str, object] = {}
    for name, check in checks.items():
        try:
            values[name] = check(body[name])
        except ChatProtocolError as exc:
            raise ChatProtocolError(f"{tag}.{name} {exc}") from None
    return cls(**values)


def decode_client(data: bytes) -> ClientMessage:
    """Decode what a client sent; raises :class:`ChatProtocolError` on any flaw."""
    return cast(ClientMessage, _decode(data, MAX_CLIENT_FRAME_BYTES, _CLIENT))


def decode_server(data: bytes) -> ServerMessage:
    """Decode what the server sent; raises :class:`ChatProtocolError` on any flaw."""
    return cast(ServerMessage, _decode(data, MAX_SERVER_FRAME_BYTES, _SERVER))
