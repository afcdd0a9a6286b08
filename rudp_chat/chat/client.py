"""The chat client's connection logic, without a user interface: the console front-ends and the
demo drive it.

Each typed line gets a client message id (1, 2, 3, ... for this process's random session) and
stays pending until the server acknowledges it. After a lost connection the client reconnects
with backoff under the same name and session; the server's welcome says which ids it already
processed, so only the others are resent and none is delivered twice. Lines are sent at half
the server's announced rate and burst, so that retransmission stalls bunching them up in
transit do not trip the server's flood limit. Leaving waits until every pending line is
acknowledged, then closes the connection gracefully; a second ``/quit`` leaves without them.

A lost connection is one notice; while reconnecting the state (for a status bar) says how often
it was tried and the last reason, and a ``reconnected`` notice ends it.

Failover: given several servers of one chat (a cluster's nodes, :mod:`.failover` says in which
order they are tried), the client uses one at a time. When its connection is lost, or its
server says it shuts down (a rolling restart), the next is tried at once and the session resumes
there as on a reconnect (the cluster shares sessions and message numbers, so the same acks and
cursors hold); the notice then names the new server, ``reconnected to HOST:PORT``. Keys are
pinned per server (``HOST:PORT``), or ``server_key`` is one key every node presents.

Rooms: the client keeps the rooms it is in, with the last line it saw in each, and the active
room (where typed lines go). Its ``hello`` names them all, so after a reconnect it is back in
each and is sent exactly the lines it missed there (shown as live lines, without history
markers). ``/join`` of a room (new or not) makes it active; :meth:`ChatClient.switch` cycles.

Typing notices (:mod:`.typing`) go both ways as unreliable datagrams: the front-end reports
edits of the input line (:meth:`ChatClient.edited`), and who is typing in the active room
joins the status bar (or, with ``show_typing``, each notice is an event to print).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rudp_chat.aio import (
    ConnectError,
    ConnectionLostError,
    GuestsNotAllowedError,
    HandshakeTimeoutError,
    PortUnreachableError,
    ReliableConnection,
    TransportError,
    UntrustedServerError,
    connect,
)
from rudp_chat.core.config import ConnectionConfig
from rudp_chat.core.errors import LocalProtocolError
from rudp_chat.core.events import MessageReceived
from rudp_chat.core.noise import StaticKey
from rudp_chat.core.stats import ConnectionStats
from rudp_chat.identity import KnownServers

from .failover import Rotation, ServerAddress
from .lanes import HISTORY_LANE
from .limits import MAX_PAGE
from .protocol import (
    LOBBY,
    MAX_TEXT_CHARS,
    SESSION_BYTES,
    Ack,
    Bye,
    ByeCode,
    Chat,
    ChatProtocolError,
    Entered,
    Error,
    Hello,
    HistoryEnd,
    HistoryKind,
    HistoryStart,
    Joined,
    Left,
    RefusalCode,
    Refused,
    Renamed,
    Say,
    ServerMessage,
    Typing,
    TypingNotice,
    Users,
    Welcome,
    decode_server,
    encode,
)
from .ratelimit import TokenBucket
from .render import Event, Notice
from .text import InvalidNameError, normalise_room
from .typing import TypingBoard, TypingNotifier, typing_line

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NAME_REFUSED",
    "EXIT_OK",
    "ChatClient",
    "ClientOptions",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_NAME_REFUSED: Final = 2

WELCOME_TIMEOUT_S: Final = 10.0  # the server answers hello at once; this only bounds a stuck one
RECONNECT_GIVE_UP_S: Final = 300.0  # a server gone for five minutes is not coming back soon
PACING_SHARE: Final = 0.5  # of the server's rate and burst, leaving slack for delivery bunching
MAX_HELD_BLOCK: Final = MAX_PAGE + 2  # a history block: its start, its lines, its end
HELP: Final = "this client: /say TEXT (sends TEXT as written), /stats, /quit or exit"


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Where to connect and as whom."""

    host: str
    port: int
    name: str
    reconnect: bool = True
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)
    server_key: str | None = None
    """The fingerprint every server's key must have (nodes sharing one key file); it replaces
    the pin once it connects."""
    known_servers: Path | None = None
    """Where pins are kept (like ``known_hosts``); None pins for this process only."""
    client_key: StaticKey | None = None
    """Our identity, proven to the server by the handshake; None connects as a guest."""
    show_typing: bool = False
    """Hand each typing notice to ``on_event`` (plain mode prints them), besides the status."""
    alternates: tuple[ServerAddress, ...] = ()
    """Other servers of the same chat (a cluster's nodes), tried in this order after
    ``host:port`` when a connection fails or its server shuts down."""

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        """Every server to try, in order: ``host:port`` first."""
        return ((self.host, self.port), *self.alternates)


