"""Unreliable datagrams (PROTOCOL.md §5 "Unreliable datagrams", RFC 9221): the frame's bytes
and hostile decodes, then whole connections on the simulator (each datagram on the wire once,
delivery = 1 − loss, latest-only lanes, congestion control) and by hand (sizes, limits)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simharness import CLIENT, SERVER, Pair, sim_settings
from test_qlog import ListSink, check_events

from rudp_chat.core.codec import (
    DATAGRAM_FRAME_OVERHEAD,
    decode_datagram,
    decode_frames,
    encode_datagram,
    encode_frames,
    payload_room,
)
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.errors import (
    ConnectionClosedError,
    DatagramTooLargeError,
    FrameError,
    LocalProtocolError,
)
from rudp_chat.core.events import ConnectionTerminated, DatagramReceived, Event
from rudp_chat.core.frames import (
    MAX_COUNTER,
    MAX_DATAGRAM_LANES,
    AckFrame,
    DatagramFrame,
    SessionPacket,
)
from rudp_chat.core.listener import Listener
from rudp_chat.sim import LinkProfile, Network
from rudp_chat.sim.endpoint import Endpoint

INSECURE = ConnectionConfig(insecure=True)  # so a test can read the frames on the wire
STAMP = struct.Struct(">I")


# ------------------------------------------------------------------------------ the frame


def test_the_worked_bytes_of_protocol_md() -> None:
    assert encode_frames([DatagramFrame(0, b"hi")]).hex(" ") == "91 93 05 00 c4 02 68 69"
    assert encode_frames([DatagramFrame(3, b"hi", 7)]).hex(" ") == "91 94 05 03 c4 02 68 69 07"
    payload = encode_frames([DatagramFrame(1, b"typing", 300)])
    packet = encode_datagram(SessionPacket(bytes(range(1, 9)), 42, payload))
    assert packet.hex(" ") == (
        "94 04 c4 08 01 02 03 04 05 06 07 08 2a c4 0f 91 94 05 01 c4 06 74 79 70 69 6e 67 cd 01 2c"
        " 81 c2 49 61"
    )


@given(
    st.integers(0, MAX_DATAGRAM_LANES - 1),
    st.binary(max_size=64),
    st.none() | st.integers(0, MAX_COUNTER),
)
def test_a_datagram_frame_round_trips(lane: int, data: bytes, sequence: int | None) -> None:
    frame = DatagramFrame(lane, data, sequence)
    encoded = encode_frames([frame])
    assert decode_frames(encoded) == (frame,)
    assert len(encoded) <= len(data) + DATAGRAM_FRAME_OVERHEAD


@pytest.mark.parametrize(
    "raw",
    [
        "91 92 05 00",  # no data
        "91 95 05 00 c4 00 00 00",  # too long
        "91 93 05 cd 01 00 c4 00",  # lane 256
        "91 93 05 ff c4 00",  # lane -1
        "91 93 05 c3 c4 00",  # lane true
        "91 93 05 00 a2 68 69",  # data as str
        "91 94 05 00 c4 00 ff",  # sequence -1
        "91 94 05 00 c4 00 c0",  # sequence nil
        "91 94 05 00 c4 00 cb 3f f0 00 00 00 00 00 00",  # sequence 1.0
        "91 94 05 00 c4 00 cf 40 00 00 00 00 00 00 00",  # sequence 2^62
        "91 93 04 00 c4 00",  # type 4: the lanes' DATA, not ours
    ],
)
def test_hostile_datagram_frames_raise_the_one_decode_error(raw: str) -> None:
    with pytest.raises(FrameError):
        decode_frames(bytes.fromhex(raw))


# ------------------------------------------------------------------- on the simulator


class Tap:
    """A network node that records the frames its inner node sends (insecure: readable)."""

    def __init__(self, inner: Endpoint) -> None:
        self.inner = inner
        self.frames: list[object] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.inner.receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)

    def get_timer(self) -> float | None:
        return self.inner.get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self.inner.datagrams_to_send(now)
        for data, _ in out:
            packet = decode_datagram(data)
            if isinstance(packet, SessionPacket):
                self.frames.extend(decode_frames(packet.payload))
        return out


def _open(
    seed: int, up: LinkProfile, config: ConnectionConfig = INSECURE
) -> tuple[Network, Connection, Endpoint, Tap]:
    """A connection over ``up`` (client to server; the way back is perfect but 25 ms)."""
    rng = random.Random(seed)
    network = Network(seed)
    network.set_link(CLIENT, SERVER, up)
    network.set_link(SERVER, CLIENT, LinkProfile(delay=0.025))
    server = Endpoint(Listener(rng.randbytes, ListenerConfig(connection=config)))
    network.attach(SERVER, server)
    client = Connection.connect(SERVER, 0.0, rng.randbytes, config)
    tap = Tap(Endpoint(client))
    network.attach(CLIENT, tap)
    network.run(stop=lambda: client.state.value == "open", until=30.0)
    return network, client, server, tap


def _stream(
    network: Network, client: Connection, count: int, interval: float, size: int, **kwargs: bool
) -> float:
    """Send ``count`` stamped datagrams ``interval`` apart from the next 0.5 s on; returns the
    first's time."""
    start = network.now + 0.5

    def sender(index: int) -> Callable[[], None]:
        return lambda: client.send_datagram(
            STAMP.pack(index) + bytes(size - STAMP.size), **kwargs
        )

    for index in range(count):
        network.call_at(start + index * interval, sender(index))
    network.run(until=start + count * interval + 2.0)
    return start


