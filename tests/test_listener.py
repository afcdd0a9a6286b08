"""The listener's defences: stateless RETRY, no amplification, token checks, rate-limited
RESETs, address pinning, connection limits; and that garbage gets no reply at all."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simharness import CLIENT, SERVER, Pair, seeded_random_bytes

from rudp_chat.core.codec import decode_datagram, decode_frames, encode_datagram, encode_frames
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.errors import FrameError
from rudp_chat.core.events import ConnectionTerminated, TerminationReason
from rudp_chat.core.frames import (
    MIN_HELLO_SIZE,
    PROTOCOL_VERSION,
    ErrorCode,
    HelloPacket,
    Packet,
    PingFrame,
    ResetPacket,
    RetryPacket,
    SessionPacket,
    WelcomePacket,
)
from rudp_chat.core.listener import BACKLOGGED_HELLOS_PER_S, RESET_SIZE, Listener
from rudp_chat.core.state import State

CID = b"client01"
OTHER_CID = b"client02"
SPOOFED: Address = ("192.0.2.66", 1234)
PLAIN = ConnectionConfig(insecure=True)
"""Most tests here hand-craft HELLOs and frames: the defences below the handshake are the
same with and without encryption (test_security covers what encryption adds)."""


def make_listener(config: ListenerConfig | None = None, seed: int = 0) -> Listener:
    return Listener(
        seeded_random_bytes(f"listener-under-test/{seed}"), config or ListenerConfig(PLAIN)
    )


def hello(
    client_id: bytes = CID,
    token: bytes = b"",
    size: int = MIN_HELLO_SIZE,
    version: int = PROTOCOL_VERSION,
    number: int = 0,
) -> bytes:
    """A HELLO of exactly ``size`` bytes (searching the padding, whose length header varies)."""
    for padding in range(max(size - 100, 0), size + 1):
        data = encode_datagram(HelloPacket(client_id, number, version, token, b"", padding))
        if len(data) == size:
            return data
    raise AssertionError(f"no HELLO of exactly {size} bytes")


def replies(listener: Listener, now: float = 0.0) -> list[tuple[Packet, int, Address]]:
    return [(decode_datagram(d), len(d), a) for d, a in listener.datagrams_to_send(now)]


def retry_token(listener: Listener, client_id: bytes, addr: Address, now: float) -> bytes:
    listener.receive_datagram(hello(client_id), addr, now)
    (packet, _, _), *rest = replies(listener, now)
    assert not rest and isinstance(packet, RetryPacket)
    return packet.token


def open_connection(
    listener: Listener, addr: Address = CLIENT, client_id: bytes = CID
) -> Connection:
    token = retry_token(listener, client_id, addr, 0.0)
    listener.receive_datagram(hello(client_id, token), addr, 0.0)
    out = replies(listener)
    assert [type(p) for p, _, _ in out] == [WelcomePacket]
    connection = listener.accept()
    assert connection is not None
    return connection


# --------------------------------------------------------------------- handshake


def test_a_hello_from_a_spoofed_address_gets_only_a_small_retry_and_no_state() -> None:
    listener = make_listener()
    data = hello()
    listener.receive_datagram(data, SPOOFED, 0.0)
    out = replies(listener)
    assert len(out) == 1
    packet, size, addr = out[0]
    assert isinstance(packet, RetryPacket) and packet.client_id == CID
    assert addr == SPOOFED
    assert size <= 3 * len(data)
    assert len(listener.connections) == 0
    assert listener.accept() is None
    assert listener.get_timer() is None
    assert listener.stats.retries_sent == 1


@given(
    st.lists(
        st.tuples(
            st.binary(min_size=8, max_size=8),
            st.tuples(st.sampled_from(["192.0.2.1", "198.51.100.7", "::1"]), st.integers(1, 65535)),
            st.integers(MIN_HELLO_SIZE, MIN_HELLO_SIZE + 300),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_a_flood_of_tokenless_hellos_creates_no_state(
    hellos: list[tuple[bytes, Address, int]],
) -> None:
    listener = make_listener()
    for client_id, addr, size in hellos:
        data = hello(client_id, size=size)
        listener.receive_datagram(data, addr, 1.0)
        out = replies(listener, 1.0)
        assert len(out) == 1
        packet, reply_size, to = out[0]
        assert isinstance(packet, RetryPacket) and to == addr and reply_size <= 3 * len(data)
    assert len(listener.connections) == 0 and listener.get_timer() is None


@pytest.mark.parametrize("token", [False, True])
def test_a_hello_below_min_hello_size_gets_nothing(token: bool) -> None:
    listener = make_listener()
    valid = retry_token(listener, CID, CLIENT, 0.0) if token else b""
    listener.receive_datagram(hello(token=valid, size=MIN_HELLO_SIZE - 1), CLIENT, 0.0)
    assert listener.datagrams_to_send(0.0) == []
    assert listener.stats.hellos_too_small == 1
    assert len(listener.connections) == 0
    # the boundary itself is fine
    listener.receive_datagram(hello(token=valid, size=MIN_HELLO_SIZE), CLIENT, 0.0)
    assert len(listener.datagrams_to_send(0.0)) == 1


def test_a_hello_of_another_version_gets_nothing() -> None:
    listener = make_listener()
    listener.receive_datagram(hello(version=PROTOCOL_VERSION + 1), CLIENT, 0.0)
    assert listener.datagrams_to_send(0.0) == []
    assert listener.stats.hellos_bad_version == 1


def test_a_valid_token_opens_one_connection_and_welcomes() -> None:
    listener = make_listener()
    connection = open_connection(listener)
    assert list(listener.connections.values()) == [connection]
    assert connection.peer_address == CLIENT and connection.remote_id == CID
    assert connection.state is State.OPEN
    assert listener.stats.accepted == 1
    assert listener.get_timer() is not None  # the connection's timers are the listener's


def test_a_repeated_hello_with_token_returns_the_same_connection_and_resends_welcome() -> None:
    listener = make_listener()
    token = retry_token(listener, CID, CLIENT, 0.0)
    listener.receive_datagram(hello(CID, token), CLIENT, 0.0)
    first = replies(listener)
    connection = listener.accept()
    for attempt in range(3):  # the WELCOME was lost; the client asks again
        listener.receive_datagram(hello(CID, token, number=attempt + 1), CLIENT, 0.1 * attempt)
        again = replies(listener, 0.1 * attempt)
        assert [type(p) for p, _, _ in again] == [WelcomePacket]
        welcome = again[0][0]
        assert isinstance(welcome, WelcomePacket) and isinstance(first[0][0], WelcomePacket)
        assert welcome.body == first[0][0].body
    assert listener.accept() is None
    assert list(listener.connections.values()) == [connection]
    assert listener.stats.accepted == 1


TOKEN_ABUSES = {
    "other host": (CID, ("10.99.0.1", CLIENT[1]), 0.0),
    "other port": (CID, (CLIENT[0], CLIENT[1] + 1), 0.0),
    "other client id": (OTHER_CID, CLIENT, 0.0),
    "expired": (CID, CLIENT, 10.0 + 0.01),  # ListenerConfig.token_lifetime is 10 s
}


@pytest.mark.parametrize("case", list(TOKEN_ABUSES))
def test_a_token_used_elsewhere_or_late_is_refused(case: str) -> None:
    listener = make_listener()
    token = retry_token(listener, CID, CLIENT, 0.0)
    client_id, addr, now = TOKEN_ABUSES[case]
    listener.receive_datagram(hello(client_id, token), addr, now)
    out = replies(listener, now)
    assert len(listener.connections) == 0 and listener.accept() is None
    assert listener.stats.hellos_bad_token == 1
    # at most a fresh RETRY to the sender, never more than it sent
    assert all(isinstance(p, RetryPacket) and to == addr for p, _, to in out)
    assert len(out) <= 1


@pytest.mark.parametrize(
    "token",
    [b"\x00" * 24, b"x", b"\xff" * 64],
    ids=["zeros", "short", "long"],
)
def test_a_forged_token_is_refused(token: bytes) -> None:
    listener = make_listener()
    listener.receive_datagram(hello(CID, token), CLIENT, 0.0)
    listener.datagrams_to_send(0.0)
    assert len(listener.connections) == 0 and listener.stats.hellos_bad_token == 1


def test_a_token_from_another_listener_is_refused() -> None:
    other = make_listener(seed=1)
    token = retry_token(other, CID, CLIENT, 0.0)
    listener = make_listener(seed=2)
    listener.receive_datagram(hello(CID, token), CLIENT, 0.0)
    listener.datagrams_to_send(0.0)
    assert len(listener.connections) == 0 and listener.stats.hellos_bad_token == 1


def test_a_token_is_good_until_its_lifetime() -> None:
    listener = make_listener()
    token = retry_token(listener, CID, CLIENT, 0.0)
    listener.receive_datagram(hello(CID, token), CLIENT, 9.99)
    assert len(listener.connections) == 1


# -------------------------------------------------------------------- unknown ids


def session(connection_id: bytes, payload_size: int = 40) -> bytes:
    return encode_datagram(SessionPacket(connection_id, 7, b"\x00" * payload_size))


def test_an_unknown_connection_id_gets_a_reset_smaller_than_the_trigger() -> None:
    listener = make_listener()
    trigger = session(b"unknown!", payload_size=60)
    listener.receive_datagram(trigger, CLIENT, 0.0)
    out = replies(listener)
    assert len(out) == 1
    packet, size, addr = out[0]
    assert isinstance(packet, ResetPacket) and packet.connection_id == b"unknown!"
    assert addr == CLIENT and size < len(trigger)
    assert len(listener.connections) == 0


@given(st.integers(0, 200))
def test_a_reset_never_amplifies(payload_size: int) -> None:
    listener = make_listener()
    trigger = session(b"unknown!", payload_size)
    listener.receive_datagram(trigger, CLIENT, 0.0)
    for data, _ in listener.datagrams_to_send(0.0):
        assert len(data) < len(trigger)
    assert listener.stats.resets_sent + listener.stats.resets_suppressed == 1


def test_resets_are_rate_limited() -> None:
    config = ListenerConfig(PLAIN, resets_per_second=10.0)
    listener = make_listener(config)
    for i in range(100):
        listener.receive_datagram(session(b"unk%05d" % i), CLIENT, 5.0)
    burst = [p for p, _, _ in replies(listener, 5.0)]
    assert all(isinstance(p, ResetPacket) for p in burst)
    assert len(burst) == 10 == listener.stats.resets_sent
    assert listener.stats.resets_suppressed == 90
    # the bucket refills at the configured rate
    for i in range(100):
        listener.receive_datagram(session(b"unl%05d" % i), CLIENT, 5.5)
    assert len(listener.datagrams_to_send(5.5)) == 5
    for i in range(100):
        listener.receive_datagram(session(b"unm%05d" % i), CLIENT, 60.0)
    assert len(listener.datagrams_to_send(60.0)) == 10  # never more than the burst


def test_a_known_id_from_another_address_is_dropped_and_changes_nothing() -> None:
    """Without encryption nothing proves a packet's origin, so the address never moves."""
    listener = make_listener()
    connection = open_connection(listener)
    before = connection.stats()
    timer = listener.get_timer()
    datagram = encode_datagram(SessionPacket(connection.local_id, 1, encode_frames([PingFrame()])))
    listener.receive_datagram(datagram, ("10.66.66.66", CLIENT[1]), 0.5)
    assert listener.datagrams_to_send(0.5) == []
    after = connection.stats()
    assert after.dropped_unexpected == before.dropped_unexpected + 1
    assert dataclasses.replace(after, dropped_unexpected=before.dropped_unexpected) == before
    assert listener.get_timer() == timer
    assert connection.peer_address == CLIENT


