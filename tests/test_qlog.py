"""qlog traces: every record a connection writes holds what the qlog main schema and the QUIC
event definitions require (PROTOCOL.md §13), on virtual time, on real sockets and from the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from simharness import Pair
from test_chat_cli import client, processes, server

from rudp_chat.aio import connect, serve
from rudp_chat.aio.qlog import FLUSH_BYTES, QLOG_VERSION, RECORD_SEPARATOR, QlogDirectory
from rudp_chat.core import records
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.congestion import Mode
from rudp_chat.core.state import Role, State
from rudp_chat.core.trace import EVENT_NAMES, PACKET_TYPES

Record = dict[str, Any]
CONNECTION_STATE = "connectivity:connection_state_updated"
CONGESTION_STATE = "recovery:congestion_state_updated"
STATES = {state.value for state in State}
MODES = {mode.value for mode in Mode}
FRAME_FIELDS: dict[str, dict[str, type]] = {
    "data": {"seq": int, "message_id": int, "length": int},
    "ack": {"acked_ranges": list, "ack_delay": float, "cumulative": int, "window": int},
    "ping": {},
    "connection_close": {"error_code": int, "final_seq": int, "reason": str},
    "datagram": {"length": int, "lane": int},
}
METRICS: dict[str, type] = {
    "min_rtt": float,
    "smoothed_rtt": float,
    "latest_rtt": float,
    "rtt_variance": float,
    "pto_count": int,
    "congestion_window": int,
    "bytes_in_flight": int,
    "pacing_rate": int,
}
UNNUMBERED = {"retry", "stateless_reset"}  # packet types that carry no packet number


class ListSink:
    """A trace sink that keeps the events as the records a file would hold."""

    def __init__(self) -> None:
        self.events: list[Record] = []

    def event(self, now: float, name: str, data: dict[str, Any]) -> None:
        self.events.append({"time": now * 1000, "name": name, "data": data})


def _is(value: object, kind: type) -> bool:
    """JSON's numbers: an int is a float too, a bool is neither."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _fields(data: Record, required: dict[str, type], where: str) -> None:
    for key, kind in required.items():
        assert key in data and _is(data[key], kind), f"{where}: {key} missing or not {kind}"


def _header(packet: Record, where: str) -> None:
    header = packet["header"]
    assert header["packet_type"] in set(PACKET_TYPES.values()), where
    if header["packet_type"] not in UNNUMBERED:
        _fields(header, {"packet_number": int}, where)


def check_event(event: Record) -> None:
    """One event record: ``time``, a documented ``name``, and the data fields that name requires."""
    _fields(event, {"time": float, "name": str, "data": dict}, "event")
    name, data = event["name"], event["data"]
    assert name in EVENT_NAMES, name
    if name == "connectivity:connection_started":
        _fields(data, {"src_cid": str, "dst_cid": str, "dst_ip": str, "dst_port": int}, name)
    elif name == "connectivity:connection_state_updated":
        assert data["new"] in STATES and data.get("old", data["new"]) in STATES, data
    elif name in ("transport:packet_sent", "transport:packet_received"):
        _header(data, name)
        _fields(data["raw"], {"length": int}, name)
        for frame in data["frames"]:
            _fields(frame, FRAME_FIELDS[frame["frame_type"]], frame["frame_type"])
            for first, last in frame.get("acked_ranges", ()):
                assert 0 <= first <= last, frame
    elif name == "recovery:packet_lost":
        _header(data, name)
    elif name == "recovery:metrics_updated":
        assert data and set(data) <= set(METRICS), data
        _fields(data, {key: METRICS[key] for key in data}, name)
    elif name == "recovery:congestion_state_updated":
        assert data["new"] in MODES and data.get("old", data["new"]) in MODES, data
    else:  # security:key_updated
        assert data["key_type"] in ("client_1rtt_secret", "server_1rtt_secret"), data
        assert data["trigger"] in ("tls", "local_update", "remote_update"), data
        _fields(data, {"generation": int}, name)


