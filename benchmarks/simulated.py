"""Protocol figures measured on the virtual-time simulator: exact and repeatable for a seed.

Usage: python benchmarks/simulated.py [--json PATH] [--seed N] [--quick] [--only NAME]

Scenarios (targets from the project's issue):
- bulk-L%:       10 Mbit/s, 50 ms RTT, drop-tail queue of 1.5 x BDP, 1 KiB messages, 20 MB,
                 random loss L each way. Goodput >= 90 % of capacity x (1 - loss) up to 10 %,
                 >= 80 % at 20 %; retransmit_ratio <= loss / (1 - loss) + 0.05.
- congestion-N:  N rudp bulk flows (2, 4) sharing the bulk link's bottleneck and queue, no
                 random loss: the queue is the only drop point. Each flow's share of the payload
                 delivered over the last ``CONGESTION_MEASURE_S`` (after ``CONGESTION_WARMUP_S``),
                 and Jain's fairness index of the shares: >= 0.9.
- congestion-reno: one rudp flow and one Reno reference flow (``tests/reno.py``: Reno with
                 SACK-style loss recovery, as TCPs run it) on that bottleneck: rudp's share
                 <= 2 x Reno's.
- kcp-echo:      KCP's test.cpp: 10 % loss each way, one-way delay uniform in 30-62.5 ms,
                 a small message every 20 ms, 1,000 echoed. Echo time avg <= 95 ms, max <= 160 ms.
- chat:          10 messages/s of 200 B each way, 50 ms RTT, 5 % loss, 60 s.
                 One-way p50 <= 30 ms, p99 <= 50 ms.
- chat-30:       200 B every 2 s each way, 500 each, one-way 100 ms +- 50 ms, 30 % loss each
                 way. One-way p99 <= 300 ms, max <= 600 ms.
- chat-30-busy:  the same link, 200 B every 0.1 s each way, 600 each. p99 <= 300 ms.
- chat-burst:    200 B every 1 s each way, 500 each, one-way 50 ms, 10 % loss in bursts of
                 3 datagrams on average (Gilbert-Elliott). p99 <= 250 ms.
- pmtu-1500, pmtu-9000: bulk, 1 KiB messages, 100 MB, 100 Mbit/s, 50 ms RTT, MTU 1500
                 (datagrams up to 1472) or 9000 (up to 8972, max_path_datagram_size 8972):
                 goodput at 9000 above goodput at 1500.
- datagram:      unreliable datagrams (send_datagram) of 200 B every 20 ms from the client,
                 1,000, one-way 25 ms, 10 % loss each way. Each sent once (no retransmission),
                 delivery ratio = 1 - loss (+-0.03), latency = the one-way delay (p99 <= 26 ms).
- pmtu-blackhole: 300 B messages, 3 MB, 10 Mbit/s, 50 ms RTT; the path MTU drops from 1500 to
                 1280 half a second in, while datagrams of 1472 bytes are in use. Longest gap
                 between deliveries <= 3 x RTO (the RTO when the path shrank), nothing lost.
- lanes-hol:     the server sends a 200 B live line every 0.1 s (lane 0, priority 0) while the
                 client fetches 2 MB of history after 2 MB (lane 1, priority 1; 256 KiB receive
                 window); 100 Mbit/s, 50 ms RTT, 1 % loss each way (tests/lanehol.py). Live-line
                 p99 <= 1.2 x its p99 without the history. Also reported: the p99 with the
                 history on the live lines' lane (one FIFO).
- lanes-hol-10M: the same on a 10 Mbit/s bottleneck, which the history fills: no target (the
                 queue it keeps delays every line, whatever the sender schedules).

Latency is measured per message from ``send`` to delivery (for kcp-echo: to the echo's
delivery back at the sender). In bulk, every message is queued at t=0, so its latency
includes waiting in the send buffer. ``wire_ratio`` is the datagram bytes both links carried
(both directions, handshake and ACKs included) over the payload bytes delivered: at most 1.15
for bulk rows, at most 6 for the chat rows, whose redundancy buys latency with bandwidth.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from rudp_chat.core import (
    Connection,
    ConnectionConfig,
    DatagramReceived,
    Listener,
    ListenerConfig,
    MessageReceived,
)
from rudp_chat.sim import LinkProfile, Network
from rudp_chat.sim.endpoint import Endpoint, Recorded
from rudp_chat.sim.pair import CLIENT, SERVER, simulated_pair
from rudp_chat.sim.pair import SimulatedPair as Setup

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lanehol import BOTTLENECK_LINK, BULK_LANE, HOL_LINK, LIVE_LANE, run_hol  # lanes-hol rows
from reno import RenoReceiver, RenoSender  # the Reno reference flow of the tests

STAMP = struct.Struct(">I")  # message index, so latency needs no side table lookups by content
BULK_RATE = 10e6 / 8  # bytes per second: the bulk rows' bottleneck
BULK_ONE_WAY_S = 0.025
CONGESTION_WARMUP_S = 10.0  # virtual seconds before the shares are counted: slow start, probing
CONGESTION_MEASURE_S = 30.0  # virtual seconds the shares are counted over (quick: a third)
CONGESTION_REFILL_S = 0.05  # how often a rudp flow's send buffer is topped up: never runs dry
TARGET_FAIRNESS = 0.9  # Jain's index among rudp flows
TARGET_VS_RENO = 2.0  # rudp's share over a Reno flow's, at most


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    loss: float
    goodput_ratio: float
    retransmit_ratio: float
    latency_avg_ms: float | None
    """None in the congestion rows: a backlog's wait in the send buffer is no latency."""
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    wire_ratio: float
    queue_drops: int
    datagrams_sent: int
    virtual_s: float
    wall_s: float
    shares: list[float] | None = None
    """congestion: each flow's share of the payload delivered (rudp flows first, then Reno)."""
    fairness: float | None = None
    """congestion: Jain's index of the shares, (sum x)^2 / (n sum x^2); 1 is an equal split."""
    datagram_size: int = 0
    """The largest datagram the sender used at the end (path MTU discovery)."""
    stall_ms: float = 0.0
    """pmtu-blackhole: the longest gap between deliveries once the path shrank."""
    rto_ms: float = 0.0
    """pmtu-blackhole: the sender's RTO when the path shrank."""
    alone_p99_ms: float | None = None
    """lanes-hol: the live lines' p99 without history (the latency fields: beside it)."""
    fifo_p99_ms: float | None = None
    """lanes-hol: the live lines' p99 with the history on their own lane."""
    delivery_ratio: float | None = None
    """datagram: the share of the datagrams sent that arrived."""
    sent_once: bool | None = None
    """datagram: whether the sender sent each datagram exactly once."""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _setup(seed: int, up: LinkProfile, down: LinkProfile, config: ConnectionConfig) -> Setup:
    setup = simulated_pair(seed, up, down, config)
    setup.network.run(stop=lambda: setup.client.state.value == "open", until=30.0)
    return setup


