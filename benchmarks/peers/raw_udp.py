"""raw-udp: blocking ``sendto``/``recvfrom`` with no reliability, the ceiling for Python over UDP.

Each datagram starts with its number, so the receiver counts the loss inside its own window. The
receiver's socket buffer is 4 MiB (Linux's default 208 KiB holds ~90 datagrams of 1 KiB and makes
the receiver sleep and wake far more often): this is meant as the ceiling.
"""

from __future__ import annotations

import socket
import struct
import time

from .common import POLL_S, SEQ, WARMUP_PINGS, Address, Job, Meter, Ready, Result, StopFlag

__all__ = ["client", "server"]

MAX_DATAGRAM = 65_536
SOCKET_BUFFER = 4 * 1024 * 1024  # the most net.core.rmem_max allows by default


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """Receive (bulk) or echo (ping-pong) on a fresh socket until the window closes or ``stop``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.bind((job.host, 0))
        ready(sock.getsockname())
        if job.mode == "pingpong":
            sock.settimeout(POLL_S)
            while not stop.is_set():
                try:
                    data, peer = sock.recvfrom(MAX_DATAGRAM)
                except TimeoutError:
                    continue
                sock.sendto(data, peer)
            return {}
        # Blocking recvfrom (a select() per empty buffer loses more); SO_RCVTIMEO wakes it up
        # for the stop flag with EAGAIN, which a socket without a Python timeout raises.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50_000))
        meter = Meter(job)
        first_seq = last_seq = -1
        while True:
            try:
                data, _ = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                if meter.expired() or stop.is_set():
                    break
                continue
            last_seq = SEQ.unpack_from(data)[0]
            if first_seq < 0:
                first_seq = last_seq
            if meter.add(data):
                break
        result = meter.result()
        result["offered"] = last_seq - first_seq + 1 if first_seq >= 0 else 0
        return result


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """Blast numbered datagrams for a little longer than the receiver's window, or ping."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if job.mode == "pingpong":
            return _ping(sock, job, address, stop)
        tail = bytes(max(0, job.size - SEQ.size))
        pack = SEQ.pack
        end = time.perf_counter() + job.duration + 1.0
        sent = 0
        while sent < job.count:
            sock.sendto(pack(sent) + tail, address)
            sent += 1
            if not sent & 0x3FF and (time.perf_counter() > end or stop.is_set()):
                break
        return {"sent": sent}


def _ping(sock: socket.socket, job: Job, address: Address, stop: StopFlag) -> Result:
    sock.settimeout(1.0)
    tail = bytes(max(0, job.size - SEQ.size))
    rtts: list[float] = []
    lost = 0
    end = time.perf_counter() + job.duration
    for seq in range(job.count + WARMUP_PINGS):
        started = time.perf_counter()
        if started > end or stop.is_set():
            break
        sock.sendto(SEQ.pack(seq) + tail, address)
        try:
            while SEQ.unpack_from(sock.recv(MAX_DATAGRAM))[0] != seq:
                pass  # a late echo of a ping already counted lost
        except TimeoutError:
            lost += 1
            continue
        if seq >= WARMUP_PINGS:
            rtts.append(1000 * (time.perf_counter() - started))
    return {"rtts_ms": rtts, "lost": lost}
