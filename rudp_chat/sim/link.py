"""One direction of an impaired link: the model shared by the simulator and the UDP proxy.

Pure code: a datagram and a time go in, the scheduled deliveries come out. Chance comes from an
injected random source, so one seed replays the same impairments in virtual time (the simulator)
and in event-loop time (the proxy, which schedules each delivery with ``loop.call_at``).

One datagram passes, in order: outage and partitions, the bottleneck queue, random loss,
corruption, propagation delay with jitter and reordering, duplication.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Link", "LinkProfile", "LinkStats", "RandomSource"]

_BYTE_VALUES = 256


class RandomSource(Protocol):
    """The part of ``random.Random`` a link draws from: inject ``random.Random(seed)``."""

    def random(self) -> float:
        """A float uniform in [0, 1)."""
        ...

    def uniform(self, a: float, b: float, /) -> float:
        """A float uniform between ``a`` and ``b``."""
        ...

    def randrange(self, stop: int, /) -> int:
        """An int uniform in [0, stop)."""
        ...


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"{name} must be a probability within 0..1, got {value!r}")


def _check_seconds(name: str, value: float) -> None:
    if not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be finite seconds >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """Impairments of one direction of a link. Probabilities are 0..1, times seconds, sizes bytes.

    Raises ``ValueError`` from ``__post_init__`` when a value is out of range.
    """

    loss: float = 0.0
    """Mean probability of a random drop, drawn after the bottleneck: a lost datagram used
    capacity."""

    loss_burst: float = 1.0
    """Mean length of a run of random drops. 1 draws each datagram's fate independently; above 1
    the drops come from a Gilbert-Elliott chain (a good state that loses nothing, a bad state that
    loses everything) whose long-run drop rate is still ``loss``: wireless fades and handovers
    lose datagrams in bursts, which defeats redundancy that independent losses would not."""

    max_consecutive_losses: int | None = None
    """Cap on random drops in a row (the QUIC interop runner allows 3); None = no cap."""

    duplicate: float = 0.0
    """Probability a datagram arrives twice; the copy draws its own jitter but is never held."""

    reorder: float = 0.0
    """Probability a datagram is held back by ``reorder_delay``, so later ones overtake it."""

    reorder_delay: float = 0.010
    """Extra delay of a held-back datagram: 10 ms overtakes a few datagrams at chat rates."""

    delay: float = 0.0
    """One-way propagation delay."""

    jitter: float = 0.0
    """Extra delay uniform in [-jitter, +jitter] per datagram, clamped so the total is >= 0."""

    rate: float | None = None
    """Bottleneck in bytes per second; None = infinite."""

    queue: int | None = None
    """Drop-tail limit on datagrams waiting for the bottleneck (needs ``rate``); None = unbounded.

    The datagram being serialized does not wait, so 0 means "no buffer", not "drop everything".
    """

    corrupt: float = 0.0
    """Probability one random byte is XORed with a random non-zero byte."""

    corrupt_span: int | None = None
    """Corrupt only within the first N bytes (e.g. the header); None = anywhere."""

    outage: tuple[float, float] | None = None
    """Periodic ``(up_s, down_s)``: up, then down, repeating from the link's origin."""

    partitions: tuple[tuple[float, float], ...] = ()
    """Down intervals ``[start, end)`` relative to the link's origin; ``end`` may be ``inf``."""

    mtu: int | None = None
    """Largest datagram (UDP payload bytes) the path carries; larger ones vanish silently, as
    behind a tunnel that drops instead of sending ICMP (a PMTU black hole). None = no limit."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            _check_probability(name, getattr(self, name))
        for name in ("reorder_delay", "delay", "jitter"):
            _check_seconds(name, getattr(self, name))
        if not 1.0 <= self.loss_burst < math.inf:
            raise ValueError(f"loss_burst must be a mean run length >= 1, got {self.loss_burst!r}")
        if self.loss_burst > 1.0 and self.loss > self.loss_burst / (self.loss_burst + 1.0):
            raise ValueError(  # the good state would have to be left more than always
                f"loss {self.loss!r} needs bursts longer than {self.loss_burst!r} on average"
            )
        if self.max_consecutive_losses is not None and self.max_consecutive_losses < 1:
            raise ValueError("max_consecutive_losses must be >= 1 (or None for no cap)")
        if self.rate is not None and not 0.0 < self.rate < math.inf:
            raise ValueError(f"rate must be finite bytes per second > 0, got {self.rate!r}")
        if self.queue is not None:
            if self.queue < 0:
                raise ValueError(f"queue must be >= 0 datagrams, got {self.queue!r}")
            if self.rate is None:
                raise ValueError("queue limits the wait for the bottleneck, so it needs a rate")
        if self.corrupt_span is not None and self.corrupt_span < 1:
            raise ValueError(f"corrupt_span must be >= 1 byte, got {self.corrupt_span!r}")
        if self.outage is not None:
            up, down = self.outage
            if not (0.0 < up < math.inf and 0.0 < down < math.inf):
                raise ValueError(f"outage needs finite up_s > 0 and down_s > 0, got {self.outage}")
        if self.mtu is not None and self.mtu < 1:
            raise ValueError(f"mtu must be >= 1 byte, got {self.mtu!r}")
        for start, end in self.partitions:
            if not (math.isfinite(start) and start < end):
                raise ValueError(f"partition needs a finite start < end, got {(start, end)}")

    @classmethod
    def uniform_delay(cls, low: float, high: float, **kwargs: Any) -> LinkProfile:
        """A profile whose one-way delay is uniform in [low, high] (KCP's benchmark: 30-62.5 ms).

        Other impairments pass through ``kwargs``; raises ``ValueError`` unless 0 <= low <= high.
        """
        if not 0.0 <= low <= high < math.inf:
            raise ValueError(f"need 0 <= low <= high < inf seconds, got {low!r}, {high!r}")
        return cls(delay=(low + high) / 2, jitter=(high - low) / 2, **kwargs)


@dataclass(slots=True)
class LinkStats:
    """What happened to the datagrams offered to one link. Counts datagrams unless named bytes."""

    sent: int = 0
    """Datagrams offered to ``transmit``."""

    delivered: int = 0
    """Deliveries scheduled, duplicate copies included."""

    lost: int = 0
    """Random drops (``loss``)."""

    queue_drops: int = 0
    """Drop-tail drops at the bottleneck (``queue``)."""

    outage_drops: int = 0
    """Drops while the link was down (``outage`` or ``partitions``)."""

    mtu_drops: int = 0
    """Datagrams larger than ``mtu``, dropped before the bottleneck."""

    duplicated: int = 0
    """Extra copies scheduled (``duplicate``)."""

    reordered: int = 0
    """Datagrams held back by ``reorder_delay``."""

    corrupted: int = 0
    """Datagrams with one byte changed (``corrupt``)."""

    bytes_sent: int = 0
    """Payload bytes offered to ``transmit``."""

    bytes_delivered: int = 0
    """Payload bytes of scheduled deliveries, duplicate copies included."""


class Link:
    """One direction of a link: says when, whether and how each offered datagram arrives.

    ``profile`` may be replaced at any time (a test or the proxy changing impairments mid-run);
    the bottleneck's backlog and the run of consecutive losses carry over.
    """

    __slots__ = (
        "_busy_until",
        "_in_burst",
        "_last_now",
        "_loss_run",
        "_origin",
        "_rng",
        "_waiting",
        "profile",
        "stats",
    )

    def __init__(self, profile: LinkProfile, rng: RandomSource, *, origin: float = 0.0) -> None:
        """Start idle; ``outage`` and ``partitions`` count from ``origin`` (the proxy passes
        ``loop.time()``, the simulator 0.0)."""
        self.profile = profile
        self.stats = LinkStats()
        self._rng = rng
        self._origin = origin
        self._busy_until = -math.inf  # when the bottleneck finishes serializing its backlog
        self._waiting: deque[float] = deque()  # serialization start times still in the future
        self._loss_run = 0  # random drops in a row, for max_consecutive_losses
        self._in_burst = False  # the Gilbert-Elliott chain's state (loss_burst > 1)
        self._last_now = -math.inf

    def is_down(self, now: float) -> bool:
        """Whether an outage or partition drops datagrams offered at ``now``."""
        profile = self.profile
        elapsed = now - self._origin
        if profile.outage is not None:
            up, down = profile.outage
            if elapsed % (up + down) >= up:
                return True
        return any(start <= elapsed < end for start, end in profile.partitions)

    def transmit(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """Offer a datagram at ``now``; returns its ``(arrival_time, payload)`` deliveries.

        The list is empty if the datagram is dropped and holds two entries if it is duplicated;
        the payload may be corrupted. Updates ``stats`` and the bottleneck's backlog. Raises
        ``ValueError`` if ``now`` is earlier than a previous call's (the backlog assumes order).
        """
        if now < self._last_now:
            raise ValueError(f"now went backwards: {now!r} after {self._last_now!r}")
        self._last_now = now
        profile = self.profile
        stats = self.stats
        rng = self._rng
        stats.sent += 1
        stats.bytes_sent += len(data)

        if (profile.outage is not None or profile.partitions) and self.is_down(now):
            stats.outage_drops += 1
            return []
        if profile.mtu is not None and len(data) > profile.mtu:
            stats.mtu_drops += 1
            return []

        departure = now
        if profile.rate is not None:
            waiting = self._waiting
            while waiting and waiting[0] <= now:
                waiting.popleft()
            start = max(now, self._busy_until)
            if start > now:
                if profile.queue is not None and len(waiting) >= profile.queue:
                    stats.queue_drops += 1
                    return []
                waiting.append(start)
            departure = self._busy_until = start + len(data) / profile.rate

        if profile.loss > 0.0 and self._randomly_lost(profile):
            cap = profile.max_consecutive_losses
            if cap is None or self._loss_run < cap:
                self._loss_run += 1
                stats.lost += 1
                return []
        self._loss_run = 0

        if profile.corrupt > 0.0 and data and rng.random() < profile.corrupt:
            span = len(data)
            if profile.corrupt_span is not None:
                span = min(span, profile.corrupt_span)
            damaged = bytearray(data)
            damaged[rng.randrange(span)] ^= 1 + rng.randrange(_BYTE_VALUES - 1)
            data = bytes(damaged)
            stats.corrupted += 1

        arrival = departure + self._propagation(profile)
        if profile.reorder > 0.0 and rng.random() < profile.reorder:
            arrival += profile.reorder_delay
            stats.reordered += 1
        deliveries = [(arrival, data)]
        if profile.duplicate > 0.0 and rng.random() < profile.duplicate:
            deliveries.append((departure + self._propagation(profile), data))
            stats.duplicated += 1

        stats.delivered += len(deliveries)
        stats.bytes_delivered += len(data) * len(deliveries)
        return deliveries

    def _randomly_lost(self, profile: LinkProfile) -> bool:
        """One draw of ``loss``: independent, or the Gilbert-Elliott chain's current state.

        The chain leaves the bad state with probability 1/B (so a burst lasts B datagrams on
        average) and enters it with probability p/(B(1-p)), which makes its stationary share
        of bad datagrams exactly p.
        """
        burst = profile.loss_burst
        if burst == 1.0:
            return self._rng.random() < profile.loss
        lost = self._in_burst
        switch = 1.0 / burst if lost else profile.loss / (burst * (1.0 - profile.loss))
        if self._rng.random() < switch:
            self._in_burst = not lost
        return lost

    def _propagation(self, profile: LinkProfile) -> float:
        """Delay plus one jitter draw, never negative."""
        if profile.jitter == 0.0:
            return profile.delay
        return max(0.0, profile.delay + self._rng.uniform(-profile.jitter, profile.jitter))
