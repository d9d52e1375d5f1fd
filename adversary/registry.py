"""Attacks by name, across families. It imports no attack: each family's package registers its
attacks when imported (`adversary.attacks` imports the built-in ones)."""

from __future__ import annotations

from typing import Any, TypeVar

from splitleak.errors import SplitleakError

_ATTACKS: dict[str, type[Any]] = {}
T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: make `cls` available as `cls.name`; names are unique across families."""
    name = getattr(cls, "name", "")
    if not name:
        raise TypeError(f"{cls.__qualname__} has no attack name")
    if name in _ATTACKS and _ATTACKS[name] is not cls:
        raise TypeError(f"attack name {name!r} is already taken by {_ATTACKS[name].__qualname__}")
    _ATTACKS[name] = cls
    return cls


def attack_names() -> list[str]:
    """Sorted names of the registered attacks."""
    return sorted(_ATTACKS)


def get_attack(name: str) -> type[Any]:
    """The attack class registered as `name`, or SplitleakError listing the known names."""
    try:
        return _ATTACKS[name]
    except (KeyError, TypeError):
        raise SplitleakError(f"unknown attack {name!r}; choose one of: {', '.join(sorted(_ATTACKS))}") from None
