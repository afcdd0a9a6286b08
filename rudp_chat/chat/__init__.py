"""The chat built on the reliable-UDP transport.

- :mod:`.protocol`: chat messages ↔ bytes (the one place that encodes them).
- :mod:`.text`: name rules and neutralising text before it reaches a terminal.
- :mod:`.room`: the sans-IO chat: users, the order of messages, rate limits, commands.
- :mod:`.history`: the SQLite store behind acknowledgements and history.
- :mod:`.server`, :mod:`.client`: the asyncio shells; :mod:`.demo`: the scripted demo.
"""

from __future__ import annotations

__all__: list[str] = []
