"""The link impairment model, one impairment at a time, on explicit times and fixed seeds."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rudp_chat.sim.link import Link, LinkProfile

PAYLOAD = bytes(range(100))


def make_link(seed: int = 0, **kwargs: Any) -> Link:
    return Link(LinkProfile(**kwargs), random.Random(seed))


def test_perfect_link_delivers_at_once_unchanged() -> None:
    link = make_link()
    assert link.transmit(PAYLOAD, 1.5) == [(1.5, PAYLOAD)]
    assert link.stats.sent == link.stats.delivered == 1
    assert link.stats.bytes_sent == link.stats.bytes_delivered == len(PAYLOAD)


def test_loss_rate_is_close_to_probability() -> None:
    link = make_link(seed=1, loss=0.1)
    delivered = sum(len(link.transmit(PAYLOAD, i * 0.001)) for i in range(20_000))
    assert link.stats.lost + delivered == 20_000
    assert 0.09 < link.stats.lost / 20_000 < 0.11


def test_max_consecutive_losses_caps_runs_of_drops() -> None:
    link = make_link(seed=2, loss=0.9, max_consecutive_losses=3)
    outcomes = [bool(link.transmit(PAYLOAD, i * 0.001)) for i in range(2_000)]
    runs = "".join("x" if delivered else "." for delivered in outcomes).split("x")
    assert max(len(run) for run in runs) == 3
    assert link.stats.lost == outcomes.count(False)


def test_total_loss_with_cap_lets_every_fourth_through() -> None:
    link = make_link(loss=1.0, max_consecutive_losses=3)
    outcomes = [bool(link.transmit(PAYLOAD, 0.0)) for _ in range(8)]
    assert outcomes == [False, False, False, True] * 2


def test_rate_spaces_arrivals_by_serialization_time() -> None:
    link = make_link(rate=1_000.0, delay=0.05)
    arrivals = [link.transmit(PAYLOAD, 0.0)[0][0] for _ in range(5)]
    assert arrivals == pytest.approx([0.05 + 0.1 * (i + 1) for i in range(5)])


def test_idle_bottleneck_starts_serializing_at_offer_time() -> None:
    link = make_link(rate=1_000.0)
    assert link.transmit(PAYLOAD, 0.0)[0][0] == pytest.approx(0.1)
    assert link.transmit(PAYLOAD, 5.0)[0][0] == pytest.approx(5.1)


def test_lost_datagram_still_uses_bottleneck_capacity() -> None:
    link = make_link(rate=1_000.0, loss=1.0)
    assert link.transmit(PAYLOAD, 0.0) == []
    link.profile = LinkProfile(rate=1_000.0)
    assert link.transmit(PAYLOAD, 0.0)[0][0] == pytest.approx(0.2)


def test_queue_drops_tail_beyond_waiting_limit() -> None:
    link = make_link(rate=1_000.0, queue=2)
    results = [link.transmit(PAYLOAD, 0.0) for _ in range(10)]
    # One serializing, two waiting, the rest dropped.
    assert [len(r) for r in results] == [1, 1, 1] + [0] * 7
    assert link.stats.queue_drops == 7
    # At 0.15 the first has left and the second is serializing: one waits, one slot is free.
    assert link.transmit(PAYLOAD, 0.15)[0][0] == pytest.approx(0.4)
    assert link.transmit(PAYLOAD, 0.15) == []
    assert link.stats.queue_drops == 8


def test_zero_queue_keeps_only_the_datagram_being_serialized() -> None:
    link = make_link(rate=1_000.0, queue=0)
    assert len(link.transmit(PAYLOAD, 0.0)) == 1
    assert link.transmit(PAYLOAD, 0.05) == []
    assert len(link.transmit(PAYLOAD, 0.1)) == 1


def test_periodic_outage_drops_only_while_down() -> None:
    link = Link(LinkProfile(outage=(1.0, 0.5)), random.Random(0), origin=10.0)
    up = [10.0, 10.99, 11.5, 12.49, 13.0]
    down = [11.0, 11.49, 12.5, 12.99, 14.0]
    assert [link.is_down(t) for t in up] == [False] * len(up)
    assert [link.is_down(t) for t in down] == [True] * len(down)
    for t in sorted(up + down):
        link.transmit(PAYLOAD, t)
    assert link.stats.outage_drops == len(down)
    assert link.stats.delivered == len(up)


def test_partitions_are_half_open_and_relative_to_origin() -> None:
    link = Link(LinkProfile(partitions=((1.0, 2.0), (5.0, math.inf))), random.Random(0), origin=3.0)
    times = [3.9, 4.0, 4.5, 5.0, 7.9, 8.0, 100.0]
    assert [link.is_down(t) for t in times] == [False, True, True, False, False, True, True]


def test_corruption_changes_exactly_one_byte() -> None:
    link = make_link(seed=3, corrupt=1.0)
    for i in range(200):
        [(_, payload)] = link.transmit(PAYLOAD, float(i))
        changed = [j for j in range(len(PAYLOAD)) if payload[j] != PAYLOAD[j]]
        assert len(changed) == 1
    assert link.stats.corrupted == 200


def test_corruption_stays_within_span() -> None:
    link = make_link(seed=4, corrupt=1.0, corrupt_span=4)
    positions = set()
    for i in range(200):
        [(_, payload)] = link.transmit(PAYLOAD, float(i))
        [position] = [j for j in range(len(PAYLOAD)) if payload[j] != PAYLOAD[j]]
        positions.add(position)
    assert positions == {0, 1, 2, 3}
    [(_, short)] = link.transmit(b"ab", 1_000.0)
    assert short != b"ab"


def test_empty_datagram_cannot_be_corrupted() -> None:
    link = make_link(corrupt=1.0)
    assert link.transmit(b"", 0.0) == [(0.0, b"")]
    assert link.stats.corrupted == 0


def test_duplication_delivers_two_copies_with_own_jitter() -> None:
    link = make_link(seed=5, duplicate=1.0, delay=0.05, jitter=0.01)
    [(first, a), (second, b)] = link.transmit(PAYLOAD, 0.0)
    assert a == b == PAYLOAD
    assert first != second
    assert 0.04 <= first <= 0.06 and 0.04 <= second <= 0.06
    assert link.stats.duplicated == 1
    assert link.stats.delivered == 2
    assert link.stats.bytes_delivered == 2 * len(PAYLOAD)


def test_reorder_lets_later_datagrams_overtake() -> None:
    link = make_link(seed=6, reorder=0.3, reorder_delay=0.010, delay=0.02)
    arrivals = []
    for i in range(100):
        now = i * 0.001
        [(arrival, _)] = link.transmit(PAYLOAD, now)
        arrivals.append(arrival)
        assert arrival - now == pytest.approx(0.02) or arrival - now == pytest.approx(0.03)
    held = sum(1 for i, t in enumerate(arrivals) if t - i * 0.001 > 0.025)
    assert held == link.stats.reordered > 0
    assert arrivals != sorted(arrivals)


@settings(max_examples=50)
@given(
    seed=st.integers(0, 2**32),
    delay=st.floats(0.0, 0.05),
    jitter=st.floats(0.0, 0.2),
)
def test_jitter_never_makes_delay_negative(seed: int, delay: float, jitter: float) -> None:
    link = make_link(seed, delay=delay, jitter=jitter, duplicate=0.5)
    for i in range(50):
        for arrival, _ in link.transmit(PAYLOAD, i * 0.01):
            assert i * 0.01 <= arrival <= i * 0.01 + delay + jitter


def test_uniform_delay_stays_within_range() -> None:
    profile = LinkProfile.uniform_delay(0.030, 0.0625, loss=0.01)
    assert profile.delay == pytest.approx(0.04625)
    assert profile.jitter == pytest.approx(0.01625)
    assert profile.loss == 0.01
    link = Link(profile, random.Random(7))
    delays = [a for i in range(2_000) for a, _ in link.transmit(PAYLOAD, 0.0)]
    assert 0.030 - 1e-12 <= min(delays) < 0.031
    assert 0.0615 < max(delays) <= 0.0625 + 1e-12


def test_uniform_delay_rejects_inverted_range() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        LinkProfile.uniform_delay(0.05, 0.01)


def test_time_going_backwards_is_rejected() -> None:
    link = make_link()
    link.transmit(PAYLOAD, 2.0)
    with pytest.raises(ValueError, match="backwards"):
        link.transmit(PAYLOAD, 1.0)


EVERYTHING: dict[str, Any] = {
    "loss": 0.2,
    "max_consecutive_losses": 2,
    "duplicate": 0.1,
    "reorder": 0.1,
    "delay": 0.03,
    "jitter": 0.01,
    "rate": 50_000.0,
    "queue": 5,
    "corrupt": 0.05,
    "outage": (0.5, 0.05),
}


def run_everything(seed: int) -> list[list[tuple[float, bytes]]]:
    link = make_link(seed, **EVERYTHING)
    return [link.transmit(PAYLOAD + bytes([i % 256]), i * 0.0005) for i in range(3_000)]


def test_same_seed_reproduces_identical_outputs() -> None:
    assert run_everything(8) == run_everything(8)
    assert run_everything(8) != run_everything(9)


@settings(max_examples=100)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 1.0),
    duplicate=st.floats(0.0, 1.0),
    rate=st.none() | st.floats(100.0, 1e6),
    queue=st.none() | st.integers(0, 5),
    sizes_and_gaps=st.lists(st.tuples(st.integers(0, 1500), st.floats(0.0, 0.01)), max_size=50),
)
def test_every_datagram_is_accounted_for(
    *,
    seed: int,
    loss: float,
    duplicate: float,
    rate: float | None,
    queue: int | None,
    sizes_and_gaps: list[tuple[int, float]],
) -> None:
    profile = LinkProfile(
        loss=loss,
        duplicate=duplicate,
        rate=rate,
        queue=queue if rate is not None else None,
        partitions=((0.05, 0.06),),
        jitter=0.01,
    )
    link = Link(profile, random.Random(seed))
    now = 0.0
    for size, gap in sizes_and_gaps:
        now += gap
        deliveries = link.transmit(bytes(size), now)
        assert len(deliveries) <= 2
        assert all(arrival >= now for arrival, _ in deliveries)
    stats = link.stats
    dropped = stats.lost + stats.queue_drops + stats.outage_drops
    assert stats.sent == len(sizes_and_gaps)
    assert stats.sent == stats.delivered - stats.duplicated + dropped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": 1.5}, "loss"),
        ({"loss": math.nan}, "loss"),
        ({"duplicate": -0.1}, "duplicate"),
        ({"reorder": 2.0}, "reorder"),
        ({"corrupt": -1.0}, "corrupt"),
        ({"delay": -0.01}, "delay"),
        ({"jitter": math.inf}, "jitter"),
        ({"reorder_delay": -1.0}, "reorder_delay"),
        ({"max_consecutive_losses": 0}, "max_consecutive_losses"),
        ({"rate": 0.0}, "rate"),
        ({"rate": math.inf}, "rate"),
        ({"rate": 1000.0, "queue": -1}, "queue"),
        ({"queue": 5}, "needs a rate"),
        ({"corrupt_span": 0}, "corrupt_span"),
        ({"outage": (0.0, 1.0)}, "outage"),
        ({"outage": (1.0, 0.0)}, "outage"),
        ({"partitions": ((2.0, 1.0),)}, "partition"),
        ({"partitions": ((math.nan, 1.0),)}, "partition"),
    ],
)
def test_invalid_profiles_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LinkProfile(**kwargs)


@pytest.mark.parametrize(("loss", "burst"), [(0.1, 3.0), (0.3, 2.0), (0.05, 8.0)])
def test_bursty_loss_keeps_the_mean_rate_and_the_mean_burst(loss: float, burst: float) -> None:
    link = make_link(seed=7, loss=loss, loss_burst=burst)
    fates = [bool(link.transmit(b"x", 0.0)) for _ in range(200_000)]
    runs = [len(run) for run in "".join("." if ok else "x" for ok in fates).split(".") if run]
    assert link.stats.lost / link.stats.sent == pytest.approx(
        loss, rel=0.1
    )  # ~2.5 sigma at 1,250 bursts
    assert sum(runs) / len(runs) == pytest.approx(burst, rel=0.1)


def test_burst_length_one_is_todays_independent_loss() -> None:
    independent, explicit = make_link(seed=3, loss=0.2), make_link(seed=3, loss=0.2, loss_burst=1.0)
    for _ in range(1_000):
        assert independent.transmit(b"x", 0.0) == explicit.transmit(b"x", 0.0)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"loss_burst": 0.5}, "loss_burst"),
        ({"loss_burst": math.inf}, "loss_burst"),
        ({"loss": 0.8, "loss_burst": 2.0}, "bursts longer"),
    ],
)
def test_bursty_loss_rejects_impossible_profiles(fields: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        LinkProfile(**fields)  # type: ignore[arg-type]


def test_mtu_drops_larger_datagrams_silently_and_counts_them() -> None:
    link = make_link(mtu=len(PAYLOAD))
    assert link.transmit(PAYLOAD, 0.0) == [(0.0, PAYLOAD)]
    assert link.transmit(PAYLOAD + b"x", 0.1) == []
    assert (link.stats.delivered, link.stats.mtu_drops, link.stats.lost) == (1, 1, 0)


def test_mtu_can_shrink_mid_run() -> None:
    link = make_link(mtu=1500)
    big = bytes(1400)
    assert link.transmit(big, 0.0)
    link.profile = LinkProfile(mtu=1280)
    assert link.transmit(big, 0.1) == []
    assert link.transmit(big[:1280], 0.2)
    assert link.stats.mtu_drops == 1


def test_mtu_must_be_positive() -> None:
    with pytest.raises(ValueError, match="mtu"):
        LinkProfile(mtu=0)
