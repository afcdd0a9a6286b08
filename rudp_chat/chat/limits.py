"""How much one chat server takes: the limits the room logic enforces (``RoomLimits``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_PAGE", "RoomLimits"]

MAX_PAGE: Final = 200  # lines one /history sends: a few screens, a bounded answer


@dataclass(frozen=True, slots=True)
class RoomLimits:
    """How much the server takes. Raises ``ValueError`` when a value cannot work."""

    max_users: int = 100
    history_size: int = 50
    """Lines a user is shown on entering a room, and by a bare ``/history``."""
    rate: float = 20.0
    """Messages per second a user may send, sustained (faster than anyone types)."""
    burst: int = 40
    """Messages a user may send at once (a pasted paragraph)."""
    flood_kick: int = 20
    """Messages refused after the warning before the user is disconnected."""
    flood_cooldown: float = 30.0
    """Seconds a session kicked for flooding, and its source address, are refused (at least
    ``burst / rate``, the refill time). A user who left unkicked comes back, by session or by
    address, to its spent bucket until it would have refilled. So reconnecting buys no fresh
    burst: the bound holds per person, not per session. Everyone behind that address (a NAT,
    an office) shares the penalty: the accepted price of keying on the address, which a
    flooder cannot change as easily as its session."""
    remembered: int = 10_000
    """Departed users' allowances and cool-downs kept (an entry per session and per address;
    expired ones are dropped, past this the oldest): memory stays bounded under any churn."""
    rooms_per_user: int = 20
    """Rooms one user may be in at once, ``#lobby`` included."""
    members_per_room: int = 100
    """Members of one room other than ``#lobby`` (which holds everyone: ``max_users``)."""
    max_rooms: int = 100
    """Rooms with members at once, ``#lobby`` included."""

    def __post_init__(self) -> None:
        if self.max_users < 1 or self.history_size < 0 or self.flood_kick < 1:
            raise ValueError("need max_users >= 1, history_size >= 0 and flood_kick >= 1")
        if not self.rate > 0 or self.burst < 1:
            raise ValueError("need rate > 0 messages per second and burst >= 1")
        if not 0 <= self.flood_cooldown < math.inf or self.remembered < 2:
            # a departure is remembered under two keys, its session and its address
            raise ValueError("need 0 <= flood_cooldown < inf seconds and remembered >= 2")
        if self.rooms_per_user < 1 or self.members_per_room < 1 or self.max_rooms < 1:
            raise ValueError("need rooms_per_user, members_per_room and max_rooms >= 1")
        if self.history_size > MAX_PAGE:
            raise ValueError(f"need history_size <= {MAX_PAGE}")
