"""Names that belong to their owner: the first client key to use a name owns it.

A name is owned by its look-alike classes, TR39 skeletons (:func:`name_skeletons`): whoever
owns ``alice`` also owns the Cyrillic ``аlice``, and whoever owns ``MIKE`` the Greek ``ΜΙΚΕ``.
The owner's key may use the name at any time, replacing a session of the same key that still
holds it (a client restarted after a crash); another key, or a guest (a client without a key),
is refused, also while the owner is away. Guests may use any name no key owns. Using an owned
name refreshes its ownership.

The claims live in the history database (``owners`` table): on disk they survive a restart,
with ``--no-history`` they live as long as the server. Bounds: a key owns at most
:data:`MAX_NAMES_PER_KEY` names (a new claim releases its least recently used), a name unused
for :data:`OWNERSHIP_RETENTION_S` is released, and the in-memory store keeps at most
:data:`MAX_NAMES_IN_MEMORY` names (the least recently used go first).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from .confusables import skeleton as tr39_skeleton
from .text import name_key

__all__ = [
    "MAX_NAMES_IN_MEMORY",
    "MAX_NAMES_PER_KEY",
    "OWNERSHIP_RETENTION_S",
    "SCHEMA",
    "Claim",
    "Owners",
    "lookup",
    "name_skeletons",
    "prune",
    "store",
]

MAX_NAMES_PER_KEY: Final = 3  # a nick or two besides one's own; more would let one key squat
OWNERSHIP_RETENTION_S: Final = 365 * 24 * 3600.0  # a name unused for a year is free again
MAX_NAMES_IN_MEMORY: Final = 100_000  # --no-history: ~10 MiB of rows at most

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS owners (
    skeleton TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner BLOB NOT NULL,
    time REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owners_by_owner ON owners (owner, time);
CREATE INDEX IF NOT EXISTS owners_by_time ON owners (time);
"""


def name_skeletons(name: str) -> tuple[str, ...]:
    """The look-alike classes of a (normalised) name, one or two: two names that share one are
    one name, for ownership and for who is online.

    The first is caseless, as TR39 advises: the skeleton of the name's key (so ``ALICE`` meets
    ``alice``). The second is the skeleton of the name as shown, because casefolding first
    hides capitals that look alike but whose small letters do not (the Greek ``ΜΙΚΕ`` and
    ``MIKE``; ``μικε`` and ``mike`` differ). Both are casefolded again: the table maps ``0``
    to ``O``, which must meet ``o``."""
    caseless = tr39_skeleton(name_key(name)).casefold()
    shown = tr39_skeleton(name).casefold()
    return (caseless,) if shown == caseless else (caseless, shown)


@dataclass(frozen=True, slots=True)
class Claim:
    """A name and the key that owns it."""

    skeleton: str
    """One of :func:`name_skeletons` of ``name``: what the claim is stored and looked up by."""
    name: str
    """The name as its owner last used it (what a refusal shows)."""
    owner: bytes
    """The owner's static X25519 public key (32 bytes)."""


class Owners:
    """Who owns which name: the store's answer, with the claims not yet stored on top.

    ``stored(skeleton)`` reads the store (:func:`lookup`); claims made here are kept until
    :meth:`take` hands them to be stored, and win over the store until then."""

    def __init__(self, stored: Callable[[str], Claim | None] = lambda skeleton: None) -> None:
        self._stored = stored
        self._pending: dict[str, Claim] = {}

    def owner_of(self, skeleton: str) -> Claim | None:
        """The claim on the look-alike class ``skeleton`` (None: no key owns it)."""
        return self._pending.get(skeleton) or self._stored(skeleton)

    def claim(self, name: str, skeletons: Iterable[str], owner: bytes) -> None:
        """Record that ``owner`` uses ``name`` (whose look-alike classes are ``skeletons``)
        now: it owns it, or its ownership is refreshed. The caller has checked
        :meth:`refusal`."""
        for skeleton in skeletons:
            self._pending[skeleton] = Claim(skeleton, name, owner)

    def take(self) -> tuple[Claim, ...]:
        """Hand over (and stop overlaying) the claims made since the last call."""
        claims = tuple(self._pending.values())
        self._pending.clear()
        return claims

    def refusal(self, name: str, skeletons: Iterable[str], owner: bytes | None) -> str | None:
        """Why a client with key ``owner`` (None: a guest) may not use ``name``, whose
        look-alike classes are ``skeletons``; None if it may."""
        claims = (self.owner_of(skeleton) for skeleton in skeletons)
        claim = next((c for c in claims if c is not None and c.owner != owner), None)
        if claim is None:
            return None
        rule = "the first client key to use a name owns it"
        if name_key(claim.name) == name_key(name):
            whose = f"the name {name} belongs to another client key"
        else:
            whose = (
                f"the name {name} looks like {claim.name}, which belongs to another client key "
                "(names that look alike count as one)"
            )
        if owner is None:
            return f"{whose}; {rule}, and guests may use only names no key owns"
        return f"{whose}; {rule}"


def lookup(db: sqlite3.Connection, skeleton: str) -> Claim | None:
    """The stored claim on ``skeleton``, if any."""
    row = db.execute("SELECT name, owner FROM owners WHERE skeleton = ?", (skeleton,)).fetchone()
    return None if row is None else Claim(skeleton, str(row[0]), bytes(row[1]))


def store(db: sqlite3.Connection, claims: Iterable[Claim], now: float, *, in_memory: bool) -> None:
    """Write ``claims`` (inside the caller's transaction), then apply the bounds: each claiming
    key keeps its :data:`MAX_NAMES_PER_KEY` most recently used names, and an in-memory store its
    :data:`MAX_NAMES_IN_MEMORY` most recently used."""
    claims = list(claims)
    if not claims:
        return
    db.executemany(
        "INSERT INTO owners (skeleton, name, owner, time) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (skeleton) DO UPDATE SET name = excluded.name, owner = excluded.owner,"
        " time = excluded.time",
        [(c.skeleton, c.name, c.owner, now) for c in claims],
    )
    db.executemany(
        "DELETE FROM owners WHERE owner = ? AND name NOT IN (SELECT name FROM owners"
        " WHERE owner = ? GROUP BY name ORDER BY max(time) DESC, name LIMIT ?)",
        [(owner, owner, MAX_NAMES_PER_KEY) for owner in {c.owner for c in claims}],
    )
    if in_memory:
        db.execute(  # only claims get here (joins, renames): the index walk is rare
            "DELETE FROM owners WHERE time <"
            " (SELECT time FROM owners ORDER BY time DESC LIMIT 1 OFFSET ?)",
            (MAX_NAMES_IN_MEMORY - 1,),
        )


def prune(db: sqlite3.Connection, now: float) -> None:
    """Release the names unused for :data:`OWNERSHIP_RETENTION_S`."""
    db.execute("DELETE FROM owners WHERE time < ?", (now - OWNERSHIP_RETENTION_S,))