def _row(
    scenario: str,
    loss: float,
    setup: Setup,
    latencies: list[float],
    payload: int,
    delivered: int,
    capacity: float | None,
    duration: float,
    wall: float,
) -> Row:
    stats = setup.client.stats()
    link = setup.network.link(CLIENT, SERVER).stats
    wire = link.bytes_sent + setup.network.link(SERVER, CLIENT).stats.bytes_sent
    goodput = payload / duration / capacity if capacity else 0.0
    return Row(
        scenario=scenario,
        loss=loss,
        goodput_ratio=round(goodput, 4),
        retransmit_ratio=round(stats.retransmitted_bytes / max(payload, 1), 4),
        latency_avg_ms=round(1000 * statistics.fmean(latencies), 2),
        latency_p50_ms=round(1000 * _percentile(latencies, 0.50), 2),
        latency_p99_ms=round(1000 * _percentile(latencies, 0.99), 2),
        latency_max_ms=round(1000 * max(latencies), 2),
        wire_ratio=round(wire / max(delivered, 1), 3),
        queue_drops=link.queue_drops,
        datagrams_sent=link.sent,
        virtual_s=round(duration, 3),
        wall_s=round(wall, 2),
        datagram_size=stats.path_datagram_size,
    )


def _bottleneck(
    loss: float, rate: float = BULK_RATE, mtu: int | None = None, datagram: int = 1200
) -> LinkProfile:
    """The bulk rows' link, one way: ``rate`` bytes/s, 25 ms, a drop-tail queue of 1.5 x BDP
    (in ``datagram``-sized packets); ``mtu`` the path's largest datagram (None: no limit)."""
    bdp_packets = rate * 2 * BULK_ONE_WAY_S / datagram
    queue = int(1.5 * bdp_packets) + 1
    return LinkProfile(loss=loss, delay=BULK_ONE_WAY_S, rate=rate, queue=queue, mtu=mtu)


