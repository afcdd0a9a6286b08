"""Lanes: the DATA lane field, the sender's scheduler, per-lane reassembly, and what they are
for: no head-of-line blocking between independent flows (PROTOCOL.md §2.3, §12)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lanehol import BULK_LANE, HOL_LINK, LIVE_LANE, run_hol
from simharness import Pair, sim_settings
from test_benchmark_smoke import SIMULATED_NUMBERS, _assert_numbers, _run

from rudp_chat.aio import ReliableConnection, connect, serve
from rudp_chat.core import (
    ConnectionConfig,
    LaneConfig,
    ListenerConfig,
    MessageReceived,
)
from rudp_chat.core.codec import (
    DATA_FRAME_OVERHEAD,
    LANE_FIELD_SIZE,
    decode_frames,
    encode_frames,
    fragment_cost,
    fragment_size,
)
from rudp_chat.core.errors import (
    FrameError,
    LocalProtocolError,
    PeerProtocolError,
    SendBufferFullError,
)
from rudp_chat.core.events import ConnectionTerminated, TerminationReason
from rudp_chat.core.frames import MAX_LANES, DataFrame, ErrorCode
from rudp_chat.core.lanes import WINDOW_RESERVE_FRAGMENTS, LaneScheduler
from rudp_chat.core.reassembly import Reassembly
from rudp_chat.core.receiving import Receiver
from rudp_chat.core.sendbuffer import SEND_RESERVE_DIVISOR, SendBuffer
from rudp_chat.sim import LinkProfile
from rudp_chat.sim.endpoint import Recorded
from rudp_chat.sim.pair import CLIENT, SERVER, simulated_pair

TWO_LANES = (LaneConfig(priority=0), LaneConfig(priority=1))
LANED = ConnectionConfig(insecure=True, lanes=TWO_LANES)


# ------------------------------------------------------------------------- wire


def test_lane_0_encodes_as_before_and_other_lanes_add_one_trailing_field() -> None:
    plain = DataFrame(7, 2, 0, 1, b"hi")
    assert msgpack.unpackb(encode_frames([plain])) == [[1, 7, 2, 0, 1, b"hi"]]
    laned = DataFrame(7, 2, 0, 1, b"hi", lane=3)
    assert msgpack.unpackb(encode_frames([laned])) == [[1, 7, 2, 0, 1, b"hi", 3]]
    assert len(encode_frames([laned])) == len(encode_frames([plain])) + 1
    high = DataFrame(7, 2, 0, 1, b"hi", lane=MAX_LANES - 1)
    assert len(encode_frames([high])) == len(encode_frames([plain])) + LANE_FIELD_SIZE


@given(
    st.integers(0, 2**62 - 1),
    st.integers(0, 2**62 - 1),
    st.integers(0, MAX_LANES - 1),
    st.binary(max_size=64),
)
def test_laned_data_round_trips(seq: int, message_id: int, lane: int, payload: bytes) -> None:
    frame = DataFrame(seq, message_id, 0, 1, payload, lane)
    assert decode_frames(encode_frames([frame])) == (frame,)
    assert len(encode_frames([frame])) <= fragment_cost(frame)


@pytest.mark.parametrize("lane", [0, MAX_LANES, -1, "1", 1.0])
def test_a_lane_written_as_0_or_out_of_range_is_malformed(lane: object) -> None:
    with pytest.raises(FrameError):
        decode_frames(msgpack.packb([[1, 0, 0, 0, 1, b"", lane]]))


def test_a_full_fragment_on_any_lane_fits_its_packet() -> None:
    """Other lanes' fragments are ``LANE_FIELD_SIZE`` bytes shorter, so the worst-case frame
    still fits the room a lane-0 fragment was sized for."""
    step = fragment_size(1200, insecure=False)
    buffer = SendBuffer(10**6, step, 10**6, TWO_LANES)
    buffer.push(bytes(3 * step), lane=1)
    fragment = buffer.next_new()
    assert fragment is not None and len(fragment.payload) == step - LANE_FIELD_SIZE
    assert fragment_cost(fragment) == step + DATA_FRAME_OVERHEAD


# -------------------------------------------------------------------- scheduler


def drain(buffer: SendBuffer) -> list[DataFrame]:
    sent = []
    while (fragment := buffer.next_new()) is not None:
        buffer.pop_new()
        sent.append(fragment)
    return sent


def test_sequence_numbers_follow_the_sending_order_across_lanes() -> None:
    buffer = SendBuffer(10**6, 100, 10**6, TWO_LANES)
    assert buffer.push(bytes(250), lane=1) == 0
    assert buffer.push(b"line", lane=0) == 0  # message ids count per lane
    assert buffer.push(b"line 2", lane=0) == 1
    sent = drain(buffer)
    assert [(f.lane, f.message_id, f.fragment_index) for f in sent] == [
        (0, 0, 0),
        (0, 1, 0),
        (1, 0, 0),
        (1, 0, 1),
        (1, 0, 2),
    ]
    assert [f.seq for f in sent] == list(range(5)) and buffer.sent_bound == 5


def test_a_higher_priority_message_overtakes_a_bulk_message_mid_way() -> None:
    buffer = SendBuffer(10**6, 100, 10**6, TWO_LANES)
    buffer.push(bytes(1_000), lane=1)
    first = buffer.next_new()
    buffer.pop_new()
    buffer.push(b"live", lane=0)
    second = buffer.next_new()
    assert first is not None and first.lane == 1
    assert second is not None and second.lane == 0 and second.seq == 1


def test_a_lane_beyond_the_configured_ones_is_caller_misuse() -> None:
    buffer = SendBuffer(10**6, 100, 10**6, TWO_LANES)
    for lane in (2, -1):
        with pytest.raises(LocalProtocolError):
            buffer.push(b"x", lane=lane)
    assert buffer.buffered_bytes == 0 and buffer.messages_pushed == 0


@given(st.integers(1, 8), st.integers(1, 8))
def test_lanes_of_one_priority_share_bytes_by_weight(first: int, second: int) -> None:
    """Weighted fair: while both have data, the bytes sent stay within one fragment of the
    weights' proportion."""
    scheduler = LaneScheduler((LaneConfig(weight=first), LaneConfig(weight=second)))
    scheduler.activate(0)
    scheduler.activate(1)
    sent = [0, 0]
    for _ in range(200):
        lane = scheduler.next_lane()
        assert lane is not None
        sent[lane] += 100
        scheduler.charge(lane, 100, still_busy=True)
    assert abs(sent[0] / first - sent[1] / second) <= 100 / min(first, second)


