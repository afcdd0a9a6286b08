"""The chat's durable memory: public messages and, per client session, the highest client
message id processed, in one SQLite database.

Durability is the point: the server acknowledges a message only after :meth:`History.write`
committed it, so a message its sender saw acknowledged survives ``kill -9`` of the server.
The database runs in WAL mode with ``synchronous=FULL``: every commit is fsynced, so it also
survives a power loss or an OS crash. ``NORMAL`` would survive a process crash but could roll
back the last commits on power loss, breaking the promise an acknowledgement makes. The cost,
one fsync per commit, is shared by every message in it: the server commits whatever arrived
while the previous commit was running in one transaction (group commit).

The per-session ids are stored in the same transaction as the messages they produced, which is
what makes a resend after a reconnect, even across a server restart, never deliver twice.

Bounds: sessions unheard of for :data:`SESSION_RETENTION_S` are forgotten, at start and every
:data:`PRUNE_INTERVAL_S` of a running server. The file keeps every message (it is the record,
and the disk is its bound); in memory (``--no-history``) only the newest is kept, for its
number: nothing else is ever read back (the room replays the last messages from its own list),
and a server at 50 lines/s would otherwise grow by about 2 GiB a day (0.5 KiB a line).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from . import owners
from .owners import Claim
from .protocol import Chat
from .room import Journal

__all__ = ["DEFAULT_HISTORY_FILE", "History"]

DEFAULT_HISTORY_FILE: Final = "rudp-chat-history.sqlite3"
SESSION_RETENTION_S: Final = 7 * 24 * 3600.0  # a client gone for a week will not resend
PRUNE_INTERVAL_S: Final = 3600.0  # old sessions are looked for hourly: a full scan, rarely

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    action INTEGER NOT NULL
);
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
        self._db.executescript(owners.SCHEMA)
        self._pruned = now
        self._prune_sessions(now)

    def _prune_sessions(self, now: float) -> None:
        self._db.execute("DELETE FROM sessions WHERE time < ?", (now - SESSION_RETENTION_S,))
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

    def last_seq(self) -> int:
        """The highest stored message id (0 if none)."""
        row = self._db.execute("SELECT max(seq) FROM messages").fetchone()
        return int(row[0] or 0)

    def recent(self, limit: int) -> list[Chat]:
        """The last ``limit`` messages, oldest first."""
        rows = self._db.execute(
            "SELECT seq, time, sender, text, action FROM messages ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Chat(seq, time, sender, text, bool(action))
            for seq, time, sender, text, action in reversed(rows)
        ]

    def recall(self, session: bytes) -> int:
        """The highest processed client message id of ``session`` (0 if unknown)."""
        row = self._db.execute(
            "SELECT acked FROM sessions WHERE session = ?", (session,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def owner_of(self, skeleton: str) -> Claim | None:
        """The stored claim on a name's look-alike class (see :mod:`.owners`)."""
        return owners.lookup(self._db, skeleton)

    def write(self, journal: Journal, now: float) -> None:
        """Store ``journal`` in one transaction and return once it is committed (fsynced)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO messages (seq, time, sender, text, action) VALUES (?, ?, ?, ?, ?)",
                [(c.seq, c.time, c.sender, c.text, int(c.action)) for c in journal.messages],
            )
            self._db.executemany(
                "INSERT INTO sessions (session, acked, time) VALUES (?, ?, ?)"
                " ON CONFLICT (session) DO UPDATE SET acked = excluded.acked, time = excluded.time",
                [(session, acked, now) for session, acked in journal.acked],
            )
            owners.store(self._db, journal.claims, now, in_memory=self.in_memory)
            if self.in_memory and journal.messages:  # keep the newest, for last_seq
                self._db.execute("DELETE FROM messages WHERE seq < ?", (journal.messages[-1].seq,))
            if now - self._pruned >= PRUNE_INTERVAL_S:
                self._prune_sessions(now)

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL back into the file)."""
        self._db.close()
