"""The two-hop chat benchmark, short: every line typed reaches the other client once, in order.

``benchmarks/chat_latency.py`` runs the real server, ``rudp-chat proxy`` at 30 % loss each way
and two ``--plain`` clients; here with a few lines only. Its latency figures are not checked
(a shared 2-core box says nothing about them): only that each line arrived exactly once and in
the order typed, and that the script reports what it measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINES = 4  # per client: 8 lines through both lossy hops


def test_every_line_arrives_once_and_in_order_through_thirty_percent_loss(tmp_path: Path) -> None:
    output = tmp_path / "rows.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chat_latency.py"), "--lines", str(LINES),
         "--losses", "0.3", "--seed", "3", "--json", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (row,) = json.loads(output.read_text(encoding="utf-8"))
    assert row["loss"] == 0.3
    assert row["sent"] == 2 * LINES
    assert (row["missing"], row["duplicates"], row["out_of_order"]) == (0, 0, 0)
    assert len(row["samples_ms"]) == 2 * LINES
    assert all(sample > 0 for sample in row["samples_ms"])
    assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] == max(row["samples_ms"])
