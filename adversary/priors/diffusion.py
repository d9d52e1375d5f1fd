"""The diffusion prior every prior-based attack shares: UNet + DDIM (+ VAE, + text encoder).

`DiffusionPrior.sample` runs a deterministic DDIM sampler from an initial noise latent v and
is differentiable w.r.t. v (the paper's Algorithm 1 back-propagates through it); each UNet
call is wrapped in non-reentrant gradient checkpointing, so memory stays O(1) in the number
of steps whatever mode the modules are in. `guidance=` gives the cheaper per-step variant.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import diffusers
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from splitleak.errors import SplitleakError

Guidance = Callable[[Tensor, Tensor], Tensor]


@functools.lru_cache(maxsize=64)
def _ddim_timesteps_cached(config_items: tuple, steps: int) -> tuple[tuple[int, int], ...]:
    scheduler = diffusers.DDIMScheduler.from_config(dict(config_items))
    scheduler.set_timesteps(steps)
    jump = scheduler.config.num_train_timesteps // steps
    return tuple((t, t - jump) for t in scheduler.timesteps.tolist())


def _ddim_timesteps(config: object, steps: int) -> tuple[tuple[int, int], ...]:
    """(t, t_prev) of diffusers' DDIM schedule for a scheduler config (built once per config and steps)."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dict(config).items()))
    return _ddim_timesteps_cached(items, steps)


