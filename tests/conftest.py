"""Hypothesis profiles for the whole suite.

* ``ci`` (the default): derandomized, so every run tries the same examples and a red build
  is never a coin toss; no example database, so a developer's local failures do not leak in;
  few enough examples that the suite stays fast on two cores.
* ``thorough``: ``HYPOTHESIS_PROFILE=thorough pytest``. Random exploration, ten times the
  examples, the database on: the nightly or pre-release run.

Both print the ``@reproduce_failure`` blob of a falsifying example. Simulator properties
add ``deadline=None`` themselves (see ``simharness.sim_settings``): their run time depends
on the generated volume, not on a regression.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from redisserver import RedisServer, require_redis

from rudp_chat.aio.batching import BATCHED_IO_VARIABLE
from rudp_chat.aio.socketpath import SOCKET_PATH_VARIABLE, SocketPath

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=2000,  # ms; generous, a pure function taking this long is a bug
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=600,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def private_config_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server keys and known servers go to a fresh directory per test, never the user's
    ``~/.config`` (subprocesses inherit the variable)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


def _force_socket_io(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SocketPath:
    """Every socket the test opens, in this process or a subprocess, takes the parameter's
    path, with batched I/O (GSO/GRO, where the kernel has it) on or off."""
    path: SocketPath
    batched: str
    path, batched = request.param
    monkeypatch.setenv(SOCKET_PATH_VARIABLE, path.value)
    monkeypatch.setenv(BATCHED_IO_VARIABLE, batched)
    return path


@pytest.fixture(
    params=[(SocketPath.READER, "on"), (SocketPath.DATAGRAM_ENDPOINT, "off")],
    ids=["add_reader", "datagram_endpoint"],
)
def socket_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SocketPath:
    """Both socket paths, as deployed (``add_reader`` batches where the kernel can; the datagram
    path never does): the real-socket modules use it (``pytestmark``) to run whole under each."""
    return _force_socket_io(request, monkeypatch)


@pytest.fixture(
    params=[
        (SocketPath.READER, "on"),
        (SocketPath.READER, "off"),
        (SocketPath.DATAGRAM_ENDPOINT, "off"),
    ],
    ids=["add_reader-batched", "add_reader", "datagram_endpoint"],
)
def socket_io(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SocketPath:
    """:func:`socket_path`, and ``add_reader`` with batched I/O off too: the transport's own
    tests run under all three."""
    return _force_socket_io(request, monkeypatch)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` of its own for the test (see :mod:`redisserver`), stopped after."""
    server = RedisServer(require_redis(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
