"""The wire vocabulary: packets (what a datagram holds) and frames (what a session packet holds).

Pure data, immutable values (:mod:`.slotted`); :mod:`rudp_chat.core.codec` turns them into
bytes and back.
See PROTOCOL.md for the layout of each.
"""

from __future__ import annotations

import enum
from typing import Final

from .slotted import Slotted

__all__ = [
    "AEAD_TAG_SIZE",
    "CONNECTION_ID_SIZE",
    "MAX_ACK_RANGES",
    "MAX_CLOSE_REASON_BYTES",
    "MAX_COUNTER",
    "MAX_DATAGRAM_LANES",
    "MAX_FRAGMENTS",
    "MAX_FRAMES",
    "MAX_HANDSHAKE_SIZE",
    "MAX_LANES",
    "MAX_TOKEN_SIZE",
    "MIN_HELLO_SIZE",
    "PROTOCOL_VERSION",
    "RESET_TOKEN_SIZE",
    "SERVER_KEY_SIZE",
    "AckFrame",
    "CloseFrame",
    "DataFrame",
    "DatagramFrame",
    "ErrorCode",
    "Frame",
    "HelloPacket",
    "Packet",
    "PacketKind",
    "PingFrame",
    "ResetPacket",
    "RetryPacket",
    "SealedPacket",
    "SessionPacket",
    "WelcomePacket",
]

PROTOCOL_VERSION = 1
CONNECTION_ID_SIZE = 8  # 64 random bits: 2^16 guesses hit with probability 2^-48
RESET_TOKEN_SIZE = 16
MAX_TOKEN_SIZE = 64
MAX_HANDSHAKE_SIZE = 128  # a HELLO's handshake field or a WELCOME's body, at most
MIN_HELLO_SIZE = 1200  # a HELLO is padded to this so the server's answers can never amplify
MAX_COUNTER = 2**62 - 1  # packet numbers, sequence numbers, message ids never wrap
MAX_FRAGMENTS = 65_535  # fragments of one message
MAX_ACK_RANGES = 32  # packet-number ranges in one ACK
MAX_FRAMES = 256  # frames in one session packet
MAX_LANES = 256  # lanes 0..255: the DATA lane field is one byte of msgpack payload at most
MAX_CLOSE_REASON_BYTES = 256
AEAD_TAG_SIZE = 16  # ChaCha20-Poly1305's tag: what sealing adds to a payload
SERVER_KEY_SIZE = 32  # an X25519 public key
MAX_DATAGRAM_LANES = 256  # lanes a DATAGRAM may name (0..255): a small number space, one byte


class PacketKind(enum.IntEnum):
    """First element of every datagram's array."""

    HELLO = 0
    """Client → server: open a connection (padded to ``MIN_HELLO_SIZE``)."""
    RETRY = 1
    """Server → client: a stateless address-validation token to echo in the next HELLO."""
    WELCOME = 2
    """Server → client: the connection exists; here is the server's connection id."""
    RESET = 3
    """Server → client: the server does not know that connection id."""
    SESSION = 4
    """Either way, after an unencrypted (``insecure``) handshake: frames, CRC-protected."""
    SEALED = 5
    """Either way, after an encrypted handshake: frames sealed with the AEAD (no CRC)."""


class ErrorCode(enum.IntEnum):
    """Codes carried by CLOSE."""

    NO_ERROR = 0
    """Graceful close."""
    PROTOCOL_VIOLATION = 1
    """The sender of CLOSE saw a frame that breaks the protocol."""
    APPLICATION = 2
    """The application aborted the connection."""
    REFUSED = 3
    """The server will not take this connection (full, or too many from this address)."""
    KEY_REQUIRED = 4
    """The server takes no guests: connect with a client key (the IK handshake)."""


class HelloPacket(Slotted):
    __match_args__ = ("client_id", "number", "version", "token", "handshake", "padding")
    __slots__ = __match_args__

    def __init__(
        self,
        client_id: bytes,
        number: int,
        version: int,
        token: bytes,
        handshake: bytes = b"",
        padding: int = 0,
    ) -> None:
        self.client_id: Final = client_id
        self.number: Final = number
        self.version: Final = version
        self.token: Final = token
        """Empty on the first HELLO; the RETRY token afterwards."""
        self.handshake: Final = handshake
        """With the token, unless insecure: Noise message 1, IK with a client key or NK for a
        guest (see ``noise``)."""
        self.padding: Final = padding
        """Bytes of padding (their content is ignored)."""


class RetryPacket(Slotted):
    __match_args__ = ("client_id", "token", "server_key")
    __slots__ = __match_args__

    def __init__(self, client_id: bytes, token: bytes, server_key: bytes = b"") -> None:
        self.client_id: Final = client_id
        self.token: Final = token
        self.server_key: Final = server_key
        """The server's static X25519 public key; empty when it runs insecure."""


