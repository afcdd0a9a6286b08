"""aioquic: one bidirectional QUIC stream of length-prefixed messages, on asyncio.

aioquic's defaults (Reno, 1200-byte datagrams, 1 MiB flow-control windows) with a throwaway
self-signed certificate. aioquic's stream writer never pushes back, so the sender waits while
more than ``SEND_BUFFER`` bytes of the stream are unacknowledged; reading that needs aioquic's
private stream state (pinned by the ``bench`` extra's version).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .common import (
    LENGTH,
    WARMUP_PINGS,
    Address,
    Job,
    Meter,
    Ready,
    Result,
    StopFlag,
    converse,
    guard,
    paced,
    run_loop,
    split_frames,
)

__all__ = ["client", "server"]

ALPN = ["rudp-bench"]
SEND_BUFFER = 1024 * 1024  # unacknowledged stream bytes: aioquic's flow-control window


class _Peer(QuicConnectionProtocol):
    """A QUIC connection carrying messages on one stream: ``write`` them, get ``on_message``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream_id: int | None = None
        self.on_message: Callable[[bytearray], object] = _ignore
        self._pending = bytearray()
        self._writable = asyncio.Event()
        self._writable.set()

    def quic_event_received(self, event: QuicEvent) -> None:
        """Cut the stream into messages; wake a blocked writer when the connection ends."""
        if isinstance(event, StreamDataReceived):
            self.stream_id = event.stream_id
            self._pending += event.data
            messages, used = split_frames(self._pending)
            del self._pending[:used]
            for message in messages:
                self.on_message(message)
        elif isinstance(event, ConnectionTerminated):
            self._writable.set()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """Let aioquic handle ``data``, then wake the writer once half its buffer is acked."""
        super().datagram_received(data, addr)
        if not self._writable.is_set() and self.buffered() <= SEND_BUFFER // 2:
            self._writable.set()

    def buffered(self) -> int:
        """Stream bytes written and not yet acknowledged."""
        if self.stream_id is None:
            return 0
        sender = self._quic._streams[self.stream_id].sender
        return int(sender._buffer_stop - sender._buffer_start)

    def write(self, message: bytes) -> None:
        """Queue one message on the stream; datagrams leave on the next transmit."""
        if self.stream_id is None:
            self.stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(self.stream_id, LENGTH.pack(len(message)) + message)

    async def drain(self) -> None:
        """Transmit, and wait while more than ``SEND_BUFFER`` bytes are unacknowledged."""
        self.transmit()
        if self.buffered() > SEND_BUFFER:
            self._writable.clear()
            await self._writable.wait()


def _ignore(message: bytearray) -> None:
    pass


def _sender(peer: _Peer) -> Callable[[bytes], Coroutine[Any, Any, None]]:
    """``peer``'s messages as the paced modes send them: written and transmitted at once."""

    async def send(message: bytes) -> None:
        peer.write(message)
        peer.transmit()

    return send


def _resolve(future: asyncio.Future[None], message: bytearray) -> None:
    if not future.done():
        future.set_result(None)


def _certificate(directory: str) -> tuple[str, str]:
    """A self-signed P-256 certificate and key for ``localhost``, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """Receive (bulk, one-way), echo (ping-pong) or talk (duplex, from the client's first
    message on, on its stream) until the window closes or ``stop``."""
    return run_loop(_serve(job, ready, stop), job.loop)


async def _serve(job: Job, ready: Ready, stop: StopFlag) -> Result:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
    with tempfile.TemporaryDirectory() as directory:
        configuration.load_cert_chain(*_certificate(directory))
    meter = Meter(job)
    closed = False
    talks: list[asyncio.Task[None]] = []

    def on_message(message: bytearray) -> None:
        nonlocal closed
        closed = closed or meter.add(message)

    def create(*args: Any, **kwargs: Any) -> _Peer:
        peer = _Peer(*args, **kwargs)

        def first(message: bytearray) -> None:  # duplex: the client's stream is known now
            meter.add(message)
            peer.on_message = meter.add
            talks.append(asyncio.ensure_future(converse(job, _sender(peer), meter)))

        if job.mode == "pingpong":
            peer.on_message = lambda message: peer.write(bytes(message))
        elif job.mode == "duplex":
            peer.on_message = first
        else:
            peer.on_message = on_message
        return peer

    def done() -> bool:
        if job.mode == "duplex":
            return (bool(talks) and talks[0].done()) or (meter.expired() and not meter.full())
        return closed or meter.expired()

    quic_server = await serve(job.host, 0, configuration=configuration, create_protocol=create)
    try:
        if quic_server._transport is None:
            raise RuntimeError("aioquic's server has no socket")
        ready(quic_server._transport.get_extra_info("sockname"))
        await guard(asyncio.Event().wait(), stop, done)
        if talks and talks[0].done():
            talks[0].result()  # re-raises what the conversation raised
    finally:
        for talk in talks:
            talk.cancel()
        quic_server.close()
    return meter.result() if job.mode != "pingpong" else {}


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """Send (bulk: as fast as the buffer allows; one-way: every ``interval``), talk (duplex)
    or ping."""
    return run_loop(_client(job, address, stop), job.loop)


async def _client(job: Job, address: Address, stop: StopFlag) -> Result:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=ALPN, verify_mode=ssl.CERT_NONE
    )
    result: Result = {"sent": 0}
    async with connect(
        address[0], address[1], configuration=configuration, create_protocol=_Peer
    ) as protocol:
        peer: _Peer = protocol  # type: ignore[assignment]  # create_protocol=_Peer made it

        async def bulk() -> None:
            payload = bytes(job.size)
            while result["sent"] < job.count:
                peer.write(payload)
                result["sent"] += 1
                if peer.buffered() > SEND_BUFFER:
                    await peer.drain()
            await peer.drain()
            await asyncio.Event().wait()  # keep answering until stopped

        async def oneway() -> None:
            await paced(job, _sender(peer))
            await asyncio.Event().wait()

        async def talk() -> None:
            meter = Meter(job)
            peer.on_message = meter.add
            try:
                await converse(job, _sender(peer), meter)
            finally:
                result.update(meter.result())

        async def ping() -> None:
            rtts: list[float] = result.setdefault("rtts_ms", [])
            loop = asyncio.get_running_loop()
            payload = bytes(job.size)
            end = time.perf_counter() + job.duration
            for seq in range(job.count + WARMUP_PINGS):
                started = time.perf_counter()
                if started > end:
                    break
                echo: asyncio.Future[None] = loop.create_future()
                peer.on_message = functools.partial(_resolve, echo)
                peer.write(payload)
                peer.transmit()
                await echo
                if seq >= WARMUP_PINGS:
                    rtts.append(1000 * (time.perf_counter() - started))

        body = {"bulk": bulk, "oneway": oneway, "duplex": talk, "pingpong": ping}[job.mode]
        await guard(body(), stop)
    return result