def test_strict_priority_between_groups_and_no_credit_banked_while_idle() -> None:
    scheduler = LaneScheduler((LaneConfig(priority=1), LaneConfig(priority=1), LaneConfig()))
    scheduler.activate(0)
    for _ in range(50):  # lane 0 alone for a while: lane 1 is idle
        assert scheduler.next_lane() == 0
        scheduler.charge(0, 100, still_busy=True)
    scheduler.activate(1)
    scheduler.activate(2)
    assert scheduler.next_lane() == 2  # priority 0 first, whatever it sent before
    scheduler.charge(2, 100, still_busy=False)
    order = []
    for _ in range(6):
        lane = scheduler.next_lane()
        assert lane is not None
        order.append(lane)
        scheduler.charge(lane, 100, still_busy=True)
    assert sorted(order) == [0, 0, 0, 1, 1, 1]  # lane 1 did not bank lane 0's 50 turns


def test_bulk_lanes_leave_the_end_of_the_peer_window_to_the_first_priority() -> None:
    buffer = SendBuffer(10**6, 100, 10**6, TWO_LANES)
    buffer.push(bytes(10), lane=1)
    buffer.push(bytes(10), lane=0)
    live, bulk = drain(buffer)
    assert buffer.window_reserve(live) == 0
    assert buffer.window_reserve(bulk) == WINDOW_RESERVE_FRAGMENTS


# ------------------------------------------------------------------- reassembly


def test_a_lost_fragment_of_one_lane_does_not_hold_another() -> None:
    reassembly = Reassembly(2, 10_000)
    bulk = [DataFrame(seq, 0, seq, 3, b"b", lane=1) for seq in range(3)]
    line = DataFrame(3, 0, 0, 1, b"line")
    assert reassembly.on_data(bulk[1]) == []
    assert reassembly.on_data(line) == [MessageReceived(0, b"line", 0)]  # seq 0 is still missing
    assert reassembly.on_data(bulk[2]) == []
    assert reassembly.on_data(bulk[0]) == [MessageReceived(0, b"bbb", 1)]
    assert reassembly.next_seq == 4 and reassembly.buffered_bytes == 0


