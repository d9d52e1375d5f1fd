"""Attacks by name: one registry shared by every family (feature inversion, gradient inversion)."""

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


def _load_builtin() -> None:
    """Import the attack packages so their modules register (lazy, to avoid import cycles)."""
    import adversary.feature  # noqa: F401
    import adversary.gradient  # noqa: F401


def attack_names() -> list[str]:
    """Sorted names of all registered attacks."""
    _load_builtin()
    return sorted(_ATTACKS)


def get_attack(name: str) -> type[Any]:
    """The attack class registered as `name`, or SplitleakError listing the known names."""
    _load_builtin()
    try:
        return _ATTACKS[name]
    except (KeyError, TypeError):
        raise SplitleakError(f"unknown attack {name!r}; choose one of: {', '.join(sorted(_ATTACKS))}") from None
