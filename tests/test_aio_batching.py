"""Batched datagram I/O (:mod:`rudp_chat.aio.batching`): how datagrams are grouped for one GSO
``sendmsg`` and cut apart after GRO, against the rules the kernel imposes, and both on real
loopback sockets where the kernel has them. The whole transport runs with batching on and off
through the ``socket_path`` fixture (conftest)."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp_chat.aio import ReliableConnection, SocketStats, connect, serve
from rudp_chat.aio import transport as transport_module
from rudp_chat.aio.batching import (
    BATCHED_IO_VARIABLE,
    GRO_CONTROL_BYTES,
    GSO_BYTES_MAX,
    GSO_SEGMENTS_MAX,
    batched_io_wanted,
    enable_batched_io,
    runs,
    segment_control,
    segment_size,
    split,
)
from rudp_chat.core.connection import Address

PEERS: list[Address] = [("127.0.0.1", 1), ("127.0.0.1", 2)]
datagram_lists = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 100, 1200, 1201, 4000]).map(bytes),
        st.sampled_from(PEERS),
    ),
    max_size=3 * GSO_SEGMENTS_MAX,
)


@given(datagram_lists)
def test_runs_cover_every_datagram_in_order_within_the_kernel_rules(
    datagrams: list[tuple[bytes, Address]],
) -> None:
    previous_stop = 0
    for start, stop in runs(datagrams):
        assert start == previous_stop and stop > start
        previous_stop = stop
        run = datagrams[start:stop]
        size = len(run[0][0])
        assert {address for _, address in run} == {run[0][1]}
        assert all(len(data) == size for data, _ in run[:-1])
        assert len(run[-1][0]) <= size  # GSO cuts at size: no datagram grows or splits
        assert len(run) <= GSO_SEGMENTS_MAX
        assert len(run) == 1 or sum(len(data) for data, _ in run) <= GSO_BYTES_MAX
    assert previous_stop == len(datagrams)


def test_runs_are_as_long_as_the_rules_allow() -> None:
    first, second = PEERS
    same = [(bytes(100), first)] * (GSO_SEGMENTS_MAX + 1)
    assert list(runs(same)) == [(0, GSO_SEGMENTS_MAX), (GSO_SEGMENTS_MAX, GSO_SEGMENTS_MAX + 1)]
    mixed = [(bytes(100), first), (bytes(50), first), (bytes(50), first), (bytes(50), second)]
    assert list(runs(mixed)) == [(0, 2), (2, 3), (3, 4)]  # shorter ends a run; so does a peer
    big = [(bytes(4000), first)] * 20
    per_run = GSO_BYTES_MAX // 4000
    assert list(runs(big)) == [(0, per_run), (per_run, len(big))]


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=1500))
def test_split_undoes_the_kernels_coalescing(data: bytes, size: int) -> None:
    parts = split(data, size)
    assert b"".join(parts) == data
    assert all(len(part) == size for part in parts[:-1])
    assert 0 < len(parts[-1]) <= size or data == b""


def test_the_variable_turns_batching_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BATCHED_IO_VARIABLE, raising=False)
    assert batched_io_wanted()
    for value in ("off", "0", " OFF "):
        monkeypatch.setenv(BATCHED_IO_VARIABLE, value)
        assert not batched_io_wanted()
        assert batched_io_wanted(True)
    monkeypatch.setenv(BATCHED_IO_VARIABLE, "on")
    assert batched_io_wanted() and not batched_io_wanted(False)


def test_a_segmented_send_arrives_as_the_same_datagrams() -> None:
    """Loopback, both offloads where the kernel has them: one ``sendmsg`` of three datagrams
    (the last shorter) is one ``recvmsg`` that splits back into exactly those three."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        if not (enable_batched_io(receiver) and enable_batched_io(sender)):
            pytest.skip("no UDP GSO/GRO in this kernel")
        datagrams = [b"a" * 1000, b"b" * 1000, b"c" * 300]
        sender.sendmsg(datagrams, segment_control(1000), 0, receiver.getsockname())
        receiver.settimeout(5.0)
        data, ancillary, _, _ = receiver.recvmsg(65_535, GRO_CONTROL_BYTES)
        assert split(data, segment_size(ancillary)) == datagrams


class UnsegmentingSocket(socket.socket):
    """A UDP socket on a route that cannot segment: every GSO ``sendmsg`` fails with EIO, as
    Linux's does through a device without checksum offload."""

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")


def _unsegmenting_udp_socket(family: int, *, connect: tuple[Any, ...]) -> socket.socket:
    sock = UnsegmentingSocket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(connect)
    return sock


def test_a_route_that_cannot_segment_falls_back_to_one_datagram_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first refused segmented send turns GSO off for the socket and resends its datagrams
    one by one: nothing is lost or counted as an error, and every message arrives in order."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        if not enable_batched_io(probe):
            pytest.skip("no UDP GSO/GRO in this kernel")
    monkeypatch.setenv(BATCHED_IO_VARIABLE, "on")
    messages = [index.to_bytes(4, "big") + bytes(1020) for index in range(200)]

    async def main() -> SocketStats:
        async with await serve("127.0.0.1", 0) as server, asyncio.timeout(30):
            with monkeypatch.context() as patch:  # the server's socket is a plain one
                patch.setattr(transport_module, "open_udp_socket", _unsegmenting_udp_socket)
                client = await connect(*server.address)
            async with client:
                accepted = await server.accept()

                async def send_all() -> None:
                    for message in messages:
                        await client.send(message)

                received, _ = await asyncio.gather(receive_all(accepted), send_all())
                assert received == messages
                return client.socket_stats()

    async def receive_all(connection: ReliableConnection) -> list[bytes]:
        return [await connection.recv() for _ in messages]

    stats = asyncio.run(main())
    assert not stats.batched_io
    assert stats.segmented_sends == stats.send_errors == 0
    assert stats.datagrams_sent >= len(messages)
