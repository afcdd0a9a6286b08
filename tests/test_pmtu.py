"""Path MTU discovery (PROTOCOL.md §14): the search on its own, the probe's bytes, and whole
transfers on the simulator over paths whose MTU is smaller, larger, or shrinks mid-transfer."""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simharness import (
    SERVER,
    Harness,
    Pair,
    Scenario,
    client_address,
    sim_settings,
)
from test_qlog import ListSink, check_events

from rudp_chat.core.codec import (
    SEALED_OVERHEAD,
    decode_datagram,
    decode_frames,
    encode_frames,
    padded_ping,
    sealed_header,
    session_overhead,
)
from rudp_chat.core.config import ConnectionConfig
from rudp_chat.core.events import MessageReceived
from rudp_chat.core.frames import AckFrame, PingFrame, SessionPacket
from rudp_chat.core.pmtu import (
    BLACK_HOLE_LOSSES,
    MAX_PROBES,
    PMTU_RAISE_S,
    SEARCH_GRANULARITY,
    PathMtu,
)
from rudp_chat.core.stats import ConnectionStats
from rudp_chat.sim.link import LinkProfile

BASE = ConnectionConfig().max_datagram_size
ETHERNET = ConnectionConfig().max_path_datagram_size
JUMBO = 9000 - 28  # UDP payload of a 9,000-byte IPv4 MTU
TIMEOUT = 0.2


# ---------------------------------------------------------------- the search alone


def confirm(pmtu: PathMtu, number: int, now: float) -> bool:
    size = pmtu.probe_due(now)
    assert size is not None
    pmtu.on_probe_sent(number, size, now, TIMEOUT)
    return pmtu.on_ack_ranges(((number, number),), now)


def lose(pmtu: PathMtu, number: int, now: float) -> float:
    size = pmtu.probe_due(now)
    assert size is not None
    pmtu.on_probe_sent(number, size, now, TIMEOUT)
    pmtu.handle_timer(now + TIMEOUT)
    return now + TIMEOUT


def search(pmtu: PathMtu, path_mtu: int) -> list[int]:
    """Run the search against a path carrying ``path_mtu``; returns the sizes probed."""
    now, number, probed = 0.0, 0, []
    while (size := pmtu.probe_due(now)) is not None:
        probed.append(size)
        number += 1
        if size <= path_mtu:
            confirm(pmtu, number, now)
        else:
            now = lose(pmtu, number, now)
    return probed


def test_the_maximum_is_probed_first_and_one_ack_settles_it() -> None:
    pmtu = PathMtu(BASE, ETHERNET, 0.0)
    assert search(pmtu, ETHERNET) == [ETHERNET]
    assert pmtu.size == ETHERNET
    assert pmtu.get_timer() == PMTU_RAISE_S  # the next search, RFC 8899's PMTU_RAISE_TIMER


@pytest.mark.parametrize("path_mtu", [BASE, 1280, 1400, ETHERNET - 1])
def test_a_smaller_path_settles_just_below_its_mtu(path_mtu: int) -> None:
    pmtu = PathMtu(BASE, ETHERNET, 0.0)
    probed = search(pmtu, path_mtu)
    assert path_mtu - SEARCH_GRANULARITY <= pmtu.size <= path_mtu
    assert probed[:MAX_PROBES] == [ETHERNET] * MAX_PROBES  # a size fails only after MAX_PROBES


def test_one_lost_probe_does_not_fail_a_size() -> None:
    pmtu = PathMtu(BASE, ETHERNET, 0.0)
    now = lose(pmtu, 1, 0.0)
    assert confirm(pmtu, 2, now)
    assert pmtu.size == ETHERNET
    assert (pmtu.probes_sent, pmtu.probes_lost) == (2, 1)


def test_discovery_is_off_when_the_maximum_is_the_base() -> None:
    pmtu = PathMtu(BASE, BASE, 0.0)
    assert pmtu.probe_due(0.0) is None
    assert pmtu.get_timer() is None


def test_a_black_hole_needs_big_losses_and_a_small_ack() -> None:
    pmtu = PathMtu(BASE, ETHERNET, 0.0)
    search(pmtu, ETHERNET)
    for _ in range(BLACK_HOLE_LOSSES):  # big losses alone: congestion, not a black hole
        assert not pmtu.on_packet_lost(ETHERNET, 1.0)
    pmtu.on_packet_acked(ETHERNET)  # a big one arrived: the path carries the size
    pmtu.on_packet_acked(BASE)
    for _ in range(BLACK_HOLE_LOSSES - 1):
        assert not pmtu.on_packet_lost(ETHERNET, 1.0)
    assert pmtu.on_packet_lost(ETHERNET, 1.0)
    assert (pmtu.size, pmtu.black_holes) == (BASE, 1)
    assert pmtu.probe_due(1.0) == (BASE + ETHERNET) // 2  # searching below the size that failed


