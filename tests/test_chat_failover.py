"""The order a client tries its servers in, and its waits: :class:`Rotation`, without sockets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp_chat.chat.failover import BACKOFF_FIRST_S, BACKOFF_MAX_S, JITTER, Rotation

A, B, C = ("a", 1), ("b", 2), ("c", 3)


def test_a_lost_node_is_followed_by_the_next_at_once_then_each_other_in_turn() -> None:
    rotation = Rotation([A, B, C], random.Random(1))
    assert rotation.current == A
    assert rotation.lost() == 0.0
    assert rotation.current == B
    assert rotation.failed() == 0.0
    assert rotation.current == C
    assert rotation.failed() == 0.0
    assert rotation.current == A  # the lost one last: it may have been a blip
    wait = rotation.failed()  # all three failed in a row: now wait
    assert BACKOFF_FIRST_S * (1 - JITTER) <= wait <= BACKOFF_FIRST_S * (1 + JITTER)
    assert rotation.current == B


def test_a_lone_server_is_given_a_moment_and_the_waits_double_up_to_the_bound() -> None:
    rotation = Rotation([A], random.Random(2))
    waits = [rotation.lost(), *(rotation.failed() for _ in range(8))]
    nominal = [min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**i) for i in range(9)]
    for wait, expected in zip(waits, nominal, strict=True):
        assert expected * (1 - JITTER) <= wait <= expected * (1 + JITTER)
    assert rotation.current == A


def test_a_success_starts_the_backoff_afresh() -> None:
    rotation = Rotation([A, B], random.Random(3))
    for _ in range(6):
        rotation.failed()
    rotation.connected()
    assert rotation.lost() == 0.0
    assert rotation.failed() == 0.0
    assert rotation.failed() <= BACKOFF_FIRST_S * (1 + JITTER)


@given(
    count=st.integers(1, 5),
    steps=st.lists(st.sampled_from(["lost", "failed", "connected"]), max_size=40),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_server_is_tried_twice_before_every_other_was_and_waits_are_bounded(
    count: int, steps: list[str], seed: int
) -> None:
    servers = [(f"node{i}", 1000 + i) for i in range(count)]
    rotation = Rotation(servers, random.Random(seed))
    tried_since_wait: list[tuple[str, int]] = []
    for step in steps:
        before = rotation.current
        if step == "connected":
            rotation.connected()
            tried_since_wait = []
            assert rotation.current == before
            continue
        wait = rotation.lost() if step == "lost" else rotation.failed()
        assert 0.0 <= wait <= BACKOFF_MAX_S * (1 + JITTER)
        assert rotation.current == servers[(servers.index(before) + 1) % count]
        if step == "lost":
            tried_since_wait = [before]
        else:
            assert before not in tried_since_wait or wait > 0
            tried_since_wait = [] if wait > 0 else [*tried_since_wait, before]


def test_a_client_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        Rotation([], random.Random(0))
