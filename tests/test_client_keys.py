"""Client keys: the Noise IK handshake against an independent implementation and the §11.1
vectors, the server seeing the key it authenticated, guests (NK) alongside keyed clients, a
server that takes no guests, tampering with the key-carrying message, and client key files."""

from __future__ import annotations

import asyncio
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection
from noisespec import (
    CLIENT_EPHEMERAL,
    CLIENT_ID,
    CLIENT_STATIC_PRIVATE,
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
from simharness import Pair
from test_chat_cli import client, processes, server

from rudp_chat.aio import GuestsNotAllowedError, connect, serve
from rudp_chat.core.codec import decode_datagram, encode_datagram
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.errors import HandshakeError
from rudp_chat.core.events import ConnectionTerminated
from rudp_chat.core.frames import ErrorCode, HelloPacket
from rudp_chat.core.listener import GUESTS_REFUSED
from rudp_chat.core.noise import (
    IK_MESSAGE1_SIZE,
    MESSAGE1_SIZE,
    Initiator,
    Pattern,
    Responder,
    StaticKey,
    fingerprint,
    prologue,
)
from rudp_chat.core.records import nonce
from rudp_chat.core.state import State
from rudp_chat.identity import KeyFileError, load_or_create_client_key

# The IK vectors PROTOCOL.md §11.1 prints (same fixed inputs as NK's, plus the client's static
# key). test_the_ik_vectors_follow_from_protocol_md_step_by_step rebuilds them from the spec's
# text, and test_our_ik_handshake_is_noise_ik checks them against the noiseprotocol package.
IK_VECTORS = {
    "prologue": "727564705f6368617400000001c1c2c3c4c5c6c7c8494b",
    "client_public": "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f",
    "client_fingerprint": "SHA256:FnhtTl73RBEvGsRcl33/5U1nzJ3mRe+M/tPep5jwwE4",
    "message1": "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254"
    "1da72f8ed612cf34803d805a1955fc01f1c704281af0f9e703d4afb6233d927b"
    "ee2030c6d1d6386a0f0ae2e73e41bdd4e787fabc86564486f16aa42423a58d38",
    "message2": "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a"
    "2f30039e5083969e61d0481c2d4fdeb737389e18d0012f014d91374f38b90d4c04441fe1d3c980d2",
    "client_to_server": "b19acd6f2fc178454ba52b6c0ecc4c7fca472c251ddd9ea85600fb79c32beede",
    "server_to_client": "8df36a6492eee984abb155da6f826c8f4b0c68530c7c729b9f0657da46103dec",
}
IK_PROLOGUE = prologue(1, CLIENT_ID, Pattern.IK)


def ik_message1(client_private: bytes = CLIENT_STATIC_PRIVATE) -> bytes:
    server_public = StaticKey(STATIC_PRIVATE).public
    client = StaticKey(client_private)
    return Initiator(server_public, IK_PROLOGUE, CLIENT_EPHEMERAL, client).message1


# ------------------------------------------------------------------ the handshake


def test_the_ik_vectors_in_protocol_md() -> None:
    static, client = StaticKey(STATIC_PRIVATE), StaticKey(CLIENT_STATIC_PRIVATE)
    initiator = Initiator(static.public, IK_PROLOGUE, CLIENT_EPHEMERAL, client)
    responder = Responder(static, IK_PROLOGUE, initiator.message1, Pattern.IK)
    assert responder.peer_static == client.public
    message2, server_send, server_receive = responder.write_message2(
        SERVER_EPHEMERAL, SERVER_ID + RESET_TOKEN
    )
    payload, client_send, client_receive = initiator.read_message2(message2)
    assert payload == SERVER_ID + RESET_TOKEN
    assert (client_send, client_receive) == (server_receive, server_send)
    assert {
        "prologue": IK_PROLOGUE.hex(),
        "client_public": client.public.hex(),
        "client_fingerprint": fingerprint(client.public),
        "message1": initiator.message1.hex(),
        "message2": message2.hex(),
        "client_to_server": client_send.hex(),
        "server_to_client": client_receive.hex(),
    } == IK_VECTORS
    assert len(initiator.message1) == IK_MESSAGE1_SIZE == Pattern.IK.message1_size == 96


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
def test_our_ik_handshake_is_noise_ik() -> None:
    """Byte for byte what an independent Noise library sends, and the same traffic keys; its
    responder learns our client key."""
    their_initiator = NoiseConnection.from_name(Pattern.IK.value)
    their_initiator.set_as_initiator()
    their_initiator.set_prologue(IK_PROLOGUE)
    their_initiator.set_keypair_from_public_bytes(
        Keypair.REMOTE_STATIC, StaticKey(STATIC_PRIVATE).public
    )
    their_initiator.set_keypair_from_private_bytes(Keypair.STATIC, CLIENT_STATIC_PRIVATE)
    their_initiator.set_keypair_from_private_bytes(Keypair.EPHEMERAL, CLIENT_EPHEMERAL)
    their_responder = NoiseConnection.from_name(Pattern.IK.value)
    their_responder.set_as_responder()
    their_responder.set_prologue(IK_PROLOGUE)
    their_responder.set_keypair_from_private_bytes(Keypair.STATIC, STATIC_PRIVATE)
    their_responder.set_keypair_from_private_bytes(Keypair.EPHEMERAL, SERVER_EPHEMERAL)
    their_initiator.start_handshake()
    their_responder.start_handshake()

    message1 = bytes.fromhex(IK_VECTORS["message1"])
    message2 = bytes.fromhex(IK_VECTORS["message2"])
    assert bytes(their_initiator.write_message(b"")) == message1
    their_responder.read_message(message1)
    remote_static = their_responder.noise_protocol.handshake_state.rs.public_bytes
    assert remote_static == bytes.fromhex(IK_VECTORS["client_public"])
    assert bytes(their_responder.write_message(SERVER_ID + RESET_TOKEN)) == message2
    assert bytes(their_initiator.read_message(message2)) == SERVER_ID + RESET_TOKEN
    client_to_server = bytes.fromhex(IK_VECTORS["client_to_server"])
    server_to_client = bytes.fromhex(IK_VECTORS["server_to_client"])
    assert bytes(their_initiator.encrypt(b"up")) == ChaCha20Poly1305(client_to_server).encrypt(
        nonce(0), b"up", b""
    )
    assert bytes(their_responder.encrypt(b"down")) == ChaCha20Poly1305(server_to_client).encrypt(
        nonce(0), b"down", b""
    )


def test_the_ik_vectors_follow_from_protocol_md_step_by_step() -> None:
    """The §11.1 IK vectors rebuilt from PROTOCOL.md §3.6's text alone, with the primitives
    called directly and none of rudp_chat's code."""
    # the IK prologue: "rudp_chat" ‖ version (4 bytes big-endian) ‖ client_id ‖ "IK"
    prologue_bytes = b"rudp_chat" + (1).to_bytes(4, "big") + CLIENT_ID + b"IK"
    server_public, client_public = public(STATIC_PRIVATE), public(CLIENT_STATIC_PRIVATE)
    # step 1: the protocol name is h and ck; then the prologue and the server's key
    h = ck = b"Noise_IK_25519_ChaChaPoly_SHA256"
    assert len(h) == 32
    h = hash_of(hash_of(h, prologue_bytes), server_public)
    # step 2: message 1, e.public ‖ ENCRYPT(k, 0, h, s.public) ‖ ENCRYPT(k', 0, h', "")
    client_e = public(CLIENT_EPHEMERAL)
    h = hash_of(h, client_e)
    ck, k = hkdf(ck, x25519(CLIENT_EPHEMERAL, server_public))  # es
    encrypted_static = encrypt(k, 0, h, client_public)  # s
    h = hash_of(h, encrypted_static)
    ck, k = hkdf(ck, x25519(CLIENT_STATIC_PRIVATE, server_public))  # ss
    tag = encrypt(k, 0, h, b"")
    h = hash_of(h, tag)
    message1 = client_e + encrypted_static + tag
    # step 3: message 2, e'.public ‖ ENCRYPT(k, 0, h, server_id ‖ reset_token)
    server_e = public(SERVER_EPHEMERAL)
    h = hash_of(h, server_e)
    ck, _ = hkdf(ck, x25519(SERVER_EPHEMERAL, client_e))  # ee
    ck, k = hkdf(ck, x25519(SERVER_EPHEMERAL, client_public))  # se
    message2 = server_e + encrypt(k, 0, h, SERVER_ID + RESET_TOKEN)
    # step 4: split; the client sends with k1
    client_to_server, server_to_client = hkdf(ck, b"")
    assert {
        "prologue": prologue_bytes.hex(),
        "client_public": client_public.hex(),
        "client_fingerprint": spec_fingerprint(client_public),
        "message1": message1.hex(),
        "message2": message2.hex(),
        "client_to_server": client_to_server.hex(),
        "server_to_client": server_to_client.hex(),
    } == IK_VECTORS


def test_the_length_names_the_pattern_and_the_prologue_binds_it() -> None:
    static = StaticKey(STATIC_PRIVATE)
    message1 = ik_message1()
    assert Pattern.of_message1(message1) is Pattern.IK
    assert Pattern.of_message1(bytes(MESSAGE1_SIZE)) is Pattern.NK
    for size in (0, MESSAGE1_SIZE - 1, MESSAGE1_SIZE + 1, IK_MESSAGE1_SIZE + 1):
        with pytest.raises(HandshakeError):
            Pattern.of_message1(bytes(size))
    with pytest.raises(HandshakeError):  # an IK message read under NK's prologue
        Responder(static, prologue(1, CLIENT_ID), message1, Pattern.IK)
    with pytest.raises(HandshakeError):  # replayed into another connection id
        Responder(static, prologue(1, b"otherid!", Pattern.IK), message1, Pattern.IK)
    with pytest.raises(HandshakeError):  # for another server
        Responder(StaticKey(bytes(32 * [7])), IK_PROLOGUE, message1, Pattern.IK)


@given(st.integers(0, IK_MESSAGE1_SIZE - 1), st.integers(1, 255))
def test_a_flipped_bit_in_the_key_carrying_message_fails(position: int, xor: int) -> None:
    """Ephemeral key, encrypted client key or final tag: any change fails to authenticate, so
    nobody can present a key they do not hold, nor swap in another one."""
    damaged = bytearray(ik_message1())
    damaged[position] ^= xor
    with pytest.raises(HandshakeError):
        Responder(StaticKey(STATIC_PRIVATE), IK_PROLOGUE, bytes(damaged), Pattern.IK)


# ------------------------------------------------------------ connections


def test_a_keyed_client_and_a_guest_both_connect_and_the_server_sees_which() -> None:
    key = StaticKey(CLIENT_STATIC_PRIVATE)
    keyed = Pair(client_key=key)
    server = keyed.handshake()
    assert server.peer_static_key == key.public
    assert server.peer_fingerprint == fingerprint(key.public) == IK_VECTORS["client_fingerprint"]
    assert keyed.client.peer_fingerprint == keyed.listener.fingerprint
    guest = Pair()
    server = guest.handshake()
    assert server.peer_static_key is None and server.peer_fingerprint is None
    assert guest.client.peer_fingerprint == guest.listener.fingerprint
    for pair in (keyed, guest):  # and both carry data
        pair.client.send(b"hello")
        pair.run(until=pair.now + 1.0)
        assert pair.received_by_server() == [b"hello"]


def test_a_server_that_takes_no_guests_refuses_one_by_name_and_takes_a_key() -> None:
    no_guests = ListenerConfig(allow_guests=False)
    guest = Pair(listener_config=no_guests)
    guest.exchange()
    assert guest.server is None and guest.listener.stats.refused == 1
    (end,) = [e for e in guest.client_events if isinstance(e, ConnectionTerminated)]
    assert end.error_code == ErrorCode.KEY_REQUIRED and end.detail == GUESTS_REFUSED
    assert guest.client.state is not State.OPEN
    keyed = Pair(listener_config=no_guests, client_key=StaticKey(CLIENT_STATIC_PRIVATE))
    assert keyed.handshake().peer_static_key == public(CLIENT_STATIC_PRIVATE)


def test_an_insecure_server_ignores_the_guest_setting() -> None:
    """Insecure mode has no handshake to carry a key: every client is a guest there."""
    plain = ConnectionConfig(insecure=True)
    pair = Pair(plain, ListenerConfig(plain, allow_guests=False))
    assert pair.handshake().peer_static_key is None


def test_a_tampered_key_carrying_hello_opens_nothing() -> None:
    """A HELLO whose IK message was altered on the way passes the token check, then fails the
    handshake: counted, no connection, no WELCOME."""
    pair = Pair(client_key=StaticKey(CLIENT_STATIC_PRIVATE))
    pair.deliver_to_server()  # the first HELLO: RETRY comes back
    pair.deliver_to_client()
    hello = decode_datagram(pair.to_server.pop())
    assert isinstance(hello, HelloPacket) and len(hello.handshake) == IK_MESSAGE1_SIZE
    damaged = bytearray(hello.handshake)
    damaged[40] ^= 1  # inside the encrypted client key (bytes 32..79)
    forged = HelloPacket(
        hello.client_id, hello.number, hello.version, hello.token, bytes(damaged), hello.padding
    )
    pair.listener.receive_datagram(encode_datagram(forged), pair.client_address, pair.now)
    pair.collect()
    assert pair.listener.stats.hellos_bad_handshake == 1
    assert pair.listener.connections == {} and pair.to_client == []


# ------------------------------------------------------------ asyncio


def test_real_sockets_a_guest_is_refused_with_a_named_error_a_key_is_seen() -> None:
    key = StaticKey.generate()

    async def main() -> None:
        config = ListenerConfig(allow_guests=False)
        async with await serve("127.0.0.1", 0, config=config) as server:
            with pytest.raises(GuestsNotAllowedError, match="client key"):
                await connect(*server.address)
            async with await connect(*server.address, client_key=key) as client:
                accepted = await server.accept()
                assert accepted.peer_static_key == key.public
                assert accepted.peer_fingerprint == fingerprint(key.public)
                assert client.peer_fingerprint == server.fingerprint
                await client.send(b"mine")
                assert await accepted.recv() == b"mine"
            assert server.stats().refused == 1

    asyncio.run(asyncio.wait_for(main(), 30))


# ------------------------------------------------------------ the command line


def test_the_cli_client_makes_its_key_once_and_a_guest_needs_none(tmp_path: Path) -> None:
    key_file = tmp_path / "alice_key"
    with processes() as started:
        chat_server, port = server(tmp_path / "history.sqlite3")
        started.append(chat_server)
        alice = client("alice", port, "--client-key", str(key_file))
        started.append(alice)
        alice.wait_line(r"^\*\*\* alice joined$")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        made = key_file.read_text()
        guest = client("bob", port, "--guest")
        started.append(guest)
        guest.wait_line(r"^\*\*\* bob joined$")
        for chat in (alice, guest):
            chat.type("exit")
            assert chat.exit_code() == 0
        again = client("alice", port, "--client-key", str(key_file))  # the same key, quietly
        started.append(again)
        again.wait_line(r"^\*\*\* alice joined$")
        again.type("exit")
        assert again.exit_code() == 0 and key_file.read_text() == made
        key_file.chmod(0o644)
        exposed = client("alice", port, "--client-key", str(key_file))
        started.append(exposed)
        assert exposed.exit_code() == 1
        assert any("chmod 600" in line for line in exposed.errors)
        both = client("alice", port, "--guest", "--client-key", str(key_file))
        started.append(both)
        assert both.exit_code() == 2  # argparse: not allowed with each other


# ------------------------------------------------------------ key files


def test_the_client_key_file_is_private_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "config" / "client_key"
    key, created = load_or_create_client_key(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "client key" in path.read_text()
    again, created = load_or_create_client_key(path)
    assert not created and again.public == key.public


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_client_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "client_key"
    load_or_create_client_key(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_client_key(path)


def test_clients_started_together_make_one_key(tmp_path: Path) -> None:
    """Every racer gets the one key that was written whole; none reads a half-written file."""
    path = tmp_path / "client_key"
    racers = 8
    start = threading.Barrier(racers)
    results: list[tuple[StaticKey, bool]] = []

    def race() -> None:
        start.wait()
        results.append(load_or_create_client_key(path))

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == racers and [created for _, created in results].count(True) == 1
    assert len({key.public for key, _ in results}) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["client_key"]  # no temporary left


def test_a_client_key_file_without_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "client_key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not hold a client key"):
        load_or_create_client_key(path)
