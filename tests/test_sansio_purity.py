"""The core is sans-IO: no event loop, socket, clock, global randomness or threads of its own
(STYLE.md principle 1), and one module speaks msgpack (principle 7). Checked on the source
with ``ast``, so an import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rudp_chat.core

CORE = Path(rudp_chat.core.__file__).parent
CORE_FILES = sorted(CORE.glob("*.py"))
FORBIDDEN = frozenset({"asyncio", "socket", "time", "random", "threading", "selectors"})
DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports, anywhere in the file.

    Relative imports (``from . import x``) stay inside the package and are not reported.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def dynamic_imports(source: str) -> list[str]:
    """Calls that could import a module by name at run time (``__import__``, ``import_module``)."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in DYNAMIC_IMPORTERS:
                calls.append(name)
    return calls


def test_the_core_has_modules_to_check() -> None:
    names = {path.name for path in CORE_FILES}
    assert {"codec.py", "connection.py", "listener.py", "recovery.py", "state.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_imports_no_io_clock_or_chance(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert imported_modules(source) & FORBIDDEN == set()
    assert dynamic_imports(source) == []


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_only_the_codec_speaks_msgpack(path: Path) -> None:
    uses_msgpack = "msgpack" in imported_modules(path.read_text(encoding="utf-8"))
    assert uses_msgpack == (path.name == "codec.py")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time", {"time"}),
        ("import os.path, asyncio.events", {"os", "asyncio"}),
        ("from socket import socket", {"socket"}),
        ("def f():\n    import random\n    return random.random()", {"random"}),
        ("class C:\n    def m(self):\n        from threading import Lock", {"threading"}),
        ("if TYPE_CHECKING:\n    import asyncio", {"asyncio"}),
        ("from . import codec\nfrom .frames import PingFrame", set()),
        ("x = 'import time'  # a string is not an import", set()),
    ],
)
def test_the_checker_finds_imports_wherever_they_hide(source: str, expected: set[str]) -> None:
    """The check itself can fail: it sees nested, aliased and conditional imports."""
    assert imported_modules(source) == expected


def test_the_checker_finds_dynamic_imports() -> None:
    assert dynamic_imports("m = __import__('time')") == ["__import__"]
    assert dynamic_imports("import importlib\nm = importlib.import_module('time')") == [
        "import_module"
    ]
    assert dynamic_imports("print('__import__')") == []
