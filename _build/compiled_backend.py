"""The build backend: setuptools' own, plus mypy (whose mypyc compiles) and the package's
dependencies as build requirements when ``RUDP_CHAT_COMPILE=1`` asks for the compiled core;
``setup.py`` does the compiling.

Without the variable nothing changes: a pure-Python wheel, no compiler and no mypy needed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager

from setuptools import build_meta
from setuptools.build_meta import (
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

COMPILE_VARIABLE = "RUDP_CHAT_COMPILE"
COMPILER = "mypy>=1.10"  # mypyc ships with mypy; the same floor as the test extra's


def _compiler() -> list[str]:
    """mypy, and the package's own dependencies: mypyc type-checks the core (strict, as
    pyproject.toml says) against their real types, which a bare build environment lacks."""
    if os.environ.get(COMPILE_VARIABLE) != "1":
        return []
    with open("pyproject.toml", "rb") as handle:
        dependencies: list[str] = tomllib.load(handle)["project"]["dependencies"]
    return [COMPILER, *dependencies]


@contextmanager
def _as_pure() -> Iterator[None]:
    """setuptools runs setup.py to learn its requirements, before mypy is installed: as the
    pure build then, which needs nothing more."""
    asked = os.environ.pop(COMPILE_VARIABLE, None)
    try:
        yield
    finally:
        if asked is not None:
            os.environ[COMPILE_VARIABLE] = asked


def get_requires_for_build_wheel(config_settings: dict[str, str] | None = None) -> list[str]:
    """setuptools' requirements, and mypy when the compiled build is asked for."""
    compiler = _compiler()
    with _as_pure():
        return [*build_meta.get_requires_for_build_wheel(config_settings), *compiler]


def get_requires_for_build_editable(config_settings: dict[str, str] | None = None) -> list[str]:
    """As for a wheel (an editable compiled install is the compiled modules in place)."""
    compiler = _compiler()
    with _as_pure():
        return [*build_meta.get_requires_for_build_editable(config_settings), *compiler]
