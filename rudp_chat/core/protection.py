"""One connection's record layer: sealing what leaves, opening what arrives, refusing replays.

Encrypted, a SEALED packet is checked against the replay window (cheap) before it is opened
(PROTOCOL.md §3.7, §3.8); insecure, SESSION packets pass in the clear and duplicates are
left to the receiver's record of numbers. Either way a packet of the other mode is refused.
"""

from __future__ import annotations

import enum

from .codec import encode_datagram, sealed_header
from .frames import AEAD_TAG_SIZE, SealedPacket, SessionPacket
from .records import INTEGRITY_LIMIT, Opener, Sealer
from .replay import ReplayWindow

__all__ = ["PacketProtection", "Refused"]


class Refused(enum.Enum):
    """Why an arriving session packet was not opened."""

    REPLAYED = "replayed"
    """A number seen before, or older than the replay window."""
    UNAUTHENTICATED = "unauthenticated"
    """It did not open: forged, altered, or under a key we do not hold."""
    OTHER_MODE = "other mode"
    """SESSION on an encrypted connection, or SEALED on an insecure one."""


class PacketProtection:
    """Seals and opens one connection's session packets under its record keys."""

    __slots__ = ("_opener", "_replay", "_sealer")

    def __init__(self, insecure: bool, keys: tuple[bytes, bytes] | None) -> None:
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None
        if keys is not None:
            self.install(keys)
        # encrypted only: in the clear, a forged number far ahead would slide it past the
        # genuine ones; there the receiver's record of numbers catches duplicates instead
        self._replay = None if insecure else ReplayWindow()

    def install(self, keys: tuple[bytes, bytes]) -> None:
        """Take the (send, receive) keys the handshake agreed on."""
        self._sealer, self._opener = Sealer(keys[0]), Opener(keys[1])

    def seal(self, remote_id: bytes, number: int, payload: bytes) -> bytes:
        """The datagram carrying ``payload`` as packet ``number`` (SEALED, or SESSION insecure)."""
        if self._sealer is None:
            return encode_datagram(SessionPacket(remote_id, number, payload))
        header = sealed_header(remote_id, number, len(payload) + AEAD_TAG_SIZE)
        return header + self._sealer.seal(number, payload, header)

    def open(self, packet: SessionPacket | SealedPacket) -> bytes | Refused:
        """The packet's frame bytes, or why it is refused (it then changes nothing)."""
        number = packet.number
        replay, opener = self._replay, self._opener
        if replay is not None and not replay.is_fresh(number):
            return Refused.REPLAYED
        if type(packet) is SealedPacket and opener is not None:
            payload = opener.open(number, packet.ciphertext, packet.header)
            return Refused.UNAUTHENTICATED if payload is None else payload
        if type(packet) is SessionPacket and opener is None:
            return packet.payload
        return Refused.OTHER_MODE

    def mark(self, number: int) -> bool:
        """Mark an accepted packet's number seen; True if it is the newest yet (encrypted only:
        only such a packet may move the connection to a new address)."""
        return self._replay is not None and self._replay.mark(number)

    @property
    def epochs(self) -> tuple[int, int] | None:
        """The (sending, receiving) key epochs; None without keys (insecure, or connecting)."""
        if self._sealer is None or self._opener is None:
            return None
        return self._sealer.epoch, self._opener.epoch

    @property
    def integrity_exhausted(self) -> bool:
        """So many packets failed to open that the AEAD's forgery bound is reached (§3.7)."""
        return self._opener is not None and self._opener.failures >= INTEGRITY_LIMIT
