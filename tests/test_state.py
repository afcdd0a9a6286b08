"""The connection state machine's table, exhaustively (h2's model), and over input sequences.

``EXPECTED`` is written out here from the documented life cycle rather than imported, so a
change to the table has to be made twice, once on purpose.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp_chat.core.errors import LocalProtocolError
from rudp_chat.core.state import TRANSITIONS, Input, State, next_state

S, IN = State, Input
EXPECTED: dict[tuple[State, Input], State] = {
    # the client's handshake; close or any failure before it ends everything at once
    (S.CONNECTING, IN.HANDSHAKE_DONE): S.OPEN,
    (S.CONNECTING, IN.CLOSE_CALLED): S.CLOSED,
    (S.CONNECTING, IN.FAILED): S.CLOSED,
    (S.CONNECTING, IN.TIMED_OUT): S.CLOSED,
    (S.CONNECTING, IN.RESET): S.CLOSED,
    # open: a graceful close from either side drains data first; failures drain briefly
    (S.OPEN, IN.CLOSE_CALLED): S.CLOSING,
    (S.OPEN, IN.PEER_CLOSED): S.CLOSING,
    (S.OPEN, IN.FAILED): S.DRAINING,
    (S.OPEN, IN.TIMED_OUT): S.CLOSED,
    (S.OPEN, IN.RESET): S.CLOSED,
    (S.CLOSING, IN.CLOSE_CALLED): S.CLOSING,
    (S.CLOSING, IN.PEER_CLOSED): S.CLOSING,
    (S.CLOSING, IN.CLOSE_DONE): S.DRAINING,
    (S.CLOSING, IN.FAILED): S.DRAINING,
    (S.CLOSING, IN.TIMED_OUT): S.CLOSED,
    (S.CLOSING, IN.RESET): S.CLOSED,
    (S.DRAINING, IN.CLOSE_CALLED): S.DRAINING,
    (S.DRAINING, IN.PEER_CLOSED): S.DRAINING,
    (S.DRAINING, IN.FAILED): S.DRAINING,
    (S.DRAINING, IN.TIMED_OUT): S.CLOSED,
    (S.DRAINING, IN.RESET): S.CLOSED,
    (S.DRAINING, IN.DRAINED): S.CLOSED,
    (S.CLOSED, IN.CLOSE_CALLED): S.CLOSED,
    (S.CLOSED, IN.FAILED): S.CLOSED,
}

ALL_PAIRS = list(itertools.product(State, Input))


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda x: x.name)
def test_every_state_input_pair_is_in_the_table_or_refused(state: State, event: Input) -> None:
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError) as info:
            next_state(state, event)
        assert state.value in str(info.value) and event.value in str(info.value)
    else:
        assert next_state(state, event) is expected


def test_the_table_is_exactly_the_expected_one() -> None:
    assert TRANSITIONS == EXPECTED


def test_the_table_mentions_only_states_and_inputs() -> None:
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, State) and isinstance(event, Input) and isinstance(target, State)


def test_closed_is_absorbing_and_nothing_returns_to_connecting() -> None:
    for (state, _), target in TRANSITIONS.items():
        if state is State.CLOSED:
            assert target is State.CLOSED
        assert target is not State.CONNECTING


def _reachable(start: State) -> set[State]:
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_every_state_is_reachable_from_connecting_or_open() -> None:
    # CONNECTING is the client's start, OPEN the server connection's.
    assert _reachable(State.CONNECTING) == set(State)
    assert _reachable(State.OPEN) == set(State) - {State.CONNECTING}


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_closed_is_reachable_from_every_state(state: State) -> None:
    assert State.CLOSED in _reachable(state)


@pytest.mark.parametrize("state", [S.CONNECTING, S.OPEN, S.CLOSING, S.DRAINING])
def test_a_timeout_always_ends_a_live_connection(state: State) -> None:
    """Liveness: a silent peer can never keep a connection alive (no missing TIMED_OUT)."""
    assert next_state(state, Input.TIMED_OUT) is State.CLOSED


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_close_and_abort_are_always_allowed(state: State) -> None:
    """The application may call close (idempotent) and abort in any state; they never raise."""
    next_state(state, Input.CLOSE_CALLED)
    next_state(state, Input.FAILED)


@given(st.sampled_from(State), st.sampled_from(Input))
def test_any_pair_either_transitions_or_raises_local_protocol_error(
    state: State, event: Input
) -> None:
    try:
        target = next_state(state, event)
    except LocalProtocolError:
        assert (state, event) not in EXPECTED
    else:
        assert target is EXPECTED[state, event]


@given(st.sampled_from([S.CONNECTING, S.OPEN]), st.lists(st.sampled_from(Input), max_size=40))
def test_sequences_follow_the_table_and_never_leave_closed(
    start: State, events: list[Input]
) -> None:
    """Walk any input sequence, skipping refused inputs as the connection would refuse them."""
    state = start
    closed_once = False
    for event in events:
        try:
            target = next_state(state, event)
        except LocalProtocolError:
            assert (state, event) not in EXPECTED
            continue
        assert target is EXPECTED[state, event]
        if closed_once:
            assert target is State.CLOSED
        closed_once = closed_once or target is State.CLOSED
        # the order of life is monotone: CONNECTING < OPEN < CLOSING < DRAINING < CLOSED,
        # except that a failure may skip ahead
        order = list(State)
        assert order.index(target) >= order.index(state)
        state = target
