"""rudp_chat: a reliable-UDP protocol layer and a chat built on it.

- :mod:`rudp_chat.core`: the sans-IO protocol (frames, connection, listener).
- :mod:`rudp_chat.sim`: the link-impairment model and the virtual-time simulator.
- :mod:`rudp_chat.aio`: the asyncio transport and the lossy UDP proxy.
- :mod:`rudp_chat.chat`: the chat server and client.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
