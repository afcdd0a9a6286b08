"""How lossy the path is, as loss recovery sees it: the loss rate, and how losses cluster.

The estimate is a window over the fates of the latest ack-eliciting packets. A window (rather
than a moving average) lets a loss that an ACK later disproves be taken back exactly: copies of
a thin stream's packet overtake each other under jitter, so the packet threshold condemns some
that are merely late, and counting those would inflate the rate and with it the redundancy.
"""

from __future__ import annotations

import math

__all__ = [
    "CONFIDENCE_SIGMAS",
    "LOSS_WINDOW_PACKETS",
    "PRIOR_LOSS_RATE",
    "PRIOR_PACKETS",
    "LossEstimator",
]

LOSS_WINDOW_PACKETS = 128  # fates remembered: at 30 % loss the rate is known to +-0.04 (1 sigma),
# and a chat that sends 4 or 5 copies a line refreshes it within about 30 lines
PRIOR_LOSS_RATE = 0.25  # assumed for the fates not yet known, so a connection's first
# messages go out with copies: a lost first line would wait for the initial 1 s RTO and hold
# every later line behind it; on a clean path this costs a few copies, once
PRIOR_PACKETS = 16  # fates after which the prior no longer counts
CONFIDENCE_SIGMAS = 1.0  # with a margin, copies are chosen for the rate this many standard
# errors above the measured one: at 30 % loss the window reads 0.22 to 0.38, and the mean's dips
# to 0.22 sent 18 lines of 1,000 with 3 copies (2.7 % all lost); at one sigma 4 or 5, never 3


class LossEstimator:
    """The fates (lost or delivered) of the latest :data:`LOSS_WINDOW_PACKETS` packets.

    Queue drops are not passed in (the caller asks the congestion controller): they measure
    our own sending rate, which redundancy would only make worse, not the path.
    """

    __slots__ = ("_fates", "_lost")

    def __init__(self) -> None:
        self._fates: dict[int, bool] = {}  # packet number -> lost, in the order fates were learnt
        self._lost = 0

    def on_delivered(self, number: int) -> None:
        """An ACK covered packet ``number``; a loss declared for it earlier is taken back."""
        fates = self._fates
        if fates.get(number) is True:
            self._lost -= 1
            fates[number] = False
        elif number not in fates:
            self._record(number, False)

    def on_lost(self, number: int) -> None:
        """Packet ``number`` was declared lost (threshold or timeout)."""
        if number not in self._fates:
            self._record(number, True)

    def _record(self, number: int, lost: bool) -> None:
        fates = self._fates
        if len(fates) >= LOSS_WINDOW_PACKETS:
            oldest = next(iter(fates))
            self._lost -= fates.pop(oldest)
        fates[number] = lost
        self._lost += lost

    @property
    def rate(self) -> float:
        """The fraction of packets in the window that were lost; with fewer than
        ``PRIOR_PACKETS`` fates known, the missing ones count at ``PRIOR_LOSS_RATE``."""
        known = len(self._fates)
        assumed = max(PRIOR_PACKETS - known, 0)
        return (self._lost + assumed * PRIOR_LOSS_RATE) / (known + assumed)

    @property
    def upper_rate(self) -> float:
        """``rate`` plus ``CONFIDENCE_SIGMAS`` standard errors of a binomial share over the
        window (at least ``PRIOR_PACKETS`` fates): a rate the path likely does not exceed."""
        rate = self.rate
        fates = max(len(self._fates), PRIOR_PACKETS)
        return min(rate + CONFIDENCE_SIGMAS * math.sqrt(rate * (1 - rate) / fates), 1.0)

    @property
    def burst_rate(self) -> float:
        """How often the packet after a lost one was lost too: P(lost | previous lost).

        Successive ack-eliciting packets by number are paired (a pure ACK between them takes a
        number but has no fate). Near ``rate`` for independent losses, higher where losses come
        in bursts (a fade, a handover), which is what defeats copies sent back to back.
        With no loss in the window it is 0 without the walk (a thin stream on a clean path asks
        once per packet).
        """
        if not self._lost:
            return 0.0
        previous_lost = False
        pairs = both = 0
        for _, lost in sorted(self._fates.items()):
            if previous_lost:
                pairs += 1
                both += lost
            previous_lost = lost
        return both / pairs if pairs else 0.0  # no pair: ``rate`` stands in (see below)

    def all_lost_probability(self, copies: int, *, margin: bool) -> float:
        """The chance that ``copies`` packets sent in a row are all lost, for a path that loses
        as measured: the first at ``rate`` (with the measurement's doubt, ``margin``: at
        ``upper_rate``), each further one at the larger of it and ``burst_rate``."""
        first, further = self._chances(margin)
        return first * further ** (copies - 1)

    def copies_for(self, target: float, most: int, *, margin: bool) -> int:
        """The fewest copies (at most ``most``) all lost with a probability at most ``target``:
        :meth:`all_lost_probability` solved once per packet, not once per candidate count
        (``burst_rate`` walks the whole window)."""
        first, further = self._chances(margin)
        copies = 1
        while copies < most and first * further ** (copies - 1) > target:
            copies += 1
        return copies

    def _chances(self, margin: bool) -> tuple[float, float]:
        """The loss chance of the first packet of a run and of each further one."""
        rate = self.upper_rate if margin else self.rate
        return rate, max(rate, self.burst_rate)
