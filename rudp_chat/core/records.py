"""Sealing and opening SEALED packets: ChaCha20-Poly1305 with keys that rotate by epoch.

The nonce is the packet number (never reused: a retransmission travels in a new packet),
the associated data is the cleartext header as sent. Every ``2**KEY_EPOCH_BITS`` packet
numbers both directions move to the next key, ``next = ENCRYPT(key, 2**64 - 1, "",
zeros(32))[:32]`` (Noise's REKEY): no signal is needed, since the packet number names
its epoch, and a captured key does not open earlier epochs.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = ["INTEGRITY_LIMIT", "KEY_EPOCH_BITS", "Opener", "Sealer", "nonce"]

KEY_EPOCH_BITS = 24
"""2**24 packets (about 20 GB at 1200 B) per key: far inside ChaCha20-Poly1305's limits.
Part of the protocol: both ends must use the same value (tests shrink it to rotate often)."""
INTEGRITY_LIMIT: Final = 2**36
"""Forged packets one connection tolerates before it must end (RFC 9001 §6.6)."""
_REKEY_NONCE: Final = b"\0\0\0\0" + b"\xff" * 8
_ZEROS: Final = bytes(32)
_NONCE: Final = struct.Struct("<4xQ")  # 32 zero bits, then a 64-bit little-endian number


def nonce(number: int) -> bytes:
    """Noise's nonce layout: 32 zero bits, then the packet number as 64-bit little-endian (one
    struct call: two per packet, sealing and opening)."""
    return _NONCE.pack(number)


def _rekey(key: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_REKEY_NONCE, _ZEROS, b"")[:32]


class Sealer:
    """One direction's sending keys; packet numbers only grow, so epochs only advance."""

    __slots__ = ("_aead", "_epoch", "_epoch_bits", "_key")

    def __init__(self, key: bytes, epoch_bits: int | None = None) -> None:
        self._key = key
        self._aead = ChaCha20Poly1305(key)
        self._epoch = 0
        self._epoch_bits = KEY_EPOCH_BITS if epoch_bits is None else epoch_bits

    @property
    def epoch(self) -> int:
        """How many times the key has rotated."""
        return self._epoch

    def seal(self, number: int, plaintext: bytes, header: bytes) -> bytes:
        epoch = number >> self._epoch_bits
        if epoch != self._epoch:
            while self._epoch < epoch:
                self._key = _rekey(self._key)
                self._epoch += 1
            self._aead = ChaCha20Poly1305(self._key)
        return self._aead.encrypt(nonce(number), plaintext, header)


class Opener:
    """One direction's receiving keys: the current epoch's, the one before (reordering
    across a rotation) and the one after, derived when a packet first names it."""

    __slots__ = ("_current", "_epoch", "_epoch_bits", "_key", "_next", "_previous", "failures")

    def __init__(self, key: bytes, epoch_bits: int | None = None) -> None:
        self._key = key
        self._current = ChaCha20Poly1305(key)
        self._previous: ChaCha20Poly1305 | None = None
        self._next: tuple[bytes, ChaCha20Poly1305] | None = None
        self._epoch = 0
        self._epoch_bits = KEY_EPOCH_BITS if epoch_bits is None else epoch_bits
        self.failures = 0
        """Packets that did not authenticate, towards ``INTEGRITY_LIMIT``."""

    @property
    def epoch(self) -> int:
        """How many times the peer's key has rotated, as far as its packets told."""
        return self._epoch

    def open(self, number: int, ciphertext: bytes, header: bytes) -> bytes | None:
        """The plaintext, or None when the packet does not authenticate under its epoch's key
        (any epoch but the previous, current or next one counts as not authenticating)."""
        epoch = number >> self._epoch_bits
        if epoch == self._epoch:
            aead = self._current
        elif epoch == self._epoch + 1:
            if self._next is None:
                key = _rekey(self._key)
                self._next = (key, ChaCha20Poly1305(key))
            aead = self._next[1]
        elif epoch == self._epoch - 1 and self._previous is not None:
            aead = self._previous
        else:
            self.failures += 1
            return None
        try:
            plaintext = aead.decrypt(nonce(number), ciphertext, header)
        except InvalidTag:
            self.failures += 1
            return None
        if epoch > self._epoch and self._next is not None:  # the peer has rotated: follow
            self._previous = self._current
            self._key, self._current = self._next
            self._next = None
            self._epoch = epoch
        return plaintext
