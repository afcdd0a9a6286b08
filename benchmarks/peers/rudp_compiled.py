"""rudp-compiled: the rudp peer (defaults: encrypted, batched socket I/O on) on the compiled core.

The compiled build lives apart from the pure-Python package the parent imports: a directory
holding a ``RUDP_CHAT_COMPILE=1`` install, e.g. ``RUDP_CHAT_COMPILE=1 pip install --no-deps
--target DIR .``, or a compiled venv's site-packages (the same Python version). The parent
names it (``throughput.py --compiled DIR``) in ``RUDP_CHAT_COMPILED_PATH``; each peer process
puts it first on ``sys.path`` before it imports rudp_chat, and refuses to run if what it then
imports is not compiled, so a row labelled compiled cannot measure pure Python.
"""

from __future__ import annotations

import os
import sys

from .common import Address, Job, Ready, Result, StopFlag

__all__ = ["COMPILED_PATH_VARIABLE", "client", "server"]

COMPILED_PATH_VARIABLE = "RUDP_CHAT_COMPILED_PATH"


def _use_compiled() -> None:
    """Import rudp_chat from the compiled build; raises if it is not one."""
    if "rudp_chat" in sys.modules:
        raise RuntimeError("rudp_chat was imported before the compiled build's path was set")
    where = os.environ[COMPILED_PATH_VARIABLE]
    sys.path.insert(0, where)
    from rudp_chat.build import compiled_modules

    loaded = compiled_modules()
    if not all(loaded.values()):
        raise RuntimeError(f"{COMPILED_PATH_VARIABLE}={where} is not a compiled build: {loaded}")


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """The rudp server (see :mod:`peers.rudp`), compiled."""
    _use_compiled()
    from .rudp import server as rudp_server

    return rudp_server(job, ready, stop)


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """The rudp client (see :mod:`peers.rudp`), compiled."""
    _use_compiled()
    from .rudp import client as rudp_client

    return rudp_client(job, address, stop)
