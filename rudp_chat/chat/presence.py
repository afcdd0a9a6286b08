"""Who is on the other nodes of a cluster, sans-IO: each node publishes its users (a
:func:`roster`, refreshed by its heartbeat, expiring a TTL after the last), and every node turns
the changes it hears into the notices its own members see.

A user is keyed by its client session, so a client that moves node (a failover) is one user
that was away and is back: ``left`` then ``joined``, never a second copy. A user whose node
stopped beating (its roster expired) is announced ``timed out``: no "zombie" stays listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from .protocol import LOBBY, Joined, LeaveReason, Left, Renamed, ServerMessage

__all__ = ["MAX_ROSTER_BYTES", "Listed", "Notice", "Presence", "decode_roster", "encode_roster"]

MAX_ROSTER_BYTES: Final = 1 << 20  # a node's roster: 100 users x 20 rooms is ~60 KiB

Notice = tuple[str, ServerMessage]
"""A message for the members of a room (on this node)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A user another node lists."""

    node: str
    name: str
    rooms: tuple[str, ...]


def encode_roster(users: Iterable[tuple[bytes, str, tuple[str, ...]]]) -> bytes:
    """A node's users (session, name, rooms) as it publishes them."""
    return json.dumps(
        [[session.hex(), name, list(rooms)] for session, name, rooms in users]
    ).encode()


def decode_roster(node: str, data: bytes) -> dict[bytes, Listed]:
    """The users a roster lists (what another node wrote: checked, nothing else trusted). Raises
    ``ValueError`` if it is not a roster."""
    if len(data) > MAX_ROSTER_BYTES:
        raise ValueError(f"a roster of {len(data)} bytes")
    users: dict[bytes, Listed] = {}
    entries = json.loads(data)
    if not isinstance(entries, list):
        raise ValueError("a roster is a list")
    for entry in entries:
        match entry:
            case [str(session), str(name), list(rooms)] if all(isinstance(r, str) for r in rooms):
                users[bytes.fromhex(session)] = Listed(node, name, tuple(rooms))
            case _:
                raise ValueError(f"not a roster entry: {entry!r:.80}")
    return users


class Presence:
    """What this node last heard of the others' users, and the notices each hearing makes."""

    def __init__(self) -> None:
        self._known: dict[bytes, Listed] = {}

    def names_in(self, room: str | None) -> list[str]:
        """The remote users in ``room`` (None: all of them), by name."""
        return [user.name for user in self._known.values() if room is None or room in user.rooms]

    def arrived(self, session: bytes) -> list[Notice]:
        """``session`` joined this node while another listed it (it moved here): the notices
        that it left there (timed out: its connection there is gone), before its join here."""
        user = self._known.pop(session, None)
        if user is None:
            return []
        return [(room, Left(user.name, LeaveReason.TIMED_OUT, room)) for room in user.rooms]

    def heard(
        self, rosters: Mapping[str, Mapping[bytes, Listed]], local: Iterable[bytes]
    ) -> list[Notice]:
        """Take the rosters of the live nodes (an expired one is absent: its node stopped
        beating) and return the notices of what changed; users of ``local`` sessions (here
        now) are not listed."""
        here = set(local)
        now: dict[bytes, Listed] = {}
        for roster in rosters.values():
            for session, user in roster.items():
                before = self._known.get(session)
                if session in here or (
                    session in now and before is not None and before.node == user.node
                ):
                    continue  # listed twice: the node it was not on before is where it went
                now[session] = user
        notices: list[Notice] = []
        for session, user in self._known.items():
            new = now.get(session)
            if new is None or new.node != user.node:
                # gone from a live node: it left; its node died, or it moved: its connection
                # there is gone
                alive = user.node in rosters and new is None
                reason = LeaveReason.LEFT if alive else LeaveReason.TIMED_OUT
                notices += [(room, Left(user.name, reason, room)) for room in user.rooms]
            elif new.name != user.name:
                notices.append((LOBBY, Renamed(user.name, new.name)))
        for session, user in now.items():
            old = self._known.get(session)
            if old is not None and old.node == user.node:
                notices += [
                    (room, Left(user.name, LeaveReason.PARTED, room))
                    for room in old.rooms
                    if room not in user.rooms
                ]
                notices += [
                    (room, Joined(user.name, room)) for room in user.rooms if room not in old.rooms
                ]
            else:
                notices += [(room, Joined(user.name, room)) for room in user.rooms]
        self._known = now
        return notices