def bulk(
    seed: int,
    loss: float,
    megabytes: float,
    scenario: str,
    *,
    rate: float = BULK_RATE,
    mtu: int | None = None,
    max_path_datagram_size: int = ConnectionConfig().max_path_datagram_size,
) -> Row:
    """``rate`` in bytes per second; ``mtu`` the path's largest datagram (None: no limit)."""
    up = down = _bottleneck(loss, rate, mtu, min(mtu or 1200, max_path_datagram_size))
    count = int(megabytes * 1e6 / 1024)
    config = ConnectionConfig(
        send_buffer_size=count * 2048,
        receive_window=8 * 1024 * 1024,
        max_path_datagram_size=max_path_datagram_size,
    )
    setup = _setup(seed, up, down, config)
    network = setup.network
    sent_at: list[float] = []
    arrived: list[float] = []

    def on_server(record: Recorded) -> None:
        if isinstance(record.event, MessageReceived):
            arrived.append(record.time)

    setup.server.on_event = on_server
    start = network.now
    filler = bytes(1024 - STAMP.size)
    for index in range(count):
        setup.client.send(STAMP.pack(index) + filler)
        sent_at.append(start)
    network.flush(CLIENT)
    wall = time.perf_counter()
    network.run(stop=lambda: len(arrived) == count, until=start + 600)
    wall = time.perf_counter() - wall
    duration = arrived[-1] - start
    latencies = [a - s for a, s in zip(arrived, sent_at, strict=True)]
    payload = count * 1024
    return _row(scenario, loss, setup, latencies, payload, payload, rate, duration, wall)


def _paced(
    seed: int,
    profile: LinkProfile,
    interval: float,
    count: int,
    size: int,
    echo: bool,
    scenario: str,
    loss: float,
) -> Row:
    """A message every ``interval`` from the client (and, unless echoing, from the server too)."""
    setup = _setup(seed, profile, profile, ConnectionConfig())
    network = setup.network
    start = network.now + 0.5  # let the connection settle after the handshake
    latencies: list[float] = []
    server_conn: list[Connection] = []
    padding = bytes(size - STAMP.size)

    def sent_time(data: bytes) -> float:
        index: int = STAMP.unpack_from(data)[0]
        return start + index * interval

    def on_server(record: Recorded) -> None:
        if not isinstance(record.event, MessageReceived):
            return
        if echo:
            record.connection.send(record.event.data)
        else:
            latencies.append(record.time - sent_time(record.event.data))

    def on_client(record: Recorded) -> None:
        if isinstance(record.event, MessageReceived):
            latencies.append(record.time - sent_time(record.event.data))

    setup.server.on_event = on_server
    setup.client_endpoint.on_event = on_client
    server_conn.extend(setup.server.connections)

    def sender(conn: Connection, index: int) -> Callable[[], None]:
        def send() -> None:
            conn.send(STAMP.pack(index) + padding)

        return send

    for index in range(count):
        network.call_at(start + index * interval, sender(setup.client, index))
        if not echo:
            network.call_at(start + index * interval, sender(server_conn[0], index))
    expected = count if echo else 2 * count
    wall = time.perf_counter()
    network.run(stop=lambda: len(latencies) == expected, until=start + count * interval + 120)
    wall = time.perf_counter() - wall
    if len(latencies) != expected:
        raise RuntimeError(f"{scenario}: {len(latencies)} of {expected} messages arrived")
    duration = network.now - start
    delivered = 2 * count * size  # both ways: each message, or each message and its echo
    return _row(scenario, loss, setup, latencies, count * size, delivered, None, duration, wall)


