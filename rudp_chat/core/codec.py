"""The one module that speaks msgpack: packets and frames to bytes and back.

Decoding is total: for any input it returns a valid packet (or frame tuple) or
raises :class:`FrameError`, never anything else, and allocates no more than the
input's size allows.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any, Final

import msgpack

from .errors import FrameError
from .frames import (
    AEAD_TAG_SIZE,
    CONNECTION_ID_SIZE,
    MAX_ACK_RANGES,
    MAX_CLOSE_REASON_BYTES,
    MAX_COUNTER,
    MAX_DATAGRAM_LANES,
    MAX_FRAGMENTS,
    MAX_FRAMES,
    MAX_HANDSHAKE_SIZE,
    MAX_LANES,
    MAX_TOKEN_SIZE,
    RESET_TOKEN_SIZE,
    SERVER_KEY_SIZE,
    AckFrame,
    CloseFrame,
    DataFrame,
    DatagramFrame,
    Frame,
    HelloPacket,
    Packet,
    PacketKind,
    PingFrame,
    ResetPacket,
    RetryPacket,
    SealedPacket,
    SessionPacket,
    WelcomePacket,
)

__all__ = [
    "CRC_SIZE",
    "DATAGRAM_FRAME_OVERHEAD",
    "DATA_FRAME_OVERHEAD",
    "LANE_FIELD_SIZE",
    "MAX_DATAGRAM_SIZE",
    "SEALED_OVERHEAD",
    "SESSION_OVERHEAD",
    "decode_datagram",
    "decode_frames",
    "encode_datagram",
    "encode_frames",
    "fragment_cost",
    "fragment_size",
    "padded_ping",
    "payload_room",
    "sealed_header",
    "session_overhead",
]

CRC_SIZE: Final = 4
MAX_DATAGRAM_SIZE: Final = 65_507  # largest UDP payload over IPv4
MAX_DELAY_US: Final = 2**32 - 1

# Worst-case bytes around the payload, used to size fragments so a DATA frame always fits.
# Session packet: fixarray(1) kind(1) bin8 id(2+8) uint64 number(9) bin32 header(5) + CRC.
_SESSION_HEADER_BOUND: Final = 1 + 1 + 2 + CONNECTION_ID_SIZE + 9 + 5
SESSION_OVERHEAD: Final = _SESSION_HEADER_BOUND + CRC_SIZE
SEALED_OVERHEAD: Final = _SESSION_HEADER_BOUND + AEAD_TAG_SIZE
_SEALED_PREFIX: Final = b"\x94\x05"  # fixarray(4), kind SEALED: the one kind without a CRC
_SEALED_ID_PREFIX: Final = _SEALED_PREFIX + b"\xc4" + bytes([CONNECTION_ID_SIZE])  # + bin8 id
# Frame list array32 header(5) + DATA frame: fixarray(1) type(1) seq(9) id(9) index(3) count(3) bin32(5).
DATA_FRAME_OVERHEAD: Final = 5 + 1 + 1 + 9 + 9 + 3 + 3 + 5
LANE_FIELD_SIZE: Final = 2  # a DATA frame's trailing lane, when not 0: uint8 (0xcc, lane) at most
# Frame list array32 header(5) + DATAGRAM frame: fixarray(1) type(1) lane(2) bin32(5) sequence(9).
DATAGRAM_FRAME_OVERHEAD: Final = 5 + 1 + 1 + 2 + 5 + 9

_FRAME_ACK: Final = 0
_FRAME_DATA: Final = 1
_FRAME_PING: Final = 2
_FRAME_CLOSE: Final = 3
_FRAME_DATAGRAM: Final = 5  # 4 is the lanes' (reserved)

_MAX_ARRAY_LEN: Final = 2 * MAX_ACK_RANGES + MAX_FRAMES  # an ACK's flat ranges, or a packet's frames
_CRC: Final = struct.Struct(">I")
_BIN16: Final = struct.Struct(">BH")
_BIN32: Final = struct.Struct(">BI")
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def payload_room(max_datagram_size: int, insecure: bool) -> int:
    """Bytes of frames one SESSION (insecure) or SEALED packet carries within
    ``max_datagram_size``, whatever its id and number."""
    return max_datagram_size - (SESSION_OVERHEAD if insecure else SEALED_OVERHEAD)


def fragment_size(max_datagram_size: int, insecure: bool) -> int:
    """Bytes of a message one DATA frame carries, so that frame always fits a packet alone
    (1,122 encrypted, 1,134 insecure at the default 1,200-byte datagram)."""
    return payload_room(max_datagram_size, insecure) - DATA_FRAME_OVERHEAD


def fragment_cost(fragment: DataFrame) -> int:
    """Bytes ``fragment`` takes in a packet's frames, at most (lane 0 writes no lane field)."""
    lane_bytes = LANE_FIELD_SIZE if fragment.lane else 0
    return len(fragment.payload) + DATA_FRAME_OVERHEAD + lane_bytes


