"""DMB: diffusion-model-based white-box inversion ("Unlocking Visual Secrets", Algorithm 1).

Optimise the sampler's initial latent v. Each iteration normalises it per frame,
v_n = (v - mean(v)) / std(v), runs K deterministic DDIM steps from v_n, decodes, and scores
    mean((F1(D(S(v_n))) - z)^2) / mean(z^2) + lambda_s * TV(D(S(v_n)))  [+ lambda_txt * L_txt]
back-propagating through the whole unrolled sampler; Adam on v (paper: lr 0.1, 1,500
iterations, K = 20). With gradient checkpointing every UNet call is recomputed in backward, so
activation memory does not grow with K. `checkpoint=None` (auto) turns it on on CUDA, and on
CPU only when the unroll's activations would pass CPU_ACTIVATION_BUDGET (measured with one
UNet call): on CPU the recomputation roughly doubles the time of an iteration while small
priors need little memory. On CUDA the forward runs under bf16 autocast (fp16 where bf16 is
missing). The frame each iteration
produces is scored, and the best one per frame (lowest feature loss) is returned.

Coarse-to-fine sampler steps (`coarse_steps` k, `coarse_share` f): deterministic DDIM
discretises one probability-flow ODE, so the k-step sampler maps v to nearly the image the
K-step one does, at k/K of the cost. A share f of the budget (`iterations` runs of the K-step
sampler) is spent at k steps, which buys f * iterations * K / k Adam steps, and the rest at K;
the final v is scored through the K-step sampler. `coarse_steps=0` is Algorithm 1 as written.
The defaults are measured (benchmarks/feature_inversion.py; see COARSE_STEPS).

Refinement (`refine_share` r): the sampler's image is where the prior puts the frame, but the
prior is small and the sampler's range narrow, so at shallow splits the features ask for detail
it cannot make. A share r of the budget is spent last on Adam steps on the sampled latent
itself, x = D(w) from w = S(v_n) of the final v, as DB optimises it (r * iterations * K steps,
one decoder pass each instead of a K-step sampler run). DMB's sample is the start DB lacks.
Measured (benchmarks/feature_inversion.py, 100 K=10 sampler runs, 4 held-out bikes frames): r = 0.2
took resnet18 layer1 (random) from 21.1 to 23.9 dB and layer3 (trained) from 16.0 to 17.8, over
DB's 21.6 / 14.9 at the same iterations and 23.1 / 17.0 given DMB's wall time (760-1000 Adam
steps from a random latent); DMB beat the time-matched DB on PSNR on 8 of 10 heads (not resnet18
layer1 trained, 22.4 against 22.5, nor mobilenet/1, 24.6 against 24.7). r = 0.4 added 0.2-0.4 dB
at 1.2-1.6x the wall time. `refine_share=0` with `coarse_steps=0` and `pixel_steps=0` is
Algorithm 1 as written.

Restarts (`restarts` R): where the features leave room, the sampler's optimum depends on the initial
latent: on a trained resnet18 at layer3, a frame fit to a feature loss of 0.002-0.005 can sit at 11 dB
while the next one, at 0.0003, reaches 19. The feature loss tells the two apart, so R initial latents per
frame (the usual one, then fresh draws) take the coarse phase together as one batch, and each frame goes
on with the one whose K-step image fits best. Measured (benchmarks/feature_inversion.py heads, 16 held-out
bikes frames 200..215, 100 K=10 sampler runs): R = 4 took resnet18 layer3 (trained) from 14.85 to
18.15 dB, where 200 sampler runs at R = 1 made 16.02 in less time (136 s against 167 s for the 16
frames) and the best of 4 whole runs by feature loss 17.16; R = 2 made 16.65. On the other heads R = 4
added 0.2-0.4 dB (layer1 random 25.49 -> 25.71, trained 25.14 -> 25.43, layer2 trained 22.10 -> 22.28,
layer3 random 19.67 -> 20.05), at about 2x the wall time (2-2.6x measured). Without a coarse phase
(Algorithm 1 as written) there is nothing to screen in and R is ignored.

Pixel phase (`pixel_steps`, `pixel_lr`): last, DO's steps on the pixels of the best image, at the
head's input size (x = sigmoid(w) from its logits, cosine lr from pixel_lr, DO's TV weight). The
prior's decoder cannot make every image: on the benchmark's small VAE, DB and DMB level off near
28 dB at conv1 where DO reached 34-36, and the features ask for more detail at any split. DO
alone lacks a start (from noise it makes 13 dB at layer1); the prior's image is one. Measured
(4 held-out bikes frames, PSNR at 64, after the default DMB plan): resnet18 conv1 (trained)
27.6 -> 50.9 dB, layer1 (random) 23.8 -> 26.1 (200 steps at lr 0.1), layer3 (trained)
17.7 -> 18.2 / 18.7 at 200 / 400 steps, mobilenet/3 19.6 -> 19.7 / 20.0; lr 0.1 overshot on
mobilenet (19.0), 0.02 was slower. At 400 steps the phase costs 2-10 s per frame, against
23-37 s for the sampler phases. `pixel_steps=0` leaves it out.

Text prior: with `text`, a text-conditioned UNet is conditioned on the prompt's embedding and
the negentropy term L_txt = -E[(1/alpha^2) log cosh^2(alpha v_n)] is added (1 <= alpha <= 2).

`variant="guidance"`: the cheaper per-step guidance. v is not optimised: one sampling run
from fixed noise, and at each of the K steps the predicted clean latent x0 is moved by
iterations // K Adam steps on the same objective, through the decoder only (no gradient
through the UNet, no unrolling), before the DDIM update continues from it.

`init="inverter"`: the first initial latent of each frame is a learned guess instead of a draw.
A white-box adversary may query its own head, so it trains bb-db's inverter on query pairs from
`query_source` (cached on disk like every inverter), maps the features to a clean VAE latent
with it and DDIM-inverts that to the sampler's start; with restarts, the other candidates are
fresh draws and the screening picks per frame. Measured by benchmarks/feature_inversion.py
--rows init --frames 16 (bikes 200..215, 100 K=10 sampler runs, restarts 4, queries bikes 0..174,
PSNR @128 against the default's): resnet18 random layer1 / 2 / 3 +0.85 / +0.27 / +0.27 dB,
trained +0.14 / +0.14 / +0.85 (layer3: the frames the draws left at 11.8 and 16.3 dB came to 18.7
and 19.7), mobilenet_v3_small 1 / 3 +0.01 / +1.17, conv1 +-0.00; about 10 s of inverter training
per head, once. Not the default: it needs footage like the victim's to query with.

Weights follow DO's loss scale (see adversary.feature.losses): lambda_s = 0.01, lambda_txt = 0.1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from adversary.feature.base import WhiteBoxCase
from adversary.feature.blackbox import DEFAULT_QUERY_SOURCE, BlackBoxDB, as_blackbox
from adversary.feature.db import Best, PriorAttack
from adversary.feature.do import descend_pixels, feature_loss
from adversary.feature.losses import LAMBDA_S, LAMBDA_TXT, negentropy, normalise
from adversary.registry import register
from splitleak.errors import SplitleakError

VARIANTS = ("unroll", "guidance")
INITS = ("noise", "inverter")
# benchmarks/feature_inversion.py (100 K=10 sampler runs, 4 held-out bikes frames): 2 steps for half
# the budget beat Algorithm 1 as written on all 10 heads, e.g. resnet18 layer3 (trained victim)
# 16.0 dB against 12.6 and layer1 (random) 21.1 against 19.6, at 1.3x its wall time
COARSE_STEPS, COARSE_SHARE = 2, 0.5
REFINE_SHARE = 0.2  # share of the budget spent refining the sampled latent (measured: see the module docstring)
PIXEL_STEPS, PIXEL_LR = 400, 0.05  # the pixel phase (measured: see the module docstring)
PIXEL_FINAL_LR = 0.01  # its cosine ends at this share of PIXEL_LR, as DO's does
PIXEL_EPS = 1e-3  # images are clamped into [eps, 1 - eps] before the logit
RESTARTS = 4  # initial latents per frame screened in the coarse phase (measured: see the module docstring)
CPU_ACTIVATION_BUDGET = 2 << 30  # bytes of saved activations a CPU unroll may keep without checkpointing


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


@register
class DiffusionBased(PriorAttack):
    """Optimise the initial noise of a short DDIM run so the decoded frame matches the features."""

    name: ClassVar[str] = "dmb"

    def __init__(self, iterations: int = 1500, lr: float = 0.1, steps: int = 20, lambda_s: float = LAMBDA_S,
                 text: str | None = None, lambda_txt: float = LAMBDA_TXT, alpha: float = 1.0,
                 cfg_scale: float = 1.0, variant: str = "unroll", checkpoint: bool | None = None,
                 amp: bool = True, coarse_steps: int = COARSE_STEPS, coarse_share: float = COARSE_SHARE,
                 refine_share: float = REFINE_SHARE, pixel_steps: int = PIXEL_STEPS,
                 pixel_lr: float = PIXEL_LR, restarts: int = RESTARTS, init: str = "noise",
                 query_source: str = DEFAULT_QUERY_SOURCE, query_frames: int = 250,
                 cache_dir: str | None = None) -> None:
        super().__init__()
        self.last_latents: torch.Tensor | None = None  # v_n after the last step (unroll variant)
        if iterations < 1 or steps < 1:
            raise SplitleakError(f"iterations and steps must be >= 1, got {iterations} and {steps}")
        if variant not in VARIANTS:
            raise SplitleakError(f"unknown dmb variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        if not 1.0 <= alpha <= 2.0:
            raise SplitleakError(f"the negentropy's alpha must be in [1, 2], got {alpha}")
        if coarse_steps < 0 or not 0.0 <= coarse_share <= 1.0 or not 0.0 <= refine_share < 1.0:
            raise SplitleakError(f"coarse_steps must be >= 0, coarse_share in [0, 1] and refine_share in [0, 1), "
                                 f"got {coarse_steps}, {coarse_share} and {refine_share}")
        if restarts < 1:
            raise SplitleakError(f"restarts must be >= 1, got {restarts}")
        if init not in INITS:
            raise SplitleakError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        self.init = init
        # init="inverter": bb-db's inverter, trained on query pairs through the head (built and kept on first use)
        self.guide = BlackBoxDB(query_source=query_source, query_frames=query_frames, cache_dir=cache_dir) \
            if init == "inverter" else None
        if pixel_steps < 0 or pixel_lr <= 0:
            raise SplitleakError(f"pixel_steps must be >= 0 and pixel_lr > 0, got {pixel_steps} and {pixel_lr}")
        if text is not None and not str(text).strip():
            raise SplitleakError("--text is empty")
        self.pixel_steps, self.pixel_lr = int(pixel_steps), float(pixel_lr)
        self.iterations, self.lr, self.steps, self.lambda_s = int(iterations), float(lr), int(steps), float(lambda_s)
        self.text, self.lambda_txt, self.alpha = text, float(lambda_txt), float(alpha)
        self.cfg_scale, self.variant, self.amp = float(cfg_scale), variant, bool(amp)
        self.checkpoint = None if checkpoint is None else bool(checkpoint)
        self.checkpointed: bool | None = None  # what the last unrolled run chose
        self.coarse_steps, self.coarse_share = int(coarse_steps), float(coarse_share)
        self.refine_share, self.restarts = float(refine_share), int(restarts)
        self.adam_steps: list[tuple[int, int]] = []  # (sampler steps, Adam steps) of the last run, in order;
        # 0 sampler steps: the refinement of the sampled latent

    def config(self) -> dict[str, object]:
        return {"iterations": self.iterations, "lr": self.lr, "steps": self.steps, "lambda_s": self.lambda_s,
                "text": self.text, "lambda_txt": self.lambda_txt if self.text is not None else 0.0,
                "alpha": self.alpha, "cfg_scale": self.cfg_scale, "variant": self.variant,
                "checkpoint": "auto" if self.checkpoint is None else self.checkpoint,
                "checkpointed": self.checkpointed, "amp": self.amp, "coarse_steps": self.coarse_steps,
                "coarse_share": self.coarse_share, "refine_share": self.refine_share, "adam_steps": self.adam_steps,
                "pixel_steps": self.pixel_steps, "pixel_lr": self.pixel_lr, "restarts": self.restarts,
                "init": self.init, **({"inverter": {k: v for k, v in self.guide.config().items()
                                                   if k in ("query_source", "query_frames", "training")}}
                                      if self.guide else {}),
                "optimizer": "adam",
                "sampler": "ddim eta=0",
                "variable": "initial latent v, normalised per frame", "tv": "mean-abs",
                "loss_scale": "paper weights x 0.01 (feature loss normalised by mean(z^2))"}

    # ----- hooks for subclasses ------------------------------------------------------------

    def initial_noise(self, batch: int, prior: Any, case: WhiteBoxCase) -> torch.Tensor:
        """v at the start: standard normal, one draw per frame, from the case's seed."""
        gen = torch.Generator().manual_seed(case.seed)
        return torch.randn((batch, *prior.latent_shape), generator=gen)

    def initial_latents(self, z: torch.Tensor, prior: Any, case: WhiteBoxCase,
                        cond: torch.Tensor | None) -> torch.Tensor:
        """The batch's first initial latents: draws, or (init="inverter") the inverter's guesses."""
        if self.guide is None:
            return self.initial_noise(z.shape[0], prior, case).to(case.device, prior.dtype)
        bb = as_blackbox(case)
        model = self.guide.inverter(bb, tuple(z.shape[1:]), prior)
        with torch.no_grad():
            latent = torch.cat([model(chunk) for chunk in z.split(self.guide.batch)]).to(prior.dtype)
            return prior.invert(latent, steps=self.steps, text=cond)

    def latent_terms(self, v_n: torch.Tensor, case: WhiteBoxCase) -> dict[str, torch.Tensor]:
        """Weighted per-frame losses on v_n added to the objective (the text prior's negentropy)."""
        if self.text is None:
            return {}
        return {"txt": self.lambda_txt * negentropy(v_n, self.alpha)}

    # ----- the attack ----------------------------------------------------------------------

    def condition(self, prior: Any) -> torch.Tensor | None:
        """The text embedding, computed once per batch; the empty prompt for a conditional prior."""
        if self.text is not None and not prior.conditional:
            raise SplitleakError("--text needs a text-conditioned prior (a UNet2DConditionModel with a text "
                                 "encoder); this prior is unconditional")
        return prior.encode_text([self.text or ""]) if prior.conditional else None

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        prior = self.prior(case)
        z, mask = self.targets(features, case)
        cond, best, self.trace, self.adam_steps = self.condition(prior), Best(), {}, []
        v0 = self.initial_latents(z, prior, case, cond)
        self.optimise(v0, z, mask, case, prior, cond, best)
        x = self.finish(best.x.float(), z, mask, case)
        with torch.no_grad():
            self.last_loss = feature_loss(case.head(x).float(), z, mask).cpu()  # what the returned images score
        return x

    def finish(self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        """The pixel phase: `pixel_steps` DO steps on the best images x (at the head's input size)."""
        if not self.pixel_steps:
            return x.clamp(0, 1)
        w = torch.logit(x, eps=PIXEL_EPS)  # logit clamps x into [eps, 1 - eps] first
        w = descend_pixels(w, case.head, z, mask, self.pixel_steps, self.pixel_lr, self.lambda_s, PIXEL_FINAL_LR)
        return torch.sigmoid(w)

    def optimise(self, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase,
                 prior: Any, cond: torch.Tensor | None, best: Best) -> None:
        """Run the variant from the initial latents v0; `best` collects each frame's best image."""
        if self.variant == "guidance":
            self._guided(v0, z, mask, case, prior, cond, best)
            return
        v0, plan = self.screened(v0, z, mask, case, prior, cond, self.step_plan(self.iterations))
        self._unrolled(v0, z, mask, case, prior, cond, best, plan=plan)

    def screened(self, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase, prior: Any,
                 cond: torch.Tensor | None, plan: list[tuple[int, int]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """With restarts and a plan that opens with a coarse phase: (the screened latents, the rest of
        the plan); else (v0, plan) unchanged."""
        if self.restarts > 1 and 0 < plan[0][0] < self.steps:
            return self.screen(v0, z, mask, case, prior, cond, plan[0]), plan[1:]
        return v0, plan

    def screen(self, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase, prior: Any,
               cond: torch.Tensor | None, phase: tuple[int, int]) -> torch.Tensor:
        """Restarts: the coarse phase runs `restarts` initial latents per frame (v0 first, then fresh
        draws) as one batch; each frame keeps the one whose image through the K-step sampler fits its
        features best. Returns those latents (B, ...), normalised."""
        batch, r = v0.shape[0], self.restarts
        fresh = self.initial_noise(batch * r, prior, case)[batch:].to(v0)
        repeat = (r, *[1] * (z.dim() - 1))
        loss = self._unrolled(torch.cat([v0, fresh]), z.repeat(repeat), mask.repeat(repeat), case, prior, cond,
                              Best(), plan=[phase])
        pick = loss.view(r, batch).argmin(0)
        return self.last_latents.view(r, batch, *v0.shape[1:])[pick, torch.arange(batch)].clone()

    def _sample(self, prior: Any, v_n: torch.Tensor, cond: torch.Tensor | None, steps: int | None = None,
                **kwargs: Any) -> torch.Tensor:
        return prior.sample(v_n, steps=steps or self.steps, text=cond, cfg_scale=self.cfg_scale, **kwargs)

    def step_plan(self, iterations: int, coarse: bool = True, refine: bool = True) -> list[tuple[int, int]]:
        """(sampler steps, Adam steps) phases for a budget of `iterations` K-step sampler runs
        (`coarse=False`: all sampler runs at K steps); a last phase with 0 sampler steps is the
        refinement of the sampled latent (`refine=False`: none)."""
        refined = round(self.refine_share * iterations) if refine else 0
        runs = iterations - refined
        if not coarse or not self.coarse_steps or self.coarse_steps >= self.steps:
            plan = [(self.steps, runs)]
        else:
            spent = round(self.coarse_share * runs)
            plan = [(self.coarse_steps, spent * self.steps // self.coarse_steps), (self.steps, runs - spent)]
        plan.append((0, refined * self.steps))
        return [(steps, n) for steps, n in plan if n > 0]

    def use_checkpoint(self, prior: Any, v: torch.Tensor, cond: torch.Tensor | None, case: WhiteBoxCase) -> bool:
        """The checkpoint option, or auto: on for CUDA, on CPU only past CPU_ACTIVATION_BUDGET."""
        if self.checkpoint is not None:
            return self.checkpoint
        if case.device.type != "cpu":
            return True
        return self.steps * activation_bytes(prior, v, cond) > CPU_ACTIVATION_BUDGET

    def _unrolled(self, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase,
                  prior: Any, cond: torch.Tensor | None, best: Best, iterations: int | None = None,
                  owner: torch.Tensor | None = None, coarse: bool = True, refine: bool = True,
                  plan: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """Adam on v through the unrolled sampler, then (the plan's 0-step phase) on the sampled
        latent itself. With `owner` (frame -> row of v0), fewer latents than frames: frame i is
        scored on the image of latent owner[i]. `plan` overrides the step plan. `last_latents` is
        v_n, the sampler's input. Returns the per-frame feature loss of the final v's K-step image."""
        if plan is None:
            plan = self.step_plan(self.iterations if iterations is None else iterations, coarse, refine)
        self.adam_steps = self.adam_steps + plan
        self.checkpointed = self.use_checkpoint(prior, v0, cond, case)
        v = v0.requires_grad_(True)
        opt = torch.optim.Adam([v], lr=self.lr)
        schedule = [steps for steps, n in plan if steps for _ in range(n)]
        for step, steps in enumerate(schedule + [self.steps]):  # the last pass only scores the final v
            training = step < len(schedule)
            with torch.set_grad_enabled(training), self.autocast(case, self.amp):
                v_n = normalise(v)
                latent = self._sample(prior, v_n, cond, steps, checkpoint=self.checkpointed and training)
                images = prior.decode(latent)
                loss, feat, x = self.image_loss(images if owner is None else images[owner], z, mask, case)
                terms = self.latent_terms(v_n.float() if owner is None else v_n.float()[owner], case)
                total = loss + sum(terms.values()) if terms else loss
            best.update(feat, x)
            self.log(feature=feat, total=total, **terms)
            if training:
                (v.grad,) = torch.autograd.grad(total.sum(), v)
                opt.step()
        self.last_latents = v_n.detach()
        refine_steps = sum(n for steps, n in plan if not steps)
        if refine_steps:
            latent = latent.detach() if owner is None else latent.detach()[owner]
            self.refine(latent.clone(), z, mask, case, prior, best, refine_steps)
        return feat.detach()

    def refine(self, latent: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase, prior: Any,
               best: Best, steps: int) -> None:
        """The refinement phase: `steps` Adam steps on the sampled latent, as DB takes them."""
        self.optimise_latent(latent, z, mask, case, prior, best, steps)

    def _guided(self, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase,
                prior: Any, cond: torch.Tensor | None, best: Best) -> None:
        inner = max(1, self.iterations // self.steps)

        def guide(x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            y = x0.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([y], lr=self.lr)
            for _ in range(inner):
                with self.autocast(case, self.amp):
                    loss, feat, x = self.image_loss(prior.decode(y), z, mask, case)
                best.update(feat, x)
                self.log(feature=feat, total=loss)
                (y.grad,) = torch.autograd.grad(loss.sum(), y)
                opt.step()
            return x0 - y.detach()

        with torch.no_grad():
            latent = self._sample(prior, normalise(v0), cond, guidance=guide, checkpoint=False)
            with self.autocast(case, self.amp):
                _, feat, x = self.image_loss(prior.decode(latent), z, mask, case)
        best.update(feat, x)
        self.log(feature=feat, total=feat)
