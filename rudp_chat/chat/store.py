"""What the room logic needs from storage: what it hands over to be stored (a journal) and what
it reads back (a store). :class:`rudp_chat.chat.history.History` is the one store; the room
sees it only through this interface, so it stays free of SQLite and files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .access import Access
from .owners import Claim
from .protocol import Chat, Topic

__all__ = ["EmptyStore", "Journal", "Proposal", "StorageError", "Store"]


class StorageError(Exception):
    """A journal could not be stored: nothing it holds may be acknowledged."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """A line said, or a topic set, on this server of a cluster: for the shared log to order
    (and number, if a line) and store once."""

    session: bytes
    """The sender's client session: with ``id``, what makes a resend (to any server) stored once."""
    id: int
    """The ``Say.id`` that said it."""
    said: Chat | Topic
    """The line (``seq`` 0: the log numbers it), or the room's new topic."""


@dataclass(frozen=True, slots=True)
class Journal:
    """What must be stored before the outputs that produced it are sent."""

    messages: tuple[Chat, ...]
    """New public messages, in ``seq`` order within each room."""
    acked: tuple[tuple[bytes, int], ...]
    """``(session, id)``: the highest ``Say.id`` now processed for each session that changed."""
    topics: tuple[tuple[str, str], ...] = ()
    """``(room, topic)``: each room whose topic changed, with its newest topic."""
    claims: tuple[Claim, ...] = ()
    """Names their owners' keys used (claimed, or ownership refreshed)."""
    access: tuple[tuple[str, Access], ...] = ()
    """``(room, access)``: each room made or whose operators, bans or modes changed."""
    proposed: tuple[Proposal, ...] = ()
    """Lines and topics said here, for a cluster's shared log to order (``Room(shared_log=True)``;
    ``messages`` then holds the lines the log delivered, to keep)."""


class Store(Protocol):
    """Committed lines, topics and sessions. Lines come oldest first, as ``history``-marked
    :class:`Chat` messages; ``seq`` bounds are exclusive."""

    def last_seq(self, room: str) -> int:
        """The highest stored ``seq`` of ``room`` (0 if none)."""
        ...

    def before(self, room: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` older than ``seq``."""
        ...

    def after(self, room: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` newer than ``seq``."""
        ...

    def search(self, room: str, text: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` older than ``seq`` holding every word of
        ``text``."""
        ...

    def topic(self, room: str) -> str:
        """The stored topic of ``room`` ("" if none)."""
        ...

    def recall(self, session: bytes) -> int:
        """The highest processed client message id of ``session`` (0 if unknown)."""
        ...

    def access(self, room: str) -> Access | None:
        """The stored operators, bans and modes of ``room`` (None: the room was never made)."""
        ...


class EmptyStore:
    """A store with nothing in it, for a room nothing is stored for (tests, demos)."""

    def last_seq(self, room: str) -> int:
        return 0

    def before(self, room: str, seq: int, limit: int) -> list[Chat]:
        return []

    def after(self, room: str, seq: int, limit: int) -> list[Chat]:
        return []

    def search(self, room: str, text: str, seq: int, limit: int) -> list[Chat]:
        return []

    def topic(self, room: str) -> str:
        return ""

    def recall(self, session: bytes) -> int:
        return 0

    def access(self, room: str) -> Access | None:
        return None