def check_events(events: list[Record]) -> Counter[str]:
    """Every event well formed, times never going back; returns how many of each name."""
    for event in events:
        check_event(event)
    times = [event["time"] for event in events]
    assert times == sorted(times), "times go back"
    assert events[0]["name"] == "connectivity:connection_started"
    return Counter(event["name"] for event in events)


def read_qlog(path: Path) -> tuple[Record, list[Record]]:
    """Parse a JSON-SEQ file (RFC 7464) and check its header; returns it and the events."""
    raw = path.read_bytes()
    assert raw.startswith(RECORD_SEPARATOR) and raw.endswith(b"\n")
    records_ = [json.loads(chunk) for chunk in raw.split(RECORD_SEPARATOR)[1:]]
    header, events = records_[0], records_[1:]
    assert header["qlog_version"] == QLOG_VERSION
    assert header["qlog_format"] == "JSON-SEQ"
    trace = header["trace"]
    assert trace["vantage_point"]["type"] in ("client", "server")
    common = trace["common_fields"]
    assert _is(common["reference_time"], float) and common["time_format"] == "relative"
    return header, events


# -------------------------------------------------------------- virtual time


def test_a_lossy_traced_connection_on_virtual_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event a lossy transfer with key rotations produces is well formed, and the trace
    agrees with the connection's own counters."""
    monkeypatch.setattr(records, "KEY_EPOCH_BITS", 3)  # a new key every 8 packets
    client_sink, server_sink = ListSink(), ListSink()
    pair = Pair(client_trace=client_sink, server_trace=lambda: server_sink)
    pair.handshake()
    messages = 20
    for _ in range(messages):
        pair.client.send(bytes(3_000))
    pair.collect()
    delivered = 0
    while len(pair.received_by_server()) < messages:
        assert pair.now < 10, "the transfer stalled"
        while pair.to_server:
            delivered += 1
            if delivered % 5 == 0:
                pair.to_server.pop(0)  # every fifth datagram to the server is lost
            else:
                pair.deliver_to_server()
        pair.exchange()
        pair.advance(pair.now + 0.01)
    pair.client.close()
    pair.run(until=pair.now + 30)
    assert pair.client.is_closed and pair.server is not None and pair.server.is_closed

    names = check_events(client_sink.events)
    stats = pair.client.stats()
    assert names["transport:packet_sent"] == stats.datagrams_sent
    assert names["recovery:packet_lost"] == stats.packets_lost > 0
    assert names["recovery:metrics_updated"] > 0
    sent_generations = [
        e["data"]["generation"]
        for e in client_sink.events
        if e["name"] == "security:key_updated" and e["data"]["trigger"] == "local_update"
    ]
    assert sent_generations == list(range(1, len(sent_generations) + 1))
    assert len(sent_generations) >= stats.datagrams_sent // 8 - 1
    modes = [e["data"]["new"] for e in client_sink.events if e["name"] == CONGESTION_STATE]
    assert modes[0] == Mode.STARTUP.value
    states = [e["data"]["new"] for e in client_sink.events if e["name"] == CONNECTION_STATE]
    assert states == ["connecting", "open", "closing", "draining", "closed"]

    server_names = check_events(server_sink.events)
    server_stats = pair.server.stats()
    assert server_names["transport:packet_received"] == server_stats.datagrams_received
    server_states = [e["data"]["new"] for e in server_sink.events if e["name"] == CONNECTION_STATE]
    assert server_states == ["open", "closing", "draining", "closed"]
    remote = [e for e in server_sink.events if e["data"].get("trigger") == "remote_update"]
    assert remote and all(e["data"]["key_type"] == "client_1rtt_secret" for e in remote)


def test_an_insecure_connection_has_no_key_events() -> None:
    sink = ListSink()
    pair = Pair(ConnectionConfig(insecure=True), client_trace=sink)
    pair.handshake()
    pair.client.send(b"hello")
    pair.run(until=1.0)
    names = check_events(sink.events)
    assert names["transport:packet_sent"] > 0 and names["security:key_updated"] == 0


# ------------------------------------------------------------- the writer


