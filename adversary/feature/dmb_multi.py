"""DMB-multi: multi-frame diffusion-based inversion ("Unlocking Visual Secrets", Algorithm 2).

Up to `window` consecutive tapped frames of one stream (from the wire metadata; without it the
batch in order) form a group. Each frame is inverted as dmb inverts it, with its own initial
latent and feature loss; the paper ties the group's normalised latents to their mean
(+ lambda_c * mean_entries((v_n,k - mean_j v_n,j)^2), paper 5, ours 0.05) and may start them from
shared noise; then dmb's pipeline gains a fusion phase (adversary.feature.fusion): frame j's image
is averaged into frame k's where it explains k's features within `fuse` times k's own residual.
`--preset paper` is Algorithm 2 as written (tie, shared noise, no fusion, no extra phase); the
default unties the latents and fuses, as measured (docs/feature-inversion.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from adversary.configs import require
from adversary.feature.base import WhiteBoxCase
from adversary.feature.dmb import (
    ALGORITHM_1, DiffusionBased, PixelConfig, RefineConfig, SamplerConfig, StartConfig, TextPriorConfig,
)
from adversary.feature.fusion import Fusion
from adversary.feature.groups import consecutive_groups
from adversary.feature.phases import SamplerFit
from adversary.losses import LAMBDA_C, LAMBDA_S
from adversary.registry import register
from splitleak.errors import SplitleakError


@dataclass(frozen=True)
class FramesConfig:
    """How frames are grouped and what ties them: the window, the fusion threshold (0: no fusion),
    the paper's latent tie and shared starting noise."""

    window: int = 8
    fuse: float = 2.0
    lambda_c: float = 0.0
    shared_init: bool = False

    def check(self) -> None:
        require(self.window >= 1 and self.fuse >= 0 and self.lambda_c >= 0,
                f"window must be >= 1, fuse and lambda_c >= 0; got {self.window}, {self.fuse}, {self.lambda_c}")


@dataclass(frozen=True)
class MultiConfig:
    """dmb's settings (unroll variant) plus the frames' grouping, tie and fusion."""

    iterations: int = 1500
    lambda_s: float = LAMBDA_S
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    start: StartConfig = field(default_factory=StartConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    pixel: PixelConfig = field(default_factory=PixelConfig)
    text_prior: TextPriorConfig = field(default_factory=TextPriorConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {**ALGORITHM_1, "frames.lambda_c": LAMBDA_C, "frames.shared_init": True, "frames.fuse": 0.0}}
    variant: ClassVar[str] = "unroll"

    def check(self) -> None:
        require(self.iterations >= 1 and self.lambda_s >= 0, "iterations must be >= 1 and lambda_s >= 0")


@register
class MultiFrameDiffusionBased(DiffusionBased):
    """DMB over groups of consecutive frames, fused where the features agree (latents optionally tied)."""

    name: ClassVar[str] = "dmb-multi"
    Config = MultiConfig

    def __init__(self, config: Any = None, **options: Any) -> None:
        super().__init__(config, **options)
        frames = self.config.frames
        self.fusion = Fusion(frames.fuse) if frames.fuse > 0 else None

    def open_fit(self, features: torch.Tensor, case: WhiteBoxCase, prior: Any) -> SamplerFit:
        fit = super().open_fit(features, case, prior)
        fit.groups, fit.lambda_c = self.frame_groups(features.shape[0], case), self.config.frames.lambda_c
        return fit

    def frame_groups(self, batch: int, case: WhiteBoxCase) -> list[list[int]]:
        """Batch positions grouped by stream and consecutive seq (at most `window` per group)."""
        window = self.config.frames.window
        if case.frames is None:
            return [list(range(i, min(i + window, batch))) for i in range(0, batch, window)]
        if len(case.frames) != batch:
            raise SplitleakError(f"case.frames names {len(case.frames)} frames for a batch of {batch}")
        return consecutive_groups(case.frames, window)

    def draw(self, fit: SamplerFit, batch: int, groups: list[list[int]] | None = None) -> torch.Tensor:
        """dmb's draws; with shared_init every frame of a group starts from its first frame's noise."""
        v = super().draw(fit, batch, groups)
        if self.config.frames.shared_init:
            for group in groups or []:
                v[group] = v[group[0]].clone()
        return v