def _bin_header_size(length: int) -> int:
    return 2 if length < 0x100 else 3 if length < 0x10000 else 5


def session_overhead(number: int, payload_size: int, insecure: bool) -> int:
    """Exact bytes a SESSION (insecure) or SEALED datagram adds to ``payload_size`` bytes of
    frames as packet ``number``: array, kind, id, number, the bin header, then CRC or tag."""
    number_size = len(_packer.pack(number))
    body = payload_size if insecure else payload_size + AEAD_TAG_SIZE
    trailer = CRC_SIZE if insecure else AEAD_TAG_SIZE
    return 4 + CONNECTION_ID_SIZE + number_size + _bin_header_size(body) + trailer


def padded_ping(
    frames: Sequence[Frame], number: int, datagram_size: int, insecure: bool
) -> PingFrame:
    """The PING that, after ``frames``, makes packet ``number`` as close to ``datagram_size``
    bytes as the msgpack length headers allow (never over; at most 2 bytes under): a PMTU probe.
    """
    payload = datagram_size - session_overhead(number, datagram_size, insecure)
    while payload + session_overhead(number, payload, insecure) > datagram_size:
        payload -= 1
    unpadded = len(encode_frames([*frames, PingFrame()]))
    padding = max(payload - unpadded - 2, 0)  # [2] becomes [2, bin]: the bin header's bytes
    while padding and unpadded + _bin_header_size(padding) + padding > payload:
        padding -= 1
    return PingFrame(padding)


def encode_datagram(packet: Packet) -> bytes:
    """Serialise ``packet``: a CRC-32 trailer follows every kind but SEALED, which the AEAD
    protects instead (its ciphertext must already be sealed over ``sealed_header``)."""
    fields: list[Any]
    match packet:
        case SealedPacket(_, _, header, ciphertext):
            return header + ciphertext
        case SessionPacket(connection_id, number, payload):
            fields = [PacketKind.SESSION, connection_id, number, payload]
        case HelloPacket(client_id, number, version, token, handshake, padding):
            fields = [
                PacketKind.HELLO, client_id, number, version, token, handshake, bytes(padding)
            ]
        case RetryPacket(client_id, token, server_key):
            fields = [PacketKind.RETRY, client_id, token, server_key]
        case WelcomePacket(client_id, number, welcome_body):
            fields = [PacketKind.WELCOME, client_id, number, welcome_body]
        case ResetPacket(connection_id, reset_token):
            fields = [PacketKind.RESET, connection_id, reset_token]
    body: bytes = _packer.pack(fields)
    return body + _CRC.pack(zlib.crc32(body))


def sealed_header(connection_id: bytes, number: int, ciphertext_size: int) -> bytes:
    """A SEALED datagram's bytes before its ciphertext (the AEAD's associated data): the
    msgpack array header, kind, id, number and the ciphertext's bin length header, in the
    shortest forms (assembled from parts: it is on every sealed packet's path)."""
    if ciphertext_size < 0x100:
        length = b"\xc4" + ciphertext_size.to_bytes(1, "big")
    elif ciphertext_size < 0x10000:
        length = _BIN16.pack(0xC5, ciphertext_size)
    else:
        length = _BIN32.pack(0xC6, ciphertext_size)
    number_bytes: bytes = _packer.pack(number)
    return _SEALED_ID_PREFIX + connection_id + number_bytes + length


def encode_frames(frames: Sequence[Frame]) -> bytes:
    """Serialise the frames of one session packet (the part a later version seals).

    Plain isinstance tests, DATA first, not class patterns: a pattern reads every field
    through ``__match_args__`` even where one test would decide."""
    items: list[list[Any]] = []
    for frame in frames:
        if isinstance(frame, DataFrame):
            item: list[Any] = [
                _FRAME_DATA,
                frame.seq,
                frame.message_id,
                frame.fragment_index,
                frame.fragment_count,
                frame.payload,
            ]
            if frame.lane:
                item.append(frame.lane)
            items.append(item)
        elif isinstance(frame, AckFrame):
            flat = [bound for first, last in frame.ranges for bound in (last, first)]
            items.append([_FRAME_ACK, frame.cumulative, flat, frame.delay_us, frame.window])
        elif isinstance(frame, PingFrame):
            padding = frame.padding
            items.append([_FRAME_PING, bytes(padding)] if padding else [_FRAME_PING])
        elif isinstance(frame, CloseFrame):
            items.append([_FRAME_CLOSE, frame.error_code, frame.final_seq, frame.reason])
        elif isinstance(frame, DatagramFrame):
            if frame.sequence is None:
                items.append([_FRAME_DATAGRAM, frame.lane, frame.payload])
            else:
                items.append([_FRAME_DATAGRAM, frame.lane, frame.payload, frame.sequence])
    packed: bytes = _packer.pack(items)
    return packed


