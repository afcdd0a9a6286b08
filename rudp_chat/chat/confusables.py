"""Unicode TR39 confusable skeletons, from ICU: two strings that look alike share a skeleton.

The skeleton (UTS #39 §4) is NFD, then every character replaced by its prototype from Unicode's
``confusables.txt``, then NFD again: the Cyrillic ``аlice`` and the Latin ``alice`` both become
``alice``. The table is Unicode's, not ours: ICU's ``SpoofChecker`` (through PyICU) carries it,
and the system's ICU is updated with each Unicode release and its security fixes.

TR39 counts multi-character look-alikes too: ``m`` has the skeleton ``rn``, ``1``, ``I`` and
``l`` share ``l``. We keep that: in many fonts they are what a forger would use.

Only the chat server compares names, so PyICU (built against the system's ICU; PyPI has no
wheels) is the ``server`` extra's, loaded on first use: a client, the library and the proxy
install as pure-Python wheels everywhere, Windows included.
"""

from __future__ import annotations

from functools import cache
from typing import Protocol

__all__ = ["SkeletonsUnavailableError", "require", "skeleton"]

INSTALL_HINT = (
    "the chat server needs PyICU for Unicode's look-alike names: "
    "pip install 'rudp-chat[server]' (it builds against the system's ICU; see README.md)"
)


class SkeletonsUnavailableError(RuntimeError):
    """PyICU is not installed, so names cannot be compared for look-alikes."""


class _SpoofChecker(Protocol):
    def getSkeleton(self, kind: int, text: str) -> str: ...  # noqa: N802 - ICU's name


@cache
def _checker() -> _SpoofChecker:
    try:
        import icu
    except ImportError:
        raise SkeletonsUnavailableError(INSTALL_HINT) from None
    checker: _SpoofChecker = icu.SpoofChecker()
    return checker


def require() -> None:
    """Load ICU now (a server checks at start, not at its first hello).

    Raises :class:`SkeletonsUnavailableError` without PyICU."""
    _checker()


def skeleton(text: str) -> str:
    """The TR39 skeleton of ``text``: equal skeletons mean the two strings look alike.

    Raises :class:`SkeletonsUnavailableError` without PyICU."""
    return _checker().getSkeleton(0, text)  # the kind argument is ignored since ICU 58
