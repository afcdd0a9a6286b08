"""One reliable connection, sans-IO: datagrams and time in, datagrams, timers and events out.

The connection coordinates; the work is delegated: :mod:`.sendbuffer` (fragments
awaiting acknowledgement), :mod:`.receiving` (reassembly and ACK policy),
:mod:`.recovery` (loss detection, RTO), :mod:`.congestion` (window and pacing),
:mod:`.thin` (redundancy for thin streams),
:mod:`.codec` (bytes), :mod:`.state` (the transition table).

Inputs: :meth:`send`, :meth:`close`, :meth:`abort`, :meth:`receive_datagram`,
:meth:`handle_timer`. Outputs: :meth:`datagrams_to_send`, :meth:`get_timer`,
:meth:`next_event`. After every input, call ``datagrams_to_send`` and re-arm the
timer from ``get_timer``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from .codec import (
    DATA_FRAME_OVERHEAD,
    SEALED_OVERHEAD,
    SESSION_OVERHEAD,
    decode_datagram,
    decode_frames,
    encode_datagram,
    encode_frames,
    sealed_header,
)
from .config import ConnectionConfig
from .congestion import CongestionController, SentPacket
from .errors import ConnectionClosedError, FrameError, HandshakeError, PeerProtocolError
from .events import Connected, ConnectionTerminated, Event, MessageReceived, TerminationReason
from .frames import (
    AEAD_TAG_SIZE,
    CONNECTION_ID_SIZE,
    MAX_FRAMES,
    MIN_HELLO_SIZE,
    PROTOCOL_VERSION,
    RESET_TOKEN_SIZE,
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
from .noise import KEY_SIZE, Initiator, fingerprint, prologue
from .receiving import INITIAL_WINDOW_FRAGMENTS, Receiver
from .records import INTEGRITY_LIMIT, Opener, Sealer
from .recovery import Recovery
from .replay import ReplayWindow
from .rtt import RttEstimator
from .sendbuffer import SendBuffer
from .state import Input, State, next_state
from .stats import ConnectionStats
from .thin import Copy, ThinStream

__all__ = ["Address", "Connection"]

Address = tuple[str, int]

MAX_ERROR_REASON_BYTES = 128  # of the 256 a CLOSE may carry: room to spare
HELLO_RETRY_CAP_S = 0.5  # HELLOs back off no further: a lost WELCOME is only repeated when a
# HELLO asks again, so a lossy path must not cost a long handshake (2 x 1200 B/s at most)
SERVER_HEARTBEAT_FACTOR = 1.5  # the server leaves keep-alives to the client (see _heartbeat_due)
PACING_MIN_WAIT_S = 1e-4  # a pacing wake-up never rounds down to "now"
BUNDLE_MAX_FRAGMENTS = 8  # redundant fragments one thin-stream packet may repeat
DATA_FRAMES_PER_PACKET = MAX_FRAMES - 3  # leaves room for ACK, PING and CLOSE
ACK_FRAME_BOUND = 28  # an ACK frame's bytes besides its ranges (msgpack worst case)
ACK_RANGE_BOUND = 18  # bytes per ACK range, worst case
PING_FRAME_SIZE = 2
CLOSE_FRAME_BOUND = 32  # plus the reason's bytes


def _ack_size_bound(ranges: int) -> int:
    return ACK_FRAME_BOUND + ACK_RANGE_BOUND * ranges


class Connection:
    """A reliable, ordered, message-oriented connection to one peer."""

    def __init__(
        self,
        config: ConnectionConfig,
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
    ) -> None:
        """Use :meth:`connect` for a client; a server's connections come from a ``Listener``,
        which did the handshake: ``keys`` (send, receive) and the WELCOME it answers with."""
        self.config = config
        self.is_client = remote_id is None
        self.local_id = local_id
        self.remote_id = remote_id
        self.peer_address = peer_address
        self.state = State.CONNECTING if self.is_client else State.OPEN
        self.on_change: Callable[[Connection], None] | None = None
        """Called after an API call that may have given the connection something to send."""
        self._reset_token = reset_token
        self._events: deque[Event] = deque()
        self._next_number = 0
        overhead = SESSION_OVERHEAD if config.insecure else SEALED_OVERHEAD
        self._fragment_size = config.max_datagram_size - overhead - DATA_FRAME_OVERHEAD
        self._payload_room = config.max_datagram_size - overhead
        self._rtt = RttEstimator(
            config.initial_rtt, config.min_rto, config.max_rto, config.max_ack_delay
        )
        self._congestion = CongestionController(
            config.max_datagram_size, config.initial_window_packets, config.initial_rtt
        )
        self._recovery = Recovery(self._rtt, self._congestion)
        self._thin = ThinStream(config)
        self._send = SendBuffer(
            config.send_buffer_size, self._fragment_size, config.max_message_size
        )
        self._receiver = Receiver(
            config.receive_window,
            self._fragment_size,
            config.max_message_size,
            config.max_ack_delay,
        )
        self._peer_window = INITIAL_WINDOW_FRAGMENTS
        self._now = now  # the latest time any input brought; API calls have no clock of their own
        self._last_heard = now
        self._pacing_budget = float(config.max_datagram_size * 2)
        self._pacing_time = now
        self._pacing_wake: float | None = None
        # security: the server's key (client), the record keys, the replay window
        self._random_bytes = random_bytes
        self._pinned_fingerprint = server_fingerprint
        self.server_fingerprint: str | None = None
        """Client: the fingerprint of the key the server presented (None until RETRY)."""
        self._initiator: Initiator | None = None
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None
        if keys is not None:
            self._sealer, self._opener = Sealer(keys[0]), Opener(keys[1])
        self._welcome_body = welcome_body
        # encrypted only: in the clear, a forged number far ahead would slide it past the
        # genuine ones; there the receiver's record of numbers catches duplicates instead
        self._replay = None if config.insecure else ReplayWindow()
        # handshake (client)
        self._handshake_deadline = now + config.handshake_timeout
        self._hello_token = b""
        self._hello_due = self.is_client
        self._hello_deadline = math.inf
        self._hello_attempts = 0  # since the last RETRY: drives the backoff
        self._hellos_sent = 0
        self._retries_received = 0
        self._hello_sent_at = now
        self._welcome_due = not self.is_client
        if not self.is_client:
            self._events.append(Connected(local_id))
        # probes, heartbeats, close
        self._probe_due = False
        self._ping_due = False
        self._closed_by_peer = False
        self._close_frame: CloseFrame | None = None  # graceful: resent until acked; error: once
        self._close_sent = False
        self._close_acked = False
        self._close_numbers: list[
            int
        ] = []  # packets that carried our CLOSE (even if declared lost)
        self._peer_final_seq: int | None = None
        # statistics
        self._datagrams_sent = self._datagrams_received = 0
        self._bytes_sent = self._bytes_received = 0
        self._messages_received = 0
        self._packets_lost = 0
        self._retransmitted_fragments = self._retransmitted_bytes = 0
        self._dropped_invalid = self._dropped_unexpected = 0
        self._dropped_unauthenticated = self._dropped_replayed = self._migrations = 0

    @classmethod
    def connect(
        cls,
        peer_address: Address,
        now: float,
        random_bytes: Callable[[int], bytes],
        config: ConnectionConfig | None = None,
        *,
        server_fingerprint: str | None = None,
    ) -> Connection:
        """A client connection that starts its handshake with the first ``datagrams_to_send``.

        ``random_bytes`` picks the connection id and the handshake's ephemeral key: pass
        ``os.urandom`` in production. ``server_fingerprint`` pins the server's key (see
        ``noise.fingerprint``); without it the key the server presents is trusted and
        readable afterwards as :attr:`server_fingerprint`, for the caller to pin.
        """
        return cls(
            config or ConnectionConfig(),
            local_id=random_bytes(CONNECTION_ID_SIZE),
            peer_address=peer_address,
            now=now,
            random_bytes=random_bytes,
            server_fingerprint=server_fingerprint,
        )

    # ---------------------------------------------------------------- API calls

    def send(self, data: bytes) -> int:
        """Queue one message; returns its message id.

        Allowed while connecting and open. Raises :class:`ConnectionClosedError` after
        ``close`` or termination, :class:`MessageTooLargeError`, or
        :class:`SendBufferFullError` (wait for ``send_capacity``, then retry).
        """
        if self.state not in (State.CONNECTING, State.OPEN):
            raise ConnectionClosedError(f"cannot send on a {self.state.value} connection")
        message_id = self._send.push(data)
        self._changed()
        return message_id

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    @property
    def send_capacity(self) -> int:
        """Bytes ``send`` accepts now without :class:`SendBufferFullError` (0 once closing)."""
        if self.state not in (State.CONNECTING, State.OPEN):
            return 0
        return self._send.free_bytes if self._send.buffered_bytes else self._send.capacity

    def close(self) -> None:
        """Close gracefully: queued messages are delivered both ways, then the connection ends.

        Idempotent. The final event is ``ConnectionTerminated(CLOSED)``.
        """
        if self.state is State.CONNECTING:
            self._terminate(Input.CLOSE_CALLED, TerminationReason.CLOSED)
        elif self.state is State.OPEN:
            self.state = next_state(self.state, Input.CLOSE_CALLED)
            self._advance_close()
        self._changed()

    def abort(self, detail: str = "") -> None:
        """Drop everything, tell the peer once, and end now with ``ConnectionTerminated(ABORTED)``."""
        if self.state in (State.OPEN, State.CLOSING):
            self._queue_error_close(ErrorCode.APPLICATION, detail)
        if self.state in (State.CONNECTING, State.OPEN, State.CLOSING):
            self._terminate(Input.FAILED, TerminationReason.ABORTED, ErrorCode.APPLICATION, detail)
        self._changed()

    def refuse(self, detail: str) -> None:
        """Server side, before the application sees it: answer WELCOME, then CLOSE(REFUSED)."""
        self._queue_error_close(ErrorCode.REFUSED, detail)
        self._terminate(Input.FAILED, TerminationReason.ABORTED, ErrorCode.REFUSED, detail)

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        if not self._events:
            return None
        event = self._events.popleft()
        if type(event) is MessageReceived:
            receiver = self._receiver
            receiver.unread_bytes -= len(event.data)
            if receiver.window_update_due():
                receiver.ack_deadline = -math.inf  # due now
                self._changed()
        return event

    @property
    def is_closed(self) -> bool:
        """True once the connection has nothing left to do and can be forgotten."""
        return self.state is State.CLOSED

    def stats(self) -> ConnectionStats:
        rtt, congestion = self._rtt, self._congestion
        return ConnectionStats(
            state=self.state.value,
            datagrams_sent=self._datagrams_sent,
            datagrams_received=self._datagrams_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            messages_sent=self._send.next_message_id,
            messages_received=self._messages_received,
            packets_lost=self._packets_lost,
            retransmitted_fragments=self._retransmitted_fragments,
            retransmitted_bytes=self._retransmitted_bytes,
            duplicates_received=self._receiver.duplicates,
            dropped_invalid=self._dropped_invalid,
            dropped_unexpected=self._dropped_unexpected,
            dropped_unauthenticated=self._dropped_unauthenticated,
            dropped_replayed=self._dropped_replayed,
            migrations=self._migrations,
            smoothed_rtt=rtt.smoothed,
            rtt_variance=rtt.variance,
            min_rtt=rtt.min_rtt,
            rto=rtt.rto(self._recovery.backoff),
            congestion_window=congestion.congestion_window,
            pacing_rate=congestion.pacing_rate,
            bytes_in_flight=self._recovery.bytes_in_flight,
            send_buffered_bytes=self._send.buffered_bytes,
            loss_rate=self._recovery.loss.rate,
            burst_loss_rate=self._recovery.loss.burst_rate,
            thin_stream=self._thin.active,
        )

    # ------------------------------------------------------------------- input

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Process one datagram from the network. Never raises for anything the peer sent."""
        try:
            packet = decode_datagram(data)
        except FrameError:
            self._dropped_invalid += 1
            return
        self.receive_packet(packet, len(data), addr, now)

    def receive_packet(self, packet: Packet, size: int, addr: Address, now: float) -> None:
        """Process an already decoded packet (the listener decodes once to route).

        Only a session packet may come from a new address, and only a sealed one that
        authenticates and is the newest yet moves the connection there (migration).
        """
        if self.state is State.CLOSED or (
            addr != self.peer_address and type(packet) is not SealedPacket
        ):
            self._dropped_unexpected += 1
            return
        self._now = now
        if type(packet) is SealedPacket or type(packet) is SessionPacket:
            if not self._receive_session(packet, addr, now):
                return
        elif type(packet) is RetryPacket and self._is_for_handshake(packet.client_id):
            self._receive_retry(packet)
        elif type(packet) is WelcomePacket and self._is_for_handshake(packet.client_id):
            if not self._receive_welcome(packet, now):
                return
        elif (
            type(packet) is ResetPacket
            and self.is_client
            and packet.connection_id == self.remote_id
            and packet.reset_token == self._reset_token
        ):
            self._terminate(Input.RESET, TerminationReason.RESET)
        elif (
            type(packet) is HelloPacket
            and not self.is_client
            and packet.client_id == self.remote_id
        ):
            self._welcome_due = True  # our WELCOME was lost: the client asks again
        else:
            self._dropped_unexpected += 1
            return
        self._datagrams_received += 1
        self._bytes_received += size
        self._last_heard = now

    def _is_for_handshake(self, client_id: bytes) -> bool:
        return self.state is State.CONNECTING and client_id == self.local_id

    def _receive_retry(self, packet: RetryPacket) -> None:
        """Take the token and, unless insecure, the server's key: checked against the pin,
        it starts the Noise handshake that the next HELLO carries."""
        if not self.config.insecure and self._initiator is None:
            if not packet.server_key:
                self._untrusted(
                    "the server does not encrypt (it runs --insecure); "
                    "connect with --insecure to accept that"
                )
                return
            presented = self.server_fingerprint = fingerprint(packet.server_key)
            pinned = self._pinned_fingerprint
            if pinned is not None and presented != pinned:
                self._untrusted(f"the server's key {presented} is not the pinned {pinned}")
                return
            assert self._random_bytes is not None  # a client connection always has it
            self._initiator = Initiator(
                packet.server_key,
                prologue(PROTOCOL_VERSION, self.local_id),
                self._random_bytes(KEY_SIZE),
            )
        elif self.config.insecure and packet.server_key:
            self._untrusted("the server requires encryption; connect without --insecure")
            return
        self._hello_token = packet.token
        self._hello_attempts = 0
        self._retries_received += 1
        self._hello_due = True

    def _untrusted(self, detail: str) -> None:
        self._terminate(Input.FAILED, TerminationReason.UNTRUSTED, detail=detail)

    def _receive_welcome(self, packet: WelcomePacket, now: float) -> bool:
        """Complete the handshake; False if the WELCOME does not authenticate (dropped)."""
        body = packet.body
        if self._initiator is not None:
            try:
                body, send_key, receive_key = self._initiator.read_message2(body)
            except HandshakeError:
                self._dropped_invalid += 1
                return False
            self._sealer, self._opener = Sealer(send_key), Opener(receive_key)
            self._initiator = None
        elif not self.config.insecure:
            self._dropped_unexpected += 1  # a WELCOME before any RETRY: not our handshake
            return False
        if len(body) != CONNECTION_ID_SIZE + RESET_TOKEN_SIZE:
            self._dropped_invalid += 1
            return False
        self.remote_id = body[:CONNECTION_ID_SIZE]
        self._reset_token = body[CONNECTION_ID_SIZE:]
        if self._hellos_sent == 2 and self._retries_received == 1:
            # Karn: only a handshake without any repetition gives an unambiguous sample
            self._rtt.update(now - self._hello_sent_at, 0.0)
        self._receiver.on_packet(packet.number, now, ack_eliciting=False, urgent=False)
        self.state = next_state(self.state, Input.HANDSHAKE_DONE)
        self._events.append(Connected(self.local_id))
        return True

    def _receive_session(
        self, packet: SessionPacket | SealedPacket, addr: Address, now: float
    ) -> bool:
        """Process a session packet; False if it was dropped (it then counts for nothing).

        Order: fresh number (cheap), then authentication, then decoding and plausibility;
        only a packet that passed them all is marked seen and may move the peer's address.
        """
        number = packet.number
        if self.state is State.CONNECTING or packet.connection_id != self.local_id:
            self._dropped_unexpected += 1  # early: sent before our WELCOME; it will come again
            return False
        replay = self._replay
        if replay is not None and not replay.is_fresh(number):
            self._dropped_replayed += 1
            return False
        opener = self._opener
        if type(packet) is SealedPacket and opener is not None:
            payload = opener.open(number, packet.ciphertext, packet.header)
            if payload is None:
                self._dropped_unauthenticated += 1
                if opener.failures >= INTEGRITY_LIMIT:
                    self._fail(ErrorCode.PROTOCOL_VIOLATION, "too many forged packets")
                return False
        elif type(packet) is SessionPacket and opener is None:
            payload = packet.payload
        else:
            self._dropped_unexpected += 1  # the other mode's packet
            return False
        try:
            frames = decode_frames(payload)
        except FrameError:
            self._dropped_invalid += 1
            return False
        if not self._acceptable(frames):
            self._dropped_unexpected += 1
            return False
        if replay is not None and replay.mark(number) and addr != self.peer_address:
            self.peer_address = addr
            self._migrations += 1
        eliciting = urgent = False
        for frame in frames:
            if type(frame) is not AckFrame:
                eliciting = True
                urgent = urgent or type(frame) is not DataFrame
        repeat = self._receiver.holds_all(frames)  # a thin stream's copy: no hurry to ACK
        if not self._receiver.on_packet(packet.number, now, eliciting, urgent, repeat=repeat):
            return True
        try:
            for frame in frames:
                if self.state is State.DRAINING:  # after a CLOSE, only ACKs still matter
                    if type(frame) is AckFrame:
                        self._receive_ack(frame, now)
                else:
                    self._receive_frame(frame, now)
        except PeerProtocolError as error:
            self._fail(error.error_code, error.detail)
            return True
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

    def _receive_frame(self, frame: Frame, now: float) -> None:
        if type(frame) is DataFrame:
            if self._peer_final_seq is not None and frame.seq >= self._peer_final_seq:
                raise PeerProtocolError(ErrorCode.PROTOCOL_VIOLATION, "DATA after CLOSE")
            for message_id, data in self._receiver.on_data(frame):
                self._messages_received += 1
                self._events.append(MessageReceived(message_id, data))
        elif type(frame) is AckFrame:
            self._receive_ack(frame, now)
        elif type(frame) is CloseFrame:
            self._receive_close(frame)

    def _receive_ack(self, frame: AckFrame, now: float) -> None:
        self._peer_window = max(self._peer_window, frame.window)
        send = self._send
        send.acknowledge_below(frame.cumulative)
        result = self._recovery.on_ack(frame, now, frame.delay_us / 1e6)
        for packet in result.acked:
            for seq in packet.seqs:
                send.acknowledge(seq)
        if self._close_numbers and not self._close_acked:  # also a CLOSE wrongly deemed lost
            self._close_acked = any(
                first <= number <= last
                for number in self._close_numbers
                for first, last in frame.ranges
            )
        self._on_lost(result.lost)

    def _on_lost(self, lost: list[SentPacket]) -> None:
        self._packets_lost += len(lost)
        for packet in lost:
            for seq in packet.seqs:
                self._send.mark_lost(seq)
            if packet.carries_close and not self._close_acked:
                self._close_sent = False  # send it again

    def _receive_close(self, frame: CloseFrame) -> None:
        if frame.error_code != ErrorCode.NO_ERROR:
            self._terminate(
                Input.FAILED, TerminationReason.PEER_ERROR, frame.error_code, frame.reason
            )
            return
        if frame.final_seq < self._receiver.next_seq or (
            self._peer_final_seq is not None and frame.final_seq != self._peer_final_seq
        ):
            raise PeerProtocolError(ErrorCode.PROTOCOL_VIOLATION, "CLOSE contradicts the data")
        self._peer_final_seq = frame.final_seq
        if self.state is State.OPEN:
            self._closed_by_peer = True
            self.state = next_state(self.state, Input.PEER_CLOSED)

    def _advance_close(self) -> None:
        """In CLOSING: queue our CLOSE once our data is all acknowledged; finish once the peer's
        CLOSE and all its data are in (our CLOSE's own acknowledgement is awaited while draining)."""
        if self.state is not State.CLOSING:
            return
        if self._close_frame is None and self._send.all_acknowledged:
            self._close_frame = CloseFrame(ErrorCode.NO_ERROR, self._send.next_seq)
        if (
            self._close_frame is not None
            and self._peer_final_seq is not None
            and self._receiver.next_seq >= self._peer_final_seq
            and not self._receiver.mid_message
        ):
            reason = (
                TerminationReason.CLOSED_BY_PEER
                if self._closed_by_peer
                else TerminationReason.CLOSED
            )
            self._terminate(Input.CLOSE_DONE, reason)

    def _fail(self, error_code: int, detail: str) -> None:
        """We caught the peer breaking the protocol: tell it once, then end."""
        self._receiver.ack_deadline = None  # the offending packet is not acknowledged
        self._queue_error_close(error_code, detail)
        self._terminate(Input.FAILED, TerminationReason.PROTOCOL_ERROR, error_code, detail)

    def _queue_error_close(self, error_code: int, detail: str) -> None:
        """An error CLOSE goes out once, unacknowledged."""
        reason = detail.encode(errors="replace")[:MAX_ERROR_REASON_BYTES].decode(errors="ignore")
        self._close_frame = CloseFrame(error_code, self._send.next_seq, reason)
        self._close_sent = False

    def _terminate(
        self, cause: Input, reason: TerminationReason, error_code: int = 0, detail: str = ""
    ) -> None:
        """Move the state machine; the first ending emits the one ConnectionTerminated."""
        ended = self.state in (State.DRAINING, State.CLOSED)
        self.state = next_state(self.state, cause)
        if cause is Input.FAILED:  # nothing will be retransmitted or awaited any more
            self._recovery.discard()
            self._close_acked = True
        if not ended:
            self._events.append(
                ConnectionTerminated(reason, int(error_code), detail or reason.value)
            )

    def _drain_end(self) -> float:
        """Draining lasts until our CLOSE is acknowledged (or the peer goes silent for the idle
        timeout), then a few RTOs past the last datagram heard, to re-acknowledge the peer's."""
        if not self._close_acked:
            return self._last_heard + self.config.idle_timeout
        return self._last_heard + self.config.drain_period_rtos * self._rtt.rto()

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The next absolute time :meth:`handle_timer` must run, or None."""
        state = self.state
        if state is State.CLOSED:
            return None
        if state is State.CONNECTING:
            return min(self._handshake_deadline, self._hello_deadline)
        if state is State.DRAINING:
            deadline = self._drain_end()
        else:
            deadline = min(
                self._last_heard + self.config.idle_timeout,
                self._heartbeat_due(),
            )
        recovery = self._recovery
        for candidate in (
            self._receiver.ack_deadline,
            recovery.loss_time,
            self._probe_deadline(),
            self._pacing_wake,
            self._thin.next_due(),
        ):
            if candidate is not None and candidate < deadline:
                deadline = candidate
        return deadline

    def _probe_deadline(self) -> float | None:
        """The RTO runs only while DATA or our CLOSE awaits its ACK. Copies whose DATA another
        copy delivered, and heartbeats, are left to the loss thresholds: probing for them would
        cost a thin stream a PING and an ACK per message and tell it nothing it needs."""
        if self._send.all_acknowledged and (self._close_acked or not self._close_sent):
            return None
        return self._recovery.probe_deadline()

    def _heartbeat_due(self) -> float:
        """A PING goes out after ``heartbeat_interval`` of silence both ways.

        Counting what we hear as well as what we send means one side's PING (and the ACK it
        draws) keeps both quiet. The server waits longer than the client, so on any path
        shorter than a quarter interval only the client pings (it is also the side whose
        NAT binding needs the traffic): an idle connection costs one PING and one ACK per
        interval, not two of each.
        """
        interval = self.config.heartbeat_interval
        if not self.is_client:
            interval *= SERVER_HEARTBEAT_FACTOR
        return max(self._last_heard, self._recovery.time_of_last_ack_eliciting) + interval

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``; harmless when nothing is."""
        state = self.state
        if state is State.CLOSED:
            return
        self._now = now
        if state is State.CONNECTING:
            if now >= self._handshake_deadline:
                self._terminate(Input.TIMED_OUT, TerminationReason.HANDSHAKE_TIMEOUT)
            elif now >= self._hello_deadline:
                self._hello_due = True
            return
        if state is State.DRAINING:
            if now >= self._drain_end():
                self.state = next_state(state, Input.DRAINED)
                return
        elif now >= self._last_heard + self.config.idle_timeout:
            self._terminate(Input.TIMED_OUT, TerminationReason.IDLE_TIMEOUT)
            return
        recovery = self._recovery
        if recovery.loss_time is not None and now >= recovery.loss_time:
            self._on_lost(recovery.detect_losses(now))
        probe = self._probe_deadline()
        if probe is not None and now >= probe:
            self._on_lost(recovery.on_probe_timeout())
            self._probe_due = True
        if state is not State.DRAINING and now >= self._heartbeat_due():
            self._ping_due = True

    # ------------------------------------------------------------------ output

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything that may leave now (limited by congestion window and pacing)."""
        state = self.state
        if state is State.CLOSED:
            return []
        self._now = now
        out: list[tuple[bytes, Address]] = []
        if state is State.CONNECTING:
            if self._hello_due:
                out.append((self._build_hello(now), self.peer_address))
            return out
        if self._welcome_due:
            self._welcome_due = False
            out.append((self._build_welcome(now), self.peer_address))
        self._advance_close()
        self._pacing_wake = None
        for copy in self._thin.take_due(now):
            datagram = self._build_copy(copy, now)
            if datagram is not None:
                out.append((datagram, self.peer_address))
        while True:
            datagram = self._build_session(now)
            if datagram is None:
                break
            out.append((datagram, self.peer_address))
        self._thin.refresh(self._send, self._recovery)  # thin unless a backlog is left now
        return out

    def _build_hello(self, now: float) -> bytes:
        self._hello_due = False
        self._hello_sent_at = now
        self._hellos_sent += 1
        self._hello_attempts += 1
        timeout = min(
            2 * self.config.initial_rtt * 2 ** (self._hello_attempts - 1), HELLO_RETRY_CAP_S
        )
        self._hello_deadline = now + timeout
        number = self._take_number()
        handshake = self._initiator.message1 if self._initiator is not None else b""
        padding = 0
        while True:  # pad to exactly MIN_HELLO_SIZE; the padding's length header grows once
            hello = HelloPacket(
                self.local_id, number, PROTOCOL_VERSION, self._hello_token, handshake, padding
            )
            datagram = encode_datagram(hello)
            if len(datagram) == MIN_HELLO_SIZE or padding == 0 < len(datagram) - MIN_HELLO_SIZE:
                return self._count_sent(datagram)
            padding = max(padding + MIN_HELLO_SIZE - len(datagram), 0)

    def _build_welcome(self, now: float) -> bytes:
        number = self._take_number()
        self._recovery.on_packet_sent(number, now, None)  # so an ACK of it is plausible
        welcome = WelcomePacket(self.remote_id or b"", number, self._welcome_body)
        return self._count_sent(encode_datagram(welcome))

    def _take_number(self) -> int:
        number = self._next_number
        self._next_number += 1
        return number

    def _count_sent(self, datagram: bytes) -> bytes:
        self._datagrams_sent += 1
        self._bytes_sent += len(datagram)
        return datagram

    def _refill_pacing(self, now: float) -> None:
        congestion = self._congestion
        elapsed = now - self._pacing_time
        self._pacing_time = now
        self._pacing_budget = min(
            self._pacing_budget + elapsed * congestion.pacing_rate, congestion.pacing_burst()
        )

    def _build_session(self, now: float) -> bytes | None:
        """One session packet, or None when nothing (more) should leave now."""
        room = self._payload_room
        frames: list[Frame] = []
        seqs: list[int] = []
        draining = self.state is State.DRAINING
        ack_deadline = self._receiver.ack_deadline
        ack_owed = ack_deadline is not None
        if ack_owed:
            room -= _ack_size_bound(min(len(self._receiver.packets), 32))
        if self._probe_due:
            probe_room = self._add_probe(frames, seqs, room)
            if probe_room is None:  # the owed ACK leaves alone first; the probe follows
                ack_deadline = now
            else:
                room = probe_room
                self._probe_due = False  # sending it restarts the RTO clock
        elif not draining:
            room = self._add_data(frames, seqs, room, now)
        if self._ping_due and not draining and room >= PING_FRAME_SIZE:
            self._ping_due = False
            if not frames:
                frames.append(PingFrame())
                # a keep-alive also carries our window: the peer may be waiting for it
                ack_owed = ack_owed or len(self._receiver.packets) > 0
        close = self._close_frame
        carries_close = False
        if (
            close is not None
            and not self._close_sent
            and room >= CLOSE_FRAME_BOUND + len(close.reason) * 4
        ):
            frames.append(close)
            self._close_sent = carries_close = True
        eliciting = bool(frames)
        if not eliciting and (ack_deadline is None or ack_deadline > now):
            return None
        if ack_owed:
            frames.insert(0, self._receiver.build_ack(now))
        number = self._take_number()
        datagram = self._seal(number, encode_frames(frames))
        if eliciting and not (carries_close and close is not None and close.error_code):
            packet = SentPacket(number, now, len(datagram), tuple(seqs), carries_close)
            if carries_close:
                self._close_numbers.append(number)
            self._recovery.on_packet_sent(number, now, packet)
            self._pacing_budget -= len(datagram)
            self._thin.on_data_sent(packet.seqs, ack_owed, now, self._recovery.loss)
        else:
            self._recovery.on_packet_sent(number, now, None)
        return self._count_sent(datagram)

    def _build_copy(self, copy: Copy, now: float) -> bytes | None:
        """A thin stream's copy: those of its DATA fragments still unacknowledged, in a packet of
        its own (a number of its own, so never a nonce twice), or None when all are acknowledged."""
        unacked = self._send.unacked
        fragments = [unacked[seq] for seq in copy.seqs if seq in unacked]
        if not fragments or self.state is State.DRAINING:
            return None
        frames: list[Frame] = []
        if copy.with_ack and self._receiver.packets.largest is not None:
            frames.append(self._receiver.build_ack(now))
        seqs: list[int] = []
        for fragment in fragments:
            self._add_fragment(frames, seqs, fragment, retransmission=True)
        number = self._take_number()
        datagram = self._seal(number, encode_frames(frames))
        self._recovery.on_packet_sent(
            number, now, SentPacket(number, now, len(datagram), tuple(seqs))
        )
        return self._count_sent(datagram)

    def _seal(self, number: int, payload: bytes) -> bytes:
        remote_id = self.remote_id or b""
        if self._sealer is None:
            return encode_datagram(SessionPacket(remote_id, number, payload))
        header = sealed_header(remote_id, number, len(payload) + AEAD_TAG_SIZE)
        return header + self._sealer.seal(number, payload, header)

    def _add_probe(self, frames: list[Frame], seqs: list[int], room: int) -> int | None:
        """A timeout probe repeats the oldest unacknowledged thing: a fragment, else our CLOSE.

        Returns the room left, or None when the fragment does not fit beside an owed ACK.
        """
        send = self._send
        fragment = send.next_retransmission() or send.oldest_in_flight()
        if fragment is not None:
            if len(fragment.payload) + DATA_FRAME_OVERHEAD > room:
                return None
            if fragment is send.next_retransmission():
                send.pop_retransmission()
            self._add_fragment(frames, seqs, fragment, retransmission=True)
            return room - len(fragment.payload) - DATA_FRAME_OVERHEAD
        if self._close_frame is not None and not self._close_acked:
            self._close_sent = False  # the CLOSE block below repeats it
        else:
            frames.append(PingFrame())
        return room

    def _add_data(self, frames: list[Frame], seqs: list[int], room: int, now: float) -> int:
        """Fill ``frames`` with retransmissions, then new fragments, then redundant bundling."""
        send = self._send
        congestion = self._congestion
        mtu = self.config.max_datagram_size
        if self._recovery.bytes_in_flight + mtu > congestion.congestion_window:
            return room
        self._refill_pacing(now)
        if self._pacing_budget < mtu:
            if send.has_pending or send.next_retransmission() is not None:
                wait = (mtu - self._pacing_budget) / congestion.pacing_rate
                self._pacing_wake = now + max(wait, PACING_MIN_WAIT_S)
            return room
        while len(frames) < DATA_FRAMES_PER_PACKET:
            fragment = send.next_retransmission()
            if fragment is not None:
                if len(fragment.payload) + DATA_FRAME_OVERHEAD > room:
                    return room
                send.pop_retransmission()
                self._add_fragment(frames, seqs, fragment, retransmission=True)
                room -= len(fragment.payload) + DATA_FRAME_OVERHEAD
                continue
            fragment = send.next_new()
            if fragment is None or fragment.seq >= self._peer_window:
                break
            if len(fragment.payload) + DATA_FRAME_OVERHEAD > room:
                return room
            send.pop_new()
            self._add_fragment(frames, seqs, fragment, retransmission=False)
            room -= len(fragment.payload) + DATA_FRAME_OVERHEAD
        if not send.has_pending:
            if frames:
                # while thin, copies carry the stream and only small fragments ride along
                budget = min(room, self.config.thin_bundle_bytes) if self._thin.active else room
                room -= budget - self._bundle(frames, seqs, budget)
            congestion.on_app_limited(self._recovery.bytes_in_flight)
        return room

    def _bundle(self, frames: list[Frame], seqs: list[int], room: int) -> int:
        """Application-limited: repeat recent unacknowledged fragments in ``room`` of this packet.

        With a message every few tens of milliseconds, a lost datagram's content then
        arrives with the next one instead of a loss-detection delay later (redundant
        data bundling, as in thin-stream TCP). Costs bandwidth only where there is room.
        """
        carried = set(seqs)
        bundled = 0
        for fragment in reversed(self._send.unacked.values()):
            if bundled == BUNDLE_MAX_FRAGMENTS or len(frames) >= DATA_FRAMES_PER_PACKET:
                break
            if fragment.seq in carried:
                continue
            if len(fragment.payload) + DATA_FRAME_OVERHEAD > room:
                break
            self._add_fragment(frames, seqs, fragment, retransmission=True)
            room -= len(fragment.payload) + DATA_FRAME_OVERHEAD
            bundled += 1
        return room

    def _add_fragment(
        self, frames: list[Frame], seqs: list[int], fragment: DataFrame, *, retransmission: bool
    ) -> None:
        frames.append(fragment)
        seqs.append(fragment.seq)
        if retransmission:
            self._retransmitted_fragments += 1
            self._retransmitted_bytes += len(fragment.payload)
