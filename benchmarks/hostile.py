"""What strangers and hostile clients can make a server hold or send, at full scale.

Usage: python benchmarks/hostile.py [--seed N] [--count N] [--clients N]
                                     [--mode encrypted|insecure]

Issue #4, "Handshake and address validation" and "Resources". The scenarios are the ones
``tests/test_hostile.py`` runs at small counts (imported from there, so the two cannot drift):
``--count`` spoofed HELLOs and ``--count`` random or mutated datagrams from as many addresses
while live users exchange messages, replays, 2^16 connection-id guesses, blind ACK/CLOSE
injection, ``--clients`` hostile clients against the default caps and against the chat
server's own connection configuration (:func:`rudp_chat.chat.sizing.chat_connection_config`,
which must keep them under :data:`CHAT_SERVER_BUDGET_BYTES` in all), and the connection limits.
Everything runs on the virtual-time simulator with seeded randomness, so a seed replays the same
figures (the resident set size excepted: it depends on the allocator).

``--mode`` picks the connections' mode (default: encrypted, as deployed). The hostile clients
always run insecure, so they can write their frames by hand: an authenticated hostile client
seals the same frames, and the caps act below the record layer. In insecure mode the blind
injections that are consistent with the traffic get through; they are shown as "open" (what
``--insecure`` gives up), not as a MISS.

Prints one table row per item with ok or MISS, and exits 1 if any item is a MISS.

Type check: ``MYPYPATH=tests mypy --strict benchmarks/hostile.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_hostile import (
    AMPLIFICATION_LIMIT,
    FLAT_MEMORY_BYTES,
    INJECTIONS,
    MODES,
    MUTATIONS,
    FloodReport,
    HostilePlan,
    captured_session,
    garbage_bytes,
    hello_bytes,
    listener_memory_growth,
    run_garbage_flood,
    run_hello_flood,
    run_hostile_clients,
    run_id_guesses,
    run_injection,
    run_limits,
    run_replay,
)

from rudp_chat.chat.room import RoomLimits
from rudp_chat.chat.sizing import chat_connection_config
from rudp_chat.core import ConnectionConfig, ListenerConfig

GUESSES = 2**16  # the figure; ids are 64 bits, so 2^16 guesses hit with odds 2^-48
HOSTILE_PLAN = HostilePlan(
    spray_per_tick=256, fragments_per_datagram=32, passengers_per_tick=16, big_fragment=60_000
)
"""Harder than the test's: ~37 KB datagrams fill a 4 MiB budget within a second, and 16
in-order messages a tick each carry a ~60 KB passenger, near the most a datagram holds."""
HOSTILE_SECONDS = 2.0
LIMITS = ListenerConfig(max_connections=64, max_connections_per_address=16)
"""The default per-address limit; a table of 64 so that "server full" is reached cheaply."""
RESETS_PER_SECOND = ListenerConfig().resets_per_second
INSECURE = ConnectionConfig(insecure=True)  # for the hostile clients: see the module docstring
CHAT_SERVER_BUDGET_BYTES = 100 * 1024 * 1024
"""What 100 hostile clients may make the chat server hold in all (issue #11): a chat's
messages are at most 64 KiB, so a fraction of the library's bulk-transfer defaults suffices."""


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; else the peak from ``getrusage``)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kib(size: float) -> str:
    return f"{size / 1024:,.1f} KiB"


def mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


@dataclass(frozen=True, slots=True)
class Row:
    item: str
    ok: bool
    figures: list[str]
    verdict: str = ""
    """Overrides ok/MISS where a failure is by design (insecure mode)."""


def live(problem: str) -> str:
    return problem or "live users: every message once, in order"