def kcp_echo(seed: int, count: int) -> Row:
    profile = LinkProfile.uniform_delay(0.030, 0.0625, loss=0.10)
    return _paced(seed, profile, 0.020, count, 16, True, "kcp-echo", 0.10)


def chat(seed: int, seconds: float) -> Row:
    profile = LinkProfile(loss=0.05, delay=0.025)
    return _paced(seed, profile, 0.1, int(seconds * 10), 200, False, "chat", 0.05)


def chat_30(seed: int, count: int, interval: float, scenario: str) -> Row:
    profile = LinkProfile(loss=0.30, delay=0.100, jitter=0.050)
    return _paced(seed, profile, interval, count, 200, False, scenario, 0.30)


def chat_burst(seed: int, count: int) -> Row:
    profile = LinkProfile(loss=0.10, loss_burst=3.0, delay=0.050)
    return _paced(seed, profile, 1.0, count, 200, False, "chat-burst", 0.10)


def datagram(seed: int, count: int) -> Row:
    """Unreliable datagrams, one every 20 ms from the client over a lossy link: how many arrive
    (1 - loss), how late (the one-way delay: nothing waits for a retransmission)."""
    loss, one_way, interval, size = 0.10, 0.025, 0.020, 200
    profile = LinkProfile(loss=loss, delay=one_way)
    setup = _setup(seed, profile, profile, ConnectionConfig())
    network, client = setup.network, setup.client
    start = network.now + 0.5
    latencies: list[float] = []

    def on_server(record: Recorded) -> None:
        if isinstance(record.event, DatagramReceived):
            index: int = STAMP.unpack_from(record.event.data)[0]
            latencies.append(record.time - (start + index * interval))

    setup.server.on_event = on_server
    padding = bytes(size - STAMP.size)

    def sender(index: int) -> Callable[[], None]:
        return lambda: client.send_datagram(STAMP.pack(index) + padding)

    for index in range(count):
        network.call_at(start + index * interval, sender(index))
    wall = time.perf_counter()
    network.run(until=start + count * interval + 2.0)
    wall = time.perf_counter() - wall
    delivered = len(latencies) * size
    duration = network.now - start
    row = _row("datagram", loss, setup, latencies, count * size, delivered, None, duration, wall)
    stats = client.stats()
    return replace(
        row,
        delivery_ratio=round(len(latencies) / count, 4),
        sent_once=stats.datagram_frames_sent == count and stats.retransmitted_bytes == 0,
    )


