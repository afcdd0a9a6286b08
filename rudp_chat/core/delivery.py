"""The fate of a sent packet, told to each frame it carried (aioquic's delivery handlers).

When a packet is built, every frame that needs to know what became of it registers a
handler; loss recovery later calls each with ``ACKED`` or ``LOST``. A DATA fragment is
then forgotten or queued again, our graceful CLOSE is done or due again, and the
connection needs no special case per frame kind.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = ["Delivery", "DeliveryHandler"]


class Delivery(enum.Enum):
    """What loss recovery concluded about a packet."""

    ACKED = "acked"
    """An ACK range covered it: its frames arrived."""
    LOST = "lost"
    """The packet or time threshold, or a second timeout, condemned it."""
    ACKED_LATE = "acked late"
    """An ACK covered it after it was declared lost (the ACK, not the packet, was late)."""


DeliveryHandler = Callable[[Delivery], None]
