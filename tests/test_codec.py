"""The codec: round trips of every packet and frame kind, and totality of decoding.

The fuzz invariant (h11's): decoding any input returns a valid packet or raises
:class:`FrameError`, never anything else; any single corrupted byte is caught by the CRC
(SEALED packets have none: the AEAD catches theirs, see test_security).
"""

from __future__ import annotations

import itertools
import struct
import zlib

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rudp_chat.core.codec import (
    CRC_SIZE,
    MAX_DATAGRAM_SIZE,
    decode_datagram,
    decode_frames,
    encode_datagram,
    encode_frames,
    fragment_size,
    sealed_header,
)
from rudp_chat.core.errors import FrameError
from rudp_chat.core.frames import (
    AEAD_TAG_SIZE,
    CONNECTION_ID_SIZE,
    MAX_ACK_RANGES,
    MAX_CLOSE_REASON_BYTES,
    MAX_COUNTER,
    MAX_FRAGMENTS,
    MAX_FRAMES,
    MAX_HANDSHAKE_SIZE,
    MAX_TOKEN_SIZE,
    RESET_TOKEN_SIZE,
    SERVER_KEY_SIZE,
    AckFrame,
    CloseFrame,
    DataFrame,
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

MAX_U32 = 2**32 - 1

# ------------------------------------------------------------------ strategies

connection_ids = st.binary(min_size=CONNECTION_ID_SIZE, max_size=CONNECTION_ID_SIZE)
reset_tokens = st.binary(min_size=RESET_TOKEN_SIZE, max_size=RESET_TOKEN_SIZE)
counters = st.one_of(
    st.integers(0, 300),
    st.integers(0, MAX_COUNTER),
    st.sampled_from([MAX_COUNTER, 2**32, 2**32 - 1]),
)
u32 = st.one_of(st.integers(0, 300), st.integers(0, MAX_U32), st.just(MAX_U32))

hello_packets = st.builds(
    HelloPacket,
    connection_ids,
    counters,
    u32,
    st.binary(max_size=MAX_TOKEN_SIZE),
    st.binary(max_size=MAX_HANDSHAKE_SIZE),
    st.integers(0, 1_300),
)
retry_packets = st.builds(
    RetryPacket,
    connection_ids,
    st.binary(min_size=1, max_size=MAX_TOKEN_SIZE),
    st.just(b"") | st.binary(min_size=SERVER_KEY_SIZE, max_size=SERVER_KEY_SIZE),
)
welcome_packets = st.builds(
    WelcomePacket,
    connection_ids,
    counters,
    st.binary(min_size=CONNECTION_ID_SIZE + RESET_TOKEN_SIZE, max_size=MAX_HANDSHAKE_SIZE),
)
reset_packets = st.builds(ResetPacket, connection_ids, reset_tokens)
session_packets = st.builds(SessionPacket, connection_ids, counters, st.binary(max_size=1_400))


def _sealed(connection_id: bytes, number: int, ciphertext: bytes) -> SealedPacket:
    header = sealed_header(connection_id, number, len(ciphertext))
    return SealedPacket(connection_id, number, header, ciphertext)


sealed_packets = st.builds(
    _sealed, connection_ids, counters, st.binary(min_size=AEAD_TAG_SIZE, max_size=1_400)
)
crc_packets: st.SearchStrategy[Packet] = st.one_of(
    hello_packets, retry_packets, welcome_packets, reset_packets, session_packets
)
"""Every kind that carries a CRC."""
packets: st.SearchStrategy[Packet] = st.one_of(crc_packets, sealed_packets
)


@st.composite
def data_frames(draw: st.DrawFn) -> DataFrame:
    count = draw(st.one_of(st.integers(1, 5), st.integers(1, MAX_FRAGMENTS)))
    index = draw(st.integers(0, count - 1))
    return DataFrame(draw(counters), draw(counters), index, count, draw(st.binary(max_size=1_200)))


@st.composite
def ack_ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """1..MAX_ACK_RANGES inclusive ranges, highest first, with at least one number between."""
    shape = draw(
        st.lists(
            st.tuples(st.integers(1, 2**20), st.integers(0, 2**20)),  # (gap before, length - 1)
            min_size=1,
            max_size=MAX_ACK_RANGES,
        )
    )
    span = sum(gap + length + 1 for gap, length in shape)
    base = min(
        draw(st.one_of(st.integers(0, 100), st.integers(0, MAX_COUNTER))), MAX_COUNTER - span
    )
    ranges: list[tuple[int, int]] = []
    first_gap = True
    position = base
    for gap, length in shape:
        position += 0 if first_gap else gap
        first_gap = False
        ranges.append((position, position + length))
        position += length + 1
    return tuple(reversed(ranges))


def _utf8_ok(text: str) -> bool:
    try:
        return len(text.encode()) <= MAX_CLOSE_REASON_BYTES
    except UnicodeEncodeError:  # lone surrogates: not text a peer can send
        return False


ack_frames = st.builds(AckFrame, counters, ack_ranges(), u32, counters)
close_frames = st.builds(
    CloseFrame, u32, counters, st.text(max_size=MAX_CLOSE_REASON_BYTES // 2).filter(_utf8_ok)
)
frames: st.SearchStrategy[Frame] = st.one_of(
    data_frames(), ack_frames, st.just(PingFrame()), close_frames
)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


# ------------------------------------------------------------- validity oracle


def _is_uint(value: object, limit: int = MAX_COUNTER) -> bool:
    return type(value) is int and 0 <= value <= limit


def assert_valid_packet(packet: object) -> None:
    """What the codec promises about anything it returns (checked independently here)."""
    match packet:
        case SessionPacket(cid, number, payload):
            assert len(cid) == CONNECTION_ID_SIZE and _is_uint(number)
            assert type(payload) is bytes
        case SealedPacket(cid, number, header, ciphertext):
            assert len(cid) == CONNECTION_ID_SIZE and _is_uint(number)
            assert header.startswith(b"\x94\x05") and len(ciphertext) >= AEAD_TAG_SIZE
        case HelloPacket(cid, number, version, token, handshake, padding):
            assert (
                len(cid) == CONNECTION_ID_SIZE and _is_uint(number) and _is_uint(version, MAX_U32)
            )
            assert type(token) is bytes and len(token) <= MAX_TOKEN_SIZE
            assert type(handshake) is bytes and len(handshake) <= MAX_HANDSHAKE_SIZE
            assert type(padding) is int and padding >= 0
        case RetryPacket(cid, token, server_key):
            assert len(cid) == CONNECTION_ID_SIZE and 1 <= len(token) <= MAX_TOKEN_SIZE
            assert len(server_key) in (0, SERVER_KEY_SIZE)
        case WelcomePacket(cid, number, body):
            assert len(cid) == CONNECTION_ID_SIZE and _is_uint(number)
            assert CONNECTION_ID_SIZE + RESET_TOKEN_SIZE <= len(body) <= MAX_HANDSHAKE_SIZE
        case ResetPacket(cid, reset_token):
            assert len(cid) == CONNECTION_ID_SIZE and len(reset_token) == RESET_TOKEN_SIZE
        case _:
            raise AssertionError(f"decode returned {packet!r}")


def assert_valid_frame(frame: object) -> None:
    match frame:
        case DataFrame(seq, message_id, index, count, payload):
            assert _is_uint(seq) and _is_uint(message_id)
            assert (
                _is_uint(count, MAX_FRAGMENTS) and count >= 1 and _is_uint(index) and index < count
            )
            assert type(payload) is bytes
        case AckFrame(cumulative, ranges, delay_us, window):
            assert _is_uint(cumulative) and _is_uint(delay_us, MAX_U32) and _is_uint(window)
            assert 1 <= len(ranges) <= MAX_ACK_RANGES
            for first, last in ranges:
                assert _is_uint(first) and _is_uint(last) and first <= last
            for (low_first, _), (_, high_last) in itertools.pairwise(ranges):
                assert high_last < low_first - 1  # descending, disjoint, non-adjacent
        case PingFrame():
            pass
        case CloseFrame(error_code, final_seq, reason):
            assert _is_uint(error_code, MAX_U32) and _is_uint(final_seq)
            assert type(reason) is str and len(reason.encode()) <= MAX_CLOSE_REASON_BYTES
        case _:
            raise AssertionError(f"decode_frames returned {frame!r}")


def decode_is_total(data: bytes) -> Packet | None:
    """Decode ``data``: a valid packet or FrameError; anything else fails the test."""
    try:
        packet = decode_datagram(data)
    except FrameError:
        return None
    assert_valid_packet(packet)
    assert decode_datagram(encode_datagram(packet)) == packet  # canonical once decoded
    return packet


def decode_frames_is_total(payload: bytes) -> tuple[Frame, ...] | None:
    try:
        decoded = decode_frames(payload)
    except FrameError:
        return None
    assert 1 <= len(decoded) <= MAX_FRAMES
    for frame in decoded:
        assert_valid_frame(frame)
    assert decode_frames(encode_frames(decoded)) == decoded
    return decoded


# ------------------------------------------------------------------ round trips


@given(packets)
def test_every_packet_kind_round_trips(packet: Packet) -> None:
    data = encode_datagram(packet)
    assert len(data) <= MAX_DATAGRAM_SIZE
    assert decode_datagram(data) == packet


@given(st.lists(frames, min_size=1, max_size=12))
def test_every_frame_kind_round_trips(frame_list: list[Frame]) -> None:
    assert decode_frames(encode_frames(frame_list)) == tuple(frame_list)


@given(connection_ids, counters, st.lists(frames, min_size=1, max_size=6))
def test_frames_round_trip_inside_a_session_datagram(
    cid: bytes, number: int, frame_list: list[Frame]
) -> None:
    packet = decode_datagram(encode_datagram(SessionPacket(cid, number, encode_frames(frame_list))))
    assert isinstance(packet, SessionPacket)
    assert decode_frames(packet.payload) == tuple(frame_list)


@pytest.mark.parametrize("kind", list(PacketKind))
def test_each_packet_kind_has_a_round_trip_example(kind: PacketKind) -> None:
    cid, other = b"\x01" * 8, b"\x02" * 8
    examples: dict[PacketKind, Packet] = {
        PacketKind.HELLO: HelloPacket(cid, 0, 1, b"", b"h" * 48, 1_000),
        PacketKind.RETRY: RetryPacket(cid, b"t" * MAX_TOKEN_SIZE, b"k" * SERVER_KEY_SIZE),
        PacketKind.WELCOME: WelcomePacket(cid, 1, other + b"r" * RESET_TOKEN_SIZE),
        PacketKind.RESET: ResetPacket(other, b"r" * RESET_TOKEN_SIZE),
        PacketKind.SESSION: SessionPacket(other, MAX_COUNTER, encode_frames([PingFrame()])),
        PacketKind.SEALED: _sealed(other, MAX_COUNTER, b"s" * 40),
    }
    example = examples[kind]
    data = encode_datagram(example)
    body = data if kind is PacketKind.SEALED else data[:-CRC_SIZE]
    assert msgpack.unpackb(body)[0] == kind
    assert decode_datagram(data) == example


def test_frame_count_limit_is_max_frames() -> None:
    assert len(decode_frames(encode_frames([PingFrame()] * MAX_FRAMES))) == MAX_FRAMES
    with pytest.raises(FrameError):
        decode_frames(encode_frames([PingFrame()] * (MAX_FRAMES + 1)))
    with pytest.raises(FrameError):
        decode_frames(encode_frames([]))


def test_ack_range_limit_is_max_ack_ranges() -> None:
    ranges = tuple((10 * i, 10 * i + 1) for i in reversed(range(MAX_ACK_RANGES)))
    ack = AckFrame(0, ranges, 0, 0)
    assert decode_frames(encode_frames([ack])) == (ack,)
    too_many = AckFrame(0, ((10 * MAX_ACK_RANGES, 10 * MAX_ACK_RANGES), *ranges), 0, 0)
    with pytest.raises(FrameError):
        decode_frames(encode_frames([too_many]))


@given(st.integers(256, 65_507), st.booleans(), st.data())
def test_overhead_constants_bound_a_full_data_datagram(
    datagram_size: int, insecure: bool, data: st.DataObject
) -> None:
    """The connection sizes fragments with ``fragment_size``; with every field at its largest
    the datagram must still fit, SESSION (CRC) or SEALED (AEAD tag)."""
    fragment = fragment_size(datagram_size, insecure)
    payload_size = data.draw(st.sampled_from([fragment, 0, 1, 31, 32, 255, 256, 65_535, 65_536]))
    assume(0 <= payload_size <= fragment)
    frame = DataFrame(
        MAX_COUNTER, MAX_COUNTER, MAX_FRAGMENTS - 1, MAX_FRAGMENTS, b"x" * payload_size
    )
    frames = encode_frames([frame])
    packet: Packet = (
        SessionPacket(b"\xff" * 8, MAX_COUNTER, frames)
        if insecure
        else _sealed(b"\xff" * 8, MAX_COUNTER, frames + bytes(AEAD_TAG_SIZE))
    )
    assert len(encode_datagram(packet)) <= datagram_size


# ------------------------------------------------------------------- corruption


@given(crc_packets, st.data())
def test_any_single_flipped_byte_is_detected(packet: Packet, data: st.DataObject) -> None:
    datagram = bytearray(encode_datagram(packet))
    position = data.draw(st.integers(0, len(datagram) - 1), label="position")
    datagram[position] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(FrameError):
        decode_datagram(bytes(datagram))


@given(crc_packets, st.data())
def test_any_burst_of_up_to_32_bits_is_detected(packet: Packet, data: st.DataObject) -> None:
    """CRC-32 catches every error burst no longer than 32 bits."""
    datagram = bytearray(encode_datagram(packet))
    width = min(4, len(datagram))
    start = data.draw(st.integers(0, len(datagram) - width), label="start")
    pattern = data.draw(st.binary(min_size=width, max_size=width).filter(any), label="pattern")
    for offset, byte in enumerate(pattern):
        datagram[start + offset] ^= byte
    with pytest.raises(FrameError):
        decode_datagram(bytes(datagram))


def test_every_position_of_one_datagram_is_covered() -> None:
    """Exhaustive over positions and xor values for one session datagram (no sampling)."""
    frame_list: list[Frame] = [
        AckFrame(3, ((9, 12), (0, 7)), 1_000, 300),
        DataFrame(4, 1, 0, 2, b"hello"),
    ]
    datagram = encode_datagram(SessionPacket(b"abcdefgh", 77, encode_frames(frame_list)))
    for position in range(len(datagram)):
        for xor in (0x01, 0x80, 0xFF, 0x5A):
            damaged = bytearray(datagram)
            damaged[position] ^= xor
            with pytest.raises(FrameError):
                decode_datagram(bytes(damaged))


@given(st.binary(max_size=CRC_SIZE))
def test_too_short_is_an_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_datagram(data)


def _session_datagram_of_size(size: int) -> bytes:
    overhead = len(encode_datagram(SessionPacket(b"a" * 8, 0, b"x" * 1_000))) - 1_000
    datagram = encode_datagram(SessionPacket(b"a" * 8, 0, b"x" * (size - overhead)))
    assert len(datagram) == size
    return datagram


def test_largest_udp_payload_decodes_and_one_byte_more_does_not() -> None:
    assert isinstance(decode_datagram(_session_datagram_of_size(MAX_DATAGRAM_SIZE)), SessionPacket)
    with pytest.raises(FrameError):
        decode_datagram(_session_datagram_of_size(MAX_DATAGRAM_SIZE + 1))


# --------------------------------------------------------------------- totality


@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_decode_or_raise_frame_error(data: bytes) -> None:
    decode_is_total(data)


@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_with_a_valid_crc_decode_or_raise_frame_error(body: bytes) -> None:
    decode_is_total(with_crc(body))


@given(st.binary(max_size=2_000))
def test_arbitrary_payloads_decode_to_frames_or_raise_frame_error(payload: bytes) -> None:
    decode_frames_is_total(payload)


msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.sampled_from([0, 1, 2, 3, 4, 5, -1, MAX_COUNTER, MAX_COUNTER + 1, 2**32, MAX_U32 + 1]),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.binary(min_size=8, max_size=8),
        st.binary(min_size=16, max_size=16),
    ),
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


@given(msgpack_values)
def test_structured_garbage_decodes_or_raises_frame_error(value: object) -> None:
    body = msgpack.packb(value, use_bin_type=True)
    decode_is_total(with_crc(body))
    decode_frames_is_total(body)


@given(
    st.sampled_from([*PacketKind, 5, -1, 255]),
    st.lists(msgpack_values, max_size=6),
)
def test_packet_shaped_garbage_decodes_or_raises_frame_error(kind: int, fields: list[object]) -> None:
    decode_is_total(with_crc(msgpack.packb([kind, *fields], use_bin_type=True)))


@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 3, 4, -1, True]), st.lists(msgpack_values, max_size=6)),
        min_size=1,
        max_size=4,
    )
)
def test_frame_shaped_garbage_decodes_or_raises_frame_error(
    items: list[tuple[object, list[object]]],
) -> None:
    decode_frames_is_total(
        msgpack.packb([[kind, *fields] for kind, fields in items], use_bin_type=True)
    )


