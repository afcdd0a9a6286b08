"""The chat server's asyncio shell: connections in, the room in the middle, SQLite behind it.

One task per connection reads and decodes; every input goes through one queue to one
dispatcher, which feeds the room in arrival order, commits the room's journal (in a worker
thread, so a slow fsync stalls no connection), and only then hands the outputs to each
connection's writer queue. Inputs that arrive while a commit runs are processed together and
committed in one transaction. A client too slow to take its messages is dropped, so it cannot
make the server hold an unbounded queue or hold up anyone else. Typing notices bypass all of
this: a second small task per connection relays its datagrams (:mod:`.typing`), unstored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rudp_chat.aio import ConnectionLostError, ReliableConnection, Server, TransportError, serve
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.errors import LocalProtocolError
from rudp_chat.core.events import TerminationReason
from rudp_chat.core.noise import StaticKey, fingerprint
from rudp_chat.core.stats import ConnectionStats
from rudp_chat.identity import KnownServers, default_key_file, load_or_create_server_key
from rudp_chat.stopsignals import on_stop_signals

from . import confusables
from .clusterconfig import ClusterOptions
from .failover import ServerAddress
from .history import DEFAULT_HISTORY_FILE, MEMORY_LINES, History
from .lanes import HISTORY_LANE, LIVE_LANE, LaneRouter
from .owners import Owners
from .protocol import (
    Ack,
    Bye,
    Chat,
    ChatProtocolError,
    Hello,
    LeaveReason,
    RefusalCode,
    Refused,
    Say,
    decode_client,
    encode,
)
from .room import Output, Room, RoomLimits
from .sizing import chat_connection_config
from .store import Journal, StorageError
from .typing import TypingRelay

__all__ = ["ChatServer", "ServerOptions", "Traffic", "open_room", "run_server"]

log = logging.getLogger(__name__)

CONNECTION_SLACK: Final = 64  # transport slots beyond max users: handshakes, closes draining
HELLO_TIMEOUT_S: Final = 10.0  # a connection that says nothing is dropped: bounds idle strangers
SHUTDOWN_DRAIN_S: Final = 5.0  # how long shutdown waits for goodbyes and queued messages
MAX_QUEUED_MESSAGES: Final = 10_000  # for one client; past it the client is dropped as too slow
# Inputs waiting for the dispatcher (a commit is slow, a cluster's Redis away); past it the
# connections' readers wait, so clients are held back by the transport's flow control.
MAX_QUEUED_INPUTS: Final = 100_000

_Step = Callable[[float], list[Output]]
"""One input for the room, applied at the given time."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What ``rudp-chat server`` was asked for."""

    host: str = "0.0.0.0"
    port: int = 12345
    history: Path | None = Path(DEFAULT_HISTORY_FILE)
    """The SQLite file; None keeps history in memory only."""
    limits: RoomLimits = field(default_factory=RoomLimits)
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)
    key_file: Path | None = field(default_factory=default_key_file)
    """The server's private key, made on first start; None makes a new one per run."""
    max_per_address: int = ListenerConfig().max_connections_per_address
    """Connections from one IP address: users behind one NAT share it."""
    allow_guests: bool = True
    """Whether clients without a key may connect (False: ``--no-guests``)."""
    cluster: ClusterOptions | None = None
    """The cluster this server is a node of (``--redis``); None: a server on its own."""
    metrics: ServerAddress | None = None
    """Where to serve Prometheus metrics (``--metrics``); None serves none."""


def server_identity(options: ServerOptions) -> StaticKey | None:
    """Load or make the key clients pin, and say which (None when insecure).

    Raises ``KeyFileError`` for a key file others can read or that holds no key.
    """
    if options.connection.insecure:
        print(
            "WARNING: encryption is off (--insecure): anyone on the path can read, alter "
            "and inject chat messages",
            flush=True,
        )
        return None
    if options.key_file is None:
        key, where = StaticKey.generate(), "new for this run, not saved"
    else:
        key, created = load_or_create_server_key(options.key_file)
        where = f"{'created in' if created else 'from'} {options.key_file}"
    print(f"Server key: {fingerprint(key.public)} ({where})", flush=True)
    return key