# ---------------------------------------------------------------- the probe's bytes


@pytest.mark.parametrize("insecure", [False, True])
@pytest.mark.parametrize("size", [BASE + 1, 1280, ETHERNET, JUMBO, 65_507])
@pytest.mark.parametrize("number", [0, 200, 70_000])
def test_a_padded_ping_fills_the_datagram_to_within_two_bytes(
    insecure: bool, size: int, number: int
) -> None:
    ack = AckFrame(3, ((0, 9),), 100, 50)
    ping = padded_ping([ack], number, size, insecure)
    payload = encode_frames([ack, ping])
    datagram = len(payload) + session_overhead(number, len(payload), insecure)
    assert size - 2 <= datagram <= size
    assert decode_frames(payload) == (ack, ping)


def test_ping_padding_worked_bytes() -> None:
    """The bytes PROTOCOL.md §14 shows: [2, bin8 of 3 zeros]; an unpadded PING stays [2]."""
    assert encode_frames([PingFrame(3)]) == bytes.fromhex("91 92 02 c4 03 000000")
    assert encode_frames([PingFrame()]) == bytes.fromhex("91 91 02")
    assert session_overhead(0, 100, insecure=False) <= SEALED_OVERHEAD
    # the 1,472-byte probes of packet 7 that PROTOCOL.md §14 spells out
    assert padded_ping([], 7, 1472, insecure=False) == PingFrame(1434)
    assert padded_ping([], 7, 1472, insecure=True) == PingFrame(1446)
    assert sealed_header(bytes(8), 7, 1456)[-4:] == bytes.fromhex("07 c5 05 b0")


# ---------------------------------------------------------------- one connection by hand


def test_a_backlog_sends_one_probe_whose_ack_raises_the_size_and_a_migration_resets_it() -> None:
    sink = ListSink()
    pair = Pair(ConnectionConfig(insecure=True), client_trace=sink)
    pair.handshake()
    for _ in range(200):  # a backlog: the client searches
        pair.client.send(bytes(300))
    pair.collect()
    sizes = sorted(len(datagram) for datagram in pair.to_server)
    assert sizes[-1] == ETHERNET and sizes[-2] <= BASE  # the probe, then data at the base
    probe = decode_datagram(max(pair.to_server, key=len))
    assert isinstance(probe, SessionPacket)
    (ping,) = decode_frames(probe.payload)
    assert isinstance(ping, PingFrame) and ping.padding > 0
    assert pair.client.stats().path_datagram_size == BASE  # not before its ACK
    pair.exchange()
    stats = pair.client.stats()
    assert (stats.path_datagram_size, stats.pmtu_probes_sent, stats.packets_lost) == (ETHERNET, 1, 0)
    names = check_events(sink.events)
    assert names["transport:packet_sent"] == stats.datagrams_sent
    probes = [
        event
        for event in sink.events
        if event["name"] == "transport:packet_sent"
        and any("padding" in frame for frame in event["data"]["frames"])
    ]
    assert [event["data"]["raw"]["length"] for event in probes] == [ETHERNET]
    pair.advance(pair.now + 0.05)  # pacing: the first burst spent the budget
    assert BASE < max(len(datagram) for datagram in pair.to_server) <= ETHERNET  # 4 messages


def test_a_migration_starts_again_from_the_base() -> None:
    pair = Pair()
    server = pair.handshake()
    for _ in range(200):
        server.send(bytes(300))
    pair.collect()
    pair.run(until=pair.now + 5.0)
    assert server.stats().path_datagram_size == ETHERNET
    pair.client_address = ("10.9.9.9", 4242)  # a NAT rebinding: maybe another path
    pair.client.send(b"from elsewhere")
    pair.collect()
    pair.exchange()
    assert server.stats().migrations == 1
    assert server.stats().path_datagram_size == BASE


# ---------------------------------------------------------------- transfers on the simulator

ONE_WAY_S = 0.02
RATE = 10e6 / 8  # bytes per second


