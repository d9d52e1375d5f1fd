"""DMB-multi: multi-frame diffusion-based inversion ("Unlocking Visual Secrets", Algorithm 2).

Up to `window` (K) consecutive tapped frames of one stream are inverted together: each frame
has its own initial latent v_k and its own feature loss (Algorithm 1), the normalised latents
of a group may be tied to their mean,
    + lambda_c * mean_entries((v_n,k - mean_j v_n,j)^2)
(paper lambda_c = 5 on its loss scale; 0.05 on DO's, see adversary.feature.losses), and the
group's reconstructions are then fused where the features say the frames agree (`fuse`, see
adversary.feature.fusion): frame j's image is averaged into frame k's at the locations where it
explains frame k's features within `fuse` times frame k's own residual. The tie acts on v_n, not
v: v's scale is free (normalisation removes it), so a tie on v could be met by shrinking every v.

Groups come from the wire metadata of the batch (case.frames: stream and seq): runs of
consecutive seq of one stream, cut at `window` frames and at batch boundaries (raise
`--batch` to keep long runs together). Without metadata the batch is taken as consecutive
frames in order. With `shared_init` every frame of a group starts from the same noise.

`shared_phase` f: a continuation on the tie. The tie starts infinitely strong (one latent per
group, scored against every frame of the group) and is then relaxed to lambda_c. The shared
phase costs one sampler run per group instead of one per frame, so at the same sampler budget
(`iterations` runs per frame) it gets f * iterations * B / G steps for B frames in G groups and
the per-frame phase the remaining (1 - f) * iterations, starting every frame from its group's
latent. Coarse-to-fine sampler steps (adversary.feature.dmb) run in the shared phase, and in the
per-frame phase when `coarse_tied` is set.

Defaults, measured with benchmarks/multi_frame.py (8 held-out bikes frames in one window of 8,
100 sampler runs per frame, 10 DDIM steps; single-frame DMB 21.19 dB on resnet18 layer1 (random)
and 16.90 dB on layer3 (trained victim)): no tie, independent noise, no shared phase, fuse = 2:
22.23 / 18.20 dB. Fusion pays because independent inversions err independently where the features
say nothing, and anything that makes the frames' latents alike makes their errors alike too:
  the paper's tie (lambda_c = 0.05) with independent noise, fused    21.81 / 18.27
  the tie with shared noise, fused                                    21.15 / -
  fuse = 3                                                            22.05 / 18.57
  the shared-phase continuation (f = 0.25, tie, shared noise), the
  previous default, unfused                                           21.66 / 18.00
  Algorithm 2 as written: lambda_c=0.05 shared_init=1 fuse=0
  coarse_steps=0                                                      18.09 / 10.72
On other held-out frames (bikes 225..232) the default gained +1.25 / +2.35 dB over single-frame
DMB; on carphone and bigbuckbunny, which the prior never saw, +0.6 to +1.2 dB.
(The figures above predate DMB's latent refinement; with it, see below.)

With DMB's latent refinement (adversary.feature.dmb, `refine_share`), fusing only at the end
(`fuse_stage=0`) accepts fewer neighbour pixels at layer3 (0-30 % against 12-48 %): refinement
shrinks each frame's own residual, the yardstick of the test, while it fits each frame's own
details. `fuse_stage=2` (the default) fuses the sampler's images first, so the refinement starts
from the fused frames (encoded by the VAE), and fuses again at the end. The feature benchmark's
8 frames, window 8, resnet18 layer1 / layer3, random and trained victims; single-frame DMB
23.62 / 17.88 (random) and 22.90 / 18.18 (trained):
  fuse_stage 0 (after the refinement only)     24.73 / 18.38   24.17 / 18.66   mean +0.84 dB
  fuse_stage 1 (before the refinement only)    23.97 / 18.64   -
  fuse_stage 2 (both, the default)             24.71 / 18.93   23.74 / 18.58   mean +0.84 dB
  fuse_stage 2, fuse 3                         24.48 / 19.06   23.65 / 18.85   mean +0.87 dB
Stage 2 was picked on the random victim; on the trained one stage 0 does better. Either way the
gain over single-frame DMB fell below 1 dB once single-frame DMB refined its latents.

With DMB's pixel phase (adversary.feature.dmb, `pixel_steps`), the acceptance is decided before
it and the fusion applied after it (`finish`): the phase fits each frame's own features so closely
that a test made after it passes no neighbour, and fusing before it lets it undo part of the
averaging. At stage 2 the final fusion reuses the acceptance decided on the sampler's images,
before the refinement shrank each frame's own residual (at layer3 the refined images accepted
0-15 % of their neighbours' pixels, the sampler's 28 %). Measured from one dmb-multi run per head
(8 frames, PSNR at 64; the refined images before the final fusion, with the pixel phase after):
                                                          layer1 (random)  layer3 (trained)
  no final fusion                                              25.19            19.46
  fused, acceptance decided anew (fuse 2 / 4 / 8), then
  the pixel phase                                      25.67 / 25.58 / 25.35   19.53 / 19.68 / 19.93
  fused by the sampler's acceptance, then the pixel phase      25.31            20.05
  the same, fused again after it                               25.01            20.33
  the pixel phase, then fused by the sampler's acceptance
  (the default)                                                25.33            20.34
  the plain group mean, then the pixel phase                   22.65            18.28
At layer1 a fresh acceptance before the phase did best, at layer3 the sampler's acceptance after
it; a first rule fused before the phase where the features hold at least as many numbers as the
image (layer1: 64 x 16 x 16 against 3 x 64 x 64), after it where they hold fewer.

One option was left out of that table: the pixel phase, then fused by an acceptance decided on the
refined images (before the phase, so its close fit does not decide). With the benchmark's
tuned-decoder prior, one dmb-multi run per head on the same 8 frames (PSNR at 64, fuse 2):
                                      layer1 random  layer1 trained  layer3 random  layer3 trained
  fresh acceptance, then the phase        26.51          26.13          20.43          20.68
  the phase, then the sampler's           26.08          26.16          20.75          21.02
  the phase, then the refined images'     27.08          26.65          20.52          20.73
So the final fusion comes after the phase (`fuse_order="after"`, the default; "before": a fresh
acceptance before it), and the acceptance is decided on the refined images where the features hold
at least as many numbers as the image, on the sampler's where they hold fewer (`accept_on="auto"`;
"sampler" or "refined" force either). Where the features hold that much, the refinement's detail
is largely read from them and its residuals are a fair yardstick; the sampler's images are coarse
(20.7-21.5 dB against 24.0-24.7 refined at layer1), so their test let through neighbours that blur
the frame. Where the features hold fewer numbers (layer2 on, 3 to 12 times fewer) the refinement
fits them with guessed detail, and its residuals pass too few neighbours. Checked on frames the rule
was not drawn from (bikes 225..232), fresh-then-phase / sampler's / refined images': layer1 trained
25.76 / 26.22 / 26.89 (auto: refined), layer2 random 22.61 / 23.34 / 23.25 (auto: sampler's).

`align="flow"` warps each neighbour onto the frame by optical flow between the reconstructions before
the acceptance test and the average (adversary.feature.fusion). It does not pay on this footage: the
bikes clip moves 1-2 px a frame (Farneback on the true frames 200..207; warping by it lifts adjacent
frames from 17.5-18.9 to 19.1-20.8 dB against each other: 1.6 px mean motion), but at layer3 flow read
off the single-frame reconstructions misses the true frames' flow by 2.1-2.6 px (mean endpoint error
over adjacent pairs), more than the motion; at layer1 by 0.6-0.7 px, and it still loses there (the
bilinear warp's blur, a guess, not measured).
benchmarks/multi_frame.py, 8 frames (bikes 200..207), window 8, gain over single-frame DMB:
                      layer1 random  layer3 trained  layer3 random  layer1 trained
  align none (default)    +1.37          +1.52           +0.74          +1.43
  align flow              +0.84          +0.50           +0.38          +0.88

A frame that accepts nothing from its neighbours on the sampler's images now refines as single-frame
DMB does (from its sampled latent, keeping its best image) instead of from a VAE-encoded copy of its own
image with its best forgotten: bikes 200 at layer3 (random) had lost 1.21 dB to single-frame DMB that
way and now matches it. The same table after the change, and on the frames 225..232:
                      layer1 random  layer3 trained  layer3 random  layer1 trained
  bikes 200..207          +1.35          +1.47           +0.90          +1.44
  bikes 225..232          +2.07          +2.36           +2.17          +2.11
With dmb's init=inverter on both sides (queries bikes 0..174; before the change), single-frame DMB is
stronger and the gain smaller (200..207): +0.80 / +1.12 / +0.49 / +0.93.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from adversary.feature.base import WhiteBoxCase
from adversary.feature.blackbox import DEFAULT_QUERY_SOURCE, resize
from adversary.feature.db import Best
from adversary.feature.dmb import (
    COARSE_SHARE, COARSE_STEPS, PIXEL_LR, PIXEL_STEPS, REFINE_SHARE, RESTARTS, DiffusionBased,
)
from adversary.feature.fusion import GroupFusion, apply_fusion, fusion_weights
from adversary.feature.losses import LAMBDA_C, LAMBDA_S, LAMBDA_TXT, consecutive_groups, group_tie
from adversary.registry import register
from splitleak.errors import SplitleakError

FUSE = 2.0  # fusion's acceptance threshold (see above)
WINDOW = 8  # frames per group: the window the defaults were measured with
FUSE_STAGES = {0: "after the refinement", 1: "before it: the refinement starts from the fused frames",
               2: "both, with the acceptance decided once, on the sampler's images"}
FUSE_STAGE = 2  # measured: see the module docstring
FUSE_ORDERS = ("after", "before")  # the final fusion against DMB's pixel phase (see the module docstring)
ACCEPT_ON = ("auto", "sampler", "refined")  # the images that decide the final fusion (ditto)
ALIGNS = ("none", "flow")  # neighbours fused as they are, or warped onto the frame by optical flow (fusion.py)
ALIGN = "none"  # measured: see the module docstring
# options: Algorithm 2 as the paper wrote it
ALGORITHM_2 = {"lambda_c": LAMBDA_C, "shared_init": 1, "fuse": 0.0, "coarse_steps": 0, "refine_share": 0.0,
               "pixel_steps": 0}


@register
class MultiFrameDiffusionBased(DiffusionBased):
    """DMB over groups of consecutive frames, fused where the features agree (latents optionally tied)."""

    name: ClassVar[str] = "dmb-multi"

    def __init__(self, iterations: int = 1500, lr: float = 0.1, steps: int = 20, lambda_s: float = LAMBDA_S,
                 lambda_c: float = 0.0, window: int = WINDOW, shared_init: bool = False,
                 shared_phase: float = 0.0, text: str | None = None,
                 lambda_txt: float = LAMBDA_TXT, alpha: float = 1.0, cfg_scale: float = 1.0,
                 checkpoint: bool | None = None, amp: bool = True, coarse_steps: int = COARSE_STEPS,
                 coarse_share: float = COARSE_SHARE, coarse_tied: int = 1, fuse: float = FUSE,
                 refine_share: float = REFINE_SHARE, fuse_stage: int = FUSE_STAGE, pixel_steps: int = PIXEL_STEPS,
                 pixel_lr: float = PIXEL_LR, fuse_order: str = "after",
                 accept_on: str = "auto", restarts: int = RESTARTS, align: str = ALIGN, init: str = "noise",
                 query_source: str = DEFAULT_QUERY_SOURCE, query_frames: int = 250,
                 cache_dir: str | None = None) -> None:
        super().__init__(iterations=iterations, lr=lr, steps=steps, lambda_s=lambda_s, text=text,
                         lambda_txt=lambda_txt, alpha=alpha, cfg_scale=cfg_scale, variant="unroll",
                         checkpoint=checkpoint, amp=amp, coarse_steps=coarse_steps, coarse_share=coarse_share,
                         refine_share=refine_share, pixel_steps=pixel_steps, pixel_lr=pixel_lr, restarts=restarts,
                         init=init, query_source=query_source, query_frames=query_frames, cache_dir=cache_dir)
        if window < 1 or lambda_c < 0 or not 0.0 <= shared_phase <= 1.0 or fuse < 0:
            raise SplitleakError(f"window must be >= 1, lambda_c and fuse >= 0 and shared_phase in [0, 1], got "
                                 f"{window}, {lambda_c}, {fuse} and {shared_phase}")
        self.lambda_c, self.window, self.shared_init = float(lambda_c), int(window), bool(shared_init)
        self.shared_phase, self.coarse_tied = float(shared_phase), bool(coarse_tied)
        self.fuse = float(fuse)
        if fuse_stage not in FUSE_STAGES:
            raise SplitleakError(f"fuse_stage must be one of {sorted(FUSE_STAGES)}, got {fuse_stage}")
        self.fuse_stage = int(fuse_stage)
        if fuse_order not in FUSE_ORDERS:
            raise SplitleakError(f"fuse_order must be one of {', '.join(FUSE_ORDERS)}, got {fuse_order!r}")
        if accept_on not in ACCEPT_ON:
            raise SplitleakError(f"accept_on must be one of {', '.join(ACCEPT_ON)}, got {accept_on!r}")
        if align not in ALIGNS:
            raise SplitleakError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")
        self.fuse_order, self.accept_on, self.align = fuse_order, accept_on, align
        self.accepted_on: str | None = None  # which images decided the last batch's final fusion
        self.fused_after: bool | None = None  # whether the last batch's final fusion came after the pixel phase
        self.fused_share: list[float] | None = None  # neighbour pixels accepted per frame by the last fusion
        self.phase_iterations: tuple[int, int] | None = None  # (shared, per-frame) steps of the last batch
        self.groups: list[list[int]] = []
        self.weights: list[GroupFusion | None] | None = None  # the fusion decided on the sampler's images

    def config(self) -> dict[str, object]:
        config = super().config()
        config.pop("variant")
        return {**config, "lambda_c": self.lambda_c, "window": self.window, "shared_init": self.shared_init,
                "shared_phase": self.shared_phase, "coarse_tied": self.coarse_tied,
                "phase_iterations": self.phase_iterations, "fuse": self.fuse, "fused_share": self.fused_share,
                "fuse_stage": FUSE_STAGES[self.fuse_stage], "fuse_order": self.fuse_order,
                "accept_on": self.accept_on, "final_acceptance_on": self.accepted_on, "align": self.align,
                "fused_after_pixel_phase": self.fused_after,
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
            self._unrolled(v0[firsts], z, mask, case, prior, cond, best, iterations=shared, owner=owner,
                           refine=False)
            v0 = self.last_latents[owner].clone()
            self.last_latents = v0
        if per_frame:
            plan = self.step_plan(per_frame, coarse=self.coarse_tied)
            if not shared:  # the shared phase's latents are not screened
                v0, plan = self.screened(v0, z, mask, case, prior, cond, plan)
            self._unrolled(v0, z, mask, case, prior, cond, best, plan=plan)

    def screen(self, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase, prior: Any,
               cond: torch.Tensor | None, phase: tuple[int, int]) -> torch.Tensor:
        """DMB's restarts (no shared phase only), each candidate set grouped (and tied) as the frames are."""
        groups, batch = self.groups, v0.shape[0]
        self.groups = [[i + r * batch for i in group] for r in range(self.restarts) for group in groups]
        try:
            return super().screen(v0, z, mask, case, prior, cond, phase)
        finally:
            self.groups = groups

    def refine(self, latent: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase, prior: Any,
               best: Best, steps: int) -> None:
        """With fuse_stage 1 or 2, the refinement starts from the group-fused sampler images (encoded;
        not for a grey head, whose images the VAE cannot encode). A frame that accepted nothing from its
        neighbours refines as single-frame DMB does: from its sampled latent, keeping its best image (an
        encoded copy of its own image, its best forgotten, lost 1.2 dB on such a frame: see the docstring)."""
        if self.fuse and self.fuse_stage and best.x.shape[1] == 3:
            with torch.no_grad():
                self.weights = self.acceptance(best.x, z, mask, case)
                fused, share = self.fused(best.x, self.weights)
                changed = share > 0  # the frames whose images took a neighbour's pixels
                if changed.any():  # index assignment keeps latent's memory layout (the VAE's may differ)
                    latent = latent.clone()
                    latent[changed] = prior.encode(resize(fused[changed], prior.image_size)).to(latent.dtype)
            best.restart(changed)  # a fused frame's output is refined from it, even where it scores worse
        super().refine(latent, z, mask, case, prior, best, steps)

    @property
    def fused_before(self) -> bool:
        """Whether the last batch's refinement started from fused frames."""
        return self.weights is not None

    def acceptance(self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                   case: WhiteBoxCase) -> list[GroupFusion | None]:
        """Per group, where each member's image (warped onto the other, with align=flow) may stand in for
        each other's (adversary.feature.fusion)."""
        with torch.no_grad():
            return fusion_weights(x, case.head, z, mask, self.groups, self.fuse, align=self.align == "flow")

    def fused(self, x: torch.Tensor, weights: list[GroupFusion | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each frame's image fused with its group's by `weights`, and the share of neighbour pixels it
        accepted (B,); records the shares."""
        fused, share = apply_fusion(x, self.groups, weights)
        self.fused_share = [round(float(s), 4) for s in share]
        return fused, share

    def sampler_acceptance(self, x: torch.Tensor, z: torch.Tensor) -> bool:
        """Whether the final fusion (after the pixel phase) reuses the acceptance decided on the sampler's
        images rather than deciding it on the refined ones: `accept_on`, or with "auto" where the features
        hold fewer numbers than the image, so the refinement's fit to them is largely guessed detail and its
        residuals no yardstick. Only at fuse_stage 2 was one decided on the sampler's images."""
        if not self.fused_before:
            return False
        if self.accept_on != "auto":
            return self.accept_on == "sampler"
        return z[0].numel() < x[0].numel()

    def finish(self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        """The group's final fusion (stage 1: none) and DMB's pixel phase on each frame, in either order:
        after it (the default) by the acceptance decided on the sampler's images or on these, refined ones
        (`sampler_acceptance`), or before it by an acceptance decided on these."""
        self.fused_after, self.accepted_on = None, None
        if not self.fuse or (self.fused_before and self.fuse_stage == 1):
            return super().finish(x, z, mask, case)
        self.fused_after = self.fuse_order == "after"
        if not self.fused_after:
            self.accepted_on = "refined"
            return super().finish(self.fused(x, self.acceptance(x, z, mask, case))[0], z, mask, case)
        on_sampler = self.sampler_acceptance(x, z)
        self.accepted_on = "sampler" if on_sampler else "refined"
        weights = self.weights if on_sampler else self.acceptance(x, z, mask, case)
        return self.fused(super().finish(x, z, mask, case), weights)[0]

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        self.groups, self.weights = self.frame_groups(features.shape[0], case), None
        return super().reconstruct(features, case)
