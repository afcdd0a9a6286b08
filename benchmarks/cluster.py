"""Cluster figures: one chat load on a lone server, then on 1, 2 and 3 nodes sharing one Redis,
then with one of 3 nodes killed (``kill -9``) in the middle.

Usage: python benchmarks/cluster.py [--clients C] [--interval S] [--duration D] [--processes P]
                                    [--appendfsync always|everysec] [--insecure] [--quick]
                                    [--repeat N] [--only KINDS] [--json PATH] [--plot DIR]
                                    [--profile DIR]

The load is ``fanout.py``'s (its load processes, reused): C clients in one room, each sending one
100 B line every S seconds for D seconds, in P processes apart from the servers; client ``i``
starts on node ``i mod N``. Every server keeps its history in memory (``--no-history``: the
lone server's usual benchmark setting; a node still stores every line in Redis first). Rows:

- ``single``: ``rudp-chat server`` without ``--redis``, as today: the baseline;
- ``cluster-N``: N ``rudp-chat server --redis`` nodes and one ``redis-server`` (fresh for each
  row, AOF with ``--appendfsync``, default ``always``: nothing acknowledged is lost);
- ``failover``: 3 nodes; a third of the way into the sending, node 0 is killed with SIGKILL.
  Its clients (which know all three nodes, and notice a dead one within 2 s) move on.

Reported per row: deliveries (lines delivered to a client other than their sender, each once)
per second, p50 / p99 delivery latency, lost / duplicated / out-of-order deliveries, and CPU µs
per delivery: the ``utime + stime`` (``/proc/PID/stat``) of every server process and of
``redis-server``, over the sending and its drain, divided by the deliveries; ``cpu_ratio`` is
that over the lone server's. The failover row adds how long the dead node's clients took to be
back (from the kill to their ``reconnected``), p50 and p99; its CPU is not reported (the dead
node's share cannot be read after the kill). On a 2-core machine the deliveries per second are
bounded by the cores, whatever the node count: CPU per delivery is the figure that carries over.

``--quick`` (6 clients, 2 lines a second each, 3 s; rows single, cluster-3 and failover) runs in
under a minute: the smoke test's. ``--plot DIR`` draws ``cluster.png``: CPU per delivery and p99
latency per row.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from fanout import HOST, STARTUP_LIMIT_S, drive, percentile, server_flags, tally
from processes import HelperProcess, chat_server_command, until
from throughput import Progress

NODE_COUNTS: Final = (1, 2, 3)
FAILOVER_NODES: Final = 3
KILL_AT: Final = 1 / 3  # of the sending time, when the failover row kills node 0
REDIS_READY: Final = "Ready to accept connections"  # redis-server's log line once it serves


@dataclass(slots=True)
class Row:
    """One configuration's figures."""

    kind: str
    """``single``, ``cluster-N`` or ``failover``."""
    nodes: int
    clients: int
    deliveries: int
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    lost: int
    duplicated: int
    out_of_order: int
    cpu_us_per_delivery: float | None
    """Servers' and redis-server's CPU per delivery (None for the failover row)."""
    redis_cpu_share: float | None
    """Of that CPU, redis-server's part."""
    process_cpu_s: list[float]
    """CPU seconds of each server, then of redis-server, over the sending and drain."""
    cpu_ratio: float | None
    """``cpu_us_per_delivery`` over the ``single`` row's."""
    moved: int = 0
    """Failover: clients of the killed node."""
    back: int = 0
    """Failover: of those, how many were back on another node."""
    reconnect_p50_ms: float | None = None
    reconnect_p99_ms: float | None = None
    reconnect_ms: list[float] = field(default_factory=list)
    """Failover: each moved client's time from the kill to its ``reconnected``, in order."""
    round: int = 1
    """Which of ``--repeat`` rounds (each runs every kind once, in turn)."""
    load: str = ""
    """``/proc/loadavg`` at the end of the row: the machine's other work."""


