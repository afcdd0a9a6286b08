"""The optional compiled build: ``RUDP_CHAT_COMPILE=1 pip install .`` compiles the protocol core
with mypyc (README.md, Development). Without the variable, the pure-Python package, unchanged.

Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from setuptools import setup

NOT_COMPILED = frozenset({"errors.py", "listener.py"})
"""errors.py: mypyc compiles no class derived from RuntimeError (LocalProtocolError); raising
is off the hot path, so the exceptions stay plain Python, which compiled modules raise and catch
alike. listener.py: the transport's ServerStats extends its ListenerStats, and Python classes
cannot extend compiled ones; the listener only routes each datagram to its compiled connection."""


def ext_modules() -> list[Any]:
    """The core's modules as C extensions when ``RUDP_CHAT_COMPILE=1``, else none."""
    if os.environ.get("RUDP_CHAT_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    core = Path(__file__).parent / "rudp_chat" / "core"
    sources = sorted(
        str(path.relative_to(core.parent.parent))
        for path in core.glob("*.py")
        if path.name not in NOT_COMPILED
    )
    return list(mypycify(sources, opt_level="3"))


setup(ext_modules=ext_modules())
