"""A chat server as one node of a cluster: the same shell, with the lines' order kept in Redis.

Every node holds its own UDP connections and its own :class:`Room` (its local users); Redis
holds what they share. Each room's lines are one Redis Stream, ``rudp-chat:room:<room>``, whose
entry ids are ``<seq>-0``: the stream's order is the room's one order, and the id is the
``seq`` clients see, unchanged from a lone server. A line said on a node is a
:class:`Proposal`; one Lua script (:data:`.redisschema.COMMIT_SCRIPT`) numbers and stores a dispatcher
batch's proposals atomically, each only if its sender's ``(session, id)`` is newer than the
session's highest stored id, so a line resent to another node after a failover is stored once.
The sender's ``ack`` waits for that script (and ``WAIT``, when asked for replicas).

No node shows a line it said until it reads it back: every node follows every room's stream
with a blocking ``XREAD`` on a connection of its own (:meth:`ClusterServer._follow`), archives
what it reads in its SQLite history (scrollback, search and entering a room read that, without
a round trip) and sends it to its members, so all of them see one order. It resumes from the
last ``seq`` it archived, so a Redis restart or a blip repeats and loses nothing. While Redis is
unreachable nothing is acknowledged (the senders' lines stay pending) and nothing new is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from rudp_chat.aio import Server

from .clusterconfig import ClusterOptions
from .history import History
from .limits import RoomLimits
from .owners import Owners, name_skeletons
from .presence import Listed, Notice, Presence, decode_roster, encode_roster
from .protocol import (
    Bye,
    Chat,
    Entered,
    Hello,
    Joined,
    LeaveReason,
    Left,
    RefusalCode,
    Refused,
    Renamed,
    ServerMessage,
    Topic,
    Users,
    Welcome,
)
from .redisschema import (
    CLAIM_SCRIPT,
    COMMIT_SCRIPT,
    RELEASE_SCRIPT,
    ROOMS_LOG_MAXLEN,
    Entries,
    Keys,
    Reply,
    commit_arguments,
    entry_of,
)
from .room import Output, Room
from .server import ChatServer
from .store import Journal, StorageError
from .text import InvalidNameError, normalise_name

__all__ = ["ClusterServer", "ClusterStats", "SharedSessions"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

COMMAND_TIMEOUT_S: Final = 5.0  # a command Redis has not answered by then failed: retry it
BLOCK_MS: Final = 2000  # an idle follower's XREAD returns this often (and finds new rooms)
READ_TIMEOUT_S: Final = BLOCK_MS / 1000 + 5.0  # longer than BLOCK, or a quiet read times out
READ_COUNT: Final = 500  # entries per stream per read: bounds one delivery step
RETRY_MIN_S: Final = 0.05
RETRY_MAX_S: Final = 1.0  # retries while Redis is away: back within a second of its return
ADMIT_WAIT_S: Final = 5.0  # a hello waits this long for Redis before it is refused
MAX_RECALLED: Final = 10_000  # sessions whose Redis-stored ids a node keeps (joins in flight)
_PRESENCE_CHANGES: Final = frozenset({Joined, Left, Renamed, Bye})
"""Messages that mean this node's users changed (its roster is published at once)."""
_MEMBER_LISTS: Final = frozenset({Welcome, Entered, Users})
"""Messages that list members: the other nodes' are added."""
_NOTHING_KEPT: Final = Journal(messages=(), acked=())
STOP_RECHECK_S: Final = 0.5  # a stopping node cancels again a task that went on after this


