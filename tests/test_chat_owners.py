"""Names that belong to their owner's key, and look-alike names refused, on the sans-IO room
and the SQLite store behind it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rudp_chat.chat import owners
from rudp_chat.chat.history import History
from rudp_chat.chat.owners import (
    MAX_NAMES_PER_KEY,
    OWNERSHIP_RETENTION_S,
    Claim,
    Owners,
    name_skeletons,
)
from rudp_chat.chat.protocol import (
    MAX_TEXT_CHARS,
    Bye,
    ByeCode,
    Error,
    ErrorCode,
    Hello,
    LeaveReason,
    Left,
    RefusalCode,
    Refused,
    Renamed,
    Say,
    ServerMessage,
    Welcome,
)
from rudp_chat.chat.room import Output, Room, RoomLimits
from rudp_chat.chat.server import open_room
from rudp_chat.chat.text import name_key, normalise_name

K1, K2, K3 = (bytes([n]) * 32 for n in (1, 2, 3))
"""Client static public keys (the room only compares them)."""

OWNED = "belongs to another client key; the first client key to use a name owns it"


def session(n: int) -> bytes:
    return bytes([n]) * 16


def only(outputs: list[Output], conn: int) -> ServerMessage:
    [message] = [message for recipient, message in outputs if recipient == conn]
    return message


def refusal(outputs: list[Output]) -> str:
    [(_, refused)] = outputs
    assert isinstance(refused, Refused) and refused.code is RefusalCode.NAME_TAKEN
    return refused.reason


def welcomed(outputs: list[Output], conn: int) -> bool:
    return any(recipient == conn and isinstance(m, Welcome) for recipient, m in outputs)


# ------------------------------------------------------------ ownership in the room


def test_the_first_key_owns_a_name_another_key_and_a_guest_are_refused() -> None:
    room = Room(RoomLimits())
    assert welcomed(room.join(1, Hello("alice", session(1)), 0.0, owner=K1), 1)
    room.leave(1, LeaveReason.LEFT, 1.0)
    assert refusal(room.join(2, Hello("alice", session(2)), 2.0, owner=K2)) == (
        f"the name alice {OWNED}"
    )
    assert refusal(room.join(3, Hello("ALICE", session(3)), 2.0)) == (
        f"the name ALICE {OWNED}, and guests may use only names no key owns"
    )
    assert welcomed(room.join(4, Hello("Alice", session(4)), 3.0, owner=K1), 4)
    assert room.names == ["Alice"]


def test_another_key_is_refused_by_the_rule_even_while_the_owner_is_online() -> None:
    room = Room(RoomLimits(), lost_within=4.0)
    room.join(1, Hello("alice", session(1)), 0.0, owner=K1)
    assert refusal(room.join(2, Hello("alice", session(2)), 0.0, owner=K2)) == (
        f"the name alice {OWNED}"
    )


def test_the_owner_reclaims_its_name_at_once_replacing_its_stale_session() -> None:
    room = Room(RoomLimits(burst=3))
    room.join(1, Hello("bob", session(1)), 0.0, owner=K1)
    room.join(2, Hello("carol", session(2)), 0.0, owner=K2)
    for say_id in (1, 2, 3):  # the burst spent: a restart must not refill it
        room.receive(1, Say(say_id, "hi"), 0.0)
    out = room.join(3, Hello("bob", session(3)), 0.0, owner=K1)  # restarted: a new session
    assert out[:3] == [
        (1, Bye(ByeCode.REPLACED, "you connected again elsewhere")),
        (2, Left("bob", LeaveReason.RECONNECTED)),
        (3, Welcome("bob", ("carol", "bob"), 0, MAX_TEXT_CHARS, 20.0, 3)),
    ]
    assert room.receive(1, Say(4, "ghost"), 0.0) == []
    [(_, error), _] = room.receive(3, Say(1, "again"), 0.0)
    assert isinstance(error, Error) and error.code is ErrorCode.RATE_LIMITED


def test_guests_use_names_no_key_owns_and_a_guest_name_is_only_taken_while_online() -> None:
    room = Room(RoomLimits(), lost_within=4.0)
    assert welcomed(room.join(1, Hello("dave", session(1)), 0.0), 1)
    assert refusal(room.join(2, Hello("dave", session(2)), 0.0)) == (
        "the name dave is taken; if it was yours on a connection that died, it frees within 4 s"
    )
    assert refusal(room.join(3, Hello("dave", session(3)), 0.0, owner=K1)) == (
        "the name dave is taken"  # a keyed client's own name would have been reclaimed
    )
    room.leave(1, LeaveReason.LOST, 1.0)
    assert welcomed(room.join(4, Hello("dave", session(4)), 2.0), 4)  # still nobody's
    room.leave(4, LeaveReason.LEFT, 3.0)
    assert welcomed(room.join(5, Hello("dave", session(5)), 4.0, owner=K1), 5)
    room.leave(5, LeaveReason.LEFT, 5.0)
    assert OWNED in refusal(room.join(6, Hello("dave", session(6)), 6.0))


def test_nick_respects_ownership_and_claims_the_new_name() -> None:
    room = Room(RoomLimits())
    room.join(1, Hello("alice", session(1)), 0.0, owner=K1)
    room.leave(1, LeaveReason.LEFT, 0.0)
    room.join(2, Hello("bob", session(2)), 0.0, owner=K2)
    room.join(3, Hello("guest", session(3)), 0.0)
    [(_, error), _] = room.receive(2, Say(1, "/nick Alice"), 0.0)
    assert error == Error(ErrorCode.NAME_TAKEN, f"the name Alice {OWNED}", 1)
    [(_, error), _] = room.receive(3, Say(1, "/nick bob"), 0.0)  # bob is online and owned
    assert isinstance(error, Error) and OWNED in error.text
    renamed = Renamed("bob", "robert")
    assert room.receive(2, Say(2, "/nick robert"), 0.0)[0] == (2, renamed)
    room.leave(2, LeaveReason.LEFT, 0.0)
    assert OWNED in refusal(room.join(4, Hello("robert", session(4)), 0.0, owner=K3))
    assert OWNED in refusal(room.join(4, Hello("bob", session(4)), 0.0, owner=K3))  # kept


def test_claims_are_journaled_and_a_guest_claims_nothing() -> None:
    room = Room(RoomLimits())
    room.join(1, Hello("eve", session(1)), 0.0)
    room.join(2, Hello("Frank", session(2)), 0.0, owner=K1)
    journal = room.take_journal()
    assert journal is not None
    assert [(c.name, c.owner) for c in journal.claims] == [("Frank", K1)]
    assert {c.skeleton for c in journal.claims} == set(name_skeletons("Frank"))
    assert room.take_journal() is None


# ------------------------------------------------------------ names are the server's, not a room's


def test_a_look_alike_of_a_name_held_anywhere_is_refused_from_any_room() -> None:
    room = Room(RoomLimits())
    room.join(1, Hello("alice", session(1), rooms=(("#ops", 0),)), 0.0)
    room.join(2, Hello("carol", session(2), rooms=(("#dev", 0),)), 0.0, owner=K2)
    assert (room.members("#dev"), room.members("#ops")) == (["carol"], ["alice"])
    [(_, error), _] = room.receive(2, Say(1, "/nick \u0430lice", "#dev"), 0.0)
    assert error == Error(
        ErrorCode.NAME_TAKEN,
        "the name \u0430lice looks like alice, who is here (names that look alike count as one)",
        1,
    )
    [(_, error), _] = room.receive(1, Say(1, "/nick Carol", "#ops"), 0.0)
    assert isinstance(error, Error) and OWNED in error.text


def test_the_owner_reclaiming_its_name_takes_its_stale_session_out_of_every_room() -> None:
    room = Room(RoomLimits())
    dev = (("#dev", 0),)
    room.join(1, Hello("bob", session(1), rooms=dev), 0.0, owner=K1)
    room.join(2, Hello("carol", session(2), rooms=dev), 0.0, owner=K2)
    out = room.join(3, Hello("bob", session(3)), 0.0, owner=K1)  # restarted: #lobby only
    assert out[:4] == [
        (1, Bye(ByeCode.REPLACED, "you connected again elsewhere")),
        (2, Left("bob", LeaveReason.RECONNECTED, "#lobby")),
        (2, Left("bob", LeaveReason.RECONNECTED, "#dev")),
        (3, Welcome("bob", ("carol", "bob"), 0, MAX_TEXT_CHARS, 20.0, 40)),
    ]
    assert (room.members("#lobby"), room.members("#dev")) == (["carol", "bob"], ["carol"])
    assert room.rooms_of(3) == ["#lobby"]


# ------------------------------------------------------------ look-alike names


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice", "\u0430lice"),  # Cyrillic a
        ("paypal", "\u0440\u0430\u0443\u0440\u0430l"),  # Cyrillic р а у
        ("oscar", "\u03bfscar"),  # Greek omicron
        ("MIKE", "\u039c\u0399\u039a\u0395"),  # Greek capitals: their small letters differ
        ("olga", "0lga"),  # digit zero
        ("bill", "bi11"),  # digit one
        ("ALICE", "allce"),  # capital I, small L
        ("mike", "rnike"),  # TR39: m looks like r n
    ],
)
def test_look_alike_names_are_one_name(first: str, second: str) -> None:
    assert set(name_skeletons(first)) & set(name_skeletons(second))
    room = Room(RoomLimits())
    room.join(1, Hello(first, session(1)), 0.0, owner=K1)
    assert refusal(room.join(2, Hello(second, session(2)), 0.0)) == (
        f"the name {normalise_name(second)} looks like {first}, which belongs to another "
        "client key (names that look alike count as one); the first client key to use a name "
        "owns it, and guests may use only names no key owns"
    )
    room.leave(1, LeaveReason.LEFT, 0.0)
    guests = Room(RoomLimits())
    guests.join(1, Hello(first, session(1)), 0.0)
    assert refusal(guests.join(2, Hello(second, session(2)), 0.0)) == (
        f"the name {normalise_name(second)} looks like {first}, who is here "
        "(names that look alike count as one)"
    )
    assert welcomed(guests.join(3, Hello("other", session(3)), 0.0), 3)
    [(_, error), _] = guests.receive(3, Say(1, f"/nick {second}"), 0.0)
    assert isinstance(error, Error) and "looks like" in error.text


@pytest.mark.parametrize(
    "names",
    [
        ("bob", "rob", "Bob2", "bob_"),
        ("anna", "ann", "hanna"),
        ("jose", "jos\u00e9"),  # an accent is a different name
        ("clint", "dint", "clim"),
        ("wendy", "vvendy"),  # TR39 does not map w to vv
        ("nikos", "\u03bd\u03b9\u03ba\u03bf\u03c2"),  # the whole name in Greek: its own
    ],
)
def test_distinct_ordinary_names_are_not_refused(names: tuple[str, ...]) -> None:
    room = Room(RoomLimits())
    for conn, name in enumerate(names):
        assert welcomed(room.join(conn, Hello(name, session(conn)), 0.0, owner=K1), conn)
    assert room.names == [normalise_name(name) for name in names]


# ------------------------------------------------------------ the store


def join_and_store(history: History, room: Room, conn: int, name: str, owner: bytes) -> None:
    assert welcomed(room.join(conn, Hello(name, session(conn)), 0.0, owner=owner), conn)
    journal = room.take_journal()
    assert journal is not None
    history.write(journal, now=float(conn))


def test_ownership_survives_a_server_restart(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    history = History(path, now=0.0)
    room = open_room(history, RoomLimits())
    join_and_store(history, room, 1, "alice", K1)
    history.close()

    reopened = History(path, now=10.0)
    room = open_room(reopened, RoomLimits())
    assert refusal(room.join(2, Hello("\u0430lice", session(2)), 10.0, owner=K2)).startswith(
        "the name \u0430lice looks like alice, which belongs to another client key"
    )
    assert welcomed(room.join(3, Hello("alice", session(3)), 10.0, owner=K1), 3)
    reopened.close()


def test_claims_survive_the_upgrade_of_a_first_version_database(tmp_path: Path) -> None:
    path = tmp_path / "first-version.sqlite3"
    with sqlite3.connect(path) as db:  # a version-1 server's tables: one room, and owners
        db.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, time REAL NOT NULL,"
            " sender TEXT NOT NULL, text TEXT NOT NULL, action INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO messages VALUES (1, 1.0, 'alice', 'hi', 0)")
        db.executescript(owners.SCHEMA)
        claims = [Claim(skeleton, "alice", K1) for skeleton in name_skeletons("alice")]
        owners.store(db, claims, 1.0, in_memory=False)
    db.close()
    history = History(path, now=2.0)
    assert history.last_seq("#lobby") == 1
    room = open_room(history, RoomLimits())
    assert OWNED in refusal(room.join(1, Hello("alice", session(1)), 2.0, owner=K2))
    assert welcomed(room.join(2, Hello("alice", session(2)), 2.0, owner=K1), 2)
    history.close()


def test_in_memory_store_keeps_claims_while_the_server_runs() -> None:
    history = History(None, now=0.0)
    join_and_store(history, open_room(history, RoomLimits()), 1, "alice", K1)
    fresh_room = open_room(history, RoomLimits())  # nothing pending: only the store answers
    assert OWNED in refusal(fresh_room.join(2, Hello("alice", session(2)), 0.0, owner=K2))
    history.close()


def test_a_key_owns_a_bounded_number_of_names_the_least_recently_used_is_released() -> None:
    history = History(None, now=0.0)
    room = open_room(history, RoomLimits())
    names = [f"name{n}" for n in range(MAX_NAMES_PER_KEY + 1)]
    for conn, name in enumerate(names, start=1):
        join_and_store(history, room, conn, name, K1)
    released = Owners(history.owner_of)
    assert released.refusal(names[0], name_skeletons(names[0]), K2) is None
    for name in names[1:]:
        assert released.refusal(name, name_skeletons(name), K2) is not None
    history.close()


def test_the_in_memory_store_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owners, "MAX_NAMES_IN_MEMORY", 2)
    history = History(None, now=0.0)
    room = open_room(history, RoomLimits())
    for conn, (name, key) in enumerate([("a", K1), ("b", K2), ("c", K3)], start=1):
        join_and_store(history, room, conn, name, key)
    store = Owners(history.owner_of)
    assert [store.owner_of(name_skeletons(n)[0]) is None for n in "abc"] == [True, False, False]
    history.close()


def test_a_name_unused_for_the_retention_time_is_released(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    history = History(path, now=0.0)
    join_and_store(history, open_room(history, RoomLimits()), 1, "alice", K1)
    history.close()
    history = History(path, now=OWNERSHIP_RETENTION_S + 2)
    assert history.owner_of("alice") is None
    history.close()


def test_the_look_alike_classes_in_protocol_md() -> None:
    text = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    table = text.split("   | name | key | classes |\n   |---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = [row.strip(" |").split(" | ") for row in table.splitlines()]
    assert len(rows) == 7
    for name_cell, key_cell, classes_cell in rows:
        name = name_cell.split("`")[1]
        classes = classes_cell.split(":")[0].split(" (")[0]
        assert key_cell == f"`{name_key(name)}`"
        assert classes == ", ".join(f"`{c}`" for c in name_skeletons(name))


# ------------------------------------------------------------ the rules against a model

MODEL_NAMES = ["alice", "Alice", "\u0430lice", "ALICE", "allce", "mike", "rnike", "MIKE", "bob"]
MODEL_NAMES.append("\u039c\u0399\u039a\u0395")  # Greek capitals: one class shared with MIKE
MODEL_KEYS = [K1, K2, None]


class OwnershipMachine(RuleBasedStateMachine):
    """Joins, leaves and renames by two keys and guests against a model of the rules: a class
    owned by another key refuses; one held online refuses unless the holder is of the same key
    (then it is replaced on join); a keyed client that got a name owns its classes."""

    def __init__(self) -> None:
        super().__init__()
        self.room = Room(RoomLimits(rate=1e9, burst=10**9))
        self.owned: dict[str, bytes] = {}  # class -> key
        self.online: dict[int, tuple[str, bytes | None, bytes]] = {}  # conn -> name, key, session
        self.next_conn = 0
        self.say_ids: dict[bytes, int] = {}  # per session: the room remembers across conns

    def _classes(self, name: str) -> set[str]:
        return set(name_skeletons(normalise_name(name)))

    def _owned_by_other(self, name: str, key: bytes | None) -> bool:
        return any(self.owned.get(c, key) != key for c in self._classes(name))

    def _holders(self, name: str, but: int | None) -> list[int]:
        classes = self._classes(name)
        return [c for c, (n, _, _) in self.online.items() if c != but and classes & self._classes(n)]

    @rule(
        name=st.sampled_from(MODEL_NAMES),
        key=st.sampled_from(MODEL_KEYS),
        client=st.integers(0, 3),
    )
    def join(self, name: str, key: bytes | None, client: int) -> None:
        conn, self.next_conn = self.next_conn, self.next_conn + 1
        hello_session = session(client)
        out = self.room.join(conn, Hello(name, hello_session), 0.0, owner=key)
        previous = next((c for c, u in self.online.items() if u[2] == hello_session), None)
        holders = [c for c in self._holders(name, previous) if self.online[c][2] != hello_session]
        owned = self._owned_by_other(name, key)
        if owned or any(key is None or self.online[c][1] != key for c in holders):
            assert ("belongs to another client key" in refusal(out)) is owned
            return
        assert welcomed(out, conn)
        for replaced in [*([] if previous is None else [previous]), *holders]:
            assert (replaced, Bye(ByeCode.REPLACED, "you connected again elsewhere")) in out
            del self.online[replaced]
        self.online[conn] = (normalise_name(name), key, hello_session)
        if key is not None:
            self.owned.update(dict.fromkeys(self._classes(name), key))

    @precondition(lambda self: self.online)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.online)))
        self.room.leave(conn, LeaveReason.LEFT, 0.0)
        del self.online[conn]

    @precondition(lambda self: self.online)
    @rule(data=st.data(), name=st.sampled_from(MODEL_NAMES))
    def rename(self, data: st.DataObject, name: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.online)))
        _, key, hello_session = self.online[conn]
        say_id = self.say_ids[hello_session] = self.say_ids.get(hello_session, 0) + 1
        out = self.room.receive(conn, Say(say_id, f"/nick {name}"), 0.0)
        owned = self._owned_by_other(name, key)
        if owned or self._holders(name, conn):
            error = out[0][1]
            assert isinstance(error, Error) and error.code is ErrorCode.NAME_TAKEN
            assert ("belongs to another client key" in error.text) is owned
            return
        self.online[conn] = (normalise_name(name), key, hello_session)
        if key is not None:
            self.owned.update(dict.fromkeys(self._classes(name), key))

    @invariant()
    def the_room_agrees(self) -> None:
        assert sorted(self.room.names) == sorted(n for n, _, _ in self.online.values())
        names = list(self.room.names)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                assert not self._classes(first) & self._classes(second)


TestOwnershipMachine = OwnershipMachine.TestCase
