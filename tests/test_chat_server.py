"""The server shell over the real transport on localhost: bad input, flooding, dedup, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rudp_chat.aio import ConnectionLostError, ReliableConnection, connect, serve
from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.history import History
from rudp_chat.chat.protocol import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_TEXT_CHARS,
    Ack,
    Bye,
    ByeCode,
    Chat,
    Error,
    ErrorCode,
    Hello,
    LeaveReason,
    Left,
    RefusalCode,
    Refused,
    Say,
    ServerMessage,
    Welcome,
    decode_server,
    encode,
)
from rudp_chat.chat.render import Event
from rudp_chat.chat.room import RoomLimits
from rudp_chat.chat.server import ChatServer, open_room
from rudp_chat.chat.sizing import chat_connection_config
from rudp_chat.core import ErrorCode as TransportErrorCode
from rudp_chat.core.config import ConnectionConfig, ListenerConfig

FAST = ConnectionConfig(heartbeat_interval=0.2, idle_timeout=3.0, handshake_timeout=3.0)
S1, S2 = bytes([1]) * 16, bytes([2]) * 16
Address = tuple[str, int]


@dataclass
class Live:
    """A running server, as a test body sees it; connections made here are aborted at the end
    (a client's socket lives on through the close's drain, which outlasts the test's loop)."""

    address: Address
    stop: asyncio.Event
    opened: list[ReliableConnection] = field(default_factory=list)

    async def dial(self) -> ReliableConnection:
        connection = await connect(*self.address, config=FAST)
        self.opened.append(connection)
        return connection

    async def join(self, name: str, session: bytes) -> ReliableConnection:
        connection = await self.dial()
        await connection.send(encode(Hello(name, session)))
        assert isinstance(await next_message(connection, Welcome), Welcome)
        return connection


def run_with_server(
    body: Callable[[Live], Awaitable[None]],
    limits: RoomLimits | None = None,
    history_path: Path | None = None,
) -> int:
    """Run ``body`` against a live server, which shuts down when ``body`` returns or sets
    ``stop``; returns the server's exit code."""

    async def main() -> int:
        sized = chat_connection_config(FAST, (limits or RoomLimits()).max_users)  # as deployed
        transport = await serve("127.0.0.1", 0, config=ListenerConfig(connection=sized))
        history = History(history_path, 0.0)
        server = ChatServer(transport, open_room(history, limits or RoomLimits()), history)
        live = Live(transport.address, asyncio.Event())
        serving = asyncio.create_task(server.run(live.stop))
        try:
            async with asyncio.timeout(30):
                await body(live)
        finally:
            live.stop.set()
            code = await serving
            history.close()
            for connection in live.opened:
                connection.abort("test over")
        return code

    return asyncio.run(main())


async def next_message(connection: ReliableConnection, kind: type[ServerMessage]) -> ServerMessage:
    """Skip to the next message of type ``kind``."""
    while True:
        message = decode_server(await connection.recv())
        if isinstance(message, kind):
            return message


def test_garbage_before_hello_is_refused_and_after_it_answered() -> None:
    async def body(live: Live) -> None:
        stranger = await live.dial()
        await stranger.send(b"\xc1 not msgpack")
        refused = await next_message(stranger, Refused)
        assert isinstance(refused, Refused) and refused.code is RefusalCode.BAD_HELLO

        alice = await live.join("alice", S1)
        for junk in (b"", b"\x93\x01\x02\x03", encode(Ack(1, None)), encode(Hello("x", S2))):
            await alice.send(junk)
            error = await next_message(alice, Error)
            assert isinstance(error, Error) and error.code is ErrorCode.MALFORMED
        await alice.send(encode(Say(1, "still fine")))
        assert await next_message(alice, Ack) == Ack(1, 1)
        await alice.close()

    assert run_with_server(body) == 0


def test_oversized_messages_are_answered_as_specified() -> None:
    """PROTOCOL.md §12: too much text is ``too_long`` and acked; a message over the chat's
    64 KiB is ``malformed``, unacked; one over the transport's limit ends the connection."""
    limit = chat_connection_config(FAST, RoomLimits().max_users).max_message_size

    async def body(live: Live) -> None:
        alice = await live.join("alice", S1)
        await alice.send(encode(Say(1, "x" * (MAX_CLIENT_FRAME_BYTES - 100))))
        error = await next_message(alice, Error)
        assert isinstance(error, Error) and (error.code, error.id) == (ErrorCode.TOO_LONG, 1)
        assert await next_message(alice, Ack) == Ack(1, None)
        await alice.send(encode(Say(2, "x" * (MAX_CLIENT_FRAME_BYTES + 100))))
        error = await next_message(alice, Error)
        assert isinstance(error, Error) and (error.code, error.id) == (ErrorCode.MALFORMED, None)
        await alice.send(encode(Say(2, "fits")))  # id 2 was not recorded as processed
        assert await next_message(alice, Ack) == Ack(2, 1)
        await alice.send(encode(Say(3, "x" * limit)))
        with pytest.raises(ConnectionLostError) as lost:
            await next_message(alice, Ack)
        assert lost.value.error_code == TransportErrorCode.PROTOCOL_VIOLATION

    assert MAX_TEXT_CHARS < MAX_CLIENT_FRAME_BYTES - 100 < limit // 2
    assert run_with_server(body) == 0


def test_flooding_client_is_warned_then_dropped_and_others_are_told() -> None:
    async def body(live: Live) -> None:
        bob = await live.join("bob", S2)
        mallory = await live.join("mallory", S1)
        for say_id in range(1, 60):
            await mallory.send(encode(Say(say_id, "spam")))
        warning = await next_message(mallory, Error)
        assert isinstance(warning, Error) and warning.code is ErrorCode.RATE_LIMITED
        bye = await next_message(mallory, Bye)
        assert isinstance(bye, Bye) and bye.code is ByeCode.FLOODING
        assert await next_message(bob, Left) == Left("mallory", LeaveReason.FLOODING)
        await bob.send(encode(Say(1, "peace")))
        assert await next_message(bob, Ack) == Ack(1, 6)  # mallory's 5 got through first

    limits = RoomLimits(rate=1.0, burst=5, flood_kick=10)
    assert run_with_server(body, limits) == 0


def test_a_resend_after_a_server_restart_is_not_delivered_twice(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"

    async def first(live: Live) -> None:
        alice = await live.join("alice", S1)
        await alice.send(encode(Say(1, "once")))
        assert await next_message(alice, Ack) == Ack(1, 1)
        alice.abort("crash before the ack was seen")

    async def second(live: Live) -> None:
        alice = await live.dial()
        await alice.send(encode(Hello("alice", S1)))
        welcome = await next_message(alice, Welcome)
        assert isinstance(welcome, Welcome) and welcome.acked == 1
        old = await next_message(alice, Chat)
        assert isinstance(old, Chat) and (old.seq, old.history, old.text) == (1, True, "once")
        await alice.send(encode(Say(1, "once")))
        assert await next_message(alice, Ack) == Ack(1, None)
        await alice.send(encode(Say(2, "twice")))
        new = await next_message(alice, Chat)
        assert isinstance(new, Chat) and (new.seq, new.history, new.text) == (2, False, "twice")
        assert await next_message(alice, Ack) == Ack(2, 2)
        await alice.close()

    assert run_with_server(first, history_path=path) == 0
    assert run_with_server(second, history_path=path) == 0


def test_shutdown_tells_clients_and_they_exit_zero() -> None:
    seen: list[Event] = []

    async def body(live: Live) -> None:
        client = ChatClient(ClientOptions(*live.address, "alice", connection=FAST), seen.append)
        running = asyncio.create_task(client.run())
        while client.state != "open":
            await asyncio.sleep(0.01)
        client.submit("before shutdown")
        while client.unacknowledged:
            await asyncio.sleep(0.01)
        live.stop.set()
        assert await running == 0

    assert run_with_server(body) == 0
    assert [e.code for e in seen if isinstance(e, Bye)] == [ByeCode.SHUTDOWN]
    assert [e.text for e in seen if isinstance(e, Chat)] == ["before shutdown"]
