"""DO: white-box direct optimisation (He et al., "Model inversion attacks against collaborative
inference", 2019; the DO baseline of "Unlocking Visual Secrets").

Find x in [0, 1] with F1(x) close to the tapped z:
    min_x  mean((F1(x) - z)^2) / mean(z^2) + lambda_tv * TV(x)
x = sigmoid(w) keeps pixels in range; Adam on w with a cosine-decayed learning rate. A batch
of frames is one optimisation whose loss is the sum of per-frame losses, so frames do not
interfere. Feature entries that are not finite are left out of the loss.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch

from adversary.feature.base import FeatureInversionAttack, WhiteBoxCase
from adversary.registry import register
from splitleak.errors import SplitleakError


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation per image, averaged over pixels: shape (B,)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def feature_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame masked MSE normalised by the target's mean square: shape (B,)."""
    m = mask.flatten(1).to(pred.dtype)
    count = m.sum(1).clamp_min(1.0)
    err = ((pred - target).flatten(1) ** 2 * m).sum(1) / count
    power = (target.flatten(1) ** 2 * m).sum(1) / count
    return err / power.clamp_min(1e-12)


def cosine_lr(lr: float, step: int, steps: int, final_frac: float) -> float:
    """lr decayed on a half cosine from lr at step 0 to final_frac * lr at step steps - 1."""
    cos = 0.5 * (1 + math.cos(math.pi * step / max(1, steps - 1)))
    return lr * (final_frac + (1 - final_frac) * cos)


def descend_pixels(w: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                   mask: torch.Tensor, steps: int, lr: float, lambda_tv: float, final_lr_frac: float) -> torch.Tensor:
    """`steps` Adam steps on the logits w of x = sigmoid(w) against
    feature_loss(head(x), z) + lambda_tv * TV(x), summed over frames, lr on a cosine; returns w."""
    w = w.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    with torch.enable_grad():
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(lr, step, steps, final_lr_frac)
            x = torch.sigmoid(w)
            loss = feature_loss(head(x), z, mask) + lambda_tv * total_variation(x)
            (grad,) = torch.autograd.grad(loss.sum(), w)  # grads of w only: the head is untouched
            w.grad = grad
            opt.step()
    return w.detach()


@register
class DirectOptimisation(FeatureInversionAttack):
    """Optimise the input pixels so the head's output matches the tapped features."""

    name: ClassVar[str] = "do"
    access: ClassVar[frozenset[str]] = frozenset({"features", "head_weights", "head_architecture"})

    def __init__(self, iterations: int = 500, lr: float = 0.1, lambda_tv: float = 0.01,
                 restarts: int = 1, init_std: float = 0.5, final_lr_frac: float = 0.01) -> None:
        if iterations < 1 or restarts < 1:
            raise SplitleakError(f"iterations and restarts must be >= 1, got {iterations} and {restarts}")
        self.iterations, self.lr, self.lambda_tv = int(iterations), float(lr), float(lambda_tv)
        self.restarts, self.init_std, self.final_lr_frac = int(restarts), float(init_std), float(final_lr_frac)
        self.last_loss: torch.Tensor | None = None  # per-frame feature loss of the returned images

    def config(self) -> dict[str, object]:
        return {"iterations": self.iterations, "lr": self.lr, "lambda_tv": self.lambda_tv,
                "restarts": self.restarts, "init_std": self.init_std, "schedule": "cosine",
                "final_lr_frac": self.final_lr_frac, "parametrisation": "sigmoid", "optimizer": "adam"}

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        self.check_access(case)
        dev = case.device
        z = features.to(dev, torch.float32)
        mask = torch.isfinite(z)
        z = torch.where(mask, z, torch.zeros((), device=dev))
        b, r = z.shape[0], self.restarts
        z_rep, mask_rep = z.repeat(r, *[1] * (z.dim() - 1)), mask.repeat(r, *[1] * (z.dim() - 1))
        gen = torch.Generator().manual_seed(case.seed)  # CPU generator: same start on every device
        w = (torch.randn((r * b, *case.input_shape), generator=gen) * self.init_std).to(dev)
        w = descend_pixels(w, case.head, z_rep, mask_rep, self.iterations, self.lr, self.lambda_tv, self.final_lr_frac)
        with torch.no_grad():
            x = torch.sigmoid(w)
            final = feature_loss(case.head(x), z_rep, mask_rep).view(r, b)
            best = final.argmin(0)
            x = x.view(r, b, *case.input_shape)[best, torch.arange(b, device=dev)]
            self.last_loss = final.min(0).values.cpu()
        return x.detach()
