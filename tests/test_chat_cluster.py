"""Cluster nodes (``ClusterServer``) on the real transport with a real ``redis-server``: one
order across nodes, each line stored once, resends after a move, Redis restarts and
partitions. Nodes run in the test's event loop; Redis is the ``redis_server`` fixture."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from redis.asyncio import Redis
from redisserver import RedisServer
from test_chat_server import FAST, next_message

from rudp_chat.aio import ReliableConnection, connect, serve
from rudp_chat.chat.cluster import COMMIT_SCRIPT, ClusterServer, Keys
from rudp_chat.chat.clusterconfig import ClusterOptions
from rudp_chat.chat.history import History
from rudp_chat.chat.protocol import (
    Ack,
    Chat,
    Hello,
    Say,
    Welcome,
    decode_server,
    encode,
)
from rudp_chat.chat.room import RoomLimits
from rudp_chat.chat.sizing import chat_connection_config
from rudp_chat.core.config import ListenerConfig

Entries = list[tuple[bytes, dict[bytes, bytes]]]
"""What ``XRANGE`` answers (redis-py's types cannot say it)."""
LIMITS = RoomLimits(rate=1e9, burst=10**9)
TTL_S = 1.5  # names and members of a dead node expire this fast here (15 s by default)
Address = tuple[str, int]


@dataclass
class Node:
    """A running cluster node, as a test sees it."""

    server: ClusterServer
    address: Address
    stop: asyncio.Event
    serving: asyncio.Task[int]
    opened: list[ReliableConnection] = field(default_factory=list)

    async def join(self, name: str, session: bytes, **hello: object) -> ReliableConnection:
        """A client connection that said ``hello`` and was welcomed."""
        connection = await connect(*self.address, config=FAST)
        self.opened.append(connection)
        await connection.send(encode(Hello(name, session, **hello)))  # type: ignore[arg-type]
        assert isinstance(await next_message(connection, Welcome), Welcome)
        return connection

    async def halt(self) -> int:
        self.stop.set()
        code = await self.serving
        for connection in self.opened:
            connection.abort("test over")
        return code


@asynccontextmanager
async def node(
    redis: RedisServer, name: str, directory: Path, **options: object
) -> AsyncIterator[Node]:
    """Node ``name`` of the cluster on ``redis``, its history in ``directory``; stopped after."""
    cluster = ClusterOptions(redis.url, name, name_ttl=TTL_S, **options)  # type: ignore[arg-type]
    sized = chat_connection_config(FAST, LIMITS.max_users)
    transport = await serve("127.0.0.1", 0, config=ListenerConfig(connection=sized))
    history = History(directory / f"{name}.sqlite3", 0.0)
    server = ClusterServer.open(transport, history, LIMITS, cluster, lost_within=FAST.idle_timeout)
    stop = asyncio.Event()
    running = Node(server, transport.address, stop, asyncio.create_task(server.run(stop)))
    try:
        yield running
    finally:
        if not running.serving.done():
            await running.halt()
        history.close()


async def take(connection: ReliableConnection, count: int) -> tuple[list[Chat], list[Ack]]:
    """The next ``count`` live lines ``connection`` is sent, and the acks among them (and
    those that come with them, up to the last line), other messages skipped."""
    got: list[Chat] = []
    acked: list[Ack] = []
    while len(got) < count:
        message = decode_server(await connection.recv())
        if isinstance(message, Chat) and not message.history:
            got.append(message)
        elif isinstance(message, Ack):
            acked.append(message)
    return got, acked


async def acks(connection: ReliableConnection, count: int, acked: list[Ack]) -> list[Ack]:
    """``acked`` and the acks ``connection`` is sent next, ``count`` in all."""
    while len(acked) < count:
        message = await next_message(connection, Ack)
        assert isinstance(message, Ack)
        acked.append(message)
    return acked


async def stored(redis_server: RedisServer, room: str) -> list[tuple[int, str]]:
    """``(seq, text)`` of every line of ``room`` in its Redis stream, in stream order."""
    redis = Redis.from_url(redis_server.url)
    try:
        entries = cast(Entries, await redis.xrange(Keys().room(room)))
    finally:
        await redis.aclose()
    return [(int(i.split(b"-")[0]), f[b"text"].decode()) for i, f in entries]


def said_in(seen: list[Chat]) -> list[tuple[int, str]]:
    return [(chat.seq, chat.text) for chat in seen]


def run(body: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout):
            await body()

    asyncio.run(main())


def test_two_nodes_show_every_line_once_in_one_order(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Lines said at once on two nodes: every member on either sees all of them, in one order
    (the stream's), each acknowledged with its seq; Redis holds each once."""

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a, node(redis_server, "b", tmp_path) as b:
            alice = await a.join("alice", bytes([1]) * 16)
            bob = await b.join("bob", bytes([2]) * 16)
            carol = await b.join("carol", bytes([3]) * 16)
            for i in range(1, 21):
                await alice.send(encode(Say(i, f"a{i}")))
                await bob.send(encode(Say(i, f"b{i}")))
            (seen, acked), (bobs, _), (carols, _) = [await take(c, 40) for c in (alice, bob, carol)]
            assert seen == bobs == carols
            assert [chat.seq for chat in seen] == list(range(1, 41))
            said = [f"{who}{i}" for who in "ab" for i in range(1, 21)]
            assert sorted(chat.text for chat in seen) == sorted(said)
            seq = {chat.text: chat.seq for chat in seen}
            expected = [Ack(i, seq[f"a{i}"]) for i in range(1, 21)]
            assert await acks(alice, 20, acked) == expected
            assert await stored(redis_server, "#lobby") == said_in(seen)

    run(body)


def test_the_commit_script_stores_a_session_s_line_once(redis_server: RedisServer) -> None:
    """The same ``(session, id)`` committed twice (a resend through another node): one entry;
    the second commit answers 0. An older id is not stored either; a newer one is."""

    async def body() -> None:
        redis = Redis.from_url(redis_server.url)
        keys = Keys()
        script = redis.register_script(COMMIT_SCRIPT)
        session = keys.session(bytes([7]) * 16)

        async def commit(say_id: int, text: str) -> list[int]:
            line: list[str | int] = ["#r", say_id, "1.5", "alice", text, 0]
            layout = [keys.counters, keys.rooms_log, keys.room("#r"), session]
            return list(await script(keys=layout, args=[100, 60_000, 1, *line]))

        try:
            assert await commit(1, "once") == [1]
            assert await commit(1, "once") == [0]
            assert await commit(2, "then") == [2]
            assert await commit(1, "stale") == [0]
            entries = cast(Entries, await redis.xrange(keys.room("#r")))
            assert [(i, f[b"text"]) for i, f in entries] == [(b"1-0", b"once"), (b"2-0", b"then")]
            assert await redis.get(session) == b"2"
            assert await redis.xlen(keys.rooms_log) == 1  # the room was made once
        finally:
            await redis.aclose()

    run(body)


def test_a_client_that_moves_node_resends_only_what_no_node_took(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """alice's line 1 was taken by node a (its ack lost as a dies); on node b her welcome says
    so, her resend of 1 is acknowledged without a second copy, and 2 goes on as seq 2."""
    session = bytes([1]) * 16

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a, node(redis_server, "b", tmp_path) as b:
            alice = await a.join("alice", session)
            await alice.send(encode(Say(1, "once")))
            assert (await take(alice, 1))[0][0].seq == 1
            alice.abort("node a is gone for her")
            moved = await connect(*b.address, config=FAST)
            b.opened.append(moved)
            await moved.send(encode(Hello("alice", session, rooms=(("#lobby", 1),))))
            welcome = await next_message(moved, Welcome)
            assert isinstance(welcome, Welcome) and welcome.acked == 1
            await moved.send(encode(Say(1, "once")))
            assert await next_message(moved, Ack) == Ack(1, None)
            await moved.send(encode(Say(2, "twice")))
            seen, acked = await take(moved, 1)
            assert said_in(seen) == [(2, "twice")]
            assert await acks(moved, 1, acked) == [Ack(2, 2)]
            assert await stored(redis_server, "#lobby") == [(1, "once"), (2, "twice")]

    run(body)
