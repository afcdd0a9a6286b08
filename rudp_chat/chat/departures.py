"""What the server keeps of users who left, so that reconnecting buys no fresh burst: the spent
allowance of each, and the cool-down of each kicked for flooding, under its session and under
its address, for as long as it matters and for at most a bounded number of departures."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import RefusalCode, Refused
from .ratelimit import TokenBucket

__all__ = ["Departures", "Memory"]


@dataclass(frozen=True, slots=True)
class Memory:
    """What is kept of a departed user, under its session and under its address."""

    until: float
    """When it is forgotten: by then a fresh bucket is no fuller than this one would be."""
    bucket: TokenBucket | None
    """The allowance a returning user carries on; None: kicked, refused until ``until``."""


class Departures:
    """At most ``remembered`` memories (an entry per session and per address), oldest first."""

    def __init__(self, remembered: int) -> None:
        self.remembered = remembered
        self._memory: dict[bytes | str, Memory] = {}

    def __len__(self) -> int:
        """Entries kept (one per session and one per address)."""
        return len(self._memory)

    def remember(self, session: bytes, address: str | None, memory: Memory, now: float) -> None:
        """Keep ``memory`` under ``session`` and ``address`` (a cool-down is never cut short
        by an allowance); drop what expired from the oldest end, and the oldest past the limit."""
        for key in (session, address):
            if key is None:
                continue
            old = self._memory.pop(key, None)  # re-inserted: the newest is last
            if old is None or old.bucket is not None or old.until <= now:
                old = memory  # no live cool-down to keep
            self._memory[key] = memory if memory.bucket is None else old
        while self._memory:
            oldest = next(iter(self._memory))
            if self._memory[oldest].until > now and len(self._memory) <= self.remembered:
                break
            del self._memory[oldest]

    def returning(
        self,
        session: bytes,
        address: str | None,
        held: Callable[[TokenBucket], bool],
        now: float,
    ) -> TokenBucket | Refused | None:
        """The spent allowance a returning session or address carries on with, a refusal if
        either was kicked for flooding within the cool-down, or None: a fresh bucket.

        The very bucket, so that whichever session or address the person comes back by, it
        finds what it last spent; but a copy if a connected user already holds it
        (``held``), so that two neighbours returning from one address do not share one bucket
        for good."""
        memories = [(self._recall(session, now), "you were")]
        if address is not None:
            memories.append((self._recall(address, now), "someone at your address was"))
        for memory, whose in memories:
            if memory is not None and memory.bucket is None:
                wait = f"try again in {math.ceil(memory.until - now)} s"
                return Refused(RefusalCode.COOLING_DOWN, f"{whose} kicked for flooding; {wait}")
        bucket = next((m.bucket for m, _ in memories if m is not None), None)
        if bucket is not None and held(bucket):
            return copy.copy(bucket)
        return bucket

    def _recall(self, key: bytes | str, now: float) -> Memory | None:
        """What is remembered under ``key``, unless it expired (then it is forgotten)."""
        memory = self._memory.get(key)
        if memory is not None and memory.until <= now:
            del self._memory[key]
            return None
        return memory
