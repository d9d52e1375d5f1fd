"""`ref1` / `refs`: reference-based super-resolution (TTSR's idea, adversary.enhance.ref_model).

At attack time the references are high-resolution frames the attacker holds from the target
scene. `ref1` uses the first reference it is given; `refs` searches all of them for every patch.
Both share one trained network (`train_reference_sr`); without weights they fall back to the
analytic fusion (detail added where the soft attention is confident).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from adversary.enhance.base import Enhancer
from adversary.enhance.degrade import DegradeConfig, preset
from adversary.enhance.pairs import PairSampler, load_footage
from adversary.enhance.ref_model import RefConfig, RefSR, Texture, analytic_fuse, find_texture
from adversary.enhance.registry import register, register_trainer
from adversary.enhance.training import TrainSpec, load_at_scale, model_config, save_model, train_model
from splitleak.errors import SplitleakError

METHOD = "ref"  # the name ref1 and refs share: train-sr --method ref, config.json's "method"
FRAMES_PER_CHUNK = 16  # frames matched at once: bounds the relevance and fold buffers


class _Reference(Enhancer):
    refs = "many"
    weights = "optional"
    max_refs: int | None = None

    def __init__(self, scale: int = 4, device: str = "cpu", weights: str | None = None) -> None:
        super().__init__(scale, device, weights)
        self.net: RefSR | None = None
        self.patch = RefConfig.patch
        if weights is not None:
            self.net = load_at_scale(weights, METHOD, RefSR.from_config, scale, self.device)
            self.patch = self.net.config.patch

    def forward(self, low: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        assert refs is not None  # check_input made sure
        refs = refs[: self.max_refs]
        outs = []
        for i in range(0, low.shape[0], FRAMES_PER_CHUNK):
            t = find_texture(low[i:i + FRAMES_PER_CHUNK], refs, self.scale, self.patch)
            outs.append(self.net.fuse(t) if self.net is not None else analytic_fuse(t))
        return torch.cat(outs)


@register
class ReferenceOne(_Reference):
    """One reference frame (the first given): the paper's TTSR setting."""

    name = "ref1"
    refs = "one"
    max_refs = 1


@register
class ReferenceMany(_Reference):
    """Several reference frames: each patch takes its best match across all of them."""

    name = "refs"
    refs = "many"


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class RefPicking:
    """How training picks a target's references: 1..max_refs frames of its clip, min_gap..max_gap away."""

    max_refs: int = 4
    min_gap: int = 3
    max_gap: int = 40


class _FuseMaps(nn.Module):
    """RefSR's fusion called on the texture search's maps (the search runs outside, without gradients)."""

    def __init__(self, net: RefSR) -> None:
        super().__init__()
        self.net = net

    def forward(self, up: torch.Tensor, texture: torch.Tensor, detail: torch.Tensor,
                confidence: torch.Tensor) -> torch.Tensor:
        return self.net.fuse(Texture(up, texture, detail, confidence, torch.empty(0)))


def texture_batch(samplers: list[PairSampler], batch: int, picking: RefPicking, patch: int,
                  rng: np.random.Generator) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """((up, texture, detail, confidence), clean targets) for `batch` targets of one random clip, each
    searched against its own references."""
    sampler = samplers[int(rng.integers(len(samplers)))]
    pairs, refs = sampler.with_refs(batch, int(rng.integers(1, picking.max_refs + 1)), picking.min_gap,
                                    picking.max_gap)
    with torch.no_grad():
        found = [find_texture(pairs.low[i:i + 1], refs[i], sampler.scale, patch) for i in range(batch)]
    maps = tuple(torch.cat([getattr(f, k) for f in found]) for k in ("up", "texture", "detail", "confidence"))
    return maps, pairs.high


def fit_reference(clips: list[torch.Tensor], spec: TrainSpec, net: RefConfig = RefConfig(),
                  picking: RefPicking = RefPicking(), degradation: DegradeConfig | None = None) -> dict[str, Any]:
    """Train RefSR's fusion on `clips` (each (T, 3, H, W) clean frames of one scene): targets degraded
    as recovered frames look, references other frames of the same clip. Saves it to `spec.out`
    (save_model); returns its config."""
    if not clips or any(c.ndim != 4 or c.shape[0] < 2 for c in clips):
        raise SplitleakError("reference training needs clips of at least 2 frames, each (T, 3, H, W)")
    degradation = degradation or preset(spec.degradation or "recovered")
    net = RefConfig(**{**asdict(net), "scale": spec.scale})
    torch.manual_seed(spec.seed)
    samplers = [PairSampler(c, spec.scale, spec.patch, degradation, spec.seed + k) for k, c in enumerate(clips)]
    rng = np.random.default_rng(spec.seed)
    model = RefSR(net)
    log = train_model(_FuseMaps(model), lambda step: texture_batch(samplers, spec.batch, picking, net.patch, rng),
                      steps=spec.steps, lr=spec.lr, device=spec.device, progress=spec.progress,
                      desc="train-sr ref")
    config = model_config(METHOD, "RefSR (texture search + grid fusion, adversary.enhance.ref_model)", net, spec,
                          model, log, degradation, "the analytic gate (the fusion's last conv starts at zero)",
                          frames_loaded=[int(c.shape[0]) for c in clips], references=asdict(picking))
    save_model(spec.out, model.cpu(), config)
    return config


@register_trainer(METHOD)
def train_reference(spec: TrainSpec) -> dict[str, Any]:
    """`splitleak train-sr --method ref`: RefSR trained on the footage of `spec.source` (one scene)."""
    return fit_reference([load_footage(spec.source, spec.size, spec.frames, spec.stride)], spec)
