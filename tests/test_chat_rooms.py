"""Rooms in the sans-IO chat: entering, parting, topics, paging, search and the exact replay
after a reconnect, and a stateful model test of rooms across joins, parts, kicks, renames and
reconnects (operators and bans: ``test_chat_operators.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rudp_chat.chat.history import History
from rudp_chat.chat.owners import Owners
from rudp_chat.chat.protocol import (
    LOBBY,
    Ack,
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
    Refused,
    Renamed,
    Say,
    ServerMessage,
    Topic,
    Users,
)
from rudp_chat.chat.room import MAX_MISSED, MAX_PAGE, SEARCH_PAGE, Output, Room, RoomLimits

S1, S2, S3 = (bytes([n]) * 16 for n in (1, 2, 3))


def to(outputs: list[Output], conn: int) -> list[ServerMessage]:
    return [message for recipient, message in outputs if recipient == conn]


def committed(room: Room, history: History) -> None:
    journal = room.take_journal()
    if journal is not None:
        history.write(journal, 0.0)


def two_in_dev() -> tuple[Room, History]:
    history = History(None, 0.0)
    room = Room(RoomLimits(history_size=3, rate=1e9, burst=10**9), history)
    room.join(0, Hello("alice", S1), 0.0)
    room.join(1, Hello("bob", S2), 0.0)
    room.receive(0, Say(1, "/join #Dev"), 0.0)
    room.receive(1, Say(1, "/join #dev"), 0.0)
    return room, history


def test_join_makes_a_room_and_lines_go_to_its_members_only() -> None:
    history = History(None, 0.0)
    room = Room(RoomLimits(), history)
    room.join(0, Hello("alice", S1), 0.0)
    room.join(1, Hello("bob", S2), 0.0)
    assert room.receive(0, Say(1, "/join #Dev"), 0.0) == [
        (0, Entered("#dev", "", ("alice",))),
        (0, Joined("alice", "#dev")),
        (0, Ack(1, None)),
    ]
    out = room.receive(0, Say(2, "hello dev", "#dev"), 5.0)
    assert out == [(0, Chat(1, 5.0, "alice", "hello dev", room="#dev")), (0, Ack(2, 1))]
    out = room.receive(1, Say(1, "hello lobby"), 6.0)
    assert [c for c, m in out if isinstance(m, Chat)] == [0, 1]
    assert to(room.receive(1, Say(2, "sneaking in", "#dev"), 0.0), 1) == [
        Error(ErrorCode.NOT_IN_ROOM, "you are not in #dev; /join it", 2),
        Ack(2, None),
    ]
    assert room.rooms_of(0) == [LOBBY, "#dev"] and room.members("#dev") == ["alice"]


def test_entering_shows_the_latest_lines_and_a_rejoin_switches_only() -> None:
    room, history = two_in_dev()
    for n in range(1, 6):
        room.receive(0, Say(n + 1, f"line {n}", "#dev"), float(n))
    committed(room, history)
    room.join(2, Hello("carol", S3), 0.0)
    out = to(room.receive(2, Say(1, "/join #dev"), 9.0), 2)
    assert out[:2] == [
        Entered("#dev", "", ("alice", "bob", "carol")),
        HistoryStart(3, "#dev", HistoryKind.LATEST),
    ]
    assert [m.seq for m in out if isinstance(m, Chat)] == [3, 4, 5]
    assert out[5:] == [HistoryEnd("#dev", more=True), Joined("carol", "#dev"), Ack(1, None)]
    assert to(room.receive(2, Say(2, "/join #DEV"), 9.0), 2) == [
        Entered("#dev", "", ("alice", "bob", "carol")),
        Ack(2, None),
    ]


def test_history_pages_back_to_the_start() -> None:
    room, history = two_in_dev()
    for n in range(1, 8):
        room.receive(0, Say(n + 1, f"line {n}", "#dev"), float(n))
    committed(room, history)
    room.join(2, Hello("carol", S3), 0.0)
    room.receive(2, Say(1, "/join #dev"), 0.0)  # shown 5, 6, 7
    pages = []
    for say_id in (2, 3):
        out = to(room.receive(2, Say(say_id, "/history 2", "#dev"), 0.0), 2)
        assert isinstance(out[0], HistoryStart) and out[0].kind is HistoryKind.BEFORE
        pages.append(([m.seq for m in out if isinstance(m, Chat)], out[-2]))
    assert pages == [([3, 4], HistoryEnd("#dev", True)), ([1, 2], HistoryEnd("#dev", False))]
    assert to(room.receive(2, Say(4, "/history", "#dev"), 0.0), 2) == [
        Info(("#dev: no older lines",)),
        Ack(4, None),
    ]
    [error, _] = to(room.receive(2, Say(5, f"/history {MAX_PAGE + 1}", "#dev"), 0.0), 2)
    assert isinstance(error, Error) and error.code is ErrorCode.MALFORMED


def test_search_shows_hits_with_a_line_of_context_and_pages() -> None:
    room, history = two_in_dev()
    texts = [
        "zero",
        *(f"fig {n}" if n % 2 else f"plain {n}" for n in range(1, 4 * SEARCH_PAGE + 4)),
    ]
    for n, text in enumerate(texts[1:], start=1):
        room.receive(0, Say(n + 1, text, "#dev"), float(n))
    committed(room, history)
    out = to(room.receive(1, Say(2, "/search FIG", "#dev"), 0.0), 1)
    start = out[0]
    assert isinstance(start, HistoryStart) and start.kind is HistoryKind.SEARCH
    hits = [n for n, text in enumerate(texts) if text.startswith("fig")]
    assert list(start.hits) == hits[-SEARCH_PAGE:]
    shown = [m.seq for m in out if isinstance(m, Chat)]
    assert shown == list(range(hits[-SEARCH_PAGE] - 1, hits[-1] + 1))  # hit and the line before
    assert out[-2] == HistoryEnd("#dev", True)
    out = to(room.receive(1, Say(3, "/search", "#dev"), 0.0), 1)
    assert (
        isinstance(out[0], HistoryStart)
        and list(out[0].hits) == hits[-2 * SEARCH_PAGE : -SEARCH_PAGE]
    )
    out = to(room.receive(1, Say(4, "/search", "#dev"), 0.0), 1)
    assert isinstance(out[0], HistoryStart) and list(out[0].hits) == hits[: -2 * SEARCH_PAGE]
    assert out[-2] == HistoryEnd("#dev", False)
    assert to(room.receive(1, Say(5, "/search", "#dev"), 0.0), 1) == [
        Info(("#dev: no more lines match FIG",)),
        Ack(5, None),
    ]


def test_topic_part_rooms_and_who() -> None:
    room, history = two_in_dev()
    out = room.receive(0, Say(2, "/topic  rooms and history ", "#dev"), 0.0)
    topic = Topic("#dev", "alice", "rooms and history")
    assert out == [(0, topic), (1, topic), (0, Ack(2, None))]
    committed(room, history)
    assert history.topic("#dev") == "rooms and history"
    room.receive(1, Say(2, "/away lunch"), 0.0)
    assert to(room.receive(0, Say(3, "/who", "#dev"), 0.0), 0)[0] == Users(
        ("alice", "bob"), "#dev", ("bob",)
    )
    assert to(room.receive(0, Say(4, "/rooms"), 0.0), 0)[0] == Info(
        ("2 rooms:", "#dev 2 rooms and history", "#lobby 2")
    )
    left = Left("bob", LeaveReason.PARTED, "#dev", "see you")
    assert room.receive(1, Say(3, "/part #DEV see you"), 0.0) == [
        (0, left),
        (1, left),
        (1, Ack(3, None)),
    ]
    room.receive(0, Say(5, "/part", "#dev"), 0.0)
    assert room.members("#dev") == [] and room.rooms_of(0) == [LOBBY]
    room.receive(0, Say(6, "/join #dev"), 0.0)  # made again: its topic was kept
    assert room.members("#dev") == ["alice"]
    assert to(room.receive(0, Say(7, "/topic", "#dev"), 0.0), 0)[0] == Info(
        ("#dev: rooms and history",)
    )


def test_quit_reason_is_told_in_every_room() -> None:
    room, _ = two_in_dev()
    out = room.receive(1, Say(2, "/quit gone fishing"), 0.0)
    assert [(c, m) for c, m in out if isinstance(m, Left)] == [
        (0, Left("bob", LeaveReason.LEFT, LOBBY, "gone fishing")),
        (0, Left("bob", LeaveReason.LEFT, "#dev", "gone fishing")),
    ]


def test_limits_on_rooms_and_members() -> None:
    limits = RoomLimits(rooms_per_user=2, members_per_room=1, max_rooms=3)
    room = Room(limits)
    room.join(0, Hello("alice", S1), 0.0)
    room.join(1, Hello("bob", S2), 0.0)
    room.receive(0, Say(1, "/join #a"), 0.0)

    def error(conn: int, say_id: int, text: str) -> ErrorCode:
        message = to(room.receive(conn, Say(say_id, text), 0.0), conn)[0]
        assert isinstance(message, Error)
        return message.code

    assert error(0, 2, "/join #b") is ErrorCode.TOO_MANY_ROOMS  # alice: #lobby and #a
    assert error(1, 1, "/join #a") is ErrorCode.ROOM_FULL
    assert error(1, 2, "/join a") is ErrorCode.INVALID_ROOM
    room.receive(1, Say(3, "/join #b"), 0.0)
    assert error(1, 4, "/part #c") is ErrorCode.NOT_IN_ROOM
    room.receive(1, Say(5, "/part #b"), 0.0)
    room.receive(1, Say(6, "/join #c"), 0.0)  # #b was emptied and forgotten: room for #c
    assert error(1, 7, "/join #d") is ErrorCode.TOO_MANY_ROOMS  # bob is in two rooms
    assert room.rooms_of(1) == [LOBBY, "#c"]


def test_a_reconnect_is_sent_exactly_what_it_missed_in_each_room() -> None:
    room, history = two_in_dev()
    room.receive(0, Say(2, "before", "#dev"), 0.0)
    room.receive(0, Say(3, "before"), 0.0)
    room.leave(1, LeaveReason.LOST, 0.0)  # bob saw seq 1 in both rooms
    room.receive(0, Say(4, "missed one", "#dev"), 0.0)
    committed(room, history)
    room.receive(0, Say(5, "missed two", "#dev"), 0.0)  # not committed yet: still sent
    out = to(room.join(5, Hello("bob", S2, rooms=((LOBBY, 1), ("#dev", 1))), 0.0), 5)
    assert [type(m).__name__ for m in out] == [
        "Welcome", "Entered", "Joined", "Entered", "HistoryStart", "Chat", "Chat", "HistoryEnd",
        "Joined",
    ]  # fmt: skip
    assert out[4] == HistoryStart(2, "#dev", HistoryKind.MISSED)
    assert [m.text for m in out if isinstance(m, Chat)] == ["missed one", "missed two"]
    assert out[7] == HistoryEnd("#dev", more=False)


def test_a_reconnect_that_missed_too_much_gets_the_newest_and_is_told() -> None:
    room, history = two_in_dev()
    room.leave(1, LeaveReason.LOST, 0.0)
    for n in range(MAX_MISSED + 5):
        room.receive(0, Say(n + 2, f"line {n}", "#dev"), 0.0)
    committed(room, history)
    out = to(room.join(5, Hello("bob", S2, rooms=(("#dev", 0),)), 0.0), 5)
    seqs = [m.seq for m in out if isinstance(m, Chat) and m.room == "#dev"]
    assert seqs == list(range(6, MAX_MISSED + 6))
    assert HistoryEnd("#dev", more=True) in out


# --- the stateful model test -------------------------------------------------------------------

ROOMS = [LOBBY, "#a", "#b", "#c"]
NAMES = ["ann", "ben", "cat", "dan", "eve"]
LIMITS = RoomLimits(max_users=3, history_size=3, rooms_per_user=3, members_per_room=2, max_rooms=3)


@dataclass
class Client:
    """What a client process keeps across its connections: its name, its rooms with the last
    line seen in each, and per room the lines seen since it last entered it."""

    name: str
    session: bytes
    key: bytes
    """Its client key: the first to enter a room is that room's operator."""
    seen: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    views: dict[str, list[str]] = field(default_factory=dict)
    """Who is in each of its rooms, as the messages it was sent tell it."""
    oldest: dict[str, int] = field(default_factory=dict)
    """Per room, the oldest line sent on this connection (where ``/history`` goes on)."""
    block: HistoryKind | None = None


