"""Cluster nodes (``ClusterServer``) on the real transport with a real ``redis-server``: one
order across nodes, each line stored once, resends after a move, Redis restarts and
partitions. Nodes run in the test's event loop; Redis is the ``redis_server`` fixture."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis
from redisserver import RedisServer
from test_chat_server import FAST, next_message

from rudp_chat.aio import ReliableConnection, connect, serve
from rudp_chat.chat import server as server_module
from rudp_chat.chat.cluster import ClusterServer
from rudp_chat.chat.clusterconfig import ClusterOptions
from rudp_chat.chat.history import History
from rudp_chat.chat.presence import encode_roster
from rudp_chat.chat.protocol import (
    Ack,
    Chat,
    Entered,
    Hello,
    Joined,
    LeaveReason,
    Left,
    RefusalCode,
    Refused,
    Say,
    ServerMessage,
    Topic,
    Users,
    Welcome,
    decode_server,
    encode,
)
from rudp_chat.chat.redisschema import COMMIT_SCRIPT, Keys, commit_arguments, entry_of
from rudp_chat.chat.room import RoomLimits
from rudp_chat.chat.sizing import chat_connection_config
from rudp_chat.chat.store import Journal, Proposal
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
    redis: RedisServer | Cuttable, name: str, directory: Path, **options: object
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


async def expect(connection: ReliableConnection, message: ServerMessage) -> None:
    """Skip to ``message`` (the test's timeout bounds the wait)."""
    while decode_server(await connection.recv()) != message:
        pass


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


class Cuttable:
    """A TCP proxy to Redis whose link can be cut (a partition) and restored."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._links |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        """Every link is dropped and new ones are refused, until :meth:`restore`."""
        self.open = False
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def no_message_within(connection: ReliableConnection, seconds: float) -> list[object]:
    """What ``connection`` is sent within ``seconds`` (a test that something is withheld)."""
    got: list[object] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                got.append(decode_server(await connection.recv()))
    except TimeoutError:
        return got


def test_a_node_cut_off_from_redis_acknowledges_and_shows_nothing_until_it_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Node a loses Redis (b does not): alice's lines stay unacknowledged and she is shown
    none of bob's meanwhile (no order of her node's own making); restored, everything goes
    through, once, and both see the same order."""

    async def body() -> None:
        link = Cuttable(redis_server.port)
        await link.start()
        try:
            async with node(link, "a", tmp_path) as a, node(redis_server, "b", tmp_path) as b:
                alice = await a.join("alice", bytes([1]) * 16)
                bob = await b.join("bob", bytes([2]) * 16)
                link.cut()
                for i in range(1, 4):
                    await alice.send(encode(Say(i, f"a{i}")))
                    await bob.send(encode(Say(i, f"b{i}")))
                bobs, _ = await take(bob, 3)
                assert said_in(bobs) == [(1, "b1"), (2, "b2"), (3, "b3")]
                withheld = await no_message_within(alice, 1.0)
                assert not [m for m in withheld if isinstance(m, Chat | Ack)], withheld
                link.restore()
                alices, alice_acks = await take(alice, 6)
                more, _ = await take(bob, 3)
                assert alices == bobs + more
                assert [chat.seq for chat in alices] == list(range(1, 7))
                acked = await acks(alice, 3, alice_acks)
                assert [(ack.id, ack.seq) for ack in acked] == [(i, 3 + i) for i in range(1, 4)]
                assert await stored(redis_server, "#lobby") == said_in(alices)
        finally:
            link.close()

    run(body)


def test_redis_killed_and_restarted_loses_nothing_acknowledged(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """``kill -9`` of redis-server (AOF always) mid-chat: lines said while it is down stay
    pending (no ack); once it is back both nodes resume; every acknowledged line is in the
    stream, every line is stored once and shown to both in one order."""

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a, node(redis_server, "b", tmp_path) as b:
            alice = await a.join("alice", bytes([1]) * 16)
            bob = await b.join("bob", bytes([2]) * 16)
            await alice.send(encode(Say(1, "before")))
            first, alice_acks = await take(alice, 1)
            assert first == (await take(bob, 1))[0]
            await asyncio.to_thread(redis_server.kill)
            await alice.send(encode(Say(2, "during")))
            withheld = await no_message_within(alice, 1.0)
            assert not [m for m in withheld if isinstance(m, Chat) or m == Ack(2, 2)], withheld
            alice_acks += [m for m in withheld if isinstance(m, Ack)]
            await asyncio.to_thread(redis_server.start)
            await bob.send(encode(Say(1, "after")))
            alices, more = await take(alice, 2)
            bobs, _ = await take(bob, 2)
            assert alices == bobs
            assert sorted(chat.text for chat in alices) == ["after", "during"]
            assert [chat.seq for chat in alices] == [2, 3]
            during = next(chat.seq for chat in alices if chat.text == "during")
            assert await acks(alice, 2, alice_acks + more) == [Ack(1, 1), Ack(2, during)]
            alices = first + alices
            assert await stored(redis_server, "#lobby") == said_in(alices)

    run(body)


def test_members_and_names_are_cluster_wide(redis_server: RedisServer, tmp_path: Path) -> None:
    """alice (node a) is told bob joined on b and lists him in /who; his name is refused on
    a while he holds it; when he leaves, a tells alice, and the name is free on a."""

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a, node(redis_server, "b", tmp_path) as b:
            alice = await a.join("alice", bytes([1]) * 16)
            bob = await b.join("bob", bytes([2]) * 16)
            await expect(alice, Joined("bob", "#lobby"))
            await alice.send(encode(Say(1, "/who")))
            assert await next_message(alice, Users) == Users(("alice", "bob"), "#lobby")
            other = await connect(*a.address, config=FAST)
            a.opened.append(other)
            await other.send(encode(Hello("BOB", bytes([3]) * 16)))
            refused = await next_message(other, Refused)
            assert isinstance(refused, Refused) and refused.code is RefusalCode.NAME_TAKEN
            assert "on node b" in refused.reason
            await bob.close()
            await expect(alice, Left("bob", LeaveReason.LEFT, "#lobby"))
            carol = await a.join("bob", bytes([3]) * 16)
            assert isinstance(await next_message(carol, Entered), Entered)

    run(body)


def test_a_lone_server_s_history_cannot_join_a_cluster(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A history with lines the cluster never numbered would see them numbered again: the node
    refuses to start (exit code 1) rather than archive two different lines 1."""
    lone = History(tmp_path / "a.sqlite3", 0.0)
    lone.write(Journal((Chat(1, 0.0, "alice", "alone", room="#lobby"),), ()), 0.0)
    lone.close()

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a:
            assert await a.serving == 1

    run(body)


def test_a_topic_is_one_for_the_whole_cluster(redis_server: RedisServer, tmp_path: Path) -> None:
    """Topics set at once on two nodes reach both in one order (the stream's), so both end
    with the same one; a later member on either is shown it."""

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a, node(redis_server, "b", tmp_path) as b:
            alice = await a.join("alice", bytes([1]) * 16)
            bob = await b.join("bob", bytes([2]) * 16)
            await alice.send(encode(Say(1, "/topic from a")))
            await bob.send(encode(Say(1, "/topic from b")))
            await alice.send(encode(Say(2, "a line between")))
            seen = []
            for connection in (alice, bob):
                got: list[ServerMessage] = []
                while len(got) < 3:
                    message = decode_server(await connection.recv())
                    if isinstance(message, Topic | Chat):
                        got.append(message)
                seen.append(got)
            assert seen[0] == seen[1]
            last = [m for m in seen[0] if isinstance(m, Topic)][-1]
            carol = await b.join("carol", bytes([3]) * 16)
            entered = await next_message(carol, Entered)
            assert isinstance(entered, Entered) and entered.topic == last.topic

    run(body)


def test_the_worked_example_of_protocol_md(redis_server: RedisServer) -> None:
    """PROTOCOL.md §12, Cluster: the script's KEYS and ARGV, its answers, the stream entry and
    the chat bytes shown are what the reference makes of alice's line."""
    spec = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    section = spec[spec.index("### Cluster") : spec.index("## 13.")]
    session = bytes(range(16))
    line = Chat(0, 1700000000.25, "alice", "hi", room="#lobby")
    journal = Journal((), ((session, 7),), proposed=(Proposal(session, 7, line),))
    keys, args = commit_arguments(Keys(), journal, 10_000)
    shown = section[section.index("KEYS  ") : section.index("```", section.index("KEYS  "))]
    assert shown.split() == ["KEYS", *keys, "ARGV", *map(str, args)]
    chat = dataclasses.replace(line, seq=1)
    hex_start = section.index("\n88 a4") + 1
    hex_text = section[hex_start : section.index("```", hex_start)]
    assert bytes.fromhex(hex_text) == encode(chat)
    assert f"`chat` ({len(encode(chat))} bytes" in section
    assert encode_roster([(session, "alice", ("#lobby", "#rust"))]).decode() in section

    async def body() -> None:
        redis = Redis.from_url(redis_server.url)
        try:
            script = redis.register_script(COMMIT_SCRIPT)
            assert await script(keys=keys, args=args) == [1]
            assert await script(keys=keys, args=args) == [0]
            entries = cast(Entries, await redis.xrange(Keys().room("#lobby")))
            [(entry_id, fields)] = entries
            shown_row = next(row for row in section.splitlines() if row.startswith("1-0 "))
            fields_shown = [text.decode() for pair in fields.items() for text in pair]
            assert shown_row.split() == [entry_id.decode(), *fields_shown]
            assert entry_of("#lobby", entry_id, fields) == chat
        finally:
            await redis.aclose()

    run(body)


def test_a_node_stops_when_redis_comes_back_without_its_lines(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis restarted without its files (lines this node stored are gone from it): the node
    stops (exit code 1) rather than let Redis number new lines like stored ones."""

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a:
            alice = await a.join("alice", bytes([1]) * 16)
            await alice.send(encode(Say(1, "kept here, lost there")))
            await take(alice, 1)
            await asyncio.to_thread(redis_server.kill)
            shutil.rmtree(redis_server.directory)
            redis_server.directory.mkdir()
            await asyncio.to_thread(redis_server.start)
            assert await a.serving == 1

    run(body)


def test_inputs_held_back_while_redis_is_away_all_go_through_after(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the input queue's bound at 5, 40 lines said while the node is cut off from Redis
    hold its reader back (flow control) and then all go through, once, in order."""
    monkeypatch.setattr(server_module, "MAX_QUEUED_INPUTS", 5)

    async def body() -> None:
        link = Cuttable(redis_server.port)
        await link.start()
        try:
            async with node(link, "a", tmp_path) as a:
                alice = await a.join("alice", bytes([1]) * 16)
                link.cut()
                for i in range(1, 41):
                    await alice.send(encode(Say(i, f"line {i}")))
                await asyncio.sleep(0.5)
                link.restore()
                seen, _ = await take(alice, 40)
                assert [chat.text for chat in seen] == [f"line {i}" for i in range(1, 41)]
        finally:
            link.close()

    run(body)


def test_with_wait_replicas_a_line_is_acknowledged_once_a_replica_has_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """--wait-replicas 1: acknowledged while the replica runs; with it stopped, a line is
    stored in the primary but neither acknowledged nor shown until the replica is back."""

    async def body() -> None:
        replica = RedisServer(
            redis_server.executable, tmp_path / "replica", replica_of=redis_server.port
        )
        replica.directory.mkdir()
        await asyncio.to_thread(replica.start)
        try:
            async with node(redis_server, "a", tmp_path, replicas=1) as a:
                alice = await a.join("alice", bytes([1]) * 16)
                await alice.send(encode(Say(1, "replicated")))
                _, acked = await take(alice, 1)
                assert await acks(alice, 1, acked) == [Ack(1, 1)]
                await asyncio.to_thread(replica.stop)  # (the nodes share this event loop)
                await alice.send(encode(Say(2, "waiting")))
                withheld = await no_message_within(alice, 1.5)
                assert not [m for m in withheld if isinstance(m, Ack | Chat)], withheld
                await asyncio.to_thread(replica.start)
                seen, acked = await take(alice, 1)
                assert said_in(seen) == [(2, "waiting")]
                assert await acks(alice, 1, acked) == [Ack(2, 2)]
        finally:
            replica.stop()

    run(body)


def test_a_user_who_moves_node_is_shown_timed_out_then_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """bob's client moves from node b to node a (same session, as a failover does): alice, on
    a, sees him leave (timed out) and then join, never two bobs."""
    session = bytes([2]) * 16

    async def body() -> None:
        async with node(redis_server, "a", tmp_path) as a, node(redis_server, "b", tmp_path) as b:
            alice = await a.join("alice", bytes([1]) * 16)
            await b.join("bob", session)
            await expect(alice, Joined("bob", "#lobby"))
            await a.join("bob", session)
            await expect(alice, Left("bob", LeaveReason.TIMED_OUT, "#lobby"))
            await expect(alice, Joined("bob", "#lobby"))
            await alice.send(encode(Say(1, "/who")))
            assert await next_message(alice, Users) == Users(("alice", "bob"), "#lobby")

    run(body)