def open_room(history: History, limits: RoomLimits, *, lost_within: float | None = None) -> Room:
    """A room that continues ``history``: its rooms' numbering, lines, topics and sessions.
    ``lost_within``: see :class:`Room`."""
    return Room(limits, history, lost_within=lost_within, owners=Owners(history.owner_of))


async def run_server(options: ServerOptions) -> int:
    """Serve until SIGINT or SIGTERM (Ctrl-C or Ctrl-Break on Windows); prints where history lives and where it listens.

    Returns the exit code. Raises ``OSError`` if the address cannot be bound,
    ``sqlite3.Error`` if the history cannot be opened, ``KeyFileError`` for a bad key file and
    :class:`SkeletonsUnavailableError` without PyICU (the ``server`` extra).
    """
    confusables.require()
    path = None if options.history is None else options.history.resolve()
    history = History(path, time.time())
    try:
        static_key = server_identity(options)
        listener = ListenerConfig(
            connection=chat_connection_config(options.connection, options.limits.max_users),
            max_connections=options.limits.max_users + CONNECTION_SLACK,
            max_connections_per_address=options.max_per_address,
            allow_guests=options.allow_guests,
        )
        transport = await serve(
            options.host,
            options.port,
            config=listener,
            secret=history.listener_secret(),
            static_key=static_key,
        )
        shown = options.limits.history_size
        if path is None:
            print(
                f"History: not stored (--no-history); the last {MEMORY_LINES:,} lines of all "
                f"rooms are kept in memory ({shown} shown on entering a room), until the server "
                "stops",
                flush=True,
            )
        else:
            print(f"History: {path} (SQLite, WAL, synchronous=FULL)", flush=True)
        host, port = transport.address
        via = transport.stats().socket_path
        stop = asyncio.Event()
        with on_stop_signals(asyncio.get_running_loop(), stop.set):
            # Only now: whoever waits for this line may send SIGTERM at once and get a clean stop.
            print(f"Server is listening on {host}:{port} (UDP socket via {via})", flush=True)
            lost_within = options.connection.idle_timeout
            cluster = options.cluster
            redis = None
            if cluster is None:
                room = open_room(history, options.limits, lost_within=lost_within)
                server = ChatServer(transport, room, history)
            else:
                from .cluster import ClusterServer  # needs redis (the cluster extra)

                print(f"Cluster: {cluster.describe()}", flush=True)
                server = node = ClusterServer.open(
                    transport, history, options.limits, cluster, lost_within=lost_within
                )
                redis = node.stats
            if options.metrics is None:
                return await server.run(stop)
            from .metrics import serve_metrics  # needs prometheus_client (the metrics extra)

            with serve_metrics(options.metrics, server, redis) as (host, port):
                print(f"Metrics: http://{KnownServers.name(host, port)}/metrics", flush=True)
                return await server.run(stop)
    finally:
        history.close()


@dataclass(slots=True)
class Traffic:
    """What a server counted, for metrics: plain integers, so counting costs next to nothing."""

    messages_received: int = 0
    """Chat messages from clients (hello included)."""
    messages_sent: int = 0
    """Chat messages queued for clients."""
    deliveries: int = 0
    """Live chat lines queued for a member (not history shown on entering a room)."""
    retransmitted_fragments: int = 0
    """Of connections that ended (the live ones have theirs in their statistics)."""
    packets_lost: int = 0
    """Likewise."""

    def ended(self, stats: ConnectionStats) -> None:
        """Keep an ended connection's counts, so totals never go back."""
        self.retransmitted_fragments += stats.retransmitted_fragments
        self.packets_lost += stats.packets_lost


