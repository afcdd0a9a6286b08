"""The RTO estimator against RFC 6298's formulas, with RFC 9002's ack-delay adjustment.

``Reference`` transcribes the RFCs independently of the implementation:

* RFC 6298 §2.2 first sample R: SRTT = R, RTTVAR = R/2.
* §2.3 later samples R': RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'| (with the old SRTT), then
  SRTT = 7/8 SRTT + 1/8 R'.
* RTO = SRTT + max(G, 4 RTTVAR), here plus max_ack_delay (RFC 9002's PTO), clamped to
  [min_rto, max_rto] (§2.4 and §2.5, with our LAN floor); §5.5 doubles it per expiry, capped.
* RFC 9002 §5.3: min_rtt tracks raw samples; ack_delay = min(ack_delay, max_ack_delay) and is
  subtracted only if the result stays >= min_rtt; the first sample ignores ack delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simharness import Harness, Scenario

from rudp_chat.core.config import ConnectionConfig
from rudp_chat.core.handshake import HELLO_RETRY_CAP_S
from rudp_chat.core.rtt import CLOCK_GRANULARITY_S, RttEstimator
from rudp_chat.sim import LinkProfile

G = CLOCK_GRANULARITY_S


@dataclass
class Reference:
    initial_rtt: float
    min_rto: float
    max_rto: float
    max_ack_delay: float
    srtt: float = field(init=False)
    rttvar: float = field(init=False)
    min_rtt: float = field(init=False)
    latest: float = field(init=False)
    sampled: bool = False

    def __post_init__(self) -> None:
        self.srtt = self.initial_rtt
        self.rttvar = self.initial_rtt / 2
        self.min_rtt = self.latest = self.initial_rtt

    def update(self, r: float, ack_delay: float) -> None:
        self.latest = r
        if not self.sampled:
            self.sampled = True
            self.srtt, self.rttvar, self.min_rtt = r, r / 2, r
            return
        self.min_rtt = min(self.min_rtt, r)
        ack_delay = min(ack_delay, self.max_ack_delay)
        adjusted = r - ack_delay if r >= self.min_rtt + ack_delay else r
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - adjusted)
        self.srtt = 0.875 * self.srtt + 0.125 * adjusted

    def rto(self, backoff: int = 0) -> float:
        base = self.srtt + max(G, 4 * self.rttvar) + self.max_ack_delay
        base = min(max(base, self.min_rto), self.max_rto)
        return min(base * 2.0**backoff, self.max_rto)


def make(
    initial_rtt: float = 0.333,
    min_rto: float = 0.05,
    max_rto: float = 4.0,
    max_ack_delay: float = 0.010,
) -> tuple[RttEstimator, Reference]:
    return (
        RttEstimator(initial_rtt, min_rto, max_rto, max_ack_delay),
        Reference(initial_rtt, min_rto, max_rto, max_ack_delay),
    )


approx = pytest.approx  # relative 1e-6 is plenty: the formulas are a handful of float ops


# ------------------------------------------------------------------ by hand


def test_before_any_sample_the_rto_is_three_initial_rtts_plus_ack_delay() -> None:
    rtt, _ = make(initial_rtt=0.333)
    assert not rtt.has_sample
    assert rtt.smoothed == 0.333 and rtt.variance == 0.333 / 2
    assert rtt.rto() == approx(0.333 + 4 * 0.1665 + 0.010)


def test_first_sample_sets_srtt_to_r_and_rttvar_to_half_r() -> None:
    rtt, _ = make()
    rtt.update(0.100, ack_delay=0.008)  # ack delay is ignored on the first sample
    assert rtt.has_sample
    assert rtt.smoothed == approx(0.100)
    assert rtt.variance == approx(0.050)
    assert rtt.min_rtt == approx(0.100)
    assert rtt.rto() == approx(0.100 + 4 * 0.050 + 0.010)


def test_second_sample_uses_the_old_srtt_for_rttvar() -> None:
    rtt, _ = make()
    rtt.update(0.100, 0.0)
    rtt.update(0.200, 0.0)
    # RTTVAR = 3/4 * 0.05 + 1/4 * |0.1 - 0.2| = 0.0625; SRTT = 7/8 * 0.1 + 1/8 * 0.2 = 0.1125
    assert rtt.variance == approx(0.0625)
    assert rtt.smoothed == approx(0.1125)
    assert rtt.rto() == approx(0.1125 + 4 * 0.0625 + 0.010)


def test_ack_delay_is_subtracted_when_it_keeps_the_sample_above_min_rtt() -> None:
    rtt, _ = make(max_ack_delay=0.025)
    rtt.update(0.100, 0.0)
    rtt.update(0.130, 0.020)  # adjusted 0.110 >= min_rtt 0.100
    assert rtt.variance == approx(0.75 * 0.05 + 0.25 * 0.010)
    assert rtt.smoothed == approx(0.875 * 0.100 + 0.125 * 0.110)


def test_ack_delay_is_not_subtracted_below_min_rtt() -> None:
    rtt, _ = make(max_ack_delay=0.025)
    rtt.update(0.100, 0.0)
    rtt.update(0.110, 0.020)  # 0.090 < min_rtt: use the raw 0.110
    assert rtt.smoothed == approx(0.875 * 0.100 + 0.125 * 0.110)


def test_ack_delay_is_capped_at_max_ack_delay() -> None:
    rtt, _ = make(max_ack_delay=0.010)
    rtt.update(0.100, 0.0)
    rtt.update(0.300, 0.150)  # a peer claiming 150 ms of delay gets only 10 ms subtracted
    assert rtt.smoothed == approx(0.875 * 0.100 + 0.125 * 0.290)


def test_min_rtt_tracks_raw_samples_not_adjusted_ones() -> None:
    rtt, _ = make(max_ack_delay=0.025)
    rtt.update(0.100, 0.0)
    rtt.update(0.120, 0.020)
    assert rtt.min_rtt == approx(0.100)
    rtt.update(0.080, 0.0)
    assert rtt.min_rtt == approx(0.080)
    assert rtt.latest == approx(0.080)


@pytest.mark.parametrize("backoff", range(8))
def test_backoff_doubles_the_rto_until_max_rto(backoff: int) -> None:
    rtt, _ = make(max_rto=4.0)
    rtt.update(0.050, 0.0)
    base = 0.050 + 4 * 0.025 + 0.010  # 0.16
    assert rtt.rto(backoff) == approx(min(base * 2**backoff, 4.0))


def test_backoff_never_overflows() -> None:
    rtt, _ = make(max_rto=4.0)
    assert rtt.rto(10_000) == 4.0


def test_min_rto_clamps_a_lan_rtt() -> None:
    rtt, _ = make(min_rto=0.05, max_ack_delay=0.001)
    rtt.update(0.0005, 0.0)
    assert rtt.rto() == 0.05
    assert rtt.rto(1) == approx(0.10)  # backoff doubles the clamped value


def test_max_rto_clamps_a_satellite_rtt() -> None:
    rtt, _ = make(max_rto=4.0)
    rtt.update(3.0, 0.0)
    assert rtt.rto() == 4.0


def test_granularity_floors_the_variance_term() -> None:
    rtt, _ = make(min_rto=0.0001, max_ack_delay=0.0)
    for _ in range(200):
        rtt.update(0.020, 0.0)  # a perfectly steady path: RTTVAR decays towards 0
    assert 4 * rtt.variance < G
    assert rtt.rto() == approx(rtt.smoothed + G)


def test_a_zero_or_negative_sample_never_yields_a_zero_rtt() -> None:
    """A clock that did not advance (or a peer's ack delay larger than the sample) must not
    make SRTT or the loss delay zero: the RTO and loss timers would spin."""
    rtt, _ = make()
    rtt.update(0.0, 0.0)
    assert rtt.smoothed > 0 and rtt.min_rtt > 0
    rtt.update(-1.0, 0.0)
    assert rtt.smoothed > 0 and rtt.min_rtt > 0
    assert rtt.loss_delay() >= G


def test_loss_delay_is_nine_eighths_of_the_larger_of_srtt_and_latest() -> None:
    rtt, _ = make()
    rtt.update(0.100, 0.0)
    rtt.update(0.300, 0.0)
    assert rtt.loss_delay() == approx(1.125 * max(rtt.smoothed, 0.300))
    rtt.update(0.050, 0.0)
    assert rtt.loss_delay() == approx(1.125 * max(rtt.smoothed, 0.050))


# ------------------------------------------------------------------ properties

samples = st.lists(
    st.tuples(st.floats(0.001, 5.0), st.one_of(st.just(0.0), st.floats(0.0, 0.5))),
    min_size=1,
    max_size=50,
)
configs = st.tuples(
    st.floats(0.01, 2.0),  # initial_rtt
    st.floats(0.001, 1.0),  # min_rto
    st.floats(1.0, 60.0),  # max_rto
    st.floats(0.0, 0.05),  # max_ack_delay
)


@given(configs, samples, st.integers(0, 40))
def test_estimator_matches_the_rfc_reference(
    config: tuple[float, float, float, float],
    sample_list: list[tuple[float, float]],
    backoff: int,
) -> None:
    rtt, ref = make(*config)
    for sample, ack_delay in sample_list:
        rtt.update(sample, ack_delay)
        ref.update(sample, ack_delay)
        assert rtt.smoothed == approx(ref.srtt)
        assert rtt.variance == approx(ref.rttvar, abs=1e-12)
        assert rtt.min_rtt == approx(ref.min_rtt)
        assert rtt.latest == approx(ref.latest)
    assert rtt.rto() == approx(ref.rto())
    assert rtt.rto(backoff) == approx(ref.rto(backoff))


@given(configs, samples)
def test_rto_is_clamped_and_monotone_in_backoff(
    config: tuple[float, float, float, float], sample_list: list[tuple[float, float]]
) -> None:
    rtt, _ = make(*config)
    for sample, ack_delay in sample_list:
        rtt.update(sample, ack_delay)
    _, min_rto, max_rto, _ = config
    previous = 0.0
    for backoff in range(30):
        value = rtt.rto(backoff)
        assert min_rto <= value <= max_rto and math.isfinite(value)
        assert value >= previous
        previous = value
    assert rtt.rto(64) == max_rto


# ------------------------------------------------------------ in a connection


def _handshake(up: LinkProfile, down: LinkProfile) -> Harness:
    harness = Harness(Scenario(seed=3, up=up, down=down, closer="none"))
    client = harness.clients[0]
    harness.run(until=5.0, stop=lambda: client.connected_at is not None)
    assert client.connected_at is not None
    return harness


def test_an_unrepeated_handshake_gives_the_first_rtt_sample() -> None:
    harness = _handshake(LinkProfile(delay=0.040), LinkProfile(delay=0.060))
    stats = harness.clients[0].connection.stats()  # type: ignore[union-attr]
    assert stats.smoothed_rtt == approx(0.100)
    assert stats.rtt_variance == approx(0.050)


def test_a_repeated_hello_gives_no_sample_karn() -> None:
    # The HELLO that carries the RETRY token leaves at 0.1 s and is lost; the next one, a HELLO
    # retry interval later, gets the WELCOME. Its RTT would be ambiguous, so none is taken.
    up = LinkProfile(delay=0.050, partitions=((0.09, 0.2),))
    harness = _handshake(up, LinkProfile(delay=0.050))
    connection = harness.clients[0].connection
    assert connection is not None
    retry = min(2 * 0.333, HELLO_RETRY_CAP_S)
    assert harness.clients[0].connected_at == approx(0.1 + retry + 0.1)
    assert connection.stats().smoothed_rtt == 0.333  # still the initial guess


def test_delayed_acks_do_not_inflate_srtt() -> None:
    """One small message every 200 ms: the receiver holds each ACK max_ack_delay (10 ms) and
    says so, and the sender subtracts it, so SRTT converges to the 50 ms path, not 60 ms."""
    scenario = Scenario(
        seed=5,
        up=LinkProfile(delay=0.025),
        down=LinkProfile(delay=0.025),
        closer="none",
        config=ConnectionConfig(heartbeat_interval=5.0),
    )
    harness = Harness(scenario)
    network = harness.network
    client = harness.clients[0]
    harness.run(until=1.0)
    connection = client.connection
    assert connection is not None
    for i in range(40):

        def chat(i: int = i) -> None:
            assert connection is not None
            connection.send(b"line %d" % i)

        network.call_at(1.0 + 0.2 * i, chat)
    harness.run(until=10.0)
    stats = connection.stats()
    assert stats.messages_sent == 40
    assert stats.min_rtt == approx(0.050, abs=1e-3)
    assert stats.smoothed_rtt == approx(0.050, abs=1e-3)
