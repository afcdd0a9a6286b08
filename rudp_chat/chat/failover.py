"""Which server a client tries next, and how long it waits first.

A client may know several servers of one chat (a cluster's nodes). It uses one at a time and
stays with it while it works. When that connection ends, the next server in the list is tried at
once (the lost one has just failed; a lone server is given a moment to restart), then each
other in turn; only when every server has failed in a row does the client wait, with a backoff
that doubles up to a bound, jittered so that the clients of a dead node do not come back in step.
The list order is the preference: the first server is tried first at start.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

__all__ = ["BACKOFF_FIRST_S", "BACKOFF_MAX_S", "Rotation", "ServerAddress"]

BACKOFF_FIRST_S: Final = 0.5  # first wait: a restarting server is usually back soon
BACKOFF_MAX_S: Final = 8.0  # later waits double up to this
JITTER: Final = 0.25  # each wait is drawn from ±25 % of it, against reconnecting herds

ServerAddress = tuple[str, int]
"""A server's host (a name or an address) and UDP port."""


class Rotation:
    """The servers in the order they are tried, the current one, and the backoff.

    ``rng`` draws the jitter (seed it in tests). Raises ``ValueError`` for an empty list.
    """

    def __init__(self, servers: Sequence[ServerAddress], rng: random.Random) -> None:
        if not servers:
            raise ValueError("a client needs at least one server")
        self.servers = tuple(servers)
        self._rng = rng
        self._index = 0
        self._failed_in_row = 0  # attempts failed since the last success or the last wait
        self._backoff = BACKOFF_FIRST_S

    @property
    def current(self) -> ServerAddress:
        """The server to use (or try) now."""
        return self.servers[self._index]

    def connected(self) -> None:
        """The current server took us: the next trouble starts afresh."""
        self._failed_in_row = 0
        self._backoff = BACKOFF_FIRST_S

    def lost(self) -> float:
        """The current server's connection ended after it worked (it died, timed out or shut
        down): move to the next server and return how long to wait before trying it, 0 if there
        is another server, a short jittered wait for a lone one."""
        self.connected()
        if len(self.servers) > 1:
            self._advance()
            return 0.0
        return self._wait()

    def failed(self) -> float:
        """An attempt at the current server failed: move to the next one; return 0 while some
        server has not been tried since the last success or wait, else (every server failed
        in a row) the backoff wait, which is never 0."""
        self._failed_in_row += 1
        self._advance()
        if self._failed_in_row < len(self.servers):
            return 0.0
        self._failed_in_row = 0
        return self._wait()

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self.servers)

    def _wait(self) -> float:
        """The backoff, jittered; the next one is twice as long, up to the bound."""
        wait = self._backoff * self._rng.uniform(1 - JITTER, 1 + JITTER)
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        return wait