def _target(args: argparse.Namespace) -> str:
    """``fanout.py``'s name for the servers and clients this run uses."""
    return "rudp-insecure" if args.insecure else "rudp"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Cluster:
    """A redis-server (on none, the lone server) and N chat servers, as deployed."""

    def __init__(self, args: argparse.Namespace, label: str, nodes: int, workdir: Path) -> None:
        self.args = args
        self.label = label
        self.nodes = nodes
        self.workdir = workdir
        self.redis: HelperProcess | None = None
        self.servers: list[HelperProcess] = []
        self.ports: list[int] = []

    async def start(self, *, clustered: bool) -> None:
        """Start Redis (if ``clustered``) and the servers; wait until all of them serve.
        Raises RuntimeError if one does not start."""
        extra = server_flags(self.args, _target(self.args))
        if clustered:
            redis_port = _free_port()
            executable = shutil.which("redis-server") or "/usr/bin/redis-server"
            command = [
                executable, "--port", str(redis_port), "--bind", HOST, "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes", "--appendfsync", self.args.appendfsync,
            ]  # fmt: skip
            self.redis = HelperProcess("redis", command, self.workdir)
            if not await until(lambda: REDIS_READY in self.redis_log(), STARTUP_LIMIT_S):
                raise RuntimeError(f"redis-server did not start: {self.redis_log()[-2000:]}")
            extra += ["--redis", f"redis://{HOST}:{redis_port}/0"]
        for index in range(self.nodes):
            node = ["--node", f"n{index}"] if clustered else []
            command = chat_server_command(host=HOST, history=None, extra=[*extra, *node])
            if self.args.profile is not None:  # cProfile writes the file when the node exits
                self.args.profile.mkdir(parents=True, exist_ok=True)
                name = f"{self.label}-node{index}.pstats"
                command[1:1] = ["-m", "cProfile", "-o", str(self.args.profile / name)]
            self.servers.append(HelperProcess(f"node{index}", command, self.workdir))
        self.ports = [await server.ready(timeout=STARTUP_LIMIT_S) for server in self.servers]

    def redis_log(self) -> str:
        return "" if self.redis is None else self.redis.stdout.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The processes whose CPU is the cluster's: the servers, then redis-server (last)."""
        everyone = [*self.servers, *([] if self.redis is None else [self.redis])]
        return [helper.process.pid for helper in everyone]

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop(timeout=STARTUP_LIMIT_S)
        if self.redis is not None:
            await self.redis.stop(timeout=STARTUP_LIMIT_S)


async def _steady(args: argparse.Namespace, kind: str, nodes: int, single: Row | None) -> Row:
    """A row without faults: the load on ``nodes`` servers (clustered unless ``single``)."""
    with tempfile.TemporaryDirectory() as directory:
        cluster = Cluster(args, kind, nodes, Path(directory))
        try:
            await cluster.start(clustered=kind != "single")
            outputs, cpu = await drive(args, _target(args), cluster.ports, cluster.pids())
        finally:
            await cluster.stop()
    total = sum(cpu)
    figures = tally(args, _target(args), outputs, total)
    per_delivery = figures.cpu_us_per_delivery
    redis_share = cpu[-1] / total if cluster.redis is not None and total > 0 else None
    baseline = None if single is None or kind == "single" else single.cpu_us_per_delivery
    ratio = per_delivery / baseline if baseline else None
    return Row(
        kind, nodes, args.clients, figures.deliveries, figures.deliveries_per_s, figures.p50_ms,
        figures.p99_ms, figures.lost, figures.duplicated, figures.out_of_order, per_delivery,
        redis_share, cpu, ratio, load=figures.load,
    )  # fmt: skip