def test_a_fragment_its_lane_cannot_take_below_the_cumulative_point_is_a_violation() -> None:
    """An honest sender sends each lane in order, so once every earlier sequence number is
    in, a fragment's lane has taken all before it."""
    reassembly = Reassembly(2, 10_000)
    with pytest.raises(PeerProtocolError):
        reassembly.on_data(DataFrame(0, 1, 0, 1, b"second message first"))


@pytest.mark.parametrize(
    "frames",
    [
        [DataFrame(0, 0, 0, 2, b"a"), DataFrame(1, 0, 0, 2, b"a")],  # position repeated
        [DataFrame(0, 0, 0, 2, b"a"), DataFrame(1, 0, 1, 3, b"a")],  # count changed
        [DataFrame(0, 0, 0, 1, b"a", lane=2)],  # lane beyond the two configured
    ],
)
def test_fragments_inconsistent_with_their_lane_are_violations(frames: list[DataFrame]) -> None:
    reassembly = Reassembly(2, 10_000)
    with pytest.raises(PeerProtocolError):
        for frame in frames:
            reassembly.on_data(frame)


def test_partial_messages_on_every_lane_never_close_the_window() -> None:
    """Messages being reassembled on several lanes may fill the budget between them; with
    nothing unread the window still lets the next fragment in, or nothing could finish them."""
    receiver = Receiver(window_bytes=2_000, fragment_size=1_000, max_message_size=2_000,
                        max_ack_delay=0.01, lanes=2)  # fmt: skip
    for seq, lane in ((0, 0), (1, 1)):
        receiver.on_data(DataFrame(seq, 0, 0, 2, bytes(1_000), lane))
    assert receiver.buffered_bytes == 2_000
    assert receiver.window() > receiver.next_seq == 2
    assert receiver.admits([DataFrame(2, 0, 1, 2, bytes(1_000))])


fragments = st.tuples(
    st.integers(0, 40),  # seq
    st.integers(0, 3),  # lane
    st.integers(0, 2),  # message id
    st.integers(0, 3),  # fragment index (clamped below its count)
    st.integers(1, 4),  # fragment count
    st.integers(0, 1_000),  # payload bytes
)


@given(st.lists(fragments, max_size=120), st.booleans())
def test_whatever_a_peer_sends_the_receiver_holds_at_most_its_bound(
    sent: list[tuple[int, int, int, int, int, int]], reads: bool
) -> None:
    """PROTOCOL.md §6: the byte budget, plus one datagram, plus a message being reassembled per
    lane; anything else is refused (dropped) or a protocol violation."""
    budget, fragment, message, lanes = 4_000, 1_000, 3_000, 4
    receiver = Receiver(budget, fragment, message, 0.01, lanes)
    for seq, lane, message_id, index, count, size in sent:
        frame = DataFrame(seq, message_id, min(index, count - 1), count, bytes(size), lane)
        if not receiver.admits([frame]):
            continue
        try:
            delivered = receiver.on_data(frame)
        except PeerProtocolError:
            return
        if reads:
            for done in delivered:
                receiver.on_read(len(done.data))
        held = receiver.buffered_bytes + receiver.unread_bytes
        assert held <= budget + fragment + lanes * message, held


# ------------------------------------------------------------------ connections


def test_received_messages_say_their_lane_and_lane_position() -> None:
    pair = Pair(LANED)
    pair.handshake()
    assert pair.client.send(b"history", lane=1) == 0
    assert pair.client.send(b"live", lane=0) == 0
    assert pair.client.send(b"more history", lane=1) == 1
    pair.collect()
    pair.exchange()
    received = [e for e in pair.server_events if isinstance(e, MessageReceived)]
    assert sorted(received, key=lambda e: (e.lane, e.message_id)) == [
        MessageReceived(0, b"live", 0),
        MessageReceived(0, b"history", 1),
        MessageReceived(1, b"more history", 1),
    ]


def test_a_peer_using_a_lane_we_did_not_configure_breaks_the_protocol() -> None:
    one_lane = ConnectionConfig(insecure=True, lanes=(LaneConfig(),))
    pair = Pair(LANED, ListenerConfig(connection=one_lane))
    server = pair.handshake()
    pair.client.send(b"x", lane=1)
    pair.collect()
    pair.exchange()
    ended = pair.terminated(pair.client_events)
    assert ended is not None and ended.reason is TerminationReason.PEER_ERROR
    assert ended.error_code == ErrorCode.PROTOCOL_VIOLATION and server.is_closed is False


