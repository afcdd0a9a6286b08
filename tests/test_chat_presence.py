"""The other nodes' users as a node hears them (``Presence``, sans-IO): each change of the
rosters becomes the notices its members see, and rosters are checked as untrusted input."""

from __future__ import annotations

import pytest

from rudp_chat.chat.presence import (
    MAX_ROSTER_BYTES,
    Listed,
    Presence,
    decode_roster,
    encode_roster,
)
from rudp_chat.chat.protocol import Joined, LeaveReason, Left, Renamed

ALICE, BOB = bytes([1]) * 16, bytes([2]) * 16


def roster(node: str, *users: tuple[bytes, str, tuple[str, ...]]) -> dict[bytes, Listed]:
    return decode_roster(node, encode_roster(users))


def test_joins_parts_renames_and_leaves_of_a_live_node() -> None:
    presence = Presence()
    b = roster("b", (BOB, "bob", ("#lobby", "#dev")))
    assert presence.heard({"b": b}, []) == [
        ("#lobby", Joined("bob", "#lobby")),
        ("#dev", Joined("bob", "#dev")),
    ]
    assert presence.heard({"b": b}, []) == []  # nothing changed: nothing said
    assert presence.names_in("#dev") == ["bob"] and presence.names_in(None) == ["bob"]
    parted = roster("b", (BOB, "bob", ("#lobby",)))
    assert presence.heard({"b": parted}, []) == [("#dev", Left("bob", LeaveReason.PARTED, "#dev"))]
    renamed = roster("b", (BOB, "robert", ("#lobby",)))
    assert presence.heard({"b": renamed}, []) == [("#lobby", Renamed("bob", "robert"))]
    assert presence.heard({"b": roster("b")}, []) == [
        ("#lobby", Left("robert", LeaveReason.LEFT, "#lobby"))
    ]


def test_a_dead_node_s_users_time_out() -> None:
    presence = Presence()
    presence.heard({"b": roster("b", (BOB, "bob", ("#lobby",)))}, [])
    assert presence.heard({}, []) == [("#lobby", Left("bob", LeaveReason.TIMED_OUT, "#lobby"))]
    assert presence.names_in("#lobby") == []


def test_a_user_who_moves_node_times_out_there_and_is_back() -> None:
    """Listed by its old node (not yet expired) and its new one: the new one counts."""
    presence = Presence()
    presence.heard({"b": roster("b", (BOB, "bob", ("#lobby",)))}, [])
    both = {
        "b": roster("b", (BOB, "bob", ("#lobby",))),
        "c": roster("c", (BOB, "bob", ("#lobby",))),
    }
    assert presence.heard(both, []) == [
        ("#lobby", Left("bob", LeaveReason.TIMED_OUT, "#lobby")),
        ("#lobby", Joined("bob", "#lobby")),
    ]
    assert presence.heard({"c": roster("c", (BOB, "bob", ("#lobby",)))}, []) == []


def test_a_user_who_moves_here_is_announced_gone_from_there_before_its_join() -> None:
    presence = Presence()
    presence.heard({"b": roster("b", (BOB, "bob", ("#lobby",)))}, [])
    assert presence.arrived(BOB) == [("#lobby", Left("bob", LeaveReason.TIMED_OUT, "#lobby"))]
    still_listed = {"b": roster("b", (BOB, "bob", ("#lobby",)))}
    assert presence.heard(still_listed, [BOB]) == []  # here now: not announced again
    assert presence.arrived(ALICE) == []


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b"[1]",
        b'[["zz", "bob", []]]',
        b'[["01", "bob", [1]]]',
        b'[["01", "bob"]]',
        b"not json",
        b"[" + b" " * MAX_ROSTER_BYTES + b"]",
    ],
)
def test_a_bad_roster_is_one_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_roster("b", data)
