"""The benchmark's peers: one module per implementation, all with the same two entry points.

``server(job, ready, stop)`` binds, calls ``ready(address)``, then receives (bulk, one-way) or
echoes (ping-pong) and returns its figures; ``client(job, address, stop)`` sends (bulk, one-way)
or pings (ping-pong). Both return a dict of plain numbers and lists (it crosses a process
boundary) and give up when ``stop`` is set. :mod:`peers.harness` runs each in its own process.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from .rudp_compiled import COMPILED_PATH_VARIABLE

__all__ = ["IMPLS", "Impl", "missing"]


@dataclass(frozen=True, slots=True)
class Impl:
    """One implementation under test: the peer module, and what it needs that may be missing."""

    name: str
    module: str
    requires: tuple[str, ...]
    loop: str = "asyncio"
    """Event loop of the asyncio peers: "asyncio" or "uvloop"."""
    insecure: bool = False
    """rudp: both peers with ``ConnectionConfig(insecure=True)`` (no encryption)."""
    batched_io: bool = True
    """rudp: GSO/GRO where the kernel has them (False: one datagram per system call)."""
    compiled: bool = False
    """rudp: the compiled core, found where ``RUDP_CHAT_COMPILED_PATH`` says."""


IMPLS: dict[str, Impl] = {
    impl.name: impl
    for impl in (
        Impl("raw-udp", "peers.raw_udp", ()),
        Impl("asyncio-udp", "peers.asyncio_udp", ()),
        Impl("asyncio-udp-uvloop", "peers.asyncio_udp", ("uvloop",), loop="uvloop"),
        Impl("tcp", "peers.tcp", ()),
        Impl("kcp", "peers.kcp_peer", ("kcp",)),
        Impl("aioquic", "peers.quic", ("aioquic", "cryptography")),
        Impl("rudp", "peers.rudp", ("rudp_chat.aio",)),
        Impl("rudp-insecure", "peers.rudp", ("rudp_chat.aio",), insecure=True),
        Impl("rudp-unbatched", "peers.rudp", ("rudp_chat.aio",), batched_io=False),
        Impl("rudp-uvloop", "peers.rudp", ("rudp_chat.aio", "uvloop"), loop="uvloop"),
        Impl("rudp-compiled", "peers.rudp_compiled", ("rudp_chat.aio",), compiled=True),
    )
}


def missing(impl: Impl) -> str | None:
    """The first module ``impl`` needs that cannot be imported here (or the compiled build it
    needs and was not given), or None."""
    if impl.compiled and not os.path.isdir(os.environ.get(COMPILED_PATH_VARIABLE, "")):
        return f"the compiled build ({COMPILED_PATH_VARIABLE} or --compiled DIR)"
    for name in impl.requires:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            return name
    return None
