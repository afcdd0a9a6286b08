"""Drive one Listener and N client Connections through the virtual-time simulator.

A :class:`Scenario` says everything a run depends on: the seed, the link impairments, what
each side sends and who closes. Its ``repr`` is valid Python, and ``run_scenario(scenario)``
replays the identical trace (the seed feeds both the network's random source and the
``random_bytes`` the endpoints draw ids and secrets from), so a failure message carries
its own reproducer.

Each application end (:class:`Peer`) behaves like a well-written chat client: it pushes its
scripted messages as fast as the send buffer accepts them (retrying after every input, as an
application awaiting ``send_capacity`` would), records everything it receives with the
virtual time, and calls ``close`` when its script says so.
"""

from __future__ import annotations

import functools
import os
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hypothesis import settings

from rudp_chat.core.codec import fragment_size
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.errors import SendBufferFullError
from rudp_chat.core.events import (
    Connected,
    ConnectionTerminated,
    Event,
    MessageReceived,
    TerminationReason,
)
from rudp_chat.core.listener import Listener
from rudp_chat.core.noise import StaticKey
from rudp_chat.core.state import State
from rudp_chat.core.trace import TraceSink
from rudp_chat.sim import TIMER_GUARD_S, LinkProfile, Network
from rudp_chat.sim.endpoint import Endpoint, Recorded

__all__ = [
    "CLIENT",
    "SERVER",
    "Closer",
    "Harness",
    "Pair",
    "Peer",
    "Scenario",
    "client_address",
    "fragment_edges",
    "message_bytes",
    "run_scenario",
    "seeded_random_bytes",
    "sim_settings",
]

SERVER: Address = ("10.0.0.1", 4433)
CLIENT: Address = ("10.1.0.1", 50_000)
Closer = Literal["client", "server", "both", "client-eager", "none"]
"""Who calls ``close``: ``client``/``server``/``both`` once it has queued its messages and
received all of the peer's; ``client-eager`` as soon as its own are queued (the server's
queued data must still arrive); ``none`` nobody (timeouts, partitions)."""

CLEAN = (TerminationReason.CLOSED, TerminationReason.CLOSED_BY_PEER)
PERFECT = LinkProfile()
DEFAULT_CONFIG = ConnectionConfig()


def sim_settings(ci_examples: int, **kwargs: object) -> settings:
    """Settings for a simulator property: ``ci_examples`` under the ci profile, ten times as many
    under ``HYPOTHESIS_PROFILE=thorough``; never a deadline (run time follows the volume)."""
    factor = 10 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "thorough" else 1
    return settings(deadline=None, max_examples=ci_examples * factor, **kwargs)  # type: ignore[arg-type]


def fragment_edges(
    multiples: Sequence[int] = (1, 2), max_datagram_size: int = DEFAULT_CONFIG.max_datagram_size
) -> tuple[int, ...]:
    """Message sizes one byte under, at and over whole ``multiples`` of the fragment size, in
    both modes (an encrypted fragment is smaller than an insecure one), derived from the codec
    so that a format change cannot move a boundary test off its boundary."""
    fragments = {fragment_size(max_datagram_size, insecure) for insecure in (False, True)}
    return tuple(sorted({k * f + d for f in fragments for k in multiples for d in (-1, 0, 1)}))


def client_address(index: int) -> Address:
    """Client ``index`` lives on its own host, so per-address limits never bite by accident."""
    return (f"10.1.{index // 250}.{index % 250 + 1}", 50_000 + index)


def seeded_random_bytes(seed: int | str) -> Callable[[int], bytes]:
    """A ``random_bytes`` for the core that replays with its seed."""
    return random.Random(f"random_bytes/{seed}").randbytes


def message_bytes(seed: int, side: str, client: int, index: int, size: int) -> bytes:
    """Deterministic, distinct contents: the first bytes name the message, so a reordering or a
    mix-up between clients cannot go unnoticed even where random tails might collide."""
    tag = f"{side}{client}:{index};".encode()
    if size <= len(tag):
        return tag[:size]
    rng = random.Random(f"{seed}/{side}/{client}/{index}")
    return tag + rng.randbytes(size - len(tag))