def pmtu_blackhole(seed: int, megabytes: float) -> Row:
    """A bulk transfer of small messages (several per datagram) over a path whose MTU drops
    from 1500 to 1280 half a second in: how long deliveries stall, and whether anything is lost."""
    rate, one_way, size = 10e6 / 8, 0.025, 300
    before = LinkProfile(delay=one_way, rate=rate, mtu=1500)
    count = int(megabytes * 1e6 / size)
    config = ConnectionConfig(send_buffer_size=count * 2 * size, receive_window=8 * 1024 * 1024)
    setup = _setup(seed, before, before, config)
    network = setup.network
    arrived: list[tuple[float, int]] = []

    def on_server(record: Recorded) -> None:
        if isinstance(record.event, MessageReceived):
            arrived.append((record.time, STAMP.unpack_from(record.event.data)[0]))

    setup.server.on_event = on_server
    start = network.now
    change_at = start + 0.5
    at_change: list[tuple[int, float]] = []

    def shrink() -> None:
        stats = setup.client.stats()
        at_change.append((stats.path_datagram_size, stats.rto))
        after = LinkProfile(delay=one_way, rate=rate, mtu=1280)
        network.set_link(CLIENT, SERVER, after)
        network.set_link(SERVER, CLIENT, after)

    network.call_at(change_at, shrink)
    filler = bytes(size - STAMP.size)
    for index in range(count):
        setup.client.send(STAMP.pack(index) + filler)
    network.flush(CLIENT)
    wall = time.perf_counter()
    network.run(stop=lambda: len(arrived) == count, until=start + 600)
    wall = time.perf_counter() - wall
    if [index for _, index in arrived] != list(range(count)):
        raise RuntimeError(f"pmtu-blackhole: {len(arrived)} of {count} arrived, or out of order")
    [(size_then, rto)] = at_change
    if size_then <= config.max_datagram_size:
        raise RuntimeError("pmtu-blackhole: the path shrank before a larger size was in use")
    times = [t for t, _ in arrived if t >= change_at] or [change_at]
    stall = max(b - a for a, b in zip([change_at, *times], times, strict=False))
    duration = arrived[-1][0] - start
    latencies = [t - start for t, _ in arrived]
    payload = count * size
    row = _row("pmtu-blackhole", 0.0, setup, latencies, payload, payload, rate, duration, wall)
    return replace(row, stall_ms=round(1000 * stall, 1), rto_ms=round(1000 * rto, 1))


