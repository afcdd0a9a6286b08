"""Real servers the tests run (redis-server, InspIRCd), never mocks. Where one is missing its
tests skip on a developer's machine, and fail when ``RUDP_CHAT_REQUIRE_SERVICES=1``: `.ci/run`
installs them and sets it, so CI cannot pass without running those tests."""

from __future__ import annotations

import os
import shutil
from typing import Final, NoReturn

import pytest

__all__ = ["REQUIRE_VARIABLE", "find_executable", "missing"]

REQUIRE_VARIABLE: Final = "RUDP_CHAT_REQUIRE_SERVICES"


def missing(reason: str) -> NoReturn:
    """Skip the test for want of ``reason`` (fail it if ``RUDP_CHAT_REQUIRE_SERVICES=1``)."""
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_VARIABLE}=1")
    pytest.skip(reason)


def find_executable(path: str, package: str) -> str:
    """``path`` (or the program of its name on ``PATH``) if installed, else :func:`missing`."""
    found = shutil.which(os.path.basename(path)) or (path if os.access(path, os.X_OK) else None)
    if found is None:
        missing(f"{path} is not installed (apt-get install {package})")
    return found
