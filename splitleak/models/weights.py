"""Give a network its weights: `seed:N`, a state-dict file, or a torchvision weight name."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from splitleak.errors import SplitleakError
from splitleak.models.specs import ModelSpec

_TV_NAME = re.compile(r"([A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the CPU generator for the block only; the global RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def build_network(spec: ModelSpec, size: int, num_classes: int, weights: str) -> tuple[nn.Module, str]:
    """Build `spec`'s bare network on CPU with `weights` applied; return it and the weights tag."""
    if not isinstance(weights, str) or not weights:
        raise SplitleakError(f"weights must be 'seed:N', a file path or a torchvision weight name, got {weights!r}")
    seed, state, tag = 0, None, weights
    if weights.startswith("seed:"):
        seed = _parse_seed(weights)
    elif os.path.isfile(weights):
        state, tag = _load_file(weights), file_tag(weights)
    elif _TV_NAME.fullmatch(weights):
        state, tag = _load_torchvision(spec, size, weights)
    else:
        raise SplitleakError(f"weights file not found: {weights}")
    with torch.device("cpu"), seeded(seed):
        network = spec.build(size, num_classes)
    if state is not None:
        check_state(spec.name, network, state, source=weights)
        network.load_state_dict(state)
    return network, tag


def composite_state(weights: str) -> Mapping[str, torch.Tensor] | None:
    """The state dict in `weights` if it is a file saved from a split model with a replaced
    classifier (keys `extractor.*` and `classifier.*`), else None."""
    if not isinstance(weights, str) or weights.startswith("seed:") or not os.path.isfile(weights):
        return None
    state = _load_file(weights)
    prefixes = {key.split(".", 1)[0] for key in state}
    return state if "classifier" in prefixes and prefixes <= {"extractor", "classifier"} else None


def _parse_seed(weights: str) -> int:
    text = weights[len("seed:"):]
    if not text.isdigit():
        raise SplitleakError(f"bad weights {weights!r}: expected seed:N with N a non-negative integer")
    return int(text)


def file_tag(path: str) -> str:
    """The weights tag of a state-dict file: `file:` + the first 16 hex digits of its sha256."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise SplitleakError(f"cannot read weights file {path}: {e.strerror}") from None
    return f"file:{h.hexdigest()[:16]}"


def _load_file(path: str) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling, truncated or non-torch file
        raise SplitleakError(f"cannot read weights file {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SplitleakError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _load_torchvision(spec: ModelSpec, size: int, name: str) -> tuple[Mapping[str, torch.Tensor], str]:
    if not spec.torchvision:
        raise SplitleakError(f"{spec.name} has no torchvision weights; use seed:N or a weights file")
    from torchvision.models import get_model_weights, get_weight
    from torchvision.models.vision_transformer import interpolate_embeddings

    try:
        w = get_weight(name) if "." in name else get_model_weights(spec.name)[name]
    except (KeyError, ValueError):
        known = ", ".join(get_model_weights(spec.name).__members__)
        raise SplitleakError(f"{spec.name} has no torchvision weights {name!r}; known: {known}") from None
    if type(w) is not get_model_weights(spec.name):
        raise SplitleakError(f"torchvision weights {name!r} are not for {spec.name}")
    try:
        state = w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # no network, no cache, bad download
        raise SplitleakError(
            f"torchvision weights {w} for {spec.name} are not available offline "
            f"(not in {torch.hub.get_dir()}/checkpoints and download failed: {type(e).__name__})") from None
    if spec.name.startswith("vit_") and state["encoder.pos_embedding"].shape[1] != (size // 16) ** 2 + 1:
        state = interpolate_embeddings(size, 16, state)
    return state, f"tv:{w.name}"


def check_state(model: str, network: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """SplitleakError naming the first missing key, unexpected key or shape mismatch."""
    expected = network.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise SplitleakError(f"weights {source} do not match {model}: missing key {key!r}")
        if tuple(state[key].shape) != tuple(value.shape):
            raise SplitleakError(f"weights {source} do not match {model}: {key!r} has shape "
                                 f"{tuple(state[key].shape)}, the model needs {tuple(value.shape)}")
    for key in state:
        if key not in expected:
            raise SplitleakError(f"weights {source} do not match {model}: unexpected key {key!r}")

