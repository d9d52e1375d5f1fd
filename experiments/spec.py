"""An experiment file, read and checked whole before anything runs; its cells are the axes' product.

```yaml
name: network
device: cpu                      # cpu | cuda | auto
size: 64                         # input size (px)
frames: 16                       # frames each edge captures
threshold: 20                    # PSNR (dB) a recovered frame must reach
prior: {source: sample:bikes, steps: 300}   # or a path; trained once per results folder where asked for
quick: {frames: 4, iterations: 20, prior_steps: 20, codecs: [fp32, int8]}   # what --quick shrinks to
                                 # (an axis given here replaces the file's under --quick)
# axes: a scalar or a list each
sources: sample:bikes
models: resnet18
splits: layer1
modes: infer
links: ["none", "rate=2mbit", "rate=500kbit"]
codecs: [fp32, fp16, int8]
defences: [none, "noise:sigma=0.5"]
congestion: block
attacks: [{name: do, iterations: 300, options: {lambda_tv: 0.3}}, {name: dmb, iterations: 60}]
seeds: 0
```
Every error names its key, as one line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitleak.errors import SplitleakError
from splitleak.yamlfile import read_yaml

AXES = ("sources", "models", "splits", "modes", "links", "codecs", "defences", "congestion", "attacks", "seeds")
SCALARS = {"name": str, "device": str, "size": int, "frames": int, "threshold": float, "batch": int,
           "max_pending": int, "timeout": float, "link_backend": str}
KEYS = ("name", "device", "size", "frames", "threshold", "batch", "max_pending", "timeout", "link_backend",
        "realtime", "prior", "quick") + AXES
LINK_BACKENDS = ("emulator", "tc")  # the edge's application-level emulator, or the kernel's tc between namespaces
ATTACK_KEYS = ("name", "iterations", "max_frames", "preset", "options")
PRIOR_KEYS = ("source", "steps", "size", "latent", "vae_steps")
QUICK_KEYS = ("frames", "iterations", "max_frames", "prior_steps") + AXES  # an axis there replaces the file's
MODES = ("infer", "fedsgd", "fedavg", "split")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    iterations: int | None = None
    max_frames: int | None = None
    preset: str | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class PriorSpec:
    """A prior to train once (`splitleak train-prior`), or `path` to an existing one."""

    path: str | None = None
    source: str = "sample:bikes"
    steps: int = 300
    size: int = 64
    latent: bool = False
    vae_steps: int | None = None

    @property
    def key(self) -> str:
        """What identifies the prior in a cell's hash: its path, or its training settings."""
        return self.path or "train:" + digest(dataclasses.asdict(self))


@dataclass(frozen=True)
class Cell:
    """One run: everything its result depends on (the hash input)."""

    experiment: str
    source: str
    model: str
    split: str
    mode: str
    size: int
    frames: int
    link: str
    codec: str
    defence: str
    congestion: str
    attack: AttackSpec
    seed: int
    device: str
    threshold: float
    batch: int
    max_pending: int
    prior: str | None  # PriorSpec.key when the attack takes a prior
    link_backend: str = "emulator"
    realtime: bool = True  # the edge paces frames as a live camera (edge --realtime)

    def hashed(self) -> dict[str, Any]:
        """What identifies the cell (and, less its attack, its stream): its fields, less an emulator backend,
        so cells from before there was a choice keep their hash."""
        config = dataclasses.asdict(self)
        if self.link_backend == "emulator":
            del config["link_backend"]
        return config

    @property
    def id(self) -> str:
        return digest(self.hashed())


@dataclass(frozen=True)
class Experiment:
    name: str
    cells: tuple[Cell, ...]
    prior: PriorSpec | None
    timeout: float
    quick: bool


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_experiment(path: str, *, quick: bool = False, link_backend: str | None = None) -> Experiment:
    """Read, check and expand `path` (`link_backend`, when given, replaces the file's); SplitleakError
    (one line, naming the key) on any problem."""
    tree = read_yaml(path, "experiment file")
    if not isinstance(tree, Mapping):
        raise SplitleakError(f"experiment file {path} must hold a mapping of keys (known: {', '.join(KEYS)})")
    tree = dict(tree)
    if link_backend is not None:
        tree["link_backend"] = link_backend
    return expand(tree, default_name=Path(path).stem, quick=quick)


