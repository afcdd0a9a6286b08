"""Who runs a room: its operators and banned keys (client static keys), and whether only
operators set its topic (``+t``). Stored with the room, so it survives a restart."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

__all__ = ["KEY_BYTES", "MAX_BANS", "MAX_OPERATORS", "Access"]

KEY_BYTES: Final = 32  # an X25519 public key
MAX_OPERATORS: Final = 16  # a small community's moderators; bounds the stored record
MAX_BANS: Final = 200  # keys banned per room: ample for a small community, a bounded record


@dataclass(frozen=True, slots=True)
class Access:
    """A room's operators and bans, each a tuple of client keys in the order added."""

    operators: tuple[bytes, ...] = ()
    bans: tuple[bytes, ...] = ()
    topic_locked: bool = False
    """``+t``: only operators set the topic."""

    def with_operator(self, key: bytes) -> Access:
        """``key`` added as an operator (and no longer banned)."""
        return replace(
            self,
            operators=(*self.operators, key),
            bans=tuple(k for k in self.bans if k != key),
        )

    def with_ban(self, key: bytes) -> Access:
        """``key`` banned (and no longer an operator)."""
        return replace(
            self,
            operators=tuple(k for k in self.operators if k != key),
            bans=(*self.bans, key),
        )

    def without_ban(self, key: bytes) -> Access:
        return replace(self, bans=tuple(k for k in self.bans if k != key))

    def to_row(self) -> tuple[bytes, bytes, int]:
        """``(operators, bans, topic_locked)``: keys concatenated, as stored."""
        return b"".join(self.operators), b"".join(self.bans), int(self.topic_locked)

    @classmethod
    def from_row(cls, operators: bytes, bans: bytes, topic_locked: int) -> Access:
        return cls(_split(operators), _split(bans), bool(topic_locked))


def _split(keys: bytes) -> tuple[bytes, ...]:
    return tuple(keys[i : i + KEY_BYTES] for i in range(0, len(keys), KEY_BYTES))
