"""Durability under ``kill -9``: every acknowledged chat message survives a server crash, once.

Usage: python benchmarks/durability.py [--cycles N] [--messages N] [--clients N] [--seed N]
                                       [--max-up S] [--workdir DIR]

Why: the server acknowledges a message only after the SQLite transaction that stores it has
committed (WAL, ``synchronous=FULL``), and a client resends after a reconnect only what the
server's welcome says it has not processed. This checks both promises the hard way: the real
server process (``python -m rudp_chat server``, same port and history file across restarts)
takes the load of several chat clients (:class:`~rudp_chat.chat.client.ChatClient`, in this
process, so every acknowledgement is seen) and is killed with SIGKILL ``--cycles`` times.

Each cycle, once every client is back, each hands its client an equal share of the remaining
``--messages``; the client streams them at its pace (half the server's flood limit), and the
kill comes at a random moment 0..``--max-up`` s later: with messages queued in the client, on
the wire, in the server's queue, being committed, or committed with their ack on its way. After
each kill the history file is opened read-only and checked: every message a sender saw
acknowledged (or that a welcome declared processed) is stored exactly once, at the acknowledged
number, numbered 1..N without gaps, and everything each client was shown is a prefix of the
history. Then the server restarts and the clients must reconnect. After the last cycle the load
finishes without kills, everyone leaves, the server stops gracefully, and the end state is
checked: every message sent is stored exactly once and every client was shown the whole history
exactly once, in order.

Prints a line per cycle, then a table of ok/MISS; exits 1 on any MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from processes import HelperProcess, chat_server_command, until

from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.protocol import Ack, Chat, Error, Welcome
from rudp_chat.chat.render import Event, Notice
from rudp_chat.core.config import ConnectionConfig

HOST: Final = "127.0.0.1"
# Short keep-alives: a client hears the restarted server's RESET within 0.2 s and reconnects.
CONNECTION: Final = ConnectionConfig(heartbeat_interval=0.2, idle_timeout=4.0)
# The flood limit per user. The client sends at half of it (30/s after a burst of 3), so each
# cycle's lines stream for about a second instead of landing in one commit: a kill at a random
# moment then finds messages queued in the client, on the wire, waiting in the server, being
# committed, or committed with their ack still on its way.
SERVER_RATE: Final = 60.0
SERVER_BURST: Final = 6
READY_TIMEOUT_S: Final = 30.0  # server start on a loaded 2-core box takes well under this
RECONNECT_TIMEOUT_S: Final = 60.0  # clients back after a restart: backoff is at most 8 s
SETTLE_TIMEOUT_S: Final = 300.0  # the kill-free tail: the rest of the load, acked and seen

Row = tuple[int, str, str]
"""One stored message: ``(seq, sender, text)``."""


def server_command(port: int, history: Path) -> list[str]:
    """The server's command line; the only place it is built. Its key lives beside the
    history, so every restart keeps the identity the clients pinned."""
    return chat_server_command(
        host=HOST,
        port=port,
        history=history,
        key_file=history.with_name("server_key"),
        extra=[
            *("--rate", str(SERVER_RATE)),
            *("--burst", str(SERVER_BURST)),
            *("--heartbeat", str(CONNECTION.heartbeat_interval)),
            *("--idle-timeout", str(CONNECTION.idle_timeout)),
        ],
    )


def client_options(name: str, port: int) -> ClientOptions:
    """A client's settings; the only place they are built. Each pins the server's key on
    first use, in memory, and a restarted server must present the same one."""
    return ClientOptions(HOST, port, name, reconnect=True, connection=CONNECTION)


def start_server(port: int, history: Path, workdir: Path, incarnation: int) -> HelperProcess:
    """One incarnation of the server; its logs are ``server-NNN.out`` and ``.err`` in
    ``--workdir``, one pair per incarnation, so a failed run shows which one went wrong."""
    return HelperProcess(f"server-{incarnation:03d}", server_command(port, history), workdir)


@dataclass(slots=True)
class Sender:
    """One client, and what it was told: the ground truth the history is checked against."""

    name: str
    quota: int
    client: ChatClient | None = None
    task: asyncio.Task[int] | None = None
    submitted: int = 0
    """Client message ids 1..submitted were handed to the client."""
    acked: dict[int, int | None] = field(default_factory=dict)
    """Explicit acknowledgements: id -> the seq it became (None: a duplicate resend)."""
    implicit: set[int] = field(default_factory=set)
    """Ids a welcome declared processed before their ack arrived (the server died first)."""
    unacked: set[int] = field(default_factory=set)
    received: list[Chat] = field(default_factory=list)
    welcomes: int = 0
    errors: list[str] = field(default_factory=list)

    def text(self, say_id: int) -> str:
        return f"{self.name} message {say_id}"

    def on_event(self, event: Event) -> None:
        match event:
            case Ack(id=say_id, seq=seq):
                self.acked[say_id] = seq
                self.unacked.discard(say_id)
            case Chat():
                self.received.append(event)
            case Welcome(acked=processed):
                self.welcomes += 1
                done = {say_id for say_id in self.unacked if say_id <= processed}
                self.implicit |= done
                self.unacked -= done
            case Error(code=code, text=text):
                self.errors.append(f"{code}: {text}")
            case Notice():
                pass

    def submit_next(self) -> None:
        assert self.client is not None
        self.submitted += 1
        self.unacked.add(self.submitted)
        self.client.submit(self.text(self.submitted))


def read_history(path: Path) -> list[Row]:
    """The stored messages, read-only: nothing is checkpointed or recovered on our behalf."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        query = "SELECT seq, sender, text FROM lines WHERE room = '#lobby' ORDER BY seq"
        rows = db.execute(query).fetchall()
    return [(int(seq), str(sender), str(text)) for seq, sender, text in rows]


