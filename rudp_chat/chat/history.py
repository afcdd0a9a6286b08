"""The chat's durable memory: every room's public lines (with a full-text index), room topics
and, per client session, the highest client message id processed, in one SQLite database.

Durability is the point: the server acknowledges a message only after :meth:`History.write`
committed it, so a message its sender saw acknowledged survives ``kill -9`` of the server.
The database runs in WAL mode with ``synchronous=FULL``: every commit is fsynced, so it also
survives a power loss or an OS crash. ``NORMAL`` would survive a process crash but could roll
back the last commits on power loss, breaking the promise an acknowledgement makes. The cost,
one fsync per commit, is shared by every message in it: the server commits whatever arrived
while the previous commit was running in one transaction (group commit).

The per-session ids are stored in the same transaction as the messages they produced, which is
what makes a resend after a reconnect, even across a server restart, never deliver twice.

Lines are keyed by ``(room, seq)``, so a page (``before``, ``after``) is one index range scan
whatever the size of the file; ``/search`` uses an FTS5 index kept by triggers. A database of
the first version (one ``messages`` table, one room) is moved into ``#lobby`` on opening.

Bounds: sessions unheard of for :data:`SESSION_RETENTION_S` are forgotten, at start and every
:data:`PRUNE_INTERVAL_S` of a running server (in memory, so are the topics of rooms with no
line kept). The file keeps every line (it is the record, and
the disk is its bound); in memory (``--no-history``) only the newest :data:`MEMORY_LINES` of all
rooms are kept, so paging and search reach back that far and no further, and a server at 50
lines/s does not grow by about 2 GiB a day (0.5 KiB a line).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from . import owners
from .access import Access
from .owners import Claim
from .protocol import Chat
from .store import Journal

__all__ = ["DEFAULT_HISTORY_FILE", "MEMORY_LINES", "History"]

DEFAULT_HISTORY_FILE: Final = "rudp-chat-history.sqlite3"
SESSION_RETENTION_S: Final = 7 * 24 * 3600.0  # a client gone for a week will not resend
PRUNE_INTERVAL_S: Final = 3600.0  # old sessions are looked for hourly: a full scan, rarely
MEMORY_LINES: Final = 10_000  # kept by --no-history: about 5 MiB at 0.5 KiB a line
_COLUMNS: Final = "room, seq, time, sender, text, action"
_IN_LINES: Final = ", ".join(f"lines.{column}" for column in _COLUMNS.split(", "))

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    action INTEGER NOT NULL,
    UNIQUE (room, seq)
);
CREATE VIRTUAL TABLE IF NOT EXISTS lines_text USING fts5(
    text, content='lines', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS lines_indexed AFTER INSERT ON lines BEGIN
    INSERT INTO lines_text (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS lines_unindexed AFTER DELETE ON lines BEGIN
    INSERT INTO lines_text (lines_text, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    topic TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access (
    room TEXT PRIMARY KEY,
    operators BLOB NOT NULL,
    bans BLOB NOT NULL,
    topic_locked INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    session BLOB PRIMARY KEY,
    acked INTEGER NOT NULL,
    time REAL NOT NULL
) WITHOUT ROWID;
"""
_FIRST_VERSION_MOVED: Final = """
INSERT INTO lines (room, seq, time, sender, text, action)
    SELECT '#lobby', seq, time, sender, text, action FROM messages ORDER BY seq;
DROP TABLE messages;
"""


