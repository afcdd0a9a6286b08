"""Smoke tests of the benchmark scripts: they run, exit 0 and write well-formed JSON rows.

Figures are not checked (this box is shared and small); only that every case ran and reported.
The optional ``bench`` extra is not needed: the subsets chosen use none of its packages.
The benchmarks' own checks do run: a chat case must deliver every message both ways.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redisserver import require_redis
from services import find_executable

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
QUICK_THIN_MESSAGES = 3  # throughput.py's QUICK.thin_messages: chat-30's messages each way

THROUGHPUT_KEYS = {
    "case",
    "impl",
    "size",
    "loss",
    "status",
    "msgs_per_s",
    "mb_per_s",
    "goodput_ratio",
    "p50_ms",
    "p99_ms",
}
THROUGHPUT_NUMBERS = THROUGHPUT_KEYS - {"case", "impl", "status"} | {"retransmit_ratio"}
SIMULATED_NUMBERS = {
    "loss",
    "goodput_ratio",
    "retransmit_ratio",
    "latency_avg_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "wire_ratio",
    "latency_max_ms",
    "queue_drops",
    "datagrams_sent",
    "virtual_s",
    "wall_s",
}


def _run(script: str, args: list[str], output: Path, timeout: float) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--json", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = json.loads(output.read_text(encoding="utf-8"))
    assert isinstance(rows, list)
    assert rows
    return rows


def _assert_numbers(row: dict[str, Any], keys: set[str]) -> None:
    for key in keys:
        value = row[key]
        if value is None:
            continue
        assert isinstance(value, int | float), (key, value)
        assert not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
        assert value >= 0, (key, value)


def test_throughput_quick_runs_and_writes_rows(tmp_path: Path) -> None:
    only = "cpu,lossy,raw-udp,rudp,1024,0%"  # no optional package; one case through the proxy
    rows = _run("throughput.py", ["--quick", "--only", only], tmp_path / "rows.json", 120)
    assert {(row["case"], row["impl"]) for row in rows} == {
        ("cpu", "raw-udp"),
        ("cpu", "rudp"),
        ("lossy", "rudp"),
    }
    for row in rows:
        assert row.keys() >= THROUGHPUT_KEYS
        assert row["status"] == "ok", row
        assert row["size"] == 1024
        _assert_numbers(row, THROUGHPUT_NUMBERS)
        assert row["msgs_per_s"] > 0
        assert row["mb_per_s"] > 0
    lossy = next(row for row in rows if row["case"] == "lossy")
    assert lossy["loss"] == 0.0
    assert lossy["goodput_ratio"] is not None


def test_throughput_quick_pingpong_has_the_event_loop_floor_beside_rudp(tmp_path: Path) -> None:
    rows = _run(
        "throughput.py",
        ["--quick", "--only", "pingpong,raw-udp,asyncio-udp,rudp"],
        tmp_path / "rows.json",
        120,
    )
    assert [row["impl"] for row in rows] == ["raw-udp", "asyncio-udp", "rudp"]
    for row in rows:
        assert row["status"] == "ok", row
        _assert_numbers(row, THROUGHPUT_NUMBERS)
        assert row["delivered"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]


def test_throughput_quick_chat_30_delivers_every_message_both_ways(tmp_path: Path) -> None:
    rows = _run("throughput.py", ["--quick", "--only", "chat-30,rudp"], tmp_path / "rows.json", 180)
    (row,) = rows
    assert (row["case"], row["impl"], row["loss"], row["status"]) == ("chat-30", "rudp", 0.3, "ok")
    _assert_numbers(row, THROUGHPUT_NUMBERS | {"max_ms"})
    assert row["delivered"] == len(row["samples_ms"]) == 2 * QUICK_THIN_MESSAGES  # both ways
    assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] == max(row["samples_ms"])


def test_simulated_quick_congestion_reports_shares(tmp_path: Path) -> None:
    rows = _run("simulated.py", ["--quick", "--only", "congestion"], tmp_path / "rows.json", 180)
    assert [row["scenario"] for row in rows] == ["congestion-2", "congestion-4", "congestion-reno"]
    for row, flows in zip(rows, (2, 4, 2), strict=True):
        _assert_numbers(row, SIMULATED_NUMBERS | {"fairness"})
        assert len(row["shares"]) == flows
        assert sum(row["shares"]) == pytest.approx(1.0, abs=1e-3)
        assert 1 / flows <= row["fairness"] <= 1.0  # Jain's index is bounded so
        assert row["latency_p99_ms"] is None  # a backlog's wait is no latency


def test_simulated_quick_chat_writes_rows(tmp_path: Path) -> None:
    rows = _run("simulated.py", ["--quick", "--only", "chat"], tmp_path / "rows.json", 120)
    assert [row["scenario"] for row in rows] == ["chat", "chat-30", "chat-30-busy", "chat-burst"]
    for row in rows:
        assert row.keys() >= SIMULATED_NUMBERS
        _assert_numbers(row, SIMULATED_NUMBERS)


def test_history_pages_quick_writes_rows(tmp_path: Path) -> None:
    args = ["--lines", "3000", "--rooms", "2", "--fetches", "20", "--no-check"]
    args += ["--workdir", str(tmp_path)]
    rows = _run("history.py", args, tmp_path / "rows.json", 120)
    assert [row["kind"] for row in rows] == ["latest", "before", "after", "search"]
    for row in rows:
        _assert_numbers(row, {"p50_ms", "p99_ms", "max_ms"})
        assert row["lines"] == 3000 and row["fetches"] == 20



def test_fanout_quick_delivers_every_line_once(tmp_path: Path) -> None:
    """Ten clients in two load processes: every line reaches the nine others once, in order
    (the script exits 1 otherwise), and the server's CPU per delivery is a real figure."""
    (row,) = _run("fanout.py", ["--quick"], tmp_path / "fanout.json", 120)
    assert row["deliveries"] == row["lines_sent"] * (row["clients"] - 1) > 0
    assert row["lost"] == row["duplicated"] == row["out_of_order"] == 0
    _assert_numbers(row, {"server_cpu_s", "cpu_us_per_delivery", "p50_ms", "p99_ms"})
    assert row["server_cpu_s"] > 0
    assert row["target"] == "rudp"


