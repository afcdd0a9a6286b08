"""Graceful stop on the signals a platform has: SIGINT/SIGTERM on POSIX, Ctrl-C/Ctrl-Break on
Windows.

``loop.add_signal_handler`` is the POSIX way; Windows' loops do not implement it (and Windows has
no SIGTERM), so there a plain ``signal.signal`` handler hands the stop to the loop with
``call_soon_threadsafe``. Ctrl-C is SIGINT and Ctrl-Break SIGBREAK on Windows.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["STOP_SIGNALS", "on_stop_signals"]

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)
)
"""The signals that ask for a graceful stop where they exist."""


@contextmanager
def on_stop_signals(
    loop: asyncio.AbstractEventLoop,
    stop: Callable[[], None],
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> Iterator[None]:
    """Within the block, each of ``signals`` calls ``stop`` on ``loop``; on leaving, the previous
    handlers are back. Uses ``loop.add_signal_handler`` where the loop implements it, else
    ``signal.signal`` (must then run in the main thread, as ``add_signal_handler`` must)."""
    try:
        for signum in signals:
            loop.add_signal_handler(signum, stop)
    except NotImplementedError:  # Windows' loops
        pass
    else:
        try:
            yield
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop)

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
