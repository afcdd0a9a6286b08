"""Name rules, and that nothing a client renders can drive the terminal."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp_chat.chat.protocol import (
    Bye,
    ByeCode,
    Chat,
    Error,
    ErrorCode,
    Info,
    Joined,
    LeaveReason,
    Left,
    Private,
    Renamed,
    Users,
    Welcome,
)
from rudp_chat.chat.render import Event, Notice, name_style, plain, styled
from rudp_chat.chat.text import (
    MAX_NAME_CHARS,
    InvalidNameError,
    name_key,
    neutralise,
    normalise_name,
)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("alice", "alice"),
        ("Bob_2.x-y", "Bob_2.x-y"),
        ("José", "José"),
        ("Jose\u0301", "José"),  # decomposed: NFKC composes it
        ("\uff22\uff4f\uff42", "Bob"),  # fullwidth
        ("नमस्ते", "नमस्ते"),  # Devanagari needs its combining signs
        ("x" * MAX_NAME_CHARS, "x" * MAX_NAME_CHARS),
    ],
)
def test_valid_names_normalise(raw: str, name: str) -> None:
    assert normalise_name(raw) == name


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "x" * (MAX_NAME_CHARS + 1),
        "two words",
        "bob\u200b",  # zero-width space
        "bob\u202e",  # right-to-left override
        "\u2066bob\u2069",  # isolates
        "bob\x1b[31m",
        "bob\n",
        "b*b",
        "\u0301bob",  # a combining mark on nothing
        "9\u0301",  # a combining mark on a digit
    ],
)
def test_invalid_names_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(InvalidNameError, match=r"."):
        normalise_name(raw)


def test_names_collide_after_nfkc_and_casefold() -> None:
    keys = {name_key(normalise_name(raw)) for raw in ("Bob", "BOB", "bob", "\uff42\uff4f\uff42")}
    assert len(keys) == 1
    assert name_key("Straße") == name_key("STRASSE")
    assert name_style("Bob") == name_style("bOB")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text", "plain text"),
        ("\x1b[2J\x1b[H", "␛[2J␛[H"),
        ("\x1b]52;c;ZXZpbA==\x07", "␛]52;c;ZXZpbA==␇"),  # OSC 52 writes the clipboard
        ("\x9b31m", "\ufffd31m"),  # 8-bit CSI
        ("a\rb\nc\td", "a␍b␊c d"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("a\u2028b", "a b"),
        ("e" + "\u0301" * 10, "e" + "\u0301" * 4),
        ("\ud800", "\ufffd"),
        ("del\x7f", "del␡"),
    ],
)
def test_neutralise_makes_controls_visible_or_drops_them(text: str, shown: str) -> None:
    assert neutralise(text) == shown


_FORBIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _is_safe(rendered: str) -> bool:
    return all(c == "\n" or unicodedata.category(c) not in _FORBIDDEN for c in rendered)


@given(st.text())
def test_neutralised_text_has_no_control_format_or_separator(text: str) -> None:
    assert _is_safe(neutralise(text))
    assert "\n" not in neutralise(text)


_strings = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(
    ["\x1b[2J", "\x1b]52;c;AAAA\x07", "\x9b", "\u202e", "\r", "\u200d", "\x00"]
)


@st.composite
def _events(draw: st.DrawFn) -> Event:
    a, b, c = draw(_strings), draw(_strings), draw(_strings)
    events: list[Event] = [
        Chat(1, 0.0, a, b),
        Chat(2, 0.0, a, b, action=True),
        Private(0.0, a, b, c),
        Joined(a),
        Left(a, LeaveReason.TIMED_OUT),
        Renamed(a, b),
        Users((a, b, c)),
        Info((a, b)),
        Welcome(a, (b, c), 0, 4000, 20.0, 40),
        Error(ErrorCode.MALFORMED, a),
        Bye(ByeCode.SHUTDOWN, a),
        Notice(a),
    ]
    return draw(st.sampled_from(events))


@given(_events())
def test_what_a_client_renders_has_no_cc_but_newline_and_no_cf(event: Event) -> None:
    line = plain(event)
    assert line is not None and _is_safe(line)
    fragments = styled(event, 0.0)
    assert fragments is not None
    assert _is_safe("".join(text for _, text in fragments))
    assert _is_safe("".join(style for style, _ in fragments))
