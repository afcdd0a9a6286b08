"""The fan-out benchmark's anchors: real IRC servers (InspIRCd, ngIRCd), started as a user would
run them, from a generated configuration on a free port on 127.0.0.1.

Why generated: the packaged configurations allow 3 connections per address and throttle
floods, so a load from one machine would be refused or delayed; here connection limits are
raised past any load and flood penalties are off, so the server's cost is what is measured.
Nothing else is changed from the defaults. TLS uses a throwaway self-signed certificate (made
with ``openssl`` in the run's temporary directory) that the load clients verify.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from processes import HelperProcess

__all__ = ["IRC_SERVERS", "IrcServer", "make_certificate", "start_irc_server"]

HOST: Final = "127.0.0.1"
CONNECTION_LIMIT: Final = 100_000  # per address and in total: past any load this box can make
START_LIMIT_S: Final = 60.0  # ngIRCd makes 2048-bit DH parameters on start: slow under load
POLL_S: Final = 0.05

IRC_SERVERS: Final = {"inspircd": "/usr/sbin/inspircd", "ngircd": "/usr/sbin/ngircd"}
"""The anchors by name, as Debian installs them (packages ``inspircd`` 3.x, ``ngircd`` 26.x)."""


@dataclass(frozen=True, slots=True)
class IrcServer:
    """A running IRC server: its process (for its CPU time) and the port clients use."""

    process: HelperProcess
    port: int


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its address in subjectAltName, so clients can
    verify it) and its key, in ``directory``; returns (certificate, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOST}"]
    subprocess.run(
        [*command, "-addext", f"subjectAltName=IP:{HOST}"],
        check=True,
        capture_output=True,
    )
    key.chmod(0o644)  # ngIRCd reads it after dropping root for "nobody"
    directory.chmod(0o755)
    return cert, key


def _free_port() -> int:
    """A TCP port free on ``HOST`` now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _inspircd_config(directory: Path, port: int, tls: bool, cert: Path, key: Path) -> list[str]:
    limit = CONNECTION_LIMIT
    bind = f'<bind address="{HOST}" port="{port}" type="clients"'
    (directory / "motd").write_text("fan-out benchmark\n")
    lines = [
        '<server name="bench.local" description="fan-out benchmark" network="bench">',
        '<admin name="bench" nick="bench" email="bench@localhost">',
        (bind + ' sslprofile="tls">') if tls else bind + ">",
        # commandrate in millicommands/s; no fake lag: a flood is processed at once, not delayed
        f'<connect name="bench" allow="*" timeout="60" pingfreq="10m" hardsendq="64M" '
        f'softsendq="1M" recvq="1M" threshold="{limit}" commandrate="{limit * 1000}" '
        f'fakelag="no" localmax="{limit}" globalmax="{limit}" limit="{limit}" '
        'resolvehostnames="no" useident="no" maxconnwarn="no">',
        f'<channels users="{limit}" opers="{limit}">',
        f'<performance softlimit="{limit}" somaxconn="4096" quietbursts="yes">',
        f'<pid file="{directory}/inspircd.pid">',
        f'<files motd="{directory}/motd">',
    ]
    if tls:
        lines[2:2] = [
            '<module name="ssl_gnutls">',
            f'<sslprofile name="tls" provider="gnutls" certfile="{cert}" keyfile="{key}" '
            'requestclientcert="no">',
        ]
    path = directory / "inspircd.conf"
    path.write_text("\n".join(lines) + "\n")
    return [IRC_SERVERS["inspircd"], "--nofork", "--runasroot", f"--config={path}"]


def _ngircd_config(directory: Path, port: int, tls: bool, cert: Path, key: Path) -> list[str]:
    lines = [
        "[Global]",
        "\tName = bench.local",
        "\tInfo = fan-out benchmark",
        f"\tListen = {HOST}",
        f"\tPorts = {'' if tls else port}",  # empty: no plain listener
        "\tMotdPhrase = fan-out benchmark",
        "[Limits]",
        "\tMaxConnections = 0",  # 0: no limit
        "\tMaxConnectionsIP = 0",
        "\tMaxJoins = 0",
        "\tMaxNickLength = 30",
        "\tMaxPenaltyTime = 0",  # 0: no flood penalties (the server warns; that is the point)
        "\tPingTimeout = 600",
        "\tPongTimeout = 600",
        "[Options]",
        "\tDNS = no",
        "\tIdent = no",
        "\tPAM = no",
        f"\tIncludeDir = {directory}",  # not /etc/ngircd/ngircd.conf.d
    ]
    if tls:
        lines += ["[SSL]", f"\tCertFile = {cert}", f"\tKeyFile = {key}", f"\tPorts = {port}"]
    path = directory / "ngircd.conf"
    path.write_text("\n".join(lines) + "\n")
    return [IRC_SERVERS["ngircd"], "--nodaemon", "--config", str(path)]


async def start_irc_server(
    name: str, directory: Path, *, tls: bool, cert: Path, key: Path
) -> IrcServer:
    """Start IRC server ``name`` (a key of :data:`IRC_SERVERS`) in ``directory``; returns once
    its port accepts connections. Raises RuntimeError if the binary is missing or it does not
    come up within :data:`START_LIMIT_S`."""
    if shutil.which(IRC_SERVERS[name]) is None:
        raise RuntimeError(f"{IRC_SERVERS[name]} is not installed (Debian package {name})")
    port = _free_port()
    configure = _inspircd_config if name == "inspircd" else _ngircd_config
    command = configure(directory, port, tls, cert, key)
    # No core file: InspIRCd 3.15 (Debian) crashes while unloading its modules on SIGTERM,
    # after the run, and would leave one in the working directory. exec keeps the PID.
    no_core = ["/bin/sh", "-c", 'ulimit -c 0 && exec "$@"', name, *command]
    process = HelperProcess(name, no_core, directory)
    deadline = time.monotonic() + START_LIMIT_S
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if process.process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = process.stdout.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start: {tail}") from None
            await asyncio.sleep(POLL_S)
            continue
        writer.close()
        await writer.wait_closed()
        return IrcServer(process, port)
