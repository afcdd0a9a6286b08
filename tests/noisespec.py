"""PROTOCOL.md §3.6's primitives, written from its text with the ``cryptography`` package and
none of rudp_chat's code, so a test rebuilding the §11.1 vectors checks the spec, not the
implementation against itself; and §11.1's fixed inputs."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "CLIENT_EPHEMERAL",
    "CLIENT_ID",
    "CLIENT_STATIC_PRIVATE",
    "RESET_TOKEN",
    "SERVER_EPHEMERAL",
    "SERVER_ID",
    "STATIC_PRIVATE",
    "encrypt",
    "fingerprint",
    "hash_of",
    "hkdf",
    "public",
    "x25519",
]

# §11.1's fixed inputs, in place of random ones
STATIC_PRIVATE = bytes(range(32))
"""The server's static private key."""
CLIENT_STATIC_PRIVATE = bytes(range(0x60, 0x80))
"""The client's static private key (IK)."""
CLIENT_EPHEMERAL = bytes(range(32, 64))
SERVER_EPHEMERAL = bytes(range(64, 96))
CLIENT_ID = bytes.fromhex("c1c2c3c4c5c6c7c8")
SERVER_ID = bytes.fromhex("5151515151515151")
RESET_TOKEN = bytes(range(0xA0, 0xB0))


def hash_of(*parts: bytes) -> bytes:
    """HASH: SHA-256 of the parts concatenated."""
    return hashlib.sha256(b"".join(parts)).digest()


def hkdf(chaining_key: bytes, key_material: bytes) -> tuple[bytes, bytes]:
    """§3.6: RFC 5869 HKDF-SHA256, the chaining key as salt, empty info, two 32-byte outputs."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=chaining_key, info=b"")
    output = okm.derive(key_material)
    return output[:32], output[32:]


def encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    """§3.6: ChaCha20-Poly1305 with the nonce 00 00 00 00 ‖ n as 64-bit little-endian."""
    return ChaCha20Poly1305(key).encrypt(b"\0" * 4 + n.to_bytes(8, "little"), plaintext, ad)


def x25519(private: bytes, public_key: bytes) -> bytes:
    """DH: X25519 of a raw private key and a raw public key."""
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public_key)
    )


def public(private: bytes) -> bytes:
    """The raw X25519 public key of a raw private key."""
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key: bytes) -> str:
    """§3.9: "SHA256:" and the unpadded standard base64 of SHA-256 of the public key."""
    return "SHA256:" + base64.b64encode(hash_of(public_key)).decode().rstrip("=")
