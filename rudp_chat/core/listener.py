"""The server endpoint, sans-IO: one socket's datagrams, demultiplexed to connections by id.

It answers HELLOs statelessly (RETRY with an HMAC token) until the client proves
its address, refuses past its limits, resets unknown ids at a bounded rate, and
keeps one timer heap for all its connections. Same three inputs and outputs as a
:class:`Connection`, so the simulator and the asyncio shell drive both alike.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .codec import decode_datagram, encode_datagram
from .config import ListenerConfig
from .connection import Address, Connection, Role
from .errors import FrameError, HandshakeError
from .frames import (
    CONNECTION_ID_SIZE,
    MIN_HELLO_SIZE,
    PROTOCOL_VERSION,
    ErrorCode,
    HelloPacket,
    ResetPacket,
    RetryPacket,
    SealedPacket,
    SessionPacket,
)
from .noise import KEY_SIZE, Pattern, Responder, StaticKey, fingerprint, prologue
from .tokens import TokenIssuer
from .trace import TraceSink

__all__ = ["Listener", "ListenerStats"]

RESET_SIZE = 34  # every RESET: fixarray, kind, bin8 id, bin8 token, CRC (PROTOCOL.md §3.4)
BACKLOGGED_HELLOS_PER_S = 200.0  # HELLOs answered per second while the socket is backlogged
# (two per new client: RETRY, then the handshake): with a pure-Python Noise handshake at about
# half a millisecond that bounds handshakes to ~6 % of a core, the rest serving established
# connections; never zero, so no flood of datagrams can lock new clients out
GUESTS_REFUSED = "this server takes no guests: connect with a client key"


@dataclass(slots=True)
class ListenerStats:
    """Counters of what the listener dropped or answered without a connection."""

    dropped_invalid: int = 0
    """Datagrams that did not decode."""
    dropped_unexpected: int = 0
    """Decodable but not for us: server-bound kinds from a client's view, wrong address for an id."""
    hellos_too_small: int = 0
    hellos_bad_version: int = 0
    hellos_bad_token: int = 0
    hellos_bad_handshake: int = 0
    """Validated HELLOs whose Noise message did not authenticate (IK: the client's key
    included), has neither pattern's length, or whose mode is not ours."""
    retries_sent: int = 0
    refused: int = 0
    """Connections refused after the handshake: full, per-address limit, or a guest where
    guests are not allowed."""
    resets_sent: int = 0
    resets_suppressed: int = 0
    """Unknown-id datagrams left unanswered (rate limit, or too small to answer without amplifying)."""
    hellos_deferred: int = 0
    """New clients' HELLOs left unanswered while the socket was backlogged (see
    :attr:`Listener.backlogged`); each client sends its HELLO again on its handshake timer."""
    accepted: int = 0


