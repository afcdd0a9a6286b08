"""What differs on Windows and macOS, exercised on Linux: the socket path a loop without
``add_reader`` takes, Windows' ConnectionResetError from ``recvfrom``, a graceful stop without
``add_signal_handler``, and the per-platform directories and key-file check."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from asyncio.proactor_events import BaseProactorEventLoop
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVarTuple

import pytest
import uvloop

from rudp_chat.aio import connect, serve
from rudp_chat.aio import transport as transport_module
from rudp_chat.aio.endpoint import open_udp_socket
from rudp_chat.aio.socketpath import (
    SOCKET_PATH_VARIABLE,
    SocketPath,
    choose_socket_path,
    has_reader_api,
)
from rudp_chat.chat.confusables import INSTALL_HINT
from rudp_chat.identity import (
    KeyFileError,
    config_dir,
    default_key_file,
    has_posix_permissions,
    load_or_create_server_key,
)
from rudp_chat.stopsignals import on_stop_signals

Ts = TypeVarTuple("Ts")
LOCALHOST = "127.0.0.1"
WAIT_S = 10.0  # bound on any real-time wait; loopback answers in milliseconds


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A working loop that, like Windows' proactor loop, implements no add_reader/add_writer
    (its own datagram transports still work: they use the private ``_add_reader``)."""

    add_reader = asyncio.AbstractEventLoop.add_reader
    add_writer = asyncio.AbstractEventLoop.add_writer


class NoSignalsLoop(asyncio.SelectorEventLoop):
    """Like Windows' loops: ``add_signal_handler`` raises ``NotImplementedError``."""

    def add_signal_handler(
        self, sig: int, callback: Callable[[*Ts], object], *args: *Ts
    ) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------ the path choice


@pytest.mark.parametrize(
    ("loop_type", "expected"),
    [
        (asyncio.SelectorEventLoop, True),
        (uvloop.Loop, True),
        (BaseProactorEventLoop, False),  # what Windows' default loop is made of
        (NoReaderLoop, False),
    ],
)
def test_reader_api_is_detected_per_loop_type(
    loop_type: type[asyncio.AbstractEventLoop], expected: bool
) -> None:
    assert has_reader_api(loop_type) is expected


@pytest.mark.parametrize(
    ("loop_factory", "requested", "chosen"),
    [
        (asyncio.SelectorEventLoop, None, SocketPath.READER),
        (asyncio.SelectorEventLoop, SocketPath.AUTO, SocketPath.READER),
        (asyncio.SelectorEventLoop, SocketPath.DATAGRAM_ENDPOINT, SocketPath.DATAGRAM_ENDPOINT),
        (NoReaderLoop, None, SocketPath.DATAGRAM_ENDPOINT),
        (NoReaderLoop, SocketPath.DATAGRAM_ENDPOINT, SocketPath.DATAGRAM_ENDPOINT),
    ],
)
def test_the_path_is_resolved_for_the_loop(
    loop_factory: type[asyncio.AbstractEventLoop],
    requested: SocketPath | None,
    chosen: SocketPath,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SOCKET_PATH_VARIABLE, raising=False)
    loop = loop_factory()
    try:
        assert choose_socket_path(loop, requested) is chosen
    finally:
        loop.close()


def test_the_environment_forces_a_path_and_a_call_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.SelectorEventLoop()
    try:
        monkeypatch.setenv(SOCKET_PATH_VARIABLE, "datagram_endpoint")
        assert choose_socket_path(loop) is SocketPath.DATAGRAM_ENDPOINT
        assert choose_socket_path(loop, SocketPath.READER) is SocketPath.READER
        monkeypatch.setenv(SOCKET_PATH_VARIABLE, "select")
        with pytest.raises(ValueError, match="select"):
            choose_socket_path(loop)
    finally:
        loop.close()


def test_the_reader_path_cannot_be_forced_on_a_loop_without_it() -> None:
    loop = NoReaderLoop()
    try:
        with pytest.raises(ValueError, match="add_reader"):
            choose_socket_path(loop, SocketPath.READER)
    finally:
        loop.close()


