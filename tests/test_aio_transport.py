"""The asyncio transport over real loopback sockets: delivery through a lossy proxy, timeouts,
refusals, garbage, IPv6, backpressure and clean shutdown.

Each test runs its coroutine under ``asyncio.run`` with an overall time limit, and again under
uvloop (in the ``test`` extra; skipped only where it cannot be installed, on Windows). Every
random choice is seeded; time bounds leave room for a loaded machine (``SCHEDULING_SLACK_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest

from rudp_chat.aio import (
    ConnectError,
    ConnectionLostError,
    ConnectionRefusedByServer,
    HandshakeTimeoutError,
    PortUnreachableError,
    ReliableConnection,
    TransportError,
    connect,
    serve,
)
from rudp_chat.aio.batching import batched_io_wanted, enable_batched_io
from rudp_chat.aio.endpoint import RECEIVE_BATCH
from rudp_chat.aio.proxy import UdpProxy
from rudp_chat.aio.socketpath import SocketPath
from rudp_chat.core import (
    ConnectionClosedError,
    ConnectionConfig,
    DatagramTooLargeError,
    ErrorCode,
    ListenerConfig,
    State,
    TerminationReason,
)
from rudp_chat.core.codec import encode_datagram, encode_frames
from rudp_chat.core.frames import PingFrame, SessionPacket
from rudp_chat.sim.link import LinkProfile

pytestmark = pytest.mark.usefixtures("socket_io")  # both paths, batched or not: see conftest

LOCALHOST = "127.0.0.1"
GRACEFUL = {TerminationReason.CLOSED, TerminationReason.CLOSED_BY_PEER}
SHORT = ConnectionConfig(heartbeat_interval=0.2, idle_timeout=1.0, handshake_timeout=2.0)
# What a loaded 2-core machine may add to a real-time wait (a timer fired late, a process not
# scheduled): the bounds below check order and rough scale, while the exact instants are tested
# in virtual time (test_properties' partition test, test_connection's timeouts).
SCHEDULING_SLACK_S = 5.0

Runner = Callable[[Coroutine[Any, Any, None], float], None]


def _loop_factories() -> list[object]:
    factories: list[object] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        factories.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip("no uvloop")))
    else:
        factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return factories


@pytest.fixture(params=_loop_factories())
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a test coroutine to completion within ``limit`` seconds, then check it left no task."""

    def runner(coroutine: Coroutine[Any, Any, None], limit: float) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(coroutine, limit)
            await asyncio.sleep(0)  # let cancelled helpers finish
            leftover = asyncio.all_tasks() - {asyncio.current_task()}
            assert not leftover, leftover

        with asyncio.Runner(loop_factory=request.param) as asyncio_runner:
            asyncio_runner.run(bounded())

    return runner


