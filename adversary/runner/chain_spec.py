"""What an attack chain is: its stages, what each takes and gives, and each stage's options.

A chain is written `fvi,dmb,enhance:refs`: registered attacks (either family) and `enhance:METHOD`.
Every stage takes what the stage before gave; the recording gives the first stage its input:
gradient updates ("gradients") or tapped feature frames ("features").

  gradient attack   gradients -> features (a split point: the tail's input) or frames (split none)
  feature attack    features  -> frames
  enhance:METHOD    frames    -> enhanced frames

The whole chain is checked (names, order, options, prior) before any stage runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from splitleak.errors import SplitleakError

GRADIENTS, FEATURES, FRAMES, ENHANCED = "gradients", "features", "frames", "enhanced frames"
ENHANCE = "enhance"
PRESET = "preset"  # an option key naming the stage's preset (STAGE.preset=paper)


@dataclass
class Stage:
    """One stage: `name` as written (fvi, enhance:refs), its family, and its own options."""

    name: str
    family: str  # "gradient" | "feature" | "enhance"
    method: str | None = None  # enhance:METHOD's method
    options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None

    @property
    def key(self) -> str:
        """The prefix of its options (--option fvi.iterations=...): the attack's name, or `enhance`."""
        return ENHANCE if self.family == ENHANCE else self.name

    @property
    def folder_name(self) -> str:
        return self.name.replace(":", "-")

    @property
    def takes(self) -> str:
        return {"gradient": GRADIENTS, "feature": FEATURES, ENHANCE: FRAMES}[self.family]

    def gives(self, image_updates: bool) -> str:
        """What it hands on; a gradient attack on raw-frame (split none) updates recovers frames."""
        if self.family == "gradient":
            return FRAMES if image_updates else FEATURES
        return FRAMES if self.family == "feature" else ENHANCED


def parse_chain(text: str) -> list[Stage]:
    """The stages of `text` (comma-separated); SplitleakError naming the first bad stage."""
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise SplitleakError(f"bad chain {text!r}: expected stage names separated by commas, e.g. fvi,dmb")
    stages = [_stage(i, name) for i, name in enumerate(names, 1)]
    keys = [s.key for s in stages]
    for key in keys:
        if keys.count(key) > 1:
            raise SplitleakError(f"chain {text!r} runs {key!r} twice; a stage may appear once")
    return stages


def _stage(index: int, name: str) -> Stage:
    if name == ENHANCE or name.startswith(ENHANCE + ":"):
        method = name[len(ENHANCE) + 1:]
        if not method:
            raise SplitleakError(f"chain stage {index} {name!r}: name the method, e.g. enhance:noref")
        from adversary.enhance.methods import get_method

        try:
            get_method(method)
        except SplitleakError as err:
            raise SplitleakError(f"chain stage {index} {name!r}: {err}") from None
        return Stage(name, ENHANCE, method=method)
    from adversary.attacks import get_attack

    try:
        cls = get_attack(name)
    except SplitleakError as err:
        raise SplitleakError(f"chain stage {index} {name!r}: {err}") from None
    return Stage(name, cls.family)


def check_order(stages: list[Stage], first: str, image_updates: bool) -> None:
    """SplitleakError naming the first stage that cannot take what it is given (`first`: the recording's)."""
    given, source = first, f"the recording (it holds {first})"
    for i, stage in enumerate(stages, 1):
        if stage.takes != given:
            raise SplitleakError(f"chain stage {i} {stage.name!r} takes {stage.takes}, but {source} gives {given}")
        given, source = stage.gives(image_updates), f"stage {i} {stage.name!r}"


def assign_options(stages: list[Stage], options: list[tuple[str, str]], tree: Mapping[str, Any] | None) -> None:
    """Hand each stage its options: `tree` (a chain config: stage -> its config mapping, with `preset`),
    then `options` (STAGE.KEY=VALUE, later ones win). Unknown stages and enhance options are refused."""
    from adversary.configs import flatten

    by_key = {s.key: s for s in stages}
    for name, config in (tree or {}).items():
        stage = _find(by_key, str(name), "chain config")
        if config is None:
            continue
        if not isinstance(config, Mapping):
            raise SplitleakError(f"chain config: stage {name!r} must map option names to values")
        for key, value in flatten(config).items():
            _set(stage, key, value)
    for text, value in options:
        prefix, dot, key = text.partition(".")
        if not dot or not key:
            raise SplitleakError(f"--option {text}={value}: in a chain, prefix the option with its stage "
                                 f"({', '.join(by_key)}), e.g. {stages[0].key}.iterations=100")
        _set(_find(by_key, prefix, f"--option {text}"), key, value)


def _find(by_key: dict[str, Stage], name: str, where: str) -> Stage:
    if name not in by_key:
        raise SplitleakError(f"{where}: no stage {name!r} in the chain (stages: {', '.join(by_key)})")
    return by_key[name]


def _set(stage: Stage, key: str, value: Any) -> None:
    if stage.family == ENHANCE:
        raise SplitleakError(f"stage {stage.name!r} takes no options; use --refs, --enhance-weights, --scale")
    if key == PRESET:
        stage.preset = str(value)
    else:
        stage.options[key] = value


def read_chain_config(path: str) -> Mapping[str, Any]:
    """A chain config YAML: a mapping of stage name -> that stage's config (as --config takes it)."""
    from splitleak.yamlfile import read_yaml

    tree = read_yaml(path, "chain config")
    if tree is None:
        return {}
    if not isinstance(tree, Mapping):
        raise SplitleakError(f"chain config {path} must map stage names to their options")
    return tree
