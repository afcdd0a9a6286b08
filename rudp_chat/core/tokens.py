"""Stateless server secrets: address-validation tokens (RETRY) and reset tokens (RESET).

Both are HMACs under one per-listener secret, so the server keeps no state for a
HELLO until its sender proves it receives at the address it claims.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from .frames import RESET_TOKEN_SIZE

__all__ = ["TokenIssuer"]

_STAMP = struct.Struct(">q")  # milliseconds of the caller's clock
_MAC_SIZE = 16


def _address_bytes(address: tuple[str, int]) -> bytes:
    return f"{address[0]}|{address[1]}".encode()


class TokenIssuer:
    """Mints and checks tokens; ``secret`` must come from a cryptographic random source."""

    __slots__ = ("_secret", "lifetime")

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret needs at least 128 bits")
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, *parts: bytes) -> bytes:
        return hmac.new(self._secret, b"\0".join(parts), hashlib.sha256).digest()[:_MAC_SIZE]

    def retry_token(self, client_id: bytes, address: tuple[str, int], now: float) -> bytes:
        """A token binding the client's id and address to the time it was issued."""
        stamp = _STAMP.pack(int(now * 1000))
        return stamp + self._mac(b"retry", stamp, client_id, _address_bytes(address))

    def check_retry_token(
        self, token: bytes, client_id: bytes, address: tuple[str, int], now: float
    ) -> bool:
        """True if this listener issued ``token`` for this id and address within ``lifetime``."""
        if len(token) != _STAMP.size + _MAC_SIZE:
            return False
        stamp = token[: _STAMP.size]
        expected = self._mac(b"retry", stamp, client_id, _address_bytes(address))
        if not hmac.compare_digest(expected, token[_STAMP.size :]):
            return False
        age = now - _STAMP.unpack(stamp)[0] / 1000
        return bool(-1.0 <= age <= self.lifetime)

    def reset_token(self, connection_id: bytes) -> bytes:
        """The token a RESET for ``connection_id`` carries; the client learned it in WELCOME."""
        return hmac.new(self._secret, b"reset\0" + connection_id, hashlib.sha256).digest()[
            :RESET_TOKEN_SIZE
        ]
