"""DMB's phases. A run is a pipeline: (screen) -> unroll -> refine -> pixel, with dmb-multi's
fusion phases around the refinement and after the pixel phase. Each phase is a small object built
from its part of the attack's config; it acts on the run (`SamplerFit`), never on the attack.

  unroll  Adam on the initial latent v through the unrolled DDIM sampler and the decoder
          (Algorithm 1), coarse sampler steps first where the plan says so.
  screen  restarts: the coarse phase runs R initial latents per frame as one batch; each frame
          goes on with the one whose K-step image fits its features best.
  refine  Adam on the sampled latent itself, as DB takes its steps.
  pixel   DO's steps on the pixels of each frame's best image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from adversary.feature.do import descend_pixels
from adversary.feature.fit import Best, Fit, adam
from adversary.losses import group_tie, negentropy, normalise

PIXEL_FINAL_LR = 0.01  # the pixel phase's cosine ends at this share of its lr, as DO's does
PIXEL_EPS = 1e-3  # images are clamped into [eps, 1 - eps] before the logit
CPU_ACTIVATION_BUDGET = 2 << 30  # bytes of saved activations a CPU unroll may keep without checkpointing
# share of the free accelerator memory an unroll's saved activations may take without checkpointing:
# recomputing every UNet call in backward costs about half an iteration's kernels (0.84 s against
# 0.38 s per iteration on an H200), which a 64x64 unroll of a few hundred latents does not need
GPU_ACTIVATION_SHARE = 0.25

Plan = list[tuple[int, int]]  # (sampler steps, Adam steps) per phase; 0 sampler steps: the refinement


@dataclass
class SamplerFit(Fit):
    """A DMB run: the feature fit plus the sampler's conditioning and the latent terms' settings."""

    cond: torch.Tensor | None = None
    steps: int = 20  # the sampler's K
    cfg_scale: float = 1.0
    text: tuple[float, float] | None = None  # (lambda_txt, alpha) with a text prior
    groups: list[list[int]] | None = None  # dmb-multi's frame groups
    lambda_c: float = 0.0  # dmb-multi's latent tie
    fused_weights: Any = None  # the fusion decided on the sampler's images (dmb-multi)
    plan_run: Plan = field(default_factory=list)

    def sample(self, v_n: torch.Tensor, steps: int | None = None, **kwargs: Any) -> torch.Tensor:
        return self.prior.sample(v_n, steps=steps or self.steps, text=self.cond, cfg_scale=self.cfg_scale, **kwargs)

    def latent_terms(self, v_n: torch.Tensor, groups: list[list[int]] | None) -> dict[str, torch.Tensor]:
        """Weighted per-frame losses on v_n added to the objective: the text prior's negentropy, the tie."""
        terms = {}
        if self.text is not None:
            terms["txt"] = self.text[0] * negentropy(v_n, self.text[1])
        if self.lambda_c > 0 and groups:
            terms["tie"] = self.lambda_c * group_tie(v_n, groups)
        return terms