class Listener:
    """Accepts and serves connections for one server socket."""

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        config: ListenerConfig | None = None,
        *,
        secret: bytes | None = None,
        static_key: StaticKey | None = None,
        trace: Callable[[], TraceSink] | None = None,
    ) -> None:
        """``random_bytes`` supplies connection ids and ephemeral keys: pass ``os.urandom``.

        ``secret`` keys RETRY and RESET tokens; pass one kept across restarts so that a
        restarted server can still reset its old clients' connections (default: random).
        ``static_key`` is the server's identity, which clients pin (default: a new one;
        unused when the connection config is ``insecure``).
        ``trace`` makes each accepted connection's trace sink (refused ones are not traced).
        """
        self.config = config or ListenerConfig()
        self._static_key: StaticKey | None = None
        if not self.config.connection.insecure:
            self._static_key = static_key or StaticKey(random_bytes(KEY_SIZE))
        self.stats = ListenerStats()
        self._random_bytes = random_bytes
        self._trace = trace
        self._tokens = TokenIssuer(secret or random_bytes(32), self.config.token_lifetime)
        self.connections: dict[bytes, Connection] = {}
        self._by_client: dict[tuple[Address, bytes], Connection] = {}
        self._retired: dict[tuple[Address, bytes], float] = {}  # closed clients -> until when
        # their HELLO tokens could still be valid: a late copy must not reopen them
        self._per_host: dict[str, int] = {}
        self._accept_queue: deque[Connection] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        # touched since the last datagrams_to_send; insertion-ordered, so output is deterministic
        self._dirty: dict[bytes, Connection] = {}
        self._flushed: list[Connection] = []  # what the last datagrams_to_send drove
        self._timers: list[tuple[float, int, bytes]] = []
        self._scheduled: dict[bytes, float] = {}
        self._timer_counter = 0
        self._reset_budget = self.config.resets_per_second
        self._reset_time = 0.0
        self.backlogged = False
        """Set by the shell while its socket holds more datagrams than one read takes: then
        at most :data:`BACKLOGGED_HELLOS_PER_S` new clients' HELLOs are answered, so that a
        server short of CPU spends it on its connections' datagrams rather than on handshakes
        (an overflowing socket drops both, and connections that hear nothing time out)."""
        self._hello_budget = BACKLOGGED_HELLOS_PER_S
        self._hello_time = 0.0

    # ------------------------------------------------------------------ API

    @property
    def fingerprint(self) -> str | None:
        """The server key's fingerprint, which clients pin; None when insecure."""
        return None if self._static_key is None else fingerprint(self._static_key.public)

    def accept(self) -> Connection | None:
        """The oldest connection not yet handed out, or None."""
        return self._accept_queue.popleft() if self._accept_queue else None

    def flushed(self) -> list[Connection]:
        """The connections the last :meth:`datagrams_to_send` drove: every one an input, a
        timer or an API call reached since the call before (ones it then forgot included).
        A shell reads their events; no other connection has new ones."""
        return self._flushed

    def wake(self, connection: Connection) -> None:
        """An API call on ``connection`` may have given it something to send."""
        self._dirty[connection.local_id] = connection

    # ---------------------------------------------------------------- input

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Route one datagram; never raises for anything a peer sent."""
        try:
            packet = decode_datagram(data)
        except FrameError:
            self.stats.dropped_invalid += 1
            return
        if type(packet) is SealedPacket or type(packet) is SessionPacket:
            connection = self.connections.get(packet.connection_id)
            if connection is None:
                self._send_reset(packet.connection_id, len(data), addr, now)
                return
            old_address = connection.peer_address
            connection.receive_packet(packet, len(data), addr, now)
            if connection.peer_address != old_address:
                self._moved(connection, old_address)
            self._dirty[connection.local_id] = connection
        elif type(packet) is HelloPacket:
            self._receive_hello(packet, len(data), addr, now)
        else:
            self.stats.dropped_unexpected += 1

    def _receive_hello(self, hello: HelloPacket, size: int, addr: Address, now: float) -> None:
        stats = self.stats
        if size < MIN_HELLO_SIZE:
            stats.hellos_too_small += 1
            return
        if hello.version != PROTOCOL_VERSION:
            stats.hellos_bad_version += 1
            return
        key = (addr, hello.client_id)
        existing = self._by_client.get(key)
        if existing is not None:
            existing.receive_packet(hello, size, addr, now)
            self._dirty[existing.local_id] = existing
            return
        if self._retired.get(key, -1.0) >= now:
            stats.dropped_unexpected += 1
            return
        if self._deferred(now):
            stats.hellos_deferred += 1
            return
        if hello.token and self._tokens.check_retry_token(hello.token, hello.client_id, addr, now):
            self._open(hello, addr, now)
            return
        if hello.token:
            stats.hellos_bad_token += 1  # expired, or minted elsewhere: validate afresh
        stats.retries_sent += 1
        token = self._tokens.retry_token(hello.client_id, addr, now)
        server_key = b"" if self._static_key is None else self._static_key.public
        retry = RetryPacket(hello.client_id, token, server_key)
        self._outbox.append((encode_datagram(retry), addr))

    def _open(self, hello: HelloPacket, addr: Address, now: float) -> None:
        """A validated HELLO: complete the handshake and make the connection (or refuse it)."""
        responder = None
        if self._static_key is not None:
            try:
                pattern = Pattern.of_message1(hello.handshake)
                responder = Responder(
                    self._static_key,
                    prologue(hello.version, hello.client_id, pattern),
                    hello.handshake,
                    pattern,
                )
            except HandshakeError:
                self.stats.hellos_bad_handshake += 1
                return
        elif hello.handshake:
            self.stats.hellos_bad_handshake += 1  # it expects encryption we do not offer
            return
        server_id = self._random_bytes(CONNECTION_ID_SIZE)
        while server_id in self.connections:
            server_id = self._random_bytes(CONNECTION_ID_SIZE)
        reset_token = self._tokens.reset_token(server_id)
        welcome_body, keys, client_key = server_id + reset_token, None, None
        if responder is not None:
            client_key = responder.peer_static
            welcome_body, send_key, receive_key = responder.write_message2(
                self._random_bytes(KEY_SIZE), welcome_body
            )
            keys = (send_key, receive_key)
        client_id = hello.client_id
        host = addr[0]
        code = ErrorCode.REFUSED
        if len(self.connections) >= self.config.max_connections:
            refusal = "server full"
        elif self._per_host.get(host, 0) >= self.config.max_connections_per_address:
            refusal = "too many connections from this address"
        elif client_key is None and responder is not None and not self.config.allow_guests:
            refusal, code = GUESTS_REFUSED, ErrorCode.KEY_REQUIRED
        else:
            refusal = ""
        connection = Connection(
            self.config.connection,
            Role.SERVER,
            local_id=server_id,
            peer_address=addr,
            now=now,
            remote_id=client_id,
            reset_token=reset_token,
            keys=keys,
            welcome_body=welcome_body,
            peer_static_key=client_key,
            trace=None if refusal or self._trace is None else self._trace(),
        )
        if refusal:
            self.stats.refused += 1
            connection.refuse(refusal, code)
            self._outbox.extend(connection.datagrams_to_send(now))
            return
        self.stats.accepted += 1
        self.connections[server_id] = connection
        self._by_client[addr, client_id] = connection
        self._per_host[host] = self._per_host.get(host, 0) + 1
        connection.on_change = self.wake
        self._accept_queue.append(connection)
        self._dirty[server_id] = connection

    def _deferred(self, now: float) -> bool:
        """Whether to leave a new client's HELLO unanswered: only while backlogged and past
        the budget. A HELLO of a connection already made is always answered (its WELCOME
        was lost; the handshake is paid for)."""
        rate = BACKLOGGED_HELLOS_PER_S
        self._hello_budget = min(rate, self._hello_budget + (now - self._hello_time) * rate)
        self._hello_time = now
        if not self.backlogged:
            return False
        if self._hello_budget < 1:
            return True
        self._hello_budget -= 1
        return False

    def _moved(self, connection: Connection, old_address: Address) -> None:
        """The peer migrated: its tables follow it (a NAT rebinding is not a new client)."""
        key = (old_address, connection.remote_id or b"")
        if self._by_client.get(key) is connection:
            del self._by_client[key]
            self._by_client[connection.peer_address, key[1]] = connection
        self._release_host(old_address[0])
        host = connection.peer_address[0]
        self._per_host[host] = self._per_host.get(host, 0) + 1

    def _release_host(self, host: str) -> None:
        remaining = self._per_host[host] - 1
        if remaining:
            self._per_host[host] = remaining
        else:
            del self._per_host[host]

    def _send_reset(self, connection_id: bytes, size: int, addr: Address, now: float) -> None:
        """Rate limit and size are checked before the token's HMAC is computed: a flood of
        unknown ids costs no cryptography beyond the budget."""
        rate = self.config.resets_per_second
        self._reset_budget = min(rate, self._reset_budget + (now - self._reset_time) * rate)
        self._reset_time = now
        if size <= RESET_SIZE or self._reset_budget < 1:
            self.stats.resets_suppressed += 1
            return
        reset = encode_datagram(ResetPacket(connection_id, self._tokens.reset_token(connection_id)))
        self._reset_budget -= 1
        self.stats.resets_sent += 1
        self._outbox.append((reset, addr))

    # --------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """The earliest deadline of any connection (one heap, stale entries skipped)."""
        timers, scheduled = self._timers, self._scheduled
        while timers:
            deadline, _, connection_id = timers[0]
            if scheduled.get(connection_id) == deadline:
                return deadline
            heapq.heappop(timers)
        return None

    def handle_timer(self, now: float) -> None:
        timers, scheduled = self._timers, self._scheduled
        while timers and timers[0][0] <= now:
            deadline, _, connection_id = heapq.heappop(timers)
            if scheduled.get(connection_id) != deadline:
                continue
            del scheduled[connection_id]
            connection = self.connections[connection_id]
            connection.handle_timer(now)
            self._dirty[connection_id] = connection

    # --------------------------------------------------------------- output

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Stateless replies, then whatever the connections touched since the last call send."""
        out, self._outbox = self._outbox, []
        dirty, self._dirty = self._dirty, {}
        self._flushed = list(dirty.values())
        for connection_id, connection in dirty.items():
            out.extend(connection.datagrams_to_send(now))
            if connection.is_closed:
                self._forget(connection, now)
                continue
            deadline = connection.get_timer()
            if deadline is None:
                self._scheduled.pop(connection_id, None)
            elif self._scheduled.get(connection_id) != deadline:
                self._scheduled[connection_id] = deadline
                self._timer_counter += 1
                heapq.heappush(self._timers, (deadline, self._timer_counter, connection_id))
        return out

    def _forget(self, connection: Connection, now: float) -> None:
        connection_id = connection.local_id
        if self.connections.pop(connection_id, None) is None:
            return
        self._scheduled.pop(connection_id, None)
        key = (connection.peer_address, connection.remote_id or b"")
        self._by_client.pop(key, None)
        retired = self._retired
        retired.pop(key, None)  # re-inserted last, so insertion order stays expiry order
        retired[key] = now + self.config.token_lifetime
        while retired:  # expired or over the table size: drop from the oldest end
            oldest, until = next(iter(retired.items()))
            if until >= now and len(retired) <= self.config.max_connections:
                break
            del retired[oldest]
        self._release_host(connection.peer_address[0])