async def _failover(args: argparse.Namespace) -> Row:
    """The load on 3 nodes, node 0 killed a third of the way into the sending."""
    args = argparse.Namespace(**{**vars(args), "failover": True})
    killed: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        cluster = Cluster(args, "failover", FAILOVER_NODES, Path(directory))
        try:
            await cluster.start(clustered=True)
            victim = cluster.servers[0]

            async def kill() -> None:
                await asyncio.sleep(args.duration * KILL_AT)
                victim.process.send_signal(signal.SIGKILL)
                killed.append(time.monotonic())
                victim.kill()  # reaped

            survivors = [p for p in cluster.pids() if p != victim.process.pid]
            outputs, _ = await drive(args, _target(args), cluster.ports, survivors, during=kill)
        finally:
            await cluster.stop()
    figures = tally(args, _target(args), outputs, 0.0)
    _name_missing(args, outputs)
    moved = [me for me in range(args.clients) if me % FAILOVER_NODES == 0]
    back = {me: at for output in outputs for me, at in output["reconnected"] if me in moved}
    took = [(at - killed[0]) * 1000 for at in back.values()]
    return Row(
        "failover", FAILOVER_NODES, args.clients, figures.deliveries, figures.deliveries_per_s,
        figures.p50_ms, figures.p99_ms, figures.lost, figures.duplicated, figures.out_of_order,
        None, None, [], None, moved=len(moved), back=len(back),
        reconnect_p50_ms=percentile(took, 0.50) if took else None,
        reconnect_p99_ms=percentile(took, 0.99) if took else None, reconnect_ms=sorted(took),
        load=figures.load,
    )  # fmt: skip


def _name_missing(args: argparse.Namespace, outputs: list[dict[str, Any]]) -> None:
    """On stderr: which deliveries never came (receiver, sender, line), the first few."""
    lines = round(args.duration / args.interval)
    got = {(r, s, i) for output in outputs for r, s, i, _ in output["received"]}
    clients = range(args.clients)
    missing = [
        (r, s, i) for r in clients for s in clients if r != s for i in range(lines)
        if (r, s, i) not in got
    ]  # fmt: skip
    if missing:
        receivers = sorted({r for r, _, _ in missing})
        senders = sorted({s for _, s, _ in missing})
        print(f"missing {len(missing)}: receivers {receivers}, senders {senders}, "
              f"first {missing[:5]}", file=sys.stderr)  # fmt: skip


async def run(args: argparse.Namespace) -> list[Row]:
    kinds = [("single", 1), *((f"cluster-{n}", n) for n in args.node_counts), ("failover", 3)]
    if args.only:
        kinds = [(kind, nodes) for kind, nodes in kinds if kind in args.only.split(",")]
    progress = Progress(len(kinds) * args.repeat)
    rows: list[Row] = []
    single: Row | None = None
    for round_, (kind, nodes) in itertools.product(range(1, args.repeat + 1), kinds):
        progress.start(f"{kind} (round {round_} of {args.repeat})")
        if kind == "failover":
            rows.append(await _failover(args))
        else:
            rows.append(await _steady(args, kind, nodes, single))
        rows[-1].round = round_
        if kind == "single":
            single = rows[-1]
    progress.done()
    return rows


def medians(rows: Sequence[Row]) -> list[str]:
    """Per kind over the rounds: the median CPU per delivery and ratio, with their range."""
    lines = []
    for kind in dict.fromkeys(row.kind for row in rows):
        cpu = sorted(
            r.cpu_us_per_delivery for r in rows if r.kind == kind and r.cpu_us_per_delivery
        )
        if len(cpu) < 2:
            continue
        text = f"{kind:>9}: CPU per delivery median {statistics.median(cpu):.0f} us ({cpu[0]:.0f}-{cpu[-1]:.0f})"
        ratios = sorted(r.cpu_ratio for r in rows if r.kind == kind and r.cpu_ratio)
        if ratios and kind != "single":
            text += f", {statistics.median(ratios):.2f}x the lone server's ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        lines.append(text + f" over {len(cpu)} rounds")
    return lines