# ------------------------------------------------------------------------ garbage


@given(st.binary(max_size=1_500))
def test_random_bytes_get_no_reply(data: bytes) -> None:
    listener = make_listener()
    connection = open_connection(listener)
    before = connection.stats()
    listener.receive_datagram(data, CLIENT, 1.0)
    assert listener.datagrams_to_send(1.0) == []
    assert listener.stats.dropped_invalid == 1
    assert len(listener.connections) == 1 and connection.stats() == before


@pytest.mark.parametrize(
    "packet",
    [
        RetryPacket(CID, b"token"),
        WelcomePacket(CID, 0, b"server01" + b"r" * 16),
        ResetPacket(b"server01", b"r" * 16),
    ],
    ids=["retry", "welcome", "reset"],
)
def test_client_bound_packets_get_no_reply(packet: Packet) -> None:
    listener = make_listener()
    listener.receive_datagram(encode_datagram(packet), CLIENT, 0.0)
    assert listener.datagrams_to_send(0.0) == []
    assert listener.stats.dropped_unexpected == 1


def _undecodable(payload: bytes) -> bool:
    try:
        decode_frames(payload)
    except FrameError:
        return True
    return False


@given(st.binary(max_size=300).filter(_undecodable))
def test_malformed_frames_for_a_known_id_get_no_reply(payload: bytes) -> None:
    listener = make_listener()
    connection = open_connection(listener)
    before = connection.stats()
    datagram = encode_datagram(SessionPacket(connection.local_id, 99, payload))
    listener.receive_datagram(datagram, CLIENT, 0.0)
    assert listener.datagrams_to_send(0.0) == []
    after = connection.stats()
    assert after.dropped_invalid == before.dropped_invalid + 1
    assert after.datagrams_received == before.datagrams_received


