"""Typed attack configs: frozen dataclasses, checked field by field, with named presets.

An attack's `Config` is a (possibly nested) dataclass. Options arrive as KEY=VALUE text from the
command line, as typed values from a YAML file or as keyword arguments; each key names a field by
its dotted path (`pixel.steps`), by the path joined with underscores (`pixel_steps`), or by its
own name where that is unique in the config (`restarts`). Values are parsed and checked against
the field's type; ranges are checked by each dataclass's `check()`. A config class may declare
`PRESETS`: name -> options; `best` (the measured defaults) always exists.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from splitleak.errors import SplitleakError
from splitleak.yamlfile import read_yaml

C = TypeVar("C")
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One settable field: its dotted path, its type, and the dataclass that holds it."""

    path: str
    type: Any


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def leaves(cls: type, prefix: str = "") -> list[Leaf]:
    """Every settable field of config class `cls`, nested configs expanded."""
    hints, out = _hints(cls), []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if _is_config(tp):
            out.extend(leaves(tp, f"{prefix}{f.name}."))
        else:
            out.append(Leaf(f"{prefix}{f.name}", tp))
    return out


def resolve(cls: type, key: str) -> Leaf:
    """The field `key` names: its dotted path, or the path's last parts joined by '.' or '_'
    (`pixel.steps`, `pixel_steps`, `restarts`) where that names one field only."""
    fields = leaves(cls)
    for leaf in fields:
        if key in (leaf.path, leaf.path.replace(".", "_")):
            return leaf
    named = [leaf for leaf in fields if key in _tails(leaf.path)]
    if len(named) == 1:
        return named[0]
    if named:
        raise SplitleakError(f"option {key!r} is ambiguous; say {' or '.join(leaf.path for leaf in named)}")
    raise SplitleakError(f"unknown option {key!r}; options: {', '.join(leaf.path for leaf in fields)}")


def _tails(path: str) -> set[str]:
    parts = path.split(".")
    return {sep.join(parts[i:]) for i in range(len(parts)) for sep in (".", "_")}


def describe_type(tp: Any) -> str:
    """A field's accepted values, for error messages."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return " | ".join(str(a) for a in args)
    if _optional(tp):
        inner = next(a for a in args if a is not type(None))
        return f"{describe_type(inner)} or none"
    return {bool: "true | false", int: "an integer", float: "a number", str: "text"}.get(tp, str(tp))


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def parse_value(leaf: Leaf, value: Any) -> Any:
    """`value` (text from the command line, or a YAML value) as the field's type; SplitleakError naming
    the key and what it accepts otherwise."""
    try:
        return _convert(leaf.type, value)
    except (TypeError, ValueError):
        raise SplitleakError(f"option {leaf.path}={value!r}: expected {describe_type(leaf.type)}") from None


def _convert(tp: Any, value: Any) -> Any:
    if _optional(tp):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _convert(next(a for a in typing.get_args(tp) if a is not type(None)), value)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and value == str(choice)):
                return choice
        raise ValueError(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in TRUE | FALSE:
            return value.lower() in TRUE
        raise ValueError(value)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ValueError(value)
        return value
    raise TypeError(tp)


def with_options(config: C, options: Mapping[str, Any]) -> C:
    """A copy of `config` with `options` (key -> text or typed value) applied and checked."""
    cls = type(config)
    for key, value in options.items():
        leaf = resolve(cls, key)
        config = _replace_path(config, leaf.path.split("."), parse_value(leaf, value))
    check(config)
    return config


def value_of(config: Any, key: str) -> Any:
    """The value of the field `key` names (as `resolve` reads keys); SplitleakError if it names none."""
    for part in resolve(type(config), key).path.split("."):
        config = getattr(config, part)
    return config


def _replace_path(config: Any, path: list[str], value: Any) -> Any:
    head, *rest = path
    if rest:
        value = _replace_path(getattr(config, head), rest, value)
    return dataclasses.replace(config, **{head: value})


def check(config: Any) -> None:
    """Run every nested config's `check()` (range checks raise SplitleakError)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check(value)
    if hasattr(config, "check"):
        config.check()


def presets(cls: type) -> dict[str, Mapping[str, Any]]:
    """The config class's named presets; `best` is the defaults."""
    return {"best": {}, **getattr(cls, "PRESETS", {})}


def build(cls: type[C], preset: str | None = None, options: Mapping[str, Any] | None = None) -> C:
    """cls() with the preset's options, then `options`, applied and checked."""
    named = presets(cls)
    if preset is not None and preset not in named:
        raise SplitleakError(f"unknown preset {preset!r}; this attack has: {', '.join(named)}")
    return with_options(with_options(cls(), named[preset or "best"]), options or {})


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"pixel": {"steps": 0}} -> {"pixel.steps": 0}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_file(path: str) -> tuple[str | None, dict[str, Any]]:
    """A YAML config file: a mapping of config fields (nested as in config.json), and optionally
    `preset: NAME`. Returns (preset, flat options)."""
    tree = read_yaml(path, "config file")
    if tree is None:
        tree = {}
    if not isinstance(tree, Mapping):
        raise SplitleakError(f"config file {path} must hold a mapping of option names to values")
    tree = dict(tree)
    preset = tree.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise SplitleakError(f"config file {path}: preset must be a name")
    return preset, flatten(tree)


def as_dict(config: Any) -> dict[str, Any]:
    """The config as plain data, for config.json."""
    return dataclasses.asdict(config)


def require(ok: bool, message: str) -> None:
    """SplitleakError(message) unless ok: the one-line range checks of `check()`."""
    if not ok:
        raise SplitleakError(message)
