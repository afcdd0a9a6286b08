"""Impaired links and a deterministic virtual-time network for testing the protocol."""

from __future__ import annotations

from rudp_chat.sim.link import Link, LinkProfile, LinkStats, RandomSource
from rudp_chat.sim.network import TIMER_GUARD_S, Address, Network, NetworkStats, Node

__all__ = [
    "TIMER_GUARD_S",
    "Address",
    "Link",
    "LinkProfile",
    "LinkStats",
    "Network",
    "NetworkStats",
    "Node",
    "RandomSource",
]
