"""The handshake: Noise NK (``Noise_NK_25519_ChaChaPoly_SHA256``), one round trip.

The client knows the server's static X25519 key (pinned, or learned from RETRY)::

    <- s
    ...
    -> e, es     (HELLO's handshake field)
    <- e, ee     (WELCOME's body; its payload is the server's id and reset token)

Every primitive comes from ``cryptography``; this module only composes them as the Noise
specification (revision 34) says, so any Noise library interoperates with the same
prologue. Pure computation: the ephemeral keys' random bytes are passed in.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import HandshakeError
from .frames import AEAD_TAG_SIZE as TAG_SIZE
from .records import nonce

__all__ = [
    "KEY_SIZE",
    "MESSAGE1_SIZE",
    "PROTOCOL_NAME",
    "TAG_SIZE",
    "Initiator",
    "Responder",
    "StaticKey",
    "fingerprint",
    "prologue",
]

PROTOCOL_NAME: Final = b"Noise_NK_25519_ChaChaPoly_SHA256"  # 32 bytes: it is the initial h
KEY_SIZE: Final = 32
MESSAGE1_SIZE: Final = KEY_SIZE + TAG_SIZE  # e, then an empty payload's tag


def prologue(version: int, client_id: bytes) -> bytes:
    """What both sides mix in first: a handshake is bound to our protocol, its version and
    the client's connection id, so it cannot be replayed into another connection."""
    return b"rudp_chat" + version.to_bytes(4, "big") + client_id


def fingerprint(public_key: bytes) -> str:
    """How people name a server key: ``SHA256:`` and the unpadded base64 of its digest."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # a low-order point: the all-zero result Noise forbids
        raise HandshakeError("invalid public key") from None


class StaticKey:
    """A server's long-term X25519 key pair."""

    __slots__ = ("private", "public")

    def __init__(self, private_bytes: bytes) -> None:
        if len(private_bytes) != KEY_SIZE:
            raise ValueError("an X25519 private key is 32 bytes")
        self.private = X25519PrivateKey.from_private_bytes(private_bytes)
        self.public = _raw_public(self.private)

    @classmethod
    def generate(cls) -> StaticKey:
        """A new key from the operating system's random source."""
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    def private_bytes(self) -> bytes:
        return self.private.private_bytes_raw()


class _SymmetricState:
    """Noise's SymmetricState: the chaining key, the handshake hash and the current key."""

    __slots__ = ("_ck", "_h", "_key", "_nonce")

    def __init__(self, prologue_bytes: bytes, responder_static: bytes) -> None:
        self._h = self._ck = PROTOCOL_NAME
        self._key: ChaCha20Poly1305 | None = None
        self._nonce = 0
        self.mix_hash(prologue_bytes)
        self.mix_hash(responder_static)  # the pre-message "<- s"

    def mix_hash(self, data: bytes) -> None:
        self._h = hashlib.sha256(self._h + data).digest()

    def _hkdf(self, input_key: bytes, outputs: int) -> list[bytes]:
        """Noise's HKDF is RFC 5869's with the chaining key as salt and no info."""
        material = HKDF(hashes.SHA256(), KEY_SIZE * outputs, salt=self._ck, info=b"").derive(
            input_key
        )
        return [material[i : i + KEY_SIZE] for i in range(0, len(material), KEY_SIZE)]

    def mix_key(self, input_key: bytes) -> None:
        self._ck, key = self._hkdf(input_key, 2)
        self._key = ChaCha20Poly1305(key)
        self._nonce = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self._key is not None  # every NK message mixes a key before its payload
        ciphertext = self._key.encrypt(nonce(self._nonce), plaintext, self._h)
        self._nonce += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self._key is not None
        try:
            plaintext = self._key.decrypt(nonce(self._nonce), ciphertext, self._h)
        except InvalidTag:
            raise HandshakeError("handshake message does not authenticate") from None
        self._nonce += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """(initiator-to-responder key, responder-to-initiator key)."""
        first, second = self._hkdf(b"", 2)
        return first, second


class Initiator:
    """The client's side: writes message 1, reads message 2, then knows both keys."""

    __slots__ = ("_ephemeral", "_state", "message1")

    def __init__(self, server_key: bytes, prologue_bytes: bytes, ephemeral: bytes) -> None:
        if len(server_key) != KEY_SIZE:
            raise HandshakeError("a server key is 32 bytes")
        self._state = state = _SymmetricState(prologue_bytes, server_key)
        self._ephemeral = X25519PrivateKey.from_private_bytes(ephemeral)
        public = _raw_public(self._ephemeral)
        state.mix_hash(public)
        state.mix_key(_dh(self._ephemeral, server_key))
        self.message1 = public + state.encrypt_and_hash(b"")
        """Sent in every HELLO that carries the token: repeats must be identical."""

    def read_message2(self, message: bytes) -> tuple[bytes, bytes, bytes]:
        """Returns (payload, our sending key, our receiving key); raises HandshakeError."""
        if len(message) < KEY_SIZE + TAG_SIZE:  # e, then at least a tag
            raise HandshakeError("handshake message too short")
        state = self._state
        peer_ephemeral = message[:KEY_SIZE]
        state.mix_hash(peer_ephemeral)
        state.mix_key(_dh(self._ephemeral, peer_ephemeral))
        payload = state.decrypt_and_hash(message[KEY_SIZE:])
        send, receive = state.split()
        return payload, send, receive


class Responder:
    """The server's side, done in one step when a validated HELLO arrives: it keeps no
    handshake state, because message 2 completes the pattern."""

    __slots__ = ("_peer_ephemeral", "_state")

    def __init__(self, static: StaticKey, prologue_bytes: bytes, message1: bytes) -> None:
        """Reads message 1; raises HandshakeError if it is not for ``static``."""
        if len(message1) != MESSAGE1_SIZE:
            raise HandshakeError(f"the first handshake message is {MESSAGE1_SIZE} bytes")
        self._state = state = _SymmetricState(prologue_bytes, static.public)
        self._peer_ephemeral = message1[:KEY_SIZE]
        state.mix_hash(self._peer_ephemeral)
        state.mix_key(_dh(static.private, self._peer_ephemeral))
        state.decrypt_and_hash(message1[KEY_SIZE:])

    def write_message2(self, ephemeral: bytes, payload: bytes) -> tuple[bytes, bytes, bytes]:
        """Returns (message 2, our sending key, our receiving key)."""
        state = self._state
        private = X25519PrivateKey.from_private_bytes(ephemeral)
        public = _raw_public(private)
        state.mix_hash(public)
        state.mix_key(_dh(private, self._peer_ephemeral))
        message = public + state.encrypt_and_hash(payload)
        receive, send = state.split()
        return message, send, receive