def _messages(seed: int, count: int) -> list[bytes]:
    """Mostly chat-sized messages, some of a few KB, one in a hundred up to 100 KB; each starts
    with its index so a mismatch is easy to read."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        draw = rng.random()
        if draw < 0.90:
            size = rng.randint(4, 300)
        elif draw < 0.99:
            size = rng.randint(301, 10_000)
        else:
            size = rng.randint(10_001, 100_000)
        out.append(index.to_bytes(4, "big") + rng.randbytes(size - 4))
    return out


async def _exchange(
    connection: ReliableConnection, outgoing: list[bytes], expected: int
) -> list[bytes]:
    """Send everything while receiving ``expected`` messages, then close gracefully."""

    async def send_all() -> None:
        for message in outgoing:
            await connection.send(message)

    async def receive_all() -> list[bytes]:
        return [await connection.recv() for _ in range(expected)]

    _, received = await asyncio.gather(send_all(), receive_all())
    await connection.close()
    return received


async def _free_udp_port(host: str = LOCALHOST) -> int:
    """A port nothing listens on right now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def test_five_connections_through_a_lossy_proxy(run: Runner) -> None:
    """20 % loss, 5 % duplication, 10 % reordering, 20 +- 10 ms each way: 1,000 messages of up to
    100 KB each way on each of 5 connections arrive exactly once, in order; both sides then
    close gracefully."""
    connections, count = 5, 1000
    profile = LinkProfile(loss=0.2, duplicate=0.05, reorder=0.1, delay=0.020, jitter=0.010)

    async def main() -> None:
        server = await serve(LOCALHOST, 0)
        proxy = UdpProxy((LOCALHOST, 0), server.address, profile, profile, seed=7)
        await proxy.start()

        async def serve_one(connection: ReliableConnection) -> None:
            index = int.from_bytes(await connection.recv(), "big")
            received = await _exchange(connection, _messages(1000 + index, count), count)
            assert received == _messages(index, count)
            assert connection.termination is not None
            assert connection.termination.reason in GRACEFUL

        async def client(index: int) -> None:
            connection = await connect(*proxy.listen_address)
            await connection.send(index.to_bytes(4, "big"))
            received = await _exchange(connection, _messages(index, count), count)
            assert received == _messages(1000 + index, count)
            assert connection.termination is not None
            assert connection.termination.reason in GRACEFUL
            assert connection.state is State.CLOSED

        async def accept_all() -> None:
            async with asyncio.TaskGroup() as handlers:
                for _ in range(connections):
                    handlers.create_task(serve_one(await server.accept()))

        async with asyncio.TaskGroup() as group:
            group.create_task(accept_all())
            for index in range(connections):
                group.create_task(client(index))
        stats = proxy.stats
        assert stats["up"].lost > 0 and stats["down"].duplicated > 0 and stats["up"].reordered > 0
        await proxy.close()
        await server.close()

    run(main(), 120)