@given(st.integers(0, 7), st.integers(1, 5))
def test_a_lost_datagram_of_the_bulk_lane_does_not_delay_live_messages(
    lost: int, lines: int
) -> None:
    """Lane independence: the datagram carrying one fragment of an 8-fragment bulk message is
    lost; live messages sent after it are delivered before any timer runs (before the repair)."""
    pair = Pair(LANED)
    pair.handshake()
    pair.client.send(b"warm-up: the server's ACK opens its window", lane=1)
    pair.run(until=pair.now + 1)
    step = fragment_size(LANED.max_datagram_size, insecure=True)
    pair.client.send(bytes(8 * (step - LANE_FIELD_SIZE)), lane=1)
    pair.collect()
    bulk = list(pair.to_server)
    assert len(bulk) == 8
    del pair.to_server[lost]
    for index in range(lines):
        pair.client.send(b"line %d" % index, lane=0)
    pair.collect()
    while pair.to_server:  # everything but the lost datagram, no timers
        pair.deliver_to_server()
    live = [e.data for e in pair.server_events if isinstance(e, MessageReceived) and e.lane == 0]
    assert live == [b"line %d" % index for index in range(lines)]
    pair.run(until=pair.now + 5)
    received = [e for e in pair.server_events if isinstance(e, MessageReceived)]
    assert [e.lane for e in received] == [1] + [0] * lines + [1]


# --------------------------------------------------------------- the simulator


profiles = st.builds(
    LinkProfile,
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    loss_burst=st.sampled_from([1.0, 3.0]),
    duplicate=st.sampled_from([0.0, 0.05]),
    reorder=st.sampled_from([0.0, 0.1]),
    delay=st.sampled_from([0.005, 0.03]),
    jitter=st.sampled_from([0.0, 0.01]),
)
scripts = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5_000)), max_size=25)


