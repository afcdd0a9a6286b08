"""Path MTU discovery for one connection: DPLPMTUD (RFC 8899) with padded PING probes.

The connection sends datagrams of at most :attr:`PathMtu.size` bytes: the base (1,200, which
every IPv6 path carries) until a probe of a larger size is acknowledged. Probes search between
the largest confirmed size and the configured maximum: the maximum first (most paths carry
it: one probe settles them), then by halving. A probe is a PING padded to the size being
tried; it carries no DATA, is never retransmitted, and its loss tells congestion control and
the loss estimator nothing (it is not in :class:`~.recovery.Recovery`'s flight at all): it
only means the size did not pass, once ``MAX_PROBES`` in a row are lost.

A path that shrinks later (a route change, a tunnel coming up) eats every full-size datagram
without an error: a *black hole*. It shows as several datagrams above the base lost with
none acknowledged, while smaller ones (an RTO's single-fragment probe) are acknowledged; the
size then falls back to the base at once and the search starts again below the size that
failed. Fragments stay the size the base allows, so everything queued or in flight fits
again after a fall back: a larger datagram carries more fragments, not larger ones.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BLACK_HOLE_LOSSES", "MAX_PROBES", "PMTU_RAISE_S", "SEARCH_GRANULARITY", "PathMtu"]

MAX_PROBES = 3  # RFC 8899 MAX_PROBES: lost probes of one size before it counts as too big
SEARCH_GRANULARITY = 16  # bytes: the search stops when confirmed and failed sizes are this close
PMTU_RAISE_S = 600.0  # RFC 8899 PMTU_RAISE_TIMER: search again for a larger size this often
BLACK_HOLE_LOSSES = 3  # datagrams above the base lost with none acknowledged: a black hole
# (with a smaller one acknowledged); one or two are what random loss does to a bulk transfer


@dataclass(frozen=True, slots=True)
class Probe:
    """The probe in flight."""

    number: int
    size: int
    deadline: float
    """When it counts as lost if no ACK covered it."""


class PathMtu:
    """The size datagrams may have on this path, and the probes that raise it.

    Inputs: :meth:`on_probe_sent`, :meth:`on_ack_ranges`, :meth:`on_packet_acked`,
    :meth:`on_packet_lost`, :meth:`handle_timer`, :meth:`restart`; each returns whether
    :attr:`size` changed. Outputs: :meth:`probe_due`, :attr:`size`, :meth:`get_timer`.
    """

    __slots__ = (
        "_big_lost",
        "_failed",
        "_lost_in_row",
        "_next_search",
        "_small_acked",
        "base",
        "black_holes",
        "maximum",
        "probe",
        "probes_lost",
        "probes_sent",
        "size",
    )

    def __init__(self, base: int, maximum: int, now: float) -> None:
        """``maximum`` at or below ``base`` turns discovery off."""
        self.base = base
        self.maximum = maximum
        self.size = base
        """The largest datagram this connection sends now (the confirmed PLPMTU)."""
        self.probe: Probe | None = None
        self.probes_sent = 0
        self.probes_lost = 0
        self.black_holes = 0
        self._failed = maximum + 1  # the smallest size known (or assumed) not to pass
        self._lost_in_row = 0  # probes of the size being tried lost in a row
        self._next_search: float | None = now if maximum > base else None
        self._big_lost = 0  # datagrams above the base lost since one was acknowledged
        self._small_acked = False  # ... and whether one at most the base was acknowledged since

    def probe_due(self, now: float) -> int | None:
        """The size to probe now, or None (a probe in flight, the search done or off)."""
        if self.probe is not None or self._next_search is None or now < self._next_search:
            return None
        if self._failed > self.maximum:
            return self.maximum  # untried: most paths carry the maximum, one probe settles them
        return (self.size + self._failed) // 2

    def on_probe_sent(self, number: int, size: int, now: float, timeout: float) -> None:
        """A probe of ``size`` bytes left as packet ``number``; lost unless acked within ``timeout``."""
        self.probe = Probe(number, size, now + timeout)
        self.probes_sent += 1

    def on_ack_ranges(self, ranges: tuple[tuple[int, int], ...], now: float) -> bool:
        """An ACK's packet ranges: the probe, if they cover it, confirms its size."""
        probe = self.probe
        if probe is None or not any(first <= probe.number <= last for first, last in ranges):
            return False
        self.probe = None
        self._lost_in_row = 0
        grown = probe.size > self.size
        if grown:
            self.size = probe.size
        self._settle(now)
        return grown

    def handle_timer(self, now: float) -> None:
        """A probe not acknowledged by its deadline is lost; ``MAX_PROBES`` in a row fail its size."""
        probe = self.probe
        if probe is None or now < probe.deadline:
            return
        self.probe = None
        self.probes_lost += 1
        self._lost_in_row += 1
        if self._lost_in_row >= MAX_PROBES:
            self._lost_in_row = 0
            self._failed = probe.size
        self._settle(now)

    def _settle(self, now: float) -> None:
        """End the search when the confirmed and failed sizes meet; it starts again later."""
        if self._failed - self.size <= SEARCH_GRANULARITY or self.size >= self.maximum:
            self._next_search = now + PMTU_RAISE_S
            self._failed = self.maximum + 1
        else:
            self._next_search = now

    def get_timer(self) -> float | None:
        """The probe's deadline or the next search, whichever is first (None: neither)."""
        if self.probe is not None:
            return self.probe.deadline  # no search step before the probe's fate is known
        return self._next_search

    def on_packet_acked(self, size: int) -> None:
        """An ack-eliciting datagram of ``size`` bytes was acknowledged."""
        if size > self.base:
            self._big_lost = 0
            self._small_acked = False
        else:
            self._small_acked = True

    def on_packet_lost(self, size: int, now: float) -> bool:
        """An ack-eliciting datagram of ``size`` bytes was declared lost; True when that makes
        a black hole (the size fell back to the base)."""
        if size <= self.base or self.size <= self.base:
            return False
        self._big_lost += 1
        if self._big_lost < BLACK_HOLE_LOSSES or not self._small_acked:
            return False
        self.black_holes += 1
        failed = self.size
        self.restart(now)
        self._failed = failed  # search below the size the path stopped carrying
        return True

    def restart(self, now: float) -> bool:
        """Back to the base and search again (a black hole, or a new path after migration);
        returns whether the size changed."""
        shrunk = self.size > self.base
        self.size = self.base
        self.probe = None
        self._failed = self.maximum + 1
        self._lost_in_row = 0
        self._big_lost = 0
        self._small_acked = False
        if self.maximum > self.base:
            self._next_search = now
        return shrunk
