"""The core's value classes (frames, packets, events, thin-stream copies) keep what the frozen
dataclasses they replaced gave: a ``repr`` that is valid Python, equality and hashing by
fields and type, class patterns by position, and, compiled, read-only fields."""

from __future__ import annotations

import pytest

from rudp_chat.build import core_is_compiled
from rudp_chat.core.events import (
    Connected,
    ConnectionTerminated,
    DatagramReceived,
    MessageReceived,
    TerminationReason,
)
from rudp_chat.core.frames import (
    AckFrame,
    CloseFrame,
    DataFrame,
    DatagramFrame,
    HelloPacket,
    PingFrame,
    ResetPacket,
    RetryPacket,
    SealedPacket,
    SessionPacket,
    WelcomePacket,
)
from rudp_chat.core.slotted import Slotted
from rudp_chat.core.thin import Copy

VALUES: list[Slotted] = [
    HelloPacket(b"c" * 8, 0, 1, b"", b"hs", 1_000),
    RetryPacket(b"c" * 8, b"token", b"k" * 32),
    WelcomePacket(b"c" * 8, 1, b"w" * 24),
    ResetPacket(b"i" * 8, b"r" * 16),
    SessionPacket(b"i" * 8, 7, b"\x91\x92\x02"),
    SealedPacket(b"i" * 8, 2**40, b"\x94\x05", b"t" * 16),
    AckFrame(3, ((10, 12), (1, 5)), 250, 64),
    DataFrame(5, 2, 0, 1, b"\x00\xff", lane=3),
    PingFrame(),
    PingFrame(100),
    CloseFrame(0, 9, "bye"),
    DatagramFrame(1, b"d", sequence=None),
    DatagramFrame(1, b"d", sequence=4),
    Connected(b"i" * 8),
    MessageReceived(0, b"m", lane=2),
    DatagramReceived(b"d", 7),
    ConnectionTerminated(TerminationReason.PEER_ERROR, 1, "detail"),
    Copy(0.25, (DataFrame(0, 0, 0, 1, b"x"),), ()),
]
NAMESPACE = {type(value).__name__: type(value) for value in VALUES} | {
    "TerminationReason": TerminationReason
}


@pytest.mark.parametrize("value", VALUES, ids=lambda value: type(value).__name__)
def test_repr_is_the_value_and_equality_goes_by_fields(value: Slotted) -> None:
    again = eval(repr(value), NAMESPACE)
    assert again == value and hash(again) == hash(value) and again is not value
    assert repr(value).startswith(type(value).__name__ + "(")
    first = type(value).__match_args__[0]
    assert f"{first}=" in repr(value)


@pytest.mark.parametrize("value", VALUES, ids=lambda value: type(value).__name__)
def test_any_field_changed_or_another_type_is_unequal(value: Slotted) -> None:
    fields = type(value).__match_args__
    for index in range(len(fields)):
        args = [getattr(value, name) for name in fields]
        args[index] = _other(args[index])
        assert type(value)(*args) != value
    assert all(other != value for other in VALUES if type(other) is not type(value))
    assert value != tuple(getattr(value, name) for name in fields)


def _other(field: object) -> object:
    if isinstance(field, TerminationReason):
        return TerminationReason.CLOSED
    if field is None:
        return 0
    if isinstance(field, bool | int | float):
        return field + 1
    if isinstance(field, bytes):
        return field + b"x"
    if isinstance(field, str):
        return field + "x"
    assert isinstance(field, tuple)
    return (*field, field[0]) if field else ((0, 0),)


def test_class_patterns_match_by_position() -> None:
    match DataFrame(5, 2, 0, 1, b"p", lane=3):
        case DataFrame(seq, message_id, index, count, payload, lane):
            assert (seq, message_id, index, count, payload, lane) == (5, 2, 0, 1, b"p", 3)
        case _:
            pytest.fail("no match")
    match ConnectionTerminated(TerminationReason.RESET):
        case ConnectionTerminated(reason, code, detail):
            assert (reason, code, detail) == (TerminationReason.RESET, 0, "")
        case _:
            pytest.fail("no match")


@pytest.mark.skipif(not core_is_compiled(), reason="pure Python: immutable by convention")
def test_compiled_fields_are_read_only() -> None:
    frame = DataFrame(5, 2, 0, 1, b"p")
    with pytest.raises(AttributeError):
        frame.seq = 6  # type: ignore[misc]
    event = MessageReceived(0, b"m")
    with pytest.raises(AttributeError):
        event.data = b"other"  # type: ignore[misc]
