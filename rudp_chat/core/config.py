"""The one place where the protocol's tunables live, each with its unit and its reason."""

from __future__ import annotations

from dataclasses import dataclass

from .frames import MAX_DATAGRAM_LANES, MAX_LANES
from .lanes import LaneConfig
from .receiving import INITIAL_WINDOW_FRAGMENTS

__all__ = ["ConnectionConfig", "ListenerConfig"]

KIB = 1024
MIB = 1024 * KIB
DEFAULT_LANES = 4
MAX_THIN_COPIES = 8  # beyond this a thin stream would cost more than a bulk one per message


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Tunables of one connection. Times are seconds, sizes bytes.

    Raises ``ValueError`` from ``__post_init__`` when the values cannot work together.
    """

    max_datagram_size: int = 1200
    """Largest datagram we send, CRC included: 1200 fits every IPv6 path without fragmentation."""

    max_path_datagram_size: int = 1472
    """Largest datagram path MTU discovery (PROTOCOL.md §14) probes for: 1,472 is an
    Ethernet MTU's UDP payload over IPv4; loopback and jumbo-frame paths carry more (8,972 at
    MTU 9,000). At or below ``max_datagram_size``, discovery is off and datagrams keep that
    size."""

    max_message_size: int = 1 * MIB
    """Largest message ``send`` accepts."""

    send_buffer_size: int = 4 * MIB
    """Bytes of unacknowledged messages held for retransmission; ``send`` blocks past it."""

    receive_window: int = 4 * MIB
    """Bytes of out-of-order and unread data the receiver buffers (advertised window)."""

    heartbeat_interval: float = 1.0
    """A PING goes out after this long without hearing from the peer or sending it anything
    it must acknowledge."""

    idle_timeout: float = 10.0
    """The connection times out after this long without hearing a valid datagram."""

    handshake_timeout: float = 10.0
    """A client gives up when the handshake has not completed after this long."""

    initial_rtt: float = 0.333
    """RTT assumed before the first sample (RFC 9002 §6.2.2)."""

    min_rto: float = 0.05
    """RTO floor: 50 ms suits LAN chat; RFC 6298's 1 s floor would stall a lossy chat."""

    max_rto: float = 4.0
    """RTO ceiling after backoff; heartbeats keep probing a healed path sooner than this."""

    max_ack_delay: float = 0.010
    """Longest a receiver holds back a pure ACK (piggybacking on data otherwise)."""

    drain_period_rtos: float = 3.0
    """After close, answer retransmitted CLOSEs for this many RTOs, then forget the connection."""

    initial_window_packets: int = 10
    """Initial congestion window in datagrams (RFC 6928)."""

    thin_max_in_flight: int = 4
    """An application-limited stream with less than this many full datagrams' worth of data
    unacknowledged is *thin*: too little for later ACKs to reveal a loss quickly (RFC 4653 and
    Linux's thin-stream test use 4 packets). 0 turns thin-stream mode off."""

    thin_max_copies: int = 5
    """Most times a thin stream sends one packet's DATA (and a first timeout probe's); 1 turns
    the redundancy off. At 30 % loss the estimate's upper bound asks for 5 (all lost 0.24 % of
    the time) where lines follow each other within an RTO, the rate itself 4 for sparser ones;
    with 4 at most, a chat at 30 % loss measured p99 390 ms instead of 154 ms, one line in a
    hundred waiting for a timeout. Five copies of a 200 B line cost about 6 bytes on the wire
    per payload byte."""

    thin_loss_target: float = 0.01
    """A thin stream sends the fewest copies that are all lost with at most this probability
    on the measured path: a 1-in-100 message waits for a timeout."""

    thin_copy_spacing: float = 0.005
    """Seconds between a thin stream's copies: a loss burst shorter than this takes one copy,
    not all, and the last copy is only a few ms behind the first."""

    thin_bundle_bytes: int = 128
    """Room (frame overhead included) a thin stream's packet may spend repeating recent
    unacknowledged fragments, as Linux's redundant data bundling does: a game's or KCP's
    16-byte messages ride along with the next ones (a lost one then arrives 20 ms later, not a
    loss-detection delay later); a 200 B chat line does not fit, its copies carry it."""

    thin_linear_timeouts: int = 6
    """Consecutive timeouts that do not double the RTO while thin (Linux's
    ``TCP_THIN_LINEAR_RETRIES``); past them the backoff is exponential, so a dead peer is not
    flooded before the idle timeout declares it gone."""

    lanes: tuple[LaneConfig, ...] = (LaneConfig(),) * DEFAULT_LANES
    """The lanes ``send`` may use, lane ``i`` scheduled as ``lanes[i]`` says (:mod:`.lanes`,
    PROTOCOL.md §2.5); also how many the peer may use: DATA on a lane beyond ours is a
    protocol violation. A receiver may hold one partly reassembled message per lane, so the
    worst a peer can make it hold grows by ``max_message_size`` a lane. The default: four lanes
    of one priority and weight (ENet's and GNS's users ask for a few; with one priority the
    scheduler is plain round robin by bytes)."""

    datagram_lanes: int = 16
    """Lanes unreliable datagrams may name (0..this − 1, at most 256): ``send_datagram`` refuses
    others, a receiver drops others (both ends should agree). Bounds the latest-only table."""

    datagram_queue: int = 64
    """Datagrams held each way: queued to send (the oldest is dropped for a new one), and
    received but not read (the oldest is dropped for a new one: the newest matter most)."""

    datagram_max_age: float = 0.25
    """A queued datagram still unsent after this long (congestion window full) is dropped:
    game state or a typing notice that old is superseded, and RFC 9221 lets a sender drop."""

    insecure: bool = False
    """Skip the Noise handshake and send frames in the clear, CRC-protected: for benchmarks
    and debugging only. Both ends must agree; a mismatch fails the handshake clearly."""

    qlog: str | None = None
    """Directory where the asyncio shell writes one qlog trace per connection (PROTOCOL.md
    §13); None traces nothing. The core never reads it: a sans-IO user passes a ``trace``
    sink to ``Connection.connect`` or a factory to ``Listener`` instead."""

    def __post_init__(self) -> None:
        if not 256 <= self.max_datagram_size <= 65_507:
            raise ValueError("max_datagram_size must be within 256..65507 bytes")
        if self.max_path_datagram_size > 65_507:
            raise ValueError("max_path_datagram_size must be at most 65507 bytes")
        if not 0 <= self.max_message_size <= 64 * MIB:
            raise ValueError("max_message_size must be within 0..64 MiB")
        if self.send_buffer_size < self.max_message_size:
            raise ValueError("send_buffer_size must hold at least one max_message_size message")
        if self.receive_window < self.max_message_size:
            raise ValueError("receive_window must hold at least one max_message_size message")
        if self.receive_window < INITIAL_WINDOW_FRAGMENTS * self.max_datagram_size:
            raise ValueError(
                f"receive_window must hold the {INITIAL_WINDOW_FRAGMENTS} datagrams a peer may "
                "send before our first ACK"
            )
        if not 1 <= len(self.lanes) <= MAX_LANES:
            raise ValueError(f"lanes must be a tuple of 1..{MAX_LANES} LaneConfig")
        if not all(isinstance(lane, LaneConfig) for lane in self.lanes):
            raise TypeError("lanes must hold LaneConfig")  # as the compiled core raises it
        if not 0 < self.heartbeat_interval < self.idle_timeout:
            raise ValueError("need 0 < heartbeat_interval < idle_timeout")
        if self.handshake_timeout <= 0 or self.initial_rtt <= 0:
            raise ValueError("handshake_timeout and initial_rtt must be positive")
        if not 0 < self.min_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        if not 0 <= self.max_ack_delay < self.min_rto:
            raise ValueError("need 0 <= max_ack_delay < min_rto")
        if self.initial_window_packets < 2:
            raise ValueError("initial_window_packets must be at least 2")
        if min(self.thin_max_in_flight, self.thin_linear_timeouts, self.thin_bundle_bytes) < 0:
            raise ValueError("thin_max_in_flight, thin_bundle_bytes, thin_linear_timeouts must be >= 0")
        if not 1 <= self.thin_max_copies <= MAX_THIN_COPIES:
            raise ValueError(f"thin_max_copies must be within 1..{MAX_THIN_COPIES}")
        if not 0 < self.thin_loss_target < 1:
            raise ValueError("thin_loss_target must be a probability within (0, 1)")
        if not 1 <= self.datagram_lanes <= MAX_DATAGRAM_LANES or self.datagram_queue < 1:
            raise ValueError(f"need 1 <= datagram_lanes <= {MAX_DATAGRAM_LANES}, datagram_queue >= 1")
        if not self.datagram_max_age > 0:
            raise ValueError("datagram_max_age must be positive")
        if not 0 <= self.thin_copy_spacing < self.min_rto:
            raise ValueError("need 0 <= thin_copy_spacing < min_rto")


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """Tunables of a server endpoint: the bounds on what strangers can make it hold or send."""

    connection: ConnectionConfig = ConnectionConfig()
    max_connections: int = 4096
    """Connections in the table (any state) before new clients are refused."""
    max_connections_per_address: int = 16
    """Connections from one IP address, so one host cannot take the whole table."""
    token_lifetime: float = 10.0
    """Seconds a RETRY token stays valid: long enough for a slow path, short for replays."""
    resets_per_second: float = 100.0
    """RESETs sent for unknown connection ids, at most (token bucket, burst the same)."""
    allow_guests: bool = True
    """Whether clients without a key (the NK handshake) are taken; refused KEY_REQUIRED if not."""

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_address < 1:
            raise ValueError("connection limits must be at least 1")
        if self.token_lifetime <= 0 or self.resets_per_second < 0:
            raise ValueError("token_lifetime must be positive and resets_per_second non-negative")
