"""Super-resolution methods and their trainers by name; it imports no method (see `adversary.enhance.methods`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from adversary.enhance.base import Enhancer
from splitleak.errors import SplitleakError

_METHODS: dict[str, type[Enhancer]] = {}
T = TypeVar("T", bound=type[Enhancer])
F = TypeVar("F", bound=Callable[..., Any])


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


# --- trainers: `splitleak train-sr --method NAME` calls the trainer registered under NAME ---

_TRAINERS: dict[str, Callable[[Any], dict[str, Any]]] = {}


def register_trainer(name: str) -> Callable[[F], F]:
    """Decorator: `fn(spec: adversary.enhance.training.TrainSpec) -> config dict` trains method `name`."""
    def wrap(fn: F) -> F:
        if _TRAINERS.get(name, fn) is not fn:
            raise TypeError(f"a trainer for {name!r} is already registered")
        _TRAINERS[name] = fn
        return fn
    return wrap


def trainer_names() -> list[str]:
    """Sorted names of the methods `train-sr` can train."""
    return sorted(_TRAINERS)


def get_trainer(name: str) -> Callable[[Any], dict[str, Any]]:
    """The trainer registered as `name`, or SplitleakError listing the known ones."""
    try:
        return _TRAINERS[name]
    except (KeyError, TypeError):
        raise SplitleakError(f"no trainer for method {name!r}; train-sr trains: {', '.join(sorted(_TRAINERS))}") from None