# ---------------------------------------------------------------------- limits


class Hub:
    """One listener and several hand-made clients at chosen addresses, delivering everything."""

    def __init__(self, config: ListenerConfig) -> None:
        self.listener = make_listener(config)
        self.clients: dict[Address, Connection] = {}
        self.events: dict[Address, list[object]] = {}
        self.now = 0.0

    def connect(self, addr: Address) -> Connection:
        client = Connection.connect(
            SERVER, self.now, seeded_random_bytes(f"hub/{addr}"), self.listener.config.connection
        )
        self.clients[addr] = client
        self.events[addr] = []
        self.settle()
        return client

    def settle(self) -> None:
        for _ in range(100):
            moved = False
            for addr, client in self.clients.items():
                for data, _ in client.datagrams_to_send(self.now):
                    self.listener.receive_datagram(data, addr, self.now)
                    moved = True
            for data, addr in self.listener.datagrams_to_send(self.now):
                if addr in self.clients:
                    self.clients[addr].receive_datagram(data, SERVER, self.now)
                    moved = True
            for addr, client in self.clients.items():
                while (event := client.next_event()) is not None:
                    self.events[addr].append(event)
            while self.listener.accept() is not None:
                pass
            if not moved:
                return
        raise AssertionError("the hub never settled")


def _refused(events: list[object]) -> bool:
    return any(
        isinstance(e, ConnectionTerminated)
        and e.reason is TerminationReason.PEER_ERROR
        and e.error_code == ErrorCode.REFUSED
        for e in events
    )


