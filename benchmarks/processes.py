"""Helper processes for the benchmarks: the chat server (and the proxy) run as deployed, in their
own processes, watched from the benchmark's event loop.

Why one module: durability.py, soak.py and chat_flood.py each start, wait for, measure and stop
such processes, and a fix to one (a pipe that stalls, a hang on stop) belongs to all of them.
Imported as a sibling (``from processes import ...``): the scripts run as
``python benchmarks/X.py``, so ``benchmarks/`` is on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

__all__ = ["SERVER_READY", "HelperProcess", "chat_server_command"]

SERVER_READY: Final = re.compile(r"^Server is listening on [0-9.]+:(\d+) ", re.MULTILINE)
"""The chat server's ready line; its group is the port it bound."""
TIMEOUT_S: Final = 30.0  # to start, or to exit after SIGTERM, on a loaded 2-core box
POLL_S: Final = 0.02
_VM_RSS: Final = re.compile(r"^VmRSS:\s+(\d+) kB", re.MULTILINE)


async def until(condition: Callable[[], bool], timeout: float, poll: float = POLL_S) -> bool:
    """Poll ``condition``; False if it did not hold within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


def chat_server_command(
    *,
    host: str,
    port: int = 0,
    history: Path | None,
    key_file: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m rudp_chat server`` on this interpreter, with these options: the part every
    benchmark shares. ``history=None`` keeps it in memory (``--no-history``); ``key_file=None``
    leaves the server's default key; ``extra`` flags go last."""
    command = [sys.executable, "-m", "rudp_chat", "server", "--host", host, "--port", str(port)]
    command += ["--no-history"] if history is None else ["--history", str(history)]
    if key_file is not None:
        command += ["--key-file", str(key_file)]
    return [*command, *extra]


class HelperProcess:
    """A helper process whose stdout and stderr go to ``workdir/NAME.out`` and ``NAME.err``:
    no pipe can fill up and stall it, and a failed run leaves its logs behind."""

    def __init__(self, name: str, command: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.stdout = workdir / f"{name}.out"
        self.stderr = workdir / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )

    async def ready(
        self, line: re.Pattern[str] = SERVER_READY, *, timeout: float = TIMEOUT_S
    ) -> int:
        """Wait for the ready ``line`` (a MULTILINE pattern whose one group is the port) in its
        stdout; returns the port. Raises RuntimeError, with the tail of its stderr, if it exits
        first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while (match := line.search(self._complete_lines())) is None:
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                why = f"exit code {code}" if code is not None else f"nothing in {timeout:g} s"
                tail = self.stderr.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {self.name} did not start ({why}): {tail}")
            await asyncio.sleep(POLL_S)
        return int(match[1])

    def _complete_lines(self) -> str:
        """Stdout up to its last newline: a line caught half-written cannot match (``$``
        would, at the end of the text, and read a truncated port)."""
        text = self.stdout.read_text(errors="replace")
        return text[: text.rfind("\n") + 1]

    def rss_kib(self) -> int:
        """Resident set size (``VmRSS``), KiB; 0 once the process is gone."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        match = _VM_RSS.search(status)
        return int(match[1]) if match else 0

    def kill(self) -> None:
        """SIGKILL, and reap it: no handler runs, nothing is flushed or closed. A no-op once it
        has been reaped, so cleanup may call it unconditionally."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    async def stop(self, *, timeout: float = TIMEOUT_S) -> int:
        """SIGTERM (a graceful shutdown), wait up to ``timeout`` seconds without blocking the
        event loop, SIGKILL if it hangs; returns the exit code (``-SIGKILL`` after a hang)."""
        self.process.terminate()  # Popen skips the signal once the process is reaped
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                self.kill()
                return self.process.wait()
            await asyncio.sleep(POLL_S)
        return code
