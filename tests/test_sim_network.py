"""The virtual-time network, driven by tiny sans-IO nodes written here."""

from __future__ import annotations

import pytest

from rudp_chat.sim.link import LinkProfile
from rudp_chat.sim.network import TIMER_GUARD_S, Address, Network

CLIENT: Address = ("10.0.0.1", 4000)
SERVER: Address = ("10.0.0.2", 5000)
NOWHERE: Address = ("10.0.0.9", 9)


class Outbox:
    """Queues datagrams for ``datagrams_to_send`` and has no timer unless a subclass says so."""

    def __init__(self) -> None:
        self.outbox: list[tuple[bytes, Address]] = []
        self.received: list[tuple[float, bytes, Address]] = []

    def send(self, data: bytes, addr: Address) -> None:
        self.outbox.append((data, addr))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append((now, data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("no timer was armed")


class Echo(Outbox):
    """Sends every datagram back to its source."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        super().receive_datagram(data, addr, now)
        self.send(data, addr)


class Pinger(Outbox):
    """Sends ``count`` numbered pings to ``peer``, one every ``interval`` seconds, on its timer."""

    def __init__(self, peer: Address, interval: float, count: int) -> None:
        super().__init__()
        self.peer = peer
        self.interval = interval
        self.remaining = count
        self.next_ping: float | None = 0.0 if count else None

    def get_timer(self) -> float | None:
        return self.next_ping

    def handle_timer(self, now: float) -> None:
        self.send(f"ping {self.remaining}".encode(), self.peer)
        self.remaining -= 1
        self.next_ping = now + self.interval if self.remaining else None


class Alarm(Outbox):
    """Fires at each of ``deadlines`` and logs ``(name, now)`` to a shared list."""

    def __init__(self, name: str, deadlines: list[float], log: list[tuple[str, float]]) -> None:
        super().__init__()
        self.name = name
        self.deadlines = sorted(deadlines)
        self.log = log

    def get_timer(self) -> float | None:
        return self.deadlines[0] if self.deadlines else None

    def handle_timer(self, now: float) -> None:
        self.log.append((self.name, now))
        self.deadlines = [d for d in self.deadlines if d > now]


class Stuck(Outbox):
    """A broken node whose timer is always overdue, however often it fires."""

    fired = 0

    def get_timer(self) -> float | None:
        return 0.0

    def handle_timer(self, now: float) -> None:
        self.fired += 1


def test_datagrams_arrive_after_link_delay_from_the_senders_address() -> None:
    network = Network(seed=0, default_profile=LinkProfile(delay=0.05))
    client, server = Outbox(), Echo()
    network.attach(CLIENT, client)
    network.attach(SERVER, server)
    network.call_at(1.0, lambda: client.send(b"hello", SERVER))
    network.run()
    [(server_time, request, source)] = server.received
    [(client_time, reply, reply_source)] = client.received
    assert (request, source, reply, reply_source) == (b"hello", CLIENT, b"hello", SERVER)
    assert (server_time, client_time) == pytest.approx((1.05, 1.10))
    assert network.stats.sent == network.stats.delivered == 2


def test_flush_sends_what_an_app_action_queued_outside_callbacks() -> None:
    network = Network(seed=0)
    client, server = Outbox(), Outbox()
    network.attach(CLIENT, client)
    network.attach(SERVER, server)
    client.send(b"now", SERVER)
    network.flush(CLIENT)
    network.run()
    assert server.received == [(0.0, b"now", CLIENT)]


def test_attach_sends_what_the_node_already_queued() -> None:
    network = Network(seed=0)
    server, client = Outbox(), Outbox()
    client.send(b"early", SERVER)
    network.attach(SERVER, server)
    network.attach(CLIENT, client)
    network.run()
    assert server.received == [(0.0, b"early", CLIENT)]


def test_per_direction_links() -> None:
    network = Network(seed=0)
    network.set_link(CLIENT, SERVER, LinkProfile(delay=0.2))
    network.set_link(SERVER, CLIENT, LinkProfile(delay=0.03))
    client, server = Outbox(), Echo()
    network.attach(CLIENT, client)
    network.attach(SERVER, server)
    network.call_at(0.0, lambda: client.send(b"x", SERVER))
    network.run()
    assert [t for t, _, _ in client.received] == [pytest.approx(0.23)]
    assert network.link(CLIENT, SERVER).stats.delivered == 1


def test_set_link_changes_impairments_of_the_existing_link() -> None:
    network = Network(seed=0)
    link = network.link(CLIENT, SERVER)
    assert network.set_link(CLIENT, SERVER, LinkProfile(loss=1.0)) is link
    assert link.profile.loss == 1.0


def test_a_shared_link_queues_several_senders_behind_one_bottleneck() -> None:
    network = Network(seed=0)
    other: Address = ("10.0.0.3", 4000)
    rate = 1000.0  # bytes per second: a 100-byte datagram takes 0.1 s
    link = network.share_link([(CLIENT, SERVER), (other, SERVER)], LinkProfile(rate=rate, queue=1))
    assert network.link(other, SERVER) is link
    first, second, server = Outbox(), Outbox(), Outbox()
    network.attach(SERVER, server)
    network.attach(CLIENT, first)
    network.attach(other, second)
    network.call_at(0.0, lambda: first.send(bytes(100), SERVER))
    network.call_at(0.0, lambda: second.send(bytes(100), SERVER))
    network.call_at(0.0, lambda: second.send(bytes(100), SERVER))  # the queue holds one only
    network.run()
    assert [t for t, _, _ in server.received] == pytest.approx([0.1, 0.2])
    assert [addr for _, _, addr in server.received] == [CLIENT, other]
    assert link.stats.queue_drops == 1


def test_share_link_refuses_a_direction_that_has_its_own_link() -> None:
    network = Network(seed=0)
    network.link(CLIENT, SERVER)
    with pytest.raises(ValueError, match="own link"):
        network.share_link([(CLIENT, SERVER)], LinkProfile())


def test_timers_fire_in_deadline_order_at_their_deadlines() -> None:
    network = Network(seed=0)
    log: list[tuple[str, float]] = []
    network.attach(CLIENT, Alarm("a", [0.5, 2.0, 3.0], log))
    network.attach(SERVER, Alarm("b", [1.0, 2.0], log))
    network.run()
    # Equal deadlines fire in the order they were scheduled.
    assert log == [("a", 0.5), ("b", 1.0), ("a", 2.0), ("b", 2.0), ("a", 3.0)]
    assert network.stats.timers_fired == 5


def test_superseded_timer_does_not_fire() -> None:
    network = Network(seed=0)
    log: list[tuple[str, float]] = []
    alarm = Alarm("a", [5.0], log)
    network.attach(CLIENT, alarm)

    def reschedule(deadline: float) -> None:
        alarm.deadlines = [deadline]

    network.call_at(1.0, lambda: reschedule(3.0))
    network.call_at(2.0, lambda: reschedule(7.0))
    network.run()
    assert log == [("a", 7.0)]


def test_overdue_timer_fires_now_and_a_stuck_one_cannot_stall_time() -> None:
    network = Network(seed=0)
    stuck = Stuck()
    network.call_at(0.25, lambda: network.attach(CLIENT, stuck))
    network.run(until=0.25 + 1000 * TIMER_GUARD_S)
    assert 990 <= stuck.fired <= 1001
    assert network.now == pytest.approx(0.25 + 1000 * TIMER_GUARD_S)


def test_run_raises_after_max_steps_instead_of_hanging() -> None:
    network = Network(seed=0)
    network.attach(CLIENT, Stuck())
    with pytest.raises(RuntimeError, match="100 steps"):
        network.run(max_steps=100)


def test_call_at_runs_in_time_then_insertion_order_and_never_in_the_past() -> None:
    network = Network(seed=0)
    log: list[tuple[str, float]] = []

    def note(name: str) -> None:
        log.append((name, network.now))

    network.call_at(2.0, lambda: note("second"))
    network.call_at(1.0, lambda: note("first"))
    network.call_at(2.0, lambda: note("third"))
    network.call_at(2.0, lambda: network.call_at(0.5, lambda: note("late")))
    network.run()
    assert log == [("first", 1.0), ("second", 2.0), ("third", 2.0), ("late", 2.0)]
    assert network.stats.callbacks == 5


def test_run_until_stops_before_later_happenings_and_advances_the_clock() -> None:
    network = Network(seed=0)
    log: list[float] = []
    network.call_at(1.0, lambda: log.append(network.now))
    network.call_at(3.0, lambda: log.append(network.now))
    network.run(until=2.0)
    assert (log, network.now) == ([1.0], 2.0)
    network.run(until=3.0)
    assert log == [1.0, 3.0]
    network.run(until=10.0)
    assert network.now == 10.0
    assert not network.step()


def test_run_stops_when_stop_is_true() -> None:
    network = Network(seed=0, default_profile=LinkProfile(delay=0.01))
    client, server = Pinger(SERVER, interval=0.1, count=10), Echo()
    network.attach(CLIENT, client)
    network.attach(SERVER, server)
    network.run(stop=lambda: len(client.received) == 3)
    assert len(client.received) == 3
    assert network.now == pytest.approx(0.22)


def test_datagrams_to_unattached_addresses_are_counted_and_dropped() -> None:
    network = Network(seed=0, default_profile=LinkProfile(delay=0.1))
    client, server = Outbox(), Outbox()
    network.attach(CLIENT, client)
    network.attach(SERVER, server)
    client.send(b"void", NOWHERE)
    client.send(b"in flight", SERVER)
    network.flush(CLIENT)
    network.call_at(0.05, lambda: network.detach(SERVER))
    network.run()
    assert server.received == []
    assert network.stats.undeliverable == 2
    assert network.stats.delivered == 0


def test_detach_cancels_the_timer_and_frees_the_address() -> None:
    network = Network(seed=0)
    log: list[tuple[str, float]] = []
    network.attach(CLIENT, Alarm("old", [1.0], log))
    network.detach(CLIENT)
    network.attach(CLIENT, Alarm("new", [2.0], log))
    network.run()
    assert log == [("new", 2.0)]


def test_attach_and_detach_misuse() -> None:
    network = Network(seed=0)
    network.attach(CLIENT, Outbox())
    with pytest.raises(ValueError, match="already attached"):
        network.attach(CLIENT, Outbox())
    with pytest.raises(KeyError):
        network.detach(SERVER)
    with pytest.raises(KeyError):
        network.flush(SERVER)


LOSSY = LinkProfile(loss=0.2, duplicate=0.05, reorder=0.1, delay=0.02, jitter=0.01, corrupt=0.02)


def ping_trace(seed: int, count: int = 300) -> tuple[str, int]:
    network = Network(seed=seed, default_profile=LOSSY)
    client, server = Pinger(SERVER, interval=0.001, count=count), Echo()
    network.attach(CLIENT, client)
    network.attach(SERVER, server)
    network.run()
    return network.trace_digest(), len(client.received)


def test_same_seed_replays_the_identical_trace() -> None:
    assert ping_trace(1) == ping_trace(1)
    assert ping_trace(1)[0] != ping_trace(2)[0]


def test_long_lossy_run_matches_the_link_model() -> None:
    _, echoes = ping_trace(3, count=20_000)
    # Each way a datagram survives with p = 0.8 and is doubled with p = 0.05: 0.84^2 = 0.7056.
    assert 0.69 * 20_000 < echoes < 0.72 * 20_000
