"""DB: decoder-based white-box inversion (the DB baseline of "Unlocking Visual Secrets").

Optimise a latent w of the prior's VAE so that the decoded image matches the tapped features:
    min_w  mean((F1(D(w)) - z)^2) / mean(z^2) + lambda_s * TV(D(w))
with Adam on w. The decoder keeps x on the VAE's image manifold; no diffusion model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from adversary.configs import require
from adversary.feature.base import FeatureInversionAttack, FeatureResult, WhiteBoxCase
from adversary.feature.fit import CHECK_EVERY, PRIOR_ACCESS, Fit, require_prior
from adversary.losses import LAMBDA_S
from adversary.registry import register
from splitleak.errors import SplitleakError


@dataclass(frozen=True)
class DBConfig:
    """DB's hyper-parameters: Adam on the VAE latent."""

    iterations: int = 1500
    lr: float = 0.1
    lambda_s: float = LAMBDA_S
    init_std: float = 1.0  # std of the starting latent
    amp: bool = True  # bf16 autocast on CUDA
    check_every: int = CHECK_EVERY  # steps between read-backs of the loss trace (host syncs)

    def check(self) -> None:
        require(self.iterations >= 1 and self.check_every >= 1,
                f"iterations and check_every must be >= 1, got {self.iterations}, {self.check_every}")
        require(self.lr > 0 and self.lambda_s >= 0 and self.init_std >= 0, "lr must be > 0, lambda_s and init_std >= 0")


@register
class DecoderBased(FeatureInversionAttack):
    """Optimise the VAE latent w; x = D(w) must reproduce the tapped features."""

    name: ClassVar[str] = "db"
    access: ClassVar[frozenset[str]] = PRIOR_ACCESS
    Config = DBConfig

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> FeatureResult:
        c = self.config
        prior = require_prior(self.name, case)
        self.check_access(case)
        if prior.vae is None:
            raise SplitleakError("attack 'db' optimises a VAE latent; this prior is pixel-space (no vae/)")
        fit = Fit.open(features, case, prior, c.lambda_s, c.amp, c.check_every)
        gen = torch.Generator().manual_seed(case.seed)
        w = torch.randn((fit.z.shape[0], *prior.latent_shape), generator=gen) * c.init_std
        fit.descend_latent(w.to(case.device, prior.dtype), c.iterations, c.lr)
        return FeatureResult(fit.best.x.float().clamp(0, 1), fit.best.loss.cpu(), fit.trace.flush())
