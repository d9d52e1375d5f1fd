"""A short attack: a fixed small budget of the cheapest attack that fits the map, on a few frames.

Features: white-box direct optimisation (`do`). FedSGD gradients: R-GAP's closed form where the model is a
chain it reads (no loop: the cheapest attack there is), else the batched iDLG engine (`idlg-batched`, one
start). All through the registered attacks, as `splitleak attack` runs them; PSNR at the frames' own size
(adversary.metrics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adversary.audit.probe import FEATURES, GRADIENT_LABEL, Probe
from adversary.metrics import score

FEATURE_ATTACK, GRADIENT_ATTACK, CLOSED_FORM = "do", "idlg-batched", "rgap"


@dataclass(frozen=True)
class Budget:
    """The short attack's fixed budget: `do` iterations, or idlg-batched L-BFGS steps (x 20 evaluations)."""

    feature_iterations: int = 60
    gradient_iterations: int = 5
    frames: int = 2


def run_short_attack(probe: Probe, frames: torch.Tensor, budget: Budget, seed: int = 0) -> dict[str, Any]:
    """{"attack", "iterations", "psnr" (mean over frames), "psnr_frames", "seconds"} for the first budget.frames."""
    x = frames[: budget.frames]
    start = time.perf_counter()
    if probe.kind == FEATURES:
        name, iterations, recon = FEATURE_ATTACK, budget.feature_iterations, _features(probe, x, budget, seed)
    else:
        name, iterations, recon = _gradients(probe, x, budget, seed)
    seconds = time.perf_counter() - start
    psnrs = [score(r, t, None)[0] for r, t in zip(recon.cpu().numpy(), x.cpu().numpy())]
    return {"attack": name, "iterations": iterations, "psnr": float(np.mean(psnrs)), "psnr_frames": psnrs,
            "seconds": seconds}


def _features(probe: Probe, x: torch.Tensor, budget: Budget, seed: int) -> torch.Tensor:
    from adversary.attacks import build_attack
    from adversary.feature.base import WhiteBoxCase

    model = probe.model
    device = next(model.network.parameters()).device
    with torch.no_grad():
        z = model.head(x.to(device))
    case = WhiteBoxCase(model.head, tuple(model.input_shape), device=device, seed=seed)
    return build_attack(FEATURE_ATTACK, iterations=budget.feature_iterations).reconstruct(z, case).images


def _gradients(probe: Probe, x: torch.Tensor, budget: Budget, seed: int) -> tuple[str, int, torch.Tensor]:
    """(attack, iterations, recovered frames): rgap where its closed form reads the model, else idlg-batched."""
    from adversary.attacks import build_attack
    from adversary.gradient.base import GradientCase
    from adversary.gradient.rgap import unreadable
    from splitleak import learning

    model = probe.model
    module = learning.trained_module(model)
    device = next(module.parameters()).device
    label = torch.tensor([GRADIENT_LABEL], device=device)
    cases = []
    for i, xi in enumerate(x.to(device)):
        grads = {k: v.detach() for k, v in learning.gradients(module, xi[None], label).items()}
        cases.append(GradientCase(module, grads, 1, tuple(model.input_shape), model.num_classes, None, "image",
                                  device=device, seed=seed + 1000 * i))
    if unreadable(module, tuple(model.input_shape)):  # a layer R-GAP cannot read (BatchNorm, attention, ...)
        attack = build_attack(GRADIENT_ATTACK, iterations=budget.gradient_iterations, options={"restarts": 1})
        return GRADIENT_ATTACK, budget.gradient_iterations, torch.cat([r.inputs for r in attack.reconstruct_many(cases)])
    rgap = build_attack(CLOSED_FORM)
    return CLOSED_FORM, 0, torch.cat([rgap.reconstruct(c).inputs for c in cases])
