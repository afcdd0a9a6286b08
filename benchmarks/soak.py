"""Soak: many chat clients through a lossy proxy for a long time, nothing lost or leaked.

Usage: python benchmarks/soak.py [--duration S] [--clients N] [--loss P] [--rate PER_S]
                                 [--seed N] [--no-history] [--json PATH]

Why: short tests cannot show a slow leak, a rare false disconnect or a once-an-hour ordering
slip. This runs the chat server in its own process, ``rudp-chat proxy`` in another (dropping
``--loss`` of the datagrams each way, with a little delay and jitter), and ``--clients`` chat
clients (:class:`~rudp_chat.chat.client.ChatClient`, here, in one event loop) that each say
something ``--rate`` times a second for ``--duration`` seconds, then wait until everything is
acknowledged and delivered. Then it checks:

* every message sent is stored exactly once (nothing lost, nothing duplicated); with
  ``--no-history`` (the server keeps history in memory only) nothing can be read back, so the
  first client's view stands in for the stored history: every line numbered once;
* every client was shown every message exactly once, in the server's order (the same at all
  clients, each sender's lines in the order typed): a running digest per client is compared with
  the history's, so memory here stays flat too;
* no false disconnect: each client was welcomed once, lost no connection and saw nobody leave;
* the server's memory is flat: its RSS at the end (after the load drained) is at most
  ``max(start * 1.2, start + 10 MiB)``, where start is after a warm-up of a tenth of the run
  (RSS legitimately grows while caches fill; a leak grows with the run), in both modes: an
  unbounded in-memory history would grow ~0.5 KiB a line. The growth per 1,000 lines after
  the warm-up is reported too.

Prints progress every ``--report`` seconds, then a table of ok/MISS; exits 1 on any MISS.
``--json`` writes the results too (the test suite runs a short soak and reads them).

Every client connects through the one proxy, so the server sees all of them from 127.0.0.1:
the server runs with ``--max-per-address`` raised above the client count (see
:func:`server_command`). Everything is encrypted, as by default.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import sqlite3
import sys
import tempfile
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from processes import HelperProcess, chat_server_command, until

from rudp_chat.chat.client import ChatClient, ClientOptions
from rudp_chat.chat.protocol import Ack, Chat, Error, Left, Welcome
from rudp_chat.chat.render import Event, Notice

HOST: Final = "127.0.0.1"
PROXY_DELAY_MS: Final = 10  # one-way, each direction: a LAN-ish path
PROXY_JITTER_MS: Final = 5
START_TIMEOUT_S: Final = 30.0  # a process printing its ready line on a loaded 2-core box
JOIN_TIMEOUT_S: Final = 120.0  # every client welcomed, through the loss
DRAIN_TIMEOUT_S: Final = 180.0  # after the load: everything acknowledged and delivered
WARMUP_SHARE: Final = 0.1  # of the run, before the start RSS is taken
WARMUP_MAX_S: Final = 60.0
RSS_GROWTH_RATIO: Final = 1.2  # "flat": within +20 % ...
RSS_GROWTH_SLACK_KIB: Final = 10 * 1024  # ... or +10 MiB, whichever is larger
PROXY_LISTENING: Final = re.compile(r"^proxy listening on [0-9.]+:(\d+)", re.MULTILINE)


def server_command(history: Path, clients: int, *, stored: bool) -> list[str]:
    """The server's command line; the only place it is built. All clients share the proxy's
    address, so the per-address bound must admit them all; the key lives beside the history
    (which is not written unless ``stored``)."""
    return chat_server_command(
        host=HOST,
        history=history if stored else None,
        key_file=history.with_name("server_key"),
        extra=["--max-per-address", str(clients + 1)],
    )


def proxy_command(upstream: int, loss: float, seed: int) -> list[str]:
    """The proxy's command line; the only place it is built."""
    return [
        sys.executable,
        "-m",
        "rudp_chat",
        "proxy",
        "--listen",
        f"{HOST}:0",
        "--upstream",
        f"{HOST}:{upstream}",
        "--loss",
        str(loss),
        "--delay",
        str(PROXY_DELAY_MS),
        "--jitter",
        str(PROXY_JITTER_MS),
        "--seed",
        str(seed),
    ]


def client_options(name: str, port: int) -> ClientOptions:
    """A client's settings (default timeouts); the only place they are built (known servers
    would go here)."""
    return ClientOptions(HOST, port, name, reconnect=True)