@dataclass(frozen=True)
class Scenario:
    """Everything one simulated run depends on; ``run_scenario(eval(repr(s)))`` replays it."""

    seed: int
    client_sizes: tuple[tuple[int, ...], ...] = ((),)
    """Per client: sizes of the messages it sends, in order. Its length is the client count."""
    server_sizes: tuple[tuple[int, ...], ...] = ((),)
    """Per client: sizes of the messages the server sends on that client's connection."""
    up: LinkProfile = PERFECT
    """Every client -> server direction."""
    down: LinkProfile = PERFECT
    """Every server -> client direction."""
    closer: Closer = "client"
    config: ConnectionConfig = DEFAULT_CONFIG
    listener_config: ListenerConfig | None = None
    """Defaults to ``ListenerConfig(connection=config)``."""
    stagger: float = 0.0
    """Client ``i`` starts at ``i * stagger`` seconds."""
    until: float = 300.0
    """Virtual seconds after which the run is cut (and the checks fail if work remains)."""

    def __post_init__(self) -> None:
        if len(self.client_sizes) != len(self.server_sizes):
            raise ValueError("client_sizes and server_sizes need one entry per client")


@dataclass
class Peer:
    """One application end of one connection."""

    name: str
    outbox: deque[bytes]
    closes: bool
    waits_for_peer: bool
    expected: int = 0
    """How many messages the other end sends (what ``waits_for_peer`` waits for)."""
    connection: Connection | None = None
    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    events: list[tuple[float, Event]] = field(default_factory=list)
    connected_at: float | None = None
    terminated: ConnectionTerminated | None = None
    terminated_at: float | None = None
    close_called_at: float | None = None

    def record(self, time: float, event: Event) -> None:
        self.events.append((time, event))
        if isinstance(event, Connected):
            self.connected_at = time
        elif isinstance(event, MessageReceived):
            self.received.append(event.data)
            self.message_ids.append(event.message_id)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            self.terminated_at = time

    def pump(self, now: float) -> None:
        """Queue as many scripted messages as the send buffer takes; close when the script says."""
        connection = self.connection
        if connection is None:
            return
        while self.outbox and connection.state in (State.CONNECTING, State.OPEN):
            try:
                connection.send(self.outbox[0])
            except SendBufferFullError:
                break
            self.sent.append(self.outbox.popleft())
        if (
            self.closes
            and self.close_called_at is None
            and not self.outbox
            and connection.state is State.OPEN
            and (not self.waits_for_peer or len(self.received) >= self.expected)
        ):
            self.close_called_at = now
            connection.close()


