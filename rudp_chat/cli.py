"""``rudp-chat``: the command line of the chat server, client, lossy proxy and demo.

Every subcommand sets ``run(args) -> exit code``; flags with bad values exit 2 through argparse.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from rudp_chat.aio import proxy
from rudp_chat.chat.client import ClientOptions
from rudp_chat.chat.console import run_client
from rudp_chat.chat.demo import DemoSettings, run_demo
from rudp_chat.chat.history import DEFAULT_HISTORY_FILE
from rudp_chat.chat.room import RoomLimits
from rudp_chat.chat.server import ServerOptions, run_server
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.noise import StaticKey
from rudp_chat.identity import (
    KeyFileError,
    default_client_key_file,
    default_key_file,
    default_known_servers,
    load_or_create_client_key,
)

__all__ = ["main"]

_DEFAULTS = ConnectionConfig()
_LIMITS = RoomLimits()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = argparse.ArgumentParser(
        prog="rudp-chat", description="A chat over a reliable-UDP protocol."
    )
    subparsers = parser.add_subparsers(metavar="COMMAND", required=True)
    _add_server(subparsers)
    _add_client(subparsers)
    proxy.add_parser(subparsers)
    _add_demo(subparsers)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


def _add_timeouts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=_DEFAULTS.heartbeat_interval,
        metavar="S",
        help="seconds of silence before a keep-alive (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=_DEFAULTS.idle_timeout,
        metavar="S",
        help="seconds without hearing the peer before it counts as gone (default %(default)s)",
    )


def _add_insecure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no encryption: anyone on the path can read and alter the chat (benchmarks, "
        "debugging; both ends must agree)",
    )


def _connection(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ConnectionConfig:
    try:
        return ConnectionConfig(
            insecure=args.insecure,
            heartbeat_interval=args.heartbeat,
            idle_timeout=args.idle_timeout,
            handshake_timeout=getattr(args, "handshake_timeout", _DEFAULTS.handshake_timeout),
        )
    except ValueError as exc:
        parser.error(str(exc))


def _add_server(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("server", help="run the chat server")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=12345, help="0 picks a free port (default %(default)s)"
    )
    stored = parser.add_mutually_exclusive_group()
    stored.add_argument(
        "--history",
        type=Path,
        default=Path(DEFAULT_HISTORY_FILE),
        metavar="PATH",
        help="SQLite file of the chat history (default ./%(default)s)",
    )
    stored.add_argument("--no-history", action="store_true", help="keep history in memory only")
    parser.add_argument(
        "--history-size",
        type=int,
        default=_LIMITS.history_size,
        metavar="N",
        help="messages shown to a joining user (default %(default)s)",
    )
    parser.add_argument(
        "--max-clients",
        type=int,
        default=_LIMITS.max_users,
        metavar="N",
        help="users at once (default %(default)s)",
    )
    parser.add_argument(
        "--max-per-address",
        type=int,
        default=ListenerConfig().max_connections_per_address,
        metavar="N",
        help="connections from one IP address; users behind one NAT share it "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=_LIMITS.rate,
        metavar="PER_S",
        help="messages per second a user may send (default %(default)s)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=_LIMITS.burst,
        metavar="N",
        help="messages a user may send at once (default %(default)s)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=default_key_file(),
        metavar="PATH",
        help="the server's private key, created on first start, readable by its owner only "
        "(default %(default)s)",
    )
    _add_insecure(parser)
    _add_timeouts(parser)
    parser.set_defaults(run=lambda args: _server(parser, args))


def _server(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        limits = RoomLimits(
            max_users=args.max_clients,
            history_size=args.history_size,
            rate=args.rate,
            burst=args.burst,
        )
        ListenerConfig(max_connections_per_address=args.max_per_address)  # checks it
    except ValueError as exc:
        parser.error(str(exc))
    options = ServerOptions(
        host=args.host,
        port=args.port,
        history=None if args.no_history else args.history,
        limits=limits,
        connection=_connection(parser, args),
        key_file=args.key_file,
        max_per_address=args.max_per_address,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        return asyncio.run(run_server(options))
    except (OSError, KeyFileError) as exc:
        print(f"error: cannot start the server: {exc}", file=sys.stderr)
        return 1


def _add_client(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("client", help="join a chat server")
    parser.add_argument("--name", required=True, help="your user name")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default %(default)s)")
    parser.add_argument("--port", type=int, default=12345)
    parser.add_argument(
        "--plain",
        action="store_true",
        help="one line per message in and out, for scripts (implied when not on a terminal)",
    )
    parser.add_argument(
        "--no-reconnect", action="store_true", help="exit when the connection is lost"
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=_DEFAULTS.handshake_timeout,
        metavar="S",
        help="seconds to wait for the server to answer (default %(default)s)",
    )
    parser.add_argument(
        "--server-key",
        metavar="FINGERPRINT",
        help="the server key's fingerprint (SHA256:...), as the server prints it at start; "
        "without it the first key seen is pinned",
    )
    parser.add_argument(
        "--known-servers",
        type=Path,
        default=default_known_servers(),
        metavar="PATH",
        help="where server keys are pinned (default %(default)s)",
    )
    identity = parser.add_mutually_exclusive_group()
    identity.add_argument(
        "--client-key",
        type=Path,
        default=default_client_key_file(),
        metavar="PATH",
        help="your private key, which the handshake proves to the server; created on first "
        "use, readable by its owner only (default %(default)s)",
    )
    identity.add_argument(
        "--guest",
        action="store_true",
        help="connect without a key (servers may refuse guests)",
    )
    _add_insecure(parser)
    _add_timeouts(parser)
    parser.set_defaults(run=lambda args: _client(parser, args))


def _client_key(args: argparse.Namespace) -> StaticKey | None:
    """The key to connect with (None: a guest, or insecure, where no handshake carries it).

    Raises :class:`KeyFileError`."""
    if args.guest or args.insecure:
        return None
    return load_or_create_client_key(args.client_key)[0]


def _client(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        client_key = _client_key(args)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    options = ClientOptions(
        host=args.host,
        port=args.port,
        name=args.name,
        reconnect=not args.no_reconnect,
        connection=_connection(parser, args),
        server_key=args.server_key,
        known_servers=args.known_servers,
        client_key=client_key,
    )
    if options.connection.insecure:
        print("WARNING: encryption is off (--insecure)", file=sys.stderr, flush=True)
    interactive = not args.plain and sys.stdin.isatty() and sys.stdout.isatty()
    try:
        return asyncio.run(run_client(options, interactive=interactive))
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = DemoSettings()
    parser = subparsers.add_parser(
        "demo", help="a scripted chat of three users through a lossy proxy"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="proxy seed (default %(default)s)"
    )
    parser.add_argument(
        "--loss",
        type=float,
        default=defaults.loss,
        metavar="P",
        help="drop probability each way (default %(default)s)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=defaults.pause,
        metavar="S",
        help="seconds between scripted lines (default %(default)s)",
    )
    parser.set_defaults(run=lambda args: _demo(parser, args))


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not 0 <= args.loss < 1 or args.pause < 0:
        parser.error("need 0 <= --loss < 1 and --pause >= 0")
    settings = DemoSettings(seed=args.seed, loss=args.loss, pause=args.pause)
    return asyncio.run(run_demo(settings))