class ChatClient:
    """One user's chat session across reconnects.

    ``on_event`` receives every server message to show (acks included) and the client's own
    :class:`Notice`\\ s, in order. Call :meth:`run` once; feed it lines with :meth:`submit`.
    """

    def __init__(self, options: ClientOptions, on_event: Callable[[Event], None]) -> None:
        self.options = options
        self.name = options.name
        """The name we are known by (the server's normalised form once welcomed)."""
        self.error: str | None = None
        """Why :meth:`run` failed, for the user (stderr), when it returns non-zero."""
        self.state = "connecting"
        """``connecting``, ``open``, ``lost``, ``reconnecting``, ``closing`` or ``closed``."""
        self.retrying = ""
        """While reconnecting: attempts so far and the last reason, for a status bar."""
        self._on_event = on_event
        self._session = os.urandom(SESSION_BYTES)
        self._pending: dict[int, Say] = {}  # sent or not, not yet acknowledged, in id order
        self._submitted: dict[int, float] = {}  # monotonic time each pending line was typed
        self._next_id = 1
        self._next_to_send = 1  # on the current connection
        self.room = LOBBY
        """The active room: where typed lines go."""
        self.members: dict[str, list[str]] = {}
        """Who is in each of our rooms, as far as we were told."""
        self._seen: dict[str, int] = {}  # our rooms, each with the highest chat seq shown
        self._rejoining: set[str] = set()  # rooms named in hello: entering them keeps self.room
        self._missed: set[str] = set()  # rooms whose "missed" block is open: no markers shown
        self._joining: dict[int, str] = {}  # say id of a /join -> the room active before it
        self._wake = asyncio.Event()  # a line was submitted
        self._done = asyncio.Event()  # asked to quit, and nothing is pending
        self._quitting = False
        self._abandoned = False  # left without waiting for the pending lines
        self._connection: ReliableConnection | None = None
        self._known = KnownServers(options.known_servers)
        self._typing = TypingNotifier()
        self._typists = TypingBoard()
        self.server: ServerAddress = (options.host, options.port)
        """The server in use, or being tried."""
        self._welcomed_by: ServerAddress | None = None  # the server of the last welcome
        self._server_shut_down = False  # on this connection, and another server may take us

    # --- what the front-end calls -----------------------------------------------------------

    def submit(self, line: str) -> None:
        """Handle one typed line: the line ``exit`` and ``/quit`` leave (see :meth:`leave`;
        ``/quit REASON`` is sent, so that the others see the reason, and then leaves),
        ``/stats`` shows the connection, ``/say TEXT`` sends TEXT as it is, blank lines are
        ignored, anything else is sent as typed: the server interprets its commands and the
        ``//`` escape (``/help`` also lists ours)."""
        text = line.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
        self._notify(self._typing.finished())
        command, _, argument = text.strip().partition(" ")
        command = command.lower()
        if command == "/quit" and argument.strip() and not self._quitting:
            self._send_text(text)  # the reason is for the others: the server says goodbye
            self.quit()
        elif text == "exit" or command == "/quit":
            self.leave()
        elif command == "/stats":
            self._on_event(Notice(self.describe()))
        elif command == "/say":
            said = text.lstrip().partition(" ")[2]
            self._send_text("/" + said if said.startswith("/") else said)  # the server unescapes
        elif not command:
            return
        else:
            if command == "/help":
                self._on_event(Notice(HELP))
            self._send_text(text)

    def edited(self, text: str) -> None:
        """The input line now holds ``text`` (the front-end calls this on every edit): tells
        the active room we are typing, at most every 3 s, and when we stop."""
        self._notify(self._typing.edited(self.room, text, time.monotonic()))

    def _notify(self, notices: list[Typing]) -> None:
        """Send typing notices as datagrams, if connected (lost ones are not missed: see
        :mod:`.typing`)."""
        connection = self._connection
        if connection is None or self.state != "open":
            return
        for notice in notices:
            try:
                connection.send_datagram(encode(notice))
            except LocalProtocolError:  # the connection is closing: nobody to tell
                return

    def typing(self, now: float | None = None) -> list[str]:
        """Who is typing in the active room (at ``now``, default the monotonic clock)."""
        return self._typists.typing(self.room, time.monotonic() if now is None else now)

    def _send_text(self, text: str) -> None:
        if not text.strip():
            self._on_event(Notice("error: nothing to send"))
        elif len(text) > MAX_TEXT_CHARS:
            limit = f"{len(text)} characters; the limit is {MAX_TEXT_CHARS}"
            self._on_event(Notice(f"error: message too long, not sent: {limit}"))
        else:
            self._pending[self._next_id] = Say(self._next_id, text, self.room)
            self._submitted[self._next_id] = time.monotonic()
            self._switch_on_join(text)
            self._next_id += 1
            self._wake.set()

    def _switch_on_join(self, text: str) -> None:
        """``/join #room`` makes the room active at once, so the lines typed after it (a
        script's next lines) go there; if the server refuses, the previous room is active
        again."""
        command, _, argument = text.strip().partition(" ")
        if command.lower() != "/join":
            return
        try:
            room = normalise_room(argument.strip().partition(" ")[0])
        except InvalidNameError:
            return  # the server says what is wrong
        self._joining[self._next_id] = self.room
        self.room = room

    def leave(self) -> None:
        """The user asked to leave: at once if nothing is pending; otherwise say what is and
        leave once it is confirmed, or at once when asked a second time."""
        if self._quitting and self._pending:
            self._abandoned = True
            self._done.set()
            return
        if self._pending:
            self._on_event(
                Notice(
                    f"{self.unconfirmed()}: leaving once the server confirms them; "
                    "/quit again leaves now"
                )
            )
        self.quit()

    @property
    def quitting(self) -> bool:
        """Whether :meth:`quit` was called."""
        return self._quitting

    def quit(self) -> None:
        """Leave once everything submitted so far is acknowledged."""
        self._quitting = True
        self._check_done()

    @property
    def unacknowledged(self) -> int:
        """Lines submitted and not yet acknowledged by the server."""
        return len(self._pending)

    def unconfirmed(self) -> str:
        """How many lines wait for the server's ack and for how long the oldest has, in words
        (empty when none does)."""
        oldest = next(iter(self._submitted.values()), None)
        if oldest is None:
            return ""
        count = len(self._pending)
        age = time.monotonic() - oldest
        return f"{count} unconfirmed (oldest {age:.0f} s)"

    def status(self) -> str:
        """For a status bar: the active room and how many are in it, the connection's state
        (while reconnecting, how often it was tried and why it failed), unconfirmed lines."""
        here = len(self.members.get(self.room, ()))
        parts = [f"{self.room} ({here} here)", self.state]
        if self.retrying:
            parts[-1] += f" ({self.retrying})"
        if self._pending:
            parts.append(self.unconfirmed())
        typists = typing_line(self.typing())
        if typists:
            parts.append(typists)
        return " | ".join(parts)

    def unconfirmed_lines(self) -> list[Say]:
        """The lines typed and not yet confirmed by the server, oldest first."""
        return list(self._pending.values())

    def switch(self, step: int) -> None:
        """Make the room ``step`` places after the active one (in the order they were
        entered, wrapping) the active room, and say so."""
        rooms = list(self._seen)
        if len(rooms) < 2 or self.room not in rooms:
            return
        self.room = rooms[(rooms.index(self.room) + step) % len(rooms)]
        self._on_event(Notice(f"now talking in {self.room}"))

    def stats(self) -> ConnectionStats | None:
        """The current (or last) connection's statistics; None before the first connection."""
        return None if self._connection is None else self._connection.stats()

    def describe(self) -> str:
        """One line about the connection, for ``/stats`` and the toolbar."""
        stats = self.stats()
        if stats is None or self._connection is None:
            return f"{self.state}, never connected"
        return (
            f"{self.state}, {_format_stats(stats)}, {self.unacknowledged} unacknowledged,"
            f" UDP via {self._connection.socket_path}"
        )

    # --- the session --------------------------------------------------------------------------

    async def run(self) -> int:
        """Connect, chat, reconnect as needed; returns the exit code (:data:`EXIT_OK`, ...)."""
        options = self.options
        rotation = Rotation(options.servers, random.Random())
        lost_since: float | None = None
        attempts = 0
        problems: list[str] = []  # of the first round, while never connected
        while True:
            host, port = self.server = rotation.current
            where = KnownServers.name(host, port)
            named = f"{where}: " if len(options.servers) > 1 else ""  # which one, if not the only
            pinned = options.server_key or self._known.lookup(host, port)
            try:  # a refusal may also come after connect returned: the conversation raises it
                connection = await connect(
                    host,
                    port,
                    config=options.connection,
                    server_fingerprint=pinned,
                    client_key=options.client_key,
                )
                code = await self._converse_on(connection, pinned)
            except UntrustedServerError as exc:  # never retried: it will not fix itself
                self.state = "closed"
                self.error = self._untrusted(exc, pinned)
                return EXIT_FAILURE
            except GuestsNotAllowedError as exc:  # final too: a guest stays a guest
                self.state = "closed"
                self.error = f"{where}: {exc.detail} (leave out --guest)"
                return EXIT_FAILURE
            except (ConnectError, OSError) as exc:
                problem = _connect_problem(exc, options.connection.handshake_timeout)
                delay = rotation.failed()
                if self._welcomed_by is None:  # never connected: each server once, then give up
                    problems.append(f"{where}: {problem}")
                    if delay == 0.0:
                        continue
                    self.state = "closed"
                    self.error = f"cannot connect to {'; '.join(problems)}"
                    return EXIT_FAILURE
                attempts += 1
                self.retrying = f"{attempts} failed: {named}{problem}"
            else:
                if code is not None:
                    self.state = "closed"
                    return code
                if self.state == "lost":  # it worked for a while: start backing off afresh
                    lost_since, attempts = None, 0
                delay = rotation.lost()
            now = time.monotonic()
            lost_since = lost_since or now
            if not options.reconnect or now - lost_since > RECONNECT_GIVE_UP_S:
                self.state = "closed"
                unsent = f"; {len(self._pending)} messages not delivered" if self._pending else ""
                last = KnownServers.name(*self._welcomed_by or self.server)
                self.error = f"connection to {last} lost{unsent}"
                return EXIT_FAILURE
            self.state = "reconnecting"
            try:
                async with asyncio.timeout(delay):
                    await self._done.wait()  # leaving with nothing pending needs no server
                if self._abandoned:
                    return self._abandon()
                self.state = "closed"
                return EXIT_OK
            except TimeoutError:
                pass

    async def _converse_on(self, connection: ReliableConnection, pinned: str | None) -> int | None:
        """Pin the server's key, then :meth:`_converse`; the connection never outlives a
        failure (cancelled, or refused after all)."""
        self._pin(connection.server_fingerprint, pinned)
        self._connection = connection
        try:
            return await self._converse(connection)
        except BaseException:  # do not leave the socket to the collector
            connection.abort("cancelled")
            raise

    def _pin(self, presented: str | None, pinned: str | None) -> None:
        options = self.options
        if presented is None or presented == self._known.lookup(*self.server):
            return
        self._known.pin(*self.server, presented)
        where = "" if options.known_servers is None else f" in {options.known_servers}"
        verb = "trusted on first use" if pinned is None else "pinned"
        self._on_event(Notice(f"server key {presented} {verb}{where}"))

    def _untrusted(self, error: UntrustedServerError, pinned: str | None) -> str:
        """What went wrong and how to proceed, naming both keys."""
        options = self.options
        server = KnownServers.name(*self.server)
        if error.presented is None or pinned is None or error.presented == pinned:
            return f"{server}: {error.detail}"
        source = "--server-key" if options.server_key else str(options.known_servers)
        return (
            f"the server at {server} presented key {error.presented}, but {pinned} is pinned "
            f"for it ({source}). Someone may be intercepting the connection. If the server's "
            f"key was changed on purpose, connect once with --server-key {error.presented} "
            "to trust the new key."
        )

    async def _converse(self, connection: ReliableConnection) -> int | None:
        """One connection: hello, then chat until we leave (an exit code) or it is lost (None)."""
        try:
            rooms = tuple(self._seen.items())
            await connection.send(encode(Hello(self.name, self._session, rooms=rooms)))
            early: list[MessageReceived] = []  # lanes are independent: a history block read
            async with asyncio.timeout(WELCOME_TIMEOUT_S):  # back may overtake the welcome
                while (received := await connection.receive()).lane == HISTORY_LANE:
                    if len(early) == MAX_HELD_BLOCK:
                        raise ChatProtocolError("no welcome before a whole history block")
                    early.append(received)
                first = decode_server(received.data)
        except (
            ConnectionLostError,
            EOFError,
            TimeoutError,
            LocalProtocolError,
            ChatProtocolError,
        ) as exc:
            connection.abort("no welcome")
            self._on_event(Notice(f"no welcome from the server: {exc}"))
            return None
        if isinstance(first, Refused):
            connection.abort("refused")  # the server closes its side; nothing of ours is unsent
            self.error = f"refused: {first.reason}"
            name_problem = first.code in (RefusalCode.INVALID_NAME, RefusalCode.NAME_TAKEN)
            return EXIT_NAME_REFUSED if name_problem else EXIT_FAILURE
        if not isinstance(first, Welcome):
            connection.abort("no welcome")
            self._on_event(Notice("the server did not answer hello with a welcome"))
            return None
        if self.state == "reconnecting":
            moved = self.server != self._welcomed_by  # a failover names the new server
            to = f" to {KnownServers.name(*self.server)}" if moved else ""
            self._on_event(Notice(f"reconnected{to}"))
        self._welcomed_by = self.server
        pacer = self._welcome(first)
        receiver = asyncio.create_task(self._receive(connection, early))
        sender = asyncio.create_task(self._send(connection, pacer))
        done = asyncio.create_task(self._done.wait())
        typists = asyncio.create_task(self._receive_typing(connection))
        tasks = (receiver, sender, done, typists)
        try:  # a failed send needs no attention: the receiver sees the connection end too
            await asyncio.wait((receiver, done), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        if done.done() and not done.cancelled():
            return await self._close(connection)
        code = results[0]
        if isinstance(code, int):
            await connection.close()
            return code
        self.state = "lost"
        termination = connection.termination
        reason = "closed" if termination is None else termination.reason.value
        if self._server_shut_down:
            reason, self._server_shut_down = "the server shut down", False
        again = "; reconnecting" if self.options.reconnect else ""
        self._on_event(Notice(f"connection lost ({reason}){again}"))
        connection.abort("lost")
        return None

    async def _close(self, connection: ReliableConnection) -> int:
        """Leave: gracefully when everything was confirmed, abruptly when abandoned."""
        self.state = "closing"
        if self._abandoned:
            connection.abort("left with unconfirmed lines")
            return self._abandon()
        await connection.close()
        return EXIT_OK

    def _abandon(self) -> int:
        self.state = "closed"
        count = len(self._pending)
        self.error = f"left with {count} message{'' if count == 1 else 's'} not delivered"
        return EXIT_FAILURE

    def _welcome(self, welcome: Welcome) -> TokenBucket:
        """Start a session: drop what the server already processed, resend the rest, paced."""
        self.state, self.retrying = "open", ""
        self.name = welcome.name
        for say_id in [i for i in self._pending if i <= welcome.acked]:
            del self._pending[say_id], self._submitted[say_id]
        self._next_to_send = next(iter(self._pending), self._next_id)
        self._rejoining = {LOBBY, *self._seen}
        self._on_event(welcome)
        self._check_done()
        rate, burst = welcome.rate * PACING_SHARE, max(1, int(welcome.burst * PACING_SHARE))
        return TokenBucket(rate, burst, asyncio.get_running_loop().time())

    async def _send(self, connection: ReliableConnection, pacer: TokenBucket) -> None:
        """Send pending lines in order, paced; ends only by raising when the connection fails."""
        loop = asyncio.get_running_loop()
        while True:
            while self._next_to_send < self._next_id:
                say = self._pending.get(self._next_to_send)
                if say is not None:
                    if not pacer.take(loop.time()):
                        await asyncio.sleep(pacer.delay(loop.time()))
                        continue
                    await connection.send(encode(say))
                self._next_to_send += 1
            self._wake.clear()
            await self._wake.wait()

    async def _receive(
        self, connection: ReliableConnection, early: list[MessageReceived]
    ) -> int | None:
        """Show what arrives (``early``: what came before the welcome, first); an exit code
        when the server says goodbye, None if lost.

        A history block read back comes on its own lane, beside live lines that do not wait
        for it: it is held until its end and shown whole, never cut by a live line."""
        block: list[ServerMessage] = []
        try:
            while True:
                received = early.pop(0) if early else await connection.receive()
                try:
                    message = decode_server(received.data)
                except ChatProtocolError as exc:
                    self._on_event(Notice(f"ignored a malformed message from the server: {exc}"))
                    continue
                if received.lane == HISTORY_LANE:
                    block.append(message)
                    if not isinstance(message, HistoryEnd) and len(block) < MAX_HELD_BLOCK:
                        continue
                    arrived, block = block, []
                else:
                    arrived = [message]
                for message in arrived:
                    code = self._handle(message)
                    if code is not None or self._server_shut_down:
                        return code
        except (EOFError, ConnectionLostError):
            pass
        return None

    async def _receive_typing(self, connection: ReliableConnection) -> None:
        """Take the typing notices of our rooms until the connection ends."""
        try:
            while True:
                datagram = await connection.recv_datagram()
                try:
                    notice = decode_server(datagram.data)
                except ChatProtocolError:
                    continue  # a datagram is no promise: drop it, say nothing
                if isinstance(notice, TypingNotice) and notice.room in self._seen:
                    self._typists.notice(notice, time.monotonic())
                    if self.options.show_typing:
                        self._on_event(notice)
        except (TransportError, EOFError):
            return

    def _handle(self, message: ServerMessage) -> int | None:
        match message:
            case Ack(id=say_id):
                self._pending.pop(say_id, None)
                self._submitted.pop(say_id, None)
                self._joining.pop(say_id, None)
                self._check_done()
            case Error(id=say_id) if say_id in self._joining:
                previous = self._joining.pop(say_id)
                if self.room not in self._seen:
                    self.room = previous
            case Chat(room=room, seq=seq, history=history):
                self._typists.stopped(room, message.sender)  # their line is in: done typing
                seen = self._seen.get(room, 0)
                if not history and seq <= seen:
                    return None  # already shown
                if room in self._seen:
                    self._seen[room] = max(seen, seq)
            case HistoryStart(room=room, kind=HistoryKind.MISSED):
                self._missed.add(room)  # after a reconnect, missed lines are shown as live
                return None
            case HistoryEnd(room=room, more=more) if room in self._missed:
                self._missed.discard(room)
                if more:  # /history walks back from the oldest shown, through the gap
                    self._on_event(Notice(f"{room}: more was missed; /history shows older"))
                return None
            case Entered(room=room, users=users):
                self._seen.setdefault(room, 0)
                self.members[room] = list(users)
                if room in self._rejoining:
                    self._rejoining.discard(room)
                else:
                    self.room = room
            case Joined(room=room, name=name):
                members = self.members.setdefault(room, [])
                if name not in members:
                    members.append(name)
            case Left(room=room, name=name) if name == self.name:
                self._seen.pop(room, None)
                self.members.pop(room, None)
                if self.room == room:
                    self.room = next(reversed(self._seen), LOBBY)
            case Left(room=room, name=name):
                self._typists.stopped(room, name)
                if name in self.members.get(room, ()):
                    self.members[room].remove(name)
            case Users(room=room, names=names):
                self.members[room] = list(names)
            case Renamed(old=old, new=new):
                if old == self.name:
                    self.name = new
                for members in self.members.values():
                    members[:] = [new if member == old else member for member in members]
            case Bye(code=ByeCode.SHUTDOWN) if self._may_fail_over():
                self._on_event(message)
                self._server_shut_down = True  # a rolling restart: another server takes us
                return None
            case Bye(code=code, text=text):
                self._on_event(message)
                if code in (ByeCode.SHUTDOWN, ByeCode.LEFT):
                    return EXIT_OK
                self.error = text
                return EXIT_FAILURE
        self._on_event(message)
        return None

    def _may_fail_over(self) -> bool:
        """Whether a server shutting down sends us to another one rather than ending the run:
        while we have one, and have not left with every line confirmed."""
        options = self.options
        return options.reconnect and len(options.servers) > 1 and not self._done.is_set()

    def _check_done(self) -> None:
        if self._quitting and not self._pending:
            self._done.set()


def _connect_problem(error: Exception, handshake_timeout: float) -> str:
    """Why a connection attempt failed, in plain words."""
    if isinstance(error, PortUnreachableError):
        return "nothing listens there"
    if isinstance(error, HandshakeTimeoutError):
        return f"no answer within {handshake_timeout:g} s"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _format_stats(stats: ConnectionStats) -> str:
    """RTT, datagrams, loss and retransmissions on one line."""
    return (
        f"rtt {stats.smoothed_rtt * 1000:.0f} ms (min {stats.min_rtt * 1000:.0f}),"
        f" datagrams {stats.datagrams_sent} out / {stats.datagrams_received} in,"
        f" {stats.packets_lost} lost, {stats.retransmitted_fragments} retransmitted"
    )
