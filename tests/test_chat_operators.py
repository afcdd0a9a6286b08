"""Room operators in the sans-IO chat: the key that makes a room runs it; ``/op``, ``/kick``,
``/ban`` and ``/unban`` by key, ``/mode +t``; what survives a reconnect, a rename and a
restart."""

from __future__ import annotations

from pathlib import Path

from test_chat_rooms import committed, to

from rudp_chat.chat.access import MAX_BANS, MAX_OPERATORS, Access
from rudp_chat.chat.history import History
from rudp_chat.chat.owners import Owners
from rudp_chat.chat.protocol import (
    LOBBY,
    Ack,
    Entered,
    Error,
    ErrorCode,
    Hello,
    Info,
    LeaveReason,
    Left,
    Say,
    ServerMessage,
    Topic,
    encode,
)
from rudp_chat.chat.room import HELP, Output, Room, RoomLimits

ALICE, BOB, CAROL = (bytes([n]) * 32 for n in (1, 2, 3))  # client keys
S1, S2, S3, S4 = (bytes([n]) * 16 for n in (1, 2, 3, 4))  # sessions
LIMITS = RoomLimits(max_users=MAX_BANS + 10, rate=1e9, burst=10**9)


def server(history: History) -> Room:
    return Room(LIMITS, history, owners=Owners(history.owner_of))


class Chat:
    """One room logic over one history, with each connection's next message id."""

    def __init__(self, history: History | None = None) -> None:
        self.history = History(None, 0.0) if history is None else history
        self.room = server(self.history)
        self.ids: dict[int, int] = {}

    def join(self, conn: int, name: str, session: bytes, key: bytes | None) -> list[Output]:
        out = self.room.join(conn, Hello(name, session), 0.0, owner=key)
        committed(self.room, self.history)
        return out

    def say(self, conn: int, text: str, room: str = "#dev") -> list[Output]:
        say_id = self.ids[conn] = self.ids.get(conn, 0) + 1
        out = self.room.receive(conn, Say(say_id, text, room), 0.0)
        committed(self.room, self.history)
        assert out[-1] == (conn, Ack(say_id, None))
        return out[:-1]


def error(out: list[Output], conn: int) -> ErrorCode:
    first = to(out, conn)[0]
    assert isinstance(first, Error), first
    return first.code


def alice_made_dev() -> Chat:
    """alice (key ALICE) made #dev; bob (key BOB) and the guest gus joined it."""
    chat = Chat()
    chat.join(0, "alice", S1, ALICE)
    chat.join(1, "bob", S2, BOB)
    chat.join(2, "gus", S3, None)
    for conn in (0, 1, 2):
        chat.say(conn, "/join #dev", LOBBY)
    return chat


def test_the_key_that_makes_a_room_is_its_operator() -> None:
    chat = alice_made_dev()
    assert chat.history.access("#dev") == Access((ALICE,))
    assert chat.history.access(LOBBY) == Access()  # #lobby has no operator
    chat.say(2, "/join #guests", LOBBY)  # a guest makes a room nobody runs
    assert chat.history.access("#guests") == Access()
    assert to(chat.say(2, "/mode +t", "#guests"), 2) == [
        Error(ErrorCode.NOT_OPERATOR, "#guests has no operators", 3)
    ]
    for conn, command in [(1, "/op gus"), (1, "/kick alice"), (1, "/ban alice"), (2, "/unban x")]:
        assert error(chat.say(conn, command), conn) is ErrorCode.NOT_OPERATOR
    assert chat.room.members("#dev") == ["alice", "bob", "gus"]
    assert chat.history.access("#dev") == Access((ALICE,))


def test_op_makes_a_member_with_a_key_an_operator() -> None:
    chat = alice_made_dev()
    assert error(chat.say(0, "/op gus"), 0) is ErrorCode.MALFORMED  # a guest has no key
    assert error(chat.say(0, "/op nobody"), 0) is ErrorCode.NO_SUCH_USER
    notice = Info(("#dev: alice made bob an operator",))
    assert chat.say(0, "/op bob") == [(0, notice), (1, notice), (2, notice)]
    assert chat.history.access("#dev") == Access((ALICE, BOB))
    assert to(chat.say(0, "/op bob"), 0) == [Info(("bob is already an operator",))]
    chat.say(1, "/kick alice")  # an operator may kick an operator
    assert chat.room.members("#dev") == ["bob", "gus"]


