"""The two faces of ``rudp-chat client``: plain lines for scripts, a prompt for people.

Plain mode reads stdin on a thread with ``os.read`` (a thread blocked in a buffered ``readline``
would hold the stdin lock at interpreter exit) and prints one flushed line per event.
Interactive mode keeps the input line at the bottom with prompt_toolkit: incoming messages are
printed above it, so they never break what is being typed. A typed line leaves the prompt and
waits, dimmed, just above it until the server confirms it; then it is printed once, as everyone
sees it. The status bar below leads with the active room, its member count and the connection's
state, and any line the server has not confirmed yet, with its age, so a delay is visible, then
who else is typing in the room ("bob is typing…"); every edit of the input line tells the
room we are typing (:mod:`.typing`). Plain mode sends no typing notices (its lines arrive
whole) and prints the others' only with ``--show-typing``. Tab
completes commands, room names and the names in the active room; Ctrl-N and Ctrl-P switch the
active room; PageUp asks for older lines (``/history``). Typed lines are remembered across runs
in ``input_history`` beside the ``known_servers`` file. Pasted text of several lines is sent as
one message per line. In both modes, a first Ctrl-C leaves like ``exit`` (after the last lines
are delivered) and a second one gives up at once.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Final

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout

from rudp_chat.identity import KnownServers
from rudp_chat.stopsignals import on_stop_signals

from .client import ChatClient, ClientOptions
from .render import Event, plain, styled
from .text import neutralise

__all__ = ["run_client"]

EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it
READ_CHUNK_BYTES: Final = 65_536
TOOLBAR_REFRESH_S: Final = 1.0  # the toolbar's unconfirmed lines age at this pace
INPUT_HISTORY_FILE: Final = "input_history"
UNCONFIRMED_STYLE: Final = "#808080"
COMMANDS: Final = (
    "/away", "/ban", "/help", "/history", "/join", "/kick", "/me", "/mode", "/msg", "/nick",
    "/op", "/part", "/quit", "/rooms", "/say", "/search", "/stats", "/topic", "/unban", "/who",
)  # fmt: skip


async def run_client(options: ClientOptions, *, interactive: bool) -> int:
    """Chat until the user leaves or the server goes; returns the exit code.

    Failures (a refused name, an unreachable server) are reported on stderr.
    """

    def show(event: Event) -> None:
        if interactive:
            fragments = styled(event, time.time(), client.room, client.name)
            if fragments is not None:
                print_formatted_text(FormattedText(fragments))
        else:
            line = plain(event, client.room)
            if line is not None:
                print(line, flush=True)

    client = ChatClient(options, show)
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


class ChatCompleter(Completer):
    """Tab completion: a command for a first word starting with ``/``, one of our rooms for a
    word starting with ``#``, otherwise a name in the active room."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        first = not document.text_before_cursor[: -len(word) or None].strip()
        if word.startswith("/") and first:
            choices: Iterable[str] = COMMANDS
        elif word.startswith("#"):
            choices = self.client.members
        else:
            choices = self.client.members.get(self.client.room, ())
        folded = word.casefold()
        for choice in choices:
            if choice.casefold().startswith(folded):
                yield Completion(choice, -len(word))


def input_history(options: ClientOptions) -> History:
    """Typed lines, kept in a file beside ``known_servers`` (in memory if there is none)."""
    if options.known_servers is None:
        return InMemoryHistory()
    return FileHistory(str(options.known_servers.parent / INPUT_HISTORY_FILE))


async def _prompt(client: ChatClient, running: asyncio.Task[int]) -> None:
    """Read lines at a prompt until ``running`` ends; ``exit``, ``/quit``, Ctrl-D and Ctrl-C
    leave (a second time: without waiting for unconfirmed lines). Lines the server has not
    confirmed wait, dimmed, above the prompt; the toolbar shows the room and the connection."""

    def toolbar() -> str:
        name = neutralise(client.name)
        where = KnownServers.name(*client.server)  # the one in use: it changes on a failover
        return f" {neutralise(client.status())} | {name} @ {where} | /help /stats /quit"

    def message() -> FormattedText:
        fragments = [
            (UNCONFIRMED_STYLE, f"{neutralise(say.room)} {neutralise(say.text)}\n")
            for say in client.unconfirmed_lines()
        ]
        return FormattedText([*fragments, ("", f"{neutralise(client.room)}> ")])

    keys = KeyBindings()

    @keys.add("c-n")
    def _next_room(event: KeyPressEvent) -> None:
        client.switch(1)

    @keys.add("c-p")
    def _previous_room(event: KeyPressEvent) -> None:
        client.switch(-1)

    @keys.add("pageup")
    def _older(event: KeyPressEvent) -> None:
        client.submit("/history")

    session: PromptSession[str] = PromptSession(
        bottom_toolbar=toolbar,
        refresh_interval=TOOLBAR_REFRESH_S,
        completer=ChatCompleter(client),
        history=input_history(client.options),
        key_bindings=keys,
        erase_when_done=True,
    )
    session.default_buffer.on_text_changed += lambda buffer: client.edited(buffer.text)

    async def read_lines() -> None:
        while True:  # until ``running`` ends: a second /quit must still be read
            try:
                line = await session.prompt_async(message)
            except (EOFError, KeyboardInterrupt):
                client.leave()
                continue
            for part in line.splitlines():  # a paste of several lines: one message each
                client.submit(part)

    with patch_stdout(raw=True):
        typing = asyncio.create_task(read_lines())
        await asyncio.wait((typing, running), return_when=asyncio.FIRST_COMPLETED)
        typing.cancel()
        await asyncio.gather(typing, return_exceptions=True)
