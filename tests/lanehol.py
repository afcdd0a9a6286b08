"""Head-of-line blocking between lanes, on the virtual-time simulator.

The chat's case: a server sends live lines (200 B, ten a second) to a client that keeps
fetching 2 MB of history (scrollback pages), each fetch starting when the last one arrived.
The live lines' latency is measured with no history at all, with the history on its own
low-priority lane, and with the history on the live lines' lane (one FIFO, the old way).
``tests/test_lanes.py`` checks the issue's bound on it; ``benchmarks/simulated.py`` reports
it as the ``lanes-hol`` row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import partial
from typing import Final

from rudp_chat.core import (
    ConnectionConfig,
    LaneConfig,
    MessageReceived,
)
from rudp_chat.sim import LinkProfile
from rudp_chat.sim.endpoint import Recorded
from rudp_chat.sim.pair import CLIENT, SERVER, simulated_pair

__all__ = [
    "BOTTLENECK_LINK",
    "BULK_LANE",
    "HOL_CONFIG",
    "HOL_LINK",
    "LANES",
    "LIVE_LANE",
    "HolRun",
    "run_hol",
]

LIVE_LANE: Final = 0
BULK_LANE: Final = 1
LANES: Final = (LaneConfig(priority=0), LaneConfig(priority=1))
LINE_BYTES: Final = 200
LINE_INTERVAL_S: Final = 0.1
PAGE_BYTES: Final = 50_000  # one history page
FETCH_PAGES: Final = 40  # 2 MB a fetch, the scrollback
SETTLE_S: Final = 0.5  # after the handshake, before the first line
HOL_LINK: Final = LinkProfile(loss=0.01, delay=0.025, rate=100e6 / 8, queue=625)
"""One way: 100 Mbit/s, 25 ms, a drop-tail queue of 1.5 x BDP, 1 % random loss."""
BOTTLENECK_LINK: Final = LinkProfile(loss=0.01, delay=0.025, rate=10e6 / 8, queue=63)
"""The same at 10 Mbit/s: there the history fills the bottleneck's queue, which every live
line then crosses too (no sender-side scheduling removes that wait)."""
HOL_CONFIG: Final = ConnectionConfig(
    lanes=LANES, max_message_size=64 * 1024, receive_window=256 * 1024
)
"""A chat-sized receive window (the chat sizes its own smaller still): the history is
flow-controlled to about 40 Mbit/s at this RTT, below the link's rate."""
STAMP: Final = struct.Struct(">I")  # a line's index, first in its bytes
HISTORY: Final = b"H"  # a page's first byte (a line starts with its index's high byte, 0)


@dataclass(frozen=True, slots=True)
class HolRun:
    """What one run measured."""

    latencies: list[float]
    """Seconds from each live line's ``send`` to its delivery, in line order."""
    history_bytes: int
    """History delivered to the client while the lines ran."""
    retransmitted_bytes: int
    """The server's retransmitted payload bytes."""
    wire_bytes: int
    """Datagram bytes both directions carried, handshake and ACKs included."""
    datagrams: int
    """Datagrams the server sent."""
    queue_drops: int
    """Of those, dropped by the bottleneck's full queue."""
    virtual_s: float
    """From the first line to the last line's delivery."""


def run_hol(
    seed: int,
    lines: int,
    bulk_lane: int | None,
    link: LinkProfile = HOL_LINK,
    config: ConnectionConfig = HOL_CONFIG,
) -> HolRun:
    """``lines`` live lines on ``LIVE_LANE`` while history streams on ``bulk_lane`` (None: no
    history). Raises ``RuntimeError`` if a line is lost or delivered out of order."""
    pair = simulated_pair(seed, link, link, config)
    network, client, server = pair.network, pair.client, pair.server
    network.run(stop=lambda: client.state.value == "open" and bool(server.connections), until=30)
    [connection] = server.connections
    start = network.now + SETTLE_S
    arrived: list[float] = []
    history = [0, 0]  # bytes delivered, pages of the current fetch

    def fetch() -> None:
        for _ in range(FETCH_PAGES):
            connection.send(HISTORY + bytes(PAGE_BYTES - 1), bulk_lane or 0)

    def on_client(record: Recorded) -> None:
        event = record.event
        if not isinstance(event, MessageReceived):
            return
        if event.data[:1] == HISTORY:
            history[0] += len(event.data)
            history[1] += 1
            if history[1] == FETCH_PAGES and len(arrived) < lines:
                history[1] = 0
                network.call_at(record.time, fetch)  # scroll back further
            return
        if event.lane != LIVE_LANE or STAMP.unpack_from(event.data)[0] != len(arrived):
            raise RuntimeError(f"line {len(arrived)} out of order: {event!r:.80}")
        arrived.append(record.time)

    pair.client_endpoint.on_event = on_client

    def line(index: int) -> None:
        connection.send(STAMP.pack(index) + bytes(LINE_BYTES - STAMP.size), LIVE_LANE)

    if bulk_lane is not None:
        network.call_at(start - SETTLE_S / 2, fetch)
    for index in range(lines):
        network.call_at(start + index * LINE_INTERVAL_S, partial(line, index))
    network.run(stop=lambda: len(arrived) == lines, until=start + lines * LINE_INTERVAL_S + 600)
    if len(arrived) != lines:
        raise RuntimeError(f"{len(arrived)} of {lines} lines arrived")
    latencies = [t - (start + i * LINE_INTERVAL_S) for i, t in enumerate(arrived)]
    down, up = network.link(SERVER, CLIENT).stats, network.link(CLIENT, SERVER).stats
    return HolRun(
        latencies,
        history[0],
        connection.stats().retransmitted_bytes,
        down.bytes_sent + up.bytes_sent,
        down.sent,
        down.queue_drops,
        arrived[-1] - start,
    )
