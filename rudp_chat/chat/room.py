"""The chat itself, sans-IO: users, names, the one order of messages, rate limits and commands.

Inputs are calls (a user joined, said something, sent garbage, left) with the time as an
argument; each returns the ``(recipient, message)`` pairs to send, in order. Sending every
recipient's messages in that order over an ordered connection is what gives every client the
same order. What must survive a crash (new messages, and per session the highest client message
id processed) accumulates in a journal the shell drains with :meth:`Room.take_journal` and
commits before it sends the outputs, so nothing is acknowledged or seen before it is stored.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from .owners import Claim, Owners, name_skeletons
from .protocol import (
    MAX_TEXT_CHARS,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    ByeCode,
    Chat,
    Error,
    ErrorCode,
    Hello,
    HistoryEnd,
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
    Users,
    Welcome,
)
from .ratelimit import TokenBucket
from .text import MAX_NAME_CHARS, InvalidNameError, name_key, neutralise, normalise_name

__all__ = ["HELP", "Journal", "Output", "Room", "RoomLimits"]

log = logging.getLogger(__name__)

Output = tuple[int, ServerMessage]
"""A message and the connection (an id the shell chose) it goes to."""

HELP = (
    "commands:",
    "  /who             list who is here",
    "  /me ACTION       tell what you are doing",
    "  /msg NAME TEXT   send TEXT to NAME only",
    "  /nick NEW        change your name",
    "  /quit            leave",
    "  /help            this list",
    "  //TEXT           send TEXT that starts with /",
)


@dataclass(frozen=True, slots=True)
class RoomLimits:
    """How much the room takes. Raises ``ValueError`` when a value cannot work."""

    max_users: int = 100
    history_size: int = 20
    """Messages a joining user is shown."""
    rate: float = 20.0
    """Messages per second a user may send, sustained (faster than anyone types)."""
    burst: int = 40
    """Messages a user may send at once (a pasted paragraph)."""
    flood_kick: int = 20
    """Messages refused after the warning before the user is disconnected."""
    flood_cooldown: float = 30.0
    """Seconds a session kicked for flooding, and its source address, are refused (at least
    ``burst / rate``, the refill time). A user who left unkicked comes back, by session or by
    address, to its spent bucket until it would have refilled. So reconnecting buys no fresh
    burst: the bound holds per person, not per session. Everyone behind that address (a NAT,
    an office) shares the penalty: the accepted price of keying on the address, which a
    flooder cannot change as easily as its session."""
    remembered: int = 10_000
    """Departed users' allowances and cool-downs kept (an entry per session and per address;
    expired ones are dropped, past this the oldest): memory stays bounded under any churn."""

    def __post_init__(self) -> None:
        if self.max_users < 1 or self.history_size < 0 or self.flood_kick < 1:
            raise ValueError("need max_users >= 1, history_size >= 0 and flood_kick >= 1")
        if not self.rate > 0 or self.burst < 1:
            raise ValueError("need rate > 0 messages per second and burst >= 1")
        if not 0 <= self.flood_cooldown < math.inf or self.remembered < 2:
            # a departure is remembered under two keys, its session and its address
            raise ValueError("need 0 <= flood_cooldown < inf seconds and remembered >= 2")


@dataclass(frozen=True, slots=True)
class Journal:
    """What must be stored before the outputs that produced it are sent."""

    messages: tuple[Chat, ...]
    """New public messages, in ``seq`` order."""
    acked: tuple[tuple[bytes, int], ...]
    """``(session, id)``: the highest ``Say.id`` now processed for each session that changed."""
    claims: tuple[Claim, ...] = ()
    """Names their owners' keys used (claimed, or ownership refreshed)."""


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
    warned: bool = False
    refused_since_warning: int = 0


@dataclass(frozen=True, slots=True)
class _Memory:
    """What the room keeps of a departed user, under its session and under its address."""

    until: float
    """When it is forgotten: by then a fresh bucket is no fuller than this one would be."""
    bucket: TokenBucket | None
    """The allowance a returning user carries on; None: kicked, refused until ``until``."""