@given(sealed_packets, st.data())
def test_mutated_sealed_datagrams_decode_or_raise(packet: Packet, data: st.DataObject) -> None:
    """No CRC stands in the way: every mutation reaches the field checks (or the AEAD)."""
    datagram = bytearray(encode_datagram(packet))
    position = data.draw(st.integers(0, len(datagram) - 1), label="position")
    datagram[position] ^= data.draw(st.integers(1, 255), label="xor")
    decoded = decode_is_total(bytes(datagram))
    assert decoded != packet


@given(crc_packets, st.data())
def test_mutated_valid_datagrams_with_fixed_crc_decode_or_raise(
    packet: Packet, data: st.DataObject
) -> None:
    """Mutations that the CRC does not catch (an attacker recomputes it) reach the field checks."""
    body = bytearray(encode_datagram(packet)[:-CRC_SIZE])
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        action = data.draw(
            st.sampled_from(["flip", "insert", "delete", "truncate"]), label="action"
        )
        position = data.draw(st.integers(0, max(len(body) - 1, 0)), label="position")
        if action == "flip" and body:
            body[position] ^= data.draw(st.integers(1, 255), label="xor")
        elif action == "insert":
            body.insert(position, data.draw(st.integers(0, 255), label="byte"))
        elif action == "delete" and body:
            del body[position]
        elif action == "truncate":
            del body[position:]
    decode_is_total(with_crc(bytes(body)))


