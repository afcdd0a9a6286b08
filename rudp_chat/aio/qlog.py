"""qlog files: one JSON-SEQ trace (RFC 7464) per connection, for qvis and other qlog tools.

The core hands its events to a sink (``rudp_chat.core.trace``); here each connection's sink
is a :class:`QlogFile` in a :class:`QlogDirectory`. A file holds a header record (the qlog
main schema's ``qlog_version``, ``qlog_format``, ``trace`` with its ``vantage_point`` and
``common_fields.reference_time``), then one record per event with ``time`` in milliseconds
after the reference time (PROTOCOL.md §13). Records are buffered up to ``FLUSH_BYTES`` and
appended by opening the file, writing and closing it again: a server with thousands of
traced connections holds no descriptor for them, and at most ``FLUSH_BYTES`` of each in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rudp_chat.core.state import Role, State

__all__ = ["FLUSH_BYTES", "QLOG_VERSION", "RECORD_SEPARATOR", "QlogDirectory", "QlogFile"]

QLOG_VERSION = "0.3"  # the JSON-SEQ flavour of the main schema that qvis reads
RECORD_SEPARATOR = b"\x1e"  # RFC 7464: every record starts with RS and ends with LF
FLUSH_BYTES = 16 * 1024  # buffered records per connection before a write: 4,096 connections
# (the default limit) hold at most 64 MiB, and a busy connection writes every ~100 packets
SUFFIX = ".sqlog"  # qvis's name for JSON-SEQ qlog files
MS_PER_S = 1000.0
_CLOSED = State.CLOSED.value


class QlogFile:
    """One connection's trace (a ``TraceSink``), named when its first event arrives:
    ``<client connection id>_<role>.sqlog``, so a connection's two ends pair up."""

    def __init__(
        self, directory: Path, role: Role, on_close: Callable[[QlogFile], None] | None = None
    ) -> None:
        self.directory = directory
        self.role = role
        self.path: Path | None = None
        """Where the trace goes; None until the connection's first event names it."""
        self.error: OSError | None = None
        """Why tracing stopped early (a failed write); the connection is not affected."""
        self.closed = False
        self._on_close = on_close
        self._reference_ms = time.time() * MS_PER_S
        self._origin = 0.0  # the core's ``now`` at the reference time
        self._buffer: list[bytes] = []
        self._buffered = 0

    def event(self, now: float, name: str, data: dict[str, Any]) -> None:
        """Buffer one event; write when ``FLUSH_BYTES`` are buffered or the connection closed."""
        if self.closed:
            return
        if self.path is None:
            self._start(now, data)
        record: dict[str, Any] = {
            "time": round((now - self._origin) * MS_PER_S, 3),
            "name": name,
            "data": data,
        }
        self._append(record)
        if name == "connectivity:connection_state_updated" and data.get("new") == _CLOSED:
            self.close()
        elif self._buffered >= FLUSH_BYTES:
            self.flush()

    def _start(self, now: float, started: dict[str, Any]) -> None:
        """Name the file from the first event (``connection_started``) and buffer the header."""
        client_id = started["src_cid"] if self.role is Role.CLIENT else started["dst_cid"]
        group_id = str(client_id)
        self.path = self.directory / f"{group_id}_{self.role.value}{SUFFIX}"
        self._origin = now
        self._append(
            {
                "qlog_version": QLOG_VERSION,
                "qlog_format": "JSON-SEQ",
                "title": f"rudp_chat {self.role.value} {group_id}",
                "trace": {
                    "vantage_point": {"type": self.role.value, "name": "rudp_chat"},
                    "common_fields": {
                        "reference_time": round(self._reference_ms, 3),
                        "time_format": "relative",
                        "group_id": group_id,
                        "protocol_type": ["RUDP"],
                    },
                },
            }
        )

    def _append(self, record: dict[str, Any]) -> None:
        line = RECORD_SEPARATOR + json.dumps(record, separators=(",", ":")).encode() + b"\n"
        self._buffer.append(line)
        self._buffered += len(line)

    def flush(self) -> None:
        """Append the buffered records to the file; a failed write stops tracing (``error``)."""
        if not self._buffer or self.path is None:
            return
        chunk = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        try:
            with self.path.open("ab") as file:
                file.write(chunk)
        except OSError as error:
            self.error = error
            self._stop()

    def close(self) -> None:
        """Write what is buffered and take no more events; idempotent."""
        if not self.closed:
            self.flush()
            self._stop()

    def _stop(self) -> None:
        if not self.closed:
            self.closed = True
            self._buffer.clear()
            if self._on_close is not None:
                self._on_close(self)


class QlogDirectory:
    """Makes one :class:`QlogFile` per connection in ``path`` (created if missing) and closes
    those still open when the client or server closes.

    Raises ``OSError`` if the directory cannot be made.
    """

    def __init__(self, path: str | Path, role: Role) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.role = role
        self._open: dict[QlogFile, None] = {}  # insertion-ordered set of unclosed files

    def open(self) -> QlogFile:
        """A new connection's sink."""
        trace = QlogFile(self.path, self.role, self._forget)
        self._open[trace] = None
        return trace

    def close(self) -> None:
        """Write and close every trace still open (connections abandoned before CLOSED)."""
        for trace in list(self._open):
            trace.close()

    def _forget(self, trace: QlogFile) -> None:
        self._open.pop(trace, None)
