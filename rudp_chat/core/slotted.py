"""The base of the core's small value classes (frames, packets, events): slotted classes with
their own ``__init__``, where frozen dataclasses were.

A dataclass's generated ``__init__`` stays interpreted Python even in the compiled build (and
a frozen one assigns through ``object.__setattr__``); a plain class with ``__slots__`` and its
own ``__init__`` is a native constructor there and a cheaper one in pure Python, and several
of these are made per message. What the dataclasses gave, this base gives once for all of
them, from the one tuple each class declares, ``__match_args__`` (its fields in constructor
order, so class patterns match as before): a ``repr`` that is valid Python (a failing property
test prints a reproducer), equality and hashing by fields. A subclass writes
``__match_args__ = (...)`` and then ``__slots__ = __match_args__`` (mypyc takes no chained
assignment in a class body).

Immutability: each field is declared ``Final`` in ``__init__``, so ``mypy --strict`` rejects
any assignment after construction, and the compiled build makes the attributes read-only;
pure Python enforces it by that convention only (a read-only property per field would make
every field read a function call on the hot path).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["Slotted"]


class Slotted:
    """Equality, hash and ``repr`` by the fields ``__match_args__`` names."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __repr__(self) -> str:
        fields = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__match_args__])
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or not isinstance(other, Slotted):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))