@given(st.lists(frames, min_size=1, max_size=4), st.data())
def test_mutated_frame_payloads_decode_or_raise(
    frame_list: list[Frame], data: st.DataObject
) -> None:
    payload = bytearray(encode_frames(frame_list))
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] ^= data.draw(st.integers(1, 255))
    decode_frames_is_total(bytes(payload))


# ---------------------------------------------------------- malformed, by name

CID = b"c" * 8
RANGE_OK = [5, 1]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ([PacketKind.SESSION, CID, 0], "SESSION too short"),
        ([PacketKind.SESSION, CID, 0, b"", b""], "SESSION too long"),
        ([PacketKind.SESSION, b"short", 0, b""], "connection id of 5 bytes"),
        ([PacketKind.SESSION, CID, -1, b""], "negative packet number"),
        ([PacketKind.SESSION, CID, MAX_COUNTER + 1, b""], "packet number over MAX_COUNTER"),
        ([PacketKind.SESSION, CID, True, b""], "bool as packet number"),
        ([PacketKind.SESSION, CID, 1.0, b""], "float as packet number"),
        ([PacketKind.SESSION, CID, 0, "text"], "str payload"),
        ([PacketKind.HELLO, CID, 0, 1, b"t" * (MAX_TOKEN_SIZE + 1), b"", b""], "token too long"),
        ([PacketKind.HELLO, CID, 0, 2**32, b"", b"", b""], "version over 32 bits"),
        ([PacketKind.HELLO, CID, 0, 1, b"", b"h" * (MAX_HANDSHAKE_SIZE + 1), b""], "long hs"),
        ([PacketKind.HELLO, CID, 0, 1, b"", b""], "HELLO without padding field"),
        ([PacketKind.RETRY, CID, b"", b""], "empty RETRY token"),
        ([PacketKind.RETRY, CID, b"t", b"k" * 31], "server key of 31 bytes"),
        ([PacketKind.RETRY, CID, b"t"], "RETRY without key field"),
        ([PacketKind.WELCOME, CID, 0, b"r" * 23], "WELCOME body of 23 bytes"),
        ([PacketKind.WELCOME, CID, 0, b"r" * (MAX_HANDSHAKE_SIZE + 1)], "long WELCOME body"),
        ([PacketKind.SEALED, CID, 0, b"s" * 20], "SEALED in the CRC format"),
        ([PacketKind.RESET, CID, b"r" * 17], "reset token of 17 bytes"),
        ([True, CID, 0, b""], "bool as kind"),
        ([4.0, CID, 0, b""], "float as kind"),
        ([9, CID, 0, b""], "unknown kind"),
        ([], "empty array"),
        ({"k": 1}, "a map"),
        (7, "a bare integer"),
    ],
)
def test_malformed_packets_raise_frame_error(fields: object, why: str) -> None:
    with pytest.raises(FrameError):
        decode_datagram(with_crc(msgpack.packb(fields, use_bin_type=True)))


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ([[1, 0, 0, 1, 1, b""]], "fragment index == count"),
        ([[1, 0, 0, 0, 0, b""]], "fragment count 0"),
        ([[1, 0, 0, 0, MAX_FRAGMENTS + 1, b""]], "fragment count over MAX_FRAGMENTS"),
        ([[1, 0, 0, 0, 1, "text"]], "str DATA payload"),
        ([[1, 0, 0, 0, 1]], "DATA too short"),
        ([[0, 0, [1, 5], 0, 0]], "ACK range with first > last"),
        ([[0, 0, [5, 4, 3, 1], 0, 0]], "adjacent ACK ranges"),
        ([[0, 0, [5, 3, 4, 1], 0, 0]], "overlapping ACK ranges"),
        ([[0, 0, [2, 1, 9, 7], 0, 0]], "ascending ACK ranges"),
        ([[0, 0, [], 0, 0]], "no ACK range"),
        ([[0, 0, [5], 0, 0]], "odd ACK range array"),
        ([[0, 0, [5, 1] * (MAX_ACK_RANGES + 1), 0, 0]], "too many ACK ranges"),
        ([[0, 0, RANGE_OK, MAX_U32 + 1, 0]], "ack delay over 32 bits"),
        ([[0, -1, RANGE_OK, 0, 0]], "negative cumulative"),
        ([[0, 0, RANGE_OK, 0, MAX_COUNTER + 1]], "window over MAX_COUNTER"),
        ([[0, 0, RANGE_OK, 0]], "ACK too short"),
        ([[2, 0]], "PING with a field"),
        ([[3, 0, 0, "x" * (MAX_CLOSE_REASON_BYTES + 1)]], "reason too long"),
        ([[3, 0, 0, "é" * (MAX_CLOSE_REASON_BYTES // 2 + 1)]], "reason too long in bytes"),
        ([[3, 0, 0, b"bytes"]], "bytes reason"),
        ([[3, MAX_U32 + 1, 0, ""]], "error code over 32 bits"),
        ([[7]], "unknown frame type"),
        ([[True]], "bool as frame type"),
        ([[]], "empty frame"),
        ([5], "frame not an array"),
        ([], "no frames"),
        ({"a": 1}, "a map"),
    ],
)
def test_malformed_frames_raise_frame_error(items: object, why: str) -> None:
    with pytest.raises(FrameError):
        decode_frames(msgpack.packb(items, use_bin_type=True))


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ([PacketKind.SEALED, CID, 0, b"s" * (AEAD_TAG_SIZE - 1)], "shorter than a tag"),
        ([PacketKind.SEALED, CID, 0], "too short"),
        ([PacketKind.SEALED, CID, 0, b"s" * 20, b""], "too long"),
        ([PacketKind.SEALED, b"short", 0, b"s" * 20], "connection id of 5 bytes"),
        ([PacketKind.SEALED, CID, MAX_COUNTER + 1, b"s" * 20], "packet number over MAX_COUNTER"),
    ],
)
def test_malformed_sealed_packets_raise_frame_error(fields: object, why: str) -> None:
    with pytest.raises(FrameError):
        decode_datagram(msgpack.packb(fields, use_bin_type=True))


