"""One connection pair driven by hand (h11's two-connection helper: ``simharness.Pair``).

Data tests run in both directions (wsproto style). Time moves only when a test moves it, so
every timer is checked to the exact instant. Forged packets (RFC 5961 spirit) are built with
the codec and fed to the client as if from the server's address.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simharness import CLIENT, SERVER, Harness, Pair, Scenario, run_scenario
from test_codec import frames as codec_frames

from rudp_chat.core.codec import (
    decode_datagram,
    decode_frames,
    encode_datagram,
    encode_frames,
    fragment_size,
)
from rudp_chat.core.config import ConnectionConfig
from rudp_chat.core.congestion import CongestionController, SentPacket
from rudp_chat.core.connection import Connection
from rudp_chat.core.errors import ConnectionClosedError, MessageTooLargeError
from rudp_chat.core.events import (
    Connected,
    ConnectionTerminated,
    Event,
    MessageReceived,
    TerminationReason,
)
from rudp_chat.core.frames import (
    MIN_HELLO_SIZE,
    AckFrame,
    CloseFrame,
    DataFrame,
    ErrorCode,
    Frame,
    HelloPacket,
    PingFrame,
    ResetPacket,
    RetryPacket,
    SessionPacket,
)
from rudp_chat.core.handshake import HELLO_RETRY_CAP_S
from rudp_chat.core.receiving import Receiver
from rudp_chat.core.recovery import Recovery
from rudp_chat.core.rtt import RttEstimator
from rudp_chat.core.state import State
from rudp_chat.sim import LinkProfile

DEFAULT = ConnectionConfig(insecure=True)  # these tests read and forge frames on the wire
FRAGMENT = fragment_size(DEFAULT.max_datagram_size, DEFAULT.insecure)
FORGED_BASE = 1_000_000  # packet numbers far beyond anything the real server sent


def kinds(datagrams: list[bytes]) -> list[str]:
    return [type(decode_datagram(d)).__name__ for d in datagrams]


def frames_of(datagram: bytes) -> tuple[Frame, ...]:
    packet = decode_datagram(datagram)
    assert isinstance(packet, SessionPacket)
    return decode_frames(packet.payload)


def open_pair(config: ConnectionConfig = DEFAULT) -> tuple[Pair, Connection]:
    pair = Pair(config)
    server = pair.handshake()
    return pair, server


def sender_and_receiver(
    pair: Pair, server: Connection, direction: str
) -> tuple[Connection, list[Event]]:
    if direction == "client->server":
        return pair.client, pair.server_events
    return server, pair.client_events


def messages(events: list[Event]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived)]


def terminations(events: list[Event]) -> list[ConnectionTerminated]:
    return [e for e in events if isinstance(e, ConnectionTerminated)]


DIRECTIONS = ["client->server", "server->client"]


# ---------------------------------------------------------------------- handshake


def test_handshake_is_hello_retry_hello_welcome() -> None:
    pair = Pair(DEFAULT)
    assert kinds(pair.to_server) == ["HelloPacket"]
    assert all(len(d) == MIN_HELLO_SIZE for d in pair.to_server)
    first = decode_datagram(pair.to_server[0])
    assert isinstance(first, HelloPacket) and first.token == b""
    pair.deliver_to_server()
    assert kinds(pair.to_client) == ["RetryPacket"]
    assert len(pair.listener.connections) == 0  # no state before the address is proven
    pair.deliver_to_client()
    assert kinds(pair.to_server) == ["HelloPacket"]
    second = decode_datagram(pair.to_server[0])
    assert isinstance(second, HelloPacket) and second.token != b""
    assert len(pair.to_server[0]) == MIN_HELLO_SIZE
    pair.deliver_to_server()
    assert kinds(pair.to_client)[0] == "WelcomePacket"
    assert pair.server is not None and pair.server_events == [Connected(pair.server.local_id)]
    pair.deliver_to_client()
    assert pair.client.state is State.OPEN
    assert pair.client_events == [Connected(pair.client.local_id)]
    assert pair.client.remote_id == pair.server.local_id
    assert pair.server.remote_id == pair.client.local_id


def test_hellos_back_off_then_the_handshake_times_out_exactly() -> None:
    pair = Pair(DEFAULT)
    hello_times = [0.0]
    pair.drop_all()
    while pair.client.state is State.CONNECTING:
        assert pair.step_timer() is not None
        for _ in pair.to_server:
            hello_times.append(pair.now)
        pair.drop_all()
    # 2 x initial_rtt, doubling, capped at HELLO_RETRY_CAP_S
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(hello_times)]
    expected = [round(min(2 * DEFAULT.initial_rtt * 2**k, HELLO_RETRY_CAP_S), 6) for k in range(4)]
    assert gaps[:4] == expected
    assert max(gaps) <= HELLO_RETRY_CAP_S + 1e-9
    assert pair.now == DEFAULT.handshake_timeout
    assert [e.reason for e in terminations(pair.client_events)] == [
        TerminationReason.HANDSHAKE_TIMEOUT
    ]
    assert pair.client.get_timer() is None
    assert pair.client.datagrams_to_send(pair.now + 100) == []


def test_close_while_connecting_ends_at_once_and_sends_nothing_more() -> None:
    pair = Pair(DEFAULT)
    pair.drop_all()
    pair.client.close()
    pair.collect()
    assert pair.client.state is State.CLOSED
    assert [type(e) for e in pair.client_events] == [ConnectionTerminated]
    assert pair.client_events[0].reason is TerminationReason.CLOSED  # type: ignore[attr-defined]
    assert pair.to_server == [] and pair.client.get_timer() is None


def test_messages_sent_while_connecting_arrive_after_the_handshake() -> None:
    pair = Pair(DEFAULT)
    pair.client.send(b"early")
    pair.client.send(b"")
    pair.collect()
    assert kinds(pair.to_server) == ["HelloPacket"]  # no data before WELCOME
    pair.handshake()
    pair.run(until=1.0)
    assert pair.received_by_server() == [b"early", b""]


def test_session_packet_before_welcome_is_dropped_and_counted() -> None:
    pair = Pair(DEFAULT)
    forged = encode_datagram(SessionPacket(pair.client.local_id, 0, encode_frames([PingFrame()])))
    pair.client.receive_datagram(forged, SERVER, 0.0)
    pair.collect()
    assert pair.client.stats().dropped_unexpected == 1
    assert pair.client.state is State.CONNECTING and pair.client_events == []


# --------------------------------------------------------------------------- data

SIZES = [0, 1, FRAGMENT - 1, FRAGMENT, FRAGMENT + 1, 3 * FRAGMENT, 100_000]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("size", SIZES)
def test_a_message_arrives_whole_once(direction: str, size: int) -> None:
    pair, server = open_pair()
    sender, receiver_events = sender_and_receiver(pair, server, direction)
    data = bytes(i % 251 for i in range(size))
    assert sender.send(data) == 0
    pair.collect()
    pair.run(until=5.0)
    got = [e for e in receiver_events if isinstance(e, MessageReceived)]
    assert got == [MessageReceived(0, data)]


@pytest.mark.parametrize("insecure", [False, True])
def test_messages_are_cut_at_the_codec_fragment_size(insecure: bool) -> None:
    """In each mode a message of ``fragment_size`` bytes leaves in one datagram and one byte
    more in two, so the boundary tests elsewhere sit on the real boundary (at the base size:
    a larger path MTU carries several fragments in one datagram, see test_pmtu)."""
    base = ConnectionConfig().max_datagram_size
    config = ConnectionConfig(insecure=insecure, max_path_datagram_size=base)
    fragment = fragment_size(config.max_datagram_size, insecure)
    for size, datagrams in ((fragment, 1), (fragment + 1, 2)):
        pair, _ = open_pair(config)
        pair.client.send(b"x" * size)
        pair.collect()
        assert len(pair.to_server) == datagrams, size
        assert all(len(d) <= config.max_datagram_size for d in pair.to_server)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_many_messages_arrive_in_order_with_consecutive_ids(direction: str) -> None:
    pair, server = open_pair()
    sender, receiver_events = sender_and_receiver(pair, server, direction)
    sent = [bytes([i]) * (i * 37 % 3_000) for i in range(60)]
    assert [sender.send(m) for m in sent] == list(range(60))
    pair.collect()
    pair.run(until=5.0)
    got = [e for e in receiver_events if isinstance(e, MessageReceived)]
    assert [e.message_id for e in got] == list(range(60))
    assert [e.data for e in got] == sent


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_reordered_duplicated_and_lossy_delivery_still_arrives_once(direction: str) -> None:
    pair, server = open_pair()
    sender, receiver_events = sender_and_receiver(pair, server, direction)
    sent = [bytes([i]) * 2_500 for i in range(20)]
    for m in sent:
        sender.send(m)
    pair.collect()
    step = 0
    while len(messages(receiver_events)) < len(sent) and pair.now < 60:
        step += 1
        queue = pair.to_server if pair.to_server else pair.to_client
        if not queue:
            pair.step_timer()
            continue
        if step % 5 == 0:
            queue.pop()  # lose the newest
        elif step % 7 == 0:
            queue.append(queue[0])  # duplicate the oldest
            queue.insert(0, queue.pop())  # ... and let the copy overtake everything
        elif step % 3 == 0 and len(queue) > 1:
            queue.append(queue.pop(0))  # reorder
        elif queue is pair.to_server:
            pair.deliver_to_server()
        else:
            pair.deliver_to_client()
    assert messages(receiver_events) == sent


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_too_large_is_refused_without_harm(direction: str) -> None:
    config = ConnectionConfig(insecure=True, max_message_size=10_000, send_buffer_size=10_000)
    pair, server = open_pair(config)
    sender, receiver_events = sender_and_receiver(pair, server, direction)
    with pytest.raises(MessageTooLargeError):
        sender.send(b"x" * 10_001)
    assert sender.send(b"x" * 10_000) == 0  # the refused one took no id
    pair.collect()
    pair.run(until=5.0)
    assert messages(receiver_events) == [b"x" * 10_000]


@pytest.mark.parametrize("max_datagram_size", [256, 576, 1200, 9000])
def test_no_datagram_exceeds_max_datagram_size(max_datagram_size: int) -> None:
    """Lossy, reordered delivery makes ACKs carry many ranges and timeouts send probes; every
    datagram but the (fixed-size) HELLO must still fit ``max_datagram_size``. Seeded scrambles
    (random.Random(seed)) pick which datagram goes next and which is lost."""
    config = ConnectionConfig(
        insecure=True,
        max_datagram_size=max_datagram_size,
        max_path_datagram_size=max_datagram_size,  # no discovery: test_pmtu bounds it by the path
        max_message_size=60_000,
        send_buffer_size=1_000_000,
        receive_window=1_000_000,
    )
    oversize: list[tuple[int, int]] = []
    for seed in range(6):
        rng = random.Random(seed)
        pair, server = open_pair(config)
        for i in range(3):
            pair.client.send(bytes([i]) * 60_000)
            server.send(bytes([i]) * 40_000)
        pair.collect()
        while (len(pair.received_by_server()) < 3 or len(pair.received_by_client()) < 3) and (
            pair.now < 120
        ):
            if not (pair.to_server or pair.to_client) or rng.random() < 0.02:
                pair.advance(pair.now + 0.002)
                continue
            queue = rng.choice([q for q in (pair.to_server, pair.to_client) if q])
            index = rng.randrange(len(queue))
            if rng.random() < 0.3:
                queue.pop(index)
            elif queue is pair.to_server:
                pair.deliver_to_server(index)
            else:
                pair.deliver_to_client(index)
        assert len(pair.received_by_server()) == 3 and len(pair.received_by_client()) == 3
        for datagram in pair.sent_by_client + pair.sent_by_server:
            if isinstance(decode_datagram(datagram), HelloPacket):
                assert len(datagram) == MIN_HELLO_SIZE
            elif len(datagram) > max_datagram_size:
                oversize.append((seed, len(datagram)))
    assert oversize == []


# -------------------------------------------------------------------------- close


@pytest.mark.parametrize("closer", ["client", "server"])
def test_graceful_close_delivers_queued_data_both_ways(closer: str) -> None:
    pair, server = open_pair()
    for i in range(5):
        pair.client.send(b"c%d" % i * 1_000)
        server.send(b"s%d" % i * 1_000)
    (pair.client if closer == "client" else server).close()
    pair.collect()
    pair.run(until=30.0)
    assert pair.received_by_server() == [b"c%d" % i * 1_000 for i in range(5)]
    assert pair.received_by_client() == [b"s%d" % i * 1_000 for i in range(5)]
    ends = {
        "client": pair.terminated(pair.client_events),
        "server": pair.terminated(pair.server_events),
    }
    other = "server" if closer == "client" else "client"
    assert ends[closer] == ConnectionTerminated(TerminationReason.CLOSED, 0, "closed")
    peer_end = ends[other]
    assert peer_end is not None and peer_end.reason is TerminationReason.CLOSED_BY_PEER
    assert pair.client.is_closed and server.is_closed
    assert pair.listener.connections == {}


def test_simultaneous_close_ends_both_cleanly() -> None:
    pair, server = open_pair()
    pair.client.close()
    server.close()
    pair.collect()
    pair.run(until=30.0)
    for events in (pair.client_events, pair.server_events):
        end = pair.terminated(events)
        assert end is not None and end.reason in (
            TerminationReason.CLOSED,
            TerminationReason.CLOSED_BY_PEER,
        )
    assert pair.client.is_closed and server.is_closed


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_send_after_close_raises_and_close_is_idempotent(direction: str) -> None:
    pair, server = open_pair()
    sender, _ = sender_and_receiver(pair, server, direction)
    sender.close()
    sender.close()
    assert sender.send_capacity == 0
    with pytest.raises(ConnectionClosedError):
        sender.send(b"late")
    pair.collect()
    pair.run(until=30.0)
    sender.close()  # after the end too
    with pytest.raises(ConnectionClosedError):
        sender.send(b"later")
    assert len(terminations(pair.client_events)) == len(terminations(pair.server_events)) == 1


def test_the_peer_cannot_send_once_it_heard_our_close() -> None:
    pair, server = open_pair()
    pair.client.close()
    pair.collect()
    pair.exchange()
    assert server.state in (State.CLOSING, State.DRAINING, State.CLOSED)
    with pytest.raises(ConnectionClosedError):
        server.send(b"too late")


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    "detail",
    [
        "gone",
        "",
        "é" * 200,
        "😀" * 100,
        "\ud800 lone surrogate",
        "x" * 10_000,
    ],
    ids=["ascii", "empty", "latin", "emoji", "surrogate", "long"],
)
def test_abort_tells_the_peer_once(direction: str, detail: str) -> None:
    pair, server = open_pair()
    aborter, _ = sender_and_receiver(pair, server, direction)
    aborter.send(b"never mind")
    aborter.abort(detail)
    aborter.abort("again")  # idempotent
    pair.collect()
    pair.run(until=30.0)
    mine = pair.client_events if aborter is pair.client else pair.server_events
    theirs = pair.server_events if aborter is pair.client else pair.client_events
    assert [e.reason for e in terminations(mine)] == [TerminationReason.ABORTED]
    ended = terminations(theirs)
    assert len(ended) == 1
    assert ended[0].reason is TerminationReason.PEER_ERROR
    assert ended[0].error_code == ErrorCode.APPLICATION
    assert messages(theirs) == []
    assert pair.client.is_closed and server.is_closed


# ----------------------------------------------------------------------- timeouts


def test_idle_timeout_fires_exactly_idle_timeout_after_the_last_datagram_heard() -> None:
    pair, server = open_pair()
    pair.advance(0.25)
    server.send(b"last words")
    pair.collect()
    pair.deliver_to_client()  # the last datagram the client ever hears, at 0.25
    last_heard = pair.now
    pings = 0
    while pair.client.state is State.OPEN:
        for datagram in pair.to_server:
            pings += PingFrame() in frames_of(datagram)
        pair.drop_all()
        pair.step_timer()
    assert pair.terminated(pair.client_events) == ConnectionTerminated(
        TerminationReason.IDLE_TIMEOUT, 0, "timed out"
    )
    assert pair.now == pytest.approx(last_heard + DEFAULT.idle_timeout)
    assert messages(pair.client_events) == [b"last words"]
    assert pings >= DEFAULT.idle_timeout / DEFAULT.heartbeat_interval / 2  # it kept probing
    assert pair.client.get_timer() is None
    assert pair.client.datagrams_to_send(pair.now) == []


def test_heartbeats_keep_an_idle_connection_open() -> None:
    pair, server = open_pair()
    pair.run(until=5 * DEFAULT.idle_timeout)
    assert pair.client.state is State.OPEN and server.state is State.OPEN
    assert pair.client.stats().datagrams_received > 5 * DEFAULT.idle_timeout / 2


def test_an_idle_connection_costs_one_ping_and_one_ack_per_interval() -> None:
    """ConnectionConfig.heartbeat_interval promises that the two ends take turns. Regression:
    with equal intervals on a symmetric path, B's PING reached A exactly when A's own
    heartbeat fell due (A heard B's ACK one one-way delay later), so both pinged: ~4
    datagrams per interval instead of 2."""
    scenario = Scenario(
        seed=1, up=LinkProfile(delay=0.025), down=LinkProfile(delay=0.025), closer="none"
    )
    harness = Harness(scenario)
    harness.run(until=10.0)
    before = harness.network.stats.sent
    harness.run(until=60.0)
    per_interval = (harness.network.stats.sent - before) / (50.0 / DEFAULT.heartbeat_interval)
    assert all(p.terminated is None for p in harness.peers)
    assert per_interval <= 2.2


def test_a_valid_reset_ends_the_client() -> None:
    """The server forgets the connection (its CLOSE lost); the client's next packet draws a
    RESET carrying the token from WELCOME."""
    pair, server = open_pair()
    server.abort("restart")
    pair.collect()
    while pair.listener.connections:  # the error CLOSE and all else is lost while it drains
        pair.drop_all()
        pair.step_timer()
    pair.drop_all()
    assert pair.client.state is State.OPEN and pair.now < DEFAULT.idle_timeout
    pair.client.send(b"x" * 200)
    pair.collect()
    pair.exchange()
    assert pair.listener.stats.resets_sent >= 1
    assert pair.terminated(pair.client_events) == ConnectionTerminated(
        TerminationReason.RESET, 0, "reset by peer"
    )


def test_a_reset_with_the_wrong_token_is_ignored() -> None:
    pair, _server = open_pair()
    assert pair.client.remote_id is not None
    forged = encode_datagram(ResetPacket(pair.client.remote_id, b"\x00" * 16))
    before = pair.client.stats().dropped_unexpected
    pair.client.receive_datagram(forged, SERVER, pair.now)
    pair.collect()
    assert pair.client.state is State.OPEN
    assert pair.client.stats().dropped_unexpected == before + 1
    assert pair.to_server == []


# -------------------------------------------------------------- inbound validation


def forge(pair: Pair, frames: list[Frame], number: int) -> bytes:
    return encode_datagram(SessionPacket(pair.client.local_id, number, encode_frames(frames)))


def snapshot(connection: Connection) -> tuple[object, ...]:
    stats = connection.stats()
    return (
        stats.state,
        stats.messages_received,
        stats.send_buffered_bytes,
        stats.bytes_in_flight,
        stats.smoothed_rtt,
        stats.congestion_window,
        stats.packets_lost,
        stats.duplicates_received,
        connection.get_timer(),
    )


def _open_with_unacked_data() -> tuple[Pair, Connection]:
    pair, server = open_pair()
    pair.advance(0.5)
    pair.exchange()
    pair.client.send(b"a" * 5_000)
    pair.collect()
    pair.drop_all()  # in flight, never acknowledged
    return pair, server


IMPLAUSIBLE: dict[str, list[Frame]] = {
    "ack of a packet never sent": [AckFrame(0, ((10_000, 10_000),), 0, 1_000)],
    "ack range beyond the largest sent": [AckFrame(0, ((0, 10_000),), 0, 1_000)],
    "cumulative beyond data sent": [AckFrame(999, ((0, 0),), 0, 1_000)],
    "data beyond the window": [DataFrame(10_000_000, 0, 0, 1, b"x")],
    "data beyond the window after an ack": [
        AckFrame(0, ((0, 0),), 0, 1_000),
        DataFrame(2**40, 0, 0, 1, b"x"),
    ],
}


@pytest.mark.parametrize("case", list(IMPLAUSIBLE))
def test_implausible_session_packets_change_nothing(case: str) -> None:
    pair, _ = _open_with_unacked_data()
    client = pair.client
    before = snapshot(client)
    dropped = client.stats().dropped_unexpected
    number = FORGED_BASE + 1
    client.receive_datagram(forge(pair, IMPLAUSIBLE[case], number), SERVER, pair.now)
    pair.collect()
    assert client.stats().dropped_unexpected == dropped + 1
    assert snapshot(client) == before
    assert pair.to_server == []  # not acknowledged
    assert [type(e) for e in pair.client_events] == [Connected]
    # and it is never acknowledged later either
    pair.client.send(b"more")
    pair.collect()
    pair.advance(pair.now + 3.0)
    for datagram in pair.to_server:
        for frame in frames_of(datagram):
            if isinstance(frame, AckFrame):
                assert all(not first <= number <= last for first, last in frame.ranges)


def test_a_cumulative_ack_covering_data_never_sent_is_dropped() -> None:
    """Pacing holds back most of a 100 kB message; an ACK claiming all of it cannot be genuine.
    Regression: it was believed (checked against the fragments queued, not sent), silently
    discarding the unsent data; a later close then ended CLOSED on our side although the peer
    received nothing."""
    pair, _server = open_pair()
    client = pair.client
    client.send(b"x" * 100_000)
    pair.collect()
    sent = {f.seq for d in pair.to_server for f in frames_of(d) if isinstance(f, DataFrame)}
    queued = -(-100_000 // FRAGMENT)
    assert len(sent) < queued  # most of it is still queued
    pair.drop_all()
    before = snapshot(client)
    dropped = client.stats().dropped_unexpected
    forged = forge(pair, [AckFrame(queued, ((0, 0),), 0, 10_000)], FORGED_BASE)
    client.receive_datagram(forged, SERVER, pair.now)
    pair.collect()
    assert client.stats().dropped_unexpected == dropped + 1
    assert snapshot(client) == before


def test_implausible_packets_do_not_keep_a_dead_connection_alive() -> None:
    """The idle timer counts only accepted datagrams."""
    pair, _ = _open_with_unacked_data()
    last_genuine = pair.now
    number = FORGED_BASE
    while pair.client.state is State.OPEN and pair.now < 100:
        number += 1
        forged = forge(pair, [AckFrame(0, ((10**9, 10**9),), 0, 10)], number)
        pair.client.receive_datagram(forged, SERVER, pair.now)
        pair.advance(pair.now + 0.5)
        pair.drop_all()
    assert pair.terminated(pair.client_events) is not None
    assert pair.now <= last_genuine + DEFAULT.idle_timeout + 0.5


def test_data_beyond_the_receive_buffer_is_dropped_not_fatal() -> None:
    config = ConnectionConfig(
        insecure=True,
        max_datagram_size=256,
        max_message_size=4_000,
        send_buffer_size=8_000,
        receive_window=8_000,
    )
    pair, _ = open_pair(config)
    client = pair.client
    dropped = client.stats().dropped_unexpected
    # out-of-order fragments of one message: each fits, all together overflow the byte budget
    big = b"y" * 1_100
    for k in range(1, 12):
        client.receive_datagram(
            forge(pair, [DataFrame(k, 0, k, 20, big)], FORGED_BASE + k), SERVER, pair.now
        )
    pair.collect()
    assert client.state is State.OPEN
    assert client.stats().dropped_unexpected > dropped
    assert messages(pair.client_events) == []


def test_datagram_from_another_address_is_dropped() -> None:
    pair, _server = open_pair()
    genuine = encode_datagram(
        SessionPacket(pair.client.local_id, FORGED_BASE, encode_frames([PingFrame()]))
    )
    before = snapshot(pair.client)
    pair.client.receive_datagram(genuine, ("10.9.9.9", 4433), pair.now)
    pair.collect()
    assert pair.client.stats().dropped_unexpected == 1
    assert snapshot(pair.client) == before and pair.to_server == []


@given(st.binary(max_size=1_500))
def test_random_bytes_get_no_reply_from_a_client(data: bytes) -> None:
    pair, _ = open_pair()
    before = snapshot(pair.client)
    invalid = pair.client.stats().dropped_invalid
    pair.client.receive_datagram(data, SERVER, pair.now)
    assert pair.client.datagrams_to_send(pair.now) == []
    assert pair.client.stats().dropped_invalid == invalid + 1
    assert snapshot(pair.client) == before


@given(st.binary(max_size=600))
def test_malformed_frames_in_a_valid_packet_get_no_reply(payload: bytes) -> None:
    pair, _ = open_pair()
    try:
        decode_frames(payload)
    except Exception:
        pass
    else:
        return  # by chance a valid frame list: not this test's business
    datagram = encode_datagram(SessionPacket(pair.client.local_id, FORGED_BASE, payload))
    invalid = pair.client.stats().dropped_invalid
    before = snapshot(pair.client)
    pair.client.receive_datagram(datagram, SERVER, pair.now)
    assert pair.client.datagrams_to_send(pair.now) == []
    assert pair.client.stats().dropped_invalid == invalid + 1
    assert snapshot(pair.client) == before


@pytest.mark.parametrize(
    "frames",
    [
        [DataFrame(0, 5, 0, 1, b"wrong message id")],
        [DataFrame(0, 0, 1, 2, b"fragment index 1 first")],
        [CloseFrame(ErrorCode.NO_ERROR, 0), DataFrame(0, 0, 0, 1, b"data after close")],
    ],
    ids=["message-id", "fragment-index", "data-after-close"],
)
def test_a_protocol_violation_closes_with_an_error_code(frames: list[Frame]) -> None:
    pair, _server = open_pair()
    pair.client.receive_datagram(forge(pair, frames, FORGED_BASE), SERVER, pair.now)
    pair.collect()
    end = pair.terminated(pair.client_events)
    assert end is not None and end.reason is TerminationReason.PROTOCOL_ERROR
    assert end.error_code == ErrorCode.PROTOCOL_VIOLATION
    assert messages(pair.client_events) == []
    pair.exchange()
    peer_end = pair.terminated(pair.server_events)
    assert peer_end is not None and peer_end.reason is TerminationReason.PEER_ERROR
    assert peer_end.error_code == ErrorCode.PROTOCOL_VIOLATION


# ------------------------------------------------------------------------ timers


def test_after_handle_timer_the_timer_is_in_the_future() -> None:
    """The pulled-timer contract: once ``handle_timer(now)`` and ``datagrams_to_send(now)`` ran,
    ``get_timer()`` is None or later than ``now``; otherwise a driver fires forever."""
    pair, server = open_pair()
    for i in range(30):
        pair.client.send(bytes([i]) * 3_000)
        server.send(bytes([i]) * 3_000)
    pair.collect()
    for step in range(3_000):
        if pair.client.is_closed:
            break
        if step % 3 == 0 and pair.to_server:
            pair.to_server.pop(step % len(pair.to_server))
        elif pair.to_server:
            pair.deliver_to_server(step % len(pair.to_server))
        elif pair.to_client:
            pair.deliver_to_client(step % len(pair.to_client))
        else:
            deadline = pair.next_timer()
            assert deadline is not None
            pair.now = max(pair.now, deadline)
            pair.fire_timers()
            for connection in (pair.client, server):
                timer = connection.get_timer()
                assert timer is None or timer > pair.now, (timer, pair.now)


def test_loss_timer_is_cleared_by_detect_losses_at_its_deadline() -> None:
    """Regression: ``detect_losses(now)`` once condemned packets with ``time_sent <= now -
    loss_delay`` but armed ``loss_time = time_sent + loss_delay`` for the rest; with
    time_sent=0.0071 and loss_delay=0.001 neither held at now=0.0081 (float rounding), so the
    timer stayed due at ``now`` forever and a driver firing due timers spun."""
    rtt = RttEstimator(0.333, 0.05, 4.0, 0.010)
    rtt.update(0.0001, 0.0)
    assert rtt.loss_delay() == 0.001
    recovery = Recovery(rtt, CongestionController(1200, 10, 0.333))
    for number in range(2):
        recovery.on_packet_sent(number, 0.0071, SentPacket(number, 0.0071, 1_000, ()))
    recovery.on_ack(AckFrame(0, ((1, 1),), 0, 0), 0.0075, 0.0)
    assert recovery.loss_time == 0.0071 + 0.001 == 0.0081
    recovery.detect_losses(0.0081)
    assert recovery.loss_time is None or recovery.loss_time > 0.0081


# ------------------------------------------------------------------------ events


def test_event_reprs_are_valid_python() -> None:
    pair, server = open_pair()
    pair.client.send(b"\x00\xffbytes")
    server.abort("bye")
    pair.collect()
    pair.run(until=5.0)
    namespace = {
        "Connected": Connected,
        "MessageReceived": MessageReceived,
        "ConnectionTerminated": ConnectionTerminated,
        "TerminationReason": TerminationReason,
    }
    events = pair.client_events + pair.server_events
    assert {type(e) for e in events} >= {Connected, ConnectionTerminated}
    for event in events:
        assert eval(repr(event), namespace) == event


def test_stats_count_traffic() -> None:
    pair, server = open_pair()
    pair.client.send(b"z" * 10_000)
    pair.collect()
    pair.run(until=2.0)
    client, peer = pair.client.stats(), server.stats()
    assert client.messages_sent == 1 and peer.messages_received == 1
    assert client.datagrams_sent == len(pair.sent_by_client)
    assert client.bytes_sent == sum(map(len, pair.sent_by_client))
    # the listener's stateless RETRY is not the connection's
    from_connection = [
        d for d in pair.sent_by_server if not isinstance(decode_datagram(d), RetryPacket)
    ]
    assert peer.datagrams_sent == len(from_connection)
    assert client.send_buffered_bytes == 0 and client.bytes_in_flight == 0
    assert client.state == "open"


def test_client_and_server_addresses_are_what_the_pair_uses() -> None:
    pair, server = open_pair()
    assert pair.client.peer_address == SERVER
    assert server.peer_address == CLIENT
    assert isinstance(decode_datagram(pair.sent_by_server[0]), RetryPacket)


def test_draining_ends_soon_after_our_close_was_acknowledged() -> None:
    """Regression found by test_stateful. Both close; the server's first CLOSE reaches the
    client, whose ACK of it is delayed past two server PTOs (the server re-sends its CLOSE and
    declares the first copy lost); the newest copy is lost. The client acknowledged the CLOSE,
    drains and forgets; the server must too, within ``drain_period_rtos`` RTOs: it used to
    ignore the ACK of a copy it had declared lost and drain for the whole idle_timeout."""
    config = ConnectionConfig(insecure=True, idle_timeout=60.0)
    pair, server = open_pair(config)
    pair.client.close()
    pair.collect()
    for _ in range(3):
        pair.step_timer()  # the client's CLOSE and its probes wait in flight
    server.close()
    pair.collect()
    pair.deliver_to_client(0)  # the server's CLOSE: the client ACKs it and drains
    pair.deliver_to_server(0)  # the client's first CLOSE: the server drains too
    for _ in range(5):
        pair.step_timer()  # the server's PTO fires twice: its first CLOSE is "lost"
    pair.to_client.pop()  # the newest copy is lost
    start = pair.now
    pair.run(until=start + config.idle_timeout + 10)  # a perfect network from here on
    assert pair.terminated(pair.client_events) is not None
    assert pair.terminated(pair.server_events) is not None
    assert pair.client.is_closed and server.is_closed
    assert pair.now - start <= config.drain_period_rtos * config.max_rto + 1.0


# ------------------------------------------------------------------ peer fuzzing

fuzz_frames = st.lists(
    st.one_of(
        codec_frames,
        # frames that look like the real conversation: small numbers, near what was sent
        st.builds(
            DataFrame,
            st.integers(0, 40),
            st.integers(0, 10),
            st.integers(0, 3),
            st.integers(1, 4),
            st.binary(max_size=1_200),
        ).filter(lambda f: f.fragment_index < f.fragment_count),
        st.builds(
            AckFrame,
            st.integers(0, 40),
            st.integers(0, 30).map(lambda n: ((max(n - 3, 0), n),)),
            st.integers(0, 50_000),
            st.integers(0, 1_000),
        ),
        st.builds(CloseFrame, st.integers(0, 4), st.integers(0, 40), st.text(max_size=20)),
    ),
    min_size=1,
    max_size=5,
)


@given(
    st.sampled_from(["client", "server"]),
    st.lists(st.tuples(fuzz_frames, st.floats(0.0, 2.0)), min_size=1, max_size=12),
)
def test_whatever_the_peer_sends_never_raises(
    side: str, packets: list[tuple[list[Frame], float]]
) -> None:
    """A peer's fault never escapes ``receive_datagram`` (STYLE principle 6): any sequence of
    decodable session packets, at any pace, leaves a connection that still answers its three
    outputs sanely and ends, if at all, with one ConnectionTerminated."""
    pair, server = open_pair()
    pair.client.send(b"hello" * 300)
    server.send(b"world" * 300)
    pair.collect()
    pair.drop_all()
    target = pair.client if side == "client" else server
    events = pair.client_events if side == "client" else pair.server_events
    source = SERVER if side == "client" else CLIENT
    for number, (frames, pause) in enumerate(packets, start=FORGED_BASE):
        pair.advance(pair.now + pause)
        pair.drop_all()
        datagram = encode_datagram(SessionPacket(target.local_id, number, encode_frames(frames)))
        if side == "client":
            target.receive_datagram(datagram, source, pair.now)
        else:
            pair.listener.receive_datagram(datagram, source, pair.now)
        pair.collect()
        target.datagrams_to_send(pair.now)
        timer = target.get_timer()
        assert timer is None or timer >= pair.now
        ends = terminations(events)
        assert len(ends) <= 1
        if ends:
            assert events[-1] == ends[0]
    pair.advance(pair.now + 3 * DEFAULT.idle_timeout)
    assert len(terminations(events)) == 1
    assert target.is_closed or target.state is State.DRAINING


# ------------------------------------------------------------------ receive window


def test_a_receiver_over_its_byte_budget_still_hears_pings_acks_and_closes() -> None:
    """Regression: a packet without new DATA used to be refused once buffered + unread bytes
    exceeded the budget (which the exception for the awaited fragment allows)."""
    receiver = Receiver(
        window_bytes=2_500, fragment_size=1_000, max_message_size=3_000, max_ack_delay=0.01
    )
    later = [DataFrame(seq, 0, seq, 3, b"x" * 1_000) for seq in (1, 2)]
    for fragment in later:  # fragments 1 and 2 of message 0 overtake fragment 0
        assert receiver.admits([fragment])
        assert receiver.on_data(fragment) == []
    first = DataFrame(0, 0, 0, 3, b"x" * 1_000)
    next_message = DataFrame(3, 1, 0, 2, b"y" * 1_000)
    assert receiver.admits([first, next_message])  # what delivery waits for is let in ...
    assert receiver.on_data(first) == [MessageReceived(0, b"x" * 3_000)]
    receiver.on_data(next_message)  # ... with its packet-mate, over the budget
    for frames in (
        [PingFrame()],
        [AckFrame(0, ((0, 0),), 0, 10)],
        [CloseFrame(ErrorCode.NO_ERROR, 5)],
    ):
        assert receiver.admits(frames), frames  # nothing new to hold: never refused


def test_max_size_messages_cross_a_lossy_path_with_a_tight_window() -> None:
    """Regression, seeded reproducer from the simulator: 64 KiB messages, receive_window 70 000
    bytes, 20 % loss. The receiver used to buffer 71 206 bytes (over budget through the
    exception for the fragment delivery waits for), then drop every PING and ACK as
    'unexpected' until both ends timed out."""
    config = ConnectionConfig(
        insecure=True, max_message_size=65_536, receive_window=70_000, send_buffer_size=4 * 65_536
    )
    lossy = LinkProfile(loss=0.2, delay=0.02)
    run_scenario(
        Scenario(
            seed=0,
            client_sizes=((65_536,) * 6,),
            server_sizes=((),),
            up=lossy,
            down=lossy,
            closer="client",
            config=config,
        ),
        within=120.0,
    )


def test_a_window_of_max_message_size_carries_max_size_messages() -> None:
    """Regression, on a perfect path: the window used to count floor(65 536 / 1 139) = 57
    fragments while a 64 KiB message needs 58, so after the 256 fragments everyone may assume
    the fifth message never completed, and nothing timed out (heartbeats flowed)."""
    config = ConnectionConfig(
        insecure=True, max_message_size=65_536, receive_window=65_536, send_buffer_size=8 * 65_536
    )
    pair, _server = open_pair(config)
    sent = [bytes([i]) * 65_536 for i in range(6)]
    for message in sent:
        pair.client.send(message)
    pair.collect()
    pair.run(until=30.0)
    assert pair.received_by_server() == sent


def test_a_receiver_honours_the_window_it_advertised() -> None:
    """The sender may send any sequence number below the advertised window; refusing such DATA
    (counted as dropped_unexpected) makes it a loss, retransmitted again and again. Found by
    the thorough profile of test_tight_windows_and_buffers_still_deliver (seed=58884: 8.7 MB
    retransmitted for 270 kB, 5 of 10 messages after 300 s). Here: 1 MiB in 64 KiB messages,
    receive_window 64 KiB, 2 % loss, 50 ms, 10 Mbit/s; the receiver refuses ~200 packets and
    the sender retransmits 10x what a 300 kB window needs."""
    config = ConnectionConfig(
        insecure=True, max_message_size=65_536, receive_window=65_536, send_buffer_size=8 * 65_536
    )
    path = LinkProfile(delay=0.05, loss=0.02, rate=1.25e6)
    harness = run_scenario(
        Scenario(
            seed=1,
            client_sizes=((65_536,) * 16,),
            server_sizes=((),),
            up=path,
            down=path,
            config=config,
        ),
        within=60.0,
    )
    receiver = harness.servers[0].connection
    assert receiver is not None
    assert receiver.stats().dropped_unexpected == 0


def test_no_ack_ever_covers_the_packet_that_broke_the_protocol() -> None:
    """PROTOCOL.md §5: the offending packet is never recorded. DATA before the violating frame
    is delivered; the error CLOSE leaves without an ACK; reading that message sends no window
    update; and the ACKs a draining connection still sends, for a repeat of the offending
    packet or for a later one, leave it out."""
    pair, _server = open_pair()
    bad = forge(
        pair,
        [DataFrame(0, 0, 0, 1, b"delivered"), DataFrame(1, 5, 0, 1, b"wrong message id")],
        FORGED_BASE,
    )
    client = pair.client
    client.receive_datagram(bad, SERVER, pair.now)
    sent = [frame for data, _ in client.datagrams_to_send(pair.now) for frame in frames_of(data)]
    assert [type(frame) for frame in sent] == [CloseFrame]
    taken: list[Event] = []
    while (event := client.next_event()) is not None:
        taken.append(event)
    assert messages(taken) == [b"delivered"]
    assert client.datagrams_to_send(pair.now) == []  # no window update after the failure
    client.receive_datagram(bad, SERVER, pair.now)  # a repeat of it
    client.receive_datagram(forge(pair, [PingFrame()], FORGED_BASE + 1), SERVER, pair.now)
    acks = [
        frame
        for data, _ in client.datagrams_to_send(pair.now)
        for frame in frames_of(data)
        if isinstance(frame, AckFrame)
    ]
    assert acks
    for ack in acks:
        assert not any(first <= FORGED_BASE <= last for first, last in ack.ranges)
        assert any(first <= FORGED_BASE + 1 <= last for first, last in ack.ranges)