def test_max_connections_refuses_with_close_refused() -> None:
    hub = Hub(ListenerConfig(PLAIN, max_connections=2))
    first = hub.connect(("10.2.0.1", 1))
    second = hub.connect(("10.2.0.2", 1))
    third = hub.connect(("10.2.0.3", 1))
    assert first.state is State.OPEN and second.state is State.OPEN
    assert third.state is not State.OPEN or third.is_closed
    assert _refused(hub.events[("10.2.0.3", 1)])
    assert len(hub.listener.connections) == 2
    assert hub.listener.stats.refused == 1 and hub.listener.stats.accepted == 2


def test_max_connections_per_address_refuses_the_same_host_only() -> None:
    hub = Hub(ListenerConfig(PLAIN, max_connections_per_address=2))
    hub.connect(("10.3.0.1", 1))
    hub.connect(("10.3.0.1", 2))
    hub.connect(("10.3.0.1", 3))
    other_host = hub.connect(("10.3.0.2", 1))
    assert _refused(hub.events[("10.3.0.1", 3)])
    assert not _refused(hub.events[("10.3.0.1", 1)])
    assert other_host.state is State.OPEN
    assert len(hub.listener.connections) == 3


def test_a_closed_connection_frees_its_slot() -> None:
    config = ListenerConfig(PLAIN, max_connections=1)
    pair = Pair(listener_config=config)
    pair.handshake()
    pair.client.close()
    pair.collect()
    pair.run(until=30.0)
    assert pair.client.is_closed and pair.listener.connections == {}
    hub = Hub(config)
    hub.listener = pair.listener  # same listener, a new client
    newcomer = hub.connect(("10.4.0.1", 1))
    assert newcomer.state is State.OPEN
    assert not _refused(hub.events[("10.4.0.1", 1)])