@dataclass(slots=True)
class _Client:
    connection: ReliableConnection
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    """Encoded messages to send on the live lane; None closes the connection after them (and
    after the history queued before it)."""
    pages: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    """Encoded history blocks, sent on their own lane by their own writer (:mod:`.lanes`)."""
    router: LaneRouter = field(default_factory=LaneRouter)
    closing: bool = False
    session: bytes = b""
    """The client session its hello named (empty before it)."""


class ChatServer:
    """Serves a :class:`Room` on a transport :class:`Server`, storing in a :class:`History`."""

    def __init__(self, transport: Server, room: Room, history: History) -> None:
        self.transport = transport
        self.room = room
        self.history = history
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._inputs: asyncio.Queue[_Step] = asyncio.Queue()
        self._inputs_taken = asyncio.Event()
        """Set (and replaced) each time the dispatcher takes the queued inputs."""
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._storage = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-history")
        self._storage_failed = asyncio.Event()
        self._typing = TypingRelay(room)
        self.traffic = Traffic()

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until ``stop`` is set (or storage fails), then shut down gracefully: every
        client is told, queued messages drain (bounded), connections close. Returns the exit
        code: 0, or 1 if storage failed. The caller closes the history afterwards."""
        accepting = asyncio.create_task(self._accept())
        dispatching = asyncio.create_task(self._dispatch())
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self._storage_failed.wait())
        await asyncio.wait((stopped, failed, dispatching), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
        accepting.cancel()
        healthy = not self._storage_failed.is_set() and not dispatching.done()
        log.info("shutting down" if healthy else "shutting down after an internal failure")
        drained = asyncio.get_running_loop().create_future()
        if healthy:  # goodbyes go through the dispatcher, after every input already received
            self._input(lambda now: [*self.room.shutdown(now), *_resolve(drained)])
        else:  # nothing more is acknowledged, but everyone is still told
            self._send([*self.room.shutdown(time.time()), *_resolve(drained)])
        self._stopping = True
        clients = [task for task in self._tasks if not task.done()]
        try:
            async with asyncio.timeout(SHUTDOWN_DRAIN_S):
                await drained
                if clients:
                    await asyncio.wait(clients)
        except TimeoutError:
            log.warning("clients did not finish within %.0f s", SHUTDOWN_DRAIN_S)
        await self.transport.close(timeout=SHUTDOWN_DRAIN_S)
        for task in (accepting, dispatching, *self._tasks):
            task.cancel()
        await asyncio.gather(accepting, dispatching, *self._tasks, return_exceptions=True)
        self._storage.shutdown()
        return 0 if healthy else 1

    def connections(self) -> list[ReliableConnection]:
        """The connections being served (from before their hello until their end)."""
        return [client.connection for client in self._clients.values()]

    # --- inputs --------------------------------------------------------------------------------

    def _input(self, step: _Step) -> None:
        if not self._stopping:
            self._inputs.put_nowait(step)

    async def _accept(self) -> None:
        async for connection in self.transport:
            conn = next(self._ids)
            task = asyncio.create_task(self._serve(conn, connection))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: int, connection: ReliableConnection) -> None:
        """Run one connection: a writer task, and reading here until the connection ends."""
        client = self._clients[conn] = _Client(connection)
        writer = asyncio.create_task(self._write(client))
        typing = asyncio.create_task(self._relay_typing(conn, connection))
        try:
            reason = await self._read(conn, connection)
            if reason is not None:
                self._input(lambda now: self._leave(conn, reason, now))
        except Exception:  # a bug serving one connection must not take everyone down
            log.exception("internal error on connection %d", conn)
            connection.abort("internal error")
            self._input(lambda now: self._leave(conn, LeaveReason.LOST, now))
        finally:
            if not client.closing:
                client.closing = True
                client.queue.put_nowait(None)
            typing.cancel()
            self._typing.forget(conn)
            await writer
            await asyncio.gather(typing, return_exceptions=True)
            del self._clients[conn]
            self.traffic.ended(connection.stats())  # in the same step: totals never go back

    async def _read(self, conn: int, connection: ReliableConnection) -> LeaveReason | None:
        """Feed what ``conn`` sends to the room; returns why it left (None: it never joined)."""
        host, port = connection.peer_address
        peer = f"{host}:{port}"
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                first = await connection.recv()
            self.traffic.messages_received += 1
            hello = decode_client(first)
            if not isinstance(hello, Hello):
                raise ChatProtocolError("the first message must be hello")
        except ChatProtocolError as exc:
            log.info("refused %s: %s", peer, exc)
            self._send([(conn, Refused(RefusalCode.BAD_HELLO, str(exc)))])
            return None
        except (TimeoutError, EOFError, ConnectionLostError) as exc:
            log.info("dropped %s before hello: %s", peer, _silence(exc))
            connection.abort("no hello")
            return None
        refusal = await self._admit(hello)
        if refusal is not None:
            self._send([(conn, refusal)])
            return None
        self._clients[conn].session = hello.session
        key = connection.peer_static_key
        self._input(lambda now: self._join(conn, hello, now, host, key))  # no port: changes
        try:
            async for data in connection:
                self.traffic.messages_received += 1
                self._input(_step(self.room, conn, data))
                if self._inputs.qsize() >= MAX_QUEUED_INPUTS:
                    await self._inputs_taken.wait()
        except ConnectionLostError as exc:
            if exc.reason is TerminationReason.IDLE_TIMEOUT:
                return LeaveReason.TIMED_OUT
            log.info("connection %d (%s) lost: %s", conn, peer, exc)
            return LeaveReason.LOST
        return LeaveReason.LEFT

    async def _relay_typing(self, conn: int, connection: ReliableConnection) -> None:
        """Relay ``conn``'s typing notices as they come (datagrams: never stored, no order
        with the room's inputs, dropped when the relay's rate limit says so)."""
        with contextlib.suppress(TransportError, EOFError):
            while True:
                datagram = await connection.recv_datagram()
                outputs = self._typing.relay(conn, datagram.data, time.monotonic())
                data = encode(outputs[0][1]) if outputs else b""
                for member, _ in outputs:
                    client = self._clients.get(member)
                    if client is not None and not client.closing:
                        with contextlib.suppress(LocalProtocolError):  # closing meanwhile
                            client.connection.send_datagram(data)

    async def _write(self, client: _Client) -> None:
        """Send ``client``'s queue in order; after a None, and the history queued before it,
        close the connection gracefully. The history goes meanwhile, from its own queue."""
        connection = client.connection
        pages = asyncio.create_task(_write_pages(client))
        try:
            while (data := await client.queue.get()) is not None:
                await connection.send(data, LIVE_LANE)
            drained = asyncio.create_task(client.pages.join())
            await asyncio.wait((drained, pages), return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
            await connection.close()
        except (TransportError, LocalProtocolError):
            pass  # the connection ended; its reader reports why
        finally:
            pages.cancel()

    # --- the dispatcher ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Apply inputs in order; store what must be stored; then send. Returns only when
        storage failed; raises only on a bug outside the room."""
        while True:
            steps = [await self._inputs.get()]
            while not self._inputs.empty():
                steps.append(self._inputs.get_nowait())
            taken, self._inputs_taken = self._inputs_taken, asyncio.Event()
            taken.set()
            now = time.time()
            outputs: list[Output] = []
            for step in steps:
                try:
                    outputs += step(now)
                except Exception:  # a bug in handling one input must not take everyone down
                    log.exception("internal error while handling an input")
            journal = self.room.take_journal()
            if journal is not None:
                try:
                    numbered = await self._commit(journal, now)
                except StorageError:
                    log.exception("cannot store messages: shutting down without acknowledging")
                    self._storage_failed.set()
                    return
                if numbered:
                    outputs = [self._numbered(output, numbered) for output in outputs]
            self._send(outputs)

    def _join(
        self, conn: int, hello: Hello, now: float, host: str, key: bytes | None
    ) -> list[Output]:
        """The room input for ``conn``'s ``hello``."""
        return self.room.join(conn, hello, now, host, key)

    def _leave(self, conn: int, reason: LeaveReason, now: float) -> list[Output]:
        """The room input for ``conn``'s end."""
        return self.room.leave(conn, reason, now)

    async def _admit(self, hello: Hello) -> Refused | None:
        """A refusal for ``hello`` before the room sees it (a cluster's name claims), or
        None."""
        return None

    async def _commit(self, journal: Journal, now: float) -> Mapping[tuple[bytes, int], int | None]:
        """Store ``journal``; return the ``seq`` each proposed line got, by ``(session, id)``
        (None: it was stored before). Raises :class:`StorageError` if it cannot be stored."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._storage, self.history.write, journal, now)
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc
        return {}

    def _numbered(
        self, output: Output, numbered: Mapping[tuple[bytes, int], int | None]
    ) -> Output:
        """``output``, or the ack of a proposed line with the ``seq`` the log gave it."""
        conn, message = output
        client = self._clients.get(conn)
        if not isinstance(message, Ack) or client is None:
            return output
        key = (client.session, message.id)
        return (conn, Ack(message.id, numbered[key])) if key in numbered else output

    def _send(self, outputs: list[Output]) -> None:
        """Queue each output for its connection, encoding each message once."""
        encoded: dict[int, bytes] = {}
        traffic = self.traffic
        for conn, message in outputs:
            client = self._clients.get(conn)
            if client is None or client.closing:
                continue
            data = encoded.get(id(message))
            if data is None:
                data = encoded[id(message)] = encode(message)
            if client.router.lane(message) == HISTORY_LANE:
                client.pages.put_nowait(data)
            elif not _sent_now(client, data):
                client.queue.put_nowait(data)
            traffic.messages_sent += 1
            if isinstance(message, Chat) and not message.history:
                traffic.deliveries += 1
            if isinstance(message, Bye | Refused):
                client.closing = True
                client.queue.put_nowait(None)
            elif client.queue.qsize() + client.pages.qsize() > MAX_QUEUED_MESSAGES:
                log.warning("connection %d is too slow to keep up: dropping it", conn)
                client.closing = True
                client.connection.abort("too slow")


def _sent_now(client: _Client, data: bytes) -> bool:
    """Queue ``data`` in ``client``'s connection at once if nothing of the live lane waits
    before it (else its writer sends it, in order): a line fanned out to a room then costs no
    task switch per member. An ended connection's error is left for the writer to meet."""
    if not client.queue.empty():
        return False
    try:
        return client.connection.send_nowait(data, LIVE_LANE)
    except (TransportError, LocalProtocolError):
        return False


