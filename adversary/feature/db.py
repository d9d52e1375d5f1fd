"""DB: decoder-based white-box inversion (the DB baseline of "Unlocking Visual Secrets").

Optimise a latent w of the prior's VAE so that the decoded image matches the tapped features:
    min_w  mean((F1(D(w)) - z)^2) / mean(z^2) + lambda_s * TV(D(w))
with Adam on w. The decoder keeps x on the VAE's image manifold; no diffusion model runs.
This module also holds what every prior-based attack shares (`PriorAttack`).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from adversary.feature.base import FeatureInversionAttack, WhiteBoxCase
from adversary.feature.losses import LAMBDA_S, feature_loss, total_variation
from adversary.registry import register
from splitleak.errors import SplitleakError

PRIOR_ACCESS = frozenset({"features", "head_weights", "head_architecture", "prior"})


class PriorAttack(FeatureInversionAttack):
    """Shared plumbing: the prior check, the feature objective, autocast, best-so-far tracking."""

    access: ClassVar[frozenset[str]] = PRIOR_ACCESS
    amp: bool = True
    lambda_s: float = LAMBDA_S

    def __init__(self) -> None:
        self.last_loss: torch.Tensor | None = None  # per-frame feature loss of the returned images
        self.trace: dict[str, list[float]] = {}  # per-iteration batch means of each loss term

    def check_access(self, case: WhiteBoxCase) -> None:
        if "prior" in self.access and case.prior is None:
            raise SplitleakError(f"attack {self.name!r} needs a diffusion prior: pass --prior DIR "
                                 f"(a folder from `splitleak train-prior`, or a diffusers pipeline)")
        super().check_access(case)

    def prior(self, case: WhiteBoxCase) -> Any:
        """The case's prior, on the case's device."""
        self.check_access(case)
        prior = case.prior
        if prior.device != case.device:
            prior.to(case.device)
        return prior

    @staticmethod
    def autocast(case: WhiteBoxCase, enabled: bool) -> contextlib.AbstractContextManager:
        """bf16 (fp16 where bf16 is missing) autocast on CUDA; nothing elsewhere."""
        if not enabled or case.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    @staticmethod
    def to_head_input(x: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        """Decoded images (B, 3, s, s) -> the head's input shape (resized, grey if it takes 1 channel)."""
        x = x.float()
        channels, side = int(case.input_shape[0]), tuple(int(n) for n in case.input_shape[1:])
        if tuple(x.shape[-2:]) != side:
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        if channels == 1:
            x = x.mean(1, keepdim=True)
        elif channels != x.shape[1]:
            raise SplitleakError(f"the head takes {channels} channels; the prior makes {x.shape[1]}")
        return x

    @staticmethod
    def targets(features: torch.Tensor, case: WhiteBoxCase) -> tuple[torch.Tensor, torch.Tensor]:
        """Tapped features on the device with non-finite entries masked out (as in DO)."""
        z = features.to(case.device, torch.float32)
        mask = torch.isfinite(z)
        return torch.where(mask, z, torch.zeros((), device=case.device)), mask

    def image_loss(self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                   case: WhiteBoxCase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, feature loss, TV) per frame for decoded images x; x is returned at head size."""
        x = self.to_head_input(x, case)
        feat = feature_loss(case.head(x).float(), z, mask)
        return feat + self.lambda_s * total_variation(x), feat, x

    def optimise_latent(self, w: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, case: WhiteBoxCase,
                        prior: Any, best: Best, steps: int) -> None:
        """`steps` Adam steps (lr `self.lr`) on the VAE latent w, x = D(w), then one pass that only
        scores the final w; `best` collects each frame's best image."""
        w = w.requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        with torch.enable_grad():
            for step in range(steps + 1):
                with self.autocast(case, self.amp):
                    loss, feat, x = self.image_loss(prior.decode(w), z, mask, case)
                best.update(feat, x)
                self.log(feature=feat, total=loss)
                if step == steps:
                    break
                (w.grad,) = torch.autograd.grad(loss.sum(), w)
                opt.step()

    def log(self, **terms: torch.Tensor) -> None:
        for key, value in terms.items():
            self.trace.setdefault(key, []).append(float(value.detach().float().mean()))


class Best:
    """Keeps, per frame, the image with the lowest feature loss seen so far."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.x: torch.Tensor | None = None

    def restart(self, rows: torch.Tensor | None = None) -> None:
        """Forget what was seen so far, for every frame or for the frames where `rows` (bool) is set:
        the next update sets those."""
        if rows is None or self.loss is None:
            self.loss = self.x = None
        else:
            self.loss = torch.where(rows.to(self.loss.device), torch.inf, self.loss)

    def update(self, loss: torch.Tensor, x: torch.Tensor) -> None:
        loss, x = loss.detach().float(), x.detach()
        if self.loss is None:
            self.loss, self.x = loss.clone(), x.clone()
            return
        better = loss < self.loss
        self.loss = torch.where(better, loss, self.loss)
        self.x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x, self.x)


@register
class DecoderBased(PriorAttack):
    """Optimise the VAE latent w; x = D(w) must reproduce the tapped features."""

    name: ClassVar[str] = "db"

    def __init__(self, iterations: int = 1500, lr: float = 0.1, lambda_s: float = LAMBDA_S,
                 init_std: float = 1.0, amp: bool = True) -> None:
        super().__init__()
        if iterations < 1:
            raise SplitleakError(f"iterations must be >= 1, got {iterations}")
        self.iterations, self.lr, self.lambda_s = int(iterations), float(lr), float(lambda_s)
        self.init_std, self.amp = float(init_std), bool(amp)

    def config(self) -> dict[str, object]:
        return {"iterations": self.iterations, "lr": self.lr, "lambda_s": self.lambda_s, "init_std": self.init_std,
                "amp": self.amp, "optimizer": "adam", "variable": "vae latent", "tv": "mean-abs"}

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        prior = self.prior(case)
        if prior.vae is None:
            raise SplitleakError("attack 'db' optimises a VAE latent; this prior is pixel-space (no vae/)")
        z, mask = self.targets(features, case)
        gen = torch.Generator().manual_seed(case.seed)
        w = torch.randn((z.shape[0], *prior.latent_shape), generator=gen) * self.init_std
        best, self.trace = Best(), {}
        self.optimise_latent(w.to(case.device, prior.dtype), z, mask, case, prior, best, self.iterations)
        self.last_loss = best.loss.cpu()
        return best.x.float().clamp(0, 1)