def test_kick_removes_a_member_who_may_come_back() -> None:
    chat = alice_made_dev()
    left = Left("gus", LeaveReason.KICKED, "#dev", "by alice: off topic")
    assert chat.say(0, "/kick GUS  off topic") == [(0, left), (1, left), (2, left)]
    assert chat.room.rooms_of(2) == [LOBBY]  # still connected
    assert error(chat.say(2, "hi"), 2) is ErrorCode.NOT_IN_ROOM
    assert error(chat.say(0, "/kick gus"), 0) is ErrorCode.NO_SUCH_USER  # not in #dev now
    assert isinstance(to(chat.say(2, "/join #dev", LOBBY), 2)[0], Entered)
    bare = Left("gus", LeaveReason.KICKED, "#dev", "by alice")
    assert to(chat.say(0, "/kick gus"), 1) == [bare]


def test_a_ban_holds_the_key_across_reconnects_and_renames() -> None:
    chat = alice_made_dev()
    banned = Info(("#dev: alice banned bob",))
    kicked = Left("bob", LeaveReason.KICKED, "#dev", "by alice: banned")
    everyone = (0, 1, 2)
    assert chat.say(0, "/ban bob") == [
        *((conn, banned) for conn in everyone),
        *((conn, kicked) for conn in everyone),
    ]
    assert chat.history.access("#dev") == Access((ALICE,), (BOB,))
    refused = Error(ErrorCode.BANNED, "you are banned from #dev", 2)
    assert to(chat.say(1, "/join #dev", LOBBY), 1) == [refused]
    chat.say(1, "/nick robert", LOBBY)
    assert error(chat.say(1, "/join #DEV", LOBBY), 1) is ErrorCode.BANNED
    chat.room.leave(1, LeaveReason.LOST, 0.0)  # a new session, a new name: the same key
    out = chat.room.join(5, Hello("bobby", S4, rooms=(("#dev", 0),)), 0.0, owner=BOB)
    assert to(out, 5)[-1] == Error(ErrorCode.BANNED, "you are banned from #dev", None)
    assert chat.room.rooms_of(5) == [LOBBY]
    assert to(chat.say(0, "/ban bobby"), 0) == [Info(("bobby is already banned",))]
    assert error(chat.say(0, "/ban alice"), 0) is ErrorCode.MALFORMED  # not yourself
    assert error(chat.say(0, "/ban gus"), 0) is ErrorCode.MALFORMED  # a guest: /kick only
    lifted = Info(("#dev: alice lifted the ban on bobby",))
    assert to(chat.say(0, "/unban bobby"), 0) == [lifted]
    assert error(chat.say(0, "/unban bobby"), 0) is ErrorCode.NO_SUCH_USER
    assert isinstance(to(chat.say(5, "/join #dev", LOBBY), 5)[0], Entered)


def test_a_ban_holds_while_the_room_is_empty() -> None:
    chat = alice_made_dev()
    chat.say(0, "/ban bob")
    chat.say(0, "/part")
    chat.say(2, "/part")
    assert chat.room.members("#dev") == []
    assert error(chat.say(1, "/join #dev", LOBBY), 1) is ErrorCode.BANNED
    assert chat.room.members("#dev") == []  # a refused join makes no room
    chat.say(2, "/join #dev", LOBBY)  # made again by a guest: still alice's
    assert chat.history.access("#dev") == Access((ALICE,), (BOB,))


def test_mode_t_restricts_the_topic_to_operators() -> None:
    chat = alice_made_dev()
    assert to(chat.say(1, "/mode"), 1) == [Info(("#dev: -t",))]
    assert error(chat.say(1, "/mode +t"), 1) is ErrorCode.NOT_OPERATOR
    assert error(chat.say(0, "/mode t"), 0) is ErrorCode.MALFORMED
    notice = Info(("#dev: alice set +t",))
    assert chat.say(0, "/mode +t") == [(0, notice), (1, notice), (2, notice)]
    assert to(chat.say(1, "/mode"), 1) == [Info(("#dev: +t (only operators set the topic)",))]
    refused = Error(ErrorCode.NOT_OPERATOR, "#dev is +t: only its operators set the topic", 5)
    assert to(chat.say(1, "/topic mine"), 1) == [refused]
    assert to(chat.say(1, "/topic"), 1) == [Info(("no topic",))]  # reading stays open
    topic = Topic("#dev", "alice", "ours")
    assert to(chat.say(0, "/topic ours"), 1) == [topic]
    chat.say(0, "/mode -t")
    assert to(chat.say(1, "/topic mine"), 1) == [Topic("#dev", "bob", "mine")]