def test_trailing_bytes_after_the_array_are_an_error() -> None:
    body = msgpack.packb([PacketKind.RESET, CID, b"r" * RESET_TOKEN_SIZE]) + b"\x00"
    with pytest.raises(FrameError):
        decode_datagram(with_crc(body))
    with pytest.raises(FrameError):
        decode_frames(encode_frames([PingFrame()]) + b"\xc0")


def test_declared_lengths_beyond_the_input_are_refused_cheaply() -> None:
    """A bin32 header claiming 4 GiB must not make the decoder allocate it."""
    body = b"\x94\x04\xc4\x08" + CID + b"\x00\xc6\xff\xff\xff\xff"
    with pytest.raises(FrameError):
        decode_datagram(with_crc(body))
    with pytest.raises(FrameError):
        decode_frames(b"\xdd\xff\xff\xff\xff")  # array32 of 4 billion frames


@given(connection_ids, counters, st.integers(AEAD_TAG_SIZE, 70_000))
def test_the_sealed_header_is_what_msgpack_would_write(
    cid: bytes, number: int, size: int
) -> None:
    """Built by hand for speed, it must equal the canonical encoding a decoder reads back."""
    expected = msgpack.packb([PacketKind.SEALED, cid, number, b"\0" * size], use_bin_type=True)
    assert sealed_header(cid, number, size) == expected[:-size]