async def _stop(*tasks: asyncio.Task[None]) -> None:
    """Cancel ``tasks`` and wait for them to end. A cancel that arrives as a timeout expires can
    be taken for the timeout (``asyncio.timeout`` in Python 3.11; redis-py reads under one), and
    the task's retry loop goes on; so the cancel is repeated until every task has ended, or a
    stopping node would hang (seen, in the heartbeat and in a rolling-restart test)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_RECHECK_S)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("a cluster task failed while stopping", exc_info=task.exception())
"""A journal with nothing for the local history."""
_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
"""What a Redis that is down, restarting (loading its file) or cut off raises."""


@dataclass(slots=True)
class ClusterStats:
    """What a node knows of its Redis, for metrics (read them; the node writes them)."""

    redis_up: bool = True
    """Whether the last command reached Redis."""
    round_trip_s: float = 0.0
    """Seconds the last commit (script, and ``WAIT``) took."""
    stream_lag_s: float = 0.0
    """Seconds between the newest line's posting and its delivery here (clocks may differ)."""
    commits: int = 0
    lines_published: int = 0
    lines_delivered: int = 0
    pending: int = 0
    """Lines said here waiting for Redis (unacknowledged)."""
    redis_errors: int = 0
    """Commands that failed because Redis was unreachable (each retried)."""


class SharedSessions:
    """The room's store on a node: its history, plus what the cluster took from the sessions
    of its ``hello``s (fetched from Redis before the room sees a ``hello``, so a client that
    moved here resends only what no node took). A node keeps its sessions' ids in Redis
    only (the commit script stores them), not in its history too."""

    def __init__(self, history: History) -> None:
        self._history = history
        self._recalled: OrderedDict[bytes, int] = OrderedDict()
        self.last_seq = history.last_seq
        self.before = history.before
        self.after = history.after
        self.search = history.search
        self.topic = history.topic
        self.access = history.access

    def remember(self, session: bytes, acked: int) -> None:
        """Redis says ``session`` sent up to ``acked`` (the newest :data:`MAX_RECALLED` kept)."""
        self._recalled[session] = acked
        self._recalled.move_to_end(session)
        while len(self._recalled) > MAX_RECALLED:
            self._recalled.popitem(last=False)

    def recall(self, session: bytes) -> int:
        """The highest id of ``session`` stored here or, by its last ``hello``, in Redis."""
        return max(self._history.recall(session), self._recalled.get(session, 0))


