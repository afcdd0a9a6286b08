"""The send buffer (fragments held until acknowledged) and backpressure through a Connection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from simharness import Pair

from rudp_chat.core.codec import decode_datagram, decode_frames
from rudp_chat.core.config import ConnectionConfig
from rudp_chat.core.errors import MessageTooLargeError, SendBufferFullError
from rudp_chat.core.frames import MAX_FRAGMENTS, DataFrame, SessionPacket
from rudp_chat.core.sendbuffer import FRAGMENT_COST, SendBuffer


def drain_new(buffer: SendBuffer) -> list[DataFrame]:
    sent = []
    while (fragment := buffer.next_new()) is not None:
        buffer.pop_new()
        sent.append(fragment)
    return sent


# ------------------------------------------------------------------ fragmentation


@given(st.lists(st.binary(max_size=2_000), max_size=8), st.integers(1, 700))
def test_messages_become_consecutive_fragments_that_reassemble(
    messages: list[bytes], fragment_size: int
) -> None:
    buffer = SendBuffer(10**9, fragment_size, 10**6)
    ids = [buffer.push(m) for m in messages]
    assert ids == list(range(len(messages)))
    fragments = drain_new(buffer)
    assert [f.seq for f in fragments] == list(range(len(fragments)))
    assert buffer.next_seq == len(fragments)
    for message_id, message in enumerate(messages):
        parts = [f for f in fragments if f.message_id == message_id]
        expected_count = max(1, -(-len(message) // fragment_size))
        assert len(parts) == expected_count
        assert [p.fragment_index for p in parts] == list(range(expected_count))
        assert all(p.fragment_count == expected_count for p in parts)
        assert all(len(p.payload) <= fragment_size for p in parts)
        assert b"".join(p.payload for p in parts) == message
    assert buffer.buffered_bytes == cost(*messages, fragment_size=fragment_size)


def cost(*messages: bytes, fragment_size: int) -> int:
    """What the buffer charges: payload plus FRAGMENT_COST per fragment (so that empty
    messages count too)."""
    return sum(len(m) + max(1, -(-len(m) // fragment_size)) * FRAGMENT_COST for m in messages)


def test_an_empty_message_is_one_empty_fragment_that_still_costs() -> None:
    buffer = SendBuffer(1_000, 10, 100)
    assert buffer.push(b"") == 0
    assert drain_new(buffer) == [DataFrame(0, 0, 0, 1, b"")]
    assert buffer.buffered_bytes == FRAGMENT_COST > 0 and not buffer.all_acknowledged


def test_too_large_is_refused_and_changes_nothing() -> None:
    buffer = SendBuffer(1_000, 10, 100)
    with pytest.raises(MessageTooLargeError):
        buffer.push(b"x" * 101)
    assert buffer.next_message_ids[0] == 0 and buffer.next_seq == 0 and buffer.buffered_bytes == 0


def test_more_than_max_fragments_is_refused() -> None:
    buffer = SendBuffer(10**6, 1, 10**6)
    buffer.push(b"x" * MAX_FRAGMENTS)  # exactly the limit
    with pytest.raises(MessageTooLargeError):
        buffer.push(b"x" * (MAX_FRAGMENTS + 1))
    assert buffer.next_message_ids[0] == 1


def test_full_buffer_refuses_and_changes_nothing_until_acknowledged() -> None:
    capacity = cost(b"a" * 60, b"b" * 40, fragment_size=10)
    buffer = SendBuffer(capacity, 10, 100)
    buffer.push(b"a" * 60)
    buffer.push(b"b" * 40)
    assert buffer.free_bytes == 0 and buffer.buffered_bytes == capacity
    with pytest.raises(SendBufferFullError):
        buffer.push(b"c")
    with pytest.raises(SendBufferFullError):
        buffer.push(b"")
    assert buffer.buffered_bytes == capacity and buffer.next_message_ids[0] == 2
    drain_new(buffer)
    buffer.acknowledge(0)
    assert buffer.free_bytes == 10  # payload bytes: the fragment's cost is already counted
    buffer.push(b"c" * 10)
    assert buffer.buffered_bytes == capacity


def test_an_empty_buffer_takes_any_message_up_to_max_message_size() -> None:
    buffer = SendBuffer(100, 10, 500)
    buffer.push(b"x" * 500)  # bigger than the capacity, but nothing else is waiting
    with pytest.raises(SendBufferFullError):
        buffer.push(b"x")


def test_a_full_buffer_refuses_empty_messages_too() -> None:
    """Backpressure bounds memory, not just payload bytes: each empty message is a fragment
    (an object, a dict entry, a DATA frame to send) that a peer that never acks makes us keep."""
    buffer = SendBuffer(100, 10, 100)
    buffer.push(b"x" * 100)
    with pytest.raises(SendBufferFullError):
        for _ in range(100_000):
            buffer.push(b"")


# --------------------------------------------------------------- acknowledgement


def test_acknowledge_is_idempotent_and_frees_bytes() -> None:
    buffer = SendBuffer(1_000, 10, 100)
    buffer.push(b"x" * 25)
    drain_new(buffer)
    buffer.acknowledge(1)
    buffer.acknowledge(1)
    buffer.acknowledge(99)  # never sent: ignored
    assert buffer.buffered_bytes == 15 + 2 * FRAGMENT_COST
    buffer.acknowledge_below(3)
    assert buffer.buffered_bytes == 0 and buffer.all_acknowledged
    buffer.acknowledge_below(1)  # going backwards changes nothing
    assert buffer.acked_below == 3


def test_retransmissions_come_lowest_first_once_each_and_skip_acknowledged() -> None:
    buffer = SendBuffer(1_000, 10, 1_000)
    buffer.push(b"x" * 100)
    drain_new(buffer)
    for seq in (7, 3, 5, 3, 9):
        buffer.mark_lost(seq)
    buffer.acknowledge(5)
    order = []
    while (fragment := buffer.next_retransmission()) is not None:
        buffer.pop_retransmission()
        order.append(fragment.seq)
    assert order == [3, 7, 9]
    buffer.mark_lost(42)  # unknown: ignored
    assert buffer.next_retransmission() is None


def test_oldest_in_flight_is_the_lowest_sent_unacknowledged_fragment() -> None:
    buffer = SendBuffer(1_000, 10, 1_000)
    assert buffer.oldest_in_flight() is None
    buffer.push(b"x" * 30)
    assert buffer.oldest_in_flight() is None  # nothing sent yet
    buffer.pop_new()
    buffer.pop_new()
    oldest = buffer.oldest_in_flight()
    assert oldest is not None and oldest.seq == 0
    buffer.acknowledge(0)
    oldest = buffer.oldest_in_flight()
    assert oldest is not None and oldest.seq == 1


class SendBufferMachine(RuleBasedStateMachine):
    """SendBuffer against a model: a dict of unacknowledged fragments and a set of lost seqs."""

    CAPACITY = 3_000
    FRAGMENT = 100

    def __init__(self) -> None:
        super().__init__()
        self.buffer = SendBuffer(self.CAPACITY, self.FRAGMENT, 2_000)
        self.unacked: dict[int, bytes] = {}
        self.sent: set[int] = set()
        self.lost: set[int] = set()
        self.next_seq = 0
        self.acked_below = 0

    @rule(size=st.integers(0, 2_000))
    def push(self, size: int) -> None:
        buffered = sum(len(p) + FRAGMENT_COST for p in self.unacked.values())
        data = bytes([size % 256]) * size
        if buffered and buffered + cost(data, fragment_size=self.FRAGMENT) > self.CAPACITY:
            with pytest.raises(SendBufferFullError):
                self.buffer.push(data)
            return
        self.buffer.push(data)
        count = max(1, -(-size // self.FRAGMENT))
        for index in range(count):
            self.unacked[self.next_seq] = data[index * self.FRAGMENT : (index + 1) * self.FRAGMENT]
            self.next_seq += 1

    @precondition(lambda self: self.buffer.has_pending)
    @rule()
    def send_new(self) -> None:
        fragment = self.buffer.next_new()
        assert fragment is not None
        assert fragment.seq == min(s for s in self.unacked if s not in self.sent)
        self.buffer.pop_new()
        self.sent.add(fragment.seq)

    # The connection only ever acknowledges or condemns fragments it sent (an ACK for anything
    # else is implausible and dropped before it gets here), so the rules keep to those.

    @rule(seq=st.integers(0, 80))
    def ack(self, seq: int) -> None:
        if seq not in self.sent:
            return
        self.buffer.acknowledge(seq)
        self.unacked.pop(seq, None)
        self.lost.discard(seq)

    @rule(below=st.integers(0, 80))
    def ack_below(self, below: int) -> None:
        unsent = [s for s in self.unacked if s not in self.sent]
        below = min(below, min(unsent) if unsent else self.next_seq)
        self.buffer.acknowledge_below(below)
        for seq in [s for s in self.unacked if s < below]:
            del self.unacked[seq]
            self.lost.discard(seq)

    @rule(seq=st.integers(0, 80))
    def mark_lost(self, seq: int) -> None:
        if seq not in self.sent:
            return
        self.buffer.mark_lost(seq)
        if seq in self.unacked:
            self.lost.add(seq)

    @precondition(lambda self: self.buffer.next_retransmission() is not None)
    @rule()
    def retransmit(self) -> None:
        fragment = self.buffer.next_retransmission()
        assert fragment is not None
        assert fragment.seq == min(self.lost)
        self.buffer.pop_retransmission()
        self.lost.discard(fragment.seq)

    @invariant()
    def agrees(self) -> None:
        charged = sum(len(p) + FRAGMENT_COST for p in self.unacked.values())
        assert self.buffer.buffered_bytes == charged
        sent = {seq: payload for seq, payload in self.unacked.items() if seq in self.sent}
        assert {s: f.payload for s, f in self.buffer.unacked.items()} == sent
        assert list(self.buffer.unacked) == sorted(self.buffer.unacked)
        assert self.buffer.all_acknowledged == (not self.unacked)
        fragment = self.buffer.next_retransmission()
        assert (fragment.seq if fragment else None) == (min(self.lost) if self.lost else None)


TestSendBufferMachine = SendBufferMachine.TestCase


# ------------------------------------------------------------------- backpressure

BOUNDED = ConnectionConfig(max_message_size=16_384, send_buffer_size=65_536, receive_window=65_536)


def _data_datagrams(datagrams: list[bytes]) -> int:
    count = 0
    for datagram in datagrams:
        packet = decode_datagram(datagram)
        if isinstance(packet, SessionPacket) and any(
            isinstance(f, DataFrame) for f in decode_frames(packet.payload)
        ):
            count += 1
    return count


def test_a_peer_that_never_acks_cannot_make_the_sender_hold_more_than_its_bound() -> None:
    pair = Pair(BOUNDED)
    pair.handshake()
    client = pair.client
    accepted = 0
    with pytest.raises(SendBufferFullError):
        for i in range(100):
            client.send(bytes([i]) * 10_000)
            accepted += 10_000
            assert client.stats().send_buffered_bytes <= BOUNDED.send_buffer_size
    assert accepted <= BOUNDED.send_buffer_size
    assert client.send_capacity < 10_000
    full = client.stats()
    with pytest.raises(SendBufferFullError):
        client.send(b"y" * 10_000)
    assert client.stats() == full  # the refusal changed nothing

    # nothing the server says reaches the client for 8 s (less than the idle timeout)
    pair.collect()
    first_window = _data_datagrams(pair.to_server)
    assert first_window <= BOUNDED.initial_window_packets
    while pair.now < 8.0:
        stats = client.stats()
        assert stats.send_buffered_bytes <= BOUNDED.send_buffer_size
        # ack-eliciting bytes in flight stay within the window, give or take one probe
        assert stats.bytes_in_flight <= stats.congestion_window + BOUNDED.max_datagram_size
        pair.to_client.clear()  # the peer's ACKs are lost
        for _ in range(len(pair.to_server)):
            pair.deliver_to_server()
        if pair.step_timer() is None:
            break
    assert client.state.value == "open"
    assert client.stats().send_buffered_bytes == full.send_buffered_bytes  # nothing was released
    # ... and without acknowledgements it backs off: a few probes per second, not a flood
    assert _data_datagrams(pair.sent_by_client) < 100

    # the path heals: acknowledgements free the buffer and send works again
    pair.run(until=pair.now + 5.0)
    assert client.stats().send_buffered_bytes == 0
    assert client.send(b"z" * 10_000) == accepted // 10_000
    pair.collect()
    pair.run(until=pair.now + 5.0)
    received = pair.received_by_server()
    assert [m[:1] for m in received[:-1]] == [bytes([i]) for i in range(accepted // 10_000)]
    assert received[-1] == b"z" * 10_000


def test_send_capacity_tracks_acknowledgements() -> None:
    pair = Pair(BOUNDED)
    server = pair.handshake()
    assert pair.client.send_capacity == BOUNDED.send_buffer_size
    pair.client.send(b"a" * 16_384)
    assert pair.client.send_capacity < BOUNDED.send_buffer_size - 16_384 + 1
    pair.collect()
    pair.run(until=1.0)
    assert pair.client.send_capacity == BOUNDED.send_buffer_size
    assert server.send_capacity == BOUNDED.send_buffer_size


def _stall_then_read(config: ConnectionConfig, count: int) -> tuple[Pair, list[bytes], int]:
    """The client sends ``count`` 8000-byte messages; the server application reads nothing for
    20 s. Returns the pair, what was sent, and the bytes the server held unread meanwhile."""
    pair = Pair(config)
    server = pair.handshake()
    sent = [bytes([i % 256]) * 8_000 for i in range(count)]
    for message in sent:
        pair.client.send(message)
    pair.collect()
    pair.server = None  # the harness takes no events from a server it does not know
    try:
        pair.run(until=20.0)
    finally:
        pair.server = server
    assert server.state.value == "open" and pair.client.state.value == "open"
    assert pair.received_by_server() == []
    pair.collect()  # the application reads at last
    held = sum(map(len, pair.received_by_server()))
    return pair, sent, held


@given(st.lists(st.integers(0, 5_000), max_size=20), st.integers(1, 1_500))
def test_a_message_of_free_bytes_is_always_accepted(sizes: list[int], fragment_size: int) -> None:
    """``free_bytes`` is documented as 'what push accepts now': take it at its word."""
    buffer = SendBuffer(20_000, fragment_size, 5_000)
    for size in sizes:
        try:
            buffer.push(b"x" * size)
        except SendBufferFullError:
            break
    offer = min(buffer.free_bytes, buffer.max_message_size)
    if buffer.buffered_bytes and offer == 0:
        return
    buffer.push(b"y" * offer)


def test_send_capacity_is_what_send_accepts() -> None:
    """The transport awaits ``send_capacity`` and then sends that much: it must not raise."""
    pair = Pair(BOUNDED)
    pair.handshake()
    while pair.client.send_capacity >= 10_000:
        pair.client.send(b"a" * 10_000)
    capacity = pair.client.send_capacity
    assert 0 < capacity < 10_000
    pair.client.send(b"b" * capacity)


def test_a_receiver_that_does_not_read_stalls_the_sender_until_it_reads() -> None:
    config = ConnectionConfig(
        max_message_size=8_192, send_buffer_size=4_000_000, receive_window=65_536
    )
    pair, sent, held = _stall_then_read(config, 100)  # 800 kB, far beyond the window
    assert 0 < held < len(sent) * 8_000  # the sender waited ...
    pair.run(until=60.0)
    assert pair.client.stats().send_buffered_bytes == 0  # ... and resumed once read
    assert pair.received_by_server() == sent


def test_unread_data_stays_within_the_receive_window() -> None:
    """ConnectionConfig.receive_window: 'bytes of out-of-order and unread data the receiver
    buffers'. An application that stops reading holds at most that (plus one fragment)."""
    config = ConnectionConfig(
        max_message_size=8_192, send_buffer_size=4_000_000, receive_window=65_536
    )
    _, _, held = _stall_then_read(config, 100)
    assert held <= config.receive_window + config.max_datagram_size