def _arrivals(server: Endpoint) -> list[tuple[float, int]]:
    return [
        (record.time, STAMP.unpack_from(record.event.data)[0])
        for record in server.log
        if isinstance(record.event, DatagramReceived)
    ]


def test_each_datagram_is_sent_once_and_delivery_is_one_minus_loss() -> None:
    network, client, server, tap = _open(7, LinkProfile(loss=0.2, delay=0.040))
    start = _stream(network, client, 1000, 0.02, 200)
    on_wire = [STAMP.unpack_from(f.payload)[0] for f in tap.frames if isinstance(f, DatagramFrame)]
    assert sorted(on_wire) == list(range(1000))  # every one, once: nothing sent again
    arrivals = _arrivals(server)
    indices = [index for _, index in arrivals]
    assert len(set(indices)) == len(indices)  # at most once
    assert 0.77 <= len(arrivals) / 1000 <= 0.83  # 1 - loss, seed 7 (sampling noise ±0.013)
    latencies = [time - (start + index * 0.02) for time, index in arrivals]
    assert min(latencies) > 0.040 - 1e-9 and sorted(latencies)[len(latencies) // 2] < 0.045
    stats = client.stats()
    assert stats.datagram_frames_sent == 1000 and stats.retransmitted_fragments == 0
    assert stats.datagram_frames_lost > 0 and stats.datagram_frames_dropped == 0
    received = server.connections[0].stats()
    assert received.datagram_frames_received == len(arrivals)


def test_a_lost_datagram_arms_no_retransmission_timer() -> None:
    """A datagram-only flight awaits no ACK: over a dead link nothing but heartbeats follows."""
    network, client, _, tap = _open(3, LinkProfile(delay=0.020, partitions=((1.0, 60.0),)))
    network.run(until=network.now + 1.5)
    before = len(tap.frames)
    client.send_datagram(b"into the void")
    network.flush(CLIENT)
    network.run(until=network.now + 3.0)
    sent = [type(frame).__name__ for frame in tap.frames[before:]]
    assert sent.count("DatagramFrame") == 1
    assert set(sent) <= {"DatagramFrame", "PingFrame", "AckFrame"}
    assert sent.count("PingFrame") <= 4  # heartbeats (1 s apart, backing off), no RTO probes


def test_latest_only_drops_older_arrivals_on_the_simulator() -> None:
    """Reordering holds some back 10 ms: a latest-only lane delivers in increasing order only."""
    profile = LinkProfile(delay=0.020, reorder=0.3, reorder_delay=0.010)
    network, client, server, _ = _open(11, profile)
    _stream(network, client, 500, 0.002, 100, latest_only=True)
    indices = [index for _, index in _arrivals(server)]
    assert indices == sorted(indices) and len(indices) < 500
    stats = server.connections[0].stats()
    assert stats.datagram_frames_discarded == 500 - len(indices)  # none lost: the rest stale


def test_datagrams_respect_the_congestion_window_and_pacing() -> None:
    """Offered 10 x a 100 KB/s bottleneck: the sender sends about what the path carries and
    drops the rest itself, instead of flooding the bottleneck's queue."""
    bottleneck = LinkProfile(delay=0.025, rate=100_000, queue=20)
    network, client, server, _ = _open(5, bottleneck)
    count, interval = 5000, 0.001  # 1,000 datagrams of 1 KB per second for 5 s
    _stream(network, client, count, interval, 1000)
    stats = client.stats()
    delivered = len(_arrivals(server))
    assert stats.datagram_frames_dropped > count / 2  # the sender dropped most: no room
    assert delivered > 0.8 * stats.datagram_frames_sent  # what was sent mostly arrived
    assert delivered < 1.3 * 100_000 * count * interval / 1000  # about the bottleneck's rate
    assert network.link(CLIENT, SERVER).stats.queue_drops < 0.1 * stats.datagram_frames_sent


def test_datagrams_and_messages_share_a_path_without_starving_each_other() -> None:
    network, client, server, _ = _open(2, LinkProfile(delay=0.025, rate=500_000, queue=60))
    for _ in range(200):
        client.send(bytes(1000))  # a 200 KB backlog
    _stream(network, client, 100, 0.01, 100)
    assert len(_arrivals(server)) >= 90  # datagrams go first in each packet
    messages = [r for r in server.log if type(r.event).__name__ == "MessageReceived"]
    assert len(messages) == 200


@sim_settings(30)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.booleans(), st.sampled_from(["deliver", "drop", "hold"])),
        min_size=1,
        max_size=40,
    ),
    st.randoms(use_true_random=False),
)
def test_any_loss_and_reordering_delivers_at_most_once_and_latest_only_in_order(
    sends: list[tuple[int, bool, str]], rng: random.Random
) -> None:
    """Datagrams on a few lanes, each packet delivered, dropped or held back to arrive later
    in a shuffled order: each payload arrives at most once, a latest-only lane only moves
    forward, and nothing is ever sent twice."""
    pair, _ = _pair()
    held: list[bytes] = []
    for index, (lane, latest, fate) in enumerate(sends):
        pair.client.send_datagram(bytes([index]), lane=lane, latest_only=latest)
        pair.collect()
        out, pair.to_server[:] = list(pair.to_server), []
        if fate == "deliver":
            for data in out:
                pair.listener.receive_datagram(data, pair.client_address, pair.now)
        elif fate == "hold":
            held += out
        pair.now += 0.001
    rng.shuffle(held)
    for data in held:
        pair.listener.receive_datagram(data, pair.client_address, pair.now)
    pair.collect()
    received = [(e.lane, e.data[0]) for e in _received(pair.server_events)]
    assert len({index for _, index in received}) == len(received)
    for lane in range(4):
        ordered = [i for ln, i in received if ln == lane and sends[i][1]]
        assert ordered == sorted(ordered)
    delivered = {i for i, (_, _, fate) in enumerate(sends) if fate == "deliver"}
    assert delivered <= {index for _, index in received}  # in time: never refused
    sent = [
        frame.payload
        for data in pair.sent_by_client
        if isinstance(packet := decode_datagram(data), SessionPacket)
        for frame in decode_frames(packet.payload)
        if isinstance(frame, DatagramFrame)
    ]
    assert sorted(sent) == sorted(bytes([i]) for i in range(len(sends)))


