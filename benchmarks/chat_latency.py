"""Chat latency as a user sees it: a line typed in one client, shown by the other, both hops lossy.

Usage: python benchmarks/chat_latency.py [--lines N] [--losses P,P] [--seed N] [--json PATH]
                                         [--plot DIR] [--before PATH] [--save-before PATH]

Why: the transport's own figures (``throughput.py``'s chat cases) measure one connection; a chat
line takes two, client -> server -> client, and passes the chat server on the way. This runs the
real ``rudp-chat server`` (encrypted, in-memory history) and ``rudp-chat proxy`` in their own
processes, and two ``rudp-chat client --plain`` processes (alice and bob) that both connect
through the proxy, so each line crosses the lossy link twice: alice -> proxy -> server -> proxy
-> bob. The link is the one of ``chat-30`` in ``simulated.py`` and issue 10: one-way
100 ms +- 50 ms, ``P`` random loss each way. Each client types a 200-character line every 2 s
(bob 1 s after alice), ``--lines`` of them; the latency of a line is from writing it to alice's
stdin to reading it from bob's stdout (and the reverse), stamped in this process with
``time.monotonic()``. Every line must arrive exactly once and in the order typed: the JSON
counts what is missing, duplicated or out of order, and the exit status is 1 if any is.

``--plot DIR`` draws the latency CDFs (one panel per loss) of this run ("after") beside the raw
samples stored in ``--before`` (default ``benchmarks/results/chat_latency_before.json``,
measured before the thin-stream work of issue 10), as ``DIR/chat_latency_cdf.png``.
``--save-before PATH`` writes this run's samples in that file's format.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from processes import HelperProcess, chat_server_command

HOST: Final = "127.0.0.1"
DELAY_MS: Final = 100  # one way, each hop: the chat-30 link of issue 10
JITTER_MS: Final = 50
LOSSES: Final = (0.10, 0.30)
LINE_CHARS: Final = 200  # a chat line of chat-30's 200 B
INTERVAL_S: Final = 2.0  # chat-30: one line every 2 s from each side
OFFSET_S: Final = 1.0  # bob types between alice's lines, not at the same instant
LINES: Final = 100  # per client and loss: 200 samples, 200 s per loss
DRAIN_S: Final = 60.0  # after the last line: far beyond any RTO backoff (4 s at most)
JOIN_TIMEOUT_S: Final = 60.0  # both clients welcomed through the loss, on a loaded box
PROXY_READY: Final = re.compile(r"^proxy listening on [0-9.]+:(\d+)", re.MULTILINE)
BEFORE: Final = Path(__file__).resolve().parent / "results" / "chat_latency_before.json"
NAMES: Final = ("alice", "bob")


@dataclass(slots=True)
class Level:
    """One loss level's result: the raw samples and what went wrong."""

    loss: float
    samples_ms: list[float] = field(default_factory=list)
    """Two-hop latency of every line that arrived, both directions, in arrival order."""
    sent: int = 0
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Every line arrived once, in the order typed."""
        return not (self.missing or self.duplicates or self.out_of_order)


class Client:
    """One ``rudp-chat client --plain`` process: typed into, its stdout lines time-stamped."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, name: str, port: int, workdir: Path) -> Client:
        """Start it (pinning the server key in ``workdir``)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rudp_chat", "client", "--plain", "--name", name,
            "--host", HOST, "--port", str(port), "--known-servers", str(workdir / "known"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return cls(process, name)

    async def _read(self) -> None:
        stdout = self.process.stdout
        if stdout is None:
            return
        while line := await stdout.readline():
            self.lines.append((time.monotonic(), line.decode(errors="replace").rstrip("\n")))

    async def wait_line(self, text: str, timeout: float) -> None:
        """Wait until a line equal to ``text`` was shown; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while not any(line == text for _, line in self.lines):
            if time.monotonic() > deadline or self.process.returncode is not None:
                raise TimeoutError(f"{self.name} never showed {text!r}: {self.lines[-5:]}")
            await asyncio.sleep(0.05)

    def type(self, line: str) -> float:
        """Send one line to its stdin; the time it was written."""
        stdin = self.process.stdin
        if stdin is None:
            raise RuntimeError("the client has no stdin pipe")
        stdin.write(line.encode() + b"\n")
        return time.monotonic()

    async def close(self) -> None:
        """End of input (the client leaves), then make sure it is gone."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10.0)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self.reader


def text_of(sender: str, number: int) -> str:
    """The line ``sender`` types as its ``number``-th: its name and number, padded."""
    head = f"{sender} {number:05d} "
    return head + "x" * (LINE_CHARS - len(head))


LINE: Final = re.compile(r"^(alice|bob): (alice|bob) (\d{5}) x+$")


def score(level: Level, typed: dict[str, list[float]], clients: dict[str, Client]) -> None:
    """Fill ``level`` from what each client typed (times) and what the other showed."""
    for receiver, client in clients.items():
        sender = next(name for name in NAMES if name != receiver)
        times = typed[sender]
        seen: set[int] = set()
        last = -1
        for shown_at, line in client.lines:
            match = LINE.match(line)
            if match is None or match[1] != sender:
                continue
            number = int(match[3])
            if number in seen:
                level.duplicates += 1
                continue
            seen.add(number)
            if number < last:
                level.out_of_order += 1
            last = max(last, number)
            level.samples_ms.append(round(1000 * (shown_at - times[number]), 3))
        level.missing += len(times) - len(seen)


async def measure(loss: float, lines: int, seed: int, workdir: Path) -> Level:
    """One loss level: server, proxy, two clients, ``lines`` lines each way."""
    level = Level(loss)
    server = HelperProcess(
        "server",
        chat_server_command(host=HOST, history=None, key_file=workdir / "server_key"),
        workdir,
    )
    helpers = [server]
    clients: dict[str, Client] = {}
    try:
        port = await server.ready()
        proxy = HelperProcess("proxy", proxy_command(port, loss, seed), workdir)
        helpers.append(proxy)
        listen = await proxy.ready(PROXY_READY)
        for name in NAMES:  # one after the other: bob's welcome then lists alice
            clients[name] = await Client.start(name, listen, workdir)
            await clients[name].wait_line(f"*** {name} joined", JOIN_TIMEOUT_S)
        await clients["alice"].wait_line("*** bob joined", JOIN_TIMEOUT_S)
        typed: dict[str, list[float]] = {name: [] for name in NAMES}
        started = time.monotonic()
        schedule = sorted(
            (started + offset + index * INTERVAL_S, name, index)
            for name, offset in zip(NAMES, (0.0, OFFSET_S), strict=True)
            for index in range(lines)
        )
        for due, name, index in schedule:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            typed[name].append(clients[name].type(text_of(name, index)))
        last = {name: text_of(name, lines - 1) for name in NAMES}
        drained = time.monotonic() + DRAIN_S
        for receiver, sender in zip(NAMES, reversed(NAMES), strict=True):
            with contextlib.suppress(TimeoutError):  # scored as missing below
                await clients[receiver].wait_line(
                    f"{sender}: {last[sender]}", max(0.0, drained - time.monotonic())
                )
        level.seconds = round(time.monotonic() - started, 1)
        level.sent = 2 * lines
        score(level, typed, clients)
    finally:
        for client in clients.values():
            await client.close()
        for helper in reversed(helpers):
            await helper.stop()
    return level


def proxy_command(upstream: int, loss: float, seed: int) -> list[str]:
    """``rudp-chat proxy`` with the chat-30 link: loss each way, 100 ms +- 50 ms each way."""
    return [
        sys.executable, "-m", "rudp_chat", "proxy", "--listen", f"{HOST}:0",
        "--upstream", f"{HOST}:{upstream}", "--loss", str(loss), "--delay", str(DELAY_MS),
        "--jitter", str(JITTER_MS), "--seed", str(seed),
    ]  # fmt: skip


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``samples`` (not empty)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(level: Level) -> dict[str, Any]:
    """One JSON row: the figures, the checks and the raw samples."""
    row = asdict(level)
    samples = level.samples_ms
    row["p50_ms"] = percentile(samples, 0.50) if samples else None
    row["p99_ms"] = percentile(samples, 0.99) if samples else None
    row["max_ms"] = max(samples) if samples else None
    return row


def plot(after: list[dict[str, Any]], before_path: Path, directory: Path) -> str:
    """The CDFs of this run beside those stored in ``before_path``, one panel per loss."""
    from figures import draw_cdf, latency_axis, plt, save

    before = json.loads(before_path.read_text(encoding="utf-8"))
    commit = before["measured"]["commit"][:7]
    losses = sorted({row["loss"] for row in after} | {row["loss"] for row in before["rows"]})
    figure, axes = plt.subplots(1, len(losses), figsize=(6 * len(losses), 4.5), squeeze=False)
    for axis, loss in zip(axes[0], losses, strict=True):
        for label, rows, style in (
            (f"before ({commit})", before["rows"], "--"),
            ("this run", after, "-"),
        ):
            row = next((row for row in rows if row["loss"] == loss), None)
            if row is not None and row["samples_ms"]:
                draw_cdf(axis, row["samples_ms"], label, style)
        latency_axis(
            axis,
            f"{100 * loss:.0f} % loss each way on both hops",
            "latency of a chat line, client -> server -> client (ms, log scale)",
        )
    figure.suptitle(
        f"rudp-chat: two --plain clients through rudp-chat proxy ({DELAY_MS} \u00b1 {JITTER_MS} ms "
        f"each way), a {LINE_CHARS}-character line every {INTERVAL_S:g} s from each"
    )
    return save(figure, directory, "chat_latency_cdf.png")


async def run(args: argparse.Namespace) -> list[Level]:
    levels = []
    for index, loss in enumerate(args.losses):
        with tempfile.TemporaryDirectory(prefix="chat-latency-") as workdir:
            level = await measure(loss, args.lines, args.seed + index, Path(workdir))
        levels.append(level)
        print(
            f"loss {100 * loss:4.0f} %: {len(level.samples_ms)} of {level.sent} lines, "
            f"p50 {percentile(level.samples_ms, 0.5) if level.samples_ms else 0:7.0f} ms, "
            f"p99 {percentile(level.samples_ms, 0.99) if level.samples_ms else 0:7.0f} ms, "
            f"max {max(level.samples_ms, default=0):7.0f} ms; missing {level.missing}, "
            f"duplicated {level.duplicates}, out of order {level.out_of_order} "
            f"({level.seconds:.0f} s)",
            flush=True,
        )
    return levels


def _losses(text: str) -> list[float]:
    losses = [float(part) for part in text.split(",") if part.strip()]
    if not losses or not all(0 <= loss < 1 for loss in losses):
        raise argparse.ArgumentTypeError("need probabilities 0 <= P < 1, comma-separated")
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--lines", type=int, default=LINES,
                        help=f"lines each client types per loss (default {LINES})")  # fmt: skip
    parser.add_argument("--losses", type=_losses, default=list(LOSSES),
                        help="loss each way, comma-separated (default 0.1,0.3)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="the proxy's seed (default 1)")
    parser.add_argument("--json", type=Path, help="write the rows (with raw samples) here")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write the CDF PNG into DIR")
    parser.add_argument("--before", type=Path, default=BEFORE,
                        help="the stored 'before' samples the plot compares with")  # fmt: skip
    parser.add_argument("--save-before", type=Path, metavar="PATH",
                        help="store this run's samples as the 'before' of a later plot")  # fmt: skip
    args = parser.parse_args(argv)
    if args.lines < 1:
        parser.error("--lines must be at least 1")
    measured = _provenance(args)  # before the run: the commit measured, the load at the start
    levels = asyncio.run(run(args))
    measured["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    rows = [summary(level) for level in levels]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if args.save_before:
        args.save_before.parent.mkdir(parents=True, exist_ok=True)
        stored = {"label": "before thin streams", "measured": measured, "rows": rows}
        args.save_before.write_text(json.dumps(stored, indent=1), encoding="utf-8")
    if args.plot:
        print(f"wrote {plot(rows, args.before, args.plot)}")
    return 0 if all(level.clean for level in levels) else 1


def _provenance(args: argparse.Namespace) -> dict[str, Any]:
    """Where stored samples came from: the command, the commit and the machine's load."""
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
        cwd=Path(__file__).resolve().parent,
    ).stdout.strip()  # fmt: skip
    return {
        "command": " ".join(["python", "benchmarks/chat_latency.py", *sys.argv[1:]]),
        "commit": commit,
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_average_start": [round(value, 2) for value in os.getloadavg()],
        "lines": args.lines,
    }


if __name__ == "__main__":
    sys.exit(main())