def test_bounds_on_operators_and_bans() -> None:
    chat = Chat()
    chat.join(0, "op", S1, ALICE)
    chat.say(0, "/join #dev", LOBBY)
    for n in range(1, MAX_BANS + 2):  # keys and sessions 1..MAX_BANS + 1, other than ALICE's
        chat.join(n, f"u{n}", n.to_bytes(16, "big"), n.to_bytes(32, "big"))
    for n in range(1, MAX_OPERATORS):
        chat.say(n, "/join #dev", LOBBY)
        chat.say(0, f"/op u{n}")
    access = chat.history.access("#dev")
    assert access is not None and len(access.operators) == MAX_OPERATORS
    chat.say(MAX_OPERATORS, "/join #dev", LOBBY)
    assert error(chat.say(0, f"/op u{MAX_OPERATORS}"), 0) is ErrorCode.MALFORMED
    for n in range(1, MAX_BANS + 1):  # an online user is banned whether in the room or not
        chat.say(0, f"/ban u{n}")
    access = chat.history.access("#dev")
    assert access is not None and len(access.bans) == MAX_BANS and access.operators == (ALICE,)
    assert error(chat.say(0, f"/ban u{MAX_BANS + 1}"), 0) is ErrorCode.MALFORMED


def test_operators_bans_and_modes_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    chat = Chat(History(path, 0.0))
    chat.join(0, "alice", S1, ALICE)
    chat.join(1, "bob", S2, BOB)
    chat.join(2, "carol", S3, CAROL)
    for conn in (0, 1, 2):
        chat.say(conn, "/join #dev", LOBBY)
    chat.say(0, "/op carol")
    chat.say(0, "/ban bob")
    chat.say(0, "/mode +t")
    chat.history.close()
    again = Chat(History(path, 1.0))
    again.ids = chat.ids  # the sessions go on: ids already processed would only be acked
    again.join(0, "alice", S1, ALICE)
    again.join(1, "bob", S2, BOB)
    again.join(2, "carol", S3, CAROL)
    assert error(again.say(1, "/join #dev", LOBBY), 1) is ErrorCode.BANNED
    again.say(2, "/join #dev", LOBBY)  # carol, an operator, makes it live again
    assert again.history.access("#dev") == Access((ALICE, CAROL), (BOB,), topic_locked=True)
    assert to(again.say(2, "/topic carol's"), 2) == [Topic("#dev", "carol", "carol's")]
    again.say(0, "/join #dev", LOBBY)
    again.say(2, "/nick caroline", LOBBY)  # operator by key, under any name
    assert to(again.say(2, "/mode"), 2) == [Info(("#dev: +t (only operators set the topic)",))]
    assert to(again.say(0, "/unban bob"), 0) == [Info(("#dev: alice lifted the ban on bob",))]


def test_the_commands_are_in_help() -> None:
    for command in ("/op NAME", "/kick NAME [REASON]", "/ban NAME", "/unban NAME", "/mode"):
        assert any(line.startswith(f"  {command}") for line in HELP)


def test_the_worked_bytes_of_protocol_md() -> None:
    """PROTOCOL.md §12, Operators: the bytes shown are what the reference writes."""
    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    section = spec[spec.index("### Operators") : spec.index("### History")]
    shown: dict[str, Say | ServerMessage] = {
        "kick": Say(4, "/kick bob off topic", "#dev"),
        "left": Left("bob", LeaveReason.KICKED, "#dev", "by alice: off topic"),
        "error": Error(ErrorCode.BANNED, "you are banned from #dev", 2),
        "info": Info(("#dev: alice set +t",)),
    }
    for tag, message in shown.items():
        start = section.index(f"\n{tag} ") + 1
        rows = section[start:].split("\n      {")[0].splitlines()
        hex_text = " ".join(row[6:] for row in rows)
        assert bytes.fromhex(hex_text) == encode(message), tag
