"""Encryption: the Noise NK handshake against an independent implementation and fixed
vectors, sealed packets that cannot be altered, forged or replayed, the replay window's
edges, key pinning, migration only after authentication, and nonces never reused."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection
from noisespec import (
    CLIENT_EPHEMERAL,
    CLIENT_ID,
    RESET_TOKEN,
    SERVER_EPHEMERAL,
    SERVER_ID,
    STATIC_PRIVATE,
    encrypt,
    hash_of,
    hkdf,
    public,
    x25519,
)
from noisespec import fingerprint as spec_fingerprint
from simharness import CLIENT, SERVER, Pair, Scenario, run_scenario, seeded_random_bytes

from rudp_chat.core import records
from rudp_chat.core.codec import decode_datagram, encode_frames, sealed_header
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Address, Connection
from rudp_chat.core.errors import HandshakeError
from rudp_chat.core.events import ConnectionTerminated, TerminationReason
from rudp_chat.core.frames import DataFrame, HelloPacket, RetryPacket, SealedPacket
from rudp_chat.core.listener import Listener
from rudp_chat.core.noise import (
    MESSAGE1_SIZE,
    PROTOCOL_NAME,
    Initiator,
    Responder,
    StaticKey,
    fingerprint,
    prologue,
)
from rudp_chat.core.records import Opener, Sealer, nonce
from rudp_chat.core.replay import ReplayWindow
from rudp_chat.core.state import State
from rudp_chat.identity import KeyFileError, KnownServers, load_or_create_server_key
from rudp_chat.sim import LinkProfile

ELSEWHERE: Address = ("203.0.113.9", 40_000)

# The vectors PROTOCOL.md §11.1 prints. They are not merely our code agreeing with itself:
# test_the_vectors_follow_from_protocol_md_step_by_step rebuilds every one from the spec's text
# with the cryptography primitives, and test_our_handshake_is_noise_nk checks the handshake
# against the noiseprotocol package.
VECTORS = {
    "prologue": "727564705f6368617400000001c1c2c3c4c5c6c7c8",
    "server_public": "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f",
    "fingerprint": "SHA256:7t2IPaCpRRWT3Ao45YP7dw+ifbvtIJwgQE4HXmjE8Mk",
    "message1": "358072d6365880d1aeea329adf9121383851ed21a28e3b75"
    "e965d0d2cd166254a2d34f4ac623d8c1b9e872ee1168abc5",
    "message2": "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a"
    "54427311f3686879782666e5c1b03945ce8b02624a9c3299f1fd8aa808acb3c1d88bb8d001459717",
    "client_to_server": "e255482b8fc4cc83be40d38c202f483aa985f7388c139ef05b0798a8dd88404b",
    "server_to_client": "61097ed781f66f4754396a0e19abf66c451a2f93e1edc1cbb66041bdd1651ec8",
    "sealed": "9405c408515151515151515102c41b93a6c94887e65c6f539fe888ed92dcd500"
    "3800852f97a6a5f142db",
    "client_to_server_epoch1": "0686dbb3fcf6553d335d3028418b33b05bd84da6753f16b369c9284a52da0e92",
    "sealed_epoch1": "9405c4085151515151515151ce01000000c41b467c3757713b45e303536ea7cfc4bd"
    "0e1efadc186fc130d5fd72e1",
}


def vector_handshake() -> tuple[bytes, bytes, bytes, bytes]:
    """message 1, message 2, client-to-server key, server-to-client key."""
    static = StaticKey(STATIC_PRIVATE)
    initiator = Initiator(static.public, prologue(1, CLIENT_ID), CLIENT_EPHEMERAL)
    responder = Responder(static, prologue(1, CLIENT_ID), initiator.message1)
    message2, server_send, server_receive = responder.write_message2(
        SERVER_EPHEMERAL, SERVER_ID + RESET_TOKEN
    )
    payload, client_send, client_receive = initiator.read_message2(message2)
    assert payload == SERVER_ID + RESET_TOKEN
    assert (client_send, client_receive) == (server_receive, server_send)
    return initiator.message1, message2, client_send, client_receive


# ------------------------------------------------------------------ the handshake


def test_the_vectors_in_protocol_md() -> None:
    static = StaticKey(STATIC_PRIVATE)
    message1, message2, client_to_server, server_to_client = vector_handshake()
    frames = encode_frames([DataFrame(0, 0, 0, 1, b"hi")])
    sealer = Sealer(client_to_server)
    header = sealed_header(SERVER_ID, 2, len(frames) + 16)
    sealed = header + sealer.seal(2, frames, header)
    header_epoch1 = sealed_header(SERVER_ID, 2**24, len(frames) + 16)
    sealed_epoch1 = header_epoch1 + sealer.seal(2**24, frames, header_epoch1)
    # the rotated key stays inside the Sealer; the packet sealed with it shows it
    expected = {name: value for name, value in VECTORS.items() if name != "client_to_server_epoch1"}
    assert {
        "prologue": prologue(1, CLIENT_ID).hex(),
        "server_public": static.public.hex(),
        "fingerprint": fingerprint(static.public),
        "message1": message1.hex(),
        "message2": message2.hex(),
        "client_to_server": client_to_server.hex(),
        "server_to_client": server_to_client.hex(),
        "sealed": sealed.hex(),
        "sealed_epoch1": sealed_epoch1.hex(),
    } == expected
    assert len(message1) == MESSAGE1_SIZE and len(message2) == 32 + 24 + 16


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_our_handshake_is_noise_nk() -> None:
    """Byte for byte what an independent Noise library sends, and the same traffic keys."""
    static = StaticKey(STATIC_PRIVATE)
    their_initiator = NoiseConnection.from_name(PROTOCOL_NAME)
    their_initiator.set_as_initiator()
    their_initiator.set_prologue(prologue(1, CLIENT_ID))
    their_initiator.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, static.public)
    their_initiator.set_keypair_from_private_bytes(Keypair.EPHEMERAL, CLIENT_EPHEMERAL)
    their_responder = NoiseConnection.from_name(PROTOCOL_NAME)
    their_responder.set_as_responder()
    their_responder.set_prologue(prologue(1, CLIENT_ID))
    their_responder.set_keypair_from_private_bytes(Keypair.STATIC, STATIC_PRIVATE)
    their_responder.set_keypair_from_private_bytes(Keypair.EPHEMERAL, SERVER_EPHEMERAL)
    their_initiator.start_handshake()
    their_responder.start_handshake()

    message1, message2, client_to_server, server_to_client = vector_handshake()
    assert bytes(their_initiator.write_message(b"")) == message1
    their_responder.read_message(message1)
    assert bytes(their_responder.write_message(SERVER_ID + RESET_TOKEN)) == message2
    assert bytes(their_initiator.read_message(message2)) == SERVER_ID + RESET_TOKEN
    # Noise transport messages use nonce 0 and empty associated data first
    assert bytes(their_initiator.encrypt(b"up")) == ChaCha20Poly1305(client_to_server).encrypt(
        nonce(0), b"up", b""
    )
    assert bytes(their_responder.encrypt(b"down")) == ChaCha20Poly1305(server_to_client).encrypt(
        nonce(0), b"down", b""
    )


def _sealed_by_hand(key: bytes, connection_id: bytes, number: int, frames: bytes) -> bytes:
    """§3.7 for a packet number below 2^32: the msgpack header written byte by byte (fixarray
    of 4, kind 5, bin8 id, the number as positive fixint or uint32, bin8 length of frames + tag)
    is the associated data; the ciphertext follows it."""
    packed_number = bytes([number]) if number < 0x80 else b"\xce" + number.to_bytes(4, "big")
    header = b"\x94\x05\xc4\x08" + connection_id + packed_number
    header += b"\xc4" + bytes([len(frames) + 16])
    return header + encrypt(key, number, header, frames)


def test_the_vectors_follow_from_protocol_md_step_by_step() -> None:
    """The §11.1 vectors rebuilt from PROTOCOL.md's text alone, with the ``cryptography``
    primitives called directly (X25519, HKDF-SHA256, ChaCha20-Poly1305) and SHA-256, none of
    rudp_chat's code: what test_the_vectors_in_protocol_md checks the code against is what the
    spec says, not what the code once printed."""
    # §3.6: the prologue, "rudp_chat" ‖ version (4 bytes big-endian) ‖ client_id
    prologue_bytes = b"rudp_chat" + (1).to_bytes(4, "big") + CLIENT_ID
    server_public = public(STATIC_PRIVATE)
    server_fingerprint = spec_fingerprint(server_public)  # §3.9
    # §3.6 step 1: a 32-byte protocol name is h and ck as it is
    h = ck = b"Noise_NK_25519_ChaChaPoly_SHA256"
    assert len(h) == 32
    h = hash_of(hash_of(h, prologue_bytes), server_public)
    # step 2: message 1, e.public ‖ ENCRYPT(k, 0, h, "")
    client_e = public(CLIENT_EPHEMERAL)
    h = hash_of(h, client_e)
    ck, k = hkdf(ck, x25519(CLIENT_EPHEMERAL, server_public))
    c = encrypt(k, 0, h, b"")
    h = hash_of(h, c)
    message1 = client_e + c
    # step 3: message 2, e'.public ‖ ENCRYPT(k, 0, h, server_id ‖ reset_token)
    server_e = public(SERVER_EPHEMERAL)
    h = hash_of(h, server_e)
    ck, k = hkdf(ck, x25519(SERVER_EPHEMERAL, client_e))
    c = encrypt(k, 0, h, SERVER_ID + RESET_TOKEN)
    message2 = server_e + c
    # step 4: split; the client sends with k1
    client_to_server, server_to_client = hkdf(ck, b"")
    # §2.3 and §11: DATA seq 0, message 0, fragment 0 of 1, "hi", alone in a frame list
    frames: bytes = msgpack.packb([[1, 0, 0, 0, 1, b"hi"]], use_bin_type=True)
    assert frames == bytes.fromhex("91 96 01 00 00 00 01 c4 02 68 69")
    # §3.7: the first SEALED packet, number 2, goes to the server's id with the epoch-0 key;
    # number 2^24 opens epoch 1, whose key is REKEY(key) = ENCRYPT(key, 2^64 - 1, "", 0^32)[:32]
    rekeyed = encrypt(client_to_server, 2**64 - 1, b"", bytes(32))[:32]
    assert {
        "prologue": prologue_bytes.hex(),
        "server_public": server_public.hex(),
        "fingerprint": server_fingerprint,
        "message1": message1.hex(),
        "message2": message2.hex(),
        "client_to_server": client_to_server.hex(),
        "server_to_client": server_to_client.hex(),
        "sealed": _sealed_by_hand(client_to_server, SERVER_ID, 2, frames).hex(),
        "client_to_server_epoch1": rekeyed.hex(),
        "sealed_epoch1": _sealed_by_hand(rekeyed, SERVER_ID, 2**24, frames).hex(),
    } == VECTORS


def test_a_handshake_for_another_key_or_connection_does_not_authenticate() -> None:
    static = StaticKey(STATIC_PRIVATE)
    message1 = Initiator(static.public, prologue(1, CLIENT_ID), CLIENT_EPHEMERAL).message1
    with pytest.raises(HandshakeError):
        Responder(StaticKey(bytes(32 * [7])), prologue(1, CLIENT_ID), message1)
    with pytest.raises(HandshakeError):  # replayed into another connection id
        Responder(static, prologue(1, b"otherid!"), message1)
    with pytest.raises(HandshakeError):
        Responder(static, prologue(1, CLIENT_ID), message1[:-1])
    with pytest.raises(HandshakeError):  # a low-order point as the ephemeral key
        Responder(static, prologue(1, CLIENT_ID), bytes(32) + message1[32:])


@given(st.integers(0, 71), st.integers(1, 255))
def test_a_flipped_bit_in_the_welcome_fails_the_handshake(position: int, xor: int) -> None:
    static = StaticKey(STATIC_PRIVATE)
    initiator = Initiator(static.public, prologue(1, CLIENT_ID), CLIENT_EPHEMERAL)
    message2, _, _ = Responder(static, prologue(1, CLIENT_ID), initiator.message1).write_message2(
        SERVER_EPHEMERAL, SERVER_ID + RESET_TOKEN
    )
    damaged = bytearray(message2)
    damaged[position] ^= xor
    with pytest.raises(HandshakeError):
        initiator.read_message2(bytes(damaged))


# ------------------------------------------------------------ sealed packets


def drops(pair: Pair, server: Connection) -> int:
    """Every way a datagram can be dropped and counted, on both sides."""
    total = pair.listener.stats.dropped_invalid + pair.listener.stats.dropped_unexpected
    total += pair.listener.stats.resets_sent + pair.listener.stats.resets_suppressed
    for connection in (pair.client, server):
        stats = connection.stats()
        total += stats.dropped_invalid + stats.dropped_unexpected
        total += stats.dropped_unauthenticated + stats.dropped_replayed
    return total


def one_message_datagram(pair: Pair, text: bytes) -> bytes:
    pair.client.send(text)
    pair.collect()
    (datagram,) = pair.to_server
    pair.to_server.clear()
    assert isinstance(decode_datagram(datagram), SealedPacket)
    assert text not in datagram
    return datagram


def test_every_flipped_byte_of_a_sealed_datagram_is_dropped_and_counted() -> None:
    """Exhaustive over the positions of one datagram: each damaged copy is dropped and
    counted exactly once and delivers nothing; the genuine one is delivered afterwards."""
    pair = Pair()
    server = pair.handshake()
    datagram = one_message_datagram(pair, b"attack at dawn")
    for position in range(len(datagram)):
        for xor in (0x01, 0x80, 0xFF):
            damaged = bytearray(datagram)
            damaged[position] ^= xor
            before = drops(pair, server)
            pair.listener.receive_datagram(bytes(damaged), CLIENT, pair.now)
            pair.collect()
            assert drops(pair, server) == before + 1, (position, xor)
            assert pair.received_by_server() == []
    pair.listener.receive_datagram(datagram, CLIENT, pair.now)
    pair.collect()
    assert pair.received_by_server() == [b"attack at dawn"]
    assert server.stats().dropped_unauthenticated > 0


@given(st.data())
def test_any_flipped_byte_of_any_sealed_datagram_of_a_session_is_dropped(
    data: st.DataObject,
) -> None:
    """The same for every datagram of a session, both ways, delivered to its receiver."""
    pair = Pair()
    server = record_session(pair)
    both = [(d, True) for d in pair.sent_by_client if d.startswith(b"\x94\x05")]
    both += [(d, False) for d in pair.sent_by_server if d.startswith(b"\x94\x05")]
    datagram, upward = data.draw(st.sampled_from(both), label="datagram")
    damaged = bytearray(datagram)
    damaged[data.draw(st.integers(0, len(damaged) - 1), label="position")] ^= data.draw(
        st.integers(1, 255), label="xor"
    )
    before = drops(pair, server), len(pair.server_events), len(pair.client_events)
    if upward:
        pair.listener.receive_datagram(bytes(damaged), CLIENT, pair.now)
    else:
        pair.client.receive_datagram(bytes(damaged), SERVER, pair.now)
    pair.collect()
    assert drops(pair, server) == before[0] + 1
    assert (len(pair.server_events), len(pair.client_events)) == before[1:]


@given(st.binary(min_size=16, max_size=200), st.integers(0, 2**40))
def test_forged_sealed_packets_for_a_live_connection_are_dropped(
    ciphertext: bytes, number: int
) -> None:
    """Someone who sees the connection id but holds no key injects nothing."""
    pair = Pair()
    server = pair.handshake()
    header = sealed_header(server.local_id, number, len(ciphertext))
    pair.listener.receive_datagram(header + ciphertext, ELSEWHERE, pair.now)
    pair.collect()
    assert server.stats().dropped_unauthenticated == 1
    assert server.peer_address == CLIENT and pair.received_by_server() == []
    assert pair.to_client == []


def record_session(pair: Pair) -> Connection:
    server = pair.handshake()
    for index in range(20):
        pair.client.send(b"up %d" % index)
        server.send(b"down %d" % index)
        pair.collect()
        pair.exchange()
    pair.run(until=pair.now + 3.0)  # heartbeats too
    assert len(pair.received_by_server()) == len(pair.received_by_client()) == 20
    return server


@pytest.mark.parametrize("source", ["same address", "other address"])
def test_every_datagram_of_a_recorded_session_replayed_is_rejected(source: str) -> None:
    pair = Pair()
    server = record_session(pair)
    client_from = CLIENT if source == "same address" else ELSEWHERE
    server_from = SERVER if source == "same address" else ELSEWHERE
    before = (server.stats().dropped_replayed, pair.client.stats().dropped_replayed)
    client_sealed = [d for d in pair.sent_by_client if d.startswith(b"\x94\x05")]
    server_sealed = [d for d in pair.sent_by_server if d.startswith(b"\x94\x05")]
    for datagram in pair.sent_by_client:
        pair.listener.receive_datagram(datagram, client_from, pair.now)
    for datagram in pair.sent_by_server:
        pair.client.receive_datagram(datagram, server_from, pair.now)
    for reply, address in pair.listener.datagrams_to_send(pair.now):
        if address == CLIENT:  # a replayed HELLO has the WELCOME repeated: the client drops it
            pair.client.receive_datagram(reply, SERVER, pair.now)
        else:  # from elsewhere the token does not match: a stateless RETRY, nothing more
            assert isinstance(decode_datagram(reply), RetryPacket)
    pair.collect()
    assert len(pair.received_by_server()) == len(pair.received_by_client()) == 20
    assert server.peer_address == CLIENT and pair.client.peer_address == SERVER
    assert server.stats().migrations == pair.client.stats().migrations == 0
    assert server.stats().dropped_replayed - before[0] == len(client_sealed)
    assert pair.client.stats().dropped_replayed - before[1] == len(server_sealed)
    assert pair.listener.accept() is None and len(pair.listener.connections) == 1
    pair.run(until=pair.now + 1.0)  # and the session goes on
    pair.client.send(b"still here")
    pair.collect()
    pair.exchange()
    assert pair.received_by_server()[-1] == b"still here"


def test_an_authenticated_packet_from_a_new_address_moves_the_session() -> None:
    """A NAT rebinding: the client's next packets come from elsewhere; the server follows
    only once one opens and is the newest, and the tables follow it."""
    pair = Pair()
    server = pair.handshake()
    old = one_message_datagram(pair, b"before")
    pair.listener.receive_datagram(old, CLIENT, pair.now)
    new = one_message_datagram(pair, b"after the rebinding")
    pair.listener.receive_datagram(new, ELSEWHERE, pair.now)
    pair.collect()
    assert server.peer_address == ELSEWHERE and server.stats().migrations == 1
    assert pair.received_by_server() == [b"before", b"after the rebinding"]
    server.send(b"answer")
    out = pair.listener.datagrams_to_send(pair.now)
    assert out and all(address == ELSEWHERE for _, address in out)
    pair.listener.receive_datagram(old, CLIENT, pair.now)  # a late copy moves nothing back
    assert server.peer_address == ELSEWHERE


def test_an_older_packet_from_a_new_address_is_delivered_but_moves_nothing() -> None:
    pair = Pair()
    server = pair.handshake()
    first = one_message_datagram(pair, b"one")
    second = one_message_datagram(pair, b"two")
    pair.listener.receive_datagram(second, CLIENT, pair.now)
    pair.listener.receive_datagram(first, ELSEWHERE, pair.now)  # reordered, then rerouted
    pair.collect()
    assert server.peer_address == CLIENT and server.stats().migrations == 0
    assert pair.received_by_server() == [b"one", b"two"]


# ------------------------------------------------------------- replay window


def test_replay_window_edges() -> None:
    window = ReplayWindow(size=64)
    assert window.is_fresh(0) and window.mark(0)
    assert not window.is_fresh(0)
    assert window.mark(100)  # a jump beyond the window forgets everything below it
    assert window.is_fresh(37)  # 100 - 63: the oldest number the window still holds
    assert not window.is_fresh(36)  # 100 - 64: one too old
    window.mark(37)
    assert not window.is_fresh(37)
    assert window.mark(101)  # sliding by one pushes 37 out
    assert not window.is_fresh(37) and not window.is_fresh(38 - 1)
    assert window.is_fresh(38) and window.is_fresh(99)
    assert not window.mark(99) and not window.is_fresh(99)
    assert window.mark(101 + 63) and not window.is_fresh(101) and window.is_fresh(102)
    assert window.mark(101 + 63 + 64)  # exactly the window size: a clean slate but the top
    assert not window.is_fresh(101 + 63) and not window.is_fresh(101 + 63 + 64)


@given(st.lists(st.integers(0, 300), max_size=300))
def test_replay_window_accepts_each_number_once_unless_too_old(numbers: list[int]) -> None:
    """Against a model: a set of seen numbers and the highest, for any arrival order."""
    window = ReplayWindow(size=32)
    seen: set[int] = set()
    highest = -1
    for number in numbers:
        expected = number not in seen and number > highest - 32
        assert window.is_fresh(number) == expected
        if expected:
            assert window.mark(number) == (number > highest)
            seen.add(number)
            highest = max(highest, number)


# ------------------------------------------------------------ keys and nonces


def test_keys_rotate_by_epoch_and_a_stale_or_far_epoch_does_not_open() -> None:
    key = bytes(range(32))
    sealer, opener = Sealer(key, epoch_bits=2), Opener(key, epoch_bits=2)
    sealed = {n: sealer.seal(n, b"m%d" % n, b"h") for n in range(12)}
    assert sealed[0] != Sealer(key, epoch_bits=2).seal(4, b"m0", b"h")
    for number in (0, 1, 5, 2, 6, 9, 4, 7):  # epochs 0 0 1 0 1 2 1 1: reordering across
        assert opener.open(number, sealed[number], b"h") == b"m%d" % number
    assert opener.open(3, sealed[3], b"h") is None  # epoch 0 is two behind now
    far = Sealer(key, epoch_bits=2).seal(40, b"far", b"h")
    assert opener.open(40, far, b"h") is None  # epoch 10: not derived on a stranger's word
    assert opener.failures == 2


def test_no_key_and_nonce_pair_is_ever_used_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long lossy runs with retransmission, across key rotations (every 64 packets here):
    every sealing uses a (key, nonce) pair never used before, on every connection.

    Recorded at the AEAD the records module constructs, which both builds look up at run time
    (the compiled core's own methods cannot be patched)."""
    monkeypatch.setattr(records, "KEY_EPOCH_BITS", 6)
    used: Counter[tuple[bytes, bytes]] = Counter()
    rekey_nonce = b"\0" * 4 + b"\xff" * 8  # Noise's REKEY: each key once, by each end

    class RecordingAead:
        def __init__(self, key: bytes) -> None:
            self.key, self.aead = key, ChaCha20Poly1305(key)

        def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
            if nonce != rekey_nonce:
                used[self.key, nonce] += 1
            return self.aead.encrypt(nonce, data, associated_data)

        def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
            return self.aead.decrypt(nonce, data, associated_data)

    monkeypatch.setattr(records, "ChaCha20Poly1305", RecordingAead)
    lossy = LinkProfile(loss=0.15, duplicate=0.05, reorder=0.1, delay=0.02, jitter=0.01)
    for seed in range(3):
        harness = run_scenario(
            Scenario(
                seed=seed,
                up=lossy,
                down=lossy,
                client_sizes=((900,) * 150, (3_000,) * 40),
                server_sizes=((500,) * 150, (1_200,) * 60),
            )
        )
        harness.check_exactly_once_in_order()
    assert len(used) > 2_000
    assert max(used.values()) == 1