def test_fanout_quick_against_inspircd_over_tls(tmp_path: Path) -> None:
    """The anchor path: a generated InspIRCd configuration, TLS verified against the throwaway
    certificate, the IRC load clients; every line reaches every other client once, in order.
    A real InspIRCd (``services``: skipped where absent, a failure in CI)."""
    find_executable("/usr/sbin/inspircd", "inspircd")
    args = ["--quick", "--targets", "inspircd-tls"]
    (row,) = _run("fanout.py", args, tmp_path / "fanout.json", 120)
    assert row["target"] == "inspircd-tls"
    assert row["deliveries"] == row["lines_sent"] * (row["clients"] - 1) > 0
    assert row["lost"] == row["duplicated"] == row["out_of_order"] == 0


def test_cluster_quick_delivers_every_line_once_and_fails_over(tmp_path: Path) -> None:
    """A lone server, 3 nodes and a kill -9 of one of them: every line reaches every other
    client once, in order (the script exits 1 otherwise), and the dead node's clients are back."""
    require_redis()
    rows = _run("cluster.py", ["--quick"], tmp_path / "cluster.json", 180)
    assert [row["kind"] for row in rows] == ["single", "cluster-3", "failover"]
    for row in rows:
        assert row["deliveries"] > 0
        assert row["lost"] == row["duplicated"] == row["out_of_order"] == 0
        _assert_numbers(row, {"deliveries_per_s", "p50_ms", "p99_ms"})
    for row in rows[:2]:
        _assert_numbers(row, {"cpu_us_per_delivery"})
    failover = rows[2]
    assert failover["back"] == failover["moved"] > 0
    _assert_numbers(failover, {"reconnect_p50_ms", "reconnect_p99_ms"})
