"""Tracing, sans-IO: a connection's qlog events handed to an injected sink.

The core never opens a file or reads a clock: it calls ``sink.event(now, name, data)`` with
its own ``now`` and a JSON-ready ``data`` dict, named and shaped after the qlog QUIC event
definitions (PROTOCOL.md §13), and the shell decides where records go (``rudp_chat.aio.qlog``
writes JSON-SEQ files). Without a sink the connection holds ``None`` and every hook is one
``is not None`` test, so tracing costs nothing when off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from .congestion import CongestionController, SentPacket
from .frames import (
    AckFrame,
    CloseFrame,
    DataFrame,
    DatagramFrame,
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
from .recovery import Recovery
from .rtt import RttEstimator
from .state import Input, Role, State

__all__ = ["EVENT_NAMES", "PACKET_TYPES", "SESSION_PACKET_TYPE", "ConnectionTrace", "TraceSink"]

EVENT_NAMES = frozenset(
    {
        "connectivity:connection_started",
        "connectivity:connection_state_updated",
        "transport:packet_sent",
        "transport:packet_received",
        "recovery:packet_lost",
        "recovery:metrics_updated",
        "recovery:congestion_state_updated",
        "security:key_updated",
    }
)
"""Every event name a connection emits."""

SESSION_PACKET_TYPE = "1RTT"
"""SESSION and SEALED packets carry frames, as QUIC's 1-RTT packets do."""
MS_PER_S = 1000.0  # qlog's times and RTTs are milliseconds (traced to the µs); ours are seconds
BITS_PER_BYTE = 8  # qlog's pacing_rate is bits per second; ours is bytes per second


class TraceSink(Protocol):
    """Where a traced connection's events go (a file writer, a list in a test)."""

    def event(self, now: float, name: str, data: dict[str, Any]) -> None:
        """Take one event at the connection's ``now`` (seconds, the core's clock)."""


PACKET_TYPES: dict[type[Packet], str] = {
    HelloPacket: "initial",
    WelcomePacket: "handshake",
    RetryPacket: "retry",
    ResetPacket: "stateless_reset",
    SessionPacket: SESSION_PACKET_TYPE,
    SealedPacket: SESSION_PACKET_TYPE,
}
"""Each packet kind's qlog ``packet_type``: QUIC's name for its counterpart."""


def _frame(frame: Frame) -> dict[str, Any]:
    """One frame's summary: QUIC's ``frame_type`` where one fits, our fields otherwise."""
    if type(frame) is DataFrame:
        data = {
            "frame_type": "data",
            "seq": frame.seq,
            "message_id": frame.message_id,
            "fragment_index": frame.fragment_index,
            "fragment_count": frame.fragment_count,
            "length": len(frame.payload),
        }
        return data | {"lane": frame.lane} if frame.lane else data
    if type(frame) is AckFrame:
        return {
            "frame_type": "ack",
            "acked_ranges": [[first, last] for first, last in reversed(frame.ranges)],
            "ack_delay": frame.delay_us / MS_PER_S,
            "cumulative": frame.cumulative,
            "window": frame.window,
        }
    if type(frame) is CloseFrame:
        return {
            "frame_type": "connection_close",
            "error_code": frame.error_code,
            "final_seq": frame.final_seq,
            "reason": frame.reason,
        }
    if type(frame) is DatagramFrame:  # RFC 9221's qlog frame, with our lane and sequence
        return {
            "frame_type": "datagram",
            "length": len(frame.payload),
            "lane": frame.lane,
            "sequence": frame.sequence,
        }
    if type(frame) is PingFrame and frame.padding:  # a path MTU probe
        return {"frame_type": "ping", "padding": frame.padding}
    return {"frame_type": "ping"}


