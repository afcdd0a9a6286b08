"""The sans-IO chat in ``#lobby``: joins, names, order, commands, rate limits, and a stateful
model test (rooms: ``test_chat_rooms.py``)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from rudp_chat.chat.history import History
from rudp_chat.chat.protocol import (
    LOBBY,
    MAX_TEXT_CHARS,
    Ack,
    Bye,
    ByeCode,
    Chat,
    Entered,
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
from rudp_chat.chat.room import HELP, Output, Room, RoomLimits
from rudp_chat.chat.store import Journal
from rudp_chat.chat.text import MAX_NAME_CHARS

S1, S2, S3 = (bytes([n]) * 16 for n in (1, 2, 3))


def messages_to(outputs: list[Output], conn: int) -> list[ServerMessage]:
    return [message for recipient, message in outputs if recipient == conn]


def joined_room(*names: str, limits: RoomLimits | None = None) -> Room:
    room = Room(limits or RoomLimits())
    for conn, name in enumerate(names):
        room.join(conn, Hello(name, bytes([conn]) * 16), 0.0)
    return room


def stored(*chats: Chat) -> History:
    """An in-memory history holding ``chats``."""
    history = History(None, 0.0)
    history.write(Journal(chats, ()), 0.0)
    return history


def test_join_welcomes_replays_history_and_tells_everyone() -> None:
    earlier = [Chat(7, 1.0, "old", "first"), Chat(8, 2.0, "old", "second")]
    room = Room(RoomLimits(history_size=5), stored(*earlier))
    room.join(0, Hello("alice", S1), 0.0)
    out = room.join(1, Hello("Bob", S2), 0.0)
    assert messages_to(out, 1) == [
        Welcome("Bob", ("alice", "Bob"), 0, MAX_TEXT_CHARS, 20.0, 40),
        Entered(LOBBY, "", ("alice", "Bob")),
        HistoryStart(2),
        Chat(7, 1.0, "old", "first", history=True),
        Chat(8, 2.0, "old", "second", history=True),
        HistoryEnd(),
        Joined("Bob"),
    ]
    assert messages_to(out, 0) == [Joined("Bob")]
    assert room.receive(1, Say(1, "hi"), 0.0)[0] == (0, Chat(9, 0.0, "Bob", "hi"))


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("ALICE", RefusalCode.NAME_TAKEN),
        ("\uff41lice", RefusalCode.NAME_TAKEN),
        ("al ice", RefusalCode.INVALID_NAME),
        ("alice\u200d", RefusalCode.INVALID_NAME),
    ],
)
def test_taken_and_invalid_names_are_refused(name: str, code: RefusalCode) -> None:
    room = joined_room("alice")
    [(conn, refused)] = room.join(5, Hello(name, S3), 0.0)
    assert conn == 5 and isinstance(refused, Refused) and refused.code is code
    assert room.names == ["alice"]


def test_full_room_and_unknown_version_are_refused() -> None:
    room = joined_room("a", "b", limits=RoomLimits(max_users=2))
    assert room.join(9, Hello("c", S3), 0.0) == [
        (9, Refused(RefusalCode.SERVER_FULL, "the server is full (2 users)"))
    ]
    [(_, refused)] = room.join(9, Hello("c", S3, version=1), 0.0)
    assert isinstance(refused, Refused) and refused.code is RefusalCode.BAD_HELLO


def test_message_goes_to_everyone_in_one_order_then_the_sender_gets_an_ack() -> None:
    room = joined_room("alice", "bob", "carol")
    out = room.receive(1, Say(1, "hello"), 5.0)
    chat = Chat(1, 5.0, "bob", "hello")
    assert out == [(0, chat), (1, chat), (2, chat), (1, Ack(1, 1))]
    out = room.receive(0, Say(1, "//slash"), 6.0)
    assert out[0] == (0, Chat(2, 6.0, "alice", "/slash"))


def test_text_is_neutralised_and_empty_or_long_text_is_refused() -> None:
    room = joined_room("alice", "bob")
    out = room.receive(0, Say(1, "\x1b[2Jgotcha\u202e"), 0.0)
    assert out[0] == (0, Chat(1, 0.0, "alice", "␛[2Jgotcha"))
    assert room.receive(0, Say(2, " \u200b "), 0.0) == [
        (0, Error(ErrorCode.EMPTY, "empty message", 2)),
        (0, Ack(2, None)),
    ]
    [(_, error), ack] = room.receive(0, Say(3, "x" * (MAX_TEXT_CHARS + 1)), 0.0)
    assert isinstance(error, Error) and error.code is ErrorCode.TOO_LONG
    assert "4001 characters; the limit is 4000" in error.text
    assert ack == (0, Ack(3, None))


def test_commands() -> None:
    room = joined_room("alice", "bob")
    assert room.receive(0, Say(1, "/who"), 0.0) == [(0, Users(("alice", "bob"))), (0, Ack(1, None))]
    assert room.receive(0, Say(2, "/help"), 0.0) == [(0, Info(HELP)), (0, Ack(2, None))]
    me = Chat(1, 0.0, "alice", "waves", action=True)
    assert room.receive(0, Say(3, "/me waves"), 0.0) == [(0, me), (1, me), (0, Ack(3, 1))]
    private = Private(0.0, "alice", "bob", "psst  there")
    assert room.receive(0, Say(4, "/msg BOB psst  there"), 0.0) == [
        (1, private),
        (0, private),
        (0, Ack(4, None)),
    ]
    [(_, error), _] = room.receive(0, Say(5, "/msg nobody hi"), 0.0)
    assert isinstance(error, Error) and error.code is ErrorCode.NO_SUCH_USER
    [(_, error), _] = room.receive(0, Say(6, "/dance"), 0.0)
    assert error == Error(ErrorCode.UNKNOWN_COMMAND, "unknown command /dance; try /help", 6)
    [(_, error), _] = room.receive(0, Say(7, "/me"), 0.0)
    assert isinstance(error, Error) and error.code is ErrorCode.EMPTY


def test_nick_renames_unless_taken_or_invalid() -> None:
    room = joined_room("alice", "bob")
    [(_, error), _] = room.receive(0, Say(1, "/nick BOB"), 0.0)
    assert isinstance(error, Error) and error.code is ErrorCode.NAME_TAKEN
    [(_, error), _] = room.receive(0, Say(2, "/nick a b"), 0.0)
    assert isinstance(error, Error) and error.code is ErrorCode.INVALID_NAME
    renamed = Renamed("alice", "Alicia")
    assert room.receive(0, Say(3, "/nick Alicia"), 0.0) == [
        (0, renamed),
        (1, renamed),
        (0, Ack(3, None)),
    ]
    assert room.receive(0, Say(4, "/nick ALICIA"), 0.0)[0] == (0, Renamed("Alicia", "ALICIA"))
    assert room.names == ["ALICIA", "bob"]
    assert room.join(7, Hello("alice", S3), 0.0)[0][1] == Welcome(
        "alice", ("ALICIA", "bob", "alice"), 0, MAX_TEXT_CHARS, 20.0, 40
    )


def test_quit_acks_says_goodbye_and_tells_the_others() -> None:
    room = joined_room("alice", "bob")
    assert room.receive(0, Say(1, "/quit"), 0.0) == [
        (0, Ack(1, None)),
        (0, Bye(ByeCode.LEFT, "goodbye")),
        (1, Left("alice", LeaveReason.LEFT)),
    ]
    assert room.receive(0, Say(2, "still here?"), 0.0) == []
    assert room.leave(0, LeaveReason.LEFT, 0.0) == []


def test_leave_says_why() -> None:
    room = joined_room("alice", "bob")
    assert room.leave(1, LeaveReason.TIMED_OUT, 0.0) == [(0, Left("bob", LeaveReason.TIMED_OUT))]


def test_resend_after_reconnect_is_acked_but_not_delivered_twice() -> None:
    history = History(None, 0.0)
    room = Room(RoomLimits(), history)
    room.join(0, Hello("alice", S1), 0.0)
    room.join(1, Hello("bob", S2), 0.0)
    room.receive(0, Say(1, "one"), 0.0)
    room.receive(0, Say(2, "two"), 0.0)
    journal = room.take_journal()
    assert journal is not None
    assert [chat.text for chat in journal.messages] == ["one", "two"]
    assert journal.acked == ((S1, 2),)
    history.write(journal, 0.0)
    assert room.take_journal() is None
    room.leave(0, LeaveReason.TIMED_OUT, 0.0)
    [(_, welcome), *_] = room.join(2, Hello("alice", S1), 0.0)
    assert isinstance(welcome, Welcome) and welcome.acked == 2
    assert room.receive(2, Say(2, "two"), 0.0) == [(2, Ack(2, None))]
    assert room.receive(2, Say(3, "three"), 0.0)[-1] == (2, Ack(3, 3))


def test_same_session_replaces_its_old_connection() -> None:
    room = joined_room("alice", "bob")
    room.receive(0, Say(1, "one"), 0.0)
    out = room.join(5, Hello("ALICE", bytes([0]) * 16), 0.0)
    assert out[:2] == [
        (0, Bye(ByeCode.REPLACED, "you connected again elsewhere")),
        (1, Left("alice", LeaveReason.RECONNECTED)),
    ]
    assert out[2] == (5, Welcome("ALICE", ("bob", "ALICE"), 1, MAX_TEXT_CHARS, 20.0, 40))
    assert room.receive(0, Say(2, "ghost"), 0.0) == []


def test_flooding_is_warned_then_disconnected() -> None:
    room = joined_room("alice", "bob", limits=RoomLimits(rate=1.0, burst=2, flood_kick=3))
    assert [m for _, m in room.receive(0, Say(1, "a"), 0.0)][-1] == Ack(1, 1)
    assert [m for _, m in room.receive(0, Say(2, "b"), 0.0)][-1] == Ack(2, 2)
    [(_, warning), (_, ack)] = room.receive(0, Say(3, "c"), 0.0)
    assert isinstance(warning, Error) and warning.code is ErrorCode.RATE_LIMITED
    assert ack == Ack(3, None)
    assert room.receive(0, Say(4, "d"), 1.0)[-1] == (0, Ack(4, 3))  # a token came back
    room.receive(0, Say(5, "e"), 1.0)
    room.malformed(0, "junk", 1.0)
    assert room.receive(0, Say(6, "f"), 1.0) == [
        (0, Bye(ByeCode.FLOODING, "disconnected for sending too fast")),
        (1, Left("alice", LeaveReason.FLOODING)),
    ]


def test_calm_sender_is_forgiven() -> None:
    room = joined_room("alice", limits=RoomLimits(rate=1.0, burst=1, flood_kick=2))
    room.receive(0, Say(1, "a"), 0.0)
    room.receive(0, Say(2, "b"), 0.0)  # warned
    room.receive(0, Say(3, "c"), 0.0)  # one strike
    assert room.receive(0, Say(4, "d"), 10.0)[-1] == (0, Ack(4, 2))  # refilled: forgiven
    room.receive(0, Say(5, "e"), 10.0)  # warned afresh
    assert room.names == ["alice"]


def test_malformed_input_gets_an_error() -> None:
    room = joined_room("alice")
    [(_, error)] = room.malformed(0, "not msgpack", 0.0)
    assert error == Error(ErrorCode.MALFORMED, "malformed message: not msgpack")
    assert room.malformed(9, "from a stranger", 0.0) == []
    [(_, error)] = room.join(0, Hello("alice", S1), 0.0)
    assert isinstance(error, Error) and error.code is ErrorCode.MALFORMED


def test_shutdown_says_goodbye_to_everyone() -> None:
    room = joined_room("alice", "bob")
    bye = Bye(ByeCode.SHUTDOWN, "the server is shutting down")
    assert room.shutdown(0.0) == [(0, bye), (1, bye)]
    assert room.names == []


# --- the stateful model test -------------------------------------------------------------------

# name as typed -> (display name, key), None if invalid: written out, not computed
NAMES: dict[str, tuple[str, str] | None] = {
    "alice": ("alice", "alice"),
    "Alice": ("Alice", "alice"),
    "bob": ("bob", "bob"),
    "BOB": ("BOB", "bob"),
    "\uff42\uff4f\uff42": ("bob", "bob"),
    "carol": ("carol", "carol"),
    "dave.d": ("dave.d", "dave.d"),
    "bad name": None,
    "": None,
    "x" * (MAX_NAME_CHARS + 1): None,
}
SESSIONS = [S1, S2, S3, bytes([4]) * 16]
TEXTS = ["hi", "two words", "\x1bx", "/me waves", "//slash", "/who", "   ", "/frobnicate"]
LIMITS = RoomLimits(max_users=3, history_size=3, rate=1e9, burst=10**9)


class RoomMachine(RuleBasedStateMachine):
    """The room against a model: who is here under which name, and the one public order."""

    conns = Bundle("conns")

    def __init__(self) -> None:
        super().__init__()
        self.history = History(None, 0.0)
        self.room = Room(LIMITS, self.history)
        self.next_conn = 0
        self.users: dict[int, tuple[str, str, bytes]] = {}  # conn -> (name, key, session)
        self.acked: dict[bytes, int] = defaultdict(int)  # highest say id processed
        self.posted: list[tuple[int, str]] = []  # (seq, sender) in order
        self.pending_posts: list[int] = []  # seqs not yet taken from the journal
        self.live: dict[int, list[int]] = defaultdict(list)  # seqs each conn saw live

    def _deliver(self, outputs: list[Output]) -> None:
        for conn, message in outputs:
            if isinstance(message, Chat) and not message.history:
                self.live[conn].append(message.seq)

    def _conn_of(self, session: bytes) -> int | None:
        return next((c for c, (_, _, s) in self.users.items() if s == session), None)

    def _say(self, conn: int, text: str) -> list[Output]:
        name, _, session = self.users[conn]
        self.acked[session] += 1
        say_id = self.acked[session]
        out = self.room.receive(conn, Say(say_id, text), 0.0)
        self._deliver(out)
        assert out[-1][0] == conn
        ack = out[-1][1]
        assert isinstance(ack, Ack) and ack.id == say_id
        chats = {m for _, m in out if isinstance(m, Chat)}
        if ack.seq is not None:
            (chat,) = chats
            assert chat.sender == name and chat.seq == ack.seq == len(self.posted) + 1
            assert {c for c, m in out if m == chat} == set(self.users)
            self.posted.append((chat.seq, name))
            self.pending_posts.append(chat.seq)
        else:
            assert not chats
        return out

    @rule(target=conns, typed=st.sampled_from(sorted(NAMES)), session=st.sampled_from(SESSIONS))
    def join(self, typed: str, session: bytes) -> int:
        conn, self.next_conn = self.next_conn, self.next_conn + 1
        out = self.room.join(conn, Hello(typed, session), 0.0)
        self._deliver(out)
        first = messages_to(out, conn)[0]
        expected = NAMES[typed]
        if expected is None:
            assert isinstance(first, Refused) and first.code is RefusalCode.INVALID_NAME
            return conn
        name, key = expected
        holder = next((c for c, (_, k, _) in self.users.items() if k == key), None)
        previous = self._conn_of(session)
        if holder is not None and holder != previous:
            assert first == Refused(RefusalCode.NAME_TAKEN, f"the name {name} is taken")
            return conn
        if previous is not None:
            assert messages_to(out, previous)[0] == Bye(
                ByeCode.REPLACED, "you connected again elsewhere"
            )
            old_name = self.users.pop(previous)[0]
            assert {c for c, m in out if m == Left(old_name, LeaveReason.RECONNECTED)} == set(
                self.users
            )
        elif len(self.users) >= LIMITS.max_users:
            assert isinstance(first, Refused) and first.code is RefusalCode.SERVER_FULL
            return conn
        assert isinstance(first, Welcome) and first.name == name
        assert first.acked == self.acked[session]
        self.users[conn] = (name, key, session)
        assert {c for c, m in out if m == Joined(name)} == set(self.users)
        return conn

    @rule(conn=conns, text=st.sampled_from(TEXTS))
    def say(self, conn: int, text: str) -> None:
        if conn in self.users:
            self._say(conn, text)
        else:
            assert self.room.receive(conn, Say(1, text), 0.0) == []

    @precondition(lambda self: self.users)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.users)))
        session = self.users[conn][2]
        if self.acked[session]:
            old = data.draw(st.integers(1, self.acked[session]))
            assert self.room.receive(conn, Say(old, "again"), 0.0) == [(conn, Ack(old, None))]

    @precondition(lambda self: self.users)
    @rule(data=st.data(), typed=st.sampled_from(sorted(NAMES)))
    def private(self, data: st.DataObject, typed: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.users)))
        out = self._say(conn, f"/msg {typed} psst")
        target = NAMES[typed]
        recipient = next((c for c, u in self.users.items() if target and u[1] == target[1]), None)
        if recipient is None:
            code = ErrorCode.EMPTY if not typed else ErrorCode.NO_SUCH_USER
            assert isinstance(out[0][1], Error) and out[0][1].code is code
        else:
            private = Private(0.0, self.users[conn][0], self.users[recipient][0], "psst")
            assert {c for c, m in out if m == private} == {conn, recipient}

    @precondition(lambda self: self.users)
    @rule(data=st.data(), typed=st.sampled_from(sorted(NAMES)))
    def rename(self, data: st.DataObject, typed: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.users)))
        old, _, session = self.users[conn]
        out = self._say(conn, f"/nick {typed}")
        expected = NAMES[typed]
        if expected is None:
            assert isinstance(out[0][1], Error) and out[0][1].code is ErrorCode.INVALID_NAME
            return
        name, key = expected
        if any(k == key for c, (_, k, _) in self.users.items() if c != conn):
            assert isinstance(out[0][1], Error) and out[0][1].code is ErrorCode.NAME_TAKEN
        elif name == old:
            assert isinstance(out[0][1], Info)
        else:
            assert {c for c, m in out if m == Renamed(old, name)} == set(self.users)
            self.users[conn] = (name, key, session)

    @rule(conn=consumes(conns), reason=st.sampled_from([LeaveReason.LEFT, LeaveReason.TIMED_OUT]))
    def leave(self, conn: int, reason: LeaveReason) -> None:
        out = self.room.leave(conn, reason, 0.0)
        if conn in self.users:
            name = self.users.pop(conn)[0]
            assert out == [(c, Left(name, reason)) for c in self.users]
        else:
            assert out == []

    @rule()
    def commit(self) -> None:
        journal = self.room.take_journal()
        seqs = [] if journal is None else [chat.seq for chat in journal.messages]
        assert seqs == self.pending_posts
        self.pending_posts = []
        if journal is not None:
            self.history.write(journal, 0.0)

    @invariant()
    def same_people_same_names(self) -> None:
        assert sorted(self.room.names) == sorted(name for name, _, _ in self.users.values())
        assert len({key for _, key, _ in self.users.values()}) == len(self.users)

    @invariant()
    def everyone_sees_one_gapless_order(self) -> None:
        for seqs in self.live.values():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


RoomMachine.TestCase.settings = settings(stateful_step_count=40, deadline=None)
TestRoomMachine = RoomMachine.TestCase
