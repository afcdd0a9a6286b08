"""``python -m rudp_chat``: the same as the ``rudp-chat`` command."""

from __future__ import annotations

from rudp_chat.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
