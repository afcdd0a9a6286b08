"""PROTOCOL.md §4's "what arrives, per state", against the real connection (h2's state-machine
tests): every state × every packet or frame kind, each cell checked by what the connection does.

The expectations are the reaction names of ``arrivals.ARRIVALS``; what each reaction must do
is written out here, independently, as an observable effect (an event, a state, a datagram,
a counter). Insecure connections, so that the test can forge the server's packets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simharness import CLIENT, SERVER, Pair

from rudp_chat.core.arrivals import (
    ARRIVALS,
    CLIENT_ONLY,
    FRAME_ARRIVALS,
    PACKET_ARRIVALS,
    SERVER_ONLY,
    SESSION_STATES,
    Arrival,
    Reaction,
)
from rudp_chat.core.codec import decode_datagram, decode_frames, encode_datagram, encode_frames
from rudp_chat.core.config import ConnectionConfig
from rudp_chat.core.connection import Connection, Role
from rudp_chat.core.errors import LocalProtocolError
from rudp_chat.core.events import (
    Connected,
    ConnectionTerminated,
    DatagramReceived,
    Event,
    MessageReceived,
    TerminationReason,
)
from rudp_chat.core.frames import (
    CONNECTION_ID_SIZE,
    MIN_HELLO_SIZE,
    AckFrame,
    CloseFrame,
    DataFrame,
    DatagramFrame,
    ErrorCode,
    Frame,
    HelloPacket,
    Packet,
    PingFrame,
    ResetPacket,
    RetryPacket,
    SessionPacket,
    WelcomePacket,
)
from rudp_chat.core.state import State

CONFIG = ConnectionConfig(insecure=True)
FORGED_BASE = 1_000_000  # the forged server's packet numbers: far above the real server's
SERVER_STATES = (State.OPEN, State.CLOSING, State.DRAINING, State.CLOSED)


@dataclass
class Setup:
    """A connection brought into one state, and what a test needs to forge its peer's packets."""

    pair: Pair
    connection: Connection
    reset_token: bytes = b""
    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(FORGED_BASE))
    events: list[Event] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    """Datagrams our connection sent that an ACK may cover."""

    @property
    def is_client(self) -> bool:
        return self.connection is self.pair.client

    def take_events(self) -> list[Event]:
        while (event := self.connection.next_event()) is not None:
            self.events.append(event)
        return self.events

    def session(self, frames: list[Frame]) -> bytes:
        """A SESSION packet from the peer, addressed to our connection."""
        payload = encode_frames(frames)
        return encode_datagram(SessionPacket(self.connection.local_id, next(self.numbers), payload))

    def deliver(self, datagram: bytes) -> None:
        source = SERVER if self.is_client else CLIENT
        self.connection.receive_datagram(datagram, source, self.pair.now)

    def largest_sent(self) -> int:
        """The number of the last SESSION packet we sent (what a plausible ACK may cover)."""
        numbers = [
            packet.number
            for packet in map(decode_datagram, self.sent)
            if isinstance(packet, SessionPacket)
        ]
        return max(numbers, default=0)


def _open_pair() -> tuple[Pair, Connection]:
    pair = Pair(CONFIG)
    server = pair.handshake()
    return pair, server


def _reset_token(pair: Pair) -> bytes:
    for data in pair.sent_by_server:
        packet = decode_datagram(data)
        if isinstance(packet, WelcomePacket):
            return packet.body[CONNECTION_ID_SIZE:]  # insecure: server id, reset token
    raise AssertionError("no WELCOME")


