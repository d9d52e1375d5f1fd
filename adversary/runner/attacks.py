"""Attack objects for the runner: one builder for both families, the prior, and the one call of a
feature attack's `reconstruct`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from adversary.attacks import build_attack, get_attack
from splitleak.errors import SplitleakError


def make_attack(name: str, iterations: int | None, options: dict[str, Any] | None = None,
                preset: str | None = None, config_file: str | None = None) -> Any:
    """Registered attack `name` (either family), configured by preset, config file, options and
    iterations (adversary.attacks.build_attack); the runner picks the path by the object's `family`."""
    return build_attack(name, iterations=iterations, options=options, preset=preset, config_file=config_file)


def check_prior(name: str, prior: str | None) -> None:
    """Refuse --prior for an attack that takes none, before any work."""
    if prior is not None and "prior" not in getattr(get_attack(name), "access", ()):
        raise SplitleakError(f"attack {name!r} takes no prior; drop --prior")


def load_prior_for(attack: Any, prior: str | None, device: str) -> Any:
    """The diffusion prior the attack needs (loaded), None if it needs none; refuses a missing or unwanted one."""
    check_prior(attack.name, prior)
    if "prior" not in attack.access:
        return None
    if prior is None:
        raise SplitleakError(f"attack {attack.name!r} needs a diffusion prior; pass --prior DIR")
    from adversary.priors.io import load_prior  # lazy: the diffusion stack is slow to import

    return load_prior(prior, device)


@dataclass
class Inverted:
    """What a feature attack made of one batch: images (B, 3, H, W) or clips (B, 3, T, H, W), per-item
    feature loss, seconds, and what the run chose (the result's info)."""

    images: torch.Tensor
    loss: list[float] | None
    seconds: float
    info: dict[str, Any]


def reconstruct_features(attack: Any, features: torch.Tensor, case: Any) -> Inverted:
    """The runner's one call of a feature attack's `reconstruct`, timed (synchronised on CUDA)."""
    start = time.perf_counter()
    result = attack.reconstruct(features, case)
    if case.device.type == "cuda":
        torch.cuda.synchronize(case.device)
    losses = None if result.loss is None else [float(v) for v in result.loss]
    return Inverted(result.images, losses, time.perf_counter() - start, result.info)