# ------------------------------------------------------------------- pinning


def handshake_with(
    pinned: str | None,
    server_config: ConnectionConfig | None = None,
    client_config: ConnectionConfig | None = None,
) -> Pair:
    listener_config = ListenerConfig(server_config or ConnectionConfig())
    pair = Pair(client_config or ConnectionConfig(), listener_config)
    pair.client = Connection.connect(
        SERVER, pair.now, seeded_random_bytes("pinned"), pair.config, server_fingerprint=pinned
    )
    pair.collect()
    pair.exchange()
    return pair


def test_a_first_connection_learns_the_key_and_a_pinned_one_must_match() -> None:
    learned = handshake_with(None)
    assert learned.client.state is State.OPEN
    assert learned.client.server_fingerprint == learned.listener.fingerprint
    pinned = handshake_with(learned.listener.fingerprint)
    assert pinned.client.state is State.OPEN


def test_a_client_pinned_to_another_key_refuses_naming_both() -> None:
    other = fingerprint(StaticKey(STATIC_PRIVATE).public)
    pair = handshake_with(other)
    (end,) = [e for e in pair.client_events if isinstance(e, ConnectionTerminated)]
    assert end.reason is TerminationReason.UNTRUSTED
    assert other in end.detail and str(pair.listener.fingerprint) in end.detail
    assert pair.listener.connections == {}  # no HELLO with a handshake was ever sent
    assert all(
        not isinstance(p := decode_datagram(d), HelloPacket) or not p.handshake
        for d in pair.sent_by_client
    )


