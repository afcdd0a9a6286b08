"""A protocol endpoint on the simulated network that plays the application's part.

It takes every event out of its connections as soon as an input produces it (as an
application reading promptly would), records it with its virtual time, and hands it
to an optional callback, which may react (send, close) at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.events import Event
from rudp_chat.core.listener import Listener

__all__ = ["Endpoint", "Recorded"]


@dataclass(frozen=True, slots=True)
class Recorded:
    time: float
    connection: Connection
    event: Event


@dataclass(slots=True)
class Endpoint:
    """Wraps a client :class:`Connection` or a server :class:`Listener` as a network node."""

    inner: Connection | Listener
    on_event: Callable[[Recorded], None] | None = None
    connections: list[Connection] = field(default_factory=list)
    log: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.inner, Connection):
            self.connections.append(self.inner)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.inner.receive_datagram(data, addr, now)
        self.drain(now)

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)
        self.drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.inner.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.inner.get_timer()

    def drain(self, now: float) -> None:
        """Take every pending event (call after acting on a connection outside an input)."""
        if isinstance(self.inner, Listener):
            while (accepted := self.inner.accept()) is not None:
                self.connections.append(accepted)
        for connection in self.connections:
            while (event := connection.next_event()) is not None:
                record = Recorded(now, connection, event)
                self.log.append(record)
                if self.on_event is not None:
                    self.on_event(record)

    def events(self, kind: type[Event]) -> list[Recorded]:
        return [record for record in self.log if isinstance(record.event, kind)]
