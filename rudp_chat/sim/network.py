"""A deterministic network of sans-IO nodes in virtual time.

Every happening (a datagram's arrival, a node's timer, an application callback) waits in one heap
keyed by ``(time, insertion counter)``, so equal times replay in the order they were scheduled and
one seed replays one trace. Each direction between two addresses is a :class:`Link`, the same
impairment model the UDP proxy uses. Timers are pulled: after any input the network re-reads the
node's ``get_timer()``; superseded heap entries are skipped when they surface.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from rudp_chat.sim.link import Link, LinkProfile, RandomSource

__all__ = ["TIMER_GUARD_S", "Address", "Network", "NetworkStats", "Node"]

Address: TypeAlias = tuple[str, int]

TIMER_GUARD_S = 1e-6
"""How far past ``now`` a timer that is still due right after firing is re-armed: otherwise a node
that keeps answering a deadline <= now would fire forever at one instant. 1 us lets virtual time
advance (so ``run(until=...)`` ends) and is far below any protocol timer's granularity."""

_NO_TIMER = -1  # timer_seq of a node without a live heap entry; real counters start at 0
_PERFECT = LinkProfile()
_TRACE_HEADER = struct.Struct("!dI")  # arrival time, payload length


class Node(Protocol):
    """What a sans-IO protocol endpoint offers the network (aioquic/h11 style)."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take in a datagram that ``addr`` sent."""
        ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Drain the datagrams queued for sending."""
        ...

    def get_timer(self) -> float | None:
        """The absolute time ``handle_timer`` is next due, or None."""
        ...

    def handle_timer(self, now: float) -> None:
        """Act on the deadline ``get_timer`` announced."""
        ...


@dataclass(slots=True)
class NetworkStats:
    """Counts of what the network did; drops on a link are in that link's ``stats``."""

    sent: int = 0
    """Datagrams nodes handed to links."""

    delivered: int = 0
    """Datagrams handed to a node's ``receive_datagram``."""

    undeliverable: int = 0
    """Datagrams that arrived at an address with no node attached (dropped)."""

    timers_fired: int = 0
    """Calls of ``handle_timer``."""

    callbacks: int = 0
    """Callbacks from ``call_at`` that ran."""


@dataclass(slots=True, eq=False)
class _Attached:
    """A node at its address, and its one live timer entry."""

    addr: Address
    node: Node
    timer_seq: int = _NO_TIMER
    deadline: float = math.inf


@dataclass(slots=True)
class _Arrival:
    dst: Address
    src: Address
    data: bytes


@dataclass(slots=True)
class _TimerDue:
    """Live only while ``record.timer_seq`` equals the heap entry's counter."""

    record: _Attached


@dataclass(slots=True)
class _Callback:
    callback: Callable[[], None]


_Event: TypeAlias = _Arrival | _TimerDue | _Callback