def test_the_writer_bounds_its_buffer_and_closes_with_the_connection(tmp_path: Path) -> None:
    directory = QlogDirectory(tmp_path / "traces", Role.CLIENT)
    trace = directory.open()
    started = {"src_cid": "00ff", "dst_cid": "", "dst_ip": "127.0.0.1", "dst_port": 1}
    trace.event(5.0, "connectivity:connection_started", started)
    path = tmp_path / "traces" / "00ff_client.sqlog"
    assert trace.path == path and not path.exists()  # buffered, not yet written
    padding = {"reason": "x" * 1_000}
    for index in range(FLUSH_BYTES // 1_000 + 1):
        trace.event(5.0 + index / 1000, "transport:packet_sent", padding)
        assert trace._buffered < FLUSH_BYTES
    assert path.exists()  # the buffer reached its bound and was written
    trace.event(6.0, "connectivity:connection_state_updated", {"new": "closed"})
    assert trace.closed
    trace.event(7.0, "transport:packet_sent", padding)  # after closed: ignored
    header, events = read_qlog(path)
    assert header["trace"]["common_fields"]["group_id"] == "00ff"
    assert events[0]["time"] == 0 and events[-1] == {
        "time": 1000.0,
        "name": "connectivity:connection_state_updated",
        "data": {"new": "closed"},
    }
    assert len(events) == FLUSH_BYTES // 1_000 + 3


def test_a_failed_write_stops_tracing_only(tmp_path: Path) -> None:
    directory = QlogDirectory(tmp_path, Role.SERVER)
    trace = directory.open()
    trace.event(0.0, "connectivity:connection_started", {"dst_cid": "ab", "src_cid": "cd"})
    (tmp_path / "ab_server.sqlog").mkdir()  # the file cannot be opened for appending
    trace.flush()
    assert trace.closed and isinstance(trace.error, IsADirectoryError)
    directory.close()


# ------------------------------------------------------------ real sockets


def test_a_real_connection_writes_one_valid_trace_per_end(tmp_path: Path) -> None:
    config = ConnectionConfig(qlog=str(tmp_path), heartbeat_interval=0.2, idle_timeout=4)

    async def run() -> tuple[int, int]:
        server = await serve("127.0.0.1", 0, config=ListenerConfig(connection=config))
        async with server:
            conn = await connect("127.0.0.1", server.address[1], config=config)
            accepted = await server.accept()
            for index in range(50):
                await conn.send(b"%d" % index * 500)
            for _ in range(50):
                await accepted.recv()
            await conn.close()
            await accepted.wait_closed()
            return conn.stats().datagrams_sent, accepted.stats().datagrams_received

    client_sent, server_received = asyncio.run(run())
    files = sorted(tmp_path.iterdir())
    assert [path.name.split("_")[1] for path in files] == ["client.sqlog", "server.sqlog"]
    assert files[0].name.split("_")[0] == files[1].name.split("_")[0]  # the client's id
    for path, role in zip(files, ("client", "server"), strict=True):
        header, events = read_qlog(path)
        assert header["trace"]["vantage_point"]["type"] == role
        names = check_events(events)
        if role == "client":
            assert names["transport:packet_sent"] == client_sent
        else:
            assert names["transport:packet_received"] == server_received
        assert names["security:key_updated"] == 2  # the handshake's keys, one per direction


def test_the_cli_writes_traces_with_qlog(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    with processes() as started:
        chat_server, port = server(None, "--qlog", str(traces))
        started.append(chat_server)
        alice = client("alice", port, "--qlog", str(traces))
        started.append(alice)
        alice.wait_line(r"^\*\*\* alice joined$")
        alice.type("hello", "exit")
        assert alice.exit_code() == 0
        chat_server.process.terminate()
        assert chat_server.exit_code() == 0
    roles = Counter(path.name.split("_")[1] for path in traces.iterdir())
    assert roles == {"client.sqlog": 1, "server.sqlog": 1}
    for path in traces.iterdir():
        _, events = read_qlog(path)
        check_events(events)


def test_the_trace_cost_benchmark_runs() -> None:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "trace_cost.py"
    result = subprocess.run(
        [sys.executable, str(script), "--megabytes", "0.2", "--rounds", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    modes = [line.split(":")[0].strip() for line in result.stdout.splitlines()]
    assert modes == ["off", "null sink", "qlog files"], result.stdout