def flood_rows(name: str, report: FloodReport) -> list[str]:
    tap = report.tap
    return [
        f"{report.count:,} datagrams ({kib(tap.trigger_bytes)}) from {report.count:,} addresses "
        f"in {report.flood_s:.2f} virtual s",
        f"session table: 0 before, at most {report.largest_table} during "
        f"({report.live_clients} live users), {report.table_after} after",
        f"replies to strangers: {dict(tap.replies) or 'none'}, {kib(tap.reply_bytes)} "
        f"= {tap.reply_bytes / max(tap.trigger_bytes, 1):.4f} of the {name} bytes",
        live(report.live_problem),
        *(f"VIOLATION {v}" for v in tap.violations),
    ]


def flat_memory(
    seed: int, count: int, make: Callable[[int, random.Random], bytes]
) -> tuple[bool, str]:
    """Feed ``count`` datagrams straight to a listener, once under tracemalloc, once metering
    the resident set size; flat if the traced growth does not depend on the count."""
    traced = listener_memory_growth(seed, count, make)
    rss = listener_memory_growth(seed, count, make, meter=rss_bytes)
    return traced < FLAT_MEMORY_BYTES, (
        f"memory, {count:,} more after a warm-up: tracemalloc {traced:+,} B "
        f"({traced / count:+.2f} B each; flat if < {kib(FLAT_MEMORY_BYTES)}), RSS {rss / 1024:+,.1f} KiB"
    )


def hello_flood(
    seed: int, count: int, ratios: list[tuple[str, float]], config: ConnectionConfig
) -> list[Row]:
    report = run_hello_flood(seed, count, config)
    ratios.append(("HELLO flood", report.tap.worst_unvalidated_ratio))
    tap, stats = report.tap, report.listener
    hellos = report.kinds["hello"]
    undersized = report.kinds["undersized hello"]
    flat, memory = flat_memory(seed, count, hello_bytes)
    ok = (
        report.live_problem == ""
        and report.accepted == report.live_clients
        and report.largest_table <= report.live_clients
        and report.table_after == 0
        and dict(tap.replies) == {"RetryPacket": hellos}
        and tap.violation_count == 0
        and flat
    )
    return [
        Row("spoofed HELLOs create no state", ok, [*flood_rows("HELLO", report), memory]),
        Row(
            "HELLO under 1200 B gets no answer",
            stats.hellos_too_small == undersized and tap.violation_count == 0,
            [f"{undersized:,} HELLOs of 40-1199 B: {stats.hellos_too_small:,} dropped, 0 answered"],
        ),
    ]


def garbage_flood(
    seed: int, count: int, ratios: list[tuple[str, float]], config: ConnectionConfig
) -> list[Row]:
    report = run_garbage_flood(seed, count, config)
    ratios.append(("garbage flood", report.tap.worst_unvalidated_ratio))
    tap, stats = report.tap, report.listener
    flat, memory = flat_memory(seed, count, garbage_bytes(captured_session(seed, config)))
    resets = tap.replies["ResetPacket"]
    reset_bound = RESETS_PER_SECOND * (1 + report.flood_s)  # burst + rate
    ok = (
        report.live_problem == ""
        and report.accepted == report.live_clients
        and report.largest_table <= report.live_clients
        and report.table_after == 0
        and set(tap.replies) <= {"ResetPacket", "RetryPacket"}
        and tap.worst_reset_ratio < 1
        and resets <= reset_bound
        and tap.violation_count == 0
        and flat
    )
    kinds = ", ".join(f"{kind} {report.kinds[kind]:,}" for kind in MUTATIONS)
    return [
        Row(
            "random/mutated datagrams: no state, no reply but a smaller, rate-limited RESET",
            ok,
            [
                kinds,
                *flood_rows("attack", report),
                f"RESETs {resets:,} (limit {reset_bound:,.0f}), largest {tap.worst_reset_ratio:.3f}"
                f" of its trigger; {stats.resets_suppressed:,} suppressed; "
                f"RETRYs {tap.replies['RetryPacket']:,} to mutations still valid HELLOs",
                f"dropped undecodable {stats.dropped_invalid:,}, unexpected "
                f"{stats.dropped_unexpected:,}, bad tokens {stats.hellos_bad_token:,}",
                memory,
            ],
        )
    ]


