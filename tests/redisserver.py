"""A real ``redis-server`` (the Debian package) for the cluster tests: on a free port, in a
temporary directory, with the append-only file fsynced at every write, so a test can kill it
(``SIGKILL``) and start it again on the same port and file. No mock stands in for it: where
``redis-server`` is missing the tests skip, or fail when ``RUDP_CHAT_REQUIRE_REDIS=1`` (CI)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

import pytest

__all__ = ["REQUIRE_VARIABLE", "RedisServer", "require_redis"]

REQUIRE_VARIABLE: Final = "RUDP_CHAT_REQUIRE_REDIS"
START_TIMEOUT_S: Final = 10.0  # a loaded 2-core machine starts it in well under a second


def require_redis() -> str:
    """The path of ``redis-server``, and the ``redis`` package importable; else skip the test
    (fail it if ``RUDP_CHAT_REQUIRE_REDIS=1``)."""
    executable = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    missing = "redis-server is not installed (apt-get install redis-server)"
    if executable is not None:
        try:
            import redis  # noqa: F401  # the cluster extra
        except ImportError:
            missing = "the redis package is not installed (pip install '.[cluster]')"
        else:
            return executable
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{missing}, and {REQUIRE_VARIABLE}=1")
    pytest.skip(missing)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; :meth:`kill` and :meth:`start` again keep port and files."""

    def __init__(self, executable: str, directory: Path, *, replica_of: int | None = None) -> None:
        """``replica_of``: the port of a primary on this host to replicate."""
        self.executable = executable
        self.directory = directory
        self.replica_of = replica_of
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (AOF ``always``, no RDB) and wait until it answers ``PING`` with ``PONG``
        (not ``LOADING``: its file is read back)."""
        self._process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--protected-mode", "no",
                *([] if self.replica_of is None else ["--replicaof", "127.0.0.1", str(self.replica_of)]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            if self._ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT_S} s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """``kill -9`` it (what it fsynced survives: with AOF always, every write)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.kill()
            self._process = None
