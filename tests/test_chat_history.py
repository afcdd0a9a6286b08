"""The SQLite history: what the server commits is there after reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rudp_chat.chat.history import PRUNE_INTERVAL_S, SESSION_RETENTION_S, History
from rudp_chat.chat.protocol import Chat
from rudp_chat.chat.room import Journal

S1, S2 = bytes([1]) * 16, bytes([2]) * 16


def test_messages_and_session_ids_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    history = History(path, now=0.0)
    assert (history.last_seq(), history.recent(5), history.recall(S1)) == (0, [], 0)
    chats = [Chat(seq, float(seq), "alice", f"line {seq}", action=seq == 2) for seq in (1, 2, 3)]
    history.write(Journal(tuple(chats[:2]), ((S1, 2),)), now=10.0)
    history.write(Journal(tuple(chats[2:]), ((S1, 3), (S2, 1))), now=11.0)
    history.close()

    reopened = History(path, now=12.0)
    assert reopened.last_seq() == 3
    assert reopened.recent(2) == chats[1:]
    assert (reopened.recall(S1), reopened.recall(S2)) == (3, 1)
    reopened.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_old_sessions_are_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    history = History(path, now=0.0)
    history.write(Journal((), ((S1, 4),)), now=0.0)
    history.close()
    history = History(path, now=SESSION_RETENTION_S + 1)
    assert history.recall(S1) == 0
    history.close()


def test_in_memory_history_works_the_same() -> None:
    history = History(None, now=0.0)
    history.write(Journal((Chat(1, 0.0, "a", "x"),), ((S1, 1),)), now=0.0)
    assert (history.last_seq(), history.recall(S1)) == (1, 1)
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


def test_in_memory_history_keeps_only_the_newest_message_and_its_number() -> None:
    history = History(None, now=0.0)
    for seq in range(1, 1001):
        history.write(Journal((Chat(seq, float(seq), "alice", f"line {seq}"),), ((S1, seq),)), 1.0)
    assert history.last_seq() == 1000
    assert history.recent(20) == [Chat(1000, 1000.0, "alice", "line 1000")]
    assert history.recall(S1) == 1000


def test_a_file_keeps_every_message(tmp_path: Path) -> None:
    history = History(tmp_path / "chat.sqlite3", now=0.0)
    chats = [Chat(seq, float(seq), "alice", f"line {seq}") for seq in range(1, 31)]
    for chat in chats:
        history.write(Journal((chat,), ()), 1.0)
    assert history.recent(100) == chats
    history.close()


def test_a_running_server_forgets_old_sessions_every_prune_interval() -> None:
    history = History(None, now=SESSION_RETENTION_S)  # pruned at open
    history.write(Journal((), ((S1, 4),)), now=0.0)  # already older than the retention
    history.write(Journal((), ((S2, 1),)), now=SESSION_RETENTION_S + 1)
    assert history.recall(S1) == 4  # not looked for again within the interval
    history.write(Journal((), ((S2, 2),)), now=SESSION_RETENTION_S + PRUNE_INTERVAL_S)
    assert (history.recall(S1), history.recall(S2)) == (0, 2)