def lanes_hol(seed: int, lines: int, link: LinkProfile, scenario: str) -> Row:
    """Live lines with history on a lane of its own, without history, and behind it (FIFO)."""
    wall = time.perf_counter()
    alone = run_hol(seed, lines, None, link)
    beside = run_hol(seed, lines, BULK_LANE, link)
    fifo = run_hol(seed, max(lines // 4, 10), LIVE_LANE, link)
    wall = time.perf_counter() - wall
    latencies = beside.latencies
    payload = beside.history_bytes + len(latencies) * 200
    return Row(
        scenario=scenario,
        loss=link.loss,
        goodput_ratio=round(beside.history_bytes / beside.virtual_s / (link.rate or 1), 4),
        retransmit_ratio=round(beside.retransmitted_bytes / max(payload, 1), 4),
        latency_avg_ms=round(1000 * statistics.fmean(latencies), 2),
        latency_p50_ms=round(1000 * _percentile(latencies, 0.50), 2),
        latency_p99_ms=round(1000 * _percentile(latencies, 0.99), 2),
        latency_max_ms=round(1000 * max(latencies), 2),
        wire_ratio=round(beside.wire_bytes / max(payload, 1), 3),
        queue_drops=beside.queue_drops,
        datagrams_sent=beside.datagrams,
        virtual_s=round(beside.virtual_s, 3),
        wall_s=round(wall, 2),
        alone_p99_ms=round(1000 * _percentile(alone.latencies, 0.99), 2),
        fifo_p99_ms=round(1000 * _percentile(fifo.latencies, 0.99), 2),
    )


LANES_HOL_FACTOR = 1.2  # live-line p99 beside the history, over its p99 alone, at most


LATENCY_TARGETS_MS: dict[str, tuple[float | None, float | None, float | None, float | None]] = {
    # scenario: (avg, p50, p99, max), None where the issue sets no bound
    "kcp-echo": (95, None, None, 160),
    "chat": (None, 30, 50, None),
    "chat-30": (None, None, 300, 600),
    "chat-30-busy": (None, None, 300, None),
    "chat-burst": (None, None, 250, None),
}
THIN_WIRE_RATIO = 6.0  # chat rows: redundancy may cost up to this many bytes per payload byte
BULK_WIRE_RATIO = 1.15  # bulk rows: headers and ACKs only, no redundancy


def congestion(seed: int, rudp: int, reno: int, measure_s: float, scenario: str) -> Row:
    """``rudp`` rudp bulk flows and ``reno`` Reno-like ones through one bottleneck (the bulk
    link without random loss), each from its own address; every flow's share of the payload
    delivered over ``measure_s`` after ``CONGESTION_WARMUP_S``, and Jain's index of them."""
    rng = random.Random(seed)
    network = Network(seed)
    rudp_clients = [(f"10.0.1.{index + 1}", 5000) for index in range(rudp)]
    reno_clients = [(f"10.0.2.{index + 1}", 5000) for index in range(reno)]
    reno_servers = [(SERVER[0], SERVER[1] + 1 + index) for index in range(reno)]
    directions = [(client, SERVER) for client in rudp_clients]
    directions += list(zip(reno_clients, reno_servers, strict=True))
    bottleneck = network.share_link(directions, _bottleneck(0.0))
    for src, dst in directions:  # the way back: the same delay, no bottleneck
        network.set_link(dst, src, LinkProfile(delay=BULK_ONE_WAY_S))
    config = ConnectionConfig()
    server = Endpoint(Listener(rng.randbytes, ListenerConfig(connection=config)))
    network.attach(SERVER, server)
    clients = [Connection.connect(SERVER, 0.0, rng.randbytes, config) for _ in rudp_clients]
    for address, client in zip(rudp_clients, clients, strict=True):
        network.attach(address, Endpoint(client))
    network.run(stop=lambda: all(c.state.value == "open" for c in clients), until=30.0)
    start = network.now
    counted_from = start + CONGESTION_WARMUP_S
    end = counted_from + measure_s
    delivered = dict.fromkeys(rudp_clients, 0)
    counted = dict.fromkeys(rudp_clients, 0)

    def on_server(record: Recorded) -> None:
        if isinstance(record.event, MessageReceived):
            flow = record.connection.peer_address
            delivered[flow] += len(record.event.data)
            if record.time >= counted_from:
                counted[flow] += len(record.event.data)

    server.on_event = on_server
    message = bytes(1024)

    def refill() -> None:
        for client in clients:
            while client.send_capacity >= len(message):
                client.send(message)
        if network.now + CONGESTION_REFILL_S < end:
            network.call_at(network.now + CONGESTION_REFILL_S, refill)

    network.call_at(start, refill)
    senders = [RenoSender(peer) for peer in reno_servers]
    receivers = [RenoReceiver() for _ in reno_servers]
    for address, sender in zip(reno_clients, senders, strict=True):
        network.attach(address, sender)
    for address, receiver in zip(reno_servers, receivers, strict=True):
        network.attach(address, receiver)
    reno_at_count: list[int] = []
    network.call_at(
        counted_from, lambda: reno_at_count.extend(r.delivered_bytes for r in receivers)
    )
    wall = time.perf_counter()
    network.run(until=end)
    wall = time.perf_counter() - wall
    payloads = [counted[flow] for flow in rudp_clients]
    payloads += [
        r.delivered_bytes - before for r, before in zip(receivers, reno_at_count, strict=True)
    ]
    total = sum(payloads)
    shares = [payload / total for payload in payloads]
    retransmitted = sum(client.stats().retransmitted_bytes for client in clients)
    wire = bottleneck.stats.bytes_sent + sum(
        network.link(dst, src).stats.bytes_sent for src, dst in directions
    )
    delivered_all = sum(delivered.values()) + sum(r.delivered_bytes for r in receivers)
    return Row(
        scenario=scenario,
        loss=0.0,
        goodput_ratio=round(total / measure_s / BULK_RATE, 4),
        retransmit_ratio=round(retransmitted / max(sum(delivered.values()), 1), 4),
        latency_avg_ms=None,
        latency_p50_ms=None,
        latency_p99_ms=None,
        latency_max_ms=None,
        wire_ratio=round(wire / max(delivered_all, 1), 3),
        queue_drops=bottleneck.stats.queue_drops,
        datagrams_sent=bottleneck.stats.sent,
        virtual_s=round(network.now - start, 3),
        wall_s=round(wall, 2),
        shares=[round(share, 4) for share in shares],
        fairness=round(total**2 / (len(payloads) * sum(p * p for p in payloads)), 4),
    )


def _above(value: float | None, bound: float) -> bool:
    """Whether a figure misses its upper ``bound`` (a missing figure misses it too)."""
    return value is None or value > bound


def verdict(row: Row) -> str:
    """The issue's targets for this scenario, checked: 'ok' or what missed."""
    misses: list[str] = []
    if row.scenario.startswith("bulk"):
        floor = (0.9 if row.loss <= 0.10 else 0.8) * (1 - row.loss)
        if row.goodput_ratio < floor:
            misses.append(f"goodput<{floor:.3f}")
        if row.retransmit_ratio > row.loss / (1 - row.loss) + 0.05:
            misses.append("retransmits")
        if row.wire_ratio > BULK_WIRE_RATIO:
            misses.append("wire_ratio")
    elif row.scenario == "congestion-reno" and row.shares:
        if row.shares[0] > TARGET_VS_RENO * row.shares[1]:
            misses.append(f"rudp>{TARGET_VS_RENO:g}x reno")
    elif row.scenario.startswith("congestion"):
        if row.fairness is None or row.fairness < TARGET_FAIRNESS:
            misses.append(f"fairness<{TARGET_FAIRNESS}")
    elif row.scenario == "lanes-hol-10M":
        return "no target"
    elif row.scenario == "lanes-hol":
        if row.alone_p99_ms is None or _above(
            row.latency_p99_ms, LANES_HOL_FACTOR * row.alone_p99_ms
        ):
            misses.append(f"p99>{LANES_HOL_FACTOR:g}x alone")
    elif row.scenario == "datagram":
        if row.delivery_ratio is None or abs(row.delivery_ratio - (1 - row.loss)) > 0.03:
            misses.append("delivery!=1-loss")
        if _above(row.latency_p99_ms, 26):
            misses.append("p99>26")
        if not row.sent_once:
            misses.append("resent")
    elif row.scenario == "pmtu-blackhole":  # what was in flight at 1472 B goes again
        if row.stall_ms > 3 * row.rto_ms:
            misses.append("stall>3xRTO")
    elif row.scenario in LATENCY_TARGETS_MS:
        measured = (row.latency_avg_ms, row.latency_p50_ms, row.latency_p99_ms, row.latency_max_ms)
        for name, value, bound in zip(
            ("avg", "p50", "p99", "max"), measured, LATENCY_TARGETS_MS[row.scenario], strict=True
        ):
            if bound is not None and _above(value, bound):
                misses.append(f"{name}>{bound:g}")
        if row.scenario.startswith("chat") and row.wire_ratio > THIN_WIRE_RATIO:
            misses.append("wire_ratio")
    return "ok" if not misses else "MISS " + ",".join(misses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smaller transfers (for smoke tests)")
    parser.add_argument("--only", metavar="NAME", help="run only scenarios starting with NAME")
    args = parser.parse_args(argv)
    megabytes = 2.0 if args.quick else 20.0
    runs: list[tuple[str, Callable[[], Row]]] = []

    def pmtu_run(mtu: int, maximum: int) -> Callable[[], Row]:
        return lambda: bulk(
            args.seed,
            0.0,
            5 * megabytes,  # 100 Mbit/s: long enough that startup does not dominate
            f"pmtu-{mtu}",
            rate=100e6 / 8,
            mtu=mtu,
            max_path_datagram_size=maximum,
        )

    for loss in (0.0, 0.01, 0.05, 0.10, 0.20):
        name = f"bulk-{round(loss * 100)}%"
        runs.append((name, partial(bulk, args.seed, loss, megabytes, name)))
    window = CONGESTION_MEASURE_S / 3 if args.quick else CONGESTION_MEASURE_S
    for rudp, reno in ((2, 0), (4, 0), (1, 1)):
        name = f"congestion-{rudp}" if not reno else "congestion-reno"
        runs.append((name, partial(congestion, args.seed, rudp, reno, window, name)))
    runs.append(("kcp-echo", lambda: kcp_echo(args.seed, 200 if args.quick else 1000)))
    runs.append(("chat", lambda: chat(args.seed, 10 if args.quick else 60)))
    runs.append(("chat-30", lambda: chat_30(args.seed, 50 if args.quick else 500, 2.0, "chat-30")))
    runs.append(
        (
            "chat-30-busy",
            lambda: chat_30(args.seed, 100 if args.quick else 600, 0.1, "chat-30-busy"),
        )
    )
    runs.append(("chat-burst", lambda: chat_burst(args.seed, 100 if args.quick else 500)))
    runs.append(("datagram", lambda: datagram(args.seed, 200 if args.quick else 1000)))
    for mtu, maximum in ((1500, 1472), (9000, 8972)):
        runs.append((f"pmtu-{mtu}", pmtu_run(mtu, maximum)))
    runs.append(("pmtu-blackhole", lambda: pmtu_blackhole(args.seed, 1.2 if args.quick else 3.0)))
    hol_lines = 50 if args.quick else 1000
    for name, link in (("lanes-hol", HOL_LINK), ("lanes-hol-10M", BOTTLENECK_LINK)):
        runs.append((name, partial(lanes_hol, args.seed, hol_lines, link, name)))
    rows: list[Row] = []
    header = f"{'scenario':<12} {'loss':>5} {'goodput':>8} {'retx':>6} {'avg ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'wire':>6} {'qdrop%':>7} {'wall s':>7}  target"
    print(header)
    for name, run in runs:
        if args.only and not name.startswith(args.only):
            continue
        row = run()
        rows.append(row)
        latencies = " ".join(
            f"{'-':>8}" if value is None else f"{value:>8.1f}"
            for value in (row.latency_avg_ms, row.latency_p50_ms, row.latency_p99_ms,
                          row.latency_max_ms)
        )  # fmt: skip
        shares = ""
        if row.shares is not None:
            shares = f"  shares {', '.join(f'{share:.3f}' for share in row.shares)}, "
            shares += f"Jain {row.fairness:.3f}"
        print(
            f"{row.scenario:<12} {row.loss:>5.2f} {row.goodput_ratio:>8.3f} {row.retransmit_ratio:>6.3f} "
            f"{latencies} {row.wire_ratio:>6.2f} {100 * row.queue_drops / row.datagrams_sent:>7.2f} "
            f"{row.wall_s:>7.1f}  {verdict(row)}{shares}",
            flush=True,
        )
        if row.alone_p99_ms is not None:
            print(
                f"{'':<12} live p99 {row.alone_p99_ms} ms without history, "
                f"{row.latency_p99_ms} ms beside it, {row.fifo_p99_ms} ms behind it (one lane)",
                flush=True,
            )
        if row.delivery_ratio is not None:
            once = "each sent once" if row.sent_once else "some sent more than once"
            print(f"{'':<12} delivery ratio {row.delivery_ratio:.3f}, {once}", flush=True)
        if row.scenario.startswith("pmtu"):
            print(
                f"{'':<12} datagrams up to {row.datagram_size} B, {row.datagrams_sent} sent"
                + (f", stall {row.stall_ms} ms, RTO {row.rto_ms} ms" if row.rto_ms else ""),
                flush=True,
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(row) for row in rows], handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