def amplification(ratios: list[tuple[str, float]]) -> Row:
    worst = max(ratio for _, ratio in ratios)
    return Row(
        f"unvalidated address gets <= {AMPLIFICATION_LIMIT}x its bytes",
        worst <= AMPLIFICATION_LIMIT,
        [
            "worst bytes sent / received per unvalidated address: "
            + ", ".join(f"{name} {ratio:.3f}x" for name, ratio in ratios)
        ],
    )


def replay(seed: int, ratios: list[tuple[str, float]], config: ConnectionConfig) -> Row:
    report = run_replay(seed, config=config)
    ratios.append(("replays", report.tap.worst_unvalidated_ratio))
    ok = (
        report.live_problem == ""
        and report.address_changes == 0
        and report.accepted == report.clients
        and report.tap.violation_count == 0
    )
    return Row(
        "replayed datagrams: no migration, no injection, no double delivery",
        ok,
        [
            f"{report.replays_elsewhere} replays from other addresses, "
            f"{report.replays_same_address} from the user's own, over 0-2 s",
            f"address changes {report.address_changes}; connections {report.accepted} for "
            f"{report.clients} users; dropped {report.listener.dropped_unexpected}",
            f"replies to other addresses: {dict(report.tap.replies) or 'none'}",
            live(report.live_problem),
        ],
    )


def guesses(seed: int, config: ConnectionConfig) -> Row:
    report = run_id_guesses(seed, GUESSES, config)
    return Row(
        "2^16 connection-id guesses rejected",
        report.accepted == 0 and report.id_bits >= 64 and report.control_accepted,
        [
            f"{report.guesses:,} guesses at each side from the expected address: "
            f"{report.accepted} accepted; ids {report.id_bits} bits",
            f"RESETs {report.resets:,} (largest {report.worst_reset_ratio:.3f} of its trigger); "
            f"the right id reaches the connection: {report.control_accepted}",
        ],
    )


def injections(config: ConnectionConfig) -> list[Row]:
    rows = []
    for name, injection in INJECTIONS.items():
        result = run_injection(name, config=config)
        ok = not result.changed and result.replies == 0 and result.delivered_intact
        by_design = config.insecure and not injection.plaintext_defended
        rows.append(
            Row(
                f"blind injection: {name}{' (needs AEAD)' if by_design else ''}",
                ok,
                [
                    f"changed: {', '.join(result.changed) or 'nothing'}; replies "
                    f"{result.replies}; data intact {result.delivered_intact}"
                ],
                "open" if by_design and not ok else "",
            )
        )
    return rows


def hostile(
    seed: int, clients: int, config: ConnectionConfig, what: str, budget: int | None = None
) -> Row:
    """``clients`` hostile clients against ``config`` (``what`` names it): every connection
    within its caps, and the process's growth within the caps' budget. With ``budget``, what
    the server's connections hold is measured too (tracemalloc of ``rudp_chat.core``: the
    simulated hostile clients, in this process as well, are left out) and must stay under it."""
    report = run_hostile_clients(
        seed,
        clients,
        config,
        duration_s=HOSTILE_SECONDS,
        plan=HOSTILE_PLAN,
        trace=budget is not None,
        meter=rss_bytes,
    )
    ok = (
        report.connected == report.clients
        and report.max_send_buffered <= report.send_cap
        and report.max_reassembly <= report.reassembly_cap
        and (
            report.process_memory <= report.memory_budget
            if budget is None  # the server's connections dominate the process
            else report.core_memory <= min(report.memory_budget, budget)
        )
    )
    figures = [
        f"{report.connected} of {report.clients} still connected after "
        f"{report.virtual_s:.1f} virtual s, {report.datagrams:,} datagrams",
        f"largest send buffer {report.max_send_buffered:,} B (cap send_buffer_size "
        f"{report.send_cap:,})",
        f"largest reassembly {report.max_reassembly:,} B (cap receive_window + one "
        f"datagram + max_message_size {report.reassembly_cap:,})",
        f"process RSS +{mib(report.process_memory)} for {clients} clients "
        f"({mib(report.process_memory / max(clients, 1))} each); budget "
        f"{mib(report.memory_budget)} (connection_memory_bound x {clients})"
        + ("" if budget is None else "; here the hostile clients' side and tracemalloc count too"),
    ]
    if budget is not None:
        figures.append(
            f"the server's connections hold {mib(report.core_memory)} in all "
            f"({mib(report.core_memory / max(clients, 1))} each; tracemalloc of rudp_chat.core); "
            f"budget {mib(budget)}"
        )
    return Row(
        f"{clients} hostile clients (never ack, gaps everywhere) vs {what}: within caps, budget"
        + ("" if budget is None else f", server under {mib(budget)}"),
        ok,
        figures,
    )


