"""Regenerate every picture of the README: one command, about 35 minutes.

Usage: python benchmarks/pictures.py [DIR]   (default: docs/img)

Runs ``throughput.py --only lossy,chat-10,chat-30,chat-burst --plot DIR`` (goodput against loss
and the chat-latency CDFs of rudp, kcp and aioquic through the proxy; needs the ``bench`` extra)
and then ``chat_latency.py --plot DIR`` (the two-hop chat latency CDFs at 10 % and 30 % loss, this
run beside the stored samples from before the thin-stream work). Exits 1 if either does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import chat_latency
import throughput

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks with ``--plot``; the worse exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(__doc__, file=sys.stderr)
        return 2
    directory = str(Path(args[0]) if args else DEFAULT_DIR)
    only = "lossy,chat-10,chat-30,chat-burst"
    status = throughput.main(["--only", only, "--plot", directory])
    return max(status, chat_latency.main(["--plot", directory]))


if __name__ == "__main__":
    sys.exit(main())
