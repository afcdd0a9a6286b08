"""What a client shows: the plain-mode grammar (room prefixes), server times with the date when
not today, and mentions."""

from __future__ import annotations

import time

import pytest

from rudp_chat.chat.protocol import (
    LOBBY,
    Chat,
    Entered,
    HistoryEnd,
    HistoryKind,
    HistoryStart,
    Joined,
    LeaveReason,
    Left,
    Private,
    Topic,
    Users,
)
from rudp_chat.chat.render import Event, mentions, plain, styled

NOON = time.mktime((2026, 12, 6, 12, 0, 0, 0, 0, -1))


@pytest.mark.parametrize(
    ("event", "in_lobby", "in_dev"),
    [
        (Chat(1, NOON, "bob", "hi"), "bob: hi", "#lobby bob: hi"),
        (Chat(1, NOON, "bob", "waves", True, room="#dev"), "#dev * bob waves", "* bob waves"),
        (Private(NOON, "bob", "ann", "psst"), "bob -> ann: psst", "bob -> ann: psst"),
        (Joined("bob", "#dev"), "#dev *** bob joined", "*** bob joined"),
        (
            Left("bob", LeaveReason.PARTED, "#dev", "lunch"),
            "#dev *** bob left (parted: lunch)",
            "*** bob left (parted: lunch)",
        ),
        (
            Topic("#dev", "ann", "rooms"),
            "#dev *** ann set the topic: rooms",
            "*** ann set the topic: rooms",
        ),
        (
            Users(("ann", "bob"), "#dev", ("bob",)),
            "#dev *** 2 here: ann, bob (away)",
            "*** 2 here: ann, bob (away)",
        ),
        (
            HistoryStart(2, "#dev", HistoryKind.SEARCH, (4,)),
            "#dev *** search: 1 hit, newest last",
            "*** search: 1 hit, newest last",
        ),
        (
            HistoryEnd("#dev", more=True),
            "#dev *** end of history\n#dev *** older lines: /history",
            "*** end of history\n*** older lines: /history",
        ),
        (HistoryEnd(LOBBY), "*** end of history", "#lobby *** end of history"),
        (Entered(LOBBY, "", ("ann",)), None, None),  # the welcome said who is here
        (
            Entered("#dev", "rooms", ("ann", "bob")),
            "#dev *** now in #dev: 2 here: ann, bob\n#dev *** topic: rooms",
            "*** now in #dev: 2 here: ann, bob\n*** topic: rooms",
        ),
    ],
)
def test_plain_lines_of_other_rooms_start_with_the_room(
    event: Event, in_lobby: str | None, in_dev: str | None
) -> None:
    assert plain(event, LOBBY) == in_lobby
    assert plain(event, "#dev") == in_dev


def test_styled_shows_the_servers_time_with_the_date_when_not_today() -> None:
    chat = Chat(1, NOON, "bob", "hi")
    today, tomorrow = styled(chat, NOON + 3600), styled(chat, NOON + 86400)
    assert today is not None and today[0][1] == "12:00:00 "
    assert tomorrow is not None and tomorrow[0][1] == "2026-12-06 12:00:00 "


def test_a_line_naming_me_is_highlighted() -> None:
    assert mentions("hey Ann, look", "ann") and mentions("@ANN:", "Ann")
    assert not mentions("annie and joann", "ann")
    plain_style = styled(Chat(1, NOON, "bob", "hi all"), NOON, me="ann")
    named = styled(Chat(1, NOON, "bob", "hi ann"), NOON, me="ann")
    assert plain_style is not None and named is not None
    assert plain_style[-1][0] == "" and named[-1][0] != ""