class AppNode:
    """The network node of one endpoint: the simulator's :class:`Endpoint` plus scripted peers.

    After every input it lets each peer push more messages (acknowledgements may have freed
    the send buffer) and records when datagrams arrive from each source address.
    """

    def __init__(self, endpoint: Endpoint, harness: Harness) -> None:
        self.endpoint = endpoint
        self.harness = harness
        self.last_arrival: dict[Address, float] = {}
        """Per source address: when its last datagram arrived, valid or not."""
        self.last_heard: dict[Address, float] = {}
        """Per source address: when a connection last accepted one of its datagrams."""

    def _accepted_from(self, addr: Address) -> tuple[int, int]:
        """(connections, datagrams they accepted) from ``addr``; a HELLO that creates a
        server connection counts as heard through the first number."""
        connections = [c for c in self.endpoint.connections if c.peer_address == addr]
        return len(connections), sum(c.stats().datagrams_received for c in connections)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.last_arrival[addr] = now
        before = self._accepted_from(addr) if self.harness.track_heard else (0, 0)
        self.endpoint.receive_datagram(data, addr, now)
        if self.harness.track_heard and self._accepted_from(addr) != before:
            self.last_heard[addr] = now
        self.after_input(now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self.after_input(now)

    def after_input(self, now: float) -> None:
        for connection in self.endpoint.connections:
            peer = self.harness.peer_of(connection)
            if peer is not None:
                peer.pump(now)
        self.endpoint.drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.endpoint.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()


class Harness:
    """A network with one listener at :data:`SERVER` and ``len(scenario.client_sizes)`` clients."""

    def __init__(self, scenario: Scenario, *, track_heard: bool = False) -> None:
        self.scenario = scenario
        self.track_heard = track_heard
        """Record ``AppNode.last_heard`` (costs a stats snapshot per datagram)."""
        seed = scenario.seed
        self.network = Network(seed=seed)
        self.random_bytes = seeded_random_bytes(seed)
        listener_config = scenario.listener_config or ListenerConfig(connection=scenario.config)
        self.listener = Listener(self.random_bytes, listener_config)
        self.server_endpoint = Endpoint(self.listener, on_event=self._on_server_event)
        self.server_node = AppNode(self.server_endpoint, self)
        self.network.attach(SERVER, self.server_node)
        closer = scenario.closer
        self.clients: list[Peer] = []
        self.servers: list[Peer] = []
        self.client_nodes: list[AppNode] = []
        self._peers: dict[int, Peer] = {}  # id(connection) -> peer
        self._by_client_id: dict[bytes, int] = {}
        for index, (up_sizes, down_sizes) in enumerate(
            zip(scenario.client_sizes, scenario.server_sizes, strict=True)
        ):
            address = client_address(index)
            self.network.set_link(address, SERVER, scenario.up)
            self.network.set_link(SERVER, address, scenario.down)
            self.clients.append(
                Peer(
                    f"client{index}",
                    deque(message_bytes(seed, "c", index, i, n) for i, n in enumerate(up_sizes)),
                    closes=closer in ("client", "both", "client-eager"),
                    waits_for_peer=closer != "client-eager",
                    expected=len(down_sizes),
                )
            )
            self.servers.append(
                Peer(
                    f"server{index}",
                    deque(message_bytes(seed, "s", index, i, n) for i, n in enumerate(down_sizes)),
                    closes=closer in ("server", "both"),
                    waits_for_peer=True,
                    expected=len(up_sizes),
                )
            )
        for index in range(len(self.clients)):
            start = index * scenario.stagger
            if start == 0.0:
                self._start_client(index)
            else:
                self.network.call_at(start, functools.partial(self._start_client, index))

    # ----------------------------------------------------------------- wiring

    def _start_client(self, index: int) -> None:
        now = self.network.now
        connection = Connection.connect(SERVER, now, self.random_bytes, self.scenario.config)
        peer = self.clients[index]
        peer.connection = connection
        self._peers[id(connection)] = peer
        self._by_client_id[connection.local_id] = index
        endpoint = Endpoint(connection, on_event=self._on_client_event)
        node = AppNode(endpoint, self)
        self.client_nodes.append(node)
        peer.pump(now)
        self.network.attach(client_address(index), node)

    def peer_of(self, connection: Connection) -> Peer | None:
        return self._peers.get(id(connection))

    def _on_client_event(self, record: Recorded) -> None:
        peer = self._peers[id(record.connection)]
        peer.record(record.time, record.event)

    def _on_server_event(self, record: Recorded) -> None:
        connection = record.connection
        peer = self._peers.get(id(connection))
        if peer is None:
            index = self._by_client_id[connection.remote_id or b""]
            peer = self.servers[index]
            if peer.connection is not None:
                raise AssertionError(f"a second server connection for client {index}")
            peer.connection = connection
            self._peers[id(connection)] = peer
        peer.record(record.time, record.event)
        peer.pump(record.time)

    # ------------------------------------------------------------------ runs

    @property
    def peers(self) -> list[Peer]:
        return [p for pair in zip(self.clients, self.servers, strict=True) for p in pair]

    def run(self, until: float | None = None, stop: Callable[[], bool] | None = None) -> None:
        self.network.run(until=self.scenario.until if until is None else until, stop=stop)

    def all_terminated(self) -> bool:
        return all(p.terminated is not None for p in self.peers)

    def describe(self) -> str:
        """What a failure message needs to replay and understand the run."""
        lines = [
            f"replay: run_scenario({self.scenario!r})",
            f"seed={self.scenario.seed} virtual_time={self.network.now:.3f} "
            f"trace={self.network.trace_digest()}",
        ]
        for peer in self.peers:
            connection = peer.connection
            lines.append(
                f"  {peer.name}: sent={len(peer.sent)}+{len(peer.outbox)} queued "
                f"received={len(peer.received)}/{peer.expected} connected_at={peer.connected_at} "
                f"close_called_at={peer.close_called_at} terminated={peer.terminated!r} "
                f"at={peer.terminated_at} "
                f"stats={connection.stats() if connection is not None else None}"
            )
        lines.append(
            f"  listener: {self.listener.stats} connections={len(self.listener.connections)}"
        )
        return "\n".join(lines)

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n{self.describe()}")

    # ---------------------------------------------------------------- checks

    def check_exactly_once_in_order(self, *, complete: bool = True) -> None:
        """What each end received is what the other sent, in order, once (all of it if
        ``complete``, else a prefix)."""
        for sender, receiver in (
            *zip(self.clients, self.servers, strict=True),
            *zip(self.servers, self.clients, strict=True),
        ):
            got = receiver.received
            sent = sender.sent
            if receiver.message_ids != list(range(len(got))):
                raise self.fail(f"{receiver.name} got message ids {receiver.message_ids[:20]}...")
            if complete:
                if sender.outbox:
                    raise self.fail(f"{sender.name} could not queue {len(sender.outbox)} messages")
                ok = got == sent
            else:
                ok = got == sent[: len(got)]
            if not ok:
                first_bad = next(
                    (i for i, (a, b) in enumerate(zip(got, sent, strict=False)) if a != b),
                    min(len(got), len(sent)),
                )
                raise self.fail(
                    f"{receiver.name} received {len(got)} messages, {sender.name} sent "
                    f"{len(sent)}; first difference at index {first_bad}"
                )

    def check_events_well_formed(self) -> None:
        """At most one Connected (first), at most one ConnectionTerminated (last)."""
        for peer in self.peers:
            kinds = [type(event) for _, event in peer.events]
            if kinds.count(ConnectionTerminated) > 1 or kinds.count(Connected) > 1:
                raise self.fail(f"{peer.name} events {kinds}")
            if ConnectionTerminated in kinds and kinds[-1] is not ConnectionTerminated:
                raise self.fail(f"{peer.name} had events after ConnectionTerminated")
            if kinds and kinds[0] is not Connected and kinds[0] is not ConnectionTerminated:
                raise self.fail(f"{peer.name} had {kinds[0].__name__} before Connected")
            times = [time for time, _ in peer.events]
            if times != sorted(times):
                raise self.fail(f"{peer.name} event times go backwards")

    def check_clean_close(self, within: float | None = None) -> None:
        """Every end ended CLOSED or CLOSED_BY_PEER as the closer policy implies, every client
        connection reached State.CLOSED and the listener forgot every connection."""
        closer = self.scenario.closer
        for peer in self.peers:
            if peer.terminated is None:
                raise self.fail(f"{peer.name} never terminated")
            if peer.terminated.reason not in CLEAN:
                raise self.fail(f"{peer.name} ended {peer.terminated!r}")
            if closer in ("client", "client-eager", "server"):
                closed_locally = peer.name.startswith(closer.split("-")[0])
                expected = CLEAN[0] if closed_locally else CLEAN[1]
                if peer.terminated.reason is not expected:
                    raise self.fail(f"{peer.name} ended {peer.terminated!r}, expected {expected}")
            if within is not None and (peer.terminated_at or 0.0) > within:
                raise self.fail(f"{peer.name} terminated at {peer.terminated_at} > {within}")
        for peer in self.clients:
            assert peer.connection is not None
            if not peer.connection.is_closed:
                raise self.fail(f"{peer.name} is {peer.connection.state} at the end")
        if self.listener.connections:
            raise self.fail(f"the listener still holds {len(self.listener.connections)}")


def run_scenario(scenario: Scenario, *, within: float | None = None) -> Harness:
    """Run ``scenario`` to the end and check delivery and clean close; returns the harness.

    Raises AssertionError with a replayable description when a check fails.
    """
    harness = Harness(scenario)
    harness.run()
    harness.check_events_well_formed()
    harness.check_exactly_once_in_order()
    if scenario.closer != "none":
        harness.check_clean_close(within)
    return harness


def total_bytes(sizes: Sequence[Sequence[int]]) -> int:
    return sum(sum(s) for s in sizes)


# ------------------------------------------------------------------ by hand


class Pair:
    """A client :class:`Connection` and a :class:`Listener` wired by hand (h11's two-connection
    helper): datagrams wait in ``to_server`` / ``to_client`` until the test delivers, drops,
    duplicates or reorders them, and time moves only when the test says.

    After every input both sides' output is collected and their events are taken into
    ``client_events`` / ``server_events``.
    """

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        listener_config: ListenerConfig | None = None,
        *,
        seed: int = 0,
        client_address: Address = CLIENT,
        client_key: StaticKey | None = None,
        client_trace: TraceSink | None = None,
        server_trace: Callable[[], TraceSink] | None = None,
    ) -> None:
        """``client_key`` makes the client prove that identity (IK); without it, a guest.
        ``client_trace`` and ``server_trace`` (a factory) receive the two ends' qlog events."""
        self.config = config or (listener_config or ListenerConfig()).connection
        self.now = 0.0
        self.client_address = client_address
        self.listener = Listener(
            seeded_random_bytes(f"listener/{seed}"),
            listener_config or ListenerConfig(connection=self.config),
            trace=server_trace,
        )
        self.client = Connection.connect(
            SERVER,
            self.now,
            seeded_random_bytes(f"client/{seed}"),
            self.config,
            client_key=client_key,
            trace=client_trace,
        )
        self.server: Connection | None = None
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.sent_by_client: list[bytes] = []
        self.sent_by_server: list[bytes] = []
        self._fired_at: float | None = None
        self.collect()

    # ------------------------------------------------------------- plumbing

    def collect(self) -> None:
        """Take both sides' datagrams into the in-flight lists and their events into the logs."""
        for data, addr in self.client.datagrams_to_send(self.now):
            assert addr == SERVER, addr
            self.to_server.append(data)
            self.sent_by_client.append(data)
        for data, addr in self.listener.datagrams_to_send(self.now):
            assert addr == self.client_address, addr
            self.to_client.append(data)
            self.sent_by_server.append(data)
        while (accepted := self.listener.accept()) is not None:
            assert self.server is None, "one client, one server connection"
            self.server = accepted
        while (event := self.client.next_event()) is not None:
            self.client_events.append(event)
        if self.server is not None:
            while (event := self.server.next_event()) is not None:
                self.server_events.append(event)
            # taking events may have woken the connection (a window update is due): flush it
            for data, addr in self.listener.datagrams_to_send(self.now):
                assert addr == self.client_address, addr
                self.to_client.append(data)
                self.sent_by_server.append(data)

    def deliver_to_server(self, index: int = 0) -> None:
        self.listener.receive_datagram(self.to_server.pop(index), self.client_address, self.now)
        self.collect()

    def deliver_to_client(self, index: int = 0) -> None:
        self.client.receive_datagram(self.to_client.pop(index), SERVER, self.now)
        self.collect()

    def exchange(self, max_datagrams: int = 100_000) -> int:
        """Deliver everything in flight, in order, both ways, until nothing is left at ``now``;
        returns how many datagrams were delivered."""
        delivered = 0
        while self.to_server or self.to_client:
            if delivered >= max_datagrams:
                raise AssertionError(f"still talking after {max_datagrams} datagrams")
            if self.to_server:
                self.deliver_to_server()
            else:
                self.deliver_to_client()
            delivered += 1
        return delivered

    def drop_all(self) -> int:
        count = len(self.to_server) + len(self.to_client)
        self.to_server.clear()
        self.to_client.clear()
        return count

    def next_timer(self) -> float | None:
        deadlines = [
            t for t in (self.client.get_timer(), self.listener.get_timer()) if t is not None
        ]
        return min(deadlines) if deadlines else None

    def _fire_time(self, deadline: float) -> float:
        """When to fire for ``deadline``: never before ``now``, and (like the simulator's
        ``TIMER_GUARD_S``) a hair after ``now`` if timers already ran at ``now``, so a deadline
        that firing does not clear cannot spin forever (see test_connection's timer tests)."""
        if deadline > self.now:
            return deadline
        return self.now + TIMER_GUARD_S if self._fired_at == self.now else self.now

    def fire_timers(self) -> None:
        """Run both sides' timers that are due at ``now``."""
        self._fired_at = self.now
        timer = self.client.get_timer()
        if timer is not None and timer <= self.now:
            self.client.handle_timer(self.now)
        timer = self.listener.get_timer()
        if timer is not None and timer <= self.now:
            self.listener.handle_timer(self.now)
        self.collect()

    def step_timer(self) -> float | None:
        """Jump to the next timer and fire it; returns the new ``now`` (None: no timer)."""
        deadline = self.next_timer()
        if deadline is None:
            return None
        self.now = self._fire_time(deadline)
        self.fire_timers()
        return self.now

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing (in order) every timer due on the way; datagrams
        produced are collected but not delivered."""
        while True:
            deadline = self.next_timer()
            if deadline is None or self._fire_time(deadline) > to:
                break
            self.step_timer()
        self.now = max(self.now, to)

    def run(self, until: float, *, lossless: bool = True) -> None:
        """Deliver everything (if ``lossless``) and fire timers until ``until`` or quiescence."""
        while True:
            if lossless:
                self.exchange()
            deadline = self.next_timer()
            if deadline is None:
                return
            if self._fire_time(deadline) > until:
                self.now = max(self.now, until)
                return
            self.step_timer()

    def handshake(self) -> Connection:
        """Complete the handshake over a perfect link at ``now``; returns the server connection."""
        self.exchange()
        assert self.server is not None and self.client.state is State.OPEN, self.client_events
        return self.server

    # --------------------------------------------------------------- views

    def received_by_client(self) -> list[bytes]:
        return [e.data for e in self.client_events if isinstance(e, MessageReceived)]

    def received_by_server(self) -> list[bytes]:
        return [e.data for e in self.server_events if isinstance(e, MessageReceived)]

    def terminated(self, events: list[Event]) -> ConnectionTerminated | None:
        ends = [e for e in events if isinstance(e, ConnectionTerminated)]
        assert len(ends) <= 1, ends
        return ends[0] if ends else None