def client_in(state: State) -> Setup:
    """The client in ``state``; in OPEN, CLOSING and DRAINING one tracked packet of ours is
    in flight (a message, a message, our CLOSE), for an ACK to acknowledge."""
    if state is State.CONNECTING:
        pair = Pair(CONFIG)
        pair.to_server.clear()
        return Setup(pair, pair.client)
    pair, _server = _open_pair()
    setup = Setup(pair, pair.client, _reset_token(pair))
    setup.sent.extend(pair.sent_by_client)
    client = pair.client
    if state is State.OPEN:
        client.send(b"in flight")
    elif state is State.CLOSING:
        client.send(b"in flight")
        client.close()
    elif state is State.DRAINING:
        client.close()  # nothing unacknowledged: our CLOSE leaves at once
        setup.sent.extend(data for data, _ in client.datagrams_to_send(pair.now))
        setup.deliver(setup.session([CloseFrame(ErrorCode.NO_ERROR, 0)]))
    else:
        client.abort("gone")
        client.datagrams_to_send(pair.now)
        client.handle_timer(pair.now + 60.0)
    setup.sent.extend(data for data, _ in client.datagrams_to_send(pair.now))
    setup.take_events()
    setup.events.clear()
    assert client.state is state, (client.state, setup.events)
    return setup


def server_in(state: State) -> Setup:
    """The server connection in ``state`` (CLOSING: its message in flight; DRAINING: aborted);
    its frames are handled by the same code as the client's, so only packets are tried."""
    pair, server = _open_pair()
    setup = Setup(pair, server)
    server.on_change = None  # the test drives it alone, not through the listener
    if state is State.CLOSING:
        server.send(b"in flight")
        server.close()
    elif state is State.DRAINING:
        server.abort("gone")
    elif state is State.CLOSED:
        server.abort("gone")
        server.datagrams_to_send(pair.now)
        server.handle_timer(pair.now + 60.0)
    server.datagrams_to_send(pair.now)
    setup.take_events()
    setup.events.clear()
    assert server.state is state
    return setup


def arrive(setup: Setup, arrival: Arrival) -> None:
    """Deliver one valid packet of kind ``arrival`` (a frame kind: alone in a SESSION packet)."""
    connection = setup.connection
    if arrival is Arrival.RETRY:
        datagram = encode_datagram(RetryPacket(connection.local_id, b"token-2"))
    elif arrival is Arrival.WELCOME:
        datagram = encode_datagram(WelcomePacket(connection.local_id, 7, bytes(8) + bytes(16)))
    elif arrival is Arrival.HELLO:
        datagram = encode_datagram(
            HelloPacket(connection.remote_id or bytes(8), 9, 1, b"", b"", MIN_HELLO_SIZE)
        )
    elif arrival is Arrival.RESET:
        remote = connection.remote_id or bytes(8)
        datagram = encode_datagram(ResetPacket(remote, setup.reset_token or bytes(16)))
    elif arrival is Arrival.SESSION:
        datagram = setup.session([PingFrame()])
    else:
        datagram = setup.session([_frame(setup, arrival)])
    setup.deliver(datagram)


def _frame(setup: Setup, arrival: Arrival) -> Frame:
    if arrival is Arrival.DATA:
        return DataFrame(0, 0, 0, 1, b"hello")
    if arrival is Arrival.ACK:
        return AckFrame(0, ((0, setup.largest_sent()),), 0, 16)
    if arrival is Arrival.PING:
        return PingFrame()
    if arrival is Arrival.CLOSE:
        return CloseFrame(ErrorCode.NO_ERROR, 0)
    if arrival is Arrival.DATAGRAM:
        return DatagramFrame(3, b"typing", 0)
    return CloseFrame(ErrorCode.APPLICATION, 0, "bye")


def _ends(events: list[Event]) -> list[TerminationReason]:
    return [e.reason for e in events if isinstance(e, ConnectionTerminated)]


