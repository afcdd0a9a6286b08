"""The client's side of the handshake: HELLO, RETRY, HELLO, WELCOME (PROTOCOL.md §3.1).

The server's side is the :class:`~rudp_chat.core.listener.Listener` (stateless RETRY, then
the connection it creates); this is its mirror on the client, which a connection holds
while CONNECTING and drops once the WELCOME made it OPEN.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from .codec import encode_datagram
from .config import ConnectionConfig
from .errors import HandshakeError
from .frames import (
    CONNECTION_ID_SIZE,
    MIN_HELLO_SIZE,
    PROTOCOL_VERSION,
    RESET_TOKEN_SIZE,
    HelloPacket,
    RetryPacket,
    WelcomePacket,
)
from .noise import KEY_SIZE, Initiator, Pattern, StaticKey, fingerprint, prologue

__all__ = ["HELLO_RETRY_CAP_S", "ClientHandshake", "Established", "WelcomeRefused"]

HELLO_RETRY_CAP_S = 0.5  # HELLOs back off no further: a lost WELCOME is only repeated when a
# HELLO asks again, so a lossy path must not cost a long handshake (2 x 1200 B/s at most)


class WelcomeRefused(enum.Enum):
    """Why a WELCOME for our client id was dropped (the handshake goes on waiting)."""

    INVALID = "does not authenticate, or a body of the wrong size"
    """Counted ``dropped_invalid``."""
    UNEXPECTED = "before any RETRY on an encrypted connection"
    """Counted ``dropped_unexpected``."""


@dataclass(frozen=True, slots=True)
class Established:
    """What a WELCOME that completed the handshake gave the client."""

    server_id: bytes
    reset_token: bytes
    keys: tuple[bytes, bytes] | None
    """(send, receive) record keys; None when insecure."""
    server_key: bytes | None
    """The server's static key, authenticated by the WELCOME; None when insecure."""
    rtt_sample: float | None
    """HELLO to WELCOME, when exactly one HELLO went out since the last RETRY (Karn)."""


class ClientHandshake:
    """HELLO timing and content, the server's key check, and reading the WELCOME."""

    __slots__ = (
        "_attempts",
        "_client_key",
        "_hello_deadline",
        "_hello_sent_at",
        "_hellos_sent",
        "_initiator",
        "_pinned",
        "_random_bytes",
        "_retries",
        "_server_key",
        "_token",
        "client_id",
        "config",
        "deadline",
        "hello_due",
        "server_fingerprint",
    )

    def __init__(
        self,
        config: ConnectionConfig,
        client_id: bytes,
        now: float,
        random_bytes: Callable[[int], bytes],
        pinned_fingerprint: str | None,
        client_key: StaticKey | None = None,
    ) -> None:
        """``client_key`` makes the handshake IK, authenticating it to the server; without
        it the client is a guest (NK)."""
        self.config = config
        self.client_id = client_id
        self._random_bytes = random_bytes
        self._pinned = pinned_fingerprint
        self._client_key = client_key
        self._server_key: bytes | None = None
        self.server_fingerprint: str | None = None
        """The fingerprint of the key the server presented (None until RETRY)."""
        self._initiator: Initiator | None = None
        self._token = b""
        self.deadline = now + config.handshake_timeout
        """The handshake fails at this time without a WELCOME."""
        self.hello_due = True
        self._hello_deadline = math.inf
        self._attempts = 0  # since the last RETRY: drives the backoff
        self._hellos_sent = 0
        self._retries = 0
        self._hello_sent_at = now

    def get_timer(self) -> float:
        """The earlier of the handshake deadline and the next HELLO retransmission."""
        return min(self.deadline, self._hello_deadline)

    def handle_timer(self, now: float) -> bool:
        """Returns True when the handshake timed out; makes a HELLO due when its timer fired."""
        if now >= self.deadline:
            return True
        if now >= self._hello_deadline:
            self.hello_due = True
        return False

    def build_hello(self, number: int, now: float) -> bytes:
        """The HELLO to send now, padded to exactly ``MIN_HELLO_SIZE``; re-arms its timer."""
        self.hello_due = False
        self._hello_sent_at = now
        self._hellos_sent += 1
        self._attempts += 1
        wait = min(2 * self.config.initial_rtt * 2 ** (self._attempts - 1), HELLO_RETRY_CAP_S)
        self._hello_deadline = now + wait
        handshake = self._initiator.message1 if self._initiator is not None else b""
        padding = 0
        while True:  # the padding's own length header grows once, at most
            hello = HelloPacket(
                self.client_id, number, PROTOCOL_VERSION, self._token, handshake, padding
            )
            datagram = encode_datagram(hello)
            if len(datagram) == MIN_HELLO_SIZE or padding == 0 < len(datagram) - MIN_HELLO_SIZE:
                return datagram
            padding = max(padding + MIN_HELLO_SIZE - len(datagram), 0)

    def on_retry(self, packet: RetryPacket) -> str | None:
        """Take the token and, unless insecure, the server's key: checked against the pin, it
        starts the Noise handshake the next HELLO carries. Returns why the server cannot be
        trusted (the connection then ends UNTRUSTED), or None."""
        if not self.config.insecure and self._initiator is None:
            if not packet.server_key:
                return (
                    "the server does not encrypt (it runs --insecure); "
                    "connect with --insecure to accept that"
                )
            presented = self.server_fingerprint = fingerprint(packet.server_key)
            if self._pinned is not None and presented != self._pinned:
                return f"the server's key {presented} is not the pinned {self._pinned}"
            pattern = Pattern.NK if self._client_key is None else Pattern.IK
            self._server_key = packet.server_key
            self._initiator = Initiator(
                packet.server_key,
                prologue(PROTOCOL_VERSION, self.client_id, pattern),
                self._random_bytes(KEY_SIZE),
                self._client_key,
            )
        elif self.config.insecure and packet.server_key:
            return "the server requires encryption; connect without --insecure"
        self._token = packet.token
        self._attempts = 0
        self._retries += 1
        self.hello_due = True
        return None

    def on_welcome(self, packet: WelcomePacket, now: float) -> Established | WelcomeRefused:
        """Read the WELCOME's body: the server's id, its reset token and (encrypted) the keys."""
        body, keys = packet.body, None
        if self._initiator is not None:
            try:
                body, send_key, receive_key = self._initiator.read_message2(body)
            except HandshakeError:
                return WelcomeRefused.INVALID
            keys = (send_key, receive_key)
        elif not self.config.insecure:
            return WelcomeRefused.UNEXPECTED  # a WELCOME before any RETRY: not our handshake
        if len(body) != CONNECTION_ID_SIZE + RESET_TOKEN_SIZE:
            return WelcomeRefused.INVALID
        single = self._hellos_sent == 2 and self._retries == 1
        return Established(
            body[:CONNECTION_ID_SIZE],
            body[CONNECTION_ID_SIZE:],
            keys,
            self._server_key,
            now - self._hello_sent_at if single else None,
        )