class WelcomePacket(Slotted):
    __match_args__ = ("client_id", "number", "body")
    __slots__ = __match_args__

    def __init__(self, client_id: bytes, number: int, body: bytes) -> None:
        self.client_id: Final = client_id
        self.number: Final = number
        self.body: Final = body
        """The server's id and the token its RESETs carry: in the clear when insecure, else
        the Noise NK second message whose payload they are."""


class ResetPacket(Slotted):
    __match_args__ = ("connection_id", "reset_token")
    __slots__ = __match_args__

    def __init__(self, connection_id: bytes, reset_token: bytes) -> None:
        self.connection_id: Final = connection_id
        self.reset_token: Final = reset_token


class SessionPacket(Slotted):
    __match_args__ = ("connection_id", "number", "payload")
    __slots__ = __match_args__

    def __init__(self, connection_id: bytes, number: int, payload: bytes) -> None:
        self.connection_id: Final = connection_id
        """The receiver's own id."""
        self.number: Final = number
        """Packet number: one per datagram sent, never reused, so every ACK gives an exact
        RTT."""
        self.payload: Final = payload
        """Encoded frames (see ``codec.encode_frames``)."""


class SealedPacket(Slotted):
    __match_args__ = ("connection_id", "number", "header", "ciphertext")
    __slots__ = __match_args__

    def __init__(self, connection_id: bytes, number: int, header: bytes, ciphertext: bytes) -> None:
        self.connection_id: Final = connection_id
        """The receiver's own id."""
        self.number: Final = number
        """Packet number, as in SESSION; also the AEAD nonce, so it is never reused."""
        self.header: Final = header
        """The datagram's bytes before ``ciphertext``: the AEAD's associated data."""
        self.ciphertext: Final = ciphertext
        """Encoded frames, sealed; the last ``AEAD_TAG_SIZE`` bytes are the tag."""


Packet = HelloPacket | RetryPacket | WelcomePacket | ResetPacket | SessionPacket | SealedPacket


class AckFrame(Slotted):
    __match_args__ = ("cumulative", "ranges", "delay_us", "window")
    __slots__ = __match_args__

    def __init__(
        self, cumulative: int, ranges: tuple[tuple[int, int], ...], delay_us: int, window: int
    ) -> None:
        self.cumulative: Final = cumulative
        """Every DATA sequence number below this was received."""
        self.ranges: Final = ranges
        """Received packet numbers as inclusive (first, last) ranges, highest first."""
        self.delay_us: Final = delay_us
        """How long the receiver held the ACK after the largest packet arrived (µs)."""
        self.window: Final = window
        """The receiver accepts DATA with sequence numbers below this."""


class DataFrame(Slotted):
    __match_args__ = (
        "seq", "message_id", "fragment_index", "fragment_count", "payload", "lane"
    )  # fmt: skip
    __slots__ = __match_args__

    def __init__(
        self,
        seq: int,
        message_id: int,
        fragment_index: int,
        fragment_count: int,
        payload: bytes,
        lane: int = 0,
    ) -> None:
        self.seq: Final = seq
        """Sequence number of this fragment; orders delivery, one per fragment, from 0."""
        self.message_id: Final = message_id
        """Position of the message in its lane's send order, from 0."""
        self.fragment_index: Final = fragment_index
        self.fragment_count: Final = fragment_count
        self.payload: Final = payload
        self.lane: Final = lane
        """The lane the message travels on (PROTOCOL.md §2.3): messages are ordered within a
        lane, independent across lanes. Lane 0 is not written on the wire."""


class PingFrame(Slotted):
    """Asks for an immediate ACK: the heartbeat (the ACK is the pong), or padded, a path
    MTU probe (the ACK confirms the size)."""

    __match_args__ = ("padding",)
    __slots__ = __match_args__

    def __init__(self, padding: int = 0) -> None:
        self.padding: Final = padding
        """Bytes of padding (zeros on the wire, content ignored); 0 encodes the one-element
        PING."""


class CloseFrame(Slotted):
    __match_args__ = ("error_code", "final_seq", "reason")
    __slots__ = __match_args__

    def __init__(self, error_code: int, final_seq: int, reason: str = "") -> None:
        self.error_code: Final = error_code
        self.final_seq: Final = final_seq
        """The sender will send no DATA at or beyond this sequence number."""
        self.reason: Final = reason


class DatagramFrame(Slotted):
    """An unreliable datagram (RFC 9221): delivered at most once, never retransmitted."""

    __match_args__ = ("lane", "payload", "sequence")
    __slots__ = __match_args__

    def __init__(self, lane: int, payload: bytes, sequence: int | None = None) -> None:
        self.lane: Final = lane
        """The application's flow it belongs to, 0..``MAX_DATAGRAM_LANES`` - 1."""
        self.payload: Final = payload
        self.sequence: Final = sequence
        """Latest-only datagrams of a lane are numbered 0, 1, 2, ...: a receiver drops one
        older than the newest it delivered on that lane. None: delivered whatever came
        before."""


Frame = AckFrame | DataFrame | PingFrame | CloseFrame | DatagramFrame
