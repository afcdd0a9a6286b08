"""What the benchmarks' pictures share: matplotlib on its Agg backend, latency CDFs, saving.

Why one module: ``throughput.py`` and ``chat_latency.py`` both draw latency distributions, and
the README shows them side by side, so they must look alike (same ticks, same scale).
Importing it needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter

__all__ = ["draw_cdf", "latency_axis", "plt", "save"]

LATENCY_TICKS_MS: Final = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
LATENCY_RANGE_MS: Final = (50, 25_000)  # one-way at 100 ms up to RTO backoffs of seconds


def draw_cdf(axis: Any, samples: list[float], label: str, style: str = "-") -> None:
    """One empirical CDF of ``samples`` (ms), labelled with its p99 and maximum."""
    ordered = sorted(samples)
    shares = [(index + 1) / len(ordered) for index in range(len(ordered))]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    axis.step(ordered, shares, style, where="post",
              label=f"{label}: p99 {p99:,.0f} ms, max {ordered[-1]:,.0f} ms")  # fmt: skip


def latency_axis(axis: Any, title: str, xlabel: str) -> None:
    """A log-scale latency axis in ms with plain tick labels, the share of messages up the side."""
    axis.set_xscale("log")
    axis.set_xlim(*LATENCY_RANGE_MS)
    axis.xaxis.set_major_locator(FixedLocator(LATENCY_TICKS_MS))
    axis.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel(xlabel)
    axis.set_ylabel("share of messages delivered within (CDF)")
    axis.set_ylim(0, 1.01)
    axis.grid(True, which="major", alpha=0.3)
    axis.set_title(title, fontsize="medium")
    axis.legend(fontsize="x-small", loc="lower right")


def save(figure: Any, directory: str | Path, name: str) -> str:
    """Lay out, write ``directory/name`` (created if missing) at 100 dpi, close; the path."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path / name, dpi=100)
    plt.close(figure)
    return str(path / name)
