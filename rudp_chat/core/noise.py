"""The handshake: Noise IK for a client with a key, NK for a guest; one round trip each.

The client knows the server's static X25519 key (pinned, or learned from RETRY)::

    IK (Noise_IK_25519_ChaChaPoly_SHA256)      NK (Noise_NK_25519_ChaChaPoly_SHA256)
    <- s                                        <- s
    ...                                         ...
    -> e, es, s, ss   (HELLO's handshake)       -> e, es
    <- e, ee, se      (WELCOME's body)          <- e, ee

WELCOME's payload is the server's id and reset token either way. The two message 1 sizes
differ (96 and 48 bytes), so the length tells the server which pattern a HELLO speaks.

Every primitive comes from ``cryptography``; this module only composes them as the Noise
specification (revision 34) says, so any Noise library interoperates with the same
prologue. Pure computation: the ephemeral keys' random bytes are passed in.
"""

from __future__ import annotations

import base64
import enum
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
    "IK_MESSAGE1_SIZE",
    "KEY_SIZE",
    "MESSAGE1_SIZE",
    "PROTOCOL_NAME",
    "TAG_SIZE",
    "Initiator",
    "Pattern",
    "Responder",
    "StaticKey",
    "fingerprint",
    "prologue",
]

KEY_SIZE: Final = 32
MESSAGE1_SIZE: Final = KEY_SIZE + TAG_SIZE  # NK: e, then an empty payload's tag
IK_MESSAGE1_SIZE: Final = KEY_SIZE + (KEY_SIZE + TAG_SIZE) + TAG_SIZE  # e, encrypted s, tag


class Pattern(enum.Enum):
    """The handshake pattern; its value is the Noise protocol name, which is the initial h."""

    NK = b"Noise_NK_25519_ChaChaPoly_SHA256"
    """A guest: only the server is authenticated."""
    IK = b"Noise_IK_25519_ChaChaPoly_SHA256"
    """A client with a static key, which message 1 carries encrypted and authenticates."""

    @property
    def message1_size(self) -> int:
        return MESSAGE1_SIZE if self is Pattern.NK else IK_MESSAGE1_SIZE

    @classmethod
    def of_message1(cls, message: bytes) -> Pattern:
        """The pattern a message 1 of this length speaks; raises HandshakeError for neither."""
        for pattern in cls:
            if len(message) == pattern.message1_size:
                return pattern
        raise HandshakeError(
            f"the first handshake message is {MESSAGE1_SIZE} (NK) or {IK_MESSAGE1_SIZE} (IK) bytes"
        )


PROTOCOL_NAME: Final = Pattern.NK.value  # 32 bytes: it is the initial h


def prologue(version: int, client_id: bytes, pattern: Pattern = Pattern.NK) -> bytes:
    """What both sides mix in first: a handshake is bound to our protocol, its version, the
    client's connection id (so it cannot be replayed into another connection) and, for IK,
    the pattern's name (NK's prologue is version 1's original one, which ends at the id)."""
    suffix = b"" if pattern is Pattern.NK else pattern.name.encode()
    return b"rudp_chat" + version.to_bytes(4, "big") + client_id + suffix


