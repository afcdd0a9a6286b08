"""Runs one case: a server and a client peer in two spawned processes, optionally a proxy between.

Every wait has a deadline; whatever happens, the processes are stopped, then terminated, then
killed, so a hung peer becomes a :class:`PeerError` and never outlives its case.
"""

from __future__ import annotations

import cProfile
import importlib
import multiprocessing
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import IO, Any

from .common import Address, Job, Result, StopFlag

__all__ = ["Link", "Outcome", "PeerError", "run_pair"]

SETUP_TIMEOUT_S = 30.0  # spawning, importing and binding: seconds even on a loaded 2-core box
GRACE_S = 10.0  # past the case's own length before the parent gives up on a peer
READY_LINE = re.compile(r"proxy listening on (?P<host>\S+):(?P<port>\d+) ->")
REPORT_LINE = re.compile(
    r"^(?P<way>up|down)\s+forwarded (?P<forwarded>\d+), dropped (?P<dropped>\d+),"
    r".*queue drops (?P<queue_drops>\d+).*\(of (?P<offered>\d+) offered\)"
)


class PeerError(RuntimeError):
    """A peer raised, died, or did not answer in time; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Link:
    """The proxy's impairments, each way: ``python -m rudp_chat.aio.proxy`` flags."""

    loss: float
    """Probability of a random drop."""
    delay_ms: float
    rate_kbit: float
    queue: int
    """Drop-tail queue at the bottleneck, in datagrams."""
    seed: int = 1
    jitter_ms: float = 0.0
    """The delay varies by up to this much either way."""
    loss_burst: float = 1.0
    """Mean run of drops (Gilbert-Elliott); 1: independent drops."""


@dataclass(frozen=True, slots=True)
class _Task:
    """What a child process runs: one side of one case."""

    role: str
    """"server" or "client"."""
    module: str
    job: Job
    address: Address | None
    """Where the client connects; None for the server."""
    profile: str | None
    """Where to write cProfile stats; None: no profiling."""


def _child(task: _Task, results: Any, stop: StopFlag) -> None:
    """Process entry: run one peer and put ``(role, "result" | "error", payload)`` on ``results``."""
    role = task.role
    try:
        peer = importlib.import_module(task.module)

        def ready(bound: Address) -> None:
            results.put((role, "ready", tuple(bound[:2])))

        def call() -> Result:
            if role == "server":
                result: Result = peer.server(task.job, ready, stop)
            else:
                result = peer.client(task.job, task.address, stop)
            return result

        if task.profile:
            # wall time (a CPU-time clock costs a syscall per call and distorts the run): idle
            # waits show up as the event loop's select/epoll
            profiler = cProfile.Profile()
            result = profiler.runcall(call)
            profiler.dump_stats(task.profile)
        else:
            result = call()
        results.put((role, "result", result))
    except BaseException:
        results.put((role, "error", traceback.format_exc(limit=8)))


def _stop_process(process: BaseProcess, patience: float) -> None:
    process.join(patience)
    if process.is_alive():
        process.terminate()
        process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join(2.0)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one case's processes reported."""

    server: Result
    client: Result
    proxy: dict[str, int]
    """The proxy's closing counts, e.g. ``up_queue_drops``, ``up_offered``; empty without one."""


