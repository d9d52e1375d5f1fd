"""Super-resolution methods by name; it imports no method (see `adversary.enhance.methods`)."""

from __future__ import annotations

from typing import TypeVar

from adversary.enhance.base import Enhancer
from splitleak.errors import SplitleakError

_METHODS: dict[str, type[Enhancer]] = {}
T = TypeVar("T", bound=type[Enhancer])


def register(cls: T) -> T:
    """Class decorator: make `cls` available as `cls.name`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no method name")
    if _METHODS.get(cls.name, cls) is not cls:
        raise TypeError(f"enhancement method {cls.name!r} is already taken")
    _METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    """Sorted names of the registered methods."""
    return sorted(_METHODS)


def get_method(name: str) -> type[Enhancer]:
    """The method registered as `name`, or SplitleakError listing the known ones."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise SplitleakError(f"unknown enhancement method {name!r}; choose one of: "
                             f"{', '.join(sorted(_METHODS))}") from None
