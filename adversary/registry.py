"""Attacks by name, across families. It imports no attack: each family's package registers its
attacks when imported (`adversary.attacks` imports the built-in ones)."""

from __future__ import annotations

from typing import Any, TypeVar

from adversary.names import Registry

_ATTACKS: Registry[type[Any]] = Registry("attack", "unknown attack {name}; choose one of: {names}")
T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: make `cls` available as `cls.name`; names are unique across families."""
    return _ATTACKS.add(getattr(cls, "name", ""), cls)


def attack_names() -> list[str]:
    """Sorted names of the registered attacks."""
    return _ATTACKS.names()


def get_attack(name: str) -> type[Any]:
    """The attack class registered as `name`, or SplitleakError listing the known names."""
    return _ATTACKS.get(name)
