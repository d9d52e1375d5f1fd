"""DMB: diffusion-model-based white-box inversion ("Unlocking Visual Secrets", Algorithm 1).

Optimise the sampler's initial latent v: each step normalises it per frame, runs K deterministic
DDIM steps from v_n, decodes, and scores mean((F1(D(S(v_n))) - z)^2) / mean(z^2) + lambda_s TV
(+ lambda_txt L_txt with a text prior), back-propagating through the unrolled sampler. The run is
a pipeline of phases (adversary.feature.phases): screen, unroll, refine, pixel (dmb-multi adds
fusion around the refinement and after the pixel phase). `--preset paper`
is Algorithm 1 as written (K = 20, Adam lr 0.1, 1,500 iterations, no extra phase); the default
(`best`) adds the phases measured to pay (docs/feature-inversion.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from adversary.configs import require
from adversary.feature.base import FeatureInversionAttack, FeatureResult, WhiteBoxCase
from adversary.feature.blackbox import BlackBoxDB, QueryConfig, as_blackbox
from adversary.feature.fit import CHECK_EVERY, PRIOR_ACCESS, require_prior
from adversary.feature.phases import Guided, Pixel, Refine, SamplerFit, Screen, Unroll, step_plan
from adversary.losses import LAMBDA_S, LAMBDA_TXT, feature_loss
from adversary.registry import register
from splitleak.errors import SplitleakError


@dataclass(frozen=True)
class SamplerConfig:
    """The DDIM sampler and Adam on its initial latent; a share of the budget at fewer steps first."""

    steps: int = 20  # K
    lr: float = 0.1
    coarse_steps: int = 2  # 0: every sampler run at K steps
    coarse_share: float = 0.5
    cfg_scale: float = 1.0
    checkpoint: Literal["auto", "on", "off"] = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    # CUDA only: torch.compile the UNet in this mode ("reduce-overhead": CUDA graphs, fewer launches per
    # step); off by default: unmeasured on a GPU so far, and compiling takes a minute
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    check_every: int = CHECK_EVERY  # Adam steps between read-backs of the loss trace (host syncs)

    def check(self) -> None:
        require(self.steps >= 1 and self.coarse_steps >= 0, "steps must be >= 1 and coarse_steps >= 0")
        require(self.check_every >= 1, f"check_every must be >= 1, got {self.check_every}")
        require(0.0 <= self.coarse_share <= 1.0 and self.lr > 0, "coarse_share must be in [0, 1] and lr > 0")


@dataclass(frozen=True)
class StartConfig:
    """Where each frame's initial latent comes from: `restarts` draws screened in the coarse phase;
    init="inverter": the first is bb-db's inverter's guess (trained on query pairs, cached)."""

    restarts: int = 4
    init: Literal["noise", "inverter"] = "noise"
    query: QueryConfig = field(default_factory=QueryConfig)
    cache_dir: str | None = None

    def check(self) -> None:
        require(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}")


@dataclass(frozen=True)
class RefineConfig:
    """A share of the budget spent last on Adam steps on the sampled latent."""

    share: float = 0.2

    def check(self) -> None:
        require(0.0 <= self.share < 1.0, f"refine share must be in [0, 1), got {self.share}")


@dataclass(frozen=True)
class PixelConfig:
    """DO's steps on the best image's pixels, last."""

    steps: int = 400
    lr: float = 0.05

    def check(self) -> None:
        require(self.steps >= 0 and self.lr > 0, f"pixel steps must be >= 0 and lr > 0, got {self.steps}, {self.lr}")


@dataclass(frozen=True)
class TextPriorConfig:
    """The text prior: condition the sampler on `text` and add lambda_txt * the negentropy loss."""

    text: str | None = None
    lambda_txt: float = LAMBDA_TXT
    alpha: float = 1.0

    def check(self) -> None:
        require(1.0 <= self.alpha <= 2.0, f"the negentropy's alpha must be in [1, 2], got {self.alpha}")
        require(self.text is None or bool(self.text.strip()), "--text is empty")


ALGORITHM_1 = {"sampler.coarse_steps": 0, "refine.share": 0.0, "pixel.steps": 0, "start.restarts": 1}


@dataclass(frozen=True)
class DMBConfig:
    """DMB: the budget (`iterations` K-step sampler runs per frame) and each phase's settings."""

    iterations: int = 1500
    lambda_s: float = LAMBDA_S
    variant: Literal["unroll", "guidance"] = "unroll"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    start: StartConfig = field(default_factory=StartConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    pixel: PixelConfig = field(default_factory=PixelConfig)
    text_prior: TextPriorConfig = field(default_factory=TextPriorConfig)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": ALGORITHM_1}

    def check(self) -> None:
        require(self.iterations >= 1 and self.lambda_s >= 0, "iterations must be >= 1 and lambda_s >= 0")


@register
class DiffusionBased(FeatureInversionAttack):
    """Optimise the initial noise of a short DDIM run so the decoded frame matches the features."""

    name: ClassVar[str] = "dmb"
    access: ClassVar[frozenset[str]] = PRIOR_ACCESS
    Config = DMBConfig

    def __init__(self, config: Any = None, **options: Any) -> None:
        super().__init__(config, **options)
        c = self.config
        # init="inverter": bb-db's inverter, trained on query pairs through the head (built on first use, cached)
        self.guide = BlackBoxDB(BlackBoxDB.Config(query=c.start.query, cache_dir=c.start.cache_dir)) \
            if c.start.init == "inverter" else None
        self.unroll = Unroll(c.sampler.lr, c.sampler.checkpoint)
        self.screen = Screen(c.start.restarts, self.unroll)
        self.refine = Refine(c.sampler.lr)
        self.pixel = Pixel(c.pixel.steps, c.pixel.lr)
        self.fusion: Any = None  # dmb-multi's fusion phase (adversary.feature.fusion.Fusion)

    def plan(self, iterations: int) -> list[tuple[int, int]]:
        """(sampler steps, Adam steps) per phase for `iterations` sampler runs (0 steps: refinement)."""
        s = self.config.sampler
        return step_plan(iterations, s.steps, s.coarse_steps, s.coarse_share, self.config.refine.share)

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> FeatureResult:
        prior = require_prior(self.name, case)
        self.check_access(case)
        fit = self.open_fit(features, case, prior)
        v0 = self.initial_latents(fit)
        if self.config.variant == "guidance":
            Guided(self.config.sampler.lr, max(1, self.config.iterations // fit.steps))(fit, v0)
        else:
            self.sample_and_refine(fit, v0)
        x = fit.best.x.float()
        x = self.fusion.finish(fit, x, self.pixel) if self.fusion else self.pixel(fit, x)
        with torch.no_grad():
            loss = feature_loss(case.head(x).float(), fit.z, fit.mask).cpu()  # what the returned images score
        return FeatureResult(x, loss, fit.trace.flush(), {**fit.info, "adam_steps": fit.plan_run})

    def open_fit(self, features: torch.Tensor, case: WhiteBoxCase, prior: Any) -> SamplerFit:
        c = self.config
        fit = SamplerFit.open(features, case, prior, c.lambda_s, c.sampler.amp, c.sampler.check_every)
        fit.cond, fit.steps, fit.cfg_scale = self.condition(prior), c.sampler.steps, c.sampler.cfg_scale
        prior.compile_mode = None if c.sampler.compile == "off" else c.sampler.compile
        if c.text_prior.text is not None:
            fit.text = (c.text_prior.lambda_txt, c.text_prior.alpha)
        return fit

    def condition(self, prior: Any) -> torch.Tensor | None:
        """The text embedding, once per batch; the empty prompt for a conditional prior."""
        text = self.config.text_prior.text
        if text is not None and not prior.conditional:
            raise SplitleakError("--text needs a text-conditioned prior (a UNet2DConditionModel with a text "
                                 "encoder); this prior is unconditional")
        return prior.encode_text([text or ""]) if prior.conditional else None

    def draw(self, fit: SamplerFit, batch: int, groups: list[list[int]] | None = None) -> torch.Tensor:
        """Initial latents: standard normal, one per frame, from the case's seed."""
        gen = torch.Generator().manual_seed(fit.case.seed)
        return torch.randn((batch, *fit.prior.latent_shape), generator=gen)

    def initial_latents(self, fit: SamplerFit) -> torch.Tensor:
        """The batch's first initial latents: draws, or (init="inverter") the inverter's guesses."""
        batch = fit.z.shape[0]
        if self.guide is None:
            return self.draw(fit, batch, fit.groups).to(fit.case.device, fit.prior.dtype)
        model, _ = self.guide.inverter(as_blackbox(fit.case), tuple(fit.z.shape[1:]), fit.prior)
        with torch.no_grad():
            latent = torch.cat([model(chunk) for chunk in fit.z.split(self.guide.config.inverter.batch)])
            return fit.prior.invert(latent.to(fit.prior.dtype), steps=fit.steps, text=fit.cond)

    def sample_and_refine(self, fit: SamplerFit, v0: torch.Tensor) -> None:
        """Screen (with restarts), unroll the sampler phases, then refine the sampled latent."""
        plan = self.plan(self.config.iterations)
        if self.screen.applies(plan, fit.steps):
            v0, plan = self.screen(fit, v0, plan[0], lambda n, groups: self.draw(fit, n, groups)), plan[1:]
        _, _, latent = self.unroll(fit, v0, [p for p in plan if p[0]])
        refine_steps = sum(n for steps, n in plan if not steps)
        fit.plan_run.extend((0, n) for steps, n in plan if not steps)
        if refine_steps:
            latent = latent.clone()
            self.refine(fit, self.fusion.before_refine(fit, latent) if self.fusion else latent, refine_steps)
