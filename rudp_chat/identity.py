"""Keys on disk: the server's identity, a client's, and the servers a user has met (like
SSH's known_hosts).

A private key (the server's, or a client's, which the IK handshake proves to servers) lives
in a file only its owner may read; where the file system has POSIX permissions (Linux, macOS) a
file others can read is refused, as SSH refuses an unprotected key. Windows has no mode bits:
there the file is protected by where it lives, the user's profile (``%APPDATA%``), whose ACL
grants only the user, SYSTEM and administrators. A client pins the fingerprint of the key a
server first presents, and from then on a different key fails the connection.

The files live in the platform's per-user configuration directory (see :func:`config_dir`).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

from platformdirs.macos import MacOS
from platformdirs.windows import Windows

from rudp_chat.core.noise import StaticKey

__all__ = [
    "KeyFileError",
    "KnownServers",
    "config_dir",
    "default_client_key_file",
    "default_key_file",
    "default_known_servers",
    "has_posix_permissions",
    "is_fingerprint",
    "load_or_create_client_key",
    "load_or_create_server_key",
]

_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]")
"""``SHA256:`` and 32 bytes in unpadded base64: 43 characters, the last holding 2 bits + 4 zeros."""
_KEY_HEADER = "# rudp_chat {kind} key (X25519, base64); keep it private\n"


class KeyFileError(Exception):
    """A key or known-servers file that cannot be used, with what to do about it."""


APP_NAME = "rudp_chat"


def config_dir(platform: str = sys.platform) -> Path:
    """Where keys and pins live for ``platform`` (a ``sys.platform`` value), per ``platformdirs``:
    Windows ``%APPDATA%\\rudp_chat`` (roaming: pins follow the user), macOS
    ``~/Library/Application Support/rudp_chat``, elsewhere ``$XDG_CONFIG_HOME/rudp_chat``, else
    ``~/.config/rudp_chat`` (the XDG rule, as before platformdirs: existing files are found).
    The pins are state rather than configuration, but platformdirs gives the two one directory
    on Windows and macOS, and on Linux they have always lived here."""
    if platform == "win32":
        return Path(Windows(appname=APP_NAME, appauthor=False, roaming=True).user_config_dir)
    if platform == "darwin":
        return Path(MacOS(appname=APP_NAME).user_config_dir)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP_NAME


def has_posix_permissions(platform: str = sys.platform) -> bool:
    """Whether files on ``platform`` have POSIX mode bits the key check can trust."""
    return platform != "win32"


def default_key_file() -> Path:
    return config_dir() / "server_key"


def default_known_servers() -> Path:
    return config_dir() / "known_servers"


def default_client_key_file() -> Path:
    return config_dir() / "client_key"


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, complete or not at all; never overwrite:
    raises ``FileExistsError`` if another start (clients launched together) made it first."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 600
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)  # atomic, and fails if the key exists: a reader never sees half
    finally:
        temporary.unlink()


def load_or_create_server_key(
    path: Path, platform: str = sys.platform
) -> tuple[StaticKey, bool]:
    """The server key in ``path``, made on first use; returns (key, whether it was just
    created).

    Raises :class:`KeyFileError` if the file is not a key, or (where ``platform`` has POSIX
    permissions) is accessible by others.
    """
    return _load_or_create_key(path, "server", platform)


def load_or_create_client_key(
    path: Path, platform: str = sys.platform
) -> tuple[StaticKey, bool]:
    """The client key in ``path``, made on first use, as the server's is; returns (key,
    whether it was just created).

    Raises :class:`KeyFileError` if the file is not a key, or (where ``platform`` has POSIX
    permissions) is accessible by others.
    """
    return _load_or_create_key(path, "client", platform)


def _load_or_create_key(path: Path, kind: str, platform: str) -> tuple[StaticKey, bool]:
    if not path.exists():
        key = StaticKey.generate()
        text = _KEY_HEADER.format(kind=kind) + base64.b64encode(key.private_bytes()).decode()
        text += "\n"
        try:
            _write_private(path, text)
            return key, True
        except FileExistsError:
            pass  # another start made it first: use theirs
    mode = path.stat().st_mode
    if has_posix_permissions(platform) and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by others (mode {stat.filemode(mode)}): "
            f"run `chmod 600 {path}` (and consider the key compromised)"
        )
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    try:
        private = base64.b64decode("".join(lines).strip(), validate=True)
        return StaticKey(private), False
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{path} does not hold a {kind} key") from None


def is_fingerprint(text: str) -> bool:
    """Whether ``text`` is a key fingerprint as servers print it (``SHA256:`` + 43 characters)."""
    return _FINGERPRINT.fullmatch(text) is not None


class KnownServers:
    """``HOST:PORT FINGERPRINT`` lines; ``path`` None keeps the pins in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._pins: dict[str, str] = {}
        if path is not None and path.exists():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                if len(fields) != 2 or not fields[1].startswith("SHA256:"):
                    raise KeyFileError(f"{path}:{number}: expected HOST:PORT SHA256:...")
                self._pins[fields[0]] = fields[1]

    @staticmethod
    def name(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def lookup(self, host: str, port: int) -> str | None:
        return self._pins.get(self.name(host, port))

    def pin(self, host: str, port: int, fingerprint: str) -> None:
        """Remember ``fingerprint`` for the server (replacing an older pin)."""
        name = self.name(host, port)
        self._pins[name] = fingerprint
        if self.path is None:
            return
        text = "".join(f"{server} {pinned}\n" for server, pinned in self._pins.items())
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(text)
        temporary.replace(self.path)
