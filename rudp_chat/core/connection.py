"""One reliable connection, sans-IO: datagrams and time in, datagrams, timers and events out.

The connection coordinates; the work is delegated: :mod:`.handshake` (the client's
handshake), :mod:`.arrivals` (what each state does with each packet and frame),
:mod:`.closing` (the close's own machine), :mod:`.protection` (sealing, opening, replays),
:mod:`.sending` (which fragments each packet carries), :mod:`.thin` (copies while the stream
is thin), :mod:`.sendbuffer` (fragments awaiting acknowledgement), :mod:`.receiving`
(reassembly and ACK policy), :mod:`.recovery` (loss detection, RTO), :mod:`.congestion` and
:mod:`.pacing` (window and pacing), :mod:`.lanes` and :mod:`.reassembly` (independent
ordered flows), :mod:`.codec` (bytes), :mod:`.state` (the transition
table). Retransmission goes through delivery
handlers (:mod:`.delivery`) that each frame registers when its packet is built.

Inputs: :meth:`send`, :meth:`send_datagram` (unreliable: :mod:`.datagrams`), :meth:`close`,
:meth:`abort`, :meth:`receive_datagram`, :meth:`handle_timer`. Outputs:
:meth:`datagrams_to_send`, :meth:`get_timer`, :meth:`next_event`. After every input, call
``datagrams_to_send`` and re-arm the timer from ``get_timer``. A ``trace`` sink (:mod:`.trace`) sees the connection's qlog events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from .arrivals import (
    ARRIVALS,
    FRAME_ARRIVALS,
    SESSION_STATES,
    Reaction,
    frame_arrival,
    packet_arrival,
)
from .closing import Closing
from .codec import (
    DATAGRAM_FRAME_OVERHEAD,
    decode_datagram,
    decode_frames,
    encode_datagram,
    encode_frames,
    fragment_size,
    padded_ping,
    payload_room,
)
from .config import ConnectionConfig
from .congestion import CongestionController, SentPacket
from .datagrams import Datagrams
from .delivery import Delivery, DeliveryHandler
from .errors import ConnectionClosedError, FrameError, LocalProtocolError, PeerProtocolError
from .events import (
    Connected,
    ConnectionTerminated,
    DatagramReceived,
    Event,
    MessageReceived,
    TerminationReason,
)
from .frames import (
    CONNECTION_ID_SIZE,
    MAX_ACK_RANGES,
    AckFrame,
    CloseFrame,
    DataFrame,
    ErrorCode,
    Frame,
    HelloPacket,
    Packet,
    PingFrame,
    ResetPacket,
    RetryPacket,
    SealedPacket,
    SessionPacket,
    WelcomePacket,
)
from .handshake import ClientHandshake, WelcomeRefused
from .noise import StaticKey, fingerprint
from .pacing import Pacer
from .pmtu import PathMtu
from .protection import PacketProtection, Refused
from .receiving import Receiver
from .recovery import Recovery
from .rtt import RttEstimator
from .sendbuffer import SendBuffer
from .sending import DataSender
from .state import Input, Role, State, next_state
from .stats import ConnectionCounters, ConnectionStats, snapshot
from .thin import ThinStream
from .trace import PACKET_TYPES, SESSION_PACKET_TYPE, ConnectionTrace, TraceSink

__all__ = ["Address", "Connection", "Role"]

Address = tuple[str, int]

SERVER_HEARTBEAT_FACTOR = 1.5  # the server leaves keep-alives to the client (see _heartbeat_due)
ACK_FRAME_BOUND = 28  # an ACK frame's bytes besides its ranges (msgpack worst case)
ACK_RANGE_BOUND = 18  # bytes per ACK range, worst case
PING_FRAME_SIZE = 2
_LIVE = (State.OPEN, State.CLOSING)  # the states that send data, pings and window updates
_URGENT = (PingFrame, CloseFrame)  # frames whose packet is acknowledged at once (§5)


def _ack_size_bound(ranges: int) -> int:
    return ACK_FRAME_BOUND + ACK_RANGE_BOUND * min(ranges, MAX_ACK_RANGES)


class Connection:
    """A reliable, ordered, message-oriented connection to one peer."""

    def __init__(
        self,
        config: ConnectionConfig,
        role: Role,
        *,
        local_id: bytes,
        peer_address: Address,
        now: float,
        remote_id: bytes | None = None,
        reset_token: bytes | None = None,
        keys: tuple[bytes, bytes] | None = None,
        welcome_body: bytes = b"",
        random_bytes: Callable[[int], bytes] | None = None,
        server_fingerprint: str | None = None,
        client_key: StaticKey | None = None,
        peer_static_key: bytes | None = None,
        trace: TraceSink | None = None,
    ) -> None:
        """Use :meth:`connect` for a client; a server's connections come from a ``Listener``,
        which did the handshake: ``remote_id`` (the client's id), ``keys`` (send, receive),
        the WELCOME body it answers with and the client's authenticated ``peer_static_key``.
        ``trace`` receives the connection's qlog events (none without it).

        Raises :class:`LocalProtocolError` for a client without ``random_bytes`` (its
        handshake draws a key) or a server without ``remote_id``.
        """
        self.config = config
        self.role = role
        self.local_id = local_id
        self.remote_id = remote_id
        self.peer_address = peer_address
        self.on_change: Callable[[Connection], None] | None = None
        """Called after an API call that may have given the connection something to send."""
        self.counters = ConnectionCounters()
        self._trace = None if trace is None else ConnectionTrace(trace, role, now)
        self._handshake: ClientHandshake | None = None
        if role is Role.CLIENT:
            if random_bytes is None:
                raise LocalProtocolError("a client connection needs random_bytes")
            self._handshake = ClientHandshake(
                config, local_id, now, random_bytes, server_fingerprint, client_key
            )
        elif remote_id is None:
            raise LocalProtocolError("a server connection needs the client's remote_id")
        self.state = State.CONNECTING if role is Role.CLIENT else State.OPEN
        self.server_fingerprint: str | None = None
        """Client: the fingerprint of the key the server presented (None until RETRY)."""
        self.peer_static_key = peer_static_key
        """The peer's static public key, authenticated by the handshake: a server's
        connection holds the client's (None for a guest or insecure), a client's the
        server's once OPEN (None while connecting or insecure)."""
        self._reset_token = reset_token
        self._events: deque[Event] = deque()
        self._next_number = 0
        self._fragment_size = fragment_size(config.max_datagram_size, config.insecure)
        self._pmtu = PathMtu(config.max_datagram_size, config.max_path_datagram_size, now)
        self._payload_room = payload_room(config.max_datagram_size, config.insecure)
        self._rtt = RttEstimator(
            config.initial_rtt, config.min_rto, config.max_rto, config.max_ack_delay
        )
        self._congestion = CongestionController(
            config.max_datagram_size, config.initial_window_packets, config.initial_rtt
        )
        self._recovery = Recovery(self._rtt, self._congestion)
        self._send = SendBuffer(
            config.send_buffer_size, self._fragment_size, config.max_message_size, config.lanes
        )
        self._data = DataSender(
            self._send,
            self._recovery,
            self._congestion,
            Pacer(config.max_datagram_size, now),
            ThinStream(config),
            config.max_datagram_size,
            self.counters,
        )
        self._datagrams = Datagrams(
            config, self.counters, self._recovery, self._congestion, self._data.pacer
        )
        self._receiver = Receiver(
            config.receive_window,
            self._fragment_size,
            config.max_message_size,
            config.max_ack_delay,
            len(config.lanes),
        )
        self._closing = Closing()
        self._last_heard = now
        self._protection = PacketProtection(config.insecure, keys)
        self._welcome_body = welcome_body
        self._welcome_due = role is Role.SERVER
        self._probe_due = False
        self._ping_due = False
        # one handler per reaction of the arrivals table; each returns whether the packet
        # counts as heard (False: it was dropped after all)
        self._on_packet: dict[Reaction, Callable[[Any, Address, float], bool]] = {
            Reaction.RESEND_WELCOME: self._resend_welcome,
            Reaction.RESET: self._on_reset,
            Reaction.PROCESS: self._receive_session,
        }
        if self._handshake is not None:
            self._on_packet[Reaction.TAKE_RETRY] = partial(self._take_retry, self._handshake)
            self._on_packet[Reaction.COMPLETE_HANDSHAKE] = partial(
                self._complete_handshake, self._handshake
            )
        on_frame: dict[Reaction, Callable[[Any, float], None]] = {
            Reaction.DELIVER: self._deliver,
            Reaction.APPLY_ACK: self._apply_ack,
            Reaction.ACK_AT_ONCE: self._nothing_more,
            Reaction.PEER_CLOSED: self._peer_closed,
            Reaction.NOTE_FINAL_SEQ: self._note_final_seq,
            Reaction.PEER_ERROR: self._peer_error,
            Reaction.IGNORE: self._nothing_more,
            Reaction.DELIVER_DATAGRAM: self._datagrams.on_frame,
        }
        # the table's frame rows with their handlers, per state: one cheap lookup per frame
        self._on_frame = {
            state: {arrival: on_frame[ARRIVALS[state, arrival]] for arrival in FRAME_ARRIVALS}
            for state in SESSION_STATES
        }
        if role is Role.SERVER:
            self._events.append(Connected(local_id))
        if self._trace is not None:
            self._trace.started(local_id, remote_id, peer_address, self.state)

    @classmethod
    def connect(
        cls,
        peer_address: Address,
        now: float,
        random_bytes: Callable[[int], bytes],
        config: ConnectionConfig | None = None,
        *,
        server_fingerprint: str | None = None,
        client_key: StaticKey | None = None,
        trace: TraceSink | None = None,
    ) -> Connection:
        """A client connection that starts its handshake with the first ``datagrams_to_send``.

        ``random_bytes`` picks the connection id and the handshake's ephemeral key: pass
        ``os.urandom`` in production. ``server_fingerprint`` pins the server's key (see
        ``noise.fingerprint``); without it the key the server presents is trusted and
        readable afterwards as :attr:`server_fingerprint`, for the caller to pin.
        ``client_key`` is this client's identity, which the handshake (IK) proves to the
        server; without it the client connects as a guest (NK). ``trace`` receives the
        connection's qlog events.
        """
        return cls(
            config or ConnectionConfig(),
            Role.CLIENT,
            local_id=random_bytes(CONNECTION_ID_SIZE),
            peer_address=peer_address,
            now=now,
            random_bytes=random_bytes,
            server_fingerprint=server_fingerprint,
            client_key=client_key,
            trace=trace,
        )

    # ---------------------------------------------------------------- API calls

    def send(self, data: bytes, lane: int = 0) -> int:
        """Queue one message on ``lane`` (:mod:`.lanes`); returns its message id in that lane.

        Allowed while connecting and open. Raises :class:`ConnectionClosedError` after
        ``close`` or termination, :class:`LocalProtocolError` for a lane beyond
        ``config.lanes``, :class:`MessageTooLargeError`, or :class:`SendBufferFullError`
        (wait for ``send_capacity``, then retry).
        """
        if self.state not in (State.CONNECTING, State.OPEN):
            raise ConnectionClosedError(f"cannot send on a {self.state.value} connection")
        message_id = self._send.push(data, lane)
        self._changed()
        return message_id

    def send_datagram(self, data: bytes, lane: int = 0, latest_only: bool = False) -> None:
        """Queue one unreliable datagram (PROTOCOL.md §5 "Unreliable datagrams"): sent at most
        once, when the congestion window and pacing allow, never retransmitted. ``latest_only``
        numbers it on its ``lane`` so the peer drops it if a newer one of the lane came first.

        Allowed while connecting and open. Raises :class:`ConnectionClosedError` otherwise,
        :class:`DatagramTooLargeError` above :attr:`max_datagram_payload`, and
        :class:`LocalProtocolError` for a lane outside ``0..datagram_lanes − 1``.
        """
        if self.state not in (State.CONNECTING, State.OPEN):
            raise ConnectionClosedError(f"cannot send on a {self.state.value} connection")
        self._datagrams.push(data, lane, latest_only, self.max_datagram_payload)
        self._changed()

    @property
    def max_datagram_payload(self) -> int:
        """The largest datagram :meth:`send_datagram` takes now: what one packet of the path's
        current size carries (path MTU discovery may raise or lower it)."""
        return self._payload_room - DATAGRAM_FRAME_OVERHEAD

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    @property
    def send_capacity(self) -> int:
        """Bytes ``send`` accepts now on lane 0 without :class:`SendBufferFullError` (0 once
        closing)."""
        return self.send_capacity_on(0)

    def send_capacity_on(self, lane: int) -> int:
        """:attr:`send_capacity` on ``lane``: lanes after the first priority group leave the
        send buffer's last quarter to it (:mod:`.sendbuffer`)."""
        if self.state not in (State.CONNECTING, State.OPEN):
            return 0
        send = self._send
        return send.free_bytes_on(lane) if send.buffered_bytes else send.capacity

    def close(self) -> None:
        """Close gracefully: queued messages are delivered both ways, then the connection ends.

        Idempotent. The final event is ``ConnectionTerminated(CLOSED)``.
        """
        if self.state is State.CONNECTING:
            self._terminate(Input.CLOSE_CALLED, TerminationReason.CLOSED)
        elif self.state is State.OPEN:
            self._move(Input.CLOSE_CALLED)
            self._advance_close()
        self._changed()

    def abort(self, detail: str = "") -> None:
        """Drop everything, tell the peer once, and end now with ``ConnectionTerminated(ABORTED)``."""
        if self.state in _LIVE:
            self._closing.queue_error(ErrorCode.APPLICATION, self._send.next_seq, detail)
        if self.state is State.CONNECTING or self.state in _LIVE:
            self._terminate(Input.FAILED, TerminationReason.ABORTED, ErrorCode.APPLICATION, detail)
        self._changed()

    def refuse(self, detail: str, error_code: ErrorCode = ErrorCode.REFUSED) -> None:
        """Server side, before the application sees it: answer WELCOME, then CLOSE with
        ``error_code`` (REFUSED, or KEY_REQUIRED for a guest the server does not take)."""
        self._closing.queue_error(error_code, self._send.next_seq, detail)
        self._terminate(Input.FAILED, TerminationReason.ABORTED, error_code, detail)

    def next_event(self, *, datagrams: bool = True) -> Event | None:
        """The oldest event not yet taken, or None. Datagrams come after the other events
        (the final ``ConnectionTerminated`` waits for them); ``datagrams=False`` leaves them
        to :meth:`next_datagram`, for a shell that reads them on their own."""
        events = self._events
        if not events or (
            datagrams and type(events[0]) is ConnectionTerminated and self._datagrams.unread
        ):
            return self._datagrams.next_received() if datagrams else None
        event = events.popleft()
        if type(event) is MessageReceived:
            self._receiver.on_read(len(event.data))
            if self.state in _LIVE and self._receiver.schedule_window_update():
                self._changed()
        return event

    def next_datagram(self) -> DatagramReceived | None:
        """The oldest unread datagram, or None (what ``next_event`` would give after the rest)."""
        return self._datagrams.next_received()

    @property
    def peer_fingerprint(self) -> str | None:
        """The fingerprint of :attr:`peer_static_key` (None when there is none)."""
        key = self.peer_static_key
        return None if key is None else fingerprint(key)

    @property
    def is_closed(self) -> bool:
        """True once the connection has nothing left to do and can be forgotten."""
        return self.state is State.CLOSED

    def stats(self) -> ConnectionStats:
        return snapshot(
            self.state.value,
            self.counters,
            self._rtt,
            self._recovery,
            self._congestion,
            self._send,
            self._pmtu,
            duplicates=self._receiver.duplicates,
            thin=self._data.thin.active,
        )

    # --------------------------------------------------------- input: packets

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Process one datagram from the network. Never raises for anything the peer sent."""
        try:
            packet = decode_datagram(data)
        except FrameError:
            self.counters.dropped_invalid += 1
            return
        self.receive_packet(packet, len(data), addr, now)

    def receive_packet(self, packet: Packet, size: int, addr: Address, now: float) -> None:
        """Process an already decoded packet (the listener decodes once to route).

        Only a session packet may come from a new address, and only a sealed one that
        authenticates and is the newest yet moves the connection there (migration).
        What a packet does in each state is the table in :mod:`.arrivals`.
        """
        counters, trace = self.counters, self._trace
        if trace is not None:
            trace.arrival(now, size)
        arrival = packet_arrival(
            packet, self.role, self.local_id, self.remote_id, self._reset_token
        )
        if arrival is None or (addr != self.peer_address and type(packet) is not SealedPacket):
            counters.dropped_unexpected += 1
            return
        reaction = ARRIVALS[self.state, arrival]
        if reaction is Reaction.DROP:
            counters.dropped_unexpected += 1
            return
        if self._on_packet[reaction](packet, addr, now):
            if trace is not None and reaction is not Reaction.PROCESS:  # PROCESS traces frames
                trace.received(PACKET_TYPES[type(packet)], getattr(packet, "number", None))
            counters.datagrams_received += 1
            counters.bytes_received += size
            self._last_heard = now

    def _take_retry(
        self, handshake: ClientHandshake, packet: RetryPacket, addr: Address, now: float
    ) -> bool:
        untrusted = handshake.on_retry(packet)
        self.server_fingerprint = handshake.server_fingerprint
        if untrusted is not None:
            self._terminate(Input.FAILED, TerminationReason.UNTRUSTED, detail=untrusted)
        return True

    def _complete_handshake(
        self, handshake: ClientHandshake, packet: WelcomePacket, addr: Address, now: float
    ) -> bool:
        """False if the WELCOME does not authenticate or does not fit (dropped)."""
        result = handshake.on_welcome(packet, now)
        if isinstance(result, WelcomeRefused):
            if result is WelcomeRefused.INVALID:
                self.counters.dropped_invalid += 1
            else:
                self.counters.dropped_unexpected += 1
            return False
        self.remote_id, self._reset_token = result.server_id, result.reset_token
        self.peer_static_key = result.server_key
        if result.keys is not None:
            self._protection.install(result.keys)
        if result.rtt_sample is not None:
            self._rtt.update(result.rtt_sample, 0.0)
        self._receiver.on_packet(packet.number, now, ack_eliciting=False, urgent=False)
        self._handshake = None
        self._move(Input.HANDSHAKE_DONE)
        self._events.append(Connected(self.local_id))
        return True

    def _resend_welcome(self, packet: HelloPacket, addr: Address, now: float) -> bool:
        self._welcome_due = True  # our WELCOME was lost: the client asks again
        return True

    def _on_reset(self, packet: ResetPacket, addr: Address, now: float) -> bool:
        self._terminate(Input.RESET, TerminationReason.RESET)
        return True

    def _receive_session(
        self, packet: SessionPacket | SealedPacket, addr: Address, now: float
    ) -> bool:
        """Process a session packet; False if it was dropped (it then counts for nothing).

        Order (PROTOCOL.md §5): fresh number (cheap), then authentication, then decoding
        and plausibility; only a packet that passed them all is marked seen and may move the
        peer's address, and only one that broke no rule is recorded for acknowledgement.
        """
        counters, protection = self.counters, self._protection
        number = packet.number
        payload = protection.open(packet)
        if isinstance(payload, Refused):
            if payload is Refused.REPLAYED:
                counters.dropped_replayed += 1
            elif payload is Refused.UNAUTHENTICATED:
                counters.dropped_unauthenticated += 1
                if protection.integrity_exhausted:
                    self._fail(number, ErrorCode.PROTOCOL_VIOLATION, "too many forged packets")
            else:
                counters.dropped_unexpected += 1  # the other mode's packet
            return False
        try:
            frames = decode_frames(payload)
        except FrameError:
            counters.dropped_invalid += 1
            return False
        if not self._acceptable(frames):
            counters.dropped_unexpected += 1
            return False
        if self._trace is not None:
            self._trace.received(PACKET_TYPES[type(packet)], number, frames)
        if protection.mark(number) and addr != self.peer_address:
            self.peer_address = addr
            counters.migrations += 1
            if self._pmtu.restart(now):  # a new path: only the base is known to pass
                self._resize()
        receiver = self._receiver
        if receiver.is_duplicate(number, now):
            return True
        repeat = receiver.holds_all(frames)  # a thin stream's copy: no hurry to ACK
        try:
            for frame in frames:
                self._on_frame[self.state][frame_arrival(frame)](frame, now)
        except PeerProtocolError as error:
            self._fail(number, error.error_code, error.detail)
            return True
        eliciting = urgent = False
        for frame in frames:
            if type(frame) is not AckFrame:
                eliciting = True
                urgent = urgent or type(frame) in _URGENT
        receiver.on_packet(number, now, eliciting, urgent, repeat=repeat)
        self._advance_close()
        return True

    def _acceptable(self, frames: tuple[Frame, ...]) -> bool:
        """RFC 5961 in spirit: a packet whose ACK, DATA or graceful CLOSE cannot be genuine
        changes nothing, and neither does one the receive buffer cannot hold (it is not
        acknowledged either). A CLOSE below data already received is such a packet: a blind
        forgery, to drop, not a reason to tear the connection down."""
        for frame in frames:
            if type(frame) is AckFrame:
                if not self._recovery.is_plausible(frame) or frame.cumulative > self._send.sent_bound:
                    return False
            elif (
                type(frame) is CloseFrame
                and frame.error_code == ErrorCode.NO_ERROR
                and frame.final_seq < self._receiver.next_seq
            ):
                return False
        return self._receiver.admits(frames)

    # ---------------------------------------------------------- input: frames

    def _deliver(self, frame: DataFrame, now: float) -> None:
        self._closing.check_data(frame.seq)
        delivered = self._receiver.on_data(frame)
        if delivered:
            self.counters.messages_received += len(delivered)
            self._events.extend(delivered)

    def _apply_ack(self, frame: AckFrame, now: float) -> None:
        self._data.peer_window = max(self._data.peer_window, frame.window)
        self._send.acknowledge_below(frame.cumulative)
        acked, lost, acked_late = self._recovery.on_ack(frame, now, frame.delay_us / 1e6)
        pmtu = self._pmtu
        for packet in acked:
            pmtu.on_packet_acked(packet.size)
            for handler in packet.handlers:
                handler(Delivery.ACKED)
        for packet in acked_late:
            for handler in packet.handlers:
                handler(Delivery.ACKED_LATE)
        if pmtu.on_ack_ranges(frame.ranges, now):
            self._resize()
        self._on_lost(lost, now)

    def _resize(self) -> None:
        """Path MTU discovery changed the datagram size: new packets take it (fragments keep
        theirs, so what is queued fits either way); the pacing burst and the window's floor
        count in datagrams of it."""
        size = self._pmtu.size
        self._payload_room = payload_room(size, self.config.insecure)
        self._data.datagram_size = size
        self._congestion.mtu = size

    def _on_lost(self, lost: list[SentPacket], now: float, trigger: str | None = None) -> None:
        """``trigger`` names the qlog cause when it is known (a timer's)."""
        self.counters.packets_lost += len(lost)
        if self._trace is not None:
            self._trace.lost(lost, trigger)
        pmtu = self._pmtu
        for packet in lost:
            if pmtu.on_packet_lost(packet.size, now):
                self._resize()  # a black hole: the rest of the flight goes again at the base
            for handler in packet.handlers:
                handler(Delivery.LOST)

    def _nothing_more(self, frame: Frame, now: float) -> None:
        """PING (its packet's recording makes the ACK due at once), or a frame ignored."""

    def _peer_closed(self, frame: CloseFrame, now: float) -> None:
        self._note_final_seq(frame, now)
        self._closing.by_peer = True
        self._move(Input.PEER_CLOSED)

    def _note_final_seq(self, frame: CloseFrame, now: float) -> None:
        self._closing.on_peer_close(frame, self._receiver.next_seq)

    def _peer_error(self, frame: CloseFrame, now: float) -> None:
        self._terminate(Input.FAILED, TerminationReason.PEER_ERROR, frame.error_code, frame.reason)

    # ---------------------------------------------------------------- ending

    def _advance_close(self) -> None:
        """In CLOSING: queue our CLOSE once our data is all acknowledged; finish once the peer's
        CLOSE and all its data are in (our CLOSE's own acknowledgement is awaited while draining)."""
        if self.state is not State.CLOSING:
            return
        closing = self._closing
        if self._send.all_acknowledged:
            closing.queue_graceful(self._send.next_seq)
        if closing.is_complete(self._receiver.next_seq, self._receiver.mid_message):
            peer = closing.by_peer
            self._terminate(
                Input.CLOSE_DONE,
                TerminationReason.CLOSED_BY_PEER if peer else TerminationReason.CLOSED,
            )

    def _fail(self, number: int, error_code: int, detail: str) -> None:
        """Packet ``number`` broke the protocol: tell the peer once, then end. That packet is
        never acknowledged (PROTOCOL.md §5)."""
        self._receiver.refuse(number)
        self._closing.queue_error(error_code, self._send.next_seq, detail)
        self._terminate(Input.FAILED, TerminationReason.PROTOCOL_ERROR, error_code, detail)

    def _terminate(
        self, cause: Input, reason: TerminationReason, error_code: int = 0, detail: str = ""
    ) -> None:
        """Move the state machine; the first ending emits the one ConnectionTerminated."""
        ended = self.state in (State.DRAINING, State.CLOSED)
        self._move(cause)
        if cause is Input.FAILED:  # nothing will be retransmitted or awaited any more
            self._recovery.discard()
            self._closing.abandon()
            self._probe_due = False
        if not ended:
            self._events.append(
                ConnectionTerminated(reason, int(error_code), detail or reason.value)
            )

    def _move(self, cause: Input) -> None:
        """The one place the state changes (raises :class:`LocalProtocolError` if the table
        has no entry), so a trace sees every change."""
        old = self.state
        self.state = next_state(old, cause)
        if self._trace is not None:
            self._trace.state(old, self.state, cause)

    def _drain_end(self) -> float:
        """Draining lasts until our CLOSE is acknowledged (or the peer goes silent for the idle
        timeout), then a few RTOs past the last datagram heard, to re-acknowledge the peer's."""
        if not self._closing.acked:
            return self._last_heard + self.config.idle_timeout
        return self._last_heard + self.config.drain_period_rtos * self._rtt.rto()

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The next absolute time :meth:`handle_timer` must run, or None."""
        state = self.state
        if state is State.CLOSED:
            return None
        if self._handshake is not None:
            return self._handshake.get_timer()
        if state is State.DRAINING:
            deadline = self._drain_end()
        else:
            deadline = min(self._last_heard + self.config.idle_timeout, self._heartbeat_due())
        recovery = self._recovery
        for candidate in (
            self._receiver.ack_deadline,
            recovery.loss_time,
            recovery.probe_deadline(self._awaiting_ack),
            self._data.pacer.wake,
            self._data.thin.next_due() if state is not State.DRAINING else None,
            self._pmtu.get_timer() if self._needs_bigger_datagrams else None,
        ):
            if candidate is not None and candidate < deadline:
                deadline = candidate
        return deadline

    @property
    def _needs_bigger_datagrams(self) -> bool:
        """Path MTU discovery searches only while data waits to be sent (RFC 8899 §5.1.1 lets
        a sender wait for data): a bulk transfer gains from larger datagrams, a chat line or
        an idle connection never fills the base size and spends no probes."""
        return self.state in _LIVE and self._send.has_pending

    @property
    def _awaiting_ack(self) -> bool:
        """DATA or our graceful CLOSE awaits its ACK (the retransmission timer runs only then)."""
        return not self._send.all_acknowledged or self._closing.awaiting_ack

    def _heartbeat_due(self) -> float:
        """A PING goes out after ``heartbeat_interval`` of silence both ways.

        Counting what we hear as well as what we send means one side's PING (and the ACK it
        draws) keeps both quiet. The server waits longer than the client, so on any path
        shorter than a quarter interval only the client pings (it is also the side whose
        NAT binding needs the traffic): an idle connection costs one PING and one ACK per
        interval, not two of each.
        """
        interval = self.config.heartbeat_interval
        if self.role is Role.SERVER:
            interval *= SERVER_HEARTBEAT_FACTOR
        return max(self._last_heard, self._recovery.time_of_last_ack_eliciting) + interval

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``; harmless when nothing is."""
        state = self.state
        if state is State.CLOSED:
            return
        if self._trace is not None:
            self._trace.now = now
        if self._handshake is not None:
            if self._handshake.handle_timer(now):
                self._terminate(Input.TIMED_OUT, TerminationReason.HANDSHAKE_TIMEOUT)
            return
        if state is State.DRAINING:
            if now >= self._drain_end():
                self._move(Input.DRAINED)
                return
        elif now >= self._last_heard + self.config.idle_timeout:
            self._terminate(Input.TIMED_OUT, TerminationReason.IDLE_TIMEOUT)
            return
        recovery = self._recovery
        if recovery.loss_time is not None and now >= recovery.loss_time:
            self._on_lost(recovery.detect_losses(now), now, "time_threshold")
        probe = recovery.probe_deadline(self._awaiting_ack)
        if probe is not None and now >= probe:
            self._on_lost(recovery.on_probe_timeout(), now, "pto_expired")
            self._probe_due = True
        if state is not State.DRAINING and now >= self._heartbeat_due():
            self._ping_due = True
        self._pmtu.handle_timer(now)

    # ------------------------------------------------------------------ output

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything that may leave now (limited by congestion window and pacing)."""
        if self.state is State.CLOSED:
            return []
        out: list[tuple[bytes, Address]] = []
        trace = self._trace
        if trace is not None:
            trace.now = now
        handshake = self._handshake
        if handshake is not None:
            if handshake.hello_due:
                number = self._take_number()
                hello = handshake.build_hello(number, now)
                out.append((self._count_sent(hello), self.peer_address))
                if trace is not None:
                    trace.sent(PACKET_TYPES[HelloPacket], number, len(hello))
            return out
        if self._welcome_due:
            self._welcome_due = False
            out.append((self._build_welcome(now), self.peer_address))
        self._advance_close()
        self._data.pacer.wake = None
        while True:
            datagram = self._build_session(now)
            if datagram is None:
                break
            out.append((datagram, self.peer_address))
        probe_size = self._pmtu.probe_due(now) if self._needs_bigger_datagrams else None
        if probe_size is not None:
            out.append((self._build_pmtu_probe(probe_size, now), self.peer_address))
        self._data.thin.refresh(self._send, self._recovery)  # thin unless a backlog is left now
        if trace is not None:
            trace.update(now, self._rtt, self._congestion, self._recovery, self._protection.epochs)
        return out

    def _build_pmtu_probe(self, size: int, now: float) -> bytes:
        """A PING padded to ``size`` bytes (PROTOCOL.md §14): outside the congestion window,
        pacing and the recovery's flight (one datagram per RTO at most), so its loss is neither
        congestion nor lost data, and it never holds data back; acknowledged, it confirms the
        size."""
        number = self._take_number()
        frames: list[Frame] = []
        if self._receiver.ack_deadline is not None:
            frames.append(self._receiver.build_ack(now))
        frames.append(padded_ping(frames, number, size, self.config.insecure))
        datagram = self._protection.seal(self.remote_id or b"", number, encode_frames(frames))
        self._recovery.on_packet_sent(number, now, None)  # so the ACK of it is plausible
        self._pmtu.on_probe_sent(number, len(datagram), now, self._rtt.rto())
        if self._trace is not None:
            self._trace.sent(SESSION_PACKET_TYPE, number, len(datagram), frames)
        return self._count_sent(datagram)

    def _build_welcome(self, now: float) -> bytes:
        number = self._take_number()
        self._recovery.on_packet_sent(number, now, None)  # so an ACK of it is plausible
        welcome = WelcomePacket(self.remote_id or b"", number, self._welcome_body)
        datagram = encode_datagram(welcome)
        if self._trace is not None:
            self._trace.sent(PACKET_TYPES[WelcomePacket], number, len(datagram))
        return self._count_sent(datagram)

    def _take_number(self) -> int:
        number = self._next_number
        self._next_number += 1
        return number

    def _count_sent(self, datagram: bytes) -> bytes:
        self.counters.datagrams_sent += 1
        self.counters.bytes_sent += len(datagram)
        return datagram

    def _build_session(self, now: float) -> bytes | None:
        """One session packet, or None when nothing (more) should leave now."""
        room = self._payload_room
        frames: list[Frame] = []
        handlers: list[DeliveryHandler] = []
        live = self.state in _LIVE
        receiver = self._receiver
        ack_deadline = receiver.ack_deadline
        ack_owed = ack_deadline is not None
        if ack_owed:
            room -= _ack_size_bound(len(receiver.packets))
        if self._probe_due:
            probe_room = self._data.add_probe(frames, handlers, room, now)
            if probe_room is None:  # the owed ACK leaves alone first; the probe follows
                ack_deadline = now
            else:
                room = probe_room
                self._probe_due = False  # sending it restarts the RTO clock
                if not frames and not self._closing.probe():  # no fragment: our CLOSE, or
                    frames.append(PingFrame())  # a PING, is the probe
        elif live:  # datagrams first: DATA fills what they leave, they go after it
            datagrams = self._datagrams
            reserved = datagrams.reserve(room, self._payload_room, self._data.datagram_size, now)
            if datagrams.blocked:  # too large beside the owed ACK: it leaves alone first
                ack_deadline = now
            room = self._data.fill(frames, handlers, room - reserved, now) + reserved
            room = datagrams.place(frames, handlers, room)
        if self._ping_due and live and room >= PING_FRAME_SIZE:
            self._ping_due = False
            if not frames:
                frames.append(PingFrame())
                # a keep-alive also carries our window: the peer may be waiting for it
                ack_owed = ack_owed or len(receiver.packets) > 0
        close = self._closing.take(room)
        if close is not None:
            frames.append(close)
            handlers.append(self._closing.on_delivery)
        eliciting = bool(frames)
        if not eliciting and (ack_deadline is None or ack_deadline > now):
            return None
        if ack_owed:
            frames.insert(0, receiver.build_ack(now))
        number = self._take_number()
        datagram = self._protection.seal(self.remote_id or b"", number, encode_frames(frames))
        if eliciting and not self._closing.failed:
            packet = SentPacket(number, now, len(datagram), tuple(handlers))
            self._recovery.on_packet_sent(number, now, packet)
            self._data.pacer.budget -= len(datagram)
        else:
            self._recovery.on_packet_sent(number, now, None)
        if self._trace is not None:
            self._trace.sent(SESSION_PACKET_TYPE, number, len(datagram), frames)
        return self._count_sent(datagram)