@pytest.mark.parametrize("insecure_side", ["server", "client"])
def test_a_mismatched_encryption_setting_fails_clearly(insecure_side: str) -> None:
    plain = ConnectionConfig(insecure=True)
    if insecure_side == "server":
        pair = handshake_with(None, server_config=plain)
        expected = "connect with --insecure"
    else:
        pair = handshake_with(None, client_config=plain)
        expected = "requires encryption"
    (end,) = [e for e in pair.client_events if isinstance(e, ConnectionTerminated)]
    assert end.reason is TerminationReason.UNTRUSTED and expected in end.detail
    assert pair.listener.connections == {}


def test_retry_carries_the_server_key_only_when_encrypting() -> None:
    for insecure in (False, True):
        listener = Listener(
            seeded_random_bytes("k"), ListenerConfig(ConnectionConfig(insecure=insecure))
        )
        client = Connection.connect(
            SERVER, 0.0, seeded_random_bytes("c"), listener.config.connection
        )
        for datagram, _ in client.datagrams_to_send(0.0):
            listener.receive_datagram(datagram, CLIENT, 0.0)
        ((retry, _),) = listener.datagrams_to_send(0.0)
        packet = decode_datagram(retry)
        assert isinstance(packet, RetryPacket)
        assert (packet.server_key == b"") == insecure
        assert (listener.fingerprint is None) == insecure