def expand(tree: dict[str, Any], *, default_name: str = "experiment", quick: bool = False) -> Experiment:
    unknown = [k for k in tree if k not in KEYS]
    if unknown:
        raise SplitleakError(f"unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    s = {k: scalar(tree, k, t) for k, t in SCALARS.items() if k in tree}
    name, device = s.get("name", default_name), s.get("device", "cpu")
    if device not in ("cpu", "cuda", "auto"):
        raise SplitleakError(f"device: expected cpu, cuda or auto, got {device!r}")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    shrink = quick_settings(tree.get("quick")) if quick else {}
    tree = {**tree, **{axis: shrink.pop(axis) for axis in AXES if axis in shrink}}
    frames = shrink.get("frames", s.get("frames", 16))
    for key, value in (("size", s.get("size", 64)), ("frames", frames), ("batch", s.get("batch", 1)),
                       ("max_pending", s.get("max_pending", 4))):
        if value < 1:
            raise SplitleakError(f"{key}: must be >= 1, got {value}")
    prior = prior_spec(tree.get("prior"), shrink.get("prior_steps"))
    axes = {axis: as_list(tree, axis) for axis in AXES}
    checks(axes)
    backend = s.get("link_backend", "emulator")
    check_link_backend(backend, axes["links"])
    realtime = tree.get("realtime", True)
    if not isinstance(realtime, bool):
        raise SplitleakError(f"realtime: expected true or false, got {realtime!r}")
    attacks = [attack_spec(a, i, shrink, prior) for i, a in enumerate(axes.pop("attacks"))]
    cells = []
    for source, model, split, mode, link, codec, defence, congestion, seed, attack in itertools.product(
            *(axes[a] for a in AXES if a != "attacks"), attacks):
        check_combination(model, split, mode, defence, congestion, s.get("size", 64))
        cells.append(Cell(name, source, model, split, mode, s.get("size", 64), frames, canonical_link(link),
                          codec, defence, congestion, attack, seed, device, s.get("threshold", 20.0),
                          s.get("batch", 1), s.get("max_pending", 4),
                          prior.key if prior and needs_prior(attack.name) else None, backend, realtime))
    unique = tuple(dict.fromkeys(cells))
    if any(needs_prior(c.attack.name) for c in unique) and prior is None:
        raise SplitleakError("prior: an attack takes a diffusion prior; give `prior: PATH` or `prior: {source: ..., steps: N}`")
    return Experiment(name, unique, prior, s.get("timeout", 900.0), quick)


def check_link_backend(backend: str, links: list[str]) -> None:
    """tc shapes rate, delay, jitter and loss in the kernel; it needs root and iproute2 here, now."""
    from edge.link import LinkSpec
    from splitleak.netns import check_tc_available

    if backend not in LINK_BACKENDS:
        raise SplitleakError(f"link_backend: expected {' or '.join(LINK_BACKENDS)}, got {backend!r}")
    if backend != "tc":
        return
    check_tc_available()
    for link in links:
        spec = LinkSpec.parse(link)
        if spec.drop or spec.rto != LinkSpec.rto or spec.window != LinkSpec.window:
            raise SplitleakError(f"links: {link!r}: drop, rto and window are the emulator's; under link_backend tc "
                                 "the kernel loses packets and TCP retransmits them")


def scalar(tree: Mapping[str, Any], key: str, tp: type) -> Any:
    value = tree[key]
    ok = isinstance(value, tp) and not isinstance(value, bool) or (tp is float and isinstance(value, int)
                                                                      and not isinstance(value, bool))
    if not ok:
        raise SplitleakError(f"{key}: expected {'text' if tp is str else 'a number'}, got {value!r}")
    return tp(value)


def as_list(tree: Mapping[str, Any], axis: str) -> list[Any]:
    defaults = {"sources": "sample:bikes", "models": "resnet18", "splits": "layer1", "modes": "infer",
                "links": "none", "codecs": "fp32", "defences": "none", "congestion": "block", "seeds": 0}
    if axis not in tree and axis not in defaults:
        raise SplitleakError(f"{axis}: required (the attacks to run)")
    value = tree.get(axis, defaults.get(axis))
    values = list(value) if isinstance(value, list) else [value]
    if not values:
        raise SplitleakError(f"{axis}: empty list")
    for v in values:
        if axis == "attacks" and isinstance(v, (str, Mapping)):
            continue
        if axis == "seeds" and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63):
            raise SplitleakError(f"seeds: expected integers 0..2^63-1, got {v!r}")
        if axis != "seeds" and not isinstance(v, str):
            raise SplitleakError(f"{axis}: expected text, got {v!r}")
    return values


def checks(axes: Mapping[str, list[Any]]) -> None:
    """Each axis value on its own: model, codec, link spec, policy, mode, source."""
    from edge.congestion import POLICIES
    from edge.link import LinkSpec
    from splitleak.codecs import check_name
    from splitleak.models.specs import get_spec

    for key, check in (("models", get_spec), ("codecs", check_name), ("links", LinkSpec.parse)):
        for value in axes[key]:
            try:
                check(value)
            except SplitleakError as err:
                raise SplitleakError(f"{key}: {err}") from None
    for key, known in (("congestion", POLICIES), ("modes", MODES)):
        for value in axes[key]:
            if value not in known:
                raise SplitleakError(f"{key}: unknown {value!r} (known: {', '.join(known)})")
    for source in axes["sources"]:
        check_source(source)


