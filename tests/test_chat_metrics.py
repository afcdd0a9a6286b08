"""``--metrics``: a real server scraped over HTTP on 127.0.0.1, and the families it exposes."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redisserver import RedisServer
from test_chat_cli import client, processes, server

from rudp_chat.chat.metrics import RTT_BUCKETS_S, Snapshot, families

METRICS_READY = r"^Metrics: http://127\.0\.0\.1:(\d+)/metrics$"


def scrape(port: int) -> dict[str, list[Sample]]:
    """Every sample on the page, by metric family name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        assert page.status == 200
        text = page.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: dict[str, list[Sample]], family: str, name: str | None = None) -> float:
    """The one sample ``name`` (default: the family's own) of ``family``."""
    (found,) = [s.value for s in samples[family] if s.name == (name or family)]
    return found


def test_a_scrape_counts_users_lines_deliveries_and_rtts(tmp_path: Path) -> None:
    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3", "--metrics", "127.0.0.1:0")
        started.append(chat_server)
        metrics_port = int(chat_server.wait_line(METRICS_READY)[1])
        alice = client("alice", port)
        started.append(alice)
        alice.wait_line(r"^\*\*\* alice joined$")
        bob = client("bob", port)
        started.append(bob)
        alice.wait_line(r"^\*\*\* bob joined$")
        alice.type("one", "two", "three")
        bob.wait_line(r"^alice: three$")
        alice.wait_line(r"^alice: three$")

        page = scrape(metrics_port)
        assert value(page, "rudp_chat_users") == 2
        assert value(page, "rudp_chat_connections") == 2
        assert value(page, "rudp_chat_messages_received", "rudp_chat_messages_received_total") == 5
        assert value(page, "rudp_chat_deliveries", "rudp_chat_deliveries_total") == 6  # 3 × 2
        sent = value(page, "rudp_chat_messages_sent", "rudp_chat_messages_sent_total")
        assert sent > 6  # welcomes, joins and acks too
        everyone = [s for s in page["rudp_chat_rtt_seconds"] if s.labels.get("le") == "+Inf"]
        assert [s.value for s in everyone] == [2]
        assert value(page, "process_cpu_seconds", "process_cpu_seconds_total") > 0

        alice.type("exit")
        assert alice.exit_code() == 0
        bob.wait_line(r"^\*\*\* alice left \(left\)$")
        after = scrape(metrics_port)
        assert value(after, "rudp_chat_users") == 1
        for counter in ("retransmitted_fragments", "packets_lost", "messages_sent"):
            family = f"rudp_chat_{counter}"
            before = value(page, family, family + "_total")
            assert value(after, family, family + "_total") >= before  # alice's are kept


def test_the_rtt_histogram_buckets_the_connections_of_the_moment() -> None:
    figures = Snapshot(
        connections=4,
        users=3,
        messages_received=0,
        messages_sent=0,
        deliveries=0,
        retransmitted_fragments=0,
        packets_lost=0,
        rtts=(0.0005, 0.03, RTT_BUCKETS_S[-1] * 2),
    )
    (histogram,) = [f for f in families(figures) if f.name == "rudp_chat_rtt_seconds"]
    counts = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert counts["0.001"] == 1
    assert counts["0.025"] == 1
    assert counts["0.05"] == 2
    assert counts[f"{RTT_BUCKETS_S[-1]:g}"] == 2
    assert counts["+Inf"] == 3
    (total,) = [s.value for s in histogram.samples if s.name.endswith("_gsum")]
    assert total == sum(figures.rtts)


def test_a_cluster_node_adds_its_redis_figures(redis_server: RedisServer, tmp_path: Path) -> None:
    flags = ("--redis", redis_server.url, "--node", "a", "--metrics", "127.0.0.1:0")
    with processes() as started:
        node, port = server(tmp_path / "a.sqlite3", *flags)
        started.append(node)
        metrics_port = int(node.wait_line(METRICS_READY)[1])
        alice = client("alice", port)
        started.append(alice)
        alice.type("stored in redis")
        alice.wait_line(r"^alice: stored in redis$")  # shown once read back from the stream
        page = scrape(metrics_port)
        assert value(page, "rudp_chat_redis_up") == 1
        assert value(page, "rudp_chat_lines_published", "rudp_chat_lines_published_total") == 1
        assert value(page, "rudp_chat_lines_followed", "rudp_chat_lines_followed_total") == 1
        assert value(page, "rudp_chat_redis_round_trip_seconds") > 0
        assert value(page, "rudp_chat_pending_lines") == 0