def describe(row: Row) -> str:
    """The row in one line."""
    text = (
        f"{row.kind:>9}: {row.deliveries:,} deliveries ({row.deliveries_per_s:,.0f}/s), "
        f"p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms; lost {row.lost}, duplicated "
        f"{row.duplicated}, out of order {row.out_of_order}"
    )
    if row.cpu_us_per_delivery is not None:
        text += f"; CPU {row.cpu_us_per_delivery:.0f} us per delivery"
        if row.redis_cpu_share is not None:
            text += f" ({row.redis_cpu_share:.0%} of it redis-server's)"
        if row.cpu_ratio is not None and row.kind != "single":
            text += f" ({row.cpu_ratio:.2f}x the lone server's)"
    if row.kind == "failover":
        p50, p99 = row.reconnect_p50_ms, row.reconnect_p99_ms
        took = "none" if p50 is None or p99 is None else f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms"
        text += f"; {row.back} of {row.moved} moved clients back: {took}"
    return text + f"; load {row.load}"


def plot(rows: Sequence[Row], directory: Path) -> str:
    """Per kind, the median over the rounds of the CPU per delivery and of the p99 latency, a
    dot per round: ``directory/cluster.png``."""
    from figures import plt, save  # matplotlib: the bench extra

    figure, (cpu, latency) = plt.subplots(1, 2, figsize=(11, 4))
    kinds = list(dict.fromkeys(row.kind for row in rows))
    panels = (
        (cpu, "cpu_us_per_delivery", "CPU µs per delivery (servers + redis-server)"),
        (latency, "p99_ms", "p99 delivery latency, ms"),
    )
    for axis, name, label in panels:
        for place, kind in enumerate(kinds):
            values = [getattr(row, name) for row in rows if row.kind == kind]
            values = [value for value in values if value is not None]
            if values:
                axis.bar(place, statistics.median(values), color="#9ecae1")
                axis.plot([place] * len(values), values, "k.")
        axis.set_xticks(range(len(kinds)), kinds)
        axis.set_ylabel(label)
        axis.grid(True, axis="y", alpha=0.3)
    rounds = max(row.round for row in rows)
    figure.suptitle(f"{rows[0].clients} clients; bars: medians of {rounds} rounds, dots: each")
    return save(figure, directory, "cluster.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=30, help="C (default %(default)s)")
    parser.add_argument("--interval", type=float, default=0.5, metavar="S",
                        help="seconds between a client's lines (default %(default)s)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=20.0, metavar="D",
                        help="seconds sending, per row (default %(default)s)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=2, help="load processes")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always",
                        help="redis-server's AOF fsync policy (default %(default)s)")  # fmt: skip
    parser.add_argument("--insecure", action="store_true", help="servers and clients unencrypted")
    parser.add_argument("--quick", action="store_true", help="6 clients, 3 s, 3 rows: under 60 s")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as a JSON list")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write cluster.png into DIR")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run every row N times, in turn (CPU figures: medians)")  # fmt: skip
    parser.add_argument("--only", metavar="KINDS",
                        help="run only these rows, e.g. single,cluster-1 (a comma list)")  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run every server under cProfile, into DIR/ROW-nodeN.pstats")  # fmt: skip
    args = parser.parse_args(argv)
    args.node_counts = NODE_COUNTS
    if args.quick:
        args.clients, args.interval, args.duration, args.node_counts = 6, 0.5, 3.0, (3,)
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        print("cluster: needs redis-server (apt-get install redis-server)", file=sys.stderr)
        return 2
    rows = asyncio.run(run(args))
    for row in rows:
        print(f"cluster {describe(row)}")
    for line in medians(rows):
        print(f"cluster median {line}")
    if args.json is not None:
        Path(args.json).write_text(json.dumps([asdict(row) for row in rows], indent=2))
    if args.plot is not None:
        print(f"wrote {plot(rows, args.plot)}")
    faults = sum(row.lost + row.duplicated + row.out_of_order for row in rows)
    stranded = sum(row.moved - row.back for row in rows)
    return 0 if faults == 0 and stranded == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
