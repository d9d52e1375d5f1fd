"""`ref1` / `refs`: reference-based super-resolution (TTSR's idea, adversary.enhance.ref_model).

At attack time the references are high-resolution frames the attacker holds from the target
scene. `ref1` uses the first reference it is given; `refs` searches all of them for every patch.
Both share one trained network (`train_reference_sr`); without weights they fall back to the
analytic fusion (detail added where the soft attention is confident).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adversary.enhance.base import Enhancer
from adversary.enhance.ref_model import (RefConfig, RefSR, Texture, analytic_fuse, build, degrade, find_texture,
                                         load_state, save_state)
from adversary.enhance.registry import register
from splitleak.errors import SplitleakError

ARCH = "splitleak-refsr"
FRAMES_PER_CHUNK = 16  # frames matched at once: bounds the relevance and fold buffers


class _Reference(Enhancer):
    refs = "many"
    max_refs: int | None = None

    def __init__(self, scale: int = 4, device: str = "cpu", weights: str | None = None) -> None:
        super().__init__(scale, device)
        self.net: RefSR | None = None
        self.patch = RefConfig.patch
        if weights is not None:
            config, state = load_state(weights, ARCH)
            self.net = build(RefSR, RefConfig, config, state, weights).to(self.device)
            if self.net.config.scale != scale:
                raise SplitleakError(f"weight file {weights} is for scale {self.net.config.scale}, not --scale {scale}")
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


def degrade_like_recovered(high: torch.Tensor, scale: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """A low frame as the attack recovers it: area-downsampled (as the edge's preprocessing does),
    plus the inversion's residual noise (std drawn up to `noise`), quantised to 8 bits (saved as PNG)."""
    low = degrade(high, scale)
    sigma = torch.rand(low.shape[0], 1, 1, 1, generator=generator) * noise
    low = low + sigma * torch.randn(low.shape, generator=generator)
    return (low.clamp(0, 1) * 255).round() / 255


@dataclass(frozen=True)
class RefTrainConfig:
    out: str
    steps: int = 400
    batch: int = 4
    lr: float = 5e-4
    max_refs: int = 4
    min_gap: int = 3  # frames between a target and its references, at least
    max_gap: int = 40  # and at most
    noise: float = 0.02
    seed: int = 0
    scale: int = 4
    channels: int = RefConfig.channels
    blocks: int = RefConfig.blocks


def pick_refs(length: int, t: int, count: int, cfg: RefTrainConfig, g: torch.Generator) -> list[int]:
    """`count` frame indices of a clip of `length` frames, min_gap..max_gap away from `t`."""
    near = [i for i in range(length) if cfg.min_gap <= abs(i - t) <= cfg.max_gap]
    if not near:
        near = [i for i in range(length) if i != t] or [t]
    order = torch.randperm(len(near), generator=g)[:count]
    return [near[int(j)] for j in order]


def reference_batch(clips: list[torch.Tensor], cfg: RefTrainConfig, g: torch.Generator):
    """(inputs: list of (low (1,3,h,w), refs (R,3,H,W)), targets (B,3,H,W)) drawn from `clips`."""
    pairs, targets = [], []
    count = int(torch.randint(1, cfg.max_refs + 1, (1,), generator=g))
    for _ in range(cfg.batch):
        clip = clips[int(torch.randint(len(clips), (1,), generator=g))]
        t = int(torch.randint(clip.shape[0], (1,), generator=g))
        refs = clip[pick_refs(clip.shape[0], t, count, cfg, g)]
        target = clip[t:t + 1]
        if torch.rand(1, generator=g) < 0.5:  # flip the scene: target and references together
            refs, target = refs.flip(-1), target.flip(-1)
        pairs.append((degrade_like_recovered(target, cfg.scale, cfg.noise, g), refs))
        targets.append(target)
    return pairs, torch.cat(targets)


def check_clips(clips: list[torch.Tensor], scale: int) -> None:
    if not clips or any(c.ndim != 4 or c.shape[1] != 3 or c.shape[0] < 2 for c in clips):
        raise SplitleakError("training needs clips of at least 2 frames, each (T, 3, H, W)")
    if any(c.shape[2] % scale or c.shape[3] % scale for c in clips):
        raise SplitleakError(f"training frames must be a multiple of --scale {scale} on each side")


def train_reference_sr(clips: list[torch.Tensor], cfg: RefTrainConfig, progress: bool = False) -> dict:
    """Train `RefSR` on pairs made from `clips` (each (T, 3, H, W) high-res frames in [0, 1], one
    scene): target = a frame degraded as recovered frames look, references = other frames of the
    same clip at high res. Saves safetensors with its config to `cfg.out`; returns the training log."""
    check_clips(clips, cfg.scale)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    net = RefSR(RefConfig(scale=cfg.scale, channels=cfg.channels, blocks=cfg.blocks))
    opt = torch.optim.Adam(net.fusion.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    losses, start = [], time.perf_counter()
    steps = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="train ref", unit="step")
    for _ in steps:
        pairs, target = reference_batch(clips, cfg, g)
        with torch.no_grad():  # the search has no weights: only the fusion learns
            found = [find_texture(low, refs, cfg.scale, net.config.patch) for low, refs in pairs]
            t = _stack(found)
        loss = F.l1_loss(net.fuse(t), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    log = {"steps": cfg.steps, "seconds": time.perf_counter() - start, "loss_first": sum(losses[:20]) / len(losses[:20]),
           "loss_last": sum(losses[-20:]) / len(losses[-20:]), "frames": [int(c.shape[0]) for c in clips]}
    save_state(cfg.out, ARCH, net.config.to_dict(), net, {k: v for k, v in log.items() if k != "frames"})
    return log


def _stack(found: list[Texture]) -> Texture:
    return Texture(*(torch.cat([getattr(f, k) for f in found]) for k in ("up", "texture", "detail", "confidence",
                                                                           "index")))