def fingerprint(public_key: bytes) -> str:
    """How people name a static key (a server's or a client's): ``SHA256:`` and the
    unpadded base64 of its digest."""
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
    """A long-term X25519 key pair: a server's identity, or a client's (IK)."""

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

    def __init__(self, pattern: Pattern, prologue_bytes: bytes, responder_static: bytes) -> None:
        self._h = self._ck = pattern.value
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
        assert self._key is not None  # every NK and IK token we encrypt follows a key
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
    """The client's side: writes message 1, reads message 2, then knows both keys.

    With ``static`` (the client's key) it speaks IK, which authenticates that key to the
    server; without, NK (a guest)."""

    __slots__ = ("_ephemeral", "_state", "_static", "message1")

    def __init__(
        self,
        server_key: bytes,
        prologue_bytes: bytes,
        ephemeral: bytes,
        static: StaticKey | None = None,
    ) -> None:
        if len(server_key) != KEY_SIZE:
            raise HandshakeError("a server key is 32 bytes")
        pattern = Pattern.NK if static is None else Pattern.IK
        self._state = state = _SymmetricState(pattern, prologue_bytes, server_key)
        self._static = static
        self._ephemeral = X25519PrivateKey.from_private_bytes(ephemeral)
        public = _raw_public(self._ephemeral)
        state.mix_hash(public)  # e
        state.mix_key(_dh(self._ephemeral, server_key))  # es
        encrypted_static = b""
        if static is not None:
            encrypted_static = state.encrypt_and_hash(static.public)  # s
            state.mix_key(_dh(static.private, server_key))  # ss
        self.message1 = public + encrypted_static + state.encrypt_and_hash(b"")
        """Sent in every HELLO that carries the token: repeats must be identical."""

    def read_message2(self, message: bytes) -> tuple[bytes, bytes, bytes]:
        """Returns (payload, our sending key, our receiving key); raises HandshakeError."""
        if len(message) < KEY_SIZE + TAG_SIZE:  # e, then at least a tag
            raise HandshakeError("handshake message too short")
        state = self._state
        peer_ephemeral = message[:KEY_SIZE]
        state.mix_hash(peer_ephemeral)  # e
        state.mix_key(_dh(self._ephemeral, peer_ephemeral))  # ee
        if self._static is not None:
            state.mix_key(_dh(self._static.private, peer_ephemeral))  # se
        payload = state.decrypt_and_hash(message[KEY_SIZE:])
        send, receive = state.split()
        return payload, send, receive


class Responder:
    """The server's side, done in one step when a validated HELLO arrives: it keeps no
    handshake state, because message 2 completes the pattern."""

    __slots__ = ("_peer_ephemeral", "_state", "peer_static")

    def __init__(
        self,
        static: StaticKey,
        prologue_bytes: bytes,
        message1: bytes,
        pattern: Pattern = Pattern.NK,
    ) -> None:
        """Reads message 1; raises HandshakeError if it is not for ``static`` (or, IK, if the
        client's key does not authenticate)."""
        if len(message1) != pattern.message1_size:
            raise HandshakeError(
                f"the first {pattern.name} handshake message is {pattern.message1_size} bytes"
            )
        self._state = state = _SymmetricState(pattern, prologue_bytes, static.public)
        self._peer_ephemeral = message1[:KEY_SIZE]
        state.mix_hash(self._peer_ephemeral)  # e
        state.mix_key(_dh(static.private, self._peer_ephemeral))  # es
        self.peer_static: bytes | None = None
        """The client's static public key, authenticated (IK); None for a guest (NK)."""
        rest = message1[KEY_SIZE:]
        if pattern is Pattern.IK:
            encrypted_static, rest = rest[: KEY_SIZE + TAG_SIZE], rest[KEY_SIZE + TAG_SIZE :]
            peer_static = state.decrypt_and_hash(encrypted_static)  # s
            state.mix_key(_dh(static.private, peer_static))  # ss
            state.decrypt_and_hash(rest)  # the payload's tag vouches for s
            self.peer_static = peer_static
            return
        state.decrypt_and_hash(rest)

    def write_message2(self, ephemeral: bytes, payload: bytes) -> tuple[bytes, bytes, bytes]:
        """Returns (message 2, our sending key, our receiving key)."""
        state = self._state
        private = X25519PrivateKey.from_private_bytes(ephemeral)
        public = _raw_public(private)
        state.mix_hash(public)  # e
        state.mix_key(_dh(private, self._peer_ephemeral))  # ee
        if self.peer_static is not None:
            state.mix_key(_dh(private, self.peer_static))  # se
        message = public + state.encrypt_and_hash(payload)
        receive, send = state.split()
        return message, send, receive
