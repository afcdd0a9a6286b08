"""The connection state machine's table: its shape (every pair is in it or refused, the life
cycle only moves forward, every state can end), and the real connection driven through every
transition it lists (h2's state-machine tests), each input caused the way a peer or the
application causes it.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_arrivals import Setup, arrive, client_in

from rudp_chat.core.arrivals import Arrival
from rudp_chat.core.errors import LocalProtocolError
from rudp_chat.core.state import TRANSITIONS, Input, State, next_state


def _pair_id(value: object) -> str:
    return value.name if isinstance(value, State | Input) else str(value)


MISSING = [pair for pair in itertools.product(State, Input) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), MISSING, ids=_pair_id)
def test_a_pair_not_in_the_table_is_refused_naming_both(state: State, event: Input) -> None:
    with pytest.raises(LocalProtocolError) as info:
        next_state(state, event)
    assert state.value in str(info.value) and event.value in str(info.value)


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


@pytest.mark.parametrize("state", [State.CONNECTING, State.OPEN, State.CLOSING, State.DRAINING])
def test_a_timer_always_ends_a_live_connection(state: State) -> None:
    """Liveness: a silent peer can never keep a connection alive (the handshake or idle timeout,
    or in DRAINING the drain period, leads to CLOSED)."""
    timer = Input.DRAINED if state is State.DRAINING else Input.TIMED_OUT
    assert next_state(state, timer) is State.CLOSED


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
        assert (state, event) not in TRANSITIONS
    else:
        assert target is TRANSITIONS[state, event]


@given(
    st.sampled_from([State.CONNECTING, State.OPEN]), st.lists(st.sampled_from(Input), max_size=40)
)
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
            assert (state, event) not in TRANSITIONS
            continue
        if closed_once:
            assert target is State.CLOSED
        closed_once = closed_once or target is State.CLOSED
        # the order of life is monotone: CONNECTING < OPEN < CLOSING < DRAINING < CLOSED,
        # except that a failure may skip ahead
        order = list(State)
        assert order.index(target) >= order.index(state)
        state = target


def _cause(setup: Setup, event: Input) -> None:
    """Cause ``event`` on the real client the way the application or the peer causes it."""
    client, now = setup.connection, setup.pair.now
    if event is Input.HANDSHAKE_DONE:
        arrive(setup, Arrival.WELCOME)
    elif event is Input.CLOSE_CALLED:
        client.close()
    elif event is Input.PEER_CLOSED:
        arrive(setup, Arrival.CLOSE)
    elif event is Input.CLOSE_DONE:  # CLOSING with our message in flight: all is exchanged
        arrive(setup, Arrival.CLOSE)
        arrive(setup, Arrival.ACK)
    elif event is Input.FAILED:
        client.abort("test")
    elif event is Input.TIMED_OUT:
        client.handle_timer(now + 1000.0)
    elif event is Input.RESET:
        arrive(setup, Arrival.RESET)
    else:
        client.handle_timer(now + 1000.0)  # DRAINED: the drain period is over
    client.datagrams_to_send(now)


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS, key=str), ids=_pair_id)
def test_the_connection_makes_every_transition_of_the_table(state: State, event: Input) -> None:
    setup = client_in(state)
    _cause(setup, event)
    assert setup.connection.state is TRANSITIONS[state, event]
