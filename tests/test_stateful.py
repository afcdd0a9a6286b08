"""A hypothesis state machine that plays the network between two connections by hand.

The rules interleave the applications' sends and closes with what a network can do to each
datagram in flight (deliver any of them, drop, duplicate, reorder, corrupt) and with the clock
(advance, jump to the next timer). The model is simply what each application sent; the
invariant is that what each side received is a prefix of what the other sent, never repeated.
At teardown the network turns perfect, both sides close, and everything must arrive.
"""

from __future__ import annotations

import dataclasses

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from simharness import Pair, fragment_edges, sim_settings

from rudp_chat.core.codec import decode_datagram
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Connection
from rudp_chat.core.errors import FrameError, SendBufferFullError
from rudp_chat.core.events import (
    ConnectionTerminated,
    DatagramReceived,
    Event,
    MessageReceived,
    TerminationReason,
)
from rudp_chat.core.frames import HelloPacket
from rudp_chat.core.state import State

# Timeouts beyond any run's rules (60 steps of at most max_rto = 4 s each), so every ending
# other than a clean close is a bug; a small buffer so backpressure happens. The RETRY token
# keeps its default 10 s lifetime: slow handshakes exercise re-validation.
CONFIG = ConnectionConfig(
    max_message_size=20_000,
    send_buffer_size=40_000,
    receive_window=40_000,
    idle_timeout=600.0,
    handshake_timeout=600.0,
)
LISTENER = ListenerConfig(connection=CONFIG)
INSECURE = dataclasses.replace(CONFIG, insecure=True)  # CRC instead of AEAD, larger fragments
INSECURE_LISTENER = ListenerConfig(connection=INSECURE)
CLEAN = (TerminationReason.CLOSED, TerminationReason.CLOSED_BY_PEER)
TEARDOWN_S = 300.0

sizes = st.one_of(
    st.sampled_from([0, 1, *fragment_edges()]),  # around one and two fragments, both modes
    st.integers(0, 3_000),
    st.integers(0, 20_000),
)
indexes = st.integers(0, 10**6)


def _ends(events: list[Event]) -> list[ConnectionTerminated]:
    return [e for e in events if isinstance(e, ConnectionTerminated)]


def _received(events: list[Event]) -> list[MessageReceived]:
    return [e for e in events if isinstance(e, MessageReceived)]


