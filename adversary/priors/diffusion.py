"""The diffusion prior every prior-based attack shares: UNet + DDIM (+ VAE, + text encoder).

`DiffusionPrior.sample` runs a deterministic DDIM sampler from an initial noise latent v and
is differentiable w.r.t. v (the paper's Algorithm 1 back-propagates through it); each UNet
call is wrapped in non-reentrant gradient checkpointing, so memory stays O(1) in the number
of steps whatever mode the modules are in. `guidance=` gives the cheaper per-step variant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import diffusers
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from splitleak.errors import SplitleakError

Guidance = Callable[[Tensor, Tensor], Tensor]


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
        for module in (self.unet, self.vae, self.text_encoder):
            if isinstance(module, torch.nn.Module):
                module.to(device=device, dtype=dtype)
            elif module is not None and hasattr(module, "to"):
                module.to(device, dtype)
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
        scheduler = diffusers.DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        jump = scheduler.config.num_train_timesteps // steps
        return [(int(t), int(t) - jump) for t in scheduler.timesteps]

    def _alpha_table(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(alphas_cumprod per timestep, the alpha past the schedule's end) on `device`, float32."""
        alphas = self.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        return alphas, torch.tensor(float(self.scheduler.final_alpha_cumprod), device=device)

    def _model_output(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            return self.unet(x, t).sample
        return self.unet(x, t, encoder_hidden_states=cond).sample

    def _predict(self, x: Tensor, t: int, cond: Tensor | None, cfg_pair: Tensor | None,
                 cfg_scale: float, use_checkpoint: bool) -> Tensor:
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        call = (lambda *args: checkpoint(self._model_output, *args, use_reentrant=False)) if use_checkpoint \
            else self._model_output
        if cfg_pair is None:
            return call(x, tt, cond)
        out = call(torch.cat([x, x]), torch.cat([tt, tt]), cfg_pair)
        uncond, conditioned = out.chunk(2)
        return uncond + cfg_scale * (conditioned - uncond)

    def _split(self, out: Tensor, x: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Model output -> (x0 prediction, epsilon) under the scheduler's prediction type."""
        kind = self.scheduler.config.prediction_type
        a, b = alpha.sqrt(), (1 - alpha).sqrt()
        if kind == "epsilon":
            return (x - b * out) / a, out
        if kind == "sample":
            return out, (x - a * out) / b
        if kind == "v_prediction":
            return a * x - b * out, a * out + b * x
        raise SplitleakError(f"unsupported prediction type {kind!r}")

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
        alphas, final = self._alpha_table(v.device)
        x = v.to(self.dtype)
        unrolled = guidance is None
        schedule = self.timesteps(steps)
        for t, t_prev in schedule[len(schedule) - (last or steps):]:
            alpha, alpha_prev = alphas[t], (alphas[t_prev] if t_prev >= 0 else final)
            with torch.set_grad_enabled(unrolled and torch.is_grad_enabled()):
                out = self._predict(x, t, cond, cfg_pair, cfg_scale, checkpoint and unrolled)
            x0, eps = self._split(out.to(x.dtype), x, alpha.to(x.dtype))
            if self.scheduler.config.clip_sample:
                limit = self.scheduler.config.clip_sample_range
                x0 = x0.clamp(-limit, limit)
                eps = (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()
            if guidance is not None:
                with torch.enable_grad():
                    x0 = (x0 - guidance(x0.detach(), torch.tensor(t))).detach()
                eps = (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()
            variance = (1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)
            sigma = eta * variance.clamp(min=0).sqrt()
            x = alpha_prev.sqrt() * x0 + (1 - alpha_prev - sigma**2).clamp(min=0).sqrt() * eps
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
        alphas, final = self._alpha_table(latents.device)
        x = latents.to(self.dtype)
        for t, t_prev in self.timesteps(steps)[::-1][: steps if upto is None else upto]:
            alpha_prev = alphas[t_prev] if t_prev >= 0 else final
            out = self._predict(x, max(t_prev, 0), cond, None, 1.0, False)
            x0, eps = self._split(out.to(x.dtype), x, alpha_prev.to(x.dtype))
            x = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * eps
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
