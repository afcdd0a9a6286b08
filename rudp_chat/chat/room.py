"""The chat itself, sans-IO: users, names, rooms, each room's one order of lines, history
paging and search, rate limits and commands.

Inputs are calls (a user joined, said something, sent garbage, left) with the time as an
argument; each returns the ``(recipient, message)`` pairs to send, in order. Sending every
recipient's messages in that order over an ordered connection is what gives every member of a
room the same order of its lines. What must survive a crash (new lines, topics, and per session
the highest client message id processed) accumulates in a journal the shell drains with
:meth:`Room.take_journal` and commits before it sends the outputs, so nothing is acknowledged or
seen before it is stored. Older lines are read from a :class:`Store` (the SQLite history).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from .access import MAX_BANS, MAX_OPERATORS, Access
from .channel import Channel, Lines
from .departures import Departures, Memory
from .limits import MAX_PAGE, RoomLimits
from .owners import Owners, name_skeletons
from .protocol import (
    LOBBY,
    MAX_AWAY_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOPIC_CHARS,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    ByeCode,
    Chat,
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
    Users,
    Welcome,
)
from .ratelimit import TokenBucket
from .store import EmptyStore, Journal, Proposal, Store
from .text import (
    MAX_NAME_CHARS,
    ROOM_PREFIX,
    InvalidNameError,
    name_key,
    neutralise,
    normalise_name,
    normalise_room,
)

__all__ = ["HELP", "MAX_PAGE", "Output", "Room", "RoomLimits"]

log = logging.getLogger(__name__)

Output = tuple[int, ServerMessage]
"""A message and the connection (an id the shell chose) it goes to."""

BARE_PAGE: Final = 50  # lines a bare /history sends when --history-size is 0
# Lines a reconnecting client is sent per room (older ones by /history): a hello naming
# --rooms-per-user rooms (20) then queues about 4,000 messages, well within the 10,000 a slow
# client may have queued before it is dropped.
MAX_MISSED: Final = MAX_PAGE
SEARCH_PAGE: Final = 10  # hits one /search sends, each after one line of context
MAX_LISTED_ROOMS: Final = 60  # /rooms lines (an info message holds at most 64)

HELP = (
    "commands:",
    "  /join #ROOM       enter ROOM (made on first join), or switch to it",
    "  /part [#ROOM] [REASON]  leave ROOM (default: this one)",
    "  /rooms            list the rooms: name, members, topic",
    "  /topic [TEXT]     show or set this room's topic",
    "  /who              list who is in this room",
    "  /mode [+t|-t]     show this room's modes; +t: only operators set the topic",
    "  /op NAME          make NAME an operator of this room (operators only)",
    "  /kick NAME [REASON]  remove NAME from this room (operators only)",
    "  /ban NAME         ban NAME's key from this room, and kick (operators only)",
    "  /unban NAME       lift the ban on NAME's key (operators only)",
    "  /history [N]      N older lines of this room (default: as many as on joining)",
    "  /search TEXT      find TEXT in this room's history; /search alone: older hits",
    "  /me ACTION        tell what you are doing",
    "  /msg NAME TEXT    send TEXT to NAME only",
    "  /nick NEW         change your name",
    "  /away [TEXT]      mark yourself away (no TEXT: back)",
    "  /quit [REASON]    leave",
    "  /help             this list",
    "  //TEXT            send TEXT that starts with /",
)


@dataclass(slots=True)
class _Search:
    """A user's last ``/search``, so that a bare ``/search`` fetches older hits."""

    room: str
    text: str
    before: int
    """Hits are older than this ``seq``."""


@dataclass(frozen=True, slots=True)
class _Keyed:
    """A user an operator's command names, and its key (so the key is known not None)."""

    user: _User
    key: bytes


@dataclass(slots=True)
class _User:
    conn: int
    name: str
    key: str
    skeletons: tuple[str, ...]
    """:func:`name_skeletons`: each look-alike class has at most one online user."""
    owner: bytes | None
    """The client's static public key; None for a guest."""
    session: bytes
    address: str | None
    acked: int
    bucket: TokenBucket
    rooms: dict[str, int] = field(default_factory=dict)
    """Each room the user is in, with the oldest ``seq`` sent there (``/history`` goes
    before it)."""
    away: str = ""
    search: _Search | None = None
    warned: bool = False
    refused_since_warning: int = 0