def audit(rows: list[Row], senders: list[Sender], *, final: bool) -> list[str]:
    """What is wrong with the history given what the senders were told (empty: nothing).

    Always: numbered 1..N, no text twice, every acknowledged (or declared processed) message
    present once (at the acknowledged seq), every client's view a prefix of the history, no
    message refused. ``final``: also every message sent stored, and every client saw all.
    """
    problems: list[str] = []
    if [seq for seq, _, _ in rows] != list(range(1, len(rows) + 1)):
        problems.append("history is not numbered 1..N without gaps")
    counts = Counter((sender, text) for _, sender, text in rows)
    twice = [text for (_, text), n in counts.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} messages stored more than once, e.g. {twice[0]!r}")
    by_seq = {seq: (sender, text) for seq, sender, text in rows}
    expected = {(s.name, s.text(i)) for s in senders for i in range(1, s.submitted + 1)}
    strangers = [text for sender, text in counts if (sender, text) not in expected]
    if strangers:
        problems.append(f"{len(strangers)} stored messages nobody sent, e.g. {strangers[0]!r}")
    for s in senders:
        missing = [i for i in (*s.acked, *s.implicit) if counts[(s.name, s.text(i))] == 0]
        if missing:
            problems.append(
                f"{s.name}: {len(missing)} acknowledged messages missing: {missing[:5]}"
            )
        misplaced = [
            i
            for i, seq in s.acked.items()
            if seq is not None and by_seq.get(seq) != (s.name, s.text(i))
        ]
        if misplaced:
            problems.append(f"{s.name}: acked seq differs from the stored one for {misplaced[:5]}")
        seen = [(c.seq, c.sender, c.text) for c in s.received]
        if seen != rows[: len(seen)]:
            first = next(
                (k for k, (a, b) in enumerate(zip(seen, rows, strict=False)) if a != b),
                min(len(seen), len(rows)),
            )
            shown = seen[first] if first < len(seen) else None
            stored = rows[first] if first < len(rows) else None
            problems.append(f"{s.name} saw {shown} where the history has {stored}")
        if s.errors:
            problems.append(f"{s.name}: {len(s.errors)} errors from the server: {s.errors[0]}")
        if final:
            unstored = [i for i in range(1, s.quota + 1) if counts[(s.name, s.text(i))] != 1]
            if s.submitted != s.quota or unstored:
                problems.append(f"{s.name}: {len(unstored)} sent messages not stored once")
            if len(seen) != len(rows):
                problems.append(f"{s.name} saw {len(seen)} of {len(rows)} messages")
    return problems


