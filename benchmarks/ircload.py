"""A minimal IRC user for the fan-out benchmark's load processes: register, join one channel,
say lines in it, hear everyone else's.

Only what the load needs of RFC 1459/2812: NICK and USER, the 001 welcome, JOIN and the 366
end of its name list (joined), PRIVMSG to the channel, PONG to PING, QUIT. Servers do not
echo a user's own PRIVMSG back, so every line heard is someone else's, as with rudp_chat.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["CHANNEL", "IrcUser", "tls_context"]

CHANNEL: Final = "#fanout"
LINE_LIMIT: Final = 2**16  # bytes per line read; IRC's own limit is 512


def tls_context(cafile: Path) -> ssl.SSLContext:
    """A client context that verifies the benchmark's throwaway certificate, hostname included."""
    return ssl.create_default_context(cafile=str(cafile))


class IrcUser:
    """One IRC connection; ``on_text`` gets the text of each channel line heard."""

    def __init__(
        self,
        host: str,
        port: int,
        nick: str,
        tls: ssl.SSLContext | None,
        on_text: Callable[[str], None],
    ) -> None:
        self._address = host, port
        self._nick = nick
        self._tls = tls
        self._on_text = on_text
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect, register and join :data:`CHANNEL`; returns once the join is complete.
        Raises ConnectionError if the server refuses or hangs up first."""
        host, port = self._address
        reader, writer = await asyncio.open_connection(
            host, port, ssl=self._tls, server_hostname=host if self._tls else None, limit=LINE_LIMIT
        )
        self._writer = writer
        self._send(f"NICK {self._nick}", f"USER {self._nick} 0 * :{self._nick}")
        while (line := await self._line(reader)).split(" ", 2)[1:2] != ["001"]:
            self._answer(line)
        self._send(f"JOIN {CHANNEL}")
        while (line := await self._line(reader)).split(" ", 2)[1:2] != ["366"]:
            self._answer(line)
        self._reading = asyncio.create_task(self._read(reader))

    def say(self, text: str) -> None:
        """Queue one line to the channel."""
        self._send(f"PRIVMSG {CHANNEL} :{text}")

    async def close(self) -> None:
        """QUIT, and wait until the server hangs up."""
        self._send("QUIT :done")
        if self._reading is not None:
            await self._reading
        if self._writer is not None:
            self._writer.close()

    def _send(self, *lines: str) -> None:
        assert self._writer is not None  # opened first
        self._writer.write("".join(line + "\r\n" for line in lines).encode())

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := (await reader.readline()).decode():
                self._answer(line.rstrip("\r\n"))
        except ConnectionError:
            pass  # the server hung up after our QUIT

    async def _line(self, reader: asyncio.StreamReader) -> str:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"{self._nick}: the server hung up while registering")
        text = line.decode().rstrip("\r\n")
        if text.startswith("ERROR"):
            raise ConnectionError(f"{self._nick}: {text}")
        return text

    def _answer(self, line: str) -> None:
        """Hand on a channel line's text; answer a PING."""
        if line.startswith("PING "):
            self._send("PONG " + line[5:])
            return
        parts = line.split(" ", 3)  # ":prefix" "PRIVMSG" "#fanout" ":text"
        if len(parts) == 4 and parts[1] == "PRIVMSG":
            self._on_text(parts[3][1:])
