"""Super-resolution methods and their trainers by name; it imports no method (see `adversary.enhance.methods`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from adversary.enhance.base import Enhancer
from adversary.names import Registry

_METHODS: Registry[type[Enhancer]] = Registry("enhancement method",
                                              "unknown enhancement method {name}; choose one of: {names}")
T = TypeVar("T", bound=type[Enhancer])
F = TypeVar("F", bound=Callable[..., Any])


def register(cls: T) -> T:
    """Class decorator: make `cls` available as `cls.name`."""
    return _METHODS.add(cls.name, cls)


def method_names() -> list[str]:
    """Sorted names of the registered methods."""
    return _METHODS.names()


def get_method(name: str) -> type[Enhancer]:
    """The method registered as `name`, or SplitleakError listing the known ones."""
    return _METHODS.get(name)


# --- trainers: `splitleak train-sr --method NAME` calls the trainer registered under NAME ---

_TRAINERS: Registry[Callable[[Any], dict[str, Any]]] = Registry(
    "trainer", "no trainer for method {name}; train-sr trains: {names}")


def register_trainer(name: str) -> Callable[[F], F]:
    """Decorator: `fn(spec: adversary.enhance.training.TrainSpec) -> config dict` trains method `name`."""
    def wrap(fn: F) -> F:
        return _TRAINERS.add(name, fn)
    return wrap


def trainer_names() -> list[str]:
    """Sorted names of the methods `train-sr` can train."""
    return _TRAINERS.names()


def get_trainer(name: str) -> Callable[[Any], dict[str, Any]]:
    """The trainer registered as `name`, or SplitleakError listing the known ones."""
    return _TRAINERS.get(name)