def test_a_refused_client_ends_with_peer_error_refused() -> None:
    """The same refusal seen from a Pair's client (the listener is already full)."""
    pair = Pair(listener_config=ListenerConfig(max_connections=1, connection=ConnectionConfig()))
    hub = Hub(ListenerConfig())
    hub.listener = pair.listener
    squatter = hub.connect(("10.5.0.1", 1))
    assert squatter.state is State.OPEN
    pair.exchange()
    end = pair.terminated(pair.client_events)
    assert end is not None and end.reason is TerminationReason.PEER_ERROR
    assert end.error_code == ErrorCode.REFUSED
    assert pair.client.is_closed or pair.client.state is State.DRAINING


def test_a_stale_hello_does_not_resurrect_a_closed_connection() -> None:
    """The network may deliver a copy of the tokened HELLO late. Once the connection it opened
    has closed, that copy must not open a phantom one (a chat server would announce the user
    joining again, then time them out)."""
    pair = Pair()
    pair.handshake()
    tokened_hello = pair.sent_by_client[1]
    assert isinstance(decode_datagram(tokened_hello), HelloPacket)
    pair.client.close()
    pair.collect()
    pair.run(until=5.0)
    assert pair.client.is_closed and pair.listener.connections == {}
    assert pair.now < pair.listener.config.token_lifetime  # the token is still valid
    pair.listener.receive_datagram(tokened_hello, CLIENT, pair.now)
    pair.listener.datagrams_to_send(pair.now)
    assert pair.listener.accept() is None
    assert pair.listener.connections == {}


@pytest.mark.parametrize("same_secret", [True, False])
def test_a_restarted_server_resets_its_old_clients_only_with_the_same_secret(
    same_secret: bool,
) -> None:
    """A server restarted with the secret it kept (the chat keeps it in its history database)
    answers an old client's packet with a RESET the client believes; a server with a new secret
    cannot, and the client is left to its idle timeout."""
    random_bytes = seeded_random_bytes(7)
    secret = bytes(range(32))
    before = Listener(random_bytes, secret=secret)
    client = Connection.connect(SERVER, 0.0, random_bytes)
    now = 0.0
    for _ in range(4):  # HELLO, RETRY, HELLO with token, WELCOME
        now += 0.01
        for datagram, _ in client.datagrams_to_send(now):
            before.receive_datagram(datagram, CLIENT, now)
        for datagram, _ in before.datagrams_to_send(now):
            client.receive_datagram(datagram, SERVER, now)
    assert client.state is State.OPEN
    after = Listener(random_bytes, secret=secret if same_secret else bytes(32))
    client.send(b"are you still there?")
    now += 0.01
    for datagram, _ in client.datagrams_to_send(now):
        after.receive_datagram(datagram, CLIENT, now)
    for datagram, _ in after.datagrams_to_send(now):
        client.receive_datagram(datagram, SERVER, now)
    assert after.stats.resets_sent == 1
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    ended = [e for e in events if isinstance(e, ConnectionTerminated)]
    if same_secret:
        assert ended == [ConnectionTerminated(TerminationReason.RESET, 0, "reset by peer")]
    else:
        assert ended == []
    assert client.state is (State.CLOSED if same_secret else State.OPEN)


