"""Unicode TR39 confusable skeletons, from ICU: two strings that look alike share a skeleton.

The skeleton (UTS #39 §4) is NFD, then every character replaced by its prototype from Unicode's
``confusables.txt``, then NFD again: the Cyrillic ``аlice`` and the Latin ``alice`` both become
``alice``. The table is Unicode's, not ours: ICU's ``SpoofChecker`` (through PyICU) carries it,
and the system's ICU is updated with each Unicode release and its security fixes.

TR39 counts multi-character look-alikes too: ``m`` has the skeleton ``rn``, ``1``, ``I`` and
``l`` share ``l``. We keep that: in many fonts they are what a forger would use.
"""

from __future__ import annotations

from typing import Final

import icu

__all__ = ["skeleton"]

_CHECKER: Final = icu.SpoofChecker()


def skeleton(text: str) -> str:
    """The TR39 skeleton of ``text``: equal skeletons mean the two strings look alike."""
    result: str = _CHECKER.getSkeleton(0, text)  # the type argument is ignored since ICU 58
    return result