def transfer(
    path_mtu: int | None,
    maximum: int,
    sizes: tuple[int, ...],
    seed: int = 1,
    until: float = 120.0,
) -> Harness:
    profile = LinkProfile(mtu=path_mtu, delay=ONE_WAY_S, rate=RATE)
    config = ConnectionConfig(max_path_datagram_size=maximum)
    scenario = Scenario(
        seed=seed, client_sizes=(sizes,), up=profile, down=profile, config=config, until=until
    )
    return Harness(scenario)


def finish(harness: Harness) -> None:
    harness.run()
    harness.check_events_well_formed()
    harness.check_exactly_once_in_order()
    harness.check_clean_close()


def set_mtu(harness: Harness, mtu: int) -> None:
    """Both directions of client 0's path now carry at most ``mtu`` bytes."""
    network = harness.network
    for src, dst in ((client_address(0), SERVER), (SERVER, client_address(0))):
        link = network.link(src, dst)
        link.profile = LinkProfile(mtu=mtu, delay=ONE_WAY_S, rate=RATE)


def client_stats(harness: Harness) -> ConnectionStats:
    connection = harness.clients[0].connection
    assert connection is not None
    return connection.stats()


def test_a_1280_path_settles_at_most_1280_and_loses_nothing() -> None:
    harness = transfer(1280, ETHERNET, (300,) * 4000, until=300.0)
    finish(harness)
    stats = client_stats(harness)
    assert 1280 - SEARCH_GRANULARITY <= stats.path_datagram_size <= 1280
    assert stats.packets_lost == 0  # the lost probes are no data loss
    assert stats.pmtu_probes_lost >= MAX_PROBES
    assert stats.loss_rate == 0.0  # ... and no congestion signal either
    up = harness.network.link(client_address(0), SERVER).stats
    # nothing but probes was too big (the last probe's fate may be pending at the end)
    assert stats.pmtu_probes_lost <= up.mtu_drops <= stats.pmtu_probes_sent


def test_a_jumbo_path_carries_jumbo_datagrams() -> None:
    sizes = (100_000,) * 20
    jumbo = transfer(9000, JUMBO, sizes)
    finish(jumbo)
    ethernet = transfer(1500, ETHERNET, sizes)
    finish(ethernet)
    assert client_stats(jumbo).path_datagram_size == JUMBO
    assert client_stats(ethernet).path_datagram_size == ETHERNET
    sent_jumbo = client_stats(jumbo).datagrams_sent
    sent_ethernet = client_stats(ethernet).datagrams_sent
    # a 1,472-byte datagram holds one full fragment, a jumbo one seven
    assert sent_jumbo * 5 < sent_ethernet
    assert client_stats(jumbo).packets_lost == 0


def test_a_path_that_shrinks_mid_transfer_stalls_under_three_rtos_and_loses_nothing() -> None:
    harness = transfer(1500, ETHERNET, (300,) * 6000)
    before: list[tuple[int, float]] = []
    change_at = 1.0

    def shrink() -> None:
        stats = client_stats(harness)
        before.append((stats.path_datagram_size, stats.rto))
        set_mtu(harness, 1280)

    harness.network.call_at(change_at, shrink)
    finish(harness)
    [(size_before, rto)] = before
    assert size_before == ETHERNET  # the drop hit a connection using full-size datagrams
    times = [t for t, event in harness.servers[0].events if isinstance(event, MessageReceived)]
    assert times[0] < change_at < times[-1]  # ... mid-transfer
    around = [t for t in times if t >= change_at - 1.0]
    stall = max(later - earlier for earlier, later in itertools.pairwise(around))
    assert stall <= 3 * rto
    stats = client_stats(harness)
    assert stats.pmtu_black_holes == 1
    assert 1280 - SEARCH_GRANULARITY <= stats.path_datagram_size <= 1280


@given(
    seed=st.integers(0, 2**16),
    mtus=st.lists(
        st.tuples(st.floats(0.05, 3.0), st.sampled_from([1200, 1250, 1280, 1400, 1500])),
        min_size=1,
        max_size=5,
    ),
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=300),
)
@sim_settings(ci_examples=15)
def test_every_message_arrives_once_in_order_while_the_mtu_changes(
    seed: int, mtus: list[tuple[float, int]], sizes: list[int]
) -> None:
    harness = transfer(1500, ETHERNET, tuple(sizes), seed=seed, until=300.0)
    at = 0.0
    for delay, mtu in mtus:
        at += delay
        harness.network.call_at(at, functools.partial(set_mtu, harness, mtu))
    finish(harness)
