"""The lossy UDP proxy: its command line as a subprocess, and its API over loopback sockets."""

from __future__ import annotations

import asyncio
import re
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rudp_chat.aio.proxy import UdpProxy
from rudp_chat.aio.socketpath import SocketPath
from rudp_chat.sim.link import LinkProfile

pytestmark = pytest.mark.usefixtures("socket_path")  # both socket paths, see conftest

LOCALHOST = "127.0.0.1"
READY = re.compile(
    r"^proxy listening on 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:(\d+) \(UDP sockets via (\w+)\)$"
)
WAIT_S = 10.0  # upper bound on any single wait; loopback answers in microseconds


@pytest.fixture
def echo() -> Iterator[socket.socket]:
    """A plain UDP socket standing in for the server; the test answers by hand."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        sock.settimeout(WAIT_S)
        yield sock


def _start(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rudp_chat.aio.proxy", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready_line(proxy: subprocess.Popen[str]) -> str:
    assert proxy.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proxy.stdout, selectors.EVENT_READ)
        assert selector.select(WAIT_S), "the proxy never said it was ready"
    return proxy.stdout.readline().rstrip("\n")


def _stop(proxy: subprocess.Popen[str]) -> tuple[int, str]:
    proxy.send_signal(signal.SIGTERM)
    out, _ = proxy.communicate(timeout=WAIT_S)
    return proxy.returncode, out


def test_cli_forwards_both_ways_and_reports_on_sigterm(
    echo: socket.socket, socket_path: SocketPath
) -> None:
    """...and its start line names the socket path it took (the forced one)."""
    upstream_port = echo.getsockname()[1]
    proxy = _start("--listen", f"{LOCALHOST}:0", "--upstream", f"{LOCALHOST}:{upstream_port}")
    try:
        match = READY.match(_ready_line(proxy))
        assert match is not None and int(match[2]) == upstream_port
        assert match[3] == socket_path
        listen = (LOCALHOST, int(match[1]))
        assert listen[1] != 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(WAIT_S)
            for index in range(3):
                client.sendto(b"ping %d" % index, listen)
                data, via = echo.recvfrom(2048)
                assert data == b"ping %d" % index
                echo.sendto(b"pong %d" % index, via)
                assert client.recvfrom(2048) == (b"pong %d" % index, listen)
    finally:
        code, out = _stop(proxy)
    assert code == 0
    assert "up   forwarded 3, dropped 0" in out
    assert "down forwarded 3, dropped 0" in out


def test_cli_directions_take_their_own_values(echo: socket.socket) -> None:
    """``--loss 0:1`` passes every request and drops every reply."""
    upstream = f"{LOCALHOST}:{echo.getsockname()[1]}"
    proxy = _start("--listen", f"{LOCALHOST}:0", "--upstream", upstream, "--loss", "0:1")
    try:
        match = READY.match(_ready_line(proxy))
        assert match is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"request", (LOCALHOST, int(match[1])))
            data, via = echo.recvfrom(2048)
            echo.sendto(data, via)
            echo.sendto(data, via)
            echo.settimeout(0.1)
    finally:
        code, out = _stop(proxy)
    assert code == 0
    assert "up   forwarded 1, dropped 0" in out
    assert "down forwarded 0, dropped 2" in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--loss", "1.5"],
        ["--loss", "0.1:x"],
        ["--delay", "-3"],
        ["--rate", "0"],
        ["--queue", "5"],  # a queue without a rate is meaningless
        ["--outage", "1"],
        ["--bogus"],
    ],
)
def test_cli_rejects_bad_flags_with_usage(flags: list[str]) -> None:
    proxy = _start("--listen", f"{LOCALHOST}:0", "--upstream", f"{LOCALHOST}:9", *flags)
    _, err = proxy.communicate(timeout=WAIT_S)
    assert proxy.returncode == 2
    assert "usage:" in err


def test_seeded_loss_is_repeatable_and_clients_get_their_own_upstream_socket() -> None:
    profile = LinkProfile(loss=0.5)

    async def forwarded(seed: int) -> tuple[list[int], int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind((LOCALHOST, 0))
            server.setblocking(False)
            async with UdpProxy(
                (LOCALHOST, 0), server.getsockname(), profile, LinkProfile(), seed=seed
            ) as proxy:
                clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
                try:
                    for index in range(40):
                        clients[index % 2].sendto(bytes([index]), proxy.listen_address)
                        await asyncio.sleep(0.001)
                    await asyncio.sleep(0.05)
                    arrived, sources = [], set()
                    while True:
                        try:
                            data, source = server.recvfrom(16)
                        except BlockingIOError:
                            break
                        arrived.append(data[0])
                        sources.add(source)
                finally:
                    for client in clients:
                        client.close()
                stats = proxy.stats["up"]
                assert stats.sent == 40 and stats.delivered + stats.lost == 40
                assert stats.delivered == len(arrived)
                return arrived, len(sources)

    first, sources = asyncio.run(asyncio.wait_for(forwarded(seed=5), WAIT_S))
    again, _ = asyncio.run(asyncio.wait_for(forwarded(seed=5), WAIT_S))
    other, _ = asyncio.run(asyncio.wait_for(forwarded(seed=6), WAIT_S))
    assert 0 < len(first) < 40
    assert first == again != other
    assert sources == 2


def test_delay_and_duplicates_are_scheduled_on_the_loop(echo: socket.socket) -> None:
    profile = LinkProfile(delay=0.05, duplicate=1.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        echo.setblocking(False)
        async with UdpProxy((LOCALHOST, 0), echo.getsockname(), profile, profile) as proxy:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                sent = loop.time()
                client.sendto(b"twice", proxy.listen_address)
                copies = [await loop.sock_recv(echo, 16) for _ in range(2)]
                assert copies == [b"twice", b"twice"]
                assert loop.time() - sent >= 0.045
            assert proxy.stats["up"].duplicated == 1

    asyncio.run(asyncio.wait_for(main(), WAIT_S))