@sim_settings(25)
@given(st.integers(0, 2**16), profiles, scripts, scripts)
def test_every_message_arrives_once_in_order_within_its_lane(
    seed: int,
    link: LinkProfile,
    client_script: list[tuple[int, int]],
    server_script: list[tuple[int, int]],
) -> None:
    lanes = (LaneConfig(priority=0), LaneConfig(priority=1, weight=3), LaneConfig(priority=1))
    config = ConnectionConfig(lanes=lanes)
    pair = simulated_pair(seed, link, link, config)
    rng = random.Random(seed)  # the messages' bytes
    network, client, server, client_end = pair.network, pair.client, pair.server, pair.client_endpoint
    received: dict[str, defaultdict[int, list[bytes]]] = {
        "client": defaultdict(list),
        "server": defaultdict(list),
    }

    def recorder(side: str) -> object:
        def record(record: Recorded) -> None:
            if isinstance(record.event, MessageReceived):
                received[side][record.event.lane].append(record.event.data)
            assert not isinstance(record.event, ConnectionTerminated), record.event

        return record

    client_end.on_event = recorder("client")  # type: ignore[assignment]
    server.on_event = recorder("server")  # type: ignore[assignment]
    network.run(stop=lambda: bool(server.connections) and client.state.value == "open", until=60)
    [connection] = server.connections
    expected: dict[str, defaultdict[int, list[bytes]]] = {
        "client": defaultdict(list),
        "server": defaultdict(list),
    }
    for sender, script, receiver in ((client, client_script, "server"),
                                     (connection, server_script, "client")):  # fmt: skip
        for index, (lane, size) in enumerate(script):
            data = (f"{receiver}{index};".encode() + rng.randbytes(size))[:size]
            sender.send(data, lane)
            expected[receiver][lane].append(data)
    network.flush(CLIENT)
    network.flush(SERVER)
    total = len(client_script) + len(server_script)

    def done() -> bool:
        return sum(len(m) for side in received.values() for m in side.values()) == total

    network.run(stop=done, until=network.now + 120)
    assert received == expected


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_history_on_a_low_priority_lane_leaves_live_lines_p99_within_a_fifth() -> None:
    """The issue's bound: p99 of live lines while 2 MB history fetches run (one after the
    other) is at most 1.2 x without them. On one lane (FIFO) the same history delays them
    by seconds: the check can fail. Without random loss, so that the bound measures blocking,
    not which lines a seed happens to drop (``benchmarks/simulated.py``'s ``lanes-hol`` row
    measures it at 1 % loss)."""
    lines, link = 100, replace(HOL_LINK, loss=0.0)
    alone = _p99(run_hol(1, lines, None, link).latencies)
    beside = _p99(run_hol(1, lines, BULK_LANE, link).latencies)
    assert beside <= 1.2 * alone, (beside, alone)
    behind = _p99(run_hol(1, lines // 4, LIVE_LANE, link).latencies)
    assert behind > 5 * alone, (behind, alone)


# --------------------------------------------------------------- send buffer


def test_bulk_lanes_leave_the_last_quarter_of_the_send_buffer_to_the_first_priority() -> None:
    capacity = 4_000
    buffer = SendBuffer(capacity, 100, capacity, TWO_LANES)
    buffer.push(bytes(100), lane=1)
    with pytest.raises(SendBufferFullError):
        buffer.push(bytes(buffer.free_bytes_on(1) + 100), lane=1)
    buffer.push(bytes(buffer.free_bytes_on(1)), lane=1)  # what it reports, it takes
    assert buffer.free_bytes_on(1) == 0
    assert buffer.buffered_bytes <= capacity - capacity // SEND_RESERVE_DIVISOR
    buffer.push(bytes(buffer.free_bytes_on(0)), lane=0)  # the live lane still has room
    assert capacity - capacity // SEND_RESERVE_DIVISOR < buffer.buffered_bytes <= capacity


def test_a_send_waiting_for_room_on_a_bulk_lane_does_not_hold_back_a_live_one() -> None:
    """The transport waits per lane: the bulk sender blocks on a full buffer (the peer reads
    nothing yet), the live message still goes at once."""
    config = replace(
        LANED, send_buffer_size=64 * 1024, max_message_size=16 * 1024, receive_window=64 * 1024
    )

    async def main() -> None:
        listener = ListenerConfig(connection=config)
        async with await serve("127.0.0.1", 0, config=listener) as server:
            client = await connect(*server.address, config=config)
            peer = await server.accept()
            bulk = asyncio.create_task(
                asyncio.wait_for(_flood(client, 40, 16 * 1024), timeout=30)
            )
            await asyncio.sleep(0.05)
            assert not bulk.done()  # 640 KiB: more than the send buffer and the window
            await asyncio.wait_for(client.send(b"live", lane=0), timeout=1.0)
            received = [await peer.receive() for _ in range(41)]
            assert [m.data for m in received if m.lane == 0] == [b"live"]
            await bulk
            await client.close()

    asyncio.run(main())


async def _flood(connection: ReliableConnection, count: int, size: int) -> None:
    for _ in range(count):
        await connection.send(bytes(size), lane=1)


def test_qlog_names_the_lane_of_data_off_lane_0() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Sink:
        def event(self, now: float, name: str, data: dict[str, Any]) -> None:
            events.append((name, data))

    pair = Pair(LANED, client_trace=Sink())
    pair.handshake()
    pair.client.send(b"bulk", lane=1)
    pair.client.send(b"live")
    pair.collect()
    frames = [
        frame
        for name, data in events
        if name == "transport:packet_sent"
        for frame in data.get("frames", ())
        if frame["frame_type"] == "data"
    ]
    assert [frame.get("lane") for frame in frames] == [None, 1]


def test_the_benchmark_row_reports_all_three_p99s(tmp_path: Path) -> None:
    rows = _run("simulated.py", ["--quick", "--only", "lanes"], tmp_path / "rows.json", 300)
    assert [row["scenario"] for row in rows] == ["lanes-hol", "lanes-hol-10M"]
    for row in rows:
        _assert_numbers(row, SIMULATED_NUMBERS | {"alone_p99_ms", "fifo_p99_ms"})
        assert row["alone_p99_ms"] > 0 and row["fifo_p99_ms"] > row["latency_p99_ms"]


@pytest.mark.parametrize("lanes", [(), (LaneConfig(),) * (MAX_LANES + 1)])
def test_a_lanes_table_must_hold_1_to_256_lane_configs(lanes: tuple[LaneConfig, ...]) -> None:
    with pytest.raises(ValueError):
        ConnectionConfig(lanes=lanes)


def test_a_lanes_table_holds_lane_configs_only() -> None:
    """A TypeError in both builds (the compiled core checks the field's type itself)."""
    with pytest.raises(TypeError):
        ConnectionConfig(lanes=({"priority": 0},))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"priority": -1}, {"weight": 0}, {"weight": 10**7}])
def test_a_lane_priority_and_weight_have_ranges(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        LaneConfig(**bad)
