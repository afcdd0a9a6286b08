"""``rudp-chat``: the command line of the chat server, client, lossy proxy and demo.

Every subcommand sets ``run(args) -> exit code``. A bad flag value exits 2 through argparse, with
one line naming the flag, before anything starts; failures found later (a port in use, an
unreachable server) exit 1 with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sqlite3
import sys
from pathlib import Path

from rudp_chat import __version__
from rudp_chat.aio import proxy
from rudp_chat.arguments import count, host_port, host_ports, port, positive
from rudp_chat.chat.client import ClientOptions
from rudp_chat.chat.clusterconfig import DEFAULT_NAME_TTL_S, DEFAULT_STREAM_MAXLEN, ClusterOptions
from rudp_chat.chat.confusables import SkeletonsUnavailableError
from rudp_chat.chat.console import run_client
from rudp_chat.chat.demo import DemoSettings, run_demo
from rudp_chat.chat.failover import ServerAddress
from rudp_chat.chat.history import DEFAULT_HISTORY_FILE
from rudp_chat.chat.room import MAX_PAGE, RoomLimits
from rudp_chat.chat.server import ServerOptions, run_server
from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.noise import StaticKey
from rudp_chat.identity import (
    KeyFileError,
    KnownServers,
    default_client_key_file,
    default_key_file,
    default_known_servers,
    is_fingerprint,
    load_or_create_client_key,
)

__all__ = ["main"]

_DEFAULTS = ConnectionConfig()
_LIMITS = RoomLimits()
DEFAULT_PORT = 12345  # the server listens on it; a client without --port or --server uses it
CLIENT_HOST = "127.0.0.1"  # a client's server without --host or --server


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = argparse.ArgumentParser(
        prog="rudp-chat",
        description="A chat over a reliable-UDP protocol. "
        "`rudp-chat COMMAND --help` lists a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(metavar="COMMAND", title="commands")
    _add_server(subparsers)
    _add_client(subparsers)
    proxy.add_parser(subparsers)
    _add_demo(subparsers)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):  # no command: say which there are
        parser.print_help(sys.stderr)
        return 2
    code: int = args.run(args)
    return code


def _fingerprint(text: str) -> str:
    if not is_fingerprint(text):
        raise argparse.ArgumentTypeError(
            f"expected a fingerprint as the server prints it (SHA256: and 43 characters), "
            f"got {text!r}"
        )
    return text


def _history_path(text: str) -> Path:
    """A place a history file can be: not a directory, in a directory that exists."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name in it")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory {path.resolve().parent}")
    return path


def _add_timeouts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--heartbeat",
        type=positive("seconds"),
        default=_DEFAULTS.heartbeat_interval,
        metavar="S",
        help="seconds of silence before a keep-alive (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive("seconds"),
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