def test_a_killed_peer_times_out(run: Runner) -> None:
    """A client process killed without a word is reported as timed out, about idle_timeout +
    heartbeat_interval later (exactly so in virtual time: test_properties)."""
    child_code = (
        "import asyncio, sys\n"
        "from rudp_chat.aio import connect\n"
        "from rudp_chat.core import ConnectionConfig\n"
        "async def main():\n"
        "    config = ConnectionConfig(heartbeat_interval=0.2, idle_timeout=1.0)\n"
        "    connection = await connect('127.0.0.1', int(sys.argv[1]), config=config)\n"
        "    await connection.send(b'hello')\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )

    async def main() -> None:
        async with await serve(LOCALHOST, 0, config=ListenerConfig(connection=SHORT)) as server:
            child = subprocess.Popen([sys.executable, "-c", child_code, str(server.address[1])])
            try:
                connection = await server.accept()
                assert await connection.recv() == b"hello"
                await asyncio.sleep(0.5)  # a few heartbeats each way
                child.send_signal(signal.SIGKILL)
                killed = time.monotonic()
            finally:
                child.kill()
                child.wait()
            termination = await connection.wait_closed()
            elapsed = time.monotonic() - killed
            assert termination.reason is TerminationReason.IDLE_TIMEOUT
            assert elapsed <= SHORT.idle_timeout + SHORT.heartbeat_interval + SCHEDULING_SLACK_S
            with pytest.raises(ConnectionLostError) as lost:
                await connection.recv()
            assert lost.value.reason is TerminationReason.IDLE_TIMEOUT
            assert server.connections == []

    run(main(), 30)


def test_nothing_listening_fails_fast(run: Runner) -> None:
    """ICMP port unreachable ends the handshake at once instead of after handshake_timeout: the
    error says so, and it comes long before the timeout could have fired."""

    async def main() -> None:
        port = await _free_udp_port()
        config = ConnectionConfig(handshake_timeout=60.0)
        started = time.monotonic()
        with pytest.raises(PortUnreachableError) as failure:
            await connect(LOCALHOST, port, config=config)
        assert time.monotonic() - started < config.handshake_timeout
        assert isinstance(failure.value, ConnectionRefusedError)
        assert isinstance(failure.value, ConnectError)

    run(main(), 30)


def test_a_silent_server_times_out_the_handshake(run: Runner) -> None:
    """Never before handshake_timeout (the transport's clock is ``time.monotonic``), and not
    much after it."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind((LOCALHOST, 0))
            config = ConnectionConfig(handshake_timeout=0.5)
            started = time.monotonic()
            with pytest.raises(HandshakeTimeoutError) as failure:
                await connect(*silent.getsockname(), config=config)
            elapsed = time.monotonic() - started
            assert (
                config.handshake_timeout <= elapsed < config.handshake_timeout + SCHEDULING_SLACK_S
            )
            assert isinstance(failure.value, TimeoutError)

    run(main(), 30)


def test_a_full_server_refuses(run: Runner) -> None:
    async def main() -> None:
        async with await serve(LOCALHOST, 0, config=ListenerConfig(max_connections=1)) as server:
            async with await connect(*server.address) as first:
                with pytest.raises(ConnectionRefusedByServer) as refused:
                    await connect(*server.address)
                assert "full" in refused.value.detail
                await first.send(b"still fine")
                accepted = await server.accept()
                assert await accepted.recv() == b"still fine"
            assert server.stats().refused == 1

    run(main(), 10)


class _HoldingRelay(asyncio.DatagramProtocol):
    """Relays one client to a server, holding back what the server sends after its first
    ``prompt`` datagrams by ``hold_s``: a refusal's CLOSE then reaches the client only after its
    WELCOME completed ``connect``."""

    def __init__(self, server: tuple[str, int], prompt: int, hold_s: float) -> None:
        self.server, self.prompt, self.hold_s = server, prompt, hold_s
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.from_server = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass on 3.11

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr != self.server:
            self.client = addr
            self.transport.sendto(data, self.server)
        elif self.client is not None:
            self.from_server += 1
            delay = 0.0 if self.from_server <= self.prompt else self.hold_s
            asyncio.get_running_loop().call_later(delay, self.transport.sendto, data, self.client)


def test_a_refusal_that_arrives_after_connect_returned_is_still_a_refusal(run: Runner) -> None:
    """A refusal is a WELCOME, then a CLOSE: when the CLOSE comes late, ``connect`` has returned,
    and ``recv`` must say the server refused, not that the connection was lost."""

    async def main() -> None:
        config = ListenerConfig(max_connections=1)
        server = await serve(LOCALHOST, 0, config=config)
        async with server, await connect(*server.address):
            loop = asyncio.get_running_loop()
            relay = _HoldingRelay(server.address, prompt=2, hold_s=0.3)  # RETRY, WELCOME
            transport, _ = await loop.create_datagram_endpoint(
                lambda: relay, local_addr=(LOCALHOST, 0)
            )
            try:
                late = await connect(*transport.get_extra_info("sockname")[:2])
                with pytest.raises(ConnectionRefusedByServer) as refused:
                    await late.recv()
                assert "full" in refused.value.detail
                with pytest.raises(ConnectionRefusedByServer):
                    await late.send(b"too late")
            finally:
                transport.close()

    run(main(), 10)


def test_garbage_is_dropped_and_counted(run: Runner) -> None:
    """Random bytes, truncated and bit-flipped datagrams, and well-formed packets for unknown
    connection ids leave a live connection's messages intact and show up in the counters."""
    rng = random.Random(3)

    def valid() -> bytes:
        frames = encode_frames([PingFrame()])
        return encode_datagram(SessionPacket(rng.randbytes(8), rng.randrange(1 << 40), frames))

    invalid = [rng.randbytes(rng.randint(1, 1500)) for _ in range(200)]
    for _ in range(100):
        datagram = valid()
        invalid.append(datagram[: rng.randrange(len(datagram))])
    for _ in range(100):
        damaged = bytearray(valid())
        bit = rng.randrange(len(damaged) * 8)
        damaged[bit // 8] ^= 1 << (bit % 8)
        invalid.append(bytes(damaged))
    unknown = [valid() for _ in range(100)]
    garbage = invalid + unknown
    rng.shuffle(garbage)
    outgoing, incoming = _messages(11, 300), _messages(12, 300)

    async def main() -> None:
        async with await serve(LOCALHOST, 0) as server:
            client = await connect(*server.address)
            accepted = await server.accept()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
                attacker.setblocking(False)

                async def attack() -> None:
                    for start in range(0, len(garbage), 50):
                        for datagram in garbage[start : start + 50]:
                            attacker.sendto(datagram, server.address)
                        await asyncio.sleep(0.005)

                async with asyncio.TaskGroup() as group:
                    group.create_task(attack())
                    to_server = group.create_task(_exchange(client, outgoing, len(incoming)))
                    to_client = group.create_task(_exchange(accepted, incoming, len(outgoing)))
            assert to_server.result() == incoming
            assert to_client.result() == outgoing
            stats = server.stats()
            assert stats.dropped_invalid == len(invalid)
            assert stats.resets_sent + stats.resets_suppressed == len(unknown)
            assert client.stats().dropped_invalid == 0

    run(main(), 30)


def _kernel_batches() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        return enable_batched_io(probe)


def test_a_bulk_transfer_is_batched_as_configured(run: Runner, socket_io: SocketPath) -> None:
    """Batched I/O where the path, the variable (see conftest) and the kernel allow it: the
    sender segments, the receiver splits coalesced reads, and every message arrives in order;
    elsewhere one datagram per system call."""
    batched = socket_io is SocketPath.READER and batched_io_wanted() and _kernel_batches()
    messages = [index.to_bytes(4, "big") + bytes(1020) for index in range(300)]

    async def main() -> None:
        async with (
            await serve(LOCALHOST, 0) as server,
            await connect(LOCALHOST, server.address[1]) as client,
        ):
            accepted = await server.accept()
            received, _ = await asyncio.gather(
                _receive_each(accepted, len(messages)), _send_each(client, messages)
            )
            assert received == messages
            sent, arrived = client.socket_stats(), server.stats().socket
        for stats in (sent, arrived):
            assert stats.batched_io is batched
        assert (sent.segmented_sends > 0) is batched
        assert (arrived.coalesced_receives > 0) is batched

    run(main(), 30)


async def _send_each(connection: ReliableConnection, messages: list[bytes]) -> None:
    for message in messages:
        await connection.send(message)


async def _receive_each(connection: ReliableConnection, count: int) -> list[bytes]:
    return [await connection.recv() for _ in range(count)]


def test_ipv6_loopback(run: Runner) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main() -> None:
        async with await serve("::1", 0) as server:
            assert server.address[0] == "::1"
            async with await connect("::1", server.address[1]) as client:
                accepted = await server.accept()
                assert accepted.peer_address[0] == "::1"
                await client.send(b"over six")
                assert await accepted.recv() == b"over six"
                await accepted.send(b"and back")
                assert await client.recv() == b"and back"

    run(main(), 10)


def test_datagrams_are_read_apart_from_messages(run: Runner) -> None:
    """Datagrams both ways while messages flow: ``recv_datagram`` and ``recv`` each see their
    own; a waiting ``recv_datagram`` wakes up, and ends like ``recv`` after the close."""

    async def main() -> None:
        async with await serve(LOCALHOST, 0) as server:
            client = await connect(*server.address)
            accepted = await server.accept()
            waiting = asyncio.create_task(accepted.recv_datagram())
            await asyncio.sleep(0)
            client.send_datagram(b"typing", lane=1, latest_only=True)
            await client.send(b"a line")
            assert await accepted.recv() == b"a line"
            arrived = await waiting
            assert (arrived.data, arrived.lane) == (b"typing", 1)
            accepted.send_datagram(b"back")
            assert (await client.recv_datagram()).data == b"back"
            with pytest.raises(DatagramTooLargeError):
                client.send_datagram(bytes(client.max_datagram_payload + 1))
            pending = asyncio.create_task(client.recv_datagram())
            await asyncio.sleep(0)
            await client.close()
            with pytest.raises(EOFError):
                await pending  # woken by the end
            with pytest.raises(EOFError):
                await accepted.recv()
            with pytest.raises(EOFError):
                await accepted.recv_datagram()
            assert accepted.stats().datagram_frames_received == 1

    run(main(), 20)


def test_server_close_ends_every_connection_gracefully(run: Runner) -> None:
    async def main() -> None:
        server = await serve(LOCALHOST, 0)
        clients = [await connect(*server.address) for _ in range(3)]
        accepted: list[ReliableConnection] = []
        async for connection in server:
            accepted.append(connection)
            await connection.send(b"bye %d" % len(accepted))
            if len(accepted) == len(clients):
                break

        async def read_all(client: ReliableConnection) -> list[bytes]:
            return [message async for message in client]

        readers = [asyncio.create_task(read_all(client)) for client in clients]
        await server.close()
        assert sorted([(await reader)[0] for reader in readers]) == [b"bye 1", b"bye 2", b"bye 3"]
        for connection in accepted:
            assert connection.termination is not None
            assert connection.termination.reason is TerminationReason.CLOSED
        for client in clients:
            termination = await client.wait_closed()
            assert termination.reason is TerminationReason.CLOSED_BY_PEER
            with pytest.raises(ConnectionClosedError):
                await client.send(b"too late")
            await client.close()
        with pytest.raises(TransportError):
            await server.accept()
        assert [connection async for connection in server] == []

    run(main(), 20)


def test_send_waits_for_a_slow_reader(run: Runner) -> None:
    """Backpressure: with nobody reading, the receive window and then the send buffer fill and
    ``send`` waits; reading releases it. Nothing queues without bound in between."""
    window = 64 * 1024
    config = ConnectionConfig(
        max_message_size=window, send_buffer_size=window, receive_window=window
    )
    messages = [bytes([index]) * 16 * 1024 for index in range(32)]  # 8x what the path holds

    async def main() -> None:
        listener_config = ListenerConfig(connection=config)
        async with (
            await serve(LOCALHOST, 0, config=listener_config) as server,
            await connect(*server.address, config=config) as client,
        ):
            accepted = await server.accept()

            async def send_all() -> None:
                for message in messages:
                    await client.send(message)

            sender = asyncio.create_task(send_all())
            await asyncio.sleep(0.5)
            assert not sender.done()
            assert client.stats().messages_sent < len(messages)
            assert client.stats().send_buffered_bytes > 0
            received = [await accepted.recv() for _ in messages]
            await sender
            assert received == messages
            await accepted.close()

    run(main(), 20)


def test_send_nowait_never_overtakes_a_waiting_send(run: Runner) -> None:
    """``send_nowait`` queues at once while there is room, and refuses (False, nothing queued)
    while an earlier ``send`` on the lane waits, even with room for the smaller message: the
    lane keeps its order."""
    window = 64 * 1024
    config = ConnectionConfig(
        max_message_size=window, send_buffer_size=window, receive_window=window
    )
    fill = [bytes([index]) * 15 * 1024 for index in range(7)]
    big = b"B" * 32 * 1024

    async def main() -> None:
        listener_config = ListenerConfig(connection=config)
        async with (
            await serve(LOCALHOST, 0, config=listener_config) as server,
            await connect(*server.address, config=config) as client,
        ):
            accepted = await server.accept()
            assert all(client.send_nowait(message) for message in fill[:4])
            assert not client.send_nowait(fill[4])  # the send buffer is full
            while client.stats().send_buffered_bytes:  # the peer's window takes them
                await asyncio.sleep(0.05)
            assert all(client.send_nowait(message) for message in fill[4:])
            waiting = asyncio.create_task(client.send(big))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            assert client._core.send_capacity_on(0) >= 1  # room for b"x", yet it must wait
            assert not client.send_nowait(b"x")
            received = [await accepted.recv() for _ in range(len(fill) + 1)]
            await waiting
            assert client.send_nowait(b"x")
            assert received == [*fill, big]
            assert await accepted.recv() == b"x"
            await accepted.close()

    run(main(), 20)


def test_a_full_read_batch_marks_the_listener_backlogged_until_the_socket_is_empty(
    run: Runner, socket_io: SocketPath
) -> None:
    """More datagrams queued than one wake-up reads: that wake-up counts a full batch and
    the listener rations handshakes until a wake-up finds the socket empty. The portable
    datagram-endpoint path cannot tell, and never rations."""
    queued = RECEIVE_BATCH + 50

    async def main() -> None:
        async with await serve(LOCALHOST, 0) as server:
            noise = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with noise:
                for index in range(queued):  # sizes grow: GRO cannot glue any together;
                    noise.sendto(b"\xc1" * (1 + index), server.address)  # small: all fit
                while server.stats().dropped_invalid < queued:
                    await asyncio.sleep(0.01)
            stats = server.stats()
            reader = socket_io is SocketPath.READER
            assert stats.socket.full_batches == (1 if reader else 0)
            assert not server._listener.backlogged

    run(main(), 20)


def test_a_sender_waiting_for_room_is_not_overtaken(run: Runner) -> None:
    """Senders on one lane keep their order: once one waits for room in the send buffer, a
    later, smaller message that would fit waits behind it instead of taking the room. The peer
    is a process killed after the handshake, so nothing is acknowledged and no room comes."""
    child_code = (
        "import asyncio\n"
        "from rudp_chat.aio import serve\n"
        "async def main():\n"
        "    server = await serve('127.0.0.1', 0)\n"
        "    print(server.address[1], flush=True)\n"
        "    await server.accept()\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    buffer = 64 * 1024
    config = ConnectionConfig(max_message_size=buffer, send_buffer_size=buffer)

    async def main() -> None:
        with subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.PIPE) as child:
            try:
                assert child.stdout is not None
                port = int(await asyncio.to_thread(child.stdout.readline))
                client = await connect(LOCALHOST, port, config=config)
            finally:
                child.kill()
        await client.send(bytes(40_000))  # fits: returns at once
        held = client.stats().send_buffered_bytes  # 40,000 B and their framing
        first = asyncio.create_task(client.send(bytes(30_000)))  # ~23,000 B left: waits
        second = asyncio.create_task(client.send(bytes(10_000)))  # would fit: must wait too
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not first.done() and not second.done()
        assert client.stats().send_buffered_bytes == held
        for task in (first, second):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client.abort()

    run(main(), 30)


def test_abort_is_reported_to_the_peer(run: Runner) -> None:
    async def main() -> None:
        async with await serve(LOCALHOST, 0) as server:
            client = await connect(*server.address)
            await client.send(b"first")
            accepted = await server.accept()
            assert await accepted.recv() == b"first"
            client.abort("changed my mind")
            assert client.termination is not None
            assert client.termination.reason is TerminationReason.ABORTED
            with pytest.raises(ConnectionLostError):
                await client.send(b"after abort")
            with pytest.raises(ConnectionLostError) as lost:
                await accepted.recv()
            assert lost.value.reason is TerminationReason.PEER_ERROR
            assert lost.value.error_code == ErrorCode.APPLICATION
            assert "changed my mind" in lost.value.detail
            await client.close()  # harmless after the end

    run(main(), 10)


def test_concurrent_recv_is_refused_and_cancelled_recv_loses_nothing(run: Runner) -> None:
    async def main() -> None:
        async with await serve(LOCALHOST, 0) as server, await connect(*server.address) as client:
            accepted = await server.accept()
            waiting = asyncio.create_task(accepted.recv())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError):
                await accepted.recv()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            for index in range(50):
                await client.send(b"%d" % index)
            received: list[bytes] = []
            while len(received) < 50:
                with contextlib.suppress(TimeoutError):
                    received.append(await asyncio.wait_for(accepted.recv(), 0.001))
            assert received == [b"%d" % index for index in range(50)]

    run(main(), 10)