def _unpack(data: bytes) -> Any:
    """Strings as str, arrays as tuples, no maps or extension types, and arrays no longer
    than any valid packet's. msgpack bounds strings and bins by ``len(data)`` unasked (its
    default since 1.0, as is ``raw=False``): each keyword costs the call ~100 instructions."""
    try:
        return msgpack.unpackb(
            data,
            use_list=False,
            max_array_len=min(len(data), _MAX_ARRAY_LEN),
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types; the edge turns all into one
        raise FrameError(f"not msgpack: {exc}") from None


def _uint(value: object, name: str, limit: int = MAX_COUNTER) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise FrameError(f"{name} must be an integer in 0..{limit}")
    return value


def _bin(value: object, name: str, low: int, high: int) -> bytes:
    if type(value) is not bytes or not low <= len(value) <= high:
        raise FrameError(f"{name} must be {low}..{high} bytes")
    return value


def _connection_id(value: object) -> bytes:
    return _bin(value, "connection id", CONNECTION_ID_SIZE, CONNECTION_ID_SIZE)


def _shape(items: object, length: int, name: str) -> tuple[Any, ...]:
    if type(items) is not tuple or len(items) != length:
        raise FrameError(f"{name} must be an array of {length}")
    return items


def decode_datagram(data: bytes) -> Packet:
    """Check the CRC (unless SEALED) and decode one datagram; raises :class:`FrameError` on
    any flaw. A SEALED packet's ciphertext is not opened here: that needs the session's key."""
    if not CRC_SIZE < len(data) <= MAX_DATAGRAM_SIZE:
        raise FrameError("datagram size out of range")
    if data.startswith(_SEALED_PREFIX):
        _, cid, number, ciphertext = _shape(_unpack(data), 4, "SEALED")
        ciphertext = _bin(ciphertext, "ciphertext", AEAD_TAG_SIZE, len(data))
        return SealedPacket(
            _connection_id(cid),
            _uint(number, "packet number"),
            data[: len(data) - len(ciphertext)],
            ciphertext,
        )
    body = data[:-CRC_SIZE]
    if _CRC.unpack_from(data, len(body))[0] != zlib.crc32(body):
        raise FrameError("CRC mismatch")
    fields = _unpack(body)
    if type(fields) is not tuple or not fields:
        raise FrameError("a datagram is a non-empty array")
    kind = fields[0]
    if kind == PacketKind.SESSION and type(kind) is int:
        _, cid, number, payload = _shape(fields, 4, "SESSION")
        return SessionPacket(
            _connection_id(cid),
            _uint(number, "packet number"),
            _bin(payload, "payload", 0, len(data)),
        )
    if kind == PacketKind.HELLO and type(kind) is int:
        _, cid, number, version, token, handshake, padding = _shape(fields, 7, "HELLO")
        return HelloPacket(
            _connection_id(cid),
            _uint(number, "packet number"),
            _uint(version, "version", 2**32 - 1),
            _bin(token, "token", 0, MAX_TOKEN_SIZE),
            _bin(handshake, "handshake", 0, MAX_HANDSHAKE_SIZE),
            len(_bin(padding, "padding", 0, len(data))),
        )
    if kind == PacketKind.RETRY and type(kind) is int:
        _, cid, token, server_key = _shape(fields, 4, "RETRY")
        server_key = _bin(server_key, "server key", 0, SERVER_KEY_SIZE)
        if len(server_key) not in (0, SERVER_KEY_SIZE):
            raise FrameError(f"server key must be empty or {SERVER_KEY_SIZE} bytes")
        return RetryPacket(
            _connection_id(cid), _bin(token, "token", 1, MAX_TOKEN_SIZE), server_key
        )
    if kind == PacketKind.WELCOME and type(kind) is int:
        _, cid, number, body = _shape(fields, 4, "WELCOME")
        return WelcomePacket(
            _connection_id(cid),
            _uint(number, "packet number"),
            _bin(body, "body", CONNECTION_ID_SIZE + RESET_TOKEN_SIZE, MAX_HANDSHAKE_SIZE),
        )
    if kind == PacketKind.RESET and type(kind) is int:
        _, cid, reset_token = _shape(fields, 3, "RESET")
        return ResetPacket(
            _connection_id(cid),
            _bin(reset_token, "reset token", RESET_TOKEN_SIZE, RESET_TOKEN_SIZE),
        )
    raise FrameError("unknown packet kind")


def decode_frames(payload: bytes) -> tuple[Frame, ...]:
    """Decode a session packet's payload; raises :class:`FrameError` on any flaw."""
    items = _unpack(payload)
    if type(items) is not tuple or not 0 < len(items) <= MAX_FRAMES:
        raise FrameError(f"a payload is an array of 1..{MAX_FRAMES} frames")
    return tuple([_decode_frame(item) for item in items])


def _decode_frame(item: object) -> Frame:
    if type(item) is not tuple or not item:
        raise FrameError("a frame is a non-empty array")
    kind = item[0]
    if type(kind) is not int:
        raise FrameError("frame type must be an integer")
    if kind == _FRAME_DATA:
        lane = 0
        if len(item) == 7:  # a trailing lane; lane 0 is never written, so 0 here is malformed
            lane = _uint(item[6], "lane", MAX_LANES - 1)
            if lane == 0:
                raise FrameError("DATA writes lane 0 by omitting the lane field")
            item = item[:6]
        _, seq, message_id, index, count, payload = _shape(item, 6, "DATA")
        count = _uint(count, "fragment count", MAX_FRAGMENTS)
        if count == 0 or _uint(index, "fragment index", MAX_FRAGMENTS) >= count:
            raise FrameError("need 0 <= fragment index < fragment count")
        if type(payload) is not bytes:
            raise FrameError("DATA payload must be bytes")
        return DataFrame(
            _uint(seq, "sequence number"),
            _uint(message_id, "message id"),
            index,
            count,
            payload,
            lane,
        )
    if kind == _FRAME_ACK:
        _, cumulative, flat, delay_us, window = _shape(item, 5, "ACK")
        return AckFrame(
            _uint(cumulative, "cumulative ack"),
            _ack_ranges(flat),
            _uint(delay_us, "ack delay", MAX_DELAY_US),
            _uint(window, "window"),
        )
    if kind == _FRAME_PING:
        if len(item) == 1:
            return PingFrame()
        _, padding = _shape(item, 2, "PING")
        if type(padding) is not bytes:
            raise FrameError("PING padding must be bytes")
        return PingFrame(len(padding))
    if kind == _FRAME_CLOSE:
        _, error_code, final_seq, reason = _shape(item, 4, "CLOSE")
        if type(reason) is not str or len(reason.encode()) > MAX_CLOSE_REASON_BYTES:
            raise FrameError(
                f"CLOSE reason must be a string of at most {MAX_CLOSE_REASON_BYTES} bytes"
            )
        return CloseFrame(
            _uint(error_code, "error code", 2**32 - 1), _uint(final_seq, "final seq"), reason
        )
    if kind == _FRAME_DATAGRAM:
        return _datagram(item)
    raise FrameError("unknown frame type")


def _datagram(item: tuple[Any, ...]) -> DatagramFrame:
    """``[5, lane, data]``, or latest-only ``[5, lane, data, sequence]``."""
    if len(item) not in (3, 4):
        raise FrameError("DATAGRAM must be an array of 3 or 4")
    lane = _uint(item[1], "lane", MAX_DATAGRAM_LANES - 1)
    if type(item[2]) is not bytes:
        raise FrameError("DATAGRAM data must be bytes")
    sequence = _uint(item[3], "datagram sequence") if len(item) == 4 else None
    return DatagramFrame(lane, item[2], sequence)


def _ack_ranges(flat: object) -> tuple[tuple[int, int], ...]:
    """Ranges arrive as a flat array ``[last0, first0, last1, first1, ...]``, highest first."""
    if type(flat) is not tuple or not 2 <= len(flat) <= 2 * MAX_ACK_RANGES or len(flat) % 2:
        raise FrameError(f"ACK ranges must be 1..{MAX_ACK_RANGES} pairs")
    ranges: list[tuple[int, int]] = []
    floor = MAX_COUNTER + 2  # the previous range's first, exclusive of the gap between
    for i in range(0, len(flat), 2):
        last, first = _uint(flat[i], "range end"), _uint(flat[i + 1], "range start")
        if not first <= last < floor - 1:
            raise FrameError("ACK ranges must be descending, disjoint and non-adjacent")
        ranges.append((first, last))
        floor = first
    return tuple(ranges)