class ClusterServer(ChatServer):
    """A :class:`ChatServer` whose room numbers lines through Redis (``Room(shared_log=True)``)."""

    @classmethod
    def open(
        cls,
        transport: Server,
        history: History,
        limits: RoomLimits,
        options: ClusterOptions,
        *,
        lost_within: float | None = None,
    ) -> ClusterServer:
        """A node serving on ``transport``, archiving in ``history``."""
        sessions = SharedSessions(history)
        owners = Owners(history.owner_of)
        room = Room(limits, sessions, lost_within=lost_within, owners=owners, shared_log=True)
        return cls(transport, room, history, options, sessions)

    def __init__(
        self,
        transport: Server,
        room: Room,
        history: History,
        options: ClusterOptions,
        sessions: SharedSessions,
    ) -> None:
        """Use :meth:`open`: ``room`` must read ``sessions``, a view of ``history``."""
        super().__init__(transport, room, history)
        self._sessions = sessions
        self.options = options
        self.keys = Keys()
        self.stats = ClusterStats()
        self._redis = Redis.from_url(
            options.redis_url,
            socket_timeout=COMMAND_TIMEOUT_S + options.replica_timeout,  # WAIT blocks
            socket_connect_timeout=COMMAND_TIMEOUT_S,
        )
        self._commit_script = self._redis.register_script(COMMIT_SCRIPT)
        self._claim_script = self._redis.register_script(CLAIM_SCRIPT)
        self._release_script = self._redis.register_script(RELEASE_SCRIPT)
        self._presence = Presence()
        self._beat_soon = asyncio.Event()
        """Set when this node's users changed, or another node's: beat now."""
        self._published = b""
        """The roster this node last published."""
        self._named: dict[str, str] = {}
        """Name key → holder value this node set at its last beat (to release what left)."""
        self._following = {room: f"{seq}-0" for room, seq in history.last_seqs().items()}
        """Room → the id of the last entry of its stream handed to the room logic (so
        archived, then shown)."""

    async def run(self, stop: asyncio.Event) -> int:
        """Serve as :meth:`ChatServer.run` does, following the cluster's rooms meanwhile.
        Returns 1 at once if the history holds lines this cluster does not (see
        :meth:`_foreign_history`)."""
        foreign = await self._foreign_history()
        if foreign is not None:
            log.error("cannot join the cluster: %s", foreign)
            await self.transport.close(timeout=0.0)
            await self._redis.aclose()
            return 1
        following = asyncio.create_task(self._follow())
        beating = asyncio.create_task(self._beat())
        try:
            return await super().run(stop)
        finally:
            await _stop(following, beating)
            await self._leave_cluster()
            await self._redis.aclose()

    async def _foreign_history(self) -> str | None:
        """Why the local history cannot be this cluster's archive (None: it can): a room in
        it has lines beyond the cluster's (a lone server's file, or another cluster's), which
        the cluster would number again. Not checked (a warning) if Redis does not answer."""
        archived = {room: _seq(last) for room, last in self._following.items()}
        if not archived:
            return None
        try:
            async with asyncio.timeout(ADMIT_WAIT_S):
                known = await self._retrying(
                    lambda: self._redis.hmget(self.keys.counters, list(archived))
                )
        except TimeoutError:
            log.warning("Redis does not answer: the history file is not checked against it")
            return None
        ahead = _ahead(archived, known)
        if ahead is None:
            return None
        room, seq, last = ahead
        return (
            f"the history file has {room} up to line {seq}, the cluster only up to {last}: "
            "give each node a new --history file, or a copy of the file of a node of this "
            "cluster"
        )

    async def _admit(self, hello: Hello) -> Refused | None:
        """Learn what ``hello``'s session sent to any node; refuse it if Redis does not answer
        soon (its client tries another node, or again)."""
        try:
            name = normalise_name(hello.name)
        except InvalidNameError:
            name = None  # the room refuses it
        try:
            async with asyncio.timeout(ADMIT_WAIT_S):
                session = self.keys.session(hello.session)
                acked = await self._retrying(lambda: self._redis.get(session))
                holder = (
                    ""
                    if name is None
                    else await self._retrying(lambda: self._claim(name, hello.session))
                )
        except TimeoutError:
            return Refused(RefusalCode.SERVER_FULL, "this node cannot reach the cluster's Redis")
        if acked is not None:
            self._sessions.remember(hello.session, int(acked))
        if holder:
            node = holder.partition(" ")[0]
            taken = (
                f"the name {name} is taken (on node {node}); if it was yours on a connection "
                f"that died, it frees within {math.ceil(self.options.name_ttl)} s"
            )
            return Refused(RefusalCode.NAME_TAKEN, taken)
        return None

    async def _claim(self, name: str, session: bytes) -> str:
        """Claim ``name`` for ``session`` on this node: "" if it may use it, else its holder."""
        keys = [self.keys.name(skeleton) for skeleton in name_skeletons(name)]
        ttl_ms = int(self.options.name_ttl * 1000)
        args: list[str | int] = [self._holder(session), self.options.node, session.hex(), ttl_ms]
        answer = await self._claim_script(keys=keys, args=args)
        return bytes(answer).decode()

    def _holder(self, session: bytes) -> str:
        return f"{self.options.node} {session.hex()}"

    def _join(
        self, conn: int, hello: Hello, now: float, host: str, key: bytes | None
    ) -> list[Output]:
        """A user another node listed and who is here now was away: that first, then its
        join."""
        notices = self._presence.arrived(hello.session)
        return [*self._announce(notices), *super()._join(conn, hello, now, host, key)]

    def _leave(self, conn: int, reason: LeaveReason, now: float) -> list[Output]:
        """Its end, told to the other nodes at once (they announce it)."""
        self._beat_soon.set()
        return super()._leave(conn, reason, now)

    def _announce(self, notices: list[Notice]) -> list[Output]:
        return [output for room, message in notices for output in self.room.announce(room, message)]

    def _send(self, outputs: list[Output]) -> None:
        """Send, with the other nodes' members in every member list (``welcome``,
        ``entered``, ``/who``); beat at once if users came, went or were renamed."""
        kinds = {type(message) for _, message in outputs}  # one pass: a line's fan-out is long
        if not kinds.isdisjoint(_PRESENCE_CHANGES):
            self._beat_soon.set()
        if not kinds.isdisjoint(_MEMBER_LISTS):
            outputs = [(conn, self._with_remote(message)) for conn, message in outputs]
        super()._send(outputs)

    def _with_remote(self, message: ServerMessage) -> ServerMessage:
        if isinstance(message, Welcome):
            remote = self._presence.names_in(None)
            return dataclasses.replace(message, users=_merged(message.users, remote))
        if isinstance(message, Entered):
            remote = self._presence.names_in(message.room)
            return dataclasses.replace(message, users=_merged(message.users, remote))
        if isinstance(message, Users):
            remote = self._presence.names_in(message.room)
            return dataclasses.replace(message, names=_merged(message.names, remote))
        return message

    # --- presence: this node's users out, the others' in, every heartbeat ---------------------

    async def _beat(self) -> None:
        """Every :attr:`ClusterOptions.heartbeat`: publish this node's roster and refresh its
        users' names (both expire a TTL after the last beat), then hear the other nodes'."""
        while True:
            try:
                async with asyncio.timeout(self.options.heartbeat):
                    await self._beat_once()
            except (*_UNREACHABLE, TimeoutError) as exc:
                self.stats.redis_errors += 1
                log.warning("heartbeat failed (Redis unreachable: %s)", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.heartbeat):
                    await self._beat_soon.wait()
            self._beat_soon.clear()

    async def _beat_once(self) -> None:
        roster = self.room.roster()  # (read between the dispatcher's steps: one thread)
        ttl_ms = int(self.options.name_ttl * 1000)
        named = {
            self.keys.name(skeleton): self._holder(session)
            for session, name, _ in roster
            for skeleton in name_skeletons(name)
        }
        published = encode_roster(roster)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.roster(self.options.node), published, px=ttl_ms)
            if published != self._published:
                log_entry: dict[FieldT, EncodableT] = {"node": self.options.node}
                pipe.xadd(self.keys.presence_log, log_entry, maxlen=ROOMS_LOG_MAXLEN)
            pipe.sadd(self.keys.nodes, self.options.node)
            for key, holder in named.items():
                pipe.set(key, holder, px=ttl_ms)
            pipe.smembers(self.keys.nodes)
            answers = await pipe.execute()
        for key, holder in self._named.items():
            if named.get(key) != holder:
                await self._release_script(keys=[key], args=[holder])
        self._named = named
        self._published = published
        others = sorted(n.decode() for n in answers[-1] if n.decode() != self.options.node)
        found = await self._redis.mget([self.keys.roster(n) for n in others]) if others else []
        rosters: dict[str, dict[bytes, Listed]] = {}
        for other, data in zip(others, found, strict=True):
            if data is None:
                continue  # stopped beating: its users are gone
            try:
                rosters[other] = decode_roster(other, cast(bytes, data))
            except ValueError as exc:
                log.error("node %s published a bad roster: %s", other, exc)
        local = [session for session, _, _ in roster]
        notices = self._presence.heard(rosters, local)
        if notices:
            self._input(lambda now: self._announce(notices))

    async def _leave_cluster(self) -> None:
        """Stopping: the roster goes at once (the others announce its users), names are freed."""
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self._redis.delete(self.keys.roster(self.options.node))
                for key, holder in self._named.items():
                    await self._release_script(keys=[key], args=[holder])
        except (*_UNREACHABLE, TimeoutError) as exc:
            log.warning(
                "could not leave the cluster cleanly (%s): it forgets this node in %g s",
                exc,
                self.options.name_ttl,
            )

    # --- storing: lines in Redis, the rest (and the archive) in the local history -------------

    async def _commit(self, journal: Journal, now: float) -> Mapping[tuple[bytes, int], int | None]:
        """Number and store the journal's proposals in Redis, with every session's highest
        id; then archive the rest locally. Waits (retrying) while Redis is unreachable."""
        numbered: dict[tuple[bytes, int], int | None] = {}
        if journal.proposed or journal.acked:
            self.stats.pending = len(journal.proposed)
            started = time.monotonic()
            keys, args = commit_arguments(self.keys, journal, self.options.stream_maxlen)
            first: list[int] = []
            seqs = await self._retrying(lambda: self._store(keys, args, first))
            self.stats.round_trip_s = time.monotonic() - started
            self.stats.commits += 1
            self.stats.lines_published += sum(1 for seq in seqs if seq)
            self.stats.pending = 0
            for proposal, seq in zip(journal.proposed, seqs, strict=True):
                numbered[proposal.session, proposal.id] = int(seq) or None
        kept = dataclasses.replace(journal, proposed=(), acked=())  # the ids: in Redis only
        if kept != _NOTHING_KEPT:  # a say's own cycle: no local write (a thread hop) at all
            await super()._commit(kept, now)
        return numbered

    async def _store(
        self, keys: list[str], args: list[str | int | float], first: list[int]
    ) -> list[int]:
        """Run the commit script, and ``WAIT`` for the replicas on the same connection (WAIT
        waits for that connection's writes). Returns the proposals' seqs as the first run
        that stored them answered (kept in ``first`` across retries: a rerun answers 0 for
        what is stored). Raises ``TimeoutError`` (retried) if too few replicas confirmed."""
        if not self.options.replicas:  # one round trip (a pipeline with a script asks
            answers = [await self._commit_script(keys=keys, args=args)]  # SCRIPT EXISTS first)
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                await self._commit_script(keys=keys, args=args, client=pipe)
                pipe.wait(self.options.replicas, int(self.options.replica_timeout * 1000))
                answers = await pipe.execute()
        seqs = [int(seq) for seq in answers[0]]
        first[:] = [old or new for old, new in zip(first, seqs, strict=True)] if first else seqs
        if self.options.replicas and answers[1] < self.options.replicas:
            confirmed = f"{answers[1]} of {self.options.replicas} replicas confirmed"
            raise redis_errors.TimeoutError(f"{confirmed}: lines stored but not acknowledged")
        return first

    async def _retrying(self, command: Callable[[], Awaitable[_T]]) -> _T:
        """``command``'s answer, retried with backoff while Redis is unreachable. Raises
        :class:`StorageError` for any other Redis error (the server stops acknowledging)."""
        delay = RETRY_MIN_S
        while True:
            try:
                answer = await command()
            except _UNREACHABLE as exc:
                self.stats.redis_errors += 1
                if self.stats.redis_up:
                    log.warning(
                        "cannot commit (%s): %d lines pending until Redis answers",
                        exc,
                        self.stats.pending,
                    )
                self.stats.redis_up = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except redis_errors.RedisError as exc:
                raise StorageError(f"Redis refused a commit: {exc}") from exc
            if not self.stats.redis_up:
                log.info("Redis is back")
                self.stats.redis_up = True
            return answer

    # --- following: every room's stream, in order, on a connection of its own ----------------

    async def _follow(self) -> None:
        """Read every room's new lines and hand them to the room logic, in stream order, for
        as long as the server runs; reconnects (resuming where it was) when Redis goes away."""
        logs = {self.keys.rooms_log: "$", self.keys.presence_log: "$"}
        delay = RETRY_MIN_S
        while True:
            # Its own connection, not the pool's: a read cancelled mid-BLOCK would leave a
            # pooled connection with an answer still to come (redis-py #2624, #2665).
            reader = Redis.from_url(
                self.options.redis_url,
                socket_timeout=READ_TIMEOUT_S,
                socket_connect_timeout=COMMAND_TIMEOUT_S,
                single_connection_client=True,
            )
            try:
                for key, position in logs.items():  # first: what is made after is in them
                    if position == "$":
                        newest = cast(Entries, await reader.xrevrange(key, count=1))
                        logs[key] = newest[0][0].decode() if newest else "0-0"
                if await self._lost_by_redis(reader):
                    return
                for made in cast(list[bytes], await reader.hkeys(self.keys.counters)):
                    self._following.setdefault(made.decode(), "0-0")
                while True:
                    streams: dict[KeyT, StreamIdT] = {}
                    streams.update(logs)
                    for room, last in self._following.items():
                        streams[self.keys.room(room)] = last
                    answer = await reader.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                    reply = cast(Reply, answer)
                    delay = RETRY_MIN_S
                    await self._take(reply, logs)
            except _UNREACHABLE as exc:
                self.stats.redis_errors += 1
                log.warning("following the rooms: Redis unreachable (%s); resuming", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            finally:
                await reader.aclose()  # never reused: a cancelled read dies with its connection

    async def _lost_by_redis(self, reader: Redis) -> bool:
        """Whether Redis (back after a restart, say) lacks lines this node already stored:
        then it could number new lines alike, so the node stops (its exit code 1)."""
        stored = {room: _seq(last) for room, last in self._following.items() if _seq(last)}
        if not stored:
            return False
        known = await reader.hmget(self.keys.counters, list(stored))
        ahead = _ahead(stored, known)
        if ahead is None:
            return False
        room, seq, last = ahead
        log.error(
            "Redis lost lines this node stored (%s: up to %d here, %d in Redis; was it "
            "restarted without its files, or with RDB only?): stopping",
            room,
            seq,
            last,
        )
        self._storage_failed.set()
        return True

    async def _take(self, reply: Reply, logs: dict[str, str]) -> None:
        """Hand one ``XREAD`` answer to the room logic and wait until it took it (so the
        follower never runs ahead of the dispatcher); move ``logs`` (the rooms and presence
        logs' positions) on past what it read of them."""
        said: list[Chat | Topic] = []
        for key, entries in reply:
            name = key.decode()
            if name == self.keys.rooms_log:
                for _, fields in entries:
                    self._following.setdefault(fields[b"room"].decode(), "0-0")
            elif name == self.keys.presence_log and any(
                fields.get(b"node") != self.options.node.encode() for _, fields in entries
            ):
                self._beat_soon.set()
            if name in logs:
                logs[name] = entries[-1][0].decode()
                continue
            room = name.removeprefix(self.keys.room(""))
            for entry_id, fields in entries:
                entry = entry_of(room, entry_id, fields)
                if entry is None:
                    log.error("skipped a malformed entry %r of %s", entry_id, name)
                elif isinstance(entry, Chat) and entry.seq != _seq(self._following[room]) + 1:
                    log.warning(
                        "%s: lines %d to %d were trimmed from the stream before this node "
                        "archived them (raise --stream-maxlen)",
                        room,
                        _seq(self._following[room]) + 1,
                        entry.seq - 1,
                    )
                self._following[room] = entry_id.decode()
                if entry is not None:
                    said.append(entry)
        if said:
            taken = asyncio.get_running_loop().create_future()
            self._input(lambda now: self._deliver(said, now, taken))
            await taken

    def _deliver(
        self, said: list[Chat | Topic], now: float, taken: asyncio.Future[None]
    ) -> list[Output]:
        taken.set_result(None)
        outputs: list[Output] = []
        for entry in said:
            if isinstance(entry, Topic):
                outputs += self.room.retopic(entry)
            else:
                outputs += self.room.deliver(entry)
                self.stats.lines_delivered += 1
                self.stats.stream_lag_s = now - entry.time
        return outputs


def _ahead(stored: dict[str, int], known: list[bytes | str | None]) -> tuple[str, int, int] | None:
    """The first room with a line in ``stored`` beyond its counter in Redis (``known``, in the
    same order), with both numbers; None if none."""
    for (room, seq), last in zip(stored.items(), known, strict=True):
        if int(last or 0) < seq:
            return room, seq, int(last or 0)
    return None


def _seq(entry_id: str) -> int:
    """The ``seq`` of the last line at or before a stream entry id ``<seq>-<n>``."""
    return int(entry_id.partition("-")[0])


def _merged(here: tuple[str, ...], elsewhere: list[str]) -> tuple[str, ...]:
    """This node's names, then the other nodes' (a name listed twice once)."""
    return (*here, *sorted(set(elsewhere) - set(here)))
