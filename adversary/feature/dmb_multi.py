"""DMB-multi: multi-frame diffusion-based inversion ("Unlocking Visual Secrets", Algorithm 2).

Up to `window` (K) consecutive tapped frames of one stream are inverted jointly: each frame
has its own initial latent v_k and its own feature loss (Algorithm 1), and the normalised
latents of a group are tied to their mean,
    + lambda_c * mean_entries((v_n,k - mean_j v_n,j)^2)
(paper lambda_c = 5 on its loss scale; 0.05 on DO's, see adversary.feature.losses). The tie
acts on v_n, not v: v's scale is free (normalisation removes it), so a tie on v could be met
by shrinking every v without changing a single frame.

Groups come from the wire metadata of the batch (case.frames: stream and seq): runs of
consecutive seq of one stream, cut at `window` frames and at batch boundaries (raise
`--batch` to keep long runs together). Without metadata the batch is taken as consecutive
frames in order. With `shared_init` every frame of a group starts from the same noise.

`shared_phase` f: a continuation on the tie. The tie starts infinitely strong (one latent per
group, scored against every frame of the group, as lambda_c -> inf would force) and is then
relaxed to lambda_c. The shared phase costs one sampler run per group instead of one per frame,
so at the same sampler budget (`iterations` runs per frame) it gets f * iterations * B / G
steps for B frames in G groups, and the tied per-frame phase the remaining (1 - f) * iterations,
starting every frame from its group's latent. f = 0 is Algorithm 2 as written.

Coarse-to-fine sampler steps (see adversary.feature.dmb) run in the shared phase, and in the
tied phase only with `coarse_tied=1`: with the K-step sampler throughout the tied phase,
8 held-out bikes frames (windows of 4) gained +0.3 dB on resnet18 layer1 (random) and +0.15 dB on
layer3 (trained victim) over coarse steps in both phases, at 0.8x the wall time.

The default f = 0.25 was measured without coarse steps (benchmarks/multi_frame.py, 8 held-out
bikes frames in windows of 4, 100 iterations, 10 DDIM steps, four resnet18 heads): +1.8 dB mean
PSNR over single-frame DMB, where f = 0 lost 0.7 dB on layer1 and gained 0.3 dB on layer3
(trained victim). Coarse steps lift single-frame DMB by 0.6-3.3 dB and most of that gain is gone:
+0.3 dB (layer1, random) and +0.85 dB (layer3, trained) over it, on the same 8 frames.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from adversary.feature.base import WhiteBoxCase
from adversary.feature.db import Best
from adversary.feature.dmb import COARSE_SHARE, COARSE_STEPS, DiffusionBased
from adversary.feature.losses import LAMBDA_C, LAMBDA_S, LAMBDA_TXT, consecutive_groups, group_tie
from adversary.registry import register
from splitleak.errors import SplitleakError

SHARED_PHASE = 0.25  # the share of the sampler budget spent on one latent per group (see above)


@register
class MultiFrameDiffusionBased(DiffusionBased):
    """DMB over groups of consecutive frames whose normalised latents are tied together."""

    name: ClassVar[str] = "dmb-multi"

    def __init__(self, iterations: int = 1500, lr: float = 0.1, steps: int = 20, lambda_s: float = LAMBDA_S,
                 lambda_c: float = LAMBDA_C, window: int = 5, shared_init: bool = True,
                 shared_phase: float = SHARED_PHASE, text: str | None = None,
                 lambda_txt: float = LAMBDA_TXT, alpha: float = 1.0, cfg_scale: float = 1.0,
                 checkpoint: bool | None = None, amp: bool = True, coarse_steps: int = COARSE_STEPS,
                 coarse_share: float = COARSE_SHARE, coarse_tied: int = 0) -> None:
        super().__init__(iterations=iterations, lr=lr, steps=steps, lambda_s=lambda_s, text=text,
                         lambda_txt=lambda_txt, alpha=alpha, cfg_scale=cfg_scale, variant="unroll",
                         checkpoint=checkpoint, amp=amp, coarse_steps=coarse_steps, coarse_share=coarse_share)
        if window < 1 or lambda_c < 0 or not 0.0 <= shared_phase <= 1.0:
            raise SplitleakError(f"window must be >= 1, lambda_c >= 0 and shared_phase in [0, 1], got {window}, "
                                 f"{lambda_c} and {shared_phase}")
        self.lambda_c, self.window, self.shared_init = float(lambda_c), int(window), bool(shared_init)
        self.shared_phase, self.coarse_tied = float(shared_phase), bool(coarse_tied)
        self.phase_iterations: tuple[int, int] | None = None  # (shared, per-frame) steps of the last batch
        self.groups: list[list[int]] = []

    def config(self) -> dict[str, object]:
        config = super().config()
        config.pop("variant")
        return {**config, "lambda_c": self.lambda_c, "window": self.window, "shared_init": self.shared_init,
                "shared_phase": self.shared_phase, "coarse_tied": self.coarse_tied,
                "phase_iterations": self.phase_iterations,
                "tie": "lambda_c * mean((v_n,k - group mean)^2)"}

    def frame_groups(self, batch: int, case: WhiteBoxCase) -> list[list[int]]:
        """Batch positions grouped by stream and consecutive seq (at most `window` per group)."""
        if case.frames is None:
            return [list(range(i, min(i + self.window, batch))) for i in range(0, batch, self.window)]
        if len(case.frames) != batch:
            raise SplitleakError(f"case.frames names {len(case.frames)} frames for a batch of {batch}")
        return consecutive_groups(case.frames, self.window)

    def initial_noise(self, batch: int, prior: Any, case: WhiteBoxCase) -> torch.Tensor:
        v = super().initial_noise(batch, prior, case)
        if self.shared_init:
            for group in self.groups:
                v[group] = v[group[0]].clone()
        return v

    def latent_terms(self, v_n: torch.Tensor, case: WhiteBoxCase) -> dict[str, torch.Tensor]:
        terms = super().latent_terms(v_n, case)
        if self.lambda_c > 0:
            terms["tie"] = self.lambda_c * group_tie(v_n, self.groups)
        return terms

    def phase_budget(self, frames: int, groups: int) -> tuple[int, int]:
        """(shared-phase steps, per-frame steps) at `iterations` sampler runs per frame."""
        shared = round(self.shared_phase * self.iterations)
        return round(shared * frames / groups), self.iterations - shared

    def optimise(self, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase,
                 prior: Any, cond: torch.Tensor | None, best: Best) -> None:
        shared, per_frame = self.phase_iterations = self.phase_budget(v0.shape[0], len(self.groups))
        if shared:
            owner = torch.empty(v0.shape[0], dtype=torch.long)
            for row, group in enumerate(self.groups):
                owner[group] = row
            owner = owner.to(v0.device)
            firsts = torch.as_tensor([group[0] for group in self.groups], device=v0.device)
            self._unrolled(v0[firsts], z, mask, case, prior, cond, best, iterations=shared, owner=owner)
            v0 = self.last_latents[owner].clone()
            self.last_latents = v0
        if per_frame:
            self._unrolled(v0, z, mask, case, prior, cond, best, iterations=per_frame, coarse=self.coarse_tied)

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        self.groups = self.frame_groups(features.shape[0], case)
        return super().reconstruct(features, case)