def test_datagram_frames_appear_in_the_qlog_trace() -> None:
    sink = ListSink()
    pair = Pair(INSECURE, client_trace=sink)
    pair.handshake()
    pair.client.send_datagram(b"traced", lane=2, latest_only=True)
    pair.collect()
    check_events(sink.events)
    frames = [
        frame
        for event in sink.events
        if event["name"] == "transport:packet_sent"
        for frame in event["data"]["frames"]
        if frame["frame_type"] == "datagram"
    ]
    assert frames == [{"frame_type": "datagram", "length": 6, "lane": 2, "sequence": 0}]


# ----------------------------------------------------------------------- by hand


def _pair() -> tuple[Pair, Connection]:
    pair = Pair(INSECURE)
    return pair, pair.handshake()


def _received(events: list[Event]) -> list[DatagramReceived]:
    return [event for event in events if isinstance(event, DatagramReceived)]


def test_latest_only_by_hand_and_plain_datagrams_in_any_order() -> None:
    pair, server = _pair()
    for payload, latest in ((b"old", True), (b"new", True), (b"a", False), (b"b", False)):
        pair.client.send_datagram(payload, lane=2, latest_only=latest)
        pair.collect()
    assert len(pair.to_server) == 4  # one packet each: sent as they were queued
    for index in (1, 0, 1, 0):  # new, old, b, a
        pair.deliver_to_server(index)
    assert _received(pair.server_events) == [
        DatagramReceived(b"new", 2),
        DatagramReceived(b"b", 2),
        DatagramReceived(b"a", 2),
    ]
    assert server.stats().datagram_frames_discarded == 1


def test_a_queued_latest_only_datagram_is_replaced_by_a_newer_one() -> None:
    pair, _ = _pair()
    client = pair.client
    client.send_datagram(b"1", lane=1, latest_only=True)
    client.send_datagram(b"2", lane=1, latest_only=True)
    client.send_datagram(b"x", lane=0, latest_only=True)
    pair.collect()
    pair.exchange()
    assert _received(pair.server_events) == [DatagramReceived(b"2", 1), DatagramReceived(b"x", 0)]
    assert client.stats().datagram_frames_dropped == 1