class Room:
    """Everyone connected, every room with members, and for a while the allowance of who left;
    see the module docstring."""

    def __init__(
        self,
        limits: RoomLimits,
        store: Store | None = None,
        *,
        lost_within: float | None = None,
        owners: Owners | None = None,
        shared_log: bool = False,
    ) -> None:
        """Start empty, continuing what ``store`` holds (None: nothing; lines are then only
        seen live and in the journal). ``lost_within``: the seconds within which the shell
        notices a dead connection (its idle timeout), so a refusal of a taken name can say
        when a crashed owner's name frees (None: not said). ``owners``: who owns
        which name (default: nobody yet, and claims only journaled). ``shared_log``: lines are
        numbered by a log other servers share (a cluster): a line said here is journaled as a
        :class:`Proposal` and reaches the members through :meth:`deliver`."""
        self.limits = limits
        self._owners = Owners() if owners is None else owners
        self.lost_within = lost_within
        self._store: Store = EmptyStore() if store is None else store
        self._users: dict[int, _User] = {}
        self._by_key: dict[str, _User] = {}
        self._by_skeleton: dict[str, _User] = {}
        self._by_session: dict[bytes, _User] = {}
        self._channels: dict[str, Channel] = {}
        self._departures = Departures(limits.remembered)
        self._shared_log = shared_log
        self._journal_messages: list[Chat] = []
        self._journal_proposed: list[Proposal] = []
        self._journal_acked: dict[bytes, int] = {}
        self._journal_topics: dict[str, str] = {}
        self._journal_access: dict[str, Access] = {}
        self._lines = Lines(self._store, self._journal_messages)

    @property
    def names(self) -> list[str]:
        """Who is connected, in order of arrival."""
        return [user.name for user in self._users.values()]

    @property
    def remembered(self) -> int:
        """Departures remembered: an entry per session and one per address."""
        return len(self._departures)

    def members(self, room: str) -> list[str]:
        """Who is in ``room``, in order of arrival (empty if nobody)."""
        channel = self._channels.get(room)
        return [] if channel is None else [self._users[c].name for c in channel.members]

    def roster(self) -> list[tuple[bytes, str, tuple[str, ...]]]:
        """Each user's session, name and rooms (what a cluster node tells the others)."""
        return [(user.session, user.name, tuple(user.rooms)) for user in self._users.values()]

    def rooms_of(self, conn: int) -> list[str]:
        """The rooms ``conn`` is in, in the order it entered them."""
        user = self._users.get(conn)
        return [] if user is None else list(user.rooms)

    def take_journal(self) -> Journal | None:
        """Hand over (and forget) what must be stored; None if nothing."""
        claims = self._owners.take()
        if not (
            self._journal_messages
            or self._journal_proposed
            or self._journal_acked
            or self._journal_topics
            or claims
            or self._journal_access
        ):
            return None
        journal = Journal(
            tuple(self._journal_messages),
            tuple(self._journal_acked.items()),
            tuple(self._journal_topics.items()),
            claims,
            tuple(self._journal_access.items()),
            tuple(self._journal_proposed),
        )
        self._journal_messages.clear()
        self._journal_proposed.clear()
        self._journal_acked.clear()
        self._journal_topics.clear()
        self._journal_access.clear()
        return journal

    # --- inputs ------------------------------------------------------------------------------

    def join(
        self,
        conn: int,
        hello: Hello,
        now: float,
        address: str | None = None,
        owner: bytes | None = None,
    ) -> list[Output]:
        """``conn``, from host ``address`` (None: unknown), with the client's static key
        ``owner`` (None: a guest), asks to join: a welcome, then for ``#lobby`` and each room
        of ``hello.rooms`` what entering it shows; or a refusal.

        A connection of the same session (the same client, reconnecting before the server
        noticed it was gone), or one of the same key holding the name (the owner's client
        restarted after a crash), is replaced. A name held by another session, one another
        key owns, or one that looks like either (see :mod:`.owners`), is refused. A session
        or address that recently left carries on with its spent allowance, one kicked for
        flooding is refused for ``limits.flood_cooldown``: reconnecting buys no fresh burst.
        """
        if conn in self._users:
            return [(conn, Error(ErrorCode.MALFORMED, "you have already joined"))]
        if hello.version != PROTOCOL_VERSION:
            reason = f"protocol version {hello.version} is not supported (need {PROTOCOL_VERSION})"
            return [(conn, Refused(RefusalCode.BAD_HELLO, reason))]
        previous = self._by_session.get(hello.session)
        carried: TokenBucket | None = None
        if previous is None:  # (a connected session carries its own bucket over below)
            returning = self._departures.returning(hello.session, address, self._holds_bucket, now)
            if isinstance(returning, Refused):
                log.info("refused connection %d from %s: %s", conn, address, returning.reason)
                return [(conn, returning)]
            carried = returning
        try:
            name = normalise_name(hello.name)
        except InvalidNameError as exc:
            return [(conn, Refused(RefusalCode.INVALID_NAME, f"invalid name: {exc}"))]
        skeletons = name_skeletons(name)
        owned = self._owners.refusal(name, skeletons, owner)
        if owned is not None:
            return [(conn, Refused(RefusalCode.NAME_TAKEN, owned))]
        stale = [user for user in self._holders(skeletons) if user.session != hello.session]
        for holder in stale:  # replaced if the owner is back on a new session: dead or moved
            if owner is None or holder.owner != owner:
                taken = self._taken(name, holder, dies=owner is None)
                return [(conn, Refused(RefusalCode.NAME_TAKEN, taken))]
        if previous is None and not stale and len(self._users) >= self.limits.max_users:
            users = self.limits.max_users
            reason = f"the server is full ({users} user{'' if users == 1 else 's'})"
            return [(conn, Refused(RefusalCode.SERVER_FULL, reason))]
        if previous is not None:  # its tokens carry over: reconnecting refills nothing
            acked, bucket = previous.acked, previous.bucket
        else:
            acked = self._journal_acked.get(hello.session) or self._store.recall(hello.session)
            fresh = carried or TokenBucket(self.limits.rate, self.limits.burst, now)
            bucket = stale[0].bucket if stale else fresh
        out: list[Output] = []
        replaced = [previous] if previous is not None else []
        for old in [*replaced, *stale]:
            out.append((old.conn, Bye(ByeCode.REPLACED, "you connected again elsewhere")))
            out += self._remove(old, LeaveReason.RECONNECTED, "", now)
        if owner is not None:
            self._owners.claim(name, skeletons, owner)
        key = name_key(name)
        user = _User(conn, name, key, skeletons, owner, hello.session, address, acked, bucket)
        self._users[conn] = self._by_key[key] = self._by_session[hello.session] = user
        self._by_skeleton.update(dict.fromkeys(skeletons, user))
        welcome = Welcome(
            name, tuple(self.names), acked, MAX_TEXT_CHARS, self.limits.rate, self.limits.burst
        )
        out.append((conn, welcome))
        log.info("%s joined (connection %d)", name, conn)
        seen: dict[str, int | None] = {LOBBY: None, **dict(hello.rooms)}
        for raw, last in seen.items():
            out += self._enter(user, raw, last, None)
        return out

    def receive(self, conn: int, say: Say, now: float) -> list[Output]:
        """``conn`` said something: the message, a command's answer or an error, then an ack.

        A ``say`` whose id was already processed (a resend after reconnecting) is only acked.
        Ignored if ``conn`` is not (or no longer) a user.
        """
        user = self._users.get(conn)
        if user is None:
            return []
        if not self._admit(user, now):
            return self._refuse_flood(user, say.id, now)
        if say.id <= user.acked:
            return [(conn, Ack(say.id, None))]
        user.acked = self._journal_acked[user.session] = say.id
        if _command_name(say.text) == "quit":
            bye = Bye(ByeCode.LEFT, "goodbye")
            reason = neutralise(_argument(say.text))[:MAX_TOPIC_CHARS]
            left = self._remove(user, LeaveReason.LEFT, reason, now)
            return [(conn, Ack(say.id, None)), (conn, bye), *left]
        out, seq = self._perform(user, say, now)
        return [*out, (conn, Ack(say.id, seq))]

    def malformed(self, conn: int, detail: str, now: float) -> list[Output]:
        """``conn`` sent bytes that are no chat message: an error, counted against its rate."""
        user = self._users.get(conn)
        if user is None:
            return []
        if not self._admit(user, now):
            return self._refuse_flood(user, None, now)
        return [(conn, Error(ErrorCode.MALFORMED, f"malformed message: {detail}"))]

    def leave(self, conn: int, reason: LeaveReason, now: float) -> list[Output]:
        """``conn`` is gone: a leave notice in each of its rooms. Ignored if it was not a
        user."""
        user = self._users.get(conn)
        return [] if user is None else self._remove(user, reason, "", now)

    def deliver(self, chat: Chat) -> list[Output]:
        """A line the shared log numbered (see ``shared_log``): journaled, to be kept here
        too, and sent to the room's members; the room's numbering continues after it."""
        self._journal_messages.append(chat)
        channel = self._channels.get(chat.room)
        if channel is None:
            return []
        channel.next_seq = max(channel.next_seq, chat.seq + 1)
        return self._to_members(channel, chat)

    def retopic(self, topic: Topic) -> list[Output]:
        """``topic.name`` set the topic (here, or elsewhere and the shared log ordered it):
        journaled, and shown to the room's members."""
        self._journal_topics[topic.room] = topic.topic
        channel = self._channels.get(topic.room)
        if channel is None:
            return []
        channel.topic = topic.topic
        return self._to_members(channel, topic)

    def announce(self, room: str, message: ServerMessage) -> list[Output]:
        """``message`` (news from another server of a cluster) for every member of ``room``."""
        channel = self._channels.get(room)
        return [] if channel is None else self._to_members(channel, message)

    def shutdown(self, now: float) -> list[Output]:
        """The server is stopping: a goodbye to every user, and every room is empty."""
        out: list[Output] = []
        for user in self._users.values():
            out.append((user.conn, Bye(ByeCode.SHUTDOWN, "the server is shutting down")))
            log.info("%s left (kicked by shutdown)", user.name)
        self._users.clear()
        self._by_key.clear()
        self._by_skeleton.clear()
        self._by_session.clear()
        self._channels.clear()
        return out

    # --- users coming and going ----------------------------------------------------------------

    def _holders(self, skeletons: tuple[str, ...]) -> list[_User]:
        """The online users whose names look like a name with these ``skeletons``."""
        found = (self._by_skeleton.get(skeleton) for skeleton in skeletons)
        return list({id(user): user for user in found if user is not None}.values())

    def _taken(self, name: str, holder: _User, *, dies: bool) -> str:
        """Why ``name`` cannot be had while ``holder`` is here; ``dies``: and when it frees if
        the holder's connection died (a keyed client reclaims its own name at once)."""
        if holder.key == name_key(name):
            taken = f"the name {name} is taken"
        else:
            taken = (
                f"the name {name} looks like {holder.name}, who is here "
                "(names that look alike count as one)"
            )
        if self.lost_within is None or not dies:
            return taken
        return (
            f"{taken}; if it was yours on a connection that died, it frees "
            f"within {math.ceil(self.lost_within)} s"
        )

    def _holds_bucket(self, bucket: TokenBucket) -> bool:
        return any(user.bucket is bucket for user in self._users.values())

    def _to_members(self, channel: Channel, message: ServerMessage) -> list[Output]:
        return [(conn, message) for conn in channel.members]

    def _remove(self, user: _User, reason: LeaveReason, text: str, now: float) -> list[Output]:
        """``user`` is gone: out of every room (a notice to the others in each), and
        remembered."""
        out: list[Output] = []
        for room in list(user.rooms):
            out += [o for o in self._part(user, room, reason, text) if o[0] != user.conn]
        del self._users[user.conn], self._by_key[user.key], self._by_session[user.session]
        for skeleton in user.skeletons:
            del self._by_skeleton[skeleton]
        log.info("%s left (%s)", user.name, reason.value)
        refill = self.limits.burst / self.limits.rate
        if reason is LeaveReason.FLOODING:
            memory = Memory(now + max(self.limits.flood_cooldown, refill), None)
            self._departures.remember(user.session, user.address, memory, now)
        elif reason is not LeaveReason.RECONNECTED and not user.bucket.is_full(now):
            memory = Memory(now + refill, user.bucket)
            self._departures.remember(user.session, user.address, memory, now)
        return out

    def _enter(self, user: _User, raw: str, seen: int | None, say_id: int | None) -> list[Output]:
        """``user`` enters the room ``raw`` names (made if new, with the user's key as its
        operator): who is there and its topic, its latest lines (or, rejoining, those after
        ``seen``), and a join notice to every member. An ``error`` if the name, a ban or a
        limit forbids it; ``entered`` alone if already there."""
        conn = user.conn
        try:
            room = normalise_room(raw)
        except InvalidNameError as exc:
            return [(conn, Error(ErrorCode.INVALID_ROOM, f"invalid room name: {exc}", say_id))]
        channel = self._channels.get(room)
        if channel is not None and conn in channel.members:
            return [(conn, self._entered(channel))]
        limits = self.limits
        if len(user.rooms) >= limits.rooms_per_user:
            many = f"you are in {len(user.rooms)} rooms, the most allowed; /part one first"
            return [(conn, Error(ErrorCode.TOO_MANY_ROOMS, many, say_id))]
        access = self._access(room) if channel is None else channel.access
        if user.owner is not None and access is not None and user.owner in access.bans:
            return [(conn, Error(ErrorCode.BANNED, f"you are banned from {room}", say_id))]
        if channel is None:
            if len(self._channels) >= limits.max_rooms:
                full = f"the server holds {limits.max_rooms} rooms, the most allowed"
                return [(conn, Error(ErrorCode.TOO_MANY_ROOMS, full, say_id))]
            if access is None:  # made now: its creator's key (a guest has none) runs it
                creator = () if user.owner is None or room == LOBBY else (user.owner,)
                access = self._journal_access[room] = Access(creator)
            last = self._store.last_seq(room)
            pending = [c.seq for c in self._journal_messages if c.room == room]
            next_seq = max(last, *pending) + 1 if pending else last + 1
            topic = self._journal_topics.get(room, self._store.topic(room))
            channel = Channel(room, topic, next_seq, access)
            self._channels[room] = channel
        elif room != LOBBY and len(channel.members) >= limits.members_per_room:
            full = f"{room} is full ({limits.members_per_room} members)"
            return [(conn, Error(ErrorCode.ROOM_FULL, full, say_id))]
        channel.members[conn] = None
        user.rooms[room] = channel.next_seq
        out: list[Output] = [(conn, self._entered(channel))]
        if seen is not None:
            lines = self._lines.after(room, seen, MAX_MISSED)
            if lines:  # "more": some missed lines were too many to send
                more = lines[0].seq > seen + 1
                out += self._history(user, room, HistoryKind.MISSED, lines, more=more)
        else:
            lines = self._lines.before(room, channel.next_seq, limits.history_size)
            if lines:
                out += self._history(user, room, HistoryKind.LATEST, lines)
        log.info("%s entered %s", user.name, room)
        return out + self._to_members(channel, Joined(user.name, room))

    def _access(self, room: str) -> Access | None:
        """The operators, bans and modes of ``room``, which has no members (None: never made)."""
        journaled = self._journal_access.get(room)
        return journaled if journaled is not None else self._store.access(room)

    def _entered(self, channel: Channel) -> Entered:
        names = tuple(self._users[c].name for c in channel.members)
        return Entered(channel.name, channel.topic, names)

    def _history(
        self,
        user: _User,
        room: str,
        kind: HistoryKind,
        lines: list[Chat],
        hits: tuple[int, ...] = (),
        more: bool | None = None,
    ) -> list[Output]:
        """A ``history`` block of ``lines`` for ``user``, which moves its ``/history``
        cursor back to the oldest of them. ``more`` (None: whether older lines exist)."""
        conn = user.conn
        if kind is not HistoryKind.SEARCH and lines:
            user.rooms[room] = min(user.rooms[room], lines[0].seq)
        if more is None:
            more = bool(lines) and bool(self._lines.before(room, lines[0].seq, 1))
        return [
            (conn, HistoryStart(len(lines), room, kind, hits)),
            *((conn, chat) for chat in lines),
            (conn, HistoryEnd(room, more)),
        ]

    def _part(self, user: _User, room: str, reason: LeaveReason, text: str) -> list[Output]:
        """``user`` leaves ``room``, which it is in: a notice to every member, itself included;
        an emptied room is forgotten (its lines and topic stay stored)."""
        channel = self._channels[room]
        out = self._to_members(channel, Left(user.name, reason, room, text))
        del channel.members[user.conn], user.rooms[room]
        if not channel.members:
            del self._channels[room]
        return out

    # --- rate limits ---------------------------------------------------------------------------

    def _admit(self, user: _User, now: float) -> bool:
        """Spend a token; a user whose bucket refilled completely is forgiven its warning."""
        if user.warned and user.bucket.is_full(now):
            user.warned = False
        return user.bucket.take(now)

    def _refuse_flood(self, user: _User, say_id: int | None, now: float) -> list[Output]:
        if not user.warned:
            user.warned, user.refused_since_warning = True, 0
        else:
            user.refused_since_warning += 1
        if user.refused_since_warning >= self.limits.flood_kick:
            bye = Bye(ByeCode.FLOODING, "disconnected for sending too fast")
            return [(user.conn, bye), *self._remove(user, LeaveReason.FLOODING, "", now)]
        limit = f"{self.limits.rate:g} messages per second"
        error = Error(
            ErrorCode.RATE_LIMITED, f"slow down: at most {limit}, or you are disconnected", say_id
        )
        out: list[Output] = [(user.conn, error)]
        if say_id is not None:
            out.append((user.conn, Ack(say_id, None)))
        return out

    # --- commands ------------------------------------------------------------------------------

    def _perform(self, user: _User, say: Say, now: float) -> tuple[list[Output], int | None]:
        """Carry out one ``say``: its outputs, and the ``seq`` of the line it posted."""
        conn, text, say_id = user.conn, say.text, say.id
        if len(text) > MAX_TEXT_CHARS:
            limit = f"{len(text)} characters; the limit is {MAX_TEXT_CHARS}"
            return [(conn, Error(ErrorCode.TOO_LONG, f"message too long: {limit}", say_id))], None
        command = _command_name(text)
        argument = _argument(text)
        if command is None:
            return self._post(user, say.room, text.removeprefix("/"), False, say_id, now)
        if command == "me":
            return self._post(user, say.room, argument, True, say_id, now)
        if command == "help":
            return [(conn, Info(HELP))], None
        if command == "msg":
            return self._private(user, argument, say_id, now), None
        if command == "nick":
            return self._rename(user, argument, say_id), None
        if command == "join":
            return self._enter(user, argument.partition(" ")[0], None, say_id), None
        if command == "rooms":
            return [(conn, Info(self._listing()))], None
        if command == "away":
            user.away = neutralise(argument)[:MAX_AWAY_CHARS]
            state = f"you are away: {user.away}" if user.away else "you are back"
            return [(conn, Info((state,)))], None
        room_command = _ROOM_COMMANDS.get(command)
        if room_command is None:
            unknown = f"unknown command /{_quote(command)}; try /help"
            return [(conn, Error(ErrorCode.UNKNOWN_COMMAND, unknown, say_id))], None
        if command == "part" and argument.startswith(ROOM_PREFIX):
            target, _, argument = argument.partition(" ")
            try:
                room = normalise_room(target)
            except InvalidNameError as exc:
                return [(conn, Error(ErrorCode.INVALID_ROOM, str(exc), say_id))], None
        else:
            room = say.room
        if room not in user.rooms:
            return [(conn, self._not_in(room, say_id))], None
        return room_command(self, user, self._channels[room], argument.strip(), say_id), None

    def _not_in(self, room: str, say_id: int) -> Error:
        return Error(ErrorCode.NOT_IN_ROOM, f"you are not in {_quote(room)}; /join it", say_id)

    def _post(
        self, user: _User, room: str, text: str, action: bool, say_id: int, now: float
    ) -> tuple[list[Output], int | None]:
        if room not in user.rooms:
            return [(user.conn, self._not_in(room, say_id))], None
        text = neutralise(text)
        if not text.strip():
            usage = "/me needs an action" if action else "empty message"
            return [(user.conn, Error(ErrorCode.EMPTY, usage, say_id))], None
        channel = self._channels[room]
        if self._shared_log:  # numbered (its ack's seq too) once the log took it
            line = Chat(0, now, user.name, text, action, room=room)
            self._journal_proposed.append(Proposal(user.session, say_id, line))
            return [], None
        chat = Chat(channel.next_seq, now, user.name, text, action, room=room)
        channel.next_seq += 1
        self._journal_messages.append(chat)
        return self._to_members(channel, chat), chat.seq

    def _listing(self) -> tuple[str, ...]:
        """``/rooms``: the busiest rooms, one line each: name, members, topic."""
        busiest = sorted(self._channels.values(), key=lambda c: (-len(c.members), c.name))
        lines = [
            f"{c.name} {len(c.members)}" + (f" {c.topic}" if c.topic else "")
            for c in busiest[:MAX_LISTED_ROOMS]
        ]
        if len(busiest) > MAX_LISTED_ROOMS:
            lines.append(f"... and {len(busiest) - MAX_LISTED_ROOMS} more")
        return (f"{len(busiest)} room{'' if len(busiest) == 1 else 's'}:", *lines)

    def _who(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        members = [self._users[c] for c in channel.members]
        away = tuple(m.name for m in members if m.away)
        return [(user.conn, Users(tuple(m.name for m in members), channel.name, away))]

    def _leave_room(
        self, user: _User, channel: Channel, argument: str, say_id: int
    ) -> list[Output]:
        text = neutralise(argument)[:MAX_TOPIC_CHARS]
        return self._part(user, channel.name, LeaveReason.PARTED, text)

    def _topic(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        if not argument:
            shown = f"{channel.name}: {channel.topic}" if channel.topic else "no topic"
            return [(user.conn, Info((shown,)))]
        if channel.access.topic_locked and not _is_operator(user, channel):
            locked = f"{channel.name} is +t: only its operators set the topic"
            return [(user.conn, Error(ErrorCode.NOT_OPERATOR, locked, say_id))]
        topic = Topic(channel.name, user.name, neutralise(argument)[:MAX_TOPIC_CHARS])
        if self._shared_log:  # set on every node once the log ordered it (retopic)
            self._journal_proposed.append(Proposal(user.session, say_id, topic))
            return []
        return self.retopic(topic)

    def _mode(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        """``/mode``: show the room's modes; ``/mode +t`` / ``-t`` (operators): lock or
        unlock the topic."""
        if not argument:
            locked = "+t (only operators set the topic)" if channel.access.topic_locked else "-t"
            return [(user.conn, Info((f"{channel.name}: {locked}",)))]
        if argument not in ("+t", "-t"):
            usage = "usage: /mode [+t|-t]"
            return [(user.conn, Error(ErrorCode.MALFORMED, usage, say_id))]
        refusal = self._refuse_non_operator(user, channel, say_id)
        if refusal:
            return refusal
        self._set_access(channel, replace(channel.access, topic_locked=argument == "+t"))
        notice = f"{channel.name}: {user.name} set {argument}"
        return self._to_members(channel, Info((notice,)))

    def _op(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        """``/op NAME``: a member with a key becomes an operator of the room too."""
        target = self._target(user, channel, argument, "/op NAME", say_id)
        if isinstance(target, list):
            return target
        if target.key in channel.access.operators:
            return [(user.conn, Info((f"{target.user.name} is already an operator",)))]
        if len(channel.access.operators) >= MAX_OPERATORS:
            many = f"{channel.name} has {MAX_OPERATORS} operators, the most allowed"
            return [(user.conn, Error(ErrorCode.MALFORMED, many, say_id))]
        self._set_access(channel, channel.access.with_operator(target.key))
        notice = f"{channel.name}: {user.name} made {target.user.name} an operator"
        return self._to_members(channel, Info((notice,)))

    def _kick(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        """``/kick NAME [REASON]``: NAME leaves the room (``left``, reason ``kicked``); it may
        join again unless banned."""
        name, _, reason = argument.partition(" ")
        refusal = self._refuse_non_operator(user, channel, say_id)
        if refusal:
            return refusal
        target = self._by_key.get(name_key(name)) if name else None
        if target is None or target.conn not in channel.members:
            missing = f"nobody in {channel.name} is called {_quote(name)}; usage: /kick NAME"
            return [(user.conn, Error(ErrorCode.NO_SUCH_USER, missing, say_id))]
        return self._kicked(user, target, channel, reason)

    def _ban(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        """``/ban NAME``: NAME's key may not join the room, and NAME is kicked from it."""
        target = self._target(user, channel, argument, "/ban NAME", say_id)
        if isinstance(target, list):
            return target
        if target.user is user:
            return [(user.conn, Error(ErrorCode.MALFORMED, "you cannot ban yourself", say_id))]
        if target.key in channel.access.bans:
            out: list[Output] = [(user.conn, Info((f"{target.user.name} is already banned",)))]
        elif len(channel.access.bans) >= MAX_BANS:
            many = f"{channel.name} has {MAX_BANS} bans, the most allowed; /unban one first"
            return [(user.conn, Error(ErrorCode.MALFORMED, many, say_id))]
        else:
            self._set_access(channel, channel.access.with_ban(target.key))
            notice = f"{channel.name}: {user.name} banned {target.user.name}"
            out = self._to_members(channel, Info((notice,)))
        if target.user.conn in channel.members:
            out += self._kicked(user, target.user, channel, "banned")
        return out

    def _unban(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        """``/unban NAME``: lift the ban on the key of NAME, who must be online."""
        refusal = self._refuse_non_operator(user, channel, say_id)
        if refusal:
            return refusal
        target = self._by_key.get(name_key(argument)) if argument else None
        if target is None or target.owner not in channel.access.bans:
            missing = f"nobody online called {_quote(argument)} is banned from {channel.name}"
            return [(user.conn, Error(ErrorCode.NO_SUCH_USER, missing, say_id))]
        self._set_access(channel, channel.access.without_ban(target.owner))
        notice = f"{channel.name}: {user.name} lifted the ban on {target.name}"
        return self._to_members(channel, Info((notice,)))

    def _target(
        self, user: _User, channel: Channel, name: str, usage: str, say_id: int
    ) -> _Keyed | list[Output]:
        """The user (with a key) an operator's command names; or the refusal to send."""
        refusal = self._refuse_non_operator(user, channel, say_id)
        if refusal:
            return refusal
        target = self._by_key.get(name_key(name)) if name else None
        if target is None:
            missing = f"nobody here is called {_quote(name)}; usage: {usage}"
            return [(user.conn, Error(ErrorCode.NO_SUCH_USER, missing, say_id))]
        if target.owner is None:
            guest = f"{target.name} is a guest (no client key): /kick works, {usage} does not"
            return [(user.conn, Error(ErrorCode.MALFORMED, guest, say_id))]
        if usage.startswith("/op") and target.conn not in channel.members:
            absent = f"{target.name} is not in {channel.name}"
            return [(user.conn, Error(ErrorCode.NO_SUCH_USER, absent, say_id))]
        return _Keyed(target, target.owner)

    def _refuse_non_operator(self, user: _User, channel: Channel, say_id: int) -> list[Output]:
        """An error for ``user`` unless it is an operator of ``channel``."""
        if _is_operator(user, channel):
            return []
        if not channel.access.operators:
            why = f"{channel.name} has no operators"
        else:
            why = f"you are not an operator of {channel.name}"
        return [(user.conn, Error(ErrorCode.NOT_OPERATOR, why, say_id))]

    def _set_access(self, channel: Channel, access: Access) -> None:
        channel.access = self._journal_access[channel.name] = access

    def _kicked(self, user: _User, target: _User, channel: Channel, reason: str) -> list[Output]:
        """``target`` is removed from ``channel`` by ``user``: a ``left`` to every member."""
        reason = neutralise(reason).strip()
        text = f"by {user.name}" + (f": {reason}" if reason else "")
        log.info("%s kicked %s from %s", user.name, target.name, channel.name)
        return self._part(target, channel.name, LeaveReason.KICKED, text[:MAX_TOPIC_CHARS])

    def _older(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        """``/history [N]``: the N lines before the oldest this session was sent there."""
        count = self.limits.history_size or BARE_PAGE
        if argument:
            if not argument.isdecimal() or not 1 <= int(argument) <= MAX_PAGE:
                usage = f"usage: /history [N], N from 1 to {MAX_PAGE}"
                return [(user.conn, Error(ErrorCode.MALFORMED, usage, say_id))]
            count = int(argument)
        lines = self._lines.before(channel.name, user.rooms[channel.name], count)
        if not lines:
            return [(user.conn, Info((f"{channel.name}: no older lines",)))]
        return self._history(user, channel.name, HistoryKind.BEFORE, lines)

    def _search(self, user: _User, channel: Channel, argument: str, say_id: int) -> list[Output]:
        """``/search TEXT``: the newest hits, each after the line before it; a bare
        ``/search`` continues the last search of this room with older hits."""
        room, last = channel.name, user.search
        if argument:
            last = user.search = _Search(room, argument, channel.next_seq)
        elif last is None or last.room != room:
            usage = "usage: /search TEXT (then /search alone for older hits)"
            return [(user.conn, Error(ErrorCode.EMPTY, usage, say_id))]
        found = self._store.search(room, last.text, last.before, SEARCH_PAGE + 1)
        more, hits = len(found) > SEARCH_PAGE, found[-SEARCH_PAGE:]
        if not hits:
            user.search = None
            return [(user.conn, Info((f"{room}: no more lines match {_quote(last.text)}",)))]
        last.before = hits[0].seq
        shown: dict[int, Chat] = {}
        for hit in hits:
            for line in self._store.before(room, hit.seq, 1):
                shown.setdefault(line.seq, line)
            shown[hit.seq] = hit
        lines = [shown[seq] for seq in sorted(shown)]
        found_seqs = tuple(hit.seq for hit in hits)
        return self._history(user, room, HistoryKind.SEARCH, lines, found_seqs, more)

    def _private(self, user: _User, argument: str, say_id: int, now: float) -> list[Output]:
        target, _, text = argument.partition(" ")
        text = neutralise(text)
        if not target or not text.strip():
            return [(user.conn, Error(ErrorCode.EMPTY, "usage: /msg NAME TEXT", say_id))]
        recipient = self._by_key.get(name_key(target))
        if recipient is None:
            missing = f"nobody here is called {_quote(target)}"
            return [(user.conn, Error(ErrorCode.NO_SUCH_USER, missing, say_id))]
        message = Private(now, user.name, recipient.name, text)
        if recipient is user:
            return [(user.conn, message)]
        out: list[Output] = [(recipient.conn, message), (user.conn, message)]
        if recipient.away:
            out.append((user.conn, Info((f"{recipient.name} is away: {recipient.away}",))))
        return out

    def _rename(self, user: _User, argument: str, say_id: int) -> list[Output]:
        try:
            name = normalise_name(argument)
        except InvalidNameError as exc:
            return [(user.conn, Error(ErrorCode.INVALID_NAME, f"invalid name: {exc}", say_id))]
        skeletons = name_skeletons(name)
        refusal = self._owners.refusal(name, skeletons, user.owner)
        holder = next((other for other in self._holders(skeletons) if other is not user), None)
        if refusal is None and holder is not None:
            refusal = self._taken(name, holder, dies=False)
        if refusal is not None:
            return [(user.conn, Error(ErrorCode.NAME_TAKEN, refusal, say_id))]
        if name == user.name:
            return [(user.conn, Info((f"you are already called {name}",)))]
        if user.owner is not None:
            self._owners.claim(name, skeletons, user.owner)
        old = user.name
        del self._by_key[user.key]
        for skeleton in user.skeletons:
            del self._by_skeleton[skeleton]
        user.name, user.key, user.skeletons = name, name_key(name), skeletons
        self._by_key[user.key] = user
        self._by_skeleton.update(dict.fromkeys(skeletons, user))
        log.info("%s is now known as %s", old, name)
        return [(conn, Renamed(old, name)) for conn in self._users]


_RoomCommand = Callable[[Room, _User, Channel, str, int], list[Output]]
_ROOM_COMMANDS: Final[dict[str, _RoomCommand]] = {
    "who": Room._who,
    "part": Room._leave_room,
    "topic": Room._topic,
    "history": Room._older,
    "search": Room._search,
    "mode": Room._mode,
    "op": Room._op,
    "kick": Room._kick,
    "ban": Room._ban,
    "unban": Room._unban,
}
"""Commands that act on one room the user is in: the ``say``'s room, or for ``/part`` the
room named first."""


def _is_operator(user: _User, channel: Channel) -> bool:
    return user.owner is not None and user.owner in channel.access.operators


def _command_name(text: str) -> str | None:
    """``"msg"`` for ``"/MSG bob hi"``; None for plain text, including ``"//escaped"``."""
    if not text.startswith("/") or text.startswith("//"):
        return None
    return text[1:].partition(" ")[0].lower()


def _argument(text: str) -> str:
    """What follows a command word: ``"bob hi"`` for ``"/msg bob hi"``."""
    return text.partition(" ")[2].strip()


def _quote(text: str) -> str:
    """``text`` made harmless and short enough to echo in an error."""
    text = neutralise(text)
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"
