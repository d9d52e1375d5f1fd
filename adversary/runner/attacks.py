"""Attack objects for the runner: one builder for both families, the prior, and the one call of a
feature attack's `reconstruct`."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

import torch

from adversary.registry import get_attack
from splitleak.errors import SplitleakError


def make_attack(name: str, iterations: int | None, options: dict[str, Any] | None = None) -> Any:
    """Instantiate registered attack `name` (either family) with `iterations` and keyword `options`;
    the runner picks the feature or gradient path by the object's `family`."""
    cls = get_attack(name)
    options = dict(options or {})
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "iterations"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SplitleakError(f"attack {name!r} has no option {unknown[0]!r}; "
                             f"it takes {', '.join(sorted(known)) or 'none'}")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise SplitleakError(f"iterations must be a positive integer, got {iterations!r}")
    if iterations is not None:
        options["iterations"] = iterations
    try:
        return cls(**options)
    except TypeError as err:
        raise SplitleakError(f"attack {name!r}: {err}") from None


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
    from adversary.priors.diffusion import load_prior  # lazy: the diffusion stack is slow to import

    return load_prior(prior, device)


@dataclass
class Inverted:
    """What a feature attack made of one batch: images (B, 3, H, W), per-frame feature loss, seconds."""

    images: torch.Tensor
    loss: list[float] | None
    seconds: float


def reconstruct_features(attack: Any, features: torch.Tensor, case: Any) -> Inverted:
    """The runner's one call of a feature attack's `reconstruct`, timed (synchronised on CUDA)."""
    start = time.perf_counter()
    images = attack.reconstruct(features, case)
    if case.device.type == "cuda":
        torch.cuda.synchronize(case.device)
    losses = getattr(attack, "last_loss", None)
    return Inverted(images, None if losses is None else [float(v) for v in losses], time.perf_counter() - start)