def test_the_largest_datagram_fits_one_packet_even_beside_an_owed_ack() -> None:
    pair, server = _pair()
    client = pair.client
    largest = client.max_datagram_payload
    assert largest == payload_room(INSECURE.max_datagram_size, True) - DATAGRAM_FRAME_OVERHEAD
    with pytest.raises(DatagramTooLargeError):
        client.send_datagram(bytes(largest + 1))
    pair.server_events.clear()
    server.send(b"owe me an ack")
    pair.collect()
    pair.deliver_to_client()  # the client owes an ACK (within 10 ms)
    client.send_datagram(bytes(largest))
    pair.collect()
    packets = [decode_datagram(data) for data in pair.to_server]
    sent = [decode_frames(p.payload) for p in packets if isinstance(p, SessionPacket)]
    assert len(sent) == 2
    assert [type(f) for frames in sent for f in frames] == [AckFrame, DatagramFrame]
    assert all(len(data) <= INSECURE.max_datagram_size for data in pair.to_server)
    pair.exchange()
    assert _received(pair.server_events) == [DatagramReceived(bytes(largest), 0)]


def test_the_largest_datagram_follows_path_mtu_discovery() -> None:
    pair, _ = _pair()
    client = pair.client
    client.send(bytes(200_000))  # data waiting: discovery probes the path (no limit here)
    pair.run(until=5.0)
    size = client.stats().path_datagram_size
    assert size == INSECURE.max_path_datagram_size > INSECURE.max_datagram_size
    assert client.max_datagram_payload == payload_room(size, True) - DATAGRAM_FRAME_OVERHEAD
    largest = client.max_datagram_payload
    client.send_datagram(bytes(largest))
    pair.collect()
    assert len(pair.to_server) == 1 and len(pair.to_server[0]) <= size  # one packet
    pair.exchange()
    assert _received(pair.server_events) == [DatagramReceived(bytes(largest), 0)]


def test_a_datagram_the_window_holds_too_long_is_dropped() -> None:
    pair, _ = _pair()
    client = pair.client
    client.send(bytes(100_000))
    while (stats := client.stats()).bytes_in_flight + 1200 <= stats.congestion_window:
        pair.now += 0.005  # pacing lets the initial window go; nothing is acknowledged
        pair.collect()
    client.send_datagram(b"stale soon")
    pair.collect()
    assert client.stats().datagram_frames_sent == 0  # held: the window is full
    pair.now += INSECURE.datagram_max_age + 0.01
    pair.collect()
    pair.run(until=pair.now + 5.0)
    stats = client.stats()
    assert stats.datagram_frames_dropped == 1 and stats.datagram_frames_sent == 0
    assert _received(pair.server_events) == []


def test_misuse_raises_local_errors() -> None:
    pair, _ = _pair()
    client = pair.client
    with pytest.raises(LocalProtocolError):
        client.send_datagram(b"", lane=INSECURE.datagram_lanes)
    with pytest.raises(LocalProtocolError):
        client.send_datagram(b"", lane=-1)
    client.close()
    with pytest.raises(ConnectionClosedError):
        client.send_datagram(b"late")


def _unread(pair: Pair) -> None:
    """Hand what the client sent to the listener without the Pair reading the events."""
    for data in pair.to_server:
        pair.listener.receive_datagram(data, pair.client_address, pair.now)
    pair.to_server.clear()


def test_the_final_event_waits_for_unread_datagrams() -> None:
    pair, server = _pair()
    pair.client.send_datagram(b"last words")
    pair.collect()  # sent before the abort, which sends nothing but its CLOSE
    pair.client.abort("bye")
    pair.collect()
    _unread(pair)
    end = server.next_event(datagrams=False)  # a shell reading datagrams on their own
    assert isinstance(end, ConnectionTerminated) and server.next_event(datagrams=False) is None
    assert server.next_event() == DatagramReceived(b"last words", 0)


def test_queues_are_bounded_both_ways() -> None:
    config = ConnectionConfig(insecure=True, datagram_queue=3)
    pair = Pair(config)
    server = pair.handshake()
    for index in range(5):  # queued faster than sent: the oldest two go
        pair.client.send_datagram(bytes([index]))
    pair.collect()
    assert pair.client.stats().datagram_frames_dropped == 2
    for index in range(5, 8):
        pair.client.send_datagram(bytes([index]))
        pair.collect()
    _unread(pair)  # six arrive, nobody reads: the oldest three go
    taken = [server.next_event() for _ in range(4)]
    assert taken == [DatagramReceived(bytes([i]), 0) for i in (5, 6, 7)] + [None]
    assert server.stats().datagram_frames_discarded == 3