def _qlog_directory(text: str) -> str:
    """A directory for traces: made if missing, so only an existing file is refused."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a directory for the traces")
    return text


def _add_qlog(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qlog",
        type=_qlog_directory,
        metavar="DIR",
        help="write a qlog trace of every connection into DIR (made if missing), one "
        "<connection id>_<client|server>.sqlog file each, for qvis",
    )


def _connection(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ConnectionConfig:
    """The connection settings the flags ask for; exits 2 if they cannot work together."""
    if args.heartbeat >= args.idle_timeout:
        parser.error(
            f"--heartbeat ({args.heartbeat:g} s) must be shorter than --idle-timeout "
            f"({args.idle_timeout:g} s): the keep-alives are what keeps a quiet peer alive"
        )
    return ConnectionConfig(
        insecure=args.insecure,
        heartbeat_interval=args.heartbeat,
        idle_timeout=args.idle_timeout,
        handshake_timeout=getattr(args, "handshake_timeout", _DEFAULTS.handshake_timeout),
        qlog=args.qlog,
    )


def _add_server(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run the chat server",
        description="Run the chat server: it prints its key's fingerprint and where it listens, "
        "and stores every message in SQLite before acknowledging it.",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=port(any_allowed=True),
        default=DEFAULT_PORT,
        help="UDP port to listen on, 1-65535; 0 picks a free one (default %(default)s)",
    )
    stored = parser.add_mutually_exclusive_group()
    stored.add_argument(
        "--history",
        type=_history_path,
        default=Path(DEFAULT_HISTORY_FILE),
        metavar="PATH",
        help="SQLite file of the chat history (default ./%(default)s)",
    )
    stored.add_argument(
        "--no-history",
        action="store_true",
        help="store nothing on disk: the newest lines live in memory until the server stops "
        "(people entering a room are still shown its last --history-size lines)",
    )
    parser.add_argument(
        "--history-size",
        type=count(0, "a number of messages >= 0"),
        default=_LIMITS.history_size,
        metavar="N",
        help=f"lines shown on entering a room, and by a bare /history; at most {MAX_PAGE} "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--rooms-per-user",
        type=count(1, "a number of rooms >= 1"),
        default=_LIMITS.rooms_per_user,
        metavar="N",
        help="rooms one user may be in at once, #lobby included (default %(default)s)",
    )
    parser.add_argument(
        "--members-per-room",
        type=count(1, "a number of users >= 1"),
        default=_LIMITS.members_per_room,
        metavar="N",
        help="members of a room other than #lobby, which holds everyone (default %(default)s)",
    )
    parser.add_argument(
        "--max-rooms",
        type=count(1, "a number of rooms >= 1"),
        default=_LIMITS.max_rooms,
        metavar="N",
        help="rooms with members at once, #lobby included (default %(default)s)",
    )
    parser.add_argument(
        "--max-clients",
        type=count(1, "a number of users >= 1"),
        default=_LIMITS.max_users,
        metavar="N",
        help="users at once (default %(default)s)",
    )
    parser.add_argument(
        "--max-per-address",
        type=count(1, "a number of connections >= 1"),
        default=ListenerConfig().max_connections_per_address,
        metavar="N",
        help="connections from one IP address; users behind one NAT share it (default %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=positive("messages per second"),
        default=_LIMITS.rate,
        metavar="PER_S",
        help="messages per second a user may send (default %(default)s)",
    )
    parser.add_argument(
        "--burst",
        type=count(1, "a number of messages >= 1"),
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
    parser.add_argument(
        "--no-guests",
        action="store_true",
        help="refuse clients without a key (--guest): every user owns the name it uses",
    )
    parser.add_argument(
        "--metrics",
        type=host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (port 0: any free one, "
        "printed at start); needs prometheus_client: pip install 'rudp-chat[metrics]'",
    )
    _add_cluster(parser)
    _add_insecure(parser)
    _add_timeouts(parser)
    _add_qlog(parser)
    parser.set_defaults(run=lambda args: _server(parser, args))


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "cluster", "several servers (nodes) serving one chat through one Redis (README: Cluster)"
    )
    group.add_argument(
        "--redis",
        metavar="URL",
        help="join the cluster whose Redis this is (redis://HOST:PORT/DB); "
        "without it the server stands alone",
    )
    group.add_argument(
        "--node", metavar="NAME", help="this node's name, unique in the cluster (default: host name)"
    )
    group.add_argument(
        "--stream-maxlen",
        type=count(1, "a number of lines >= 1"),
        default=DEFAULT_STREAM_MAXLEN,
        metavar="N",
        help="lines each room's Redis stream keeps (MAXLEN ~); older ones stay in each node's "
        "SQLite history (default %(default)s)",
    )
    group.add_argument(
        "--name-ttl",
        type=positive("seconds"),
        default=DEFAULT_NAME_TTL_S,
        metavar="S",
        help="seconds after a node's last heartbeat that its users time out on the other "
        "nodes and its names free (default %(default)s)",
    )
    group.add_argument(
        "--wait-replicas",
        type=count(0, "a number of replicas >= 0"),
        default=0,
        metavar="N",
        help="acknowledge a line only once N Redis replicas have it (WAIT; default %(default)s)",
    )
    group.add_argument(
        "--wait-timeout",
        type=positive("seconds"),
        default=1.0,
        metavar="S",
        help="seconds one WAIT waits for the replicas (retried until they confirm; "
        "default %(default)s)",
    )


def _cluster(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ClusterOptions | None:
    """The cluster ``--redis`` names (None: the server stands alone); exits on a bad value."""
    if args.redis is None:
        if args.node is not None:
            parser.error("argument --node: needs --redis")
        return None
    if importlib.util.find_spec("redis") is None:
        parser.error("argument --redis: needs the redis package: pip install 'rudp-chat[cluster]'")
    if not args.redis.startswith(("redis://", "rediss://", "unix://")):
        parser.error(f"argument --redis: expected redis://HOST:PORT/DB, got {args.redis!r}")
    node = {} if args.node is None else {"node": args.node}
    try:
        return ClusterOptions(
            args.redis,
            **node,
            stream_maxlen=args.stream_maxlen,
            name_ttl=args.name_ttl,
            replicas=args.wait_replicas,
            replica_timeout=args.wait_timeout,
        )
    except ValueError as exc:
        parser.error(f"cluster: {exc}")


def _server(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.history_size > MAX_PAGE:
        parser.error(f"argument --history-size: at most {MAX_PAGE}, got {args.history_size}")
    if args.no_guests and args.insecure:
        parser.error("--no-guests needs encryption: without it no client presents a key")
    if args.metrics is not None and importlib.util.find_spec("prometheus_client") is None:
        parser.error(
            "argument --metrics: needs prometheus_client: pip install 'rudp-chat[metrics]'"
        )
    limits = RoomLimits(
        max_users=args.max_clients,
        history_size=args.history_size,
        rate=args.rate,
        burst=args.burst,
        rooms_per_user=args.rooms_per_user,
        members_per_room=args.members_per_room,
        max_rooms=args.max_rooms,
    )
    options = ServerOptions(
        host=args.host,
        port=args.port,
        history=None if args.no_history else args.history,
        limits=limits,
        connection=_connection(parser, args),
        key_file=args.key_file,
        max_per_address=args.max_per_address,
        allow_guests=not args.no_guests,
        metrics=args.metrics,
        cluster=_cluster(parser, args),
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        return asyncio.run(run_server(options))
    except sqlite3.Error as exc:  # the file exists but is no history (checked before it starts)
        parser.error(f"argument --history: cannot use {args.history}: {exc}")
    except (KeyFileError, SkeletonsUnavailableError) as exc:
        print(f"error: cannot start the server: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = exc.filename or f"{args.host}:{args.port}"
        print(f"error: cannot start the server: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _add_client(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "client",
        help="join a chat server",
        description="Join a chat server. On a terminal: a prompt with a status bar; otherwise "
        "(or with --plain) one line in is one message, one line out per message.",
    )
    parser.add_argument("--name", required=True, help="your user name")
    parser.add_argument("--host", help=f"server address (default {CLIENT_HOST})")
    parser.add_argument(
        "--port",
        type=port(any_allowed=False),
        help=f"server UDP port, 1-65535 (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--server",
        dest="servers",
        type=host_ports,
        action="extend",
        metavar="HOST:PORT[,...]",
        help="a server to use instead of --host and --port; give it several times (or a comma "
        "list) for the nodes of a cluster: the client uses the first that answers and, when "
        "its node dies or shuts down, moves on to the next",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="one line per message in and out, for scripts (implied when not on a terminal)",
    )
    parser.add_argument(
        "--no-reconnect", action="store_true", help="exit when the connection is lost"
    )
    parser.add_argument(
        "--show-typing",
        action="store_true",
        help="print a line when someone starts or stops typing (the interactive status bar "
        "shows it anyway)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=positive("seconds"),
        default=_DEFAULTS.handshake_timeout,
        metavar="S",
        help="seconds to wait for the server to answer (default %(default)s)",
    )
    parser.add_argument(
        "--server-key",
        type=_fingerprint,
        metavar="FINGERPRINT",
        help="the server key's fingerprint (SHA256:...), as the server prints it at start; "
        "without it the first key seen is pinned (per HOST:PORT); with several --server, "
        "every node must present it (nodes sharing one --key-file)",
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
    _add_qlog(parser)
    parser.set_defaults(run=lambda args: _client(parser, args))


def _client_key(args: argparse.Namespace) -> StaticKey | None:
    """The key to connect with (None: a guest, or insecure, where no handshake carries it).

    Raises :class:`KeyFileError`."""
    if args.guest or args.insecure:
        return None
    return load_or_create_client_key(args.client_key)[0]


def _servers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[ServerAddress]:
    """The servers to try, in order; exits 2 for a server given twice or --server with --host
    or --port."""
    if not args.servers:
        return [(args.host or CLIENT_HOST, args.port or DEFAULT_PORT)]
    if args.host is not None or args.port is not None:
        parser.error("argument --server: give either --server or --host and --port, not both")
    servers: list[ServerAddress] = args.servers
    for index, server in enumerate(servers):
        if server in servers[:index]:
            parser.error(f"argument --server: {KnownServers.name(*server)} is given twice")
    return servers


def _client(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    (host, port_number), *alternates = _servers(parser, args)
    try:
        client_key = _client_key(args)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    options = ClientOptions(
        host=host,
        port=port_number,
        alternates=tuple(alternates),
        name=args.name,
        reconnect=not args.no_reconnect,
        connection=_connection(parser, args),
        server_key=args.server_key,
        known_servers=args.known_servers,
        client_key=client_key,
        show_typing=args.show_typing,
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
        "demo",
        help="a scripted chat of three users through a lossy proxy",
        description="Start a server, a lossy proxy and three scripted clients on this machine, "
        "and check that every user saw every message once, in one order.",
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