class History:
    """One SQLite database; ``path=None`` keeps it in memory (``--no-history``).

    Calls must not overlap. The server reads in the event loop between commits and commits in a
    worker thread, never both at once, so the connection is shared across those threads.
    """

    def __init__(self, path: Path | None, now: float) -> None:
        """Open (creating if needed) the database and forget sessions older than a week.

        Raises ``sqlite3.Error`` if ``path`` cannot be opened or is not such a database."""
        self.in_memory = path is None
        self._db = sqlite3.connect(
            ":memory:" if path is None else path, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._upgrade()
        self._db.executescript(owners.SCHEMA)
        self._pruned = now
        self._prune(now)

    def _upgrade(self) -> None:
        """Move a first-version database's one room into ``#lobby``, in one transaction."""
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
        ).fetchone()
        if found is not None:
            self._db.executescript(f"BEGIN; {_FIRST_VERSION_MOVED} COMMIT;")

    def _prune(self, now: float) -> None:
        """Forget old sessions; in memory, also the topics and operators of rooms none of whose
        lines are kept (a room with members keeps them in the room logic meanwhile)."""
        self._db.execute("DELETE FROM sessions WHERE time < ?", (now - SESSION_RETENTION_S,))
        if self.in_memory:
            self._db.execute("DELETE FROM rooms WHERE name NOT IN (SELECT room FROM lines)")
            self._db.execute("DELETE FROM access WHERE room NOT IN (SELECT room FROM lines)")
        owners.prune(self._db, now)
        self._pruned = now

    def listener_secret(self) -> bytes:
        """The transport's token secret, made once and kept with the history: after a restart
        the server can still send RESETs its old clients believe, so they reconnect at once
        instead of after an idle timeout."""
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES ('listener', ?)",
                (os.urandom(32),),
            )
        row = self._db.execute("SELECT value FROM secrets WHERE name = 'listener'").fetchone()
        return bytes(row[0])

    def last_seq(self, room: str) -> int:
        """The highest stored ``seq`` of ``room`` (0 if none)."""
        row = self._db.execute("SELECT max(seq) FROM lines WHERE room = ?", (room,)).fetchone()
        return int(row[0] or 0)

    def last_seqs(self) -> dict[str, int]:
        """Each room with a stored line, with its highest ``seq`` (a walk of the index: at
        a cluster node's start)."""
        rows = self._db.execute("SELECT room, max(seq) FROM lines GROUP BY room").fetchall()
        return {str(room): int(seq) for room, seq in rows}

    def before(self, room: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` older than ``seq``, oldest first."""
        return self._lines(
            f"SELECT {_COLUMNS} FROM lines WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (room, seq, limit),
        )

    def after(self, room: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` newer than ``seq``, oldest first."""
        return self._lines(
            f"SELECT {_COLUMNS} FROM lines WHERE room = ? AND seq > ? ORDER BY seq DESC LIMIT ?",
            (room, seq, limit),
        )

    def search(self, room: str, text: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` older than ``seq`` that hold every word of
        ``text`` (FTS5 tokens; each word is quoted, so no FTS5 syntax reaches the query)."""
        words = text.split()
        if not words:
            return []
        query = " ".join('"' + word.replace('"', '""') + '"' for word in words)
        # Newest hits first straight from the index (FTS5 walks a doclist backwards): a room's
        # lines are stored in seq order, so its ids and seqs sort alike.
        return self._lines(
            f"SELECT {_IN_LINES} FROM lines_text JOIN lines ON lines.id = lines_text.rowid"
            " WHERE lines_text MATCH ? AND lines.room = ? AND lines.seq < ?"
            " ORDER BY lines_text.rowid DESC LIMIT ?",
            (query, room, seq, limit),
        )

    def _lines(self, query: str, parameters: tuple[object, ...]) -> list[Chat]:
        """The lines ``query`` selects newest first, as history, oldest first."""
        rows = self._db.execute(query, parameters).fetchall()
        return [
            Chat(seq, time, sender, text, bool(action), history=True, room=room)
            for room, seq, time, sender, text, action in reversed(rows)
        ]

    def topic(self, room: str) -> str:
        """The stored topic of ``room`` ("" if none)."""
        row = self._db.execute("SELECT topic FROM rooms WHERE name = ?", (room,)).fetchone()
        return "" if row is None else str(row[0])

    def recall(self, session: bytes) -> int:
        """The highest processed client message id of ``session`` (0 if unknown)."""
        row = self._db.execute(
            "SELECT acked FROM sessions WHERE session = ?", (session,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def access(self, room: str) -> Access | None:
        """The stored operators, bans and modes of ``room`` (None: never made)."""
        row = self._db.execute(
            "SELECT operators, bans, topic_locked FROM access WHERE room = ?", (room,)
        ).fetchone()
        return None if row is None else Access.from_row(bytes(row[0]), bytes(row[1]), row[2])

    def owner_of(self, skeleton: str) -> Claim | None:
        """The stored claim on a name's look-alike class (see :mod:`.owners`)."""
        return owners.lookup(self._db, skeleton)

    def write(self, journal: Journal, now: float) -> None:
        """Store ``journal`` in one transaction and return once it is committed (fsynced)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT INTO lines ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (c.room, c.seq, c.time, c.sender, c.text, int(c.action))
                    for c in journal.messages
                ],
            )
            self._db.executemany(
                "INSERT INTO rooms (name, topic) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET topic = excluded.topic",
                journal.topics,
            )
            self._db.executemany(
                "INSERT INTO access (room, operators, bans, topic_locked) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (room) DO UPDATE SET operators = excluded.operators,"
                " bans = excluded.bans, topic_locked = excluded.topic_locked",
                [(room, *access.to_row()) for room, access in journal.access],
            )
            self._db.executemany(
                "INSERT INTO sessions (session, acked, time) VALUES (?, ?, ?)"
                " ON CONFLICT (session) DO UPDATE SET acked = excluded.acked, time = excluded.time",
                [(session, acked, now) for session, acked in journal.acked],
            )
            owners.store(self._db, journal.claims, now, in_memory=self.in_memory)
            if self.in_memory and journal.messages:
                self._db.execute(
                    "DELETE FROM lines WHERE id <= (SELECT max(id) FROM lines) - ?",
                    (MEMORY_LINES,),
                )
            if now - self._pruned >= PRUNE_INTERVAL_S:
                self._prune(now)

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL back into the file)."""
        self._db.close()
