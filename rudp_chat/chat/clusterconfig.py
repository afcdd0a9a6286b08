"""What a node of a chat cluster is told (``rudp-chat server --redis``): where the shared Redis
is, its own name, and the cluster's bounds. Kept apart from :mod:`.cluster` so that a server on
its own never imports ``redis`` (the ``cluster`` extra)."""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_NAME_TTL_S",
    "DEFAULT_STREAM_MAXLEN",
    "ClusterOptions",
]

DEFAULT_NAME_TTL_S: Final = 15.0  # a dead node's users time out within this (the bound)
DEFAULT_STREAM_MAXLEN: Final = 10_000  # lines a room's stream keeps (~5 MiB at 0.5 KiB a line)
MIN_NAME_TTL_S: Final = 0.3  # three heartbeats per TTL must fit: 100 ms is Redis's timer grain
SESSION_RETENTION_MS: Final = 7 * 24 * 3600 * 1000  # as a lone server's history keeps sessions


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """A node's view of its cluster. Raises ``ValueError`` for values that cannot work."""

    redis_url: str
    """``redis://HOST:PORT/DB``: the Redis every node of the cluster shares."""
    node: str = field(default_factory=socket.gethostname)
    """This node's name, unique in the cluster (default: the host name)."""
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN
    """Lines each room's stream keeps (``MAXLEN ~``: at least this many); older lines live
    on in each node's SQLite archive."""
    name_ttl: float = DEFAULT_NAME_TTL_S
    """Seconds a node's names and members outlive its last heartbeat (one every third)."""
    replicas: int = 0
    """Replicas that must have a line before it is acknowledged (``WAIT``); 0: none."""
    replica_timeout: float = 1.0
    """Seconds ``WAIT`` waits for them; a line they did not confirm stays unacknowledged."""

    def __post_init__(self) -> None:
        if not self.node or any(c.isspace() or c == ":" for c in self.node):
            raise ValueError("need a node name without spaces or ':'")
        if self.stream_maxlen < 1:
            raise ValueError("need stream_maxlen >= 1 line")
        if not MIN_NAME_TTL_S <= self.name_ttl < math.inf:
            raise ValueError(f"need {MIN_NAME_TTL_S} <= name_ttl < inf seconds")
        if self.replicas < 0 or not 0 < self.replica_timeout < math.inf:
            raise ValueError("need replicas >= 0 and 0 < replica_timeout < inf seconds")

    @property
    def heartbeat(self) -> float:
        """Seconds between heartbeats: three per TTL, so one lost beat expires nothing."""
        return self.name_ttl / 3

    def describe(self) -> str:
        """One line for the start-up banner."""
        waits = f", WAIT {self.replicas}" if self.replicas else ""
        return (
            f"node {self.node}, Redis {self.redis_url} (streams MAXLEN ~{self.stream_maxlen}, "
            f"names expire {self.name_ttl:g} s after a node's last heartbeat{waits})"
        )
