"""Command-line value parsers shared by ``rudp-chat`` and its proxy.

Each turns one flag's text into a value or raises ``argparse.ArgumentTypeError`` saying what was
expected, so argparse exits 2 with one line naming the flag, before anything starts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["count", "host_port", "host_ports", "number", "port", "positive"]

MAX_PORT = 65_535


def number(text: str, low: float, high: float, what: str) -> float:
    """``text`` as a float within ``low..high`` (NaN never is)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive(what: str) -> Callable[[str], float]:
    """A parser of finite numbers > 0, ``what`` naming the unit (``"seconds"``)."""

    def parse(text: str) -> float:
        value = number(text, 0.0, math.inf, f"{what} > 0")
        if value == 0.0 or math.isinf(value):
            raise argparse.ArgumentTypeError(f"expected finite {what} > 0, got {text!r}")
        return value

    return parse


def count(low: int, what: str) -> Callable[[str], int]:
    """A parser of whole numbers ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def port(*, any_allowed: bool) -> Callable[[str], int]:
    """A parser of UDP ports 1..65535; with ``any_allowed``, also 0 (the OS picks a free one)."""
    low = 0 if any_allowed else 1
    what = f"a port within {low}..{MAX_PORT}" + (" (0: any free port)" if any_allowed else "")

    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= MAX_PORT:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return int(text)

    return parse


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, with IPv6 hosts in brackets (``[::1]:9000``); port 0 is allowed (a listener
    picks any free one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > MAX_PORT:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host.removeprefix("[").removesuffix("]"), int(port))


def host_ports(text: str) -> list[tuple[str, int]]:
    """A comma list of ``HOST:PORT`` to connect to (a cluster's nodes): no port 0, no blanks."""
    addresses = []
    for part in text.split(","):
        address = host_port(part.strip())
        if address[1] == 0:
            raise argparse.ArgumentTypeError(f"expected a port within 1..{MAX_PORT} in {text!r}")
        addresses.append(address)
    return addresses