def test_a_loop_without_add_reader_serves_and_connects_on_the_datagram_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The automatic fallback, end to end: nothing forced, the loop decides."""
    monkeypatch.delenv(SOCKET_PATH_VARIABLE, raising=False)

    async def main() -> tuple[SocketPath, SocketPath, bytes]:
        async with await serve(LOCALHOST, 0) as server:
            async with asyncio.timeout(WAIT_S):
                client = await connect(*server.address)
                accepted = await server.accept()
                await client.send(b"over the portable path")
                echoed = await accepted.recv()
                await client.close()
            return server.stats().socket_path, client.socket_path, echoed

    with asyncio.Runner(loop_factory=NoReaderLoop) as runner:
        assert runner.run(main()) == (
            SocketPath.DATAGRAM_ENDPOINT,
            SocketPath.DATAGRAM_ENDPOINT,
            b"over the portable path",
        )


# ---------------------------------------------- Windows' ICMP ConnectionResetError


class ResettingSocket(socket.socket):
    """A UDP socket whose first ``recvfrom`` (or ``recvmsg``: the batched reader's) raises
    what Windows raises after an ICMP port unreachable; the datagram that woke the reader
    stays queued for the next call."""

    resets_left = 1

    def _reset_once(self) -> None:
        if self.resets_left:
            self.resets_left -= 1
            raise ConnectionResetError(10054, "An existing connection was forcibly closed")

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        self._reset_once()
        return super().recvfrom(bufsize, flags)

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        self._reset_once()
        return super().recvmsg(bufsize, ancbufsize, flags)


def _resetting_udp_socket(family: int, *, bind: tuple[object, ...]) -> socket.socket:
    plain = open_udp_socket(family)  # its buffer options, on a socket that resets
    sock = ResettingSocket(family, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, plain.getsockopt(socket.SOL_SOCKET, option))
    plain.close()
    sock.setblocking(False)
    sock.bind(bind)
    return sock


def test_a_connection_reset_from_recvfrom_is_counted_and_the_server_goes_on(
    socket_path: SocketPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the stock loop (whose datagram transport calls ``recvfrom`` on the socket object,
    as the reader path does), under both paths."""

    async def main() -> tuple[int, bytes]:
        with monkeypatch.context() as patch:  # the client's socket is a plain one
            patch.setattr(transport_module, "open_udp_socket", _resetting_udp_socket)
            server = await serve(LOCALHOST, 0)
        assert server.stats().socket_path is socket_path
        async with server, asyncio.timeout(WAIT_S):
            client = await connect(*server.address)
            accepted = await server.accept()
            await client.send(b"still here")
            received = await accepted.recv()
            await client.close()
            return server.stats().socket.receive_errors, received

    assert asyncio.run(main()) == (1, b"still here")


# ------------------------------------------------------------------ graceful stop


@pytest.mark.parametrize("loop_factory", [asyncio.SelectorEventLoop, NoSignalsLoop])
def test_ctrl_c_stops_gracefully_with_or_without_add_signal_handler(
    loop_factory: type[asyncio.AbstractEventLoop],
) -> None:
    """SIGINT is what Ctrl-C raises on every platform; on Windows' loops the plain handler
    is the only way to see it. The previous handler is back afterwards."""
    before = signal.getsignal(signal.SIGINT)

    async def main() -> None:
        stop = asyncio.Event()
        with on_stop_signals(asyncio.get_running_loop(), stop.set):
            signal.raise_signal(signal.SIGINT)
            async with asyncio.timeout(WAIT_S):
                await stop.wait()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert signal.getsignal(signal.SIGINT) == before


# ------------------------------------------------------------- platform directories


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home directory with no XDG variable: the platform defaults."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    yield tmp_path


def test_linux_keeps_the_xdg_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir("linux") == tmp_path / "xdg" / "rudp_chat"


def test_linux_keeps_dot_config_without_the_variable(home: Path) -> None:
    assert config_dir("linux") == home / ".config" / "rudp_chat"
    assert config_dir("freebsd14") == home / ".config" / "rudp_chat"


def test_macos_uses_application_support(home: Path) -> None:
    assert PurePosixPath(config_dir("darwin")) == PurePosixPath(
        home, "Library", "Application Support", "rudp_chat"
    )


def test_windows_uses_roaming_appdata(monkeypatch: pytest.MonkeyPatch) -> None:
    """platformdirs asks Windows for the folder; off Windows its documented override names it."""
    monkeypatch.setenv("WIN_PD_OVERRIDE_APPDATA", r"C:\Users\ada\AppData\Roaming")
    assert PureWindowsPath(config_dir("win32")) == PureWindowsPath(
        r"C:\Users\ada\AppData\Roaming\rudp_chat"
    )


def test_the_default_files_live_in_this_platforms_directory() -> None:
    assert default_key_file() == config_dir() / "server_key"


def test_mode_bits_are_checked_only_where_the_platform_has_them(tmp_path: Path) -> None:
    key_file = tmp_path / "server_key"
    key, created = load_or_create_server_key(key_file)
    assert created
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_server_key(key_file, platform="linux")
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_server_key(key_file, platform="darwin")
    again, created = load_or_create_server_key(key_file, platform="win32")  # ACLs protect it
    assert not created and again.private_bytes() == key.private_bytes()
    assert [has_posix_permissions(p) for p in ("linux", "darwin", "win32")] == [True, True, False]


# ------------------------------------------------------------------ PyICU, the server's only


_WITHOUT_PYICU = "import sys; sys.modules['icu'] = None  # as where PyICU is not installed\n"


def test_everything_but_the_chat_server_runs_without_pyicu() -> None:
    """PyICU has no wheels (Windows users could not install a client that needed it): only the
    server's look-alike check loads it, and the client, library and proxy import without it."""
    code = _WITHOUT_PYICU + (
        "import rudp_chat.cli, rudp_chat.chat.client, rudp_chat.chat.console, rudp_chat.aio\n"
        "from rudp_chat.cli import main\n"
        "raise SystemExit(main(['client', '--help']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--name" in done.stdout


def test_the_chat_server_without_pyicu_says_how_to_install_it(tmp_path: Path) -> None:
    code = _WITHOUT_PYICU + (
        "from rudp_chat.cli import main\n"
        "raise SystemExit(main(['server', '--port', '0', '--no-history',"
        f" '--key-file', {str(tmp_path / 'key')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == f"error: cannot start the server: {INSTALL_HINT}\n"