def check_source(source: str) -> None:
    from splitleak.video.sources import SAMPLES

    scheme, _, arg = source.partition(":")
    if scheme == "sample" and arg not in SAMPLES:
        raise SplitleakError(f"sources: unknown sample {arg!r} (known: {', '.join(SAMPLES)})")
    if scheme not in ("sample", "synthetic", "camera") and not Path(source).exists():
        raise SplitleakError(f"sources: no such file or folder {source!r} (or sample:NAME, synthetic[:WxH])")


def check_combination(model: str, split: str, mode: str, defence: str, congestion: str, size: int) -> None:
    from edge.defences import parse_defence
    from splitleak.models.specs import get_spec
    from splitleak.models.zoo import split_points

    if split not in split_points(model):
        raise SplitleakError(f"splits: {model} has no split point {split!r} (known: {', '.join(split_points(model))})")
    try:
        get_spec(model).check_size(size)
        parse_defence(defence, mode=mode)
    except SplitleakError as err:
        raise SplitleakError(f"{'defences' if 'defence' in str(err) else 'size'}: {err}") from None
    if congestion != "block" and mode != "infer":
        raise SplitleakError(f"congestion: {congestion} applies to mode infer, not {mode}")


def attack_spec(entry: Any, index: int, shrink: Mapping[str, int], prior: PriorSpec | None) -> AttackSpec:
    from adversary.attacks import build_attack

    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    where = f"attacks[{index}]"
    unknown = [k for k in entry if k not in ATTACK_KEYS]
    if unknown:
        raise SplitleakError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ATTACK_KEYS)})")
    options = entry.get("options") or {}
    if not isinstance(options, Mapping):
        raise SplitleakError(f"{where}.options: expected a mapping of option names to values")
    for key in ("iterations", "max_frames"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SplitleakError(f"{where}.{key}: expected a positive integer, got {value!r}")
    iterations = entry.get("iterations")
    if "iterations" in shrink:
        iterations = min(iterations or shrink["iterations"], shrink["iterations"])
    max_frames = entry.get("max_frames")
    if "max_frames" in shrink:
        max_frames = min(max_frames or shrink["max_frames"], shrink["max_frames"])
    try:
        build_attack(str(entry.get("name")), iterations=iterations, options=options, preset=entry.get("preset"))
    except SplitleakError as err:
        raise SplitleakError(f"{where}: {err}") from None
    return AttackSpec(entry["name"], iterations, max_frames, entry.get("preset"),
                      tuple(sorted((str(k), v) for k, v in options.items())))


def needs_prior(attack: str) -> bool:
    from adversary.registry import get_attack

    return "prior" in getattr(get_attack(attack), "access", ())


def prior_spec(value: Any, quick_steps: int | None) -> PriorSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not Path(value).is_dir():
            raise SplitleakError(f"prior: no such folder {value!r}")
        return PriorSpec(path=str(Path(value).resolve()))
    if not isinstance(value, Mapping):
        raise SplitleakError("prior: expected a folder or a mapping of train-prior settings")
    unknown = [k for k in value if k not in PRIOR_KEYS]
    if unknown:
        raise SplitleakError(f"prior: unknown key {unknown[0]!r} (known: {', '.join(PRIOR_KEYS)})")
    spec = PriorSpec(**value)
    for key in ("steps", "size", "vae_steps"):
        v = getattr(spec, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SplitleakError(f"prior.{key}: expected a positive integer, got {v!r}")
    check_source(spec.source)
    return dataclasses.replace(spec, steps=min(spec.steps, quick_steps)) if quick_steps else spec


def quick_settings(value: Any) -> dict[str, Any]:
    settings = {"frames": 4, "iterations": 20, "max_frames": 4, "prior_steps": 20}
    if value is None:
        return settings
    if not isinstance(value, Mapping):
        raise SplitleakError(f"quick: expected a mapping of {', '.join(QUICK_KEYS)}")
    for key, v in value.items():
        if key not in QUICK_KEYS:
            raise SplitleakError(f"quick: unknown key {key!r} (known: {', '.join(QUICK_KEYS)})")
        if key not in AXES and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SplitleakError(f"quick.{key}: expected a positive integer, got {v!r}")
        settings[key] = v
    return settings


def canonical_link(text: str) -> str:
    """The link as the edge prints it, so `rate=1000kbit` and `rate=1mbit` are one cell."""
    from edge.link import LinkSpec

    return str(LinkSpec.parse(text))
