"""One room's state: its name, topic, members and numbering, and reading its lines back.

Lines are read from the :class:`Store` (committed) merged with the journal's lines not yet
committed, so a page or a replay never misses a line said moments before in the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .access import Access
from .protocol import Chat
from .store import Store

__all__ = ["Channel", "Lines"]


@dataclass(slots=True)
class Channel:
    """A room that has members (an empty room is forgotten; its lines and topic are stored)."""

    name: str
    topic: str
    next_seq: int
    """The ``seq`` its next line gets: 1, 2, 3, ... per room, continuing the stored history."""
    access: Access = field(default_factory=Access)
    """Its operators, bans and ``+t`` (see :mod:`.access`)."""
    members: dict[int, None] = field(default_factory=dict)
    """The connections in the room, in order of arrival."""


class Lines:
    """A room's lines as the room logic sees them: committed in ``store`` or still in
    ``pending`` (the journal's lines, which are newer than every committed one)."""

    def __init__(self, store: Store, pending: list[Chat]) -> None:
        self._store = store
        self._pending = pending

    def _uncommitted(self, room: str) -> list[Chat]:
        return [replace(c, history=True) for c in self._pending if c.room == room]

    def before(self, room: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` older than ``seq``, oldest first."""
        newer = [c for c in self._uncommitted(room) if c.seq < seq][-limit:] if limit else []
        bound = newer[0].seq if newer else seq
        return [*self._store.before(room, bound, limit - len(newer)), *newer]

    def after(self, room: str, seq: int, limit: int) -> list[Chat]:
        """The newest ``limit`` lines of ``room`` newer than ``seq``, oldest first."""
        newer = [c for c in self._uncommitted(room) if c.seq > seq][-limit:] if limit else []
        return [*self._store.after(room, seq, limit - len(newer)), *newer]