def chat_line(seq: int, sender: str, text: str) -> bytes:
    """One message as the digests see it."""
    return f"{seq}\x00{sender}\x00{text}\n".encode()


@dataclass(slots=True)
class Member:
    """One client and what it was shown, checked as it arrives (no transcript is kept)."""

    name: str
    client: ChatClient | None = None
    task: asyncio.Task[int] | None = None
    submitted: int = 0
    acked: int = 0
    seen: int = 0
    last_seq: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    next_from: dict[str, int] = field(default_factory=dict)
    """Per sender, the line number expected next: each sender's lines arrive in typed order."""
    welcomes: int = 0
    lost: int = 0
    """Connections lost (the client's own notices)."""
    left: list[str] = field(default_factory=list)
    """Others seen leaving, with the reason."""
    anomalies: list[str] = field(default_factory=list)

    def text(self, number: int) -> str:
        return f"{self.name} line {number}"

    def on_event(self, event: Event) -> None:
        match event:
            case Chat(seq=seq, sender=sender, text=text):
                self._shown(seq, sender, text)
            case Ack(seq=seq):
                self.acked += 1
                if seq is None:
                    self.anomalies.append(f"an ack without a message: {event}")
            case Welcome():
                self.welcomes += 1
            case Left(name=name, reason=reason):
                self.left.append(f"{name} ({reason})")
            case Error():
                self.anomalies.append(f"error from the server: {event}")
            case Notice(text=text) if text.startswith("connection lost"):
                self.lost += 1

    def _shown(self, seq: int, sender: str, text: str) -> None:
        if seq != self.last_seq + 1 and len(self.anomalies) < 10:
            self.anomalies.append(f"seq {seq} after {self.last_seq}")
        self.last_seq = seq
        self.seen += 1
        self.digest.update(chat_line(seq, sender, text))
        name, _, number = text.rpartition(" line ")
        expected = self.next_from.get(sender, 1)
        if name != sender or number != str(expected):
            if len(self.anomalies) < 10:
                self.anomalies.append(f"{text!r} from {sender} when line {expected} was next")
        else:
            self.next_from[sender] = expected + 1

    def say(self) -> None:
        assert self.client is not None
        self.submitted += 1
        self.client.submit(self.text(self.submitted))


async def chatter(member: Member, rate: float, until: float, rng: random.Random) -> None:
    """Say a line at random intervals (exponential, mean ``1 / rate``) until ``until``."""
    loop = asyncio.get_running_loop()
    while (pause := rng.expovariate(rate)) < until - loop.time():
        await asyncio.sleep(pause)
        member.say()


def history_digest(path: Path) -> tuple[int, int, str, dict[str, int]]:
    """The stored history: (rows, distinct texts, digest as clients compute it, rows per
    sender). Read-only, once the server has stopped."""
    digest = hashlib.sha256()
    per_sender: dict[str, int] = {}
    texts: set[str] = set()
    rows = 0
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        query = "SELECT seq, sender, text FROM lines WHERE room = '#lobby' ORDER BY seq"
        for seq, sender, text in db.execute(query):
            rows += 1
            digest.update(chat_line(seq, sender, text))
            per_sender[sender] = per_sender.get(sender, 0) + 1
            texts.add(text)
    return rows, len(texts), digest.hexdigest(), per_sender


