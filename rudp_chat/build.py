"""Which build of the package runs: the pure-Python reference, or the optional compiled core
(``RUDP_CHAT_COMPILE=1 pip install .``: the protocol core as mypyc's C extensions).

Both behave the same; tests and benchmarks ask so that a run cannot silently measure or check
the other one (README.md, Development).
"""

from __future__ import annotations

import importlib
from importlib.machinery import EXTENSION_SUFFIXES

__all__ = ["EXPECT_COMPILED_VARIABLE", "HOT_MODULES", "compiled_modules", "core_is_compiled"]

EXPECT_COMPILED_VARIABLE = "RUDP_CHAT_EXPECT_COMPILED"
"""Set to 1, the test suite fails unless the core is compiled (CI's compiled run); else pure."""
HOT_MODULES = (
    "rudp_chat.core.codec",
    "rudp_chat.core.connection",
    "rudp_chat.core.sending",
    "rudp_chat.core.receiving",
    "rudp_chat.core.protection",
    "rudp_chat.core.congestion",
    "rudp_chat.core.arrivals",
)
"""The modules every datagram passes through: the ones the compiled build must compile."""


def compiled_modules() -> dict[str, bool]:
    """For each hot module, whether it was loaded from a C extension."""
    return {
        name: str(importlib.import_module(name).__file__).endswith(tuple(EXTENSION_SUFFIXES))
        for name in HOT_MODULES
    }


def core_is_compiled() -> bool:
    """True when every hot module of the core is compiled; False when none is (or a mix)."""
    return all(compiled_modules().values())