def check(setup: Setup, state: State, arrival: Arrival, reaction: Reaction) -> None:
    """Deliver ``arrival`` to a connection in ``state`` and check ``reaction`` happened."""
    connection, now = setup.connection, setup.pair.now
    before = connection.stats()
    in_flight = before.bytes_in_flight
    arrive(setup, arrival)
    after = connection.stats()
    events = setup.take_events()
    heard = after.datagrams_received - before.datagrams_received
    if reaction is Reaction.DROP:
        assert after.dropped_unexpected == before.dropped_unexpected + 1
        assert heard == 0 and connection.state is state and events == []
        return
    assert heard == 1
    out = [decode_datagram(data) for data, _ in connection.datagrams_to_send(now)]
    if reaction is Reaction.TAKE_RETRY:
        assert [type(p) for p in out] == [HelloPacket]
        assert isinstance(out[0], HelloPacket) and out[0].token == b"token-2"
    elif reaction is Reaction.COMPLETE_HANDSHAKE:
        assert connection.state is State.OPEN and events == [Connected(connection.local_id)]
    elif reaction is Reaction.RESEND_WELCOME:
        assert isinstance(out[0], WelcomePacket) and connection.state is state
    elif reaction is Reaction.RESET:
        assert connection.state is State.CLOSED
        assert _ends(events) == ([] if state is State.DRAINING else [TerminationReason.RESET])
    elif reaction is Reaction.PROCESS or reaction is Reaction.ACK_AT_ONCE:
        assert connection.state is state and events == []
        assert _acknowledges_forged(out)  # at once
    elif reaction is Reaction.DELIVER:
        assert [e for e in events if isinstance(e, MessageReceived)] == [
            MessageReceived(0, b"hello")
        ]
    elif reaction is Reaction.DELIVER_DATAGRAM:
        assert events == [DatagramReceived(b"typing", 3)]
        setup.deliver(setup.session([DatagramFrame(3, b"stale", 0)]))  # not newer: dropped
        assert setup.take_events() == [DatagramReceived(b"typing", 3)]
        assert connection.stats().datagram_frames_discarded == 1
    elif reaction is Reaction.APPLY_ACK:
        assert in_flight > 0 and after.bytes_in_flight == 0
    elif reaction is Reaction.PEER_CLOSED:
        assert connection.state is State.CLOSING and events == []
    elif reaction is Reaction.NOTE_FINAL_SEQ:
        assert connection.state is State.CLOSING and events == []
        setup.deliver(setup.session([_frame(setup, Arrival.ACK)]))  # our data arrived: done
        assert _ends(setup.take_events()) == [TerminationReason.CLOSED]
    elif reaction is Reaction.PEER_ERROR:
        assert connection.state is State.DRAINING
        assert _ends(events) == [TerminationReason.PEER_ERROR]
    else:
        assert reaction is Reaction.IGNORE
        assert connection.state is state and events == []
        assert after.messages_received == before.messages_received
        later = now + CONFIG.max_ack_delay
        connection.handle_timer(later)
        out += [decode_datagram(data) for data, _ in connection.datagrams_to_send(later)]
        assert _acknowledges_forged(out)  # the packet was taken, its frame did nothing
        assert not any(isinstance(f, CloseFrame) for f in _frames(out))  # no violation either


def _frames(packets: list[Packet]) -> list[Frame]:
    return [
        frame
        for packet in packets
        if isinstance(packet, SessionPacket)
        for frame in decode_frames(packet.payload)
    ]


def _acknowledges_forged(packets: list[Packet]) -> bool:
    acks = [frame for frame in _frames(packets) if isinstance(frame, AckFrame)]
    return bool(acks) and acks[0].ranges[0][1] >= FORGED_BASE


def client_reaction(state: State, arrival: Arrival) -> Reaction:
    """The table's cell for a client (a frame outside the session states cannot arrive)."""
    if arrival in SERVER_ONLY:
        return Reaction.DROP
    return ARRIVALS[state, arrival]


def server_reaction(state: State, arrival: Arrival) -> Reaction:
    if arrival in CLIENT_ONLY:
        return Reaction.DROP
    return ARRIVALS[state, arrival]


CLIENT_CELLS = [(s, a) for s in State for a in PACKET_ARRIVALS] + [
    (s, a) for s in SESSION_STATES for a in FRAME_ARRIVALS
]
SERVER_CELLS = [(s, a) for s in SERVER_STATES for a in PACKET_ARRIVALS]