class RoomsMachine(RuleBasedStateMachine):
    """Many clients in a few rooms, against what each was told."""

    def __init__(self) -> None:
        super().__init__()
        self.history = History(None, 0.0)
        self.room = Room(LIMITS, self.history, owners=Owners(self.history.owner_of))
        self.clients = [
            Client(name, bytes([n + 1]) * 16, bytes([n + 1]) * 32)
            for n, name in enumerate(NAMES[:4])
        ]
        self.conns: dict[int, Client] = {}  # connected
        self.next_conn = 0
        self.next_id: dict[bytes, int] = {}
        self.posted: dict[str, int] = {}  # room -> its last seq
        self.operators: dict[str, Client] = {}  # room -> who made it
        self.keys_used: dict[str, set[bytes]] = {}  # name -> the keys that used it

    def _deliver(self, outputs: list[Output], rejoining: frozenset[str] = frozenset()) -> None:
        for conn, message in outputs:
            client = self.conns.get(conn)
            if client is None:
                continue
            match message:
                case Entered(room=room, users=users):
                    if room != LOBBY and users == (client.name,):
                        self.operators.setdefault(room, client)
                    if room not in client.views:
                        client.oldest[room] = self.posted.get(room, 0) + 1
                    client.views[room] = list(users)
                    client.seen.setdefault(room, 0)
                    if room not in rejoining:
                        client.lines[room] = []
                case Joined(room=room, name=name) if name != client.name:
                    client.views[room].append(name)  # (``entered`` already listed us)
                case Left(room=room, name=name, reason=LeaveReason.PARTED | LeaveReason.KICKED) if (
                    name == client.name
                ):
                    del client.views[room], client.seen[room], client.lines[room]
                    del client.oldest[room]
                case Left(room=room, name=name):
                    client.views[room].remove(name)
                case Renamed(old=old, new=new):
                    for view in client.views.values():
                        view[:] = [new if n == old else n for n in view]
                    if client.name == old:
                        client.name = new
                case HistoryStart(kind=kind):
                    client.block = kind
                case Chat(room=room, seq=seq) if client.block is HistoryKind.BEFORE:
                    client.oldest[room] = min(client.oldest[room], seq)
                case HistoryEnd():
                    client.block = None
                case Chat(room=room, seq=seq) if client.block not in (
                    HistoryKind.BEFORE,
                    HistoryKind.SEARCH,
                ):
                    client.lines[room].append(seq)
                    client.oldest[room] = min(client.oldest[room], seq)
                    client.seen[room] = max(client.seen[room], seq)
                    if not message.history:
                        assert seq == self.posted.get(room, 0) + 1 or seq <= self.posted[room]

    def _say(self, conn: int, text: str, room: str) -> list[Output]:
        client = self.conns[conn]
        say_id = self.next_id[client.session] = self.next_id.get(client.session, 0) + 1
        out = self.room.receive(conn, Say(say_id, text, room), 0.0)
        for _, message in out:
            if isinstance(message, Chat) and not message.history:
                self.posted[message.room] = message.seq
        self._deliver(out)
        last = out[-1]
        assert last[0] == conn and isinstance(last[1], Ack) and last[1].id == say_id
        return out

    @rule(index=st.integers(0, 3))
    def connect(self, index: int) -> None:
        """A client connects, or reconnects naming its rooms (replacing a live connection of
        its session if there is one)."""
        client = self.clients[index]
        conn, self.next_conn = self.next_conn, self.next_conn + 1
        rooms = tuple(client.seen.items())
        old = next((c for c, cl in self.conns.items() if cl is client), None)
        if old is not None:
            del self.conns[old]
        self.conns[conn] = client
        hello = Hello(client.name, client.session, rooms=rooms)
        out = self.room.join(conn, hello, 0.0, owner=client.key)
        first = to(out, conn)[0]
        if isinstance(first, Refused):
            del self.conns[conn]
            holders = {cl.name for cl in self.conns.values()}
            owned = self._owned_by_another(client.name, client)
            assert client.name in holders or owned or len(self.conns) >= LIMITS.max_users
            return
        self.keys_used.setdefault(client.name, set()).add(client.key)
        client.views, client.oldest = {}, {}
        self._deliver(out, frozenset(room for room, _ in rooms))

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns)))
        del self.conns[conn]
        self._deliver(self.room.leave(conn, LeaveReason.LOST, 0.0))

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), count=st.integers(1, 3))
    def say(self, data: st.DataObject, count: int) -> None:
        """Lines in one of the user's rooms, mostly, or in a room it is not in."""
        conn = data.draw(st.sampled_from(sorted(self.conns)))
        room = data.draw(st.sampled_from([*self.room.rooms_of(conn) * 3, *ROOMS]))
        for _ in range(count - 1):
            self._say(conn, "hi", room)
        out = self._say(conn, "hi", room)
        if room not in self.room.rooms_of(conn):
            assert isinstance(out[0][1], Error) and out[0][1].code is ErrorCode.NOT_IN_ROOM

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def join_room(self, data: st.DataObject, room: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns)))
        mine, live = self.room.rooms_of(conn), [r for r in ROOMS if self.room.members(r)]
        members = len(self.room.members(room))
        out = self._say(conn, f"/join {room}", LOBBY)
        first = out[0][1]
        if room in mine:
            assert first == Entered(room, "", tuple(self.room.members(room)))
        elif len(mine) >= LIMITS.rooms_per_user or (
            room not in live and len(live) >= LIMITS.max_rooms
        ):
            assert isinstance(first, Error) and first.code is ErrorCode.TOO_MANY_ROOMS
        elif room != LOBBY and members >= LIMITS.members_per_room:
            assert isinstance(first, Error) and first.code is ErrorCode.ROOM_FULL
        else:
            assert room in self.room.rooms_of(conn)

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def part(self, data: st.DataObject, room: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns)))
        self._say(conn, f"/part {room}", LOBBY)
        assert room not in self.room.rooms_of(conn)

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def nick(self, data: st.DataObject, name: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns)))
        client = self.conns[conn]
        taken = {c.name for c in self.conns.values() if c is not client}
        self._say(conn, f"/nick {name}", LOBBY)
        if name in taken:
            assert client.name != name
        elif not self._owned_by_another(name, client):
            assert client.name == name
        if client.name == name:
            self.keys_used.setdefault(name, set()).add(client.key)

    def _owned_by_another(self, name: str, client: Client) -> bool:
        """Whether another key may own ``name`` (one that used it; a key owns only its few
        latest names, so such a name may also have been released)."""
        return bool(self.keys_used.get(name, set()) - {client.key})

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), room=st.sampled_from(ROOMS[1:]))
    def kick(self, data: st.DataObject, room: str) -> None:
        """Someone kicks a member of a room: done if it is the room's operator, refused
        otherwise; the kicked member is out of the room but still connected."""
        members = self.room.members(room)
        if not members:
            return
        inside = [conn for conn, client in self.conns.items() if client.name in members]
        conn = data.draw(st.sampled_from([*inside * 3, *sorted(self.conns)]))
        target = data.draw(st.sampled_from(members))
        kicker = self.conns[conn]
        out = self._say(conn, f"/kick {target} go", room)
        if room not in self.room.rooms_of(conn) and target != kicker.name:
            assert isinstance(out[0][1], Error) and out[0][1].code is ErrorCode.NOT_IN_ROOM
        elif self.operators.get(room) is kicker:
            assert target not in self.room.members(room)
            assert target in self.room.names
        else:
            assert isinstance(out[0][1], Error) and out[0][1].code is ErrorCode.NOT_OPERATOR

    @precondition(lambda self: self.conns)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def page_back(self, data: st.DataObject, room: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns)))
        client = self.conns[conn]
        oldest = client.oldest.get(room)
        out = self._say(conn, "/history 2", room)
        if oldest is not None:  # the lines just before the oldest this connection was sent
            older = [m.seq for _, m in out if isinstance(m, Chat)]
            assert older == list(range(max(1, oldest - 2), oldest))

    @rule()
    def commit(self) -> None:
        committed(self.room, self.history)

    @invariant()
    def membership_views_agree_with_the_server(self) -> None:
        for conn, client in self.conns.items():
            assert sorted(client.views) == sorted(self.room.rooms_of(conn))
            for room, view in client.views.items():
                assert view == self.room.members(room)

    @invariant()
    def every_member_sees_each_rooms_lines_once_in_order(self) -> None:
        for conn, client in self.conns.items():
            for room in self.room.rooms_of(conn):
                seqs = client.lines[room]
                if seqs:
                    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
                    assert seqs[-1] == self.posted[room]  # up to the room's newest line
                else:
                    assert self.posted.get(room, 0) == client.seen[room]


RoomsMachine.TestCase.settings = settings(stateful_step_count=50, deadline=None)
TestRoomsMachine = RoomsMachine.TestCase
