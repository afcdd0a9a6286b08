"""User names and message text: what is allowed, what counts as the same name, and how text is
made harmless to print.

Two users must never be able to look alike or to paint over each other's terminal. So a name is
restricted to letters, digits and ``_-.`` after Unicode NFKC normalisation, and two names collide
when their NFKC-casefolded keys are equal (``Bob``, ``BOB`` and the fullwidth ``Ｂｏｂ`` are one
name). Text is never refused for its characters; :func:`neutralise` rewrites what a terminal
would act on (C0/C1 controls, escape sequences, bidi overrides, line breaks) into visible or no
characters. The server applies it before storing or relaying, and every client again before
rendering, so neither side has to trust the other.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_ROOM_CHARS",
    "ROOM_PREFIX",
    "InvalidNameError",
    "name_key",
    "neutralise",
    "normalise_name",
    "normalise_room",
]

MAX_NAME_CHARS: Final = 32  # fits a chat column; counted after NFKC, which can lengthen a name
ROOM_PREFIX: Final = "#"
MAX_ROOM_CHARS: Final = 1 + MAX_NAME_CHARS
_NAME_PUNCTUATION: Final = frozenset("_-.")
_MAX_MARK_RUN: Final = 4  # combining marks on one base: enough for Vietnamese, too few for "zalgo"

_C0_PICTURES: Final = 0x2400  # U+2400..U+241F show C0 controls visibly: ESC becomes ␛
_DEL_PICTURE: Final = "\u2421"  # ␡
_REPLACEMENT: Final = "\ufffd"  # stands in for C1 controls (8-bit CSI, ...) and lone surrogates

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, 15.1): characters a renderer
# shows as nothing. Most are format characters (Cf), refused anyway; the rest are letters (the
# Hangul fillers) or combining marks (the combining grapheme joiner, variation selectors) that the
# category rules would let through, so ``Alice`` plus one of them would be a second, identical
# looking ``Alice`` with a different key, and ``U+3164`` alone an invisible name.
_INVISIBLE: Final = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


class InvalidNameError(ValueError):
    """A user name that breaks the rules; ``str(error)`` says which rule, for the user."""


def normalise_name(raw: str) -> str:
    """Return the display form of ``raw`` (NFKC) or raise :class:`InvalidNameError`.

    A name is 1..MAX_NAME_CHARS characters, each a letter, a decimal digit, one of ``_-.``, or
    a combining mark on a letter (so names in Devanagari or decomposed Latin work). Spaces,
    symbols, and every invisible (Unicode default-ignorable), format or bidi-control character
    are refused.
    """
    name = unicodedata.normalize("NFKC", raw)
    if not name:
        raise InvalidNameError("a name needs at least one character")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidNameError(f"a name has at most {MAX_NAME_CHARS} characters")
    after_letter = False
    for char in name:
        if _is_invisible(char):
            raise InvalidNameError(f"a name may not hold invisible characters (U+{ord(char):04X})")
        category = unicodedata.category(char)
        if category[0] == "L":
            after_letter = True
        elif category in ("Mn", "Mc") and after_letter:
            pass
        elif category == "Nd" or char in _NAME_PUNCTUATION:
            after_letter = False
        else:
            raise InvalidNameError(
                f"a name may hold only letters, digits and _ - . (not U+{ord(char):04X})"
            )
    return name


def normalise_room(raw: str) -> str:
    """Return the room ``raw`` names: ``#`` and the NFKC-casefolded name (``#Dev`` and
    ``#ｄｅｖ`` are ``#dev``), or raise :class:`InvalidNameError`. After the ``#`` the name
    rules of :func:`normalise_name` apply."""
    if not raw.startswith(ROOM_PREFIX):
        raise InvalidNameError(f"a room name starts with {ROOM_PREFIX}")
    try:
        room = ROOM_PREFIX + name_key(normalise_name(raw[len(ROOM_PREFIX) :]))
    except InvalidNameError as exc:
        raise InvalidNameError(f"room: {exc}") from None
    if len(room) > MAX_ROOM_CHARS:  # casefolding can lengthen: ß is ss
        raise InvalidNameError(f"a room name has at most {MAX_ROOM_CHARS - 1} characters")
    return room


def _is_invisible(char: str) -> bool:
    """Whether ``char`` is default-ignorable: a renderer shows nothing for it."""
    code = ord(char)
    return any(first <= code <= last for first, last in _INVISIBLE)


def name_key(name: str) -> str:
    """The identity of a name: two names are the same user exactly when their keys are equal.

    NFKC, casefold, NFKC again (casefolding can denormalise), as Unicode's identifier
    caseless matching does.
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    return unicodedata.normalize("NFKC", folded)


def neutralise(text: str) -> str:
    """Return ``text`` with nothing a terminal would execute and on one line.

    C0 controls (ESC, BEL, CR, LF, ...) become their visible Control Pictures (``␛``), TAB a
    space, DEL ``␡``; C1 controls (8-bit CSI) and lone surrogates become U+FFFD; format
    characters (bidi overrides and isolates, zero-width joiners, ...) are dropped; line and
    paragraph separators become spaces; runs of combining marks are capped. The result contains no
    character of Unicode category Cc, Cf, Cs, Zl or Zp.
    """
    if text.isascii() and text.isprintable():  # the common case, without the per-char walk
        return text
    out: list[str] = []
    marks = 0
    for char in text:
        category = unicodedata.category(char)
        if category in ("Mn", "Me"):
            marks += 1
            if marks <= _MAX_MARK_RUN:
                out.append(char)
            continue
        marks = 0
        if category == "Cc":
            code = ord(char)
            if char == "\t":
                out.append(" ")
            elif code < 0x20:
                out.append(chr(_C0_PICTURES + code))
            elif code == 0x7F:
                out.append(_DEL_PICTURE)
            else:
                out.append(_REPLACEMENT)
        elif category == "Cs":
            out.append(_REPLACEMENT)
        elif category in ("Zl", "Zp"):
            out.append(" ")
        elif category != "Cf":
            out.append(char)
    return "".join(out)