@dataclass(slots=True)
class Memory:
    """The server's RSS over the run, KiB."""

    start: int = 0
    end: int = 0
    peak: int = 0
    lines_after_start: int = 0
    """Lines sent between the start sample and the end."""

    @property
    def per_thousand_lines(self) -> float:
        """KiB of growth per 1,000 lines after the warm-up."""
        return 1000 * (self.end - self.start) / max(self.lines_after_start, 1)

    @property
    def flat(self) -> bool:
        limit = max(self.start * RSS_GROWTH_RATIO, self.start + RSS_GROWTH_SLACK_KIB)
        return 0 < self.end <= limit


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """Run it; returns the results (see :func:`report`). No process or task outlives it."""
    history = workdir / "history.sqlite3"
    command = server_command(history, args.clients, stored=not args.no_history)
    server = HelperProcess("server", command, workdir)
    processes = [server]
    members = [Member(f"user{i:03d}") for i in range(args.clients)]
    try:
        upstream = await server.ready(timeout=START_TIMEOUT_S)
        proxy = HelperProcess("proxy", proxy_command(upstream, args.loss, args.seed), workdir)
        processes.append(proxy)
        return await load(args, history, server, proxy, members)
    finally:
        tasks = [m.task for m in members if m.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for process in processes:
            process.kill()


async def load(
    args: argparse.Namespace,
    history: Path,
    server: HelperProcess,
    proxy: HelperProcess,
    members: list[Member],
) -> dict[str, object]:
    """Join everyone, chat for ``--duration``, drain, leave, stop, check."""
    rng = random.Random(args.seed)
    random.seed(args.seed)  # the clients' reconnect jitter
    port = await proxy.ready(PROXY_LISTENING, timeout=START_TIMEOUT_S)
    print(
        f"soak: {args.clients} clients through a proxy dropping {args.loss:.0%} each way"
        f" (delay {PROXY_DELAY_MS}±{PROXY_JITTER_MS} ms), {args.rate:g} lines/s each,"
        f" {args.duration:g} s, seed {args.seed},"
        f" history {'in memory (--no-history)' if args.no_history else 'on disk'}",
        flush=True,
    )
    for m in members:
        m.client = ChatClient(client_options(m.name, port), m.on_event)
        m.task = asyncio.create_task(m.client.run())
    joined = await until(lambda: all(m.welcomes for m in members), JOIN_TIMEOUT_S)
    if not joined:
        raise RuntimeError(f"only {sum(bool(m.welcomes) for m in members)} clients joined")
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = started + args.duration
    warmup = min(WARMUP_MAX_S, args.duration * WARMUP_SHARE)
    talkers = [asyncio.create_task(chatter(m, args.rate, end, rng)) for m in members]
    memory = Memory()
    sent_at_start = 0
    next_report = started + args.report
    while (now := loop.time()) < end:
        await asyncio.sleep(min(1.0, end - now))
        rss = server.rss_kib()
        memory.peak = max(memory.peak, rss)
        if not memory.start and loop.time() >= started + warmup:
            memory.start = rss
            sent_at_start = sum(m.submitted for m in members)
        if loop.time() >= next_report:
            next_report += args.report
            progress(loop.time() - started, members, rss, proxy.rss_kib())
    await asyncio.gather(*talkers)
    sent = sum(m.submitted for m in members)
    drained = await until(
        lambda: (
            all(m.client and m.client.unacknowledged == 0 for m in members)
            and all(m.seen >= sent for m in members)
        ),
        DRAIN_TIMEOUT_S,
    )
    memory.end = server.rss_kib()
    memory.peak = max(memory.peak, memory.end)
    memory.lines_after_start = sent - sent_at_start
    progress(loop.time() - started, members, memory.end, proxy.rss_kib(), label="drained")
    dropped = {m.name: (m.welcomes, m.lost, list(m.left)) for m in members}
    for m in members:
        assert m.client is not None
        m.client.quit()
    codes = [await m.task for m in members if m.task is not None]
    server_code = await server.stop(timeout=START_TIMEOUT_S)
    proxy_code = await proxy.stop(timeout=START_TIMEOUT_S)
    proxy_report = proxy.stdout.read_text(errors="replace").splitlines()[1:]
    if args.no_history:  # nothing to read back: the first client's view stands in for it
        reference = members[0]
        rows = distinct = reference.seen if not reference.anomalies else 0
        digest = reference.digest.hexdigest()
        per_sender = {name: after - 1 for name, after in reference.next_from.items()}
    else:
        rows, distinct, digest, per_sender = history_digest(history)
    return report(
        args,
        members,
        sent=sent,
        drained=drained,
        rows=rows,
        distinct=distinct,
        digest=digest,
        per_sender=per_sender,
        dropped=dropped,
        memory=memory,
        codes=[*codes, server_code, proxy_code],
        proxy_report=proxy_report,
        wall=loop.time() - started,
    )


def progress(
    elapsed: float, members: list[Member], rss: int, proxy_rss: int, *, label: str = "t"
) -> None:
    """One line of how it goes."""
    print(
        f"{label:>7} {elapsed:6.0f} s  sent {sum(m.submitted for m in members):7,}"
        f"  acked {sum(m.acked for m in members):7,}"
        f"  shown {sum(m.seen for m in members):9,}"
        f"  lost connections {sum(m.lost for m in members)}"
        f"  server RSS {rss / 1024:6.1f} MiB  proxy RSS {proxy_rss / 1024:6.1f} MiB",
        flush=True,
    )


def report(
    args: argparse.Namespace,
    members: list[Member],
    *,
    sent: int,
    drained: bool,
    rows: int,
    distinct: int,
    digest: str,
    per_sender: dict[str, int],
    dropped: dict[str, tuple[int, int, list[str]]],
    memory: Memory,
    codes: list[int],
    proxy_report: list[str],
    wall: float,
) -> dict[str, object]:
    """Print the table; returns the results as JSON-ready data (``checks`` maps each check's
    key to ok)."""
    matching = [
        m.name
        for m in members
        if m.seen == rows and m.digest.hexdigest() == digest and not m.anomalies
    ]
    unstored = [m.name for m in members if per_sender.get(m.name, 0) != m.submitted]
    false_drops = [
        f"{name}: {welcomes} welcomes, {lost} lost, saw {left[:3]}"
        for name, (welcomes, lost, left) in dropped.items()
        if welcomes != 1 or lost or left
    ]
    anomaly = next((f"{m.name}: {m.anomalies[0]}" for m in members if m.anomalies), "")
    ratio = memory.end / memory.start if memory.start else float("inf")
    checks: list[tuple[str, str, bool, str]] = [
        (
            "drained",
            "the load drained: everything acknowledged and shown",
            drained,
            f"{sent:,} lines sent",
        ),
        (
            "stored",
            "every line numbered once (none lost or duplicated), per client 1"
            if args.no_history
            else "every line stored exactly once (none lost or duplicated)",
            rows == distinct == sent and not unstored,
            f"{rows:,} stored, {distinct:,} distinct, of {sent:,}",
        ),
        (
            "delivered",
            "every client shown every line once, in the server's order",
            len(matching) == len(members),
            f"{len(matching)}/{len(members)} clients" + (f" ({anomaly})" if anomaly else ""),
        ),
        (
            "connections",
            "no false disconnect (one welcome each, none lost or left)",
            not false_drops,
            f"{len(false_drops)} clients" + (f" ({false_drops[0]})" if false_drops else ""),
        ),
        (
            "memory",
            "server RSS flat: end <= max(start x 1.2, start + 10 MiB)",
            memory.flat,
            f"{memory.start / 1024:.1f} -> {memory.end / 1024:.1f} MiB (x{ratio:.2f}),"
            f" peak {memory.peak / 1024:.1f} MiB, {memory.per_thousand_lines:+.1f} KiB per"
            f" 1,000 lines ({'in memory' if args.no_history else 'on disk'})",
        ),
        (
            "exits",
            "clean exits (clients, server, proxy all 0)",
            not any(codes),
            f"{codes.count(0)}/{len(codes)} processes and clients",
        ),
    ]
    print()
    for line in proxy_report:
        print(f"proxy: {line}")
    print()
    print(f"{'check':<62}result")
    for _, what, ok, detail in checks:
        print(f"{what:<62}{'ok  ' if ok else 'MISS'}  {detail}")
    print(f"\n{wall:.0f} s from the first line to the last check")
    return {
        "clients": args.clients,
        "history": "memory" if args.no_history else "disk",
        "loss": args.loss,
        "duration_s": args.duration,
        "sent": sent,
        "stored": rows,
        "rss_start_kib": memory.start,
        "rss_end_kib": memory.end,
        "rss_peak_kib": memory.peak,
        "rss_kib_per_1000_lines": memory.per_thousand_lines,
        "checks": {key: ok for key, _, ok, _ in checks},
        "details": {key: detail for key, _, _, detail in checks},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--clients", type=int, default=50, help="chat clients (default 50)")
    parser.add_argument(
        "--loss", type=float, default=0.10, help="drop probability each way (default 0.10)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.5, help="lines per second per client (default 0.5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="proxy and pacing (default 1)")
    parser.add_argument(
        "--report", type=float, default=60.0, metavar="S", help="progress every S s (default 60)"
    )
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="run the server with --no-history (history in memory only)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.duration <= 0 or args.clients < 1 or args.rate <= 0 or not 0 <= args.loss < 1:
        parser.error("need --duration > 0, --clients >= 1, --rate > 0 and 0 <= --loss < 1")
    with tempfile.TemporaryDirectory(prefix="rudp-soak-") as directory:
        results = asyncio.run(soak(args, Path(directory)))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    checks = results["checks"]
    assert isinstance(checks, dict)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