def test_flushed_names_exactly_the_connections_an_input_reached() -> None:
    """The shell polls only ``flushed()``: a datagram, a timer or an API call must show up there,
    and an untouched connection must not."""
    random_bytes = seeded_random_bytes(11)
    listener = Listener(random_bytes)
    clients = {
        addr: Connection.connect(SERVER, 0.0, random_bytes) for addr in (CLIENT, ("10.9.9.9", 9))
    }
    now = 0.0
    for _ in range(4):
        now += 0.01
        for addr, client in clients.items():
            for datagram, _ in client.datagrams_to_send(now):
                listener.receive_datagram(datagram, addr, now)
        for datagram, to in listener.datagrams_to_send(now):
            (clients[CLIENT] if to == CLIENT else clients[("10.9.9.9", 9)]).receive_datagram(
                datagram, SERVER, now
            )
    first, second = listener.accept(), listener.accept()
    assert first is not None and second is not None
    assert listener.accept() is None
    clients[CLIENT].send(b"hi")
    now += 0.01
    for datagram, _ in clients[CLIENT].datagrams_to_send(now):
        listener.receive_datagram(datagram, CLIENT, now)
    listener.datagrams_to_send(now)
    assert listener.flushed() == [first]
    second.send(b"api call")
    listener.datagrams_to_send(now)
    assert listener.flushed() == [second]
    deadline = listener.get_timer()
    assert deadline is not None
    listener.handle_timer(deadline)
    listener.datagrams_to_send(deadline)
    assert listener.flushed() and set(listener.flushed()) <= {first, second}


def test_a_backlogged_listener_answers_new_hellos_only_within_its_budget() -> None:
    """While the shell reports its socket backlogged, new clients' HELLOs beyond
    ``BACKLOGGED_HELLOS_PER_S`` (a burst of that many, then that rate) go unanswered and are
    counted; a HELLO of a connection already made (its WELCOME was lost) is always answered;
    once the backlog is gone every HELLO is answered again."""
    listener = make_listener()
    budget = int(BACKLOGGED_HELLOS_PER_S)
    made = open_connection(listener)

    def hellos(first: int, count: int, now: float) -> int:
        for index in range(first, first + count):
            address = (f"10.1.{index // 250}.{index % 250 + 1}", 4000)
            listener.receive_datagram(hello(b"c%07d" % index), address, now)
        return len(replies(listener, now))

    listener.backlogged = True
    assert hellos(0, budget + 50, 1.0) == budget
    assert listener.stats.hellos_deferred == 50
    listener.receive_datagram(hello(CID), CLIENT, 1.0)  # made: answered, over the budget
    assert [type(p) for p, _, _ in replies(listener, 1.0)] == [WelcomePacket]
    assert listener.accept() is None and made.state is State.OPEN
    assert hellos(1000, 30, 1.1) == int(0.1 * BACKLOGGED_HELLOS_PER_S)  # the rate refills it
    listener.backlogged = False
    assert hellos(2000, budget + 50, 1.1) == budget + 50
    assert listener.stats.hellos_deferred == 50 + 30 - int(0.1 * BACKLOGGED_HELLOS_PER_S)


def test_reset_size_is_what_a_reset_encodes_to() -> None:
    """The listener decides on a RESET before computing its token, from this constant."""
    assert len(encode_datagram(ResetPacket(CID, b"r" * 16))) == RESET_SIZE
