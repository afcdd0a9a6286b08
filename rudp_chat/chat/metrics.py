"""Prometheus metrics of a chat server (``--metrics HOST:PORT``), with ``prometheus_client``.

The figures are read, never kept, here: the server counts in plain integers
(:class:`~.server.Traffic`) and the transport keeps each connection's statistics. A scrape
arrives on prometheus_client's HTTP thread; it asks the event loop for a :class:`Snapshot` and
waits for it, so nothing the loop owns is read from another thread, and the per-message cost
of metrics is one integer increment whether anyone scrapes or not.

The RTT histogram is a gauge histogram: at each scrape, the smoothed RTT of every live
connection, bucketed (how the users' paths are now, not a count of samples since the start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from rudp_chat.core.state import State

from .failover import ServerAddress
from .server import ChatServer

if TYPE_CHECKING:  # only a cluster node has them, and only it needs redis
    from .cluster import ClusterStats

__all__ = ["RTT_BUCKETS_S", "MetricsCollector", "Snapshot", "serve_metrics", "snapshot"]

PREFIX: Final = "rudp_chat_"
SCRAPE_TIMEOUT_S: Final = 5.0  # a loop too busy to answer within this fails the scrape
RTT_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds: LAN (≤ 1 ms) to a congested mobile path (seconds)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A server's figures at one moment, taken on its event loop."""

    connections: int
    """Transport connections, handshaking and closing ones included."""
    users: int
    """Users joined on this server."""
    messages_received: int
    messages_sent: int
    deliveries: int
    """Live chat lines queued for a member (one line to ten members is ten)."""
    retransmitted_fragments: int
    packets_lost: int
    rtts: tuple[float, ...]
    """The smoothed RTT (seconds) of each established connection."""
    cluster: ClusterStats | None = None
    """A copy of the node's Redis figures; None for a server on its own."""


def snapshot(server: ChatServer, cluster: ClusterStats | None = None) -> Snapshot:
    """Read ``server``'s figures (and ``cluster``'s, a node's); call it on the server's event
    loop."""
    traffic = server.traffic
    retransmitted, lost = traffic.retransmitted_fragments, traffic.packets_lost
    rtts = []
    for connection in server.connections():
        stats = connection.stats()
        retransmitted += stats.retransmitted_fragments
        lost += stats.packets_lost
        if stats.state == State.OPEN.value:
            rtts.append(stats.smoothed_rtt)
    return Snapshot(
        connections=server.transport.stats().connections,
        users=len(server.room.names),
        messages_received=traffic.messages_received,
        messages_sent=traffic.messages_sent,
        deliveries=traffic.deliveries,
        retransmitted_fragments=retransmitted,
        packets_lost=lost,
        rtts=tuple(rtts),
        cluster=None if cluster is None else dataclasses.replace(cluster),
    )


class MetricsCollector(Collector):
    """Turns a :class:`Snapshot`, taken on ``loop`` at each scrape, into metric families."""

    def __init__(
        self,
        server: ChatServer,
        loop: asyncio.AbstractEventLoop,
        cluster: ClusterStats | None = None,
    ) -> None:
        self._server = server
        self._loop = loop
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        """Called by the HTTP thread; raises ``TimeoutError`` if the loop does not answer."""
        taken: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            try:
                taken.set_result(snapshot(self._server, self._cluster))
            except Exception as exc:  # reported to the scraper as a failed scrape
                taken.set_exception(exc)

        self._loop.call_soon_threadsafe(take)
        yield from families(taken.result(timeout=SCRAPE_TIMEOUT_S))


def families(figures: Snapshot) -> Iterator[Metric]:
    """The metric families of ``figures``."""
    yield GaugeMetricFamily(
        PREFIX + "connections", "Transport connections, handshaking ones included.",
        value=figures.connections,
    )  # fmt: skip
    yield GaugeMetricFamily(PREFIX + "users", "Users joined on this node.", value=figures.users)
    counters = (
        ("messages_received", "Chat messages received from clients."),
        ("messages_sent", "Chat messages queued for clients (acks, lines, notices)."),
        ("deliveries", "Live chat lines queued for a member: a line to ten counts ten."),
        ("retransmitted_fragments", "Fragments sent again (loss repair, probes, bundling)."),
        ("packets_lost", "Packets declared lost."),
    )
    for name, documentation in counters:
        yield CounterMetricFamily(PREFIX + name, documentation, value=getattr(figures, name))
    buckets = [(f"{bound:g}", sum(rtt <= bound for rtt in figures.rtts)) for bound in RTT_BUCKETS_S]
    yield GaugeHistogramMetricFamily(
        PREFIX + "rtt_seconds",
        "Smoothed RTT of each established connection, now.",
        buckets=[*buckets, ("+Inf", len(figures.rtts))],
        gsum_value=sum(figures.rtts),
    )
    if figures.cluster is not None:
        yield from _cluster_families(figures.cluster)


def _cluster_families(stats: ClusterStats) -> Iterator[Metric]:
    """A node's Redis figures, as the cluster module keeps them."""
    gauges = (
        ("redis_up", "1 if the last Redis command reached Redis.", float(stats.redis_up)),
        ("redis_round_trip_seconds", "The last commit's round trip (script, WAIT).",
         stats.round_trip_s),
        ("stream_lag_seconds", "From the newest delivered line's posting to its delivery here.",
         stats.stream_lag_s),
        ("pending_lines", "Lines said here waiting for Redis.", float(stats.pending)),
    )  # fmt: skip
    for name, documentation, figure in gauges:
        yield GaugeMetricFamily(PREFIX + name, documentation, value=figure)
    counters = (
        ("redis_commits", "Commit scripts run.", stats.commits),
        ("lines_published", "Lines this node stored in Redis.", stats.lines_published),
        ("lines_followed", "Lines this node read from the streams.", stats.lines_delivered),
        ("redis_errors", "Redis commands that failed (each retried).", stats.redis_errors),
    )
    for name, documentation, count in counters:
        yield CounterMetricFamily(PREFIX + name, documentation, value=count)


@contextmanager
def serve_metrics(
    address: ServerAddress, server: ChatServer, cluster: ClusterStats | None = None
) -> Iterator[ServerAddress]:
    """Serve ``server``'s metrics (a node's ``cluster`` figures too, and its process's CPU and
    memory) on ``http://address/`` while in the block; yields the address bound (port 0 picks
    one). Call it on the server's event loop. Raises ``OSError`` if the address cannot be
    bound."""
    registry = CollectorRegistry()
    registry.register(MetricsCollector(server, asyncio.get_running_loop(), cluster))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total and the like
    http, thread = start_http_server(address[1], address[0], registry=registry)
    try:
        host, port = http.server_address[:2]
        yield (str(host), int(port))
    finally:
        http.shutdown()
        http.server_close()
        thread.join()