def _split_coefficients(kind: str, alpha: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """((x0 from x, x0 from out), (eps from x, eps from out)): the prediction type's linear map from
    the noisy sample x and the model output to the clean-sample and noise predictions at alpha."""
    a, b = math.sqrt(alpha), math.sqrt(1 - alpha)
    if kind == "epsilon":
        return (1 / a, -b / a), (0.0, 1.0)
    if kind == "sample":
        return (0.0, 1.0), (1 / b, -a / b)
    if kind == "v_prediction":
        return (a, -b), (b, a)
    raise SplitleakError(f"unsupported prediction type {kind!r}")


@dataclass(frozen=True)
class DDIMStep:
    """One deterministic DDIM step t -> t_prev: its alphas and, for eta = 0 without clipping, the
    coefficients of x_prev = x_coef * x + out_coef * model output."""

    t: int
    t_prev: int
    alpha: float
    alpha_prev: float
    x_coef: float
    out_coef: float

    @classmethod
    def of(cls, t: int, t_prev: int, alpha: float, alpha_prev: float, kind: str) -> "DDIMStep":
        (x0_x, x0_out), (eps_x, eps_out) = _split_coefficients(kind, alpha)
        a, b = math.sqrt(alpha_prev), math.sqrt(1 - alpha_prev)  # x_prev = a x0 + b eps
        return cls(t, t_prev, alpha, alpha_prev, a * x0_x + b * eps_x, a * x0_out + b * eps_out)


@dataclass
class DiffusionPrior:
    """A pixel prior (vae None: the diffusion variable is the image in [-1, 1]) or a latent one."""

    unet: diffusers.UNet2DModel | diffusers.UNet2DConditionModel
    scheduler: diffusers.DDIMScheduler
    vae: diffusers.AutoencoderKL | diffusers.AutoencoderTiny | None  # None: a pixel-space prior
    text_encoder: object | None = None  # callable prompts -> (B, L, D) embeddings
    image_size: int = 64  # pixel side of decoded images
    latent_shape: tuple[int, int, int] | None = None  # (C, h, w); None: derived from unet / vae
    scaling_factor: float | None = None  # vae latent scaling; None: the vae's config (1.0 for pixels)
    compile_mode: str | None = None  # torch.compile the UNet in this mode (e.g. "reduce-overhead"); CUDA only
    _timestep_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.scheduler, diffusers.DDIMScheduler):
            self.scheduler = diffusers.DDIMScheduler.from_config(self.scheduler.config)
        if self.scaling_factor is None:
            self.scaling_factor = float(getattr(self.vae.config, "scaling_factor", 1.0)) if self.vae else 1.0
        if self.latent_shape is None:
            side = self.image_size // self.vae_scale
            self.latent_shape = (int(self.unet.config.in_channels), side, side)
        self.latent_shape = tuple(int(n) for n in self.latent_shape)
        for module in (self.unet, self.vae, self.text_encoder):
            if isinstance(module, torch.nn.Module):
                module.eval().requires_grad_(False)

    @property
    def conditional(self) -> bool:
        """True when the UNet takes encoder_hidden_states (text conditioning)."""
        return isinstance(self.unet, diffusers.UNet2DConditionModel)

    @property
    def vae_scale(self) -> int:
        """Pixel side / latent side (1 for a pixel prior)."""
        if self.vae is None:
            return 1
        config = self.vae.config
        blocks = getattr(config, "block_out_channels", None) or config.encoder_block_out_channels
        return 2 ** (len(blocks) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> DiffusionPrior:
        """Move (and optionally cast) every component; returns self."""
        # dtype only when casting: diffusers' ModelMixin.to warns that its fp32 modules may be cast
        # whenever a `dtype` keyword is present, even dtype=None (the warning at every prior load)
        cast = {} if dtype is None else {"dtype": dtype}
        for module in (self.unet, self.vae, self.text_encoder):
            if isinstance(module, torch.nn.Module):
                module.to(device=device, **cast)
            elif module is not None and hasattr(module, "to"):
                module.to(device, dtype)
        self._timestep_cache.clear()
        return self

    # ----- pixels <-> latents -------------------------------------------------------------

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, *latent_shape) -> images (B, 3, H, W) in [0, 1]; differentiable."""
        if self.vae is None:
            images = latents
        else:
            latents = latents.to(next(self.vae.parameters()).dtype)
            images = self.vae.decode(latents / self.scaling_factor).sample
        return ((images + 1) / 2).clamp(0, 1)

    def encode(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] -> latents: the posterior mean, scaled."""
        x = images * 2 - 1
        if self.vae is None:
            return x
        x = x.to(next(self.vae.parameters()).dtype)
        if isinstance(self.vae, diffusers.AutoencoderTiny):
            return self.vae.encode(x).latents * self.scaling_factor
        return self.vae.encode(x).latent_dist.mean * self.scaling_factor

    def encode_text(self, prompts: list[str] | str) -> Tensor | None:
        """Conditioning (B, L, D) for a conditional UNet; None for an unconditional prior."""
        if not self.conditional:
            return None
        if self.text_encoder is None:
            raise SplitleakError("this prior's UNet is text-conditioned but it has no text encoder")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        with torch.no_grad():
            return self.text_encoder(prompts).to(self.dtype)

    def _condition(self, text: object, batch: int) -> Tensor | None:
        if not self.conditional:
            return None
        if text is None:
            text = ""
        cond = text if isinstance(text, Tensor) else self.encode_text(text)
        if cond.shape[0] == 1 and batch > 1:
            cond = cond.expand(batch, *cond.shape[1:])
        if cond.shape[0] != batch:
            raise SplitleakError(f"text conditioning has batch {cond.shape[0]}, latents have {batch}")
        return cond.to(device=self.device, dtype=self.dtype)

    # ----- sampling -----------------------------------------------------------------------

    def timesteps(self, steps: int) -> list[tuple[int, int]]:
        """(t, t_prev) pairs of the DDIM schedule for `steps` steps (t_prev < 0: the end)."""
        if steps < 1:
            raise SplitleakError(f"steps must be >= 1, got {steps}")
        return list(_ddim_timesteps(self.scheduler.config, steps))

    def ddim_steps(self, steps: int) -> list[DDIMStep]:
        """The `steps`-step schedule with each step's coefficients as Python floats (computed once per
        schedule, in float64): the sampler's loop then makes no tensor of its own and reads nothing back."""
        key = ("steps", steps)
        if key not in self._timestep_cache:
            alphas = self.scheduler.alphas_cumprod.double().tolist()
            final = float(self.scheduler.final_alpha_cumprod)
            kind = self.scheduler.config.prediction_type
            self._timestep_cache[key] = [DDIMStep.of(t, t_prev, alphas[t], alphas[t_prev] if t_prev >= 0 else final,
                                                     kind) for t, t_prev in self.timesteps(steps)]
        return self._timestep_cache[key]

    def _timestep_tensor(self, t: int, batch: int, device: torch.device) -> Tensor:
        """The UNet's timestep argument (batch,), made once per (t, batch, device)."""
        key = ("t", t, batch, device)
        if key not in self._timestep_cache:
            self._timestep_cache[key] = torch.full((batch,), t, device=device, dtype=torch.long)
        return self._timestep_cache[key]

    def _unet(self) -> Callable[..., object]:
        """The UNet, compiled with `compile_mode` on CUDA (once); as it is elsewhere."""
        if self.compile_mode is None or self.device.type != "cuda":
            return self.unet
        if self.compile_mode not in self._compiled:
            self._compiled[self.compile_mode] = torch.compile(self.unet, mode=self.compile_mode)
        return self._compiled[self.compile_mode]

    def _model_output(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            return self._unet()(x, t).sample
        return self._unet()(x, t, encoder_hidden_states=cond).sample

    def _predict(self, x: Tensor, t: int, cond: Tensor | None, cfg_pair: Tensor | None,
                 cfg_scale: float, use_checkpoint: bool) -> Tensor:
        tt = self._timestep_tensor(t, x.shape[0], x.device)
        call = (lambda *args: checkpoint(self._model_output, *args, use_reentrant=False)) if use_checkpoint \
            else self._model_output
        if cfg_pair is None:
            return call(x, tt, cond)
        out = call(torch.cat([x, x]), self._timestep_tensor(t, 2 * x.shape[0], x.device), cfg_pair)
        uncond, conditioned = out.chunk(2)
        return uncond + cfg_scale * (conditioned - uncond)

    def _split(self, out: Tensor, x: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
        """Model output -> (x0 prediction, epsilon) under the scheduler's prediction type."""
        (x0_x, x0_out), (eps_x, eps_out) = _split_coefficients(self.scheduler.config.prediction_type, alpha)
        return x * x0_x + out * x0_out, x * eps_x + out * eps_out

    def sample(self, v: Tensor, steps: int = 20, text: object = None, guidance: Guidance | None = None,
               checkpoint: bool = True, eta: float = 0.0, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None, last: int | None = None) -> Tensor:
        """Deterministic DDIM (eta=0) from noise latent v (B, *latent_shape) -> clean latent.

        Differentiable w.r.t. v (unrolled; with `checkpoint` every UNet call is recomputed in
        backward, so activations are not kept). `text`: prompts, a prompt, or an embedding
        tensor (conditional UNets; default the empty prompt; an unconditional prior ignores it).
        `cfg_scale` > 1: classifier-free guidance against the empty prompt.
        `last`: run only the schedule's last `last` steps (v is then the latent at that point, e.g.
        from `invert(..., upto=last)`).
        `guidance(x0_pred, t)`: the per-step variant, no unrolling: the UNet runs under no_grad
        and each step's predicted clean sample is moved by minus what guidance returns (a
        scaled gradient of the attack's loss w.r.t. x0_pred; guidance runs with autograd
        enabled); the result is then detached.
        Without guidance, clipping or eta, a step is x <- a_t x + b_t * model output, with a_t, b_t
        precomputed floats: three tensor ops besides the UNet, none of them a read-back.
        """
        if tuple(v.shape[1:]) != self.latent_shape:
            raise SplitleakError(f"latent shape {tuple(v.shape[1:])} != prior's {self.latent_shape}")
        if last is not None and not 1 <= last <= steps:
            raise SplitleakError(f"last must be between 1 and steps ({steps}), got {last}")
        batch = v.shape[0]
        cond = self._condition(text, batch)
        cfg_pair = None
        if cond is not None and cfg_scale != 1.0:
            cfg_pair = torch.cat([self._condition("", batch), cond])
        x = v.to(self.dtype)
        unrolled = guidance is None
        clip = self.scheduler.config.clip_sample
        linear = unrolled and not clip and eta == 0
        schedule = self.ddim_steps(steps)
        for step in schedule[len(schedule) - (last or steps):]:
            with torch.set_grad_enabled(unrolled and torch.is_grad_enabled()):
                out = self._predict(x, step.t, cond, cfg_pair, cfg_scale, checkpoint and unrolled).to(x.dtype)
            if linear:
                x = torch.add(x * step.x_coef, out, alpha=step.out_coef)
                continue
            alpha, alpha_prev = step.alpha, step.alpha_prev
            x0, eps = self._split(out, x, alpha)
            if clip:
                limit = self.scheduler.config.clip_sample_range
                x0 = x0.clamp(-limit, limit)
                eps = (x - math.sqrt(alpha) * x0) / math.sqrt(1 - alpha)
            if guidance is not None:
                with torch.enable_grad():
                    x0 = (x0 - guidance(x0.detach(), torch.tensor(step.t))).detach()
                eps = (x - math.sqrt(alpha) * x0) / math.sqrt(1 - alpha)
            variance = (1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)
            sigma = eta * math.sqrt(max(variance, 0.0))
            x = math.sqrt(alpha_prev) * x0 + math.sqrt(max(1 - alpha_prev - sigma**2, 0.0)) * eps
            if eta > 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + sigma * noise
            if not unrolled:
                x = x.detach()
        return x

    @torch.no_grad()
    def invert(self, latents: Tensor, steps: int = 20, upto: int | None = None, text: object = None) -> Tensor:
        """Deterministic DDIM inversion: clean latents -> the latents `upto` steps (default all) back
        up the `steps`-step schedule, from which `sample(..., last=upto)` returns near them. Each
        step reuses the model output at its lower timestep (the usual approximation)."""
        if upto is not None and not 1 <= upto <= steps:
            raise SplitleakError(f"upto must be between 1 and steps ({steps}), got {upto}")
        cond = self._condition(text, latents.shape[0])
        x = latents.to(self.dtype)
        for step in self.ddim_steps(steps)[::-1][: steps if upto is None else upto]:
            out = self._predict(x, max(step.t_prev, 0), cond, None, 1.0, False)
            x0, eps = self._split(out.to(x.dtype), x, step.alpha_prev)
            x = math.sqrt(step.alpha) * x0 + math.sqrt(1 - step.alpha) * eps
        return x

    def random_latents(self, batch: int, seed: int | None = None) -> Tensor:
        """Standard normal initial latents (batch, *latent_shape) on the prior's device."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn((batch, *self.latent_shape), generator=generator).to(self.device, self.dtype)

    def describe(self) -> dict[str, object]:
        """A JSON-able summary for run configs."""
        params = sum(p.numel() for p in self.unet.parameters())
        return {"kind": "latent" if self.vae is not None else "pixel", "image_size": self.image_size,
                "latent_shape": list(self.latent_shape), "conditional": self.conditional,
                "scaling_factor": self.scaling_factor, "unet_params": params,
                "prediction_type": self.scheduler.config.prediction_type,
                "unet_mb": round(params * 4 / math.pow(2, 20), 2)}


def make_tiny_prior(image_size: int = 32, latent: bool = True, conditional: bool = False,
                    seed: int = 0) -> DiffusionPrior:
    """A randomly initialised tiny prior (small UNet, tiny 4x VAE) for tests."""
    from adversary.priors.build import build_text_encoder, build_unet, build_vae, make_scheduler

    torch.manual_seed(seed)
    vae = build_vae(channels=(16, 32, 32), latent_channels=4) if latent else None
    side = image_size // 4 if latent else image_size
    in_ch = 4 if latent else 3
    text_encoder = build_text_encoder(dim=32) if conditional else None
    unet = build_unet(side, in_ch, widths=(16, 32), cross_attention_dim=32 if conditional else None)
    return DiffusionPrior(unet=unet, scheduler=make_scheduler(pixel=not latent), vae=vae, text_encoder=text_encoder,
                          image_size=image_size)
