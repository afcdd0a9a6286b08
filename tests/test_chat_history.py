"""The SQLite history: what the server commits is there after reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rudp_chat.chat.history import MEMORY_LINES, PRUNE_INTERVAL_S, SESSION_RETENTION_S, History
from rudp_chat.chat.protocol import Chat
from rudp_chat.chat.store import Journal

S1, S2 = bytes([1]) * 16, bytes([2]) * 16


def lines(room: str, seqs: range, time: float = 0.0) -> list[Chat]:
    return [Chat(seq, time + seq, "alice", f"line {seq}", history=True, room=room) for seq in seqs]


def test_lines_topics_and_session_ids_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    history = History(path, now=0.0)
    assert (history.last_seq("#lobby"), history.before("#lobby", 9, 5), history.recall(S1)) == (
        0,
        [],
        0,
    )
    lobby, dev = lines("#lobby", range(1, 4)), lines("#dev", range(1, 3))
    history.write(Journal(tuple(lobby[:2] + dev), ((S1, 2),), (("#dev", "rooms"),)), now=10.0)
    history.write(Journal(tuple(lobby[2:]), ((S1, 3), (S2, 1))), now=11.0)
    history.close()

    reopened = History(path, now=12.0)
    assert (reopened.last_seq("#lobby"), reopened.last_seq("#dev")) == (3, 2)
    assert reopened.before("#lobby", 4, 2) == lobby[1:]
    assert reopened.after("#dev", 0, 10) == dev
    assert (reopened.topic("#dev"), reopened.topic("#lobby")) == ("rooms", "")
    assert (reopened.recall(S1), reopened.recall(S2)) == (3, 1)
    reopened.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_first_version_database_becomes_lobby(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, time REAL NOT NULL,"
            " sender TEXT NOT NULL, text TEXT NOT NULL, action INTEGER NOT NULL)"
        )
        db.executemany(
            "INSERT INTO messages VALUES (?, ?, 'alice', ?, 0)",
            [(seq, float(seq), f"line {seq}") for seq in (1, 2, 3)],
        )
    db.close()
    history = History(path, now=0.0)
    assert history.before("#lobby", 10, 10) == lines("#lobby", range(1, 4))
    assert history.search("#lobby", "line 2", 10, 10) == lines("#lobby", range(2, 3))
    history.close()


def test_old_sessions_are_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    history = History(path, now=0.0)
    history.write(Journal((), ((S1, 4),)), now=0.0)
    history.close()
    history = History(path, now=SESSION_RETENTION_S + 1)
    assert history.recall(S1) == 0
    history.close()


def test_the_listener_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    first = History(path, 0.0)
    secret = first.listener_secret()
    assert len(secret) == 32 and first.listener_secret() == secret
    first.close()
    reopened = History(path, 0.0)
    assert reopened.listener_secret() == secret
    reopened.close()
    other = History(tmp_path / "other.sqlite3", 0.0)
    assert other.listener_secret() != secret
    other.close()


def test_in_memory_history_keeps_only_the_newest_lines() -> None:
    history = History(None, now=0.0)
    total = MEMORY_LINES + 500
    for seq in range(1, total + 1):
        history.write(Journal(tuple(lines("#lobby", range(seq, seq + 1))), ((S1, seq),)), 1.0)
    assert history.last_seq("#lobby") == total
    assert history.before("#lobby", 501, 10) == []  # forgotten
    kept = history.after("#lobby", 0, total)
    assert [c.seq for c in kept] == list(range(501, total + 1))
    assert history.search("#lobby", "line", 1000, 2) == lines("#lobby", range(998, 1000))
    assert history.search("#lobby", "line", 501, 2) == []  # the index forgot them too
    assert history.recall(S1) == total


def test_a_file_keeps_every_line(tmp_path: Path) -> None:
    history = History(tmp_path / "chat.sqlite3", now=0.0)
    chats = lines("#lobby", range(1, 31))
    for chat in chats:
        history.write(Journal((chat,), ()), 1.0)
    assert history.before("#lobby", 100, 100) == chats
    history.close()


def test_a_running_server_forgets_old_sessions_every_prune_interval() -> None:
    history = History(None, now=SESSION_RETENTION_S)  # pruned at open
    history.write(Journal((), ((S1, 4),)), now=0.0)  # already older than the retention
    history.write(Journal((), ((S2, 1),)), now=SESSION_RETENTION_S + 1)
    assert history.recall(S1) == 4  # not looked for again within the interval
    history.write(Journal((), ((S2, 2),)), now=SESSION_RETENTION_S + PRUNE_INTERVAL_S)
    assert (history.recall(S1), history.recall(S2)) == (0, 2)


WORDS = ("apple", "Apple", "pear", "plum", "fig", "kiwi", '"quoted"', "NEAR", "a*", "-x")
_texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["#a", "#b"]), _texts), max_size=40),
    st.sampled_from(["#a", "#b"]),
    st.integers(1, 45),
    st.integers(0, 12),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=2).map(" ".join),
)
def test_pages_and_search_agree_with_a_model(
    said: list[tuple[str, str]], room: str, bound: int, limit: int, query: str
) -> None:
    """``before``, ``after`` and ``search`` against a list: the same lines, oldest first.
    Search words match caselessly and whole, and FTS5 syntax in them is taken literally."""
    history = History(None, now=0.0)
    model: dict[str, list[Chat]] = {"#a": [], "#b": []}
    for where, text in said:
        chat = Chat(len(model[where]) + 1, 1.0, "bob", text, history=True, room=where)
        model[where].append(chat)
        history.write(Journal((chat,), ()), 1.0)
    ours = model[room]
    older = [c for c in ours if c.seq < bound]
    assert history.before(room, bound, limit) == (older[-limit:] if limit else [])
    newer = [c for c in ours if c.seq > bound]
    assert history.after(room, bound, limit) == (newer[-limit:] if limit else [])
    wanted = {word.casefold() for word in query.split()}
    hits = [c for c in older if wanted <= {w.casefold() for w in c.text.split()}]
    assert [c.seq for c in history.search(room, query, bound, limit)] == [
        c.seq for c in (hits[-limit:] if limit else [])
    ]
    history.close()


def test_in_memory_topics_of_rooms_without_lines_are_forgotten_at_the_prune() -> None:
    history = History(None, now=0.0)
    history.write(
        Journal(tuple(lines("#a", range(1, 2))), (), (("#a", "kept"), ("#b", "gone"))), 0.0
    )
    assert (history.topic("#a"), history.topic("#b")) == ("kept", "gone")
    history.write(Journal((), ((S1, 1),)), now=PRUNE_INTERVAL_S)
    assert (history.topic("#a"), history.topic("#b")) == ("kept", "")