async def _write_pages(client: _Client) -> None:
    """Send ``client``'s history blocks in order on their lane, until cancelled or the
    connection ends (then the live writer's close no longer waits for them)."""
    while True:
        data = await client.pages.get()
        try:
            await client.connection.send(data, HISTORY_LANE)
        except (TransportError, LocalProtocolError):
            return
        finally:
            client.pages.task_done()


def _step(room: Room, conn: int, data: bytes) -> _Step:
    """The room input for one frame from ``conn``."""
    try:
        message = decode_client(data)
    except ChatProtocolError as exc:
        detail = str(exc)
        return lambda now: room.malformed(conn, detail, now)
    if isinstance(message, Say):
        say = message
        return lambda now: room.receive(conn, say, now)
    late = "hello was already said" if isinstance(message, Hello) else "typing goes as a datagram"
    return lambda now: room.malformed(conn, late, now)


def _silence(error: Exception) -> str:
    """Why a connection ended before its hello, in words (an ``EOFError`` carries none)."""
    if isinstance(error, TimeoutError):
        return f"nothing said within {HELLO_TIMEOUT_S:.0f} s"
    if isinstance(error, EOFError):
        return "it closed the connection"
    return str(error)


def _resolve(future: asyncio.Future[None]) -> list[Output]:
    """A no-output step that marks its place in the input order."""
    future.set_result(None)
    return []