def step_plan(iterations: int, steps: int, coarse_steps: int, coarse_share: float, refine_share: float) -> Plan:
    """(sampler steps, Adam steps) phases for a budget of `iterations` K-step sampler runs: a share
    `coarse_share` of the sampler runs at `coarse_steps` (each buys K / coarse_steps Adam steps), the
    rest at K, and a last phase with 0 sampler steps refining the sampled latent (`refine_share` of
    the budget, K latent steps per sampler run)."""
    refined = round(refine_share * iterations)
    runs = iterations - refined
    if not coarse_steps or coarse_steps >= steps:
        plan = [(steps, runs)]
    else:
        spent = round(coarse_share * runs)
        plan = [(coarse_steps, spent * steps // coarse_steps), (steps, runs - spent)]
    plan.append((0, refined * steps))
    return [(k, n) for k, n in plan if n > 0]


def activation_bytes(prior: Any, v: torch.Tensor, cond: torch.Tensor | None) -> int:
    """Bytes autograd saves for one sampling step from v (an upper bound: it counts shared weights)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        prior.sample(v.detach().requires_grad_(True), steps=1, text=cond, checkpoint=False)
    return total


def activation_budget(device: torch.device) -> int:
    """Bytes of saved activations an unroll on `device` may keep before it checkpoints."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_ACTIVATION_SHARE * free)
    return CPU_ACTIVATION_BUDGET


@dataclass(frozen=True)
class Unroll:
    """Adam (lr) on v through the unrolled sampler; `checkpoint` "auto" checkpoints only when the
    unroll's activations would pass the device's budget (activation_budget)."""

    lr: float
    checkpoint: str = "auto"

    def checkpointed(self, fit: SamplerFit, v: torch.Tensor) -> bool:
        if self.checkpoint != "auto":
            return self.checkpoint == "on"
        return fit.steps * activation_bytes(fit.prior, v, fit.cond) > activation_budget(fit.case.device)

    def __call__(self, fit: SamplerFit, v0: torch.Tensor, plan: Plan, best: Best | None = None,
                 z: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 groups: list[list[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the plan's sampler phases from v0 (the refinement is not run here). Returns the per-frame
        feature loss of the final v's K-step image, that v normalised, and its sampled latent."""
        best = fit.best if best is None else best
        groups = fit.groups if groups is None else groups
        fit.plan_run.extend(plan)
        checkpoint = self.checkpointed(fit, v0)
        fit.info["checkpointed"] = checkpoint
        v = v0.requires_grad_(True)
        opt = adam([v], self.lr)
        schedule = [steps for steps, n in plan if steps for _ in range(n)]
        for step, steps in enumerate(schedule + [fit.steps]):  # the last pass only scores the final v
            training = step < len(schedule)
            with torch.set_grad_enabled(training), fit.autocast():
                v_n = normalise(v)
                latent = fit.sample(v_n, steps, checkpoint=checkpoint and training)
                loss, feat, x = fit.image_loss(fit.prior.decode(latent), z, mask)
                terms = fit.latent_terms(v_n.float(), groups)
                total = loss + sum(terms.values()) if terms else loss
            best.update(feat, x)
            fit.log(feature=feat, total=total, **terms)
            if training:
                (v.grad,) = torch.autograd.grad(total.sum(), v)
                opt.step()
        return feat.detach(), v_n.detach(), latent.detach()


@dataclass(frozen=True)
class Screen:
    """Restarts: the coarse phase runs `restarts` initial latents per frame (v0 first, then `draw`'s
    fresh ones) as one batch; each frame keeps the one whose K-step image fits its features best."""

    restarts: int
    unroll: Unroll

    def applies(self, plan: Plan, steps: int) -> bool:
        return self.restarts > 1 and 0 < plan[0][0] < steps

    def __call__(self, fit: SamplerFit, v0: torch.Tensor, phase: tuple[int, int],
                 draw: Callable[[int, list[list[int]] | None], torch.Tensor]) -> torch.Tensor:
        batch, r = v0.shape[0], self.restarts
        groups = None if fit.groups is None else [[i + k * batch for i in g] for k in range(r) for g in fit.groups]
        fresh = draw(batch * r, groups)[batch:].to(v0)
        repeat = (r, *[1] * (fit.z.dim() - 1))
        loss, v_n, _ = self.unroll(fit, torch.cat([v0, fresh]), [phase], Best(), fit.z.repeat(repeat),
                                   fit.mask.repeat(repeat), groups)
        pick = loss.view(r, batch).argmin(0)
        return v_n.view(r, batch, *v0.shape[1:])[pick, torch.arange(batch, device=pick.device)].clone()


@dataclass(frozen=True)
class Refine:
    """Adam (lr) on the sampled latent itself, as DB takes its steps."""

    lr: float

    def __call__(self, fit: SamplerFit, latent: torch.Tensor, steps: int) -> None:
        if steps:
            fit.descend_latent(latent, steps, self.lr)


@dataclass(frozen=True)
class Pixel:
    """`steps` DO steps (lr on a cosine) on the pixels of the images x, at the head's input size."""

    steps: int
    lr: float

    def __call__(self, fit: SamplerFit, x: torch.Tensor) -> torch.Tensor:
        if not self.steps:
            return x.clamp(0, 1)
        w = torch.logit(x, eps=PIXEL_EPS)  # logit clamps x into [eps, 1 - eps] first
        w = descend_pixels(w, fit.case.head, fit.z, fit.mask, self.steps, self.lr, fit.lambda_s, PIXEL_FINAL_LR)
        return torch.sigmoid(w)


@dataclass(frozen=True)
class Guided:
    """The cheaper per-step guidance: one sampling run from fixed noise v0; at each of the K steps the
    predicted clean latent is moved by `inner` Adam steps on the objective, through the decoder only."""

    lr: float
    inner: int

    def __call__(self, fit: SamplerFit, v0: torch.Tensor) -> None:
        def guide(x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            y = x0.detach().clone().requires_grad_(True)
            opt = adam([y], self.lr)
            for _ in range(self.inner):
                with fit.autocast():
                    loss, feat, x = fit.image_loss(fit.prior.decode(y))
                fit.best.update(feat, x)
                fit.log(feature=feat, total=loss)
                (y.grad,) = torch.autograd.grad(loss.sum(), y)
                opt.step()
            return x0 - y.detach()

        with torch.no_grad():
            latent = fit.sample(normalise(v0), guidance=guide, checkpoint=False)
            with fit.autocast():
                _, feat, x = fit.image_loss(fit.prior.decode(latent))
        fit.best.update(feat, x)
        fit.log(feature=feat, total=feat)
