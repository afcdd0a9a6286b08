"""tcp: the kernel's reliable stream with length-prefixed messages, on blocking sockets.

Bulk keeps Nagle on (the kernel coalesces small messages: TCP's best case); ping-pong sets
``TCP_NODELAY`` as a chat would.
"""

from __future__ import annotations

import socket
import time

from .common import (
    LENGTH,
    POLL_S,
    WARMUP_PINGS,
    Address,
    Job,
    Meter,
    Ready,
    Result,
    StopFlag,
    split_frames,
)

__all__ = ["client", "server"]

CHUNK = 256 * 1024  # bytes per recv: amortizes the call over many small messages


def server(job: Job, ready: Ready, stop: StopFlag) -> Result:
    """Accept one connection, then receive (bulk) or echo (ping-pong) its messages."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((job.host, 0))
        listener.listen(1)
        listener.settimeout(POLL_S)
        ready(listener.getsockname())
        while True:
            try:
                conn, _ = listener.accept()
                break
            except TimeoutError:
                if stop.is_set():
                    return {}
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, job.mode == "pingpong")
            conn.settimeout(POLL_S)
            return _receive(conn, job, stop)


def _receive(conn: socket.socket, job: Job, stop: StopFlag) -> Result:
    meter = Meter(job)
    buffer = bytearray()
    while True:
        try:
            chunk = conn.recv(CHUNK)
        except TimeoutError:
            if stop.is_set() or meter.expired():
                break
            continue
        if not chunk:
            break
        buffer += chunk
        messages, used = split_frames(buffer)
        if job.mode == "pingpong":
            conn.sendall(buffer[:used])
        del buffer[:used]
        if job.mode == "pingpong":
            continue
        if any(meter.add(message) for message in messages):
            break
    return meter.result() if job.mode != "pingpong" else {}


def client(job: Job, address: Address, stop: StopFlag) -> Result:
    """Send length-prefixed messages until ``stop`` (the receiver closes its window), or ping."""
    with socket.create_connection(address, timeout=10) as sock:
        if job.mode == "pingpong":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _ping(sock, job, stop)
        sock.settimeout(None)  # the receiver's close ends a blocked sendall
        frame = LENGTH.pack(job.size) + bytes(job.size)
        sent = 0
        try:
            while sent < job.count:
                sock.sendall(frame)
                sent += 1
                if not sent & 0xFF and stop.is_set():
                    break
        except OSError:  # reset by a receiver that closed its window and left
            pass
        return {"sent": sent}


def _ping(sock: socket.socket, job: Job, stop: StopFlag) -> Result:
    frame = LENGTH.pack(job.size) + bytes(job.size)
    want = len(frame)
    rtts: list[float] = []
    end = time.perf_counter() + job.duration
    for seq in range(job.count + WARMUP_PINGS):
        started = time.perf_counter()
        if started > end or stop.is_set():
            break
        sock.sendall(frame)
        got = 0
        while got < want:
            chunk = sock.recv(want - got)
            if not chunk:
                raise ConnectionError("echo server closed the connection")
            got += len(chunk)
        if seq >= WARMUP_PINGS:
            rtts.append(1000 * (time.perf_counter() - started))
    return {"rtts_ms": rtts}
