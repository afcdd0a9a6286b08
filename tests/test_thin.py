"""Thin-stream mode: copies of a chat's packets, the loss estimator that sizes them, linear
timeouts, and the ACKs that repeat their ranges a few times (PROTOCOL.md, "Thin streams").

The properties run a paced chat through the simulator over random loss, burst, jitter,
duplication and reordering profiles: every message arrives exactly once and in order, no
packet number (the AEAD nonce) is used twice under one key, and a sender with a backlog is
never thin. A failure prints the :class:`ChatScript`, whose ``repr`` replays the trace.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import example, given
from hypothesis import strategies as st
from simharness import SERVER, Pair, message_bytes, seeded_random_bytes, sim_settings

from rudp_chat.core.codec import decode_datagram
from rudp_chat.core.config import MAX_THIN_COPIES, ConnectionConfig, ListenerConfig
from rudp_chat.core.congestion import CongestionController, SentPacket
from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.delivery import DeliveryHandler
from rudp_chat.core.events import MessageReceived, TerminationReason
from rudp_chat.core.frames import MAX_ACK_RANGES, DataFrame, SealedPacket, SessionPacket
from rudp_chat.core.listener import Listener
from rudp_chat.core.lossrate import LOSS_WINDOW_PACKETS, PRIOR_PACKETS, LossEstimator
from rudp_chat.core.receiving import ACK_RANGE_REPEATS, Receiver
from rudp_chat.core.recovery import Recovery
from rudp_chat.core.rtt import RttEstimator
from rudp_chat.core.sendbuffer import SendBuffer
from rudp_chat.core.thin import ThinStream
from rudp_chat.sim import LinkProfile, Network
from rudp_chat.sim.endpoint import Endpoint, Recorded

CHAT_CLIENT: Address = ("10.2.0.1", 50_000)
CONFIG = ConnectionConfig(handshake_timeout=60.0, idle_timeout=30.0)
MTU = CONFIG.max_datagram_size
THIN_BYTES = CONFIG.thin_max_in_flight * MTU  # buffered bytes from which a sender is never thin

# ------------------------------------------------------------------ the paced chat


@dataclass(frozen=True)
class ChatScript:
    """A chat both ways, one ``size``-byte line per ``interval``, and (if ``backlog``) a paste
    that large from the client half-way through. ``run_chat(eval(repr(s)))`` replays it."""

    seed: int
    up: LinkProfile
    down: LinkProfile
    interval: float
    count: int
    size: int
    backlog: int


@dataclass
class Tap:
    """A network node that records what its endpoint sends and checks the thin invariant
    after every output: a sender with a backlog is not thin."""

    endpoint: Endpoint
    sent: list[bytes]
    thin_seen: list[bool]
    connection: Connection | None = None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.endpoint.receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self.endpoint.datagrams_to_send(now)
        self.sent.extend(data for data, _ in out)
        if self.connection is not None:
            stats = self.connection.stats()
            if stats.send_buffered_bytes >= THIN_BYTES and stats.thin_stream:
                raise AssertionError(f"thin with {stats.send_buffered_bytes} bytes buffered")
            self.thin_seen.append(stats.thin_stream)
        return out


@dataclass
class ChatRun:
    client: Connection
    server: Connection
    client_sent: list[bytes]
    server_sent: list[bytes]
    client_got: list[bytes]
    server_got: list[bytes]
    client_thin: list[bool]


def run_chat(script: ChatScript) -> ChatRun:
    """Run ``script`` until every line has arrived both ways (or 600 virtual seconds)."""
    network = Network(seed=script.seed)
    network.set_link(CHAT_CLIENT, SERVER, script.up)
    network.set_link(SERVER, CHAT_CLIENT, script.down)
    random_bytes = seeded_random_bytes(script.seed)
    listener = Listener(random_bytes, ListenerConfig(connection=CONFIG, token_lifetime=60.0))
    client_got: list[bytes] = []
    server_got: list[bytes] = []

    def on_server(record: Recorded) -> None:
        if isinstance(record.event, MessageReceived):
            server_got.append(record.event.data)

    def on_client(record: Recorded) -> None:
        if isinstance(record.event, MessageReceived):
            client_got.append(record.event.data)

    server_tap = Tap(Endpoint(listener, on_event=on_server), [], [])
    network.attach(SERVER, server_tap)
    client = Connection.connect(SERVER, 0.0, random_bytes, CONFIG)
    client_tap = Tap(Endpoint(client, on_event=on_client), [], [], client)
    network.attach(CHAT_CLIENT, client_tap)
    network.run(stop=lambda: client.state.value == "open", until=60.0)
    server_endpoint = server_tap.endpoint
    assert client.state.value == "open" and server_endpoint.connections, script
    server = server_endpoint.connections[0]
    server_tap.connection = server
    client_lines = [message_bytes(script.seed, "c", 0, i, script.size) for i in range(script.count)]
    server_lines = [message_bytes(script.seed, "s", 0, i, script.size) for i in range(script.count)]
    if script.backlog:
        paste = message_bytes(script.seed, "p", 0, 0, script.backlog)
        client_lines.insert(script.count // 2, paste)
    start = network.now
    for connection, lines in ((client, client_lines), (server, server_lines)):
        for index, line in enumerate(lines):
            network.call_at(start + index * script.interval, sender(connection, line))
    network.run(
        stop=lambda: len(server_got) == len(client_lines) and len(client_got) == script.count,
        until=start + len(client_lines) * script.interval + 600.0,
    )
    assert server_got == client_lines, f"{script!r}: the server got {len(server_got)} lines"
    assert client_got == server_lines, f"{script!r}: the client got {len(client_got)} lines"
    return ChatRun(
        client,
        server,
        client_tap.sent,
        server_tap.sent,
        client_got,
        server_got,
        client_tap.thin_seen,
    )


def sender(connection: Connection, line: bytes) -> Callable[[], None]:
    def send() -> None:
        connection.send(line)

    return send


def session_nonces(datagrams: list[bytes]) -> list[tuple[bytes, int]]:
    """(connection id, packet number) of every session packet: the key and the nonce."""
    nonces: list[tuple[bytes, int]] = []
    for data in datagrams:
        packet = decode_datagram(data)
        if isinstance(packet, SealedPacket | SessionPacket):
            nonces.append((packet.connection_id, packet.number))
    return nonces


@st.composite
def lossy_links(draw: st.DrawFn) -> LinkProfile:
    burst = draw(st.one_of(st.just(1.0), st.floats(1.0, 4.0)))
    return LinkProfile(
        loss=draw(st.floats(0.0, min(0.4, burst / (burst + 1.0)))),
        loss_burst=burst,
        delay=draw(st.floats(0.0, 0.15)),
        jitter=draw(st.floats(0.0, 0.05)),
        duplicate=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.1))),
        reorder=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.2))),
    )


@st.composite
def chat_scripts(draw: st.DrawFn) -> ChatScript:
    return ChatScript(
        seed=draw(st.integers(0, 2**32 - 1)),
        up=draw(lossy_links()),
        down=draw(lossy_links()),
        interval=draw(st.sampled_from([0.02, 0.1, 0.5, 2.0])),
        count=draw(st.integers(1, 30)),
        size=draw(st.sampled_from([1, 200, 1_000, 3_000])),
        backlog=draw(st.sampled_from([0, 0, 50_000, 300_000])),
    )


@sim_settings(40)
@given(chat_scripts())
@example(  # a long line whose fragments pacing spaces out stays thin: its copies are not dropped
    ChatScript(
        seed=0,
        up=LinkProfile(),
        down=LinkProfile(delay=0.125),
        interval=0.02,
        count=1,
        size=3000,
        backlog=0,
    )
)
def test_a_thin_chat_arrives_once_in_order_and_never_reuses_a_nonce(script: ChatScript) -> None:
    run = run_chat(script)
    for sent in (run.client_sent, run.server_sent):
        nonces = session_nonces(sent)
        assert len(nonces) == len(set(nonces)), f"{script!r}: a packet number was used twice"
    # the copies were there: a first line goes out more than once unless its ACK is back first
    round_trip = script.up.delay - script.up.jitter + script.down.delay - script.down.jitter
    if round_trip > CONFIG.thin_copy_spacing:
        assert run.client.stats().retransmitted_fragments > 0, script
        assert run.server.stats().retransmitted_fragments > 0, script


def test_a_paste_ends_thin_mode_and_the_chat_after_it_is_thin_again() -> None:
    script = ChatScript(
        seed=3,
        up=LinkProfile(loss=0.1, delay=0.02),
        down=LinkProfile(loss=0.1, delay=0.02),
        interval=0.5,
        count=20,
        size=200,
        backlog=1_000_000,
    )
    run = run_chat(script)
    thin = run.client_thin
    first_on = thin.index(True)  # the chat before the paste
    first_off = thin.index(False, first_on)  # the paste (the Tap checked every backlog step)
    assert first_off < len(thin) - 1 and thin[-1], "thin again once the paste is delivered"


# ------------------------------------------------------------------ copies, by hand


def test_a_thin_line_leaves_as_copies_with_numbers_of_their_own() -> None:
    pair = Pair(CONFIG)
    pair.handshake()
    before = pair.client.stats()
    assert before.thin_stream
    pair.client.send(b"x" * 200)
    pair.collect()
    first = list(pair.to_server)
    copies = ThinStream(CONFIG).copies_needed(LossEstimator(), margin=False)  # the prior's
    assert copies > 1
    for index in range(1, copies):
        pair.advance(pair.now + CONFIG.thin_copy_spacing)
        assert len(pair.to_server) == len(first) + index
    numbers = [number for _, number in session_nonces(pair.to_server)]
    assert len(numbers) == copies and len(set(numbers)) == copies
    after = pair.client.stats()
    assert after.retransmitted_fragments - before.retransmitted_fragments == copies - 1
    assert after.retransmitted_bytes - before.retransmitted_bytes == 200 * (copies - 1)
    pair.exchange()
    assert pair.received_by_server() == [b"x" * 200]


def test_copies_stop_once_the_line_is_acknowledged() -> None:
    pair = Pair(CONFIG)
    pair.handshake()
    pair.client.send(b"hello")
    pair.collect()
    pair.exchange()  # the first copy and its ACK
    pair.advance(pair.now + CONFIG.min_rto / 2)  # the copies would be due, no timeout yet
    assert session_nonces(pair.to_server) == []


def test_a_timeout_probe_leaves_with_the_most_copies() -> None:
    config = replace(CONFIG, thin_max_copies=MAX_THIN_COPIES)
    pair = Pair(config)
    pair.handshake()
    pair.client.send(b"z" * 200)
    pair.collect()
    pair.advance(pair.now + config.min_rto / 2)  # the line and its copies leave
    first = len(session_nonces(pair.to_server))
    assert 1 < first < config.thin_max_copies  # the prior asks for fewer than the most
    pair.drop_all()  # the whole set is lost
    assert pair.step_timer() is not None  # the RTO fires: one probe
    pair.advance(pair.now + config.thin_max_copies * config.thin_copy_spacing)
    assert len(session_nonces(pair.to_server)) == config.thin_max_copies
    pair.exchange()
    assert pair.received_by_server() == [b"z" * 200]


def test_a_repeated_timeout_probe_leaves_alone() -> None:
    """The line arrives but every ACK is lost: the first probe carries the most copies, the
    next consecutive one none (its set went unanswered: the ACKs are lost, not the data)."""
    config = CONFIG
    pair = Pair(config)
    pair.handshake()
    pair.client.send(b"w" * 200)
    pair.collect()
    spread = config.thin_max_copies * config.thin_copy_spacing
    pair.advance(pair.now + spread)  # the line and its copies leave
    packets: list[int] = []
    for _ in range(3):  # the line, the first probe, the second probe
        packets.append(len(session_nonces(pair.to_server)))
        while pair.to_server:
            pair.deliver_to_server()
        pair.advance(pair.now + config.max_ack_delay)  # the server's ACKs leave ...
        pair.drop_all()  # ... and are lost
        assert pair.step_timer() is not None  # the client's RTO fires: a probe
        pair.advance(pair.now + spread)
    assert packets[1:] == [config.thin_max_copies, 1]
    pair.exchange()
    pair.advance(pair.now + config.max_ack_delay)  # the ACK of the copy-free probe
    pair.exchange()
    assert pair.received_by_server() == [b"w" * 200]
    assert not pair.client.stats().send_buffered_bytes  # the probe's ACK got through


def test_no_copies_with_redundancy_turned_off() -> None:
    config = ConnectionConfig(thin_max_copies=1)
    pair = Pair(config)
    pair.handshake()
    pair.client.send(b"hello")
    pair.collect()
    pair.advance(pair.now + config.min_rto / 2)  # the copies would be due, no timeout yet
    assert pair.client.stats().retransmitted_fragments == 0
    pair.exchange()
    assert pair.received_by_server() == [b"hello"]


# ------------------------------------------------------------------ a dead peer


def test_an_unresponsive_peer_is_declared_dead_within_the_idle_timeout_and_not_flooded() -> None:
    config = CONFIG
    pair = Pair(config)
    pair.handshake()
    for _ in range(3):  # a lossy-looking start: the estimator will ask for the most copies
        pair.client.send(b"y" * 200)
    pair.collect()
    silent_since = pair.now  # from here on the server hears nothing and says nothing
    pair.drop_all()
    sent_before = len(pair.sent_by_client)
    ended = None
    while ended is None and pair.now <= silent_since + config.idle_timeout + 1.0:
        assert pair.step_timer() is not None
        pair.drop_all()
        ended = pair.terminated(pair.client_events)
    assert ended is not None and ended.reason is TerminationReason.IDLE_TIMEOUT
    assert pair.now <= silent_since + config.idle_timeout + 1e-6
    # at most thin_max_copies datagrams per timeout: the linear ones, the doublings up to
    # max_rto, the max_rto ones, and one heartbeat round per interval
    doublings = math.ceil(math.log2(config.max_rto / config.min_rto))
    rounds = (
        config.thin_linear_timeouts
        + doublings
        + math.ceil(config.idle_timeout / config.max_rto)
        + math.ceil(config.idle_timeout / config.heartbeat_interval)
    )
    assert len(pair.sent_by_client) - sent_before <= config.thin_max_copies * rounds


def test_thin_timeouts_are_linear_then_exponential() -> None:
    rtt = RttEstimator(0.1, 0.05, 4.0, 0.01)
    recovery = Recovery(rtt, CongestionController(1200, 10, 0.1))
    recovery.linear_timeouts = 3
    recovery.on_packet_sent(0, 0.0, SentPacket(0, 0.0, 100))
    base = rtt.rto()
    gaps = []
    for _ in range(6):
        deadline = recovery.probe_deadline(awaiting_ack=True)
        assert deadline is not None
        gaps.append(deadline - recovery.time_of_last_ack_eliciting)
        recovery.on_probe_timeout()
        recovery.on_packet_sent(1 + len(gaps), deadline, SentPacket(0, deadline, 100))
    assert gaps == [base, base, base, base, 2 * base, 4 * base]


# ------------------------------------------------------------------ the loss estimator


def test_the_loss_rate_starts_from_the_prior_and_then_measures() -> None:
    loss = LossEstimator()
    assert loss.rate > 0  # the prior: a first line goes out with copies
    for number in range(PRIOR_PACKETS):
        loss.on_delivered(number)
    assert loss.rate == 0.0
    for number in range(PRIOR_PACKETS, PRIOR_PACKETS + 10):
        loss.on_lost(number)
    assert loss.rate == 10 / (PRIOR_PACKETS + 10)


def test_the_window_forgets_old_fates() -> None:
    loss = LossEstimator()
    for number in range(LOSS_WINDOW_PACKETS):
        loss.on_lost(number)
    for number in range(LOSS_WINDOW_PACKETS, 2 * LOSS_WINDOW_PACKETS):
        loss.on_delivered(number)
    assert loss.rate == 0.0


def test_a_loss_an_ack_disproves_is_taken_back() -> None:
    loss = LossEstimator()
    for number in range(PRIOR_PACKETS):
        loss.on_lost(number)
    assert loss.rate == 1.0
    loss.on_delivered(3)  # it was late, not lost (copies overtake each other)
    assert loss.rate == (PRIOR_PACKETS - 1) / PRIOR_PACKETS


def test_bursts_raise_the_chance_that_back_to_back_copies_all_die() -> None:
    rng = random.Random(7)
    independent, bursty = LossEstimator(), LossEstimator()
    in_burst = False
    for number in range(LOSS_WINDOW_PACKETS):
        (independent.on_lost if rng.random() < 0.1 else independent.on_delivered)(number)
        # a Gilbert-Elliott chain with 10 % loss in bursts of 3 (as the link model)
        (bursty.on_lost if in_burst else bursty.on_delivered)(number)
        switch = 1 / 3 if in_burst else 0.1 / (3 * 0.9)
        in_burst = in_burst != (rng.random() < switch)
    assert independent.burst_rate < 0.4 < bursty.burst_rate
    assert bursty.all_lost_probability(3, margin=True) > 2 * independent.all_lost_probability(
        3, margin=True
    )


def spread_window(rate: float) -> LossEstimator:
    """A full loss window that lost ``rate`` of its packets, spread so that no burst is seen."""
    loss = LossEstimator()
    lost = round(rate * LOSS_WINDOW_PACKETS)
    for number in range(LOSS_WINDOW_PACKETS):
        spread = number * lost // LOSS_WINDOW_PACKETS != (number + 1) * lost // LOSS_WINDOW_PACKETS
        (loss.on_lost if spread else loss.on_delivered)(number)
    return loss


def test_the_copies_make_a_lost_line_rarer_than_the_target() -> None:
    config = CONFIG
    thin = ThinStream(config)
    # copies for the measured rate, and (margin) one standard error above it (CONFIDENCE_SIGMAS)
    for rate, expected, with_margin in (
        (0.0, 1, 1),
        (0.01, 1, 2),
        (0.05, 2, 2),
        (0.09, 2, 3),
        (0.2, 3, 4),
        (0.3, 4, config.thin_max_copies),
        (0.6, config.thin_max_copies, config.thin_max_copies),
    ):
        loss = spread_window(rate)
        for margin, wanted in ((False, expected), (True, with_margin)):
            copies = thin.copies_needed(loss, margin=margin)
            assert copies == wanted, (rate, margin, copies)
            assert copies == config.thin_max_copies or (
                loss.all_lost_probability(copies, margin=margin) <= config.thin_loss_target
            )


def test_a_line_within_an_rto_of_the_last_gets_copies_with_the_margin() -> None:
    """At 30 % loss a line sent alone gets 4 copies (0.8 % all lost); one that follows the
    last within an RTO gets 5: lost whole, it would hold back the lines sent behind it."""
    config = CONFIG
    rtt = RttEstimator(config.initial_rtt, config.min_rto, config.max_rto, config.max_ack_delay)
    congestion = CongestionController(MTU, config.initial_window_packets, config.initial_rtt)
    recovery = Recovery(rtt, congestion)
    recovery.loss = spread_window(0.3)
    thin = ThinStream(config)
    thin.refresh(SendBuffer(config.send_buffer_size, 1000, config.max_message_size), recovery)
    assert thin.active
    line = [DataFrame(0, 0, 0, 1, b"x" * 200)]
    handlers: list[DeliveryHandler] = [lambda delivery: None]
    now = 0.0
    owed: list[int] = []
    for gap in (0.0, 2 * rtt.rto(), rtt.rto() / 2):  # the first, a sparse one, a dense one
        now += gap
        thin.on_data_sent(line, handlers, now, recovery, lambda fragment: True)
        copies = 1
        while thin.take_due(now + 1.0) is not None:
            copies += 1
        owed.append(copies)
    assert owed == [4, 4, config.thin_max_copies]


# ------------------------------------------------------------------ ACK ranges


def test_a_range_is_repeated_in_a_few_acks_then_left_out() -> None:
    receiver = Receiver(1 << 20, 1000, 1 << 20, 0.01)
    for number in (0, 2, 4):  # three ranges: 4, 2, 0
        receiver.on_packet(number, 0.0, ack_eliciting=True, urgent=False)
    reports = [receiver.build_ack(0.0).ranges for _ in range(ACK_RANGE_REPEATS + 1)]
    assert reports[:ACK_RANGE_REPEATS] == [((4, 4), (2, 2), (0, 0))] * ACK_RANGE_REPEATS
    assert reports[ACK_RANGE_REPEATS] == ((4, 4),)  # the highest range is always there
    receiver.on_packet(1, 0.0, ack_eliciting=True, urgent=False)  # late: joins 0..2
    assert receiver.build_ack(0.0).ranges == ((4, 4), (0, 2))


def test_an_ack_never_holds_more_than_the_wire_allows() -> None:
    receiver = Receiver(1 << 20, 1000, 1 << 20, 0.01)
    for number in range(0, 4 * MAX_ACK_RANGES, 2):
        receiver.on_packet(number, 0.0, ack_eliciting=True, urgent=False)
    assert len(receiver.build_ack(0.0).ranges) == MAX_ACK_RANGES
