"""The suite checks the build it was asked to check: the pure-Python reference by default, the
compiled core when ``RUDP_CHAT_EXPECT_COMPILED=1`` (CI's second run), never a silent mix."""

from __future__ import annotations

import os

from rudp_chat.build import EXPECT_COMPILED_VARIABLE, compiled_modules


def test_the_core_is_the_build_this_run_expects() -> None:
    expected = os.environ.get(EXPECT_COMPILED_VARIABLE, "0") == "1"
    loaded = compiled_modules()
    assert loaded == dict.fromkeys(loaded, expected), (
        f"{EXPECT_COMPILED_VARIABLE}={int(expected)}, but these modules are compiled: {loaded}"
    )