# -------------------------------------------------------------- files on disk


def test_the_server_key_file_is_private_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "server_key"
    key, created = load_or_create_server_key(path)
    assert created and path.stat().st_mode & 0o777 == 0o600
    again, created = load_or_create_server_key(path)
    assert not created and again.public == key.public
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_server_key(path)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="does not hold"):
        load_or_create_server_key(path)


def test_known_servers_pin_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "known_servers"
    known = KnownServers(path)
    assert known.lookup("127.0.0.1", 1) is None
    known.pin("127.0.0.1", 1, "SHA256:one")
    known.pin("::1", 2, "SHA256:two")
    known.pin("127.0.0.1", 1, "SHA256:three")
    reloaded = KnownServers(path)
    assert reloaded.lookup("127.0.0.1", 1) == "SHA256:three"
    assert reloaded.lookup("::1", 2) == "SHA256:two"
    path.write_text("127.0.0.1:1 garbage\n")
    with pytest.raises(KeyFileError, match="known_servers:1"):
        KnownServers(path)


def test_the_sealed_overhead_leaves_room_for_every_fragment() -> None:
    """A full fragment plus the tag still fits max_datagram_size (no silent truncation); path
    MTU discovery is off, so no datagram may be larger (test_pmtu checks the larger sizes)."""
    base = ConnectionConfig().max_datagram_size
    pair = Pair(ConnectionConfig(max_path_datagram_size=base))
    server = pair.handshake()
    rng = random.Random(5)
    big = bytes(rng.getrandbits(8) for _ in range(50_000))
    pair.client.send(big)
    pair.collect()
    assert max(len(d) for d in pair.to_server) <= pair.config.max_datagram_size
    pair.run(until=pair.now + 5.0)
    assert pair.received_by_server() == [big]
    assert server.stats().dropped_invalid == 0
