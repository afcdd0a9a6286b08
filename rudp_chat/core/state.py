"""The connection state machine: every legal transition, in one table.

A missing entry is illegal. The connection feeds peer-driven inputs only where the
table allows them, so only local misuse can raise here.
"""

from __future__ import annotations

import enum

from .errors import LocalProtocolError

__all__ = ["TRANSITIONS", "Input", "Role", "State", "next_state"]


class State(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    """Client only: HELLO sent, waiting for RETRY or WELCOME."""
    OPEN = "open"
    """Handshake done; data flows both ways."""
    CLOSING = "closing"
    """A graceful close began (either side): no new sends; queued data drains, CLOSEs are exchanged."""
    DRAINING = "draining"
    """The application got its final event; we only acknowledge stray retransmissions for a while."""
    CLOSED = "closed"
    """Nothing more is sent or received; the endpoint forgets the connection."""

    __hash__ = object.__hash__  # members are singletons: identity hashing keeps the
    # per-packet table lookups cheap (Enum's own hashes the name in Python)


class Role(enum.Enum):
    """Which end of the connection this is."""

    CLIENT = "client"
    """Made by ``Connection.connect``; starts CONNECTING and runs the handshake."""
    SERVER = "server"
    """Made by a ``Listener`` that did the handshake; starts OPEN."""


class Input(enum.Enum):
    """What drives a transition."""

    HANDSHAKE_DONE = "handshake done"
    """The client received WELCOME."""
    CLOSE_CALLED = "close called"
    """The local application asked for a graceful close."""
    PEER_CLOSED = "peer closed"
    """A graceful CLOSE arrived from the peer."""
    CLOSE_DONE = "close done"
    """Both CLOSEs were exchanged and all data both ways was received."""
    FAILED = "failed"
    """Abort, protocol violation, or the peer's error CLOSE."""
    TIMED_OUT = "timed out"
    """The idle or handshake timer fired (DRAINING has its own timer: DRAINED)."""
    RESET = "reset"
    """The peer sent a valid RESET (a client has its token only once OPEN)."""
    DRAINED = "drained"
    """The drain period ended."""


_S, _I = State, Input
TRANSITIONS: dict[tuple[State, Input], State] = {
    (_S.CONNECTING, _I.HANDSHAKE_DONE): _S.OPEN,
    (_S.CONNECTING, _I.CLOSE_CALLED): _S.CLOSED,
    (_S.CONNECTING, _I.FAILED): _S.CLOSED,
    (_S.CONNECTING, _I.TIMED_OUT): _S.CLOSED,
    (_S.OPEN, _I.CLOSE_CALLED): _S.CLOSING,
    (_S.OPEN, _I.PEER_CLOSED): _S.CLOSING,
    (_S.OPEN, _I.FAILED): _S.DRAINING,
    (_S.OPEN, _I.TIMED_OUT): _S.CLOSED,
    (_S.OPEN, _I.RESET): _S.CLOSED,
    (_S.CLOSING, _I.CLOSE_CALLED): _S.CLOSING,
    (_S.CLOSING, _I.PEER_CLOSED): _S.CLOSING,
    (_S.CLOSING, _I.CLOSE_DONE): _S.DRAINING,
    (_S.CLOSING, _I.FAILED): _S.DRAINING,
    (_S.CLOSING, _I.TIMED_OUT): _S.CLOSED,
    (_S.CLOSING, _I.RESET): _S.CLOSED,
    (_S.DRAINING, _I.CLOSE_CALLED): _S.DRAINING,
    (_S.DRAINING, _I.PEER_CLOSED): _S.DRAINING,
    (_S.DRAINING, _I.FAILED): _S.DRAINING,
    (_S.DRAINING, _I.RESET): _S.CLOSED,
    (_S.DRAINING, _I.DRAINED): _S.CLOSED,
    (_S.CLOSED, _I.CLOSE_CALLED): _S.CLOSED,
    (_S.CLOSED, _I.FAILED): _S.CLOSED,
}


def next_state(state: State, event: Input) -> State:
    """The state after ``event``; raises :class:`LocalProtocolError` if the table has no entry."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise LocalProtocolError(
            f"{event.value!r} is not allowed in state {state.value!r}"
        ) from None