class ConnectionTrace:
    """Turns one connection's moments into qlog events for its sink.

    ``now`` is the time of the input being processed: the API calls (``close``, ``abort``)
    take no time, so a state change they cause is stamped with the last input's.
    Metrics, the congestion state and key epochs are compared with what was last traced,
    so each change is traced once.
    """

    __slots__ = ("_epochs", "_metrics", "_mode", "now", "role", "sink", "size")

    def __init__(self, sink: TraceSink, role: Role, now: float) -> None:
        self.sink = sink
        self.role = role
        self.now = now
        self.size = 0
        """Bytes of the datagram being received (``arrival`` to ``received``)."""
        self._metrics: dict[str, int | float] = {}
        self._mode = ""
        self._epochs: tuple[int, int] | None = None

    def started(
        self, local_id: bytes, remote_id: bytes | None, peer: tuple[str, int], state: State
    ) -> None:
        """The connection exists (a client's before its HELLO, a server's at the handshake)."""
        self.sink.event(
            self.now,
            "connectivity:connection_started",
            {
                "src_cid": local_id.hex(),
                "dst_cid": (remote_id or b"").hex(),
                "dst_ip": peer[0],
                "dst_port": peer[1],
                "protocol": "rudp",
            },
        )
        self.sink.event(self.now, "connectivity:connection_state_updated", {"new": state.value})

    def arrival(self, now: float, size: int) -> None:
        """A datagram of ``size`` bytes arrives at ``now``: the next ``received`` is it."""
        self.now = now
        self.size = size

    def sent(self, kind: str, number: int, size: int, frames: Iterable[Frame] = ()) -> None:
        self._packet("transport:packet_sent", kind, number, size, frames)

    def received(self, kind: str, number: int | None, frames: Iterable[Frame] = ()) -> None:
        self._packet("transport:packet_received", kind, number, self.size, frames)

    def _packet(
        self, name: str, kind: str, number: int | None, size: int, frames: Iterable[Frame]
    ) -> None:
        header: dict[str, Any] = {"packet_type": kind}
        if number is not None:
            header["packet_number"] = number
        self.sink.event(
            self.now,
            name,
            {"header": header, "raw": {"length": size}, "frames": [_frame(f) for f in frames]},
        )

    def lost(self, packets: list[SentPacket], trigger: str | None) -> None:
        for packet in packets:
            data: dict[str, Any] = {
                "header": {"packet_type": SESSION_PACKET_TYPE, "packet_number": packet.number}
            }
            if trigger is not None:
                data["trigger"] = trigger
            self.sink.event(self.now, "recovery:packet_lost", data)

    def state(self, old: State, new: State, cause: Input) -> None:
        if new is not old:
            self.sink.event(
                self.now,
                "connectivity:connection_state_updated",
                {"old": old.value, "new": new.value, "trigger": cause.value},
            )

    def update(
        self,
        now: float,
        rtt: RttEstimator,
        congestion: CongestionController,
        recovery: Recovery,
        epochs: tuple[int, int] | None,
    ) -> None:
        """After an input's datagrams left: trace what changed of the metrics, the
        controller's mode and the key epochs (``(sending, receiving)``, None in the clear)."""
        self.now = now
        metrics: dict[str, int | float] = {  # not dict[str, float]: compiled, ints stay ints
            "min_rtt": round(rtt.min_rtt * MS_PER_S, 3),
            "smoothed_rtt": round(rtt.smoothed * MS_PER_S, 3),
            "latest_rtt": round(rtt.latest * MS_PER_S, 3),
            "rtt_variance": round(rtt.variance * MS_PER_S, 3),
            "pto_count": recovery.probe_count,
            "congestion_window": congestion.congestion_window,
            "bytes_in_flight": recovery.bytes_in_flight,
            "pacing_rate": int(congestion.pacing_rate * BITS_PER_BYTE),
        }
        last = self._metrics
        changed = {key: value for key, value in metrics.items() if last.get(key) != value}
        if changed:
            self._metrics = metrics
            self.sink.event(now, "recovery:metrics_updated", changed)
        mode = congestion.mode.value
        if mode != self._mode:
            data = {"new": mode} if not self._mode else {"old": self._mode, "new": mode}
            self._mode = mode
            self.sink.event(now, "recovery:congestion_state_updated", data)
        if epochs is not None and epochs != self._epochs:
            self._keys(epochs)

    def _keys(self, epochs: tuple[int, int]) -> None:
        """One ``key_updated`` per direction whose epoch moved (both at the handshake's keys)."""
        ours, theirs = ("client", "server") if self.role is Role.CLIENT else ("server", "client")
        previous = self._epochs
        self._epochs = epochs
        for index, (owner, local) in enumerate(((ours, True), (theirs, False))):
            generation = epochs[index]
            if previous is not None and previous[index] == generation:
                continue
            # "tls": the handshake's keys (ours come from Noise; qlog knows no other source)
            rotated = "local_update" if local else "remote_update"
            trigger = "tls" if previous is None else rotated
            self.sink.event(
                self.now,
                "security:key_updated",
                {"key_type": f"{owner}_1rtt_secret", "generation": generation, "trigger": trigger},
            )