class TwoConnections(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(CONFIG, LISTENER, seed=0)
        self.client_sent: list[bytes] = []
        self.server_sent: list[bytes] = []
        self.counter = 0
        self.datagrams_sent: dict[bytes, tuple[int, bool]] = {}  # data -> (lane, latest_only)

    # ------------------------------------------------------------ helpers

    @property
    def server(self) -> Connection | None:
        return self.pair.server

    def _payload(self, size: int) -> bytes:
        self.counter += 1
        tag = b"%d:" % self.counter
        return (tag * (size // len(tag) + 1))[:size]

    def _send(self, connection: Connection, log: list[bytes], size: int) -> None:
        data = self._payload(size)
        try:
            message_id = connection.send(data)
        except SendBufferFullError:
            return
        assert message_id == len(log)
        log.append(data)
        self.pair.collect()

    @initialize(insecure=st.booleans(), perfect_handshake=st.booleans())
    def start(self, insecure: bool, perfect_handshake: bool) -> None:
        """Either mode (their fragment sizes differ); half the runs skip the handshake's own
        interleavings to spend their steps on data."""
        if insecure:
            self.pair = Pair(INSECURE, INSECURE_LISTENER, seed=0)
        if perfect_handshake:
            self.pair.handshake()

    # ------------------------------------------------------------ applications

    @precondition(lambda self: self.pair.client.state in (State.CONNECTING, State.OPEN))
    @rule(size=sizes)
    def client_sends(self, size: int) -> None:
        self._send(self.pair.client, self.client_sent, size)

    @precondition(lambda self: self.server is not None and self.server.state is State.OPEN)
    @rule(size=sizes)
    def server_sends(self, size: int) -> None:
        assert self.server is not None
        self._send(self.server, self.server_sent, size)

    @precondition(lambda self: self.pair.client.state in (State.CONNECTING, State.OPEN))
    @rule(lane=st.integers(0, 2), latest_only=st.booleans())
    def client_sends_datagram(self, lane: int, latest_only: bool) -> None:
        self._send_datagram(self.pair.client, lane, latest_only)

    @precondition(lambda self: self.server is not None and self.server.state is State.OPEN)
    @rule(lane=st.integers(0, 2), latest_only=st.booleans())
    def server_sends_datagram(self, lane: int, latest_only: bool) -> None:
        assert self.server is not None
        self._send_datagram(self.server, lane, latest_only)

    def _send_datagram(self, connection: Connection, lane: int, latest_only: bool) -> None:
        """An unreliable datagram, named by a number that orders it among all sent."""
        data = self._payload(8)
        connection.send_datagram(data, lane, latest_only)
        self.datagrams_sent[data] = (lane, latest_only)
        self.pair.collect()

    @precondition(lambda self: self.pair.client.state is State.OPEN)
    @rule()
    def client_closes(self) -> None:
        self.pair.client.close()
        self.pair.collect()

    @precondition(lambda self: self.server is not None and self.server.state is State.OPEN)
    @rule()
    def server_closes(self) -> None:
        assert self.server is not None
        self.server.close()
        self.pair.collect()

    # ---------------------------------------------------------------- network

    @precondition(lambda self: self.pair.to_server)
    @rule(i=indexes)
    def deliver_to_server(self, i: int) -> None:
        index = i % len(self.pair.to_server)
        if self._outlived_its_connection(self.pair.to_server[index]):
            del self.pair.to_server[index]
            return
        self.pair.deliver_to_server(index)

    def _outlived_its_connection(self, datagram: bytes) -> bool:
        """A HELLO still in flight after the connection it opened has closed is dropped: the
        network delays no datagram beyond a whole connection's life (TCP's MSL assumption).
        What the listener does with such a HELLO is test_listener's
        ``test_a_stale_hello_does_not_resurrect_a_closed_connection``."""
        if self.server is None or not self.server.is_closed:
            return False
        try:
            return isinstance(decode_datagram(datagram), HelloPacket)
        except FrameError:
            return False

    @precondition(lambda self: self.pair.to_client)
    @rule(i=indexes)
    def deliver_to_client(self, i: int) -> None:
        self.pair.deliver_to_client(i % len(self.pair.to_client))

    @precondition(lambda self: self.pair.to_server or self.pair.to_client)
    @rule(i=indexes, towards_server=st.booleans())
    def drop(self, i: int, towards_server: bool) -> None:
        queue = self._queue(towards_server)
        queue.pop(i % len(queue))

    @precondition(lambda self: self.pair.to_server or self.pair.to_client)
    @rule(i=indexes, towards_server=st.booleans())
    def duplicate(self, i: int, towards_server: bool) -> None:
        queue = self._queue(towards_server)
        queue.append(queue[i % len(queue)])

    @precondition(lambda self: self.pair.to_server or self.pair.to_client)
    @rule(i=indexes, towards_server=st.booleans())
    def reorder(self, i: int, towards_server: bool) -> None:
        queue = self._queue(towards_server)
        queue.append(queue.pop(i % len(queue)))

    @precondition(lambda self: self.pair.to_server or self.pair.to_client)
    @rule(i=indexes, position=indexes, xor=st.integers(1, 255), towards_server=st.booleans())
    def corrupt(self, i: int, position: int, xor: int, towards_server: bool) -> None:
        queue = self._queue(towards_server)
        index = i % len(queue)
        damaged = bytearray(queue[index])
        damaged[position % len(damaged)] ^= xor
        queue[index] = bytes(damaged)

    def _queue(self, towards_server: bool) -> list[bytes]:
        if (towards_server and self.pair.to_server) or not self.pair.to_client:
            return self.pair.to_server
        return self.pair.to_client

    # ------------------------------------------------------------------ clock

    @rule(dt=st.floats(0.0, 0.5))
    def advance(self, dt: float) -> None:
        self.pair.advance(self.pair.now + dt)

    @precondition(lambda self: self.pair.next_timer() is not None)
    @rule()
    def next_timer(self) -> None:
        self.pair.step_timer()

    # ------------------------------------------------------------- invariants

    @invariant()
    def received_is_a_prefix_of_sent_never_repeated(self) -> None:
        for events, sent in (
            (self.pair.server_events, self.client_sent),
            (self.pair.client_events, self.server_sent),
        ):
            got = _received(events)
            assert [e.message_id for e in got] == list(range(len(got)))
            assert [e.data for e in got] == sent[: len(got)]

    @invariant()
    def datagrams_arrive_at_most_once_and_latest_only_lanes_move_forward(self) -> None:
        order = list(self.datagrams_sent)
        for events in (self.pair.server_events, self.pair.client_events):
            got = [e for e in events if isinstance(e, DatagramReceived)]
            assert len({e.data for e in got}) == len(got), "a datagram arrived twice"
            assert all(self.datagrams_sent[e.data][0] == e.lane for e in got)
            for lane in range(3):
                latest = [
                    order.index(e.data) for e in got if self.datagrams_sent[e.data] == (lane, True)
                ]
                assert latest == sorted(latest), "a latest-only lane went backwards"

    @invariant()
    def endings_are_clean_single_and_last(self) -> None:
        for events in (self.pair.client_events, self.pair.server_events):
            ends = _ends(events)
            assert len(ends) <= 1
            if ends:
                assert events[-1] is ends[0]
                assert ends[0].reason in CLEAN, ends[0]

    @invariant()
    def the_listener_holds_at_most_one_connection(self) -> None:
        assert len(self.pair.listener.connections) <= 1

    # --------------------------------------------------------------- teardown

    def teardown(self) -> None:
        pair = self.pair
        deadline = pair.now + TEARDOWN_S
        # the network turns perfect; the handshake finishes if it had not
        while pair.client.state is State.CONNECTING and pair.now < deadline:
            pair.exchange()
            if pair.client.state is State.CONNECTING:
                pair.step_timer()
        assert pair.client.state is not State.CONNECTING, "handshake never completed"
        if pair.client.state is State.OPEN:
            pair.client.close()
        if self.server is not None and self.server.state is State.OPEN:
            self.server.close()
        pair.collect()
        pair.to_server[:] = [d for d in pair.to_server if not self._outlived_its_connection(d)]
        # both applications see a clean end, with everything delivered, in bounded time ...
        while not (_ends(pair.client_events) and _ends(pair.server_events)):
            assert pair.now < deadline, "no clean end on a perfect network"
            pair.exchange()
            if pair.step_timer() is None:
                break
        self.endings_are_clean_single_and_last()
        delivered = len(self.client_sent) + len(self.server_sent)
        event(f"messages exchanged: {'0' if not delivered else '1-5' if delivered <= 5 else '6+'}")
        assert [e.data for e in _received(pair.server_events)] == self.client_sent
        assert [e.data for e in _received(pair.client_events)] == self.server_sent
        assert _ends(pair.client_events) and _ends(pair.server_events)
        # ... and both connections are forgotten eventually (a lost ACK of a CLOSE may keep one
        # draining up to idle_timeout: test_connection's
        # test_draining_ends_soon_after_our_close_was_acknowledged)
        forget_by = pair.now + CONFIG.idle_timeout + TEARDOWN_S
        while not (pair.client.is_closed and (self.server is None or self.server.is_closed)):
            assert pair.now < forget_by, "a connection never reached CLOSED"
            pair.exchange()
            if pair.step_timer() is None:
                break
        assert pair.listener.connections == {}


TestTwoConnections = TwoConnections.TestCase
TestTwoConnections.settings = sim_settings(400, stateful_step_count=60)
