"""Many datagrams per system call: Linux's UDP segmentation (GSO) and receive offload (GRO).

GSO: ``sendmsg`` with a ``UDP_SEGMENT`` control message hands the kernel one buffer that it
cuts into datagrams of exactly that size (the last may be shorter), each sent as its own UDP
datagram: the wire sees the same datagrams as with one ``sendto`` each. GRO: with ``UDP_GRO``
set, one ``recvmsg`` may return several datagrams of one sender glued together, and the control
data names the segment size to cut them apart again. Measured here (plain Python, 1 KiB
datagrams on loopback): ~248,000/s with one ``send`` each, ~1,450,000/s with 32 per ``sendmsg``
and GRO on receive.

Only the ``add_reader`` path (:mod:`.endpoint`) uses this, after a one-time probe per socket;
the portable datagram-endpoint path never does. :data:`BATCHED_IO_VARIABLE` turns it off.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Iterator

from rudp_chat.core.connection import Address

__all__ = [
    "BATCHED_IO_VARIABLE",
    "GSO_BYTES_MAX",
    "GSO_SEGMENTS_MAX",
    "UDP_GRO",
    "UDP_SEGMENT",
    "batched_io_wanted",
    "enable_batched_io",
    "runs",
    "segment_control",
    "segment_size",
    "split",
]

BATCHED_IO_VARIABLE = "RUDP_CHAT_BATCHED_IO"
"""Environment variable: ``off`` (or ``0``) keeps every socket a process opens to one datagram
per system call; anything else, or unset, batches where the kernel can (the default)."""
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # <linux/udp.h>; Python 3.11 does not name it
UDP_GRO = getattr(socket, "UDP_GRO", 104)  # <linux/udp.h>
GSO_SEGMENTS_MAX = 64  # datagrams per sendmsg: UDP_MAX_SEGMENTS before Linux 6.10 raised it
GSO_BYTES_MAX = 65_000  # bytes per sendmsg: the whole buffer must fit one IP packet's 16-bit
# length (65,535 less the IPv6 and UDP headers, 48 B), rounded down
_SEGMENT = struct.Struct("=H")  # UDP_SEGMENT's value: the segment size, a native u16
_GRO_SIZE = struct.Struct("=i")  # UDP_GRO's control data: the segment size, a native int
GRO_CONTROL_BYTES = socket.CMSG_SPACE(_GRO_SIZE.size) if sys.platform == "linux" else 0
"""Ancillary buffer for ``recvmsg``: room for the one UDP_GRO message."""


def batched_io_wanted(requested: bool | None = None) -> bool:
    """``requested``, else what :data:`BATCHED_IO_VARIABLE` says (on unless ``off``/``0``)."""
    if requested is not None:
        return requested
    return os.environ.get(BATCHED_IO_VARIABLE, "").strip().lower() not in ("off", "0")


def enable_batched_io(sock: socket.socket) -> bool:
    """Probe ``sock`` once: True when the kernel takes ``UDP_SEGMENT`` on send and ``UDP_GRO``
    on receive (GRO is then on for the socket); False, the socket unchanged, anywhere else
    (not Linux, a kernel before 5.0, a socket that is not UDP)."""
    if sys.platform != "linux" or sock.type != socket.SOCK_DGRAM:
        return False
    try:
        sock.getsockopt(socket.SOL_UDP, UDP_SEGMENT)  # ENOPROTOOPT before Linux 4.18
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)  # ENOPROTOOPT before Linux 5.0
    except OSError:
        return False
    return True


def segment_control(size: int) -> list[tuple[int, int, bytes]]:
    """The ``sendmsg`` ancillary data that cuts the buffer into ``size``-byte datagrams."""
    return [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))]


def runs(datagrams: list[tuple[bytes, Address]]) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` index ranges of ``datagrams`` that one GSO ``sendmsg`` can carry, in
    order: consecutive datagrams to one address, all as long as the first but the last, which
    may be shorter, at most :data:`GSO_SEGMENTS_MAX` of them and :data:`GSO_BYTES_MAX` bytes.
    A range of one is a datagram to send on its own."""
    start = 0
    count = len(datagrams)
    while start < count:
        first, address = datagrams[start]
        size = len(first)
        total = size
        stop = start + 1
        while stop < count and stop - start < GSO_SEGMENTS_MAX:
            data, to = datagrams[stop]
            length = len(data)
            if to != address or length > size or total + length > GSO_BYTES_MAX:
                break
            total += length
            stop += 1
            if length < size:  # a shorter one ends the run
                break
        yield start, stop
        start = stop


def segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The GRO segment size ``recvmsg`` reported in ``ancillary``, or 0 for a single datagram."""
    for level, kind, value in ancillary:
        if level == socket.SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
            size: int = _GRO_SIZE.unpack_from(value)[0]
            return size
    return 0


def split(data: bytes, size: int) -> list[bytes]:
    """The datagrams GRO glued into ``data``, cut at ``size`` (the last may be shorter)."""
    if size <= 0 or len(data) <= size:
        return [data]
    return [data[offset : offset + size] for offset in range(0, len(data), size)]
