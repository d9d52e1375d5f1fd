"""A name -> value table for plug-ins (attacks, enhancement methods, their trainers): a clash is a
programming error (TypeError at import), an unknown name is the user's (one-line SplitleakError)."""

from __future__ import annotations

from typing import Generic, TypeVar

from splitleak.errors import SplitleakError

V = TypeVar("V")


class Registry(Generic[V]):
    """`what` names an entry in errors ("attack"); `unknown` is the one-line error for a name not
    registered, formatted with `name` (its repr) and `names` (the known ones, comma-separated)."""

    def __init__(self, what: str, unknown: str) -> None:
        self.what, self.unknown = what, unknown
        self._entries: dict[str, V] = {}

    def add(self, name: str, value: V) -> V:
        if not name:
            raise TypeError(f"{getattr(value, '__qualname__', value)!r} has no {self.what} name")
        if self._entries.get(name, value) is not value:
            raise TypeError(f"{self.what} {name!r} is already taken by {self._entries[name]!r}")
        self._entries[name] = value
        return value

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> V:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise SplitleakError(self.unknown.format(name=repr(name), names=", ".join(self.names()))) from None