class Network:
    """Nodes at addresses, the links between them, and one virtual clock.

    Everything random comes from one ``random.Random(seed)``, so a seed replays the same trace.
    After delivering a datagram or firing a timer the network drains that node's datagrams and
    re-reads its timer; after a ``call_at`` callback it does so for every node, in attach order.
    """

    def __init__(self, seed: int, default_profile: LinkProfile = _PERFECT) -> None:
        """An empty network at virtual time 0.0; links are created on demand."""
        import random  # only here: module-level imports of the package stay free of chance

        self._rng: RandomSource = random.Random(seed)
        self.default_profile = default_profile
        """Profile of each link created on demand; changing it leaves existing links alone."""
        self.stats = NetworkStats()
        self._now = 0.0
        self._queue: list[tuple[float, int, _Event]] = []
        self._seq = 0
        self._nodes: dict[Address, _Attached] = {}
        self._links: dict[tuple[Address, Address], Link] = {}
        self._trace = hashlib.blake2b(digest_size=16)
        self._addr_bytes: dict[Address, bytes] = {}

    @property
    def now(self) -> float:
        """Virtual time in seconds, starting at 0.0; it never goes backwards."""
        return self._now

    @property
    def rng(self) -> RandomSource:
        """The network's random source, for nodes that should replay with the same seed."""
        return self._rng

    def attach(self, addr: Address, node: Node) -> None:
        """Put ``node`` at ``addr``, then drain its datagrams and arm its timer.

        Raises ``ValueError`` if a node is already attached there.
        """
        if addr in self._nodes:
            raise ValueError(f"a node is already attached at {addr}")
        record = _Attached(addr, node)
        self._nodes[addr] = record
        self._drain(record, fired=False)

    def detach(self, addr: Address) -> None:
        """Remove the node at ``addr``: its timer is cancelled and datagrams arriving there are
        counted as undeliverable. Raises ``KeyError`` if none is attached."""
        record = self._nodes.pop(addr)
        record.timer_seq = _NO_TIMER

    def set_link(self, src: Address, dst: Address, profile: LinkProfile) -> Link:
        """Give the direction ``src`` -> ``dst`` its own profile; an existing link keeps its
        backlog and stats and just changes impairments."""
        link = self.link(src, dst)
        link.profile = profile
        return link

    def share_link(
        self, directions: Iterable[tuple[Address, Address]], profile: LinkProfile
    ) -> Link:
        """Send every ``(src, dst)`` direction given through one new link: one bottleneck queue
        and rate that several flows share (where congestion control meets other flows).

        Raises ``ValueError`` if one of them has a link already (it would keep its own queue).
        """
        pairs = list(directions)
        taken = [pair for pair in pairs if pair in self._links]
        if taken:
            raise ValueError(f"these directions have their own link already: {taken}")
        link = Link(profile, self._rng)
        for pair in pairs:
            self._links[pair] = link
        return link

    def link(self, src: Address, dst: Address) -> Link:
        """The link ``src`` -> ``dst``, created with ``default_profile`` on first use."""
        link = self._links.get((src, dst))
        if link is None:
            link = self._links[src, dst] = Link(self.default_profile, self._rng)
        return link

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` at virtual time ``when`` (at ``now`` if that has passed), then flush
        every node, so an application action there needs no explicit ``flush``."""
        self._push(when, _Callback(callback))

    def flush(self, addr: Address) -> None:
        """Put the node's queued datagrams on the links and re-read its timer.

        Call after acting on a node outside ``call_at`` (e.g. before ``run``). Raises
        ``KeyError`` if no node is attached at ``addr``.
        """
        self._drain(self._nodes[addr], fired=False)

    def step(self) -> bool:
        """Process the earliest pending happening; False when nothing is pending."""
        self._discard_stale()
        if not self._queue:
            return False
        when, _, event = heapq.heappop(self._queue)
        self._now = when
        if isinstance(event, _Arrival):
            self._deliver(event)
        elif isinstance(event, _TimerDue):
            self._fire(event.record)
        else:
            self.stats.callbacks += 1
            event.callback()
            for record in list(self._nodes.values()):
                self._drain(record, fired=False)
        return True

    def run(
        self,
        until: float | None = None,
        *,
        stop: Callable[[], bool] | None = None,
        max_steps: int = 10_000_000,
    ) -> None:
        """Step until ``stop()`` is true, the next happening is after ``until``, or none is left.

        When it stops for ``until`` or for lack of work, the clock moves on to ``until``.
        Raises ``RuntimeError`` after ``max_steps`` steps, so a livelocked test fails instead of
        hanging.
        """
        steps = 0
        while stop is None or not stop():
            self._discard_stale()
            if not self._queue or (until is not None and self._queue[0][0] > until):
                if until is not None and until > self._now:
                    self._now = until
                return
            if steps >= max_steps:
                raise RuntimeError(f"no end after {max_steps} steps (virtual time {self._now})")
            self.step()
            steps += 1

    def trace_digest(self) -> str:
        """A hex digest of every delivery so far (time, source, destination, payload): equal
        digests mean the same seed replayed the identical trace."""
        return self._trace.hexdigest()

    def _push(self, when: float, event: _Event) -> int:
        seq = self._seq
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self._now), seq, event))
        return seq

    def _discard_stale(self) -> None:
        queue = self._queue
        while queue:
            _, seq, event = queue[0]
            if not isinstance(event, _TimerDue) or event.record.timer_seq == seq:
                return
            heapq.heappop(queue)

    def _deliver(self, arrival: _Arrival) -> None:
        record = self._nodes.get(arrival.dst)
        if record is None:
            self.stats.undeliverable += 1
            return
        self.stats.delivered += 1
        trace = self._trace
        trace.update(_TRACE_HEADER.pack(self._now, len(arrival.data)))
        trace.update(self._address_bytes(arrival.src))
        trace.update(self._address_bytes(arrival.dst))
        trace.update(arrival.data)
        record.node.receive_datagram(arrival.data, arrival.src, self._now)
        self._drain(record, fired=False)

    def _fire(self, record: _Attached) -> None:
        record.timer_seq = _NO_TIMER
        record.deadline = math.inf
        self.stats.timers_fired += 1
        record.node.handle_timer(self._now)
        self._drain(record, fired=True)

    def _drain(self, record: _Attached, *, fired: bool) -> None:
        """Send what the node queued, then re-arm its timer (``fired``: it has just run)."""
        now = self._now
        src = record.addr
        for data, dst in record.node.datagrams_to_send(now):
            self.stats.sent += 1
            link = self._links.get((src, dst))
            if link is None:
                link = self.link(src, dst)
            for arrival, payload in link.transmit(data, now):
                self._push(arrival, _Arrival(dst, src, payload))

        deadline = record.node.get_timer()
        if deadline is None:
            record.timer_seq = _NO_TIMER
            record.deadline = math.inf
            return
        if deadline <= now:
            deadline = now + TIMER_GUARD_S if fired else now
        if record.timer_seq != _NO_TIMER and deadline == record.deadline:
            return  # the live heap entry already says so
        record.deadline = deadline
        record.timer_seq = self._push(deadline, _TimerDue(record))

    def _address_bytes(self, addr: Address) -> bytes:
        encoded = self._addr_bytes.get(addr)
        if encoded is None:
            encoded = self._addr_bytes[addr] = f"{addr[0]}\0{addr[1]}\0".encode()
        return encoded