class _Proxy:
    """``python -m rudp_chat.aio.proxy`` in its own process, ready once it prints its address."""

    def __init__(self, upstream: Address, link: Link, deadline: float) -> None:
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by close()
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump: threading.Thread | None = None
        args = [
            sys.executable,
            "-m",
            "rudp_chat.aio.proxy",
            "--listen",
            f"{upstream[0]}:0",
            "--upstream",
            f"{upstream[0]}:{upstream[1]}",
            "--loss",
            str(link.loss),
            "--delay",
            str(link.delay_ms),
            "--rate",
            str(link.rate_kbit),
            "--queue",
            str(link.queue),
            "--seed",
            str(link.seed),
            "--jitter",
            str(link.jitter_ms),
            "--loss-burst",
            str(link.loss_burst),
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            self.address = self._await_ready(deadline)
        except BaseException:
            self.close()
            raise

    def _await_ready(self, deadline: float) -> Address:
        lines = self._lines
        stdout = self.process.stdout
        if stdout is None:
            raise PeerError("proxy has no stdout pipe")
        self._pump = threading.Thread(target=_pump, args=(stdout, lines), daemon=True)
        self._pump.start()
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise PeerError(f"proxy exited with {code}: {self.errors()}") from None
                continue
            match = READY_LINE.search(line)
            if match:
                return match["host"].strip("[]"), int(match["port"])
        raise PeerError("proxy printed no ready line in time")

    def errors(self) -> str:
        """The last lines the proxy wrote to stderr."""
        self._log.seek(0)
        return " | ".join(self._log.read().strip().splitlines()[-3:])

    def close(self) -> dict[str, int]:
        """Stop the proxy (SIGTERM, then SIGKILL if it lingers); its closing counts."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3.0)
        self._log.close()
        if self._pump is not None:
            self._pump.join(1.0)
        if self.process.stdout is not None:
            self.process.stdout.close()
        counts: dict[str, int] = {}
        while not self._lines.empty():
            match = REPORT_LINE.search(self._lines.get())
            if match:
                way = match["way"]
                for key in ("forwarded", "dropped", "queue_drops", "offered"):
                    counts[f"{way}_{key}"] = int(match[key])
        return counts


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    """Read the proxy's stdout to its end, so a chatty proxy never blocks on a full pipe."""
    for line in stream:
        lines.put(line)


def run_pair(
    module: str,
    job: Job,
    *,
    timeout: float,
    link: Link | None = None,
    profile_dir: str | None = None,
    tick: Callable[[], None] = lambda: None,
) -> Outcome:
    """Run ``module``'s server and client on ``job``, through a proxy when ``link`` is given.

    ``timeout`` bounds the case after setup. Stops both when either returns. ``tick`` is called
    about every 0.2 s (the progress line). Raises ``PeerError``.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    stop = context.Event()
    processes: list[BaseProcess] = []
    proxy: _Proxy | None = None
    got: dict[str, Result] = {}
    profiles = {
        role: os.path.join(profile_dir, f"{role}.prof") if profile_dir else None
        for role in ("server", "client")
    }

    def start(role: str, address: Address | None) -> None:
        process = context.Process(
            target=_child,
            args=(_Task(role, module, job, address, profiles[role]), results, stop),
            name=role,
            daemon=True,
        )
        process.start()
        processes.append(process)

    def expect(kind: str, deadline: float) -> tuple[str, Any]:
        while True:
            tick()
            try:
                role, what, payload = results.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise PeerError(f"timed out waiting for {kind}") from None
                dead = [p for p in processes if p.exitcode is not None and p.name not in got]
                if not dead:
                    continue
                try:  # its last message may still be on its way through the queue
                    role, what, payload = results.get(timeout=1.0)
                except queue.Empty:
                    raise PeerError(f"{dead[0].name} exited with {dead[0].exitcode}") from None
            if what == "error":
                raise PeerError(f"{role}: {payload.strip().splitlines()[-1]}\n{payload}")
            return role, payload

    try:
        start("server", None)
        _, bound = expect("the server to bind", time.monotonic() + SETUP_TIMEOUT_S)
        target: Address = bound
        if link is not None:
            proxy = _Proxy(bound, link, time.monotonic() + SETUP_TIMEOUT_S)
            target = proxy.address
        start("client", target)
        deadline = time.monotonic() + SETUP_TIMEOUT_S + timeout
        while len(got) < 2:
            role, result = expect("results", deadline)
            got[role] = result
            stop.set()  # the first result ends the case: the other side wraps up
            deadline = min(deadline, time.monotonic() + GRACE_S)
    finally:
        stop.set()
        for process in processes:
            _stop_process(process, 3.0)
        counts = proxy.close() if proxy is not None else {}
        results.close()
        results.join_thread()
    return Outcome(got["server"], got["client"], counts)