def _name(value: object) -> str:
    return value.name if isinstance(value, State | Arrival) else str(value)


def test_the_table_has_every_cell_and_only_cells_that_can_happen() -> None:
    expected = {(s, a) for s in State for a in PACKET_ARRIVALS} | {
        (s, a) for s in SESSION_STATES for a in FRAME_ARRIVALS
    }
    assert set(ARRIVALS) == expected
    assert {ARRIVALS[State.CLOSED, a] for a in PACKET_ARRIVALS} == {Reaction.DROP}


@pytest.mark.parametrize(("state", "arrival"), CLIENT_CELLS, ids=_name)
def test_the_client_does_what_its_cell_says(state: State, arrival: Arrival) -> None:
    check(client_in(state), state, arrival, client_reaction(state, arrival))


@pytest.mark.parametrize(("state", "arrival"), SERVER_CELLS, ids=_name)
def test_the_server_does_what_its_cell_says(state: State, arrival: Arrival) -> None:
    check(server_in(state), state, arrival, server_reaction(state, arrival))


@given(
    st.sampled_from(list(State)),
    st.lists(st.sampled_from(list(PACKET_ARRIVALS) + list(FRAME_ARRIVALS)), max_size=6),
)
def test_any_sequence_of_arrivals_follows_the_table(state: State, arrivals: list[Arrival]) -> None:
    """h2's property: whatever arrives, in any order, the state afterwards is the one the
    table's reaction leads to, and no arrival raises out of the connection."""
    setup = client_in(state)
    connection = setup.connection
    for arrival in arrivals:
        current = connection.state
        if arrival in FRAME_ARRIVALS and current not in SESSION_STATES:
            reaction = client_reaction(current, Arrival.SESSION)  # the packet is dropped
        else:
            reaction = client_reaction(current, arrival)
        arrive(setup, arrival)
        setup.take_events()
        if reaction is Reaction.DROP or reaction is Reaction.IGNORE:
            assert connection.state is current
        elif reaction is Reaction.RESET:
            assert connection.state is State.CLOSED
        elif reaction is Reaction.PEER_ERROR:
            assert connection.state is State.DRAINING
        elif reaction is Reaction.COMPLETE_HANDSHAKE:
            assert connection.state is State.OPEN
        connection.datagrams_to_send(setup.pair.now)
    assert len(_ends(setup.events)) <= 1


def test_a_client_without_random_bytes_is_refused_at_construction() -> None:
    with pytest.raises(LocalProtocolError, match="random_bytes"):
        Connection(CONFIG, Role.CLIENT, local_id=bytes(8), peer_address=SERVER, now=0.0)
    with pytest.raises(LocalProtocolError, match="remote_id"):
        Connection(CONFIG, Role.SERVER, local_id=bytes(8), peer_address=CLIENT, now=0.0)


def _protocol_md_arrivals() -> dict[tuple[State, Arrival], str]:
    """PROTOCOL.md §4's "what arrives" table, cell by cell (blank cells left out)."""
    text = (Path(__file__).parent.parent / "PROTOCOL.md").read_text()
    header = "| received | CONNECTING | OPEN | CLOSING | DRAINING | CLOSED |"
    lines = text[text.index(header) :].splitlines()[2:]
    states = [State[name] for name in header.strip("| ").split(" | ")[1:]]
    rows = {arrival.value: arrival for arrival in Arrival}
    cells: dict[tuple[State, Arrival], str] = {}
    for line in itertools.takewhile(lambda line: line.startswith("|"), lines):
        name, *values = (cell.strip() for cell in line.strip("|").split("|"))
        for state, value in zip(states, values, strict=True):
            if value:
                cells[state, rows[name]] = value
    return cells


def test_protocol_md_prints_the_same_table() -> None:
    printed = _protocol_md_arrivals()
    assert printed == {cell: reaction.value for cell, reaction in ARRIVALS.items()}