def limits(seed: int, clients: int) -> Row:
    others = LIMITS.max_connections
    report = run_limits(seed, clients, others, LIMITS)
    per_address = min(clients, LIMITS.max_connections_per_address)
    expected = min(per_address + others, LIMITS.max_connections)
    ok = (
        report.accepted == expected
        and report.largest_table <= LIMITS.max_connections
        and sum(report.refusals.values()) == clients + others - expected
    )
    return Row(
        "max-clients and per-address limits refuse clearly",
        ok,
        [
            f"{clients} clients from one host, then {others} from others; limits "
            f"{LIMITS.max_connections_per_address} per address, {LIMITS.max_connections} in all",
            f"accepted {report.accepted}, table never above {report.largest_table}; refusals "
            + ", ".join(f"{count} x {detail!r}" for detail, count in report.refusals.items()),
        ],
    )


def print_table(rows: list[Row]) -> None:
    width = max(len(row.item) for row in rows)
    print(f"{'item':<{width}}  result")
    print(f"{'-' * width}  ------")
    for row in rows:
        print(f"{row.item:<{width}}  {row.verdict or ('ok' if row.ok else 'MISS')}")
        for line in row.figures:
            print(f"    {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=100_000, help="datagrams per flood")
    parser.add_argument("--clients", type=int, default=100, help="hostile clients")
    parser.add_argument("--mode", choices=sorted(MODES), default="encrypted")
    args = parser.parse_args(argv)
    if args.count < 100 or args.clients < 1:
        parser.error("need --count >= 100 and --clients >= 1")
    print(
        f"benchmarks/hostile.py --seed {args.seed} --count {args.count} --clients "
        f"{args.clients} --mode {args.mode}"
    )
    config = MODES[args.mode]
    ratios: list[tuple[str, float]] = []
    # first, while the process is fresh: memory freed by a flood would hide this run's growth
    chat = chat_connection_config(INSECURE, RoomLimits().max_users)
    rows = [hostile(args.seed, args.clients, chat, "chat server config", CHAT_SERVER_BUDGET_BYTES)]
    rows += hello_flood(args.seed, args.count, ratios, config)
    rows += garbage_flood(args.seed, args.count, ratios, config)
    replay_row = replay(args.seed, ratios, config)
    rows.append(amplification(ratios))
    rows.append(replay_row)
    rows.append(guesses(args.seed, config))
    rows += injections(config)
    rows.append(hostile(args.seed, args.clients, INSECURE, "library defaults"))
    rows.append(limits(args.seed, args.clients))
    print_table(rows)
    misses = [row.item for row in rows if not row.ok and not row.verdict]
    opened = sum(1 for row in rows if row.verdict)
    print(f"\n{len(rows) - len(misses) - opened} ok, {opened} open by design, {len(misses)} MISS")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
