"""The two faces of ``rudp-chat client``: plain lines for scripts, a prompt for people.

Plain mode reads stdin on a thread with ``os.read`` (a thread blocked in a buffered ``readline``
would hold the stdin lock at interpreter exit) and prints one flushed line per event.
Interactive mode keeps the input line at the bottom with prompt_toolkit: incoming messages are
printed above it, so they never break what is being typed; the status bar below it shows the
connection's state and any line the server has not confirmed yet, with its age, so a delay is
visible. In both, a first Ctrl-C leaves like ``exit`` (after the last lines are delivered) and a
second one gives up at once.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import sys
import threading
import time
from typing import Final

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import patch_stdout

from rudp_chat.stopsignals import on_stop_signals

from .client import ChatClient, ClientOptions
from .render import Event, plain, styled
from .text import neutralise

__all__ = ["run_client"]

EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it
READ_CHUNK_BYTES: Final = 65_536
TOOLBAR_REFRESH_S: Final = 1.0  # the toolbar's RTT and loss figures age at this pace


async def run_client(options: ClientOptions, *, interactive: bool) -> int:
    """Chat until the user leaves or the server goes; returns the exit code.

    Failures (a refused name, an unreachable server) are reported on stderr.
    """
    client = ChatClient(options, _show_styled if interactive else _show_plain)
    running = asyncio.create_task(client.run())
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if client.quitting:
            running.cancel()
        else:
            client.quit()

    if interactive:
        await _prompt(client, running)
    else:
        threading.Thread(target=_read_stdin, args=(loop, client), daemon=True).start()
    try:
        with on_stop_signals(loop, interrupt, (signal.SIGINT,)):  # Ctrl-C, Windows too
            code = await running
    except asyncio.CancelledError:
        code = EXIT_INTERRUPTED
        client.error = f"interrupted; {client.unacknowledged} messages not delivered"
    if client.error is not None:
        print(f"error: {neutralise(client.error)}", file=sys.stderr, flush=True)
    return code


def _show_plain(event: Event) -> None:
    line = plain(event)
    if line is not None:
        print(line, flush=True)


def _show_styled(event: Event) -> None:
    fragments = styled(event, time.time())
    if fragments is not None:
        print_formatted_text(FormattedText(fragments))


def _read_stdin(loop: asyncio.AbstractEventLoop, client: ChatClient) -> None:
    """Thread: hand each stdin line to ``client``; EOF means leave."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    try:
        while chunk := os.read(sys.stdin.fileno(), READ_CHUNK_BYTES):
            *lines, pending = (pending + decoder.decode(chunk)).split("\n")
            for line in lines:
                loop.call_soon_threadsafe(client.submit, line.removesuffix("\r"))
        for line in (pending + decoder.decode(b"", final=True)).splitlines():
            loop.call_soon_threadsafe(client.submit, line)
        loop.call_soon_threadsafe(client.quit)
    except (OSError, RuntimeError):  # stdin closed under us, or the loop is already gone
        return


async def _prompt(client: ChatClient, running: asyncio.Task[int]) -> None:
    """Read lines at a prompt until ``running`` ends; ``exit``, ``/quit``, Ctrl-D and Ctrl-C
    leave (a second time: without waiting for unconfirmed lines). The toolbar shows the
    connection's state, unconfirmed lines, RTT and losses."""
    where = f"{client.options.host}:{client.options.port}"

    def toolbar() -> str:
        return f" {neutralise(client.name)} @ {where} | {client.status()} | /help /stats /quit"

    session: PromptSession[str] = PromptSession(
        bottom_toolbar=toolbar, refresh_interval=TOOLBAR_REFRESH_S
    )

    async def read_lines() -> None:
        while True:  # until ``running`` ends: a second /quit must still be read
            try:
                line = await session.prompt_async("> ")
            except (EOFError, KeyboardInterrupt):
                client.leave()
                continue
            client.submit(line)

    with patch_stdout(raw=True):
        typing = asyncio.create_task(read_lines())
        await asyncio.wait((typing, running), return_when=asyncio.FIRST_COMPLETED)
        typing.cancel()
        await asyncio.gather(typing, return_exceptions=True)
