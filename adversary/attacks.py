"""The built-in attacks: importing this registers both families, then looks attacks up by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import adversary.feature  # noqa: F401  (registers the feature attacks)
import adversary.gradient  # noqa: F401  (registers the gradient attacks)
from adversary.attack import Attack
from adversary.configs import load_file
from adversary.registry import attack_names, get_attack
from splitleak.errors import SplitleakError

__all__ = ["attack_names", "build_attack", "get_attack"]


def build_attack(name: str, *, iterations: int | None = None, options: Mapping[str, Any] | None = None,
                 preset: str | None = None, config_file: str | None = None) -> Attack:
    """The attack `name` configured as asked: the preset (from `preset`, else the file's, else `best`),
    then the config file's options, then `options`, then `iterations`; every key and value checked."""
    cls = get_attack(name)
    file_preset, merged = load_file(config_file) if config_file else (None, {})
    merged = {**merged, **(options or {})}
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise SplitleakError(f"iterations must be a positive integer, got {iterations!r}")
        merged["iterations"] = iterations
    return cls.from_options(preset or file_preset, merged)
