"""DO: white-box direct optimisation (He et al., "Model inversion attacks against collaborative
inference", 2019; the DO baseline of "Unlocking Visual Secrets").

Find x in [0, 1] with F1(x) close to the tapped z:
    min_x  mean((F1(x) - z)^2) / mean(z^2) + lambda_tv * TV(x)
x = sigmoid(w) keeps pixels in range; Adam on w with a cosine-decayed learning rate. A batch
of frames is one optimisation whose loss is the sum of per-frame losses, so frames do not
interfere. Feature entries that are not finite are left out of the loss. Through a clip head
the dummy is the whole clip (3, T, H, W), TV taken over each frame's rows and columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from adversary.configs import require
from adversary.feature.base import FeatureInversionAttack, FeatureResult, WhiteBoxCase, masked_targets
from adversary.feature.fit import adam
from adversary.losses import feature_loss, total_variation
from adversary.registry import register


def cosine_lr(lr: float, step: int, steps: int, final_frac: float) -> float:
    """lr decayed on a half cosine from lr at step 0 to final_frac * lr at step steps - 1."""
    cos = 0.5 * (1 + math.cos(math.pi * step / max(1, steps - 1)))
    return lr * (final_frac + (1 - final_frac) * cos)


def descend_pixels(w: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                   mask: torch.Tensor, steps: int, lr: float, lambda_tv: float, final_lr_frac: float) -> torch.Tensor:
    """`steps` Adam steps on the logits w of x = sigmoid(w) against
    feature_loss(head(x), z) + lambda_tv * TV(x), summed over frames, lr on a cosine; returns w."""
    w = w.detach().clone().requires_grad_(True)
    opt = adam([w], lr)
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


@dataclass(frozen=True)
class DOConfig:
    """DO's hyper-parameters (He et al.'s attack with our loss scale)."""

    iterations: int = 500
    lr: float = 0.1
    lambda_tv: float = 0.01
    restarts: int = 1  # starts per frame; each frame keeps its best fit
    init_std: float = 0.5  # std of the starting logits
    final_lr_frac: float = 0.01  # the cosine ends at this share of lr

    def check(self) -> None:
        require(self.iterations >= 1 and self.restarts >= 1,
                f"iterations and restarts must be >= 1, got {self.iterations} and {self.restarts}")
        require(self.lr > 0 and self.lambda_tv >= 0 and self.init_std >= 0 and 0 <= self.final_lr_frac <= 1,
                "lr must be > 0, lambda_tv and init_std >= 0, final_lr_frac in [0, 1]")


@register
class DirectOptimisation(FeatureInversionAttack):
    """Optimise the input pixels so the head's output matches the tapped features."""

    name: ClassVar[str] = "do"
    inverts_clips: ClassVar[bool] = True  # the pixels descended are the case's input, an image or a clip
    access: ClassVar[frozenset[str]] = frozenset({"features", "head_weights", "head_architecture"})
    Config = DOConfig

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> FeatureResult:
        self.check_access(case)
        c, dev = self.config, case.device
        z, mask = masked_targets(features, case)
        b, r = z.shape[0], c.restarts
        z_rep, mask_rep = z.repeat(r, *[1] * (z.dim() - 1)), mask.repeat(r, *[1] * (z.dim() - 1))
        gen = torch.Generator().manual_seed(case.seed)  # CPU generator: same start on every device
        w = (torch.randn((r * b, *case.input_shape), generator=gen) * c.init_std).to(dev)
        w = descend_pixels(w, case.head, z_rep, mask_rep, c.iterations, c.lr, c.lambda_tv, c.final_lr_frac)
        with torch.no_grad():
            x = torch.sigmoid(w)
            final = feature_loss(case.head(x), z_rep, mask_rep).view(r, b)
            best = final.argmin(0)
            x = x.view(r, b, *case.input_shape)[best, torch.arange(b, device=dev)]
        return FeatureResult(x.detach(), final.min(0).values.cpu())