def welcomed_again(senders: list[Sender], before: list[int]) -> bool:
    """Whether every sender was welcomed again since its welcome count was ``before``."""
    return all(s.welcomes > n for s, n in zip(senders, before, strict=True))


@dataclass(slots=True)
class Tally:
    """Counts over the run, for the summary."""

    cycles_ok: int = 0
    reconnects_ok: int = 0
    in_flight: int = 0
    """Messages submitted and not yet acknowledged at the moments of the kills."""
    caught: int = 0
    """Kills that found messages unacknowledged."""
    first_problem: str = ""
    kill_failures: list[int] = field(default_factory=list)


async def run(args: argparse.Namespace, workdir: Path) -> int:
    """The whole experiment; returns the exit code. Whatever happens, no server process and no
    client task outlives it."""
    history = workdir / "history.sqlite3"
    if history.exists():
        raise SystemExit(f"{history} exists: use an empty --workdir")
    base, extra = divmod(args.messages, args.clients)
    senders = [Sender(f"writer{i}", base + (i < extra)) for i in range(args.clients)]
    servers: list[HelperProcess] = []
    try:
        return await experiment(args, workdir, history, senders, servers)
    finally:
        tasks = [s.task for s in senders if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if servers:
            servers[-1].kill()


async def experiment(
    args: argparse.Namespace,
    workdir: Path,
    history: Path,
    senders: list[Sender],
    servers: list[HelperProcess],
) -> int:
    """Start, load, kill and restart ``--cycles`` times, finish the load, check; see the module
    docstring. ``servers`` collects every incarnation (the live one last)."""
    rng = random.Random(args.seed)
    random.seed(args.seed)  # the clients' reconnect jitter
    servers.append(start_server(0, history, workdir, 0))
    port = await servers[-1].ready(timeout=READY_TIMEOUT_S)
    for s in senders:
        s.client = ChatClient(client_options(s.name, port), s.on_event)
        s.task = asyncio.create_task(s.client.run())
    if not await until(lambda: all(s.welcomes for s in senders), RECONNECT_TIMEOUT_S):
        raise RuntimeError("the clients did not join")
    tally = Tally()
    started = time.monotonic()
    print(
        f"{args.clients} clients, {args.messages:,} messages, {args.cycles} kill -9 cycles,"
        f" seed {args.seed}, history {history}",
        flush=True,
    )
    for cycle in range(1, args.cycles + 1):
        left = args.cycles - cycle + 1
        for s in senders:  # this cycle's share of the load; it streams at the client's pace
            unsent = s.quota - s.submitted
            for _ in range(unsent // left if left > 1 else unsent):
                s.submit_next()
        up = rng.uniform(0.0, args.max_up)
        await asyncio.sleep(up)
        in_flight = sum(len(s.unacked) for s in senders)
        servers[-1].kill()
        welcomes = [s.welcomes for s in senders]
        rows = read_history(history)
        problems = audit(rows, senders, final=False)
        acked = sum(len(s.acked) + len(s.implicit) for s in senders)
        tally.in_flight += in_flight
        tally.caught += in_flight > 0
        if problems:
            tally.kill_failures.append(cycle)
            tally.first_problem = tally.first_problem or f"cycle {cycle}: {problems[0]}"
        else:
            tally.cycles_ok += 1
        restarted = time.monotonic()
        servers.append(start_server(port, history, workdir, cycle))
        await servers[-1].ready(timeout=READY_TIMEOUT_S)
        back = await until(
            functools.partial(welcomed_again, senders, welcomes),
            RECONNECT_TIMEOUT_S,
        )
        tally.reconnects_ok += back
        back_s = time.monotonic() - restarted
        elapsed = time.monotonic() - started
        verdict = (
            "ok" if not problems and back else "MISS " + "; ".join(problems or ["no reconnect"])
        )
        print(
            f"cycle {cycle:3d}/{args.cycles}  up {up:4.2f} s  stored {len(rows):6,}"
            f"  acked {acked:6,}  in flight {in_flight:4,}  back in {back_s:4.2f} s"
            f"  t {elapsed:6.1f} s  {verdict}",
            flush=True,
        )
        if not back:
            break
    settled = await until(
        lambda: all(not s.unacked and s.client and not s.client.unacknowledged for s in senders),
        SETTLE_TIMEOUT_S,
    )
    stored = len(read_history(history))
    settled = settled and await until(
        lambda: all(len(s.received) >= stored for s in senders), SETTLE_TIMEOUT_S
    )
    for s in senders:
        assert s.client is not None
        s.client.quit()
    codes = [await s.task for s in senders if s.task is not None]
    server_code = await servers[-1].stop(timeout=READY_TIMEOUT_S)
    rows = read_history(history)
    problems = audit(rows, senders, final=True)
    wall = time.monotonic() - started
    return report(args, tally, rows, senders, problems, settled, codes, server_code, wall)


def report(
    args: argparse.Namespace,
    tally: Tally,
    rows: list[Row],
    senders: list[Sender],
    problems: list[str],
    settled: bool,
    codes: list[int],
    server_code: int,
    wall: float,
) -> int:
    """Print the table; returns 0 if every line is ok."""
    implicit = sum(len(s.implicit) for s in senders)
    resent_dup = sum(1 for s in senders for seq in s.acked.values() if seq is None)
    full = [s.name for s in senders if len(s.received) == len(rows)]
    checks = [
        (
            "every acknowledged message stored exactly once, after each kill",
            not tally.kill_failures,
            f"{tally.cycles_ok}/{args.cycles} cycles"
            + (f" ({tally.first_problem})" if tally.first_problem else ""),
        ),
        (
            "clients reconnected after every restart",
            tally.reconnects_ok == args.cycles,
            f"{tally.reconnects_ok}/{args.cycles}",
        ),
        (
            "the load finished: everything acknowledged and seen",
            settled,
            f"{sum(s.submitted for s in senders):,} submitted",
        ),
        (
            "every message sent stored exactly once, numbered 1..N",
            not problems,
            f"{len(rows):,} stored of {args.messages:,}"
            + (f" ({problems[0]})" if problems else ""),
        ),
        (
            "every client saw every message once, in history order",
            len(full) == len(senders) and not problems,
            f"{len(full)}/{len(senders)} clients",
        ),
        (
            "clean exit after the last cycle (clients 0, server 0)",
            all(code == 0 for code in codes) and server_code == 0,
            f"clients {codes}, server {server_code}",
        ),
    ]
    print()
    print(f"{'check':<66}result")
    for what, ok, detail in checks:
        print(f"{what:<66}{'ok  ' if ok else 'MISS'}  {detail}")
    print()
    print(
        f"{args.cycles} kills in {wall:.0f} s; {tally.caught} found messages unacknowledged,"
        f" {tally.in_flight:,} in all; {implicit:,} were committed but their ack died with the server (the welcome"
        f" said so); {resent_dup:,} resends were duplicates the server only acknowledged"
    )
    return 0 if all(ok for _, ok, _ in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--cycles", type=int, default=100, help="kill -9 cycles (default 100)")
    parser.add_argument(
        "--messages", type=int, default=10_000, help="messages in all (default 10,000)"
    )
    parser.add_argument("--clients", type=int, default=4, help="sending clients (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="kill moments and pacing (default 1)")
    parser.add_argument(
        "--max-up",
        type=float,
        default=1.5,
        metavar="S",
        help="the kill comes 0..S s after every client is back and got its share (default 1.5)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the history and server logs here (default: temporary)"
    )
    args = parser.parse_args()
    if args.cycles < 1 or args.clients < 1 or args.messages < args.clients:
        parser.error("need --cycles >= 1 and --messages >= --clients >= 1")
    if args.max_up < 0:
        parser.error("need --max-up >= 0")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args, args.workdir))
    with tempfile.TemporaryDirectory(prefix="rudp-durability-") as directory:
        return asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