class Room:
    """Everyone connected, everything said, and for a while the allowance of who left; see
    the module docstring."""

    def __init__(
        self,
        limits: RoomLimits,
        *,
        next_seq: int = 1,
        recent: Iterable[Chat] = (),
        recall: Callable[[bytes], int] = lambda session: 0,
        lost_within: float | None = None,
        owners: Owners | None = None,
    ) -> None:
        """Start empty. ``next_seq`` continues a stored history whose last messages are
        ``recent``; ``recall(session)`` returns the stored highest processed ``Say.id`` of a
        session that is not connected (0 if unknown). ``lost_within``: the seconds within
        which the shell notices a dead connection (its idle timeout), so a refusal of a taken
        name can say when a crashed owner's name frees (None: not said). ``owners``: who owns
        which name (default: nobody yet, and claims only journaled)."""
        self.limits = limits
        self._owners = Owners() if owners is None else owners
        self.lost_within = lost_within
        self._next_seq = next_seq
        self._recent: deque[Chat] = deque(
            (replace(chat, history=True) for chat in recent), maxlen=limits.history_size
        )
        self._recall = recall
        self._users: dict[int, _User] = {}
        self._by_key: dict[str, _User] = {}
        self._by_skeleton: dict[str, _User] = {}
        self._by_session: dict[bytes, _User] = {}
        self._memory: dict[bytes | str, _Memory] = {}  # oldest first; keys: session, address
        self._journal_messages: list[Chat] = []
        self._journal_acked: dict[bytes, int] = {}

    @property
    def names(self) -> list[str]:
        """Who is here, in order of arrival."""
        return [user.name for user in self._users.values()]

    def take_journal(self) -> Journal | None:
        """Hand over (and forget) what must be stored; None if nothing."""
        claims = self._owners.take()
        if not self._journal_messages and not self._journal_acked and not claims:
            return None
        messages, acked = tuple(self._journal_messages), tuple(self._journal_acked.items())
        journal = Journal(messages, acked, claims)
        self._journal_messages.clear()
        self._journal_acked.clear()
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
        ``owner`` (None: a guest), asks to join: a welcome, history and a join notice, or a
        refusal.

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
            returning = self._returning(hello.session, address, now)
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
            acked = self._journal_acked.get(hello.session) or self._recall(hello.session)
            fresh = carried or TokenBucket(self.limits.rate, self.limits.burst, now)
            bucket = stale[0].bucket if stale else fresh
        out: list[Output] = []
        replaced = [previous] if previous is not None else []
        for old in [*replaced, *stale]:
            out.append((old.conn, Bye(ByeCode.REPLACED, "you connected again elsewhere")))
            out += self._remove(old, LeaveReason.RECONNECTED, now)
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
        if self._recent:
            out.append((conn, HistoryStart(len(self._recent))))
            out += [(conn, chat) for chat in self._recent]
            out.append((conn, HistoryEnd()))
        log.info("%s joined (connection %d)", name, conn)
        return out + self._broadcast(Joined(name))

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
            left = self._remove(user, LeaveReason.LEFT, now)
            return [(conn, Ack(say.id, None)), (conn, bye), *left]
        out, seq = self._perform(user, say.text, say.id, now)
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
        """``conn`` is gone: a leave notice to everyone else. Ignored if it was not a user."""
        user = self._users.get(conn)
        return [] if user is None else self._remove(user, reason, now)

    def shutdown(self, now: float) -> list[Output]:
        """The server is stopping: a goodbye to every user, and the room is empty."""
        out: list[Output] = []
        for user in self._users.values():
            out.append((user.conn, Bye(ByeCode.SHUTDOWN, "the server is shutting down")))
            log.info("%s left (kicked by shutdown)", user.name)
        self._users.clear()
        self._by_key.clear()
        self._by_skeleton.clear()
        self._by_session.clear()
        return out

    # --- helpers -----------------------------------------------------------------------------

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

    def _broadcast(self, message: ServerMessage) -> list[Output]:
        return [(conn, message) for conn in self._users]

    def _remove(self, user: _User, reason: LeaveReason, now: float) -> list[Output]:
        del self._users[user.conn], self._by_key[user.key], self._by_session[user.session]
        for skeleton in user.skeletons:
            del self._by_skeleton[skeleton]
        log.info("%s left (%s)", user.name, reason.value)
        refill = self.limits.burst / self.limits.rate
        if reason is LeaveReason.FLOODING:
            self._remember(user, _Memory(now + max(self.limits.flood_cooldown, refill), None), now)
        elif reason is not LeaveReason.RECONNECTED and not user.bucket.is_full(now):
            self._remember(user, _Memory(now + refill, user.bucket), now)
        return self._broadcast(Left(user.name, reason))

    def _remember(self, user: _User, memory: _Memory, now: float) -> None:
        """Keep ``memory`` under ``user``'s session and address (a cool-down is never cut short
        by an allowance); drop what expired from the oldest end, and the oldest past the limit."""
        for key in (user.session, user.address):
            if key is None:
                continue
            old = self._memory.pop(key, None)  # re-inserted: the newest is last
            if old is None or old.bucket is not None or old.until <= now:
                old = memory  # no live cool-down to keep
            self._memory[key] = memory if memory.bucket is None else old
        while self._memory:
            oldest = next(iter(self._memory))
            if self._memory[oldest].until > now and len(self._memory) <= self.limits.remembered:
                break
            del self._memory[oldest]

    def _returning(
        self, session: bytes, address: str | None, now: float
    ) -> TokenBucket | Refused | None:
        """The spent allowance a returning session or address carries on with, a refusal if
        either was kicked for flooding within the cool-down, or None: a fresh bucket.

        The very bucket, so that whichever session or address the person comes back by, it
        finds what it last spent; but a copy if a connected user already holds it, so that two
        neighbours returning from one address do not share one bucket for good."""
        memories = [(self._recall_memory(session, now), "you were")]
        if address is not None:
            memories.append((self._recall_memory(address, now), "someone at your address was"))
        for memory, whose in memories:
            if memory is not None and memory.bucket is None:
                wait = f"try again in {math.ceil(memory.until - now)} s"
                return Refused(RefusalCode.COOLING_DOWN, f"{whose} kicked for flooding; {wait}")
        bucket = next((m.bucket for m, _ in memories if m is not None), None)
        if bucket is not None and any(user.bucket is bucket for user in self._users.values()):
            return copy.copy(bucket)
        return bucket

    def _recall_memory(self, key: bytes | str, now: float) -> _Memory | None:
        """What is remembered under ``key``, unless it expired (then it is forgotten)."""
        memory = self._memory.get(key)
        if memory is not None and memory.until <= now:
            del self._memory[key]
            return None
        return memory

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
            return [(user.conn, bye), *self._remove(user, LeaveReason.FLOODING, now)]
        limit = f"{self.limits.rate:g} messages per second"
        error = Error(
            ErrorCode.RATE_LIMITED, f"slow down: at most {limit}, or you are disconnected", say_id
        )
        out: list[Output] = [(user.conn, error)]
        if say_id is not None:
            out.append((user.conn, Ack(say_id, None)))
        return out

    def _post(
        self, user: _User, text: str, action: bool, say_id: int, now: float
    ) -> tuple[list[Output], int | None]:
        text = neutralise(text)
        if not text.strip():
            usage = "/me needs an action" if action else "empty message"
            return [(user.conn, Error(ErrorCode.EMPTY, usage, say_id))], None
        chat = Chat(self._next_seq, now, user.name, text, action)
        self._next_seq += 1
        self._journal_messages.append(chat)
        self._recent.append(replace(chat, history=True))
        return self._broadcast(chat), chat.seq

    def _perform(
        self, user: _User, text: str, say_id: int, now: float
    ) -> tuple[list[Output], int | None]:
        """Carry out one ``say``: its outputs, and the ``seq`` of the message it posted."""
        conn = user.conn
        if len(text) > MAX_TEXT_CHARS:
            limit = f"{len(text)} characters; the limit is {MAX_TEXT_CHARS}"
            return [(conn, Error(ErrorCode.TOO_LONG, f"message too long: {limit}", say_id))], None
        command = _command_name(text)
        if command is None:
            return self._post(user, text.removeprefix("/"), False, say_id, now)
        argument = text.partition(" ")[2].strip()
        if command == "me":
            return self._post(user, argument, True, say_id, now)
        if command == "who":
            return [(conn, Users(tuple(self.names)))], None
        if command == "help":
            return [(conn, Info(HELP))], None
        if command == "msg":
            return self._private(user, argument, say_id, now), None
        if command == "nick":
            return self._rename(user, argument, say_id), None
        unknown = f"unknown command /{_quote(command)}; try /help"
        return [(conn, Error(ErrorCode.UNKNOWN_COMMAND, unknown, say_id))], None

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
        return [(recipient.conn, message), (user.conn, message)]

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
        return self._broadcast(Renamed(old, name))


def _command_name(text: str) -> str | None:
    """``"msg"`` for ``"/MSG bob hi"``; None for plain text, including ``"//escaped"``."""
    if not text.startswith("/") or text.startswith("//"):
        return None
    return text[1:].partition(" ")[0].lower()


def _quote(text: str) -> str:
    """``text`` made harmless and short enough to echo in an error."""
    text = neutralise(text)
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"
