"""Feature-vector inversion (`fvi`): recover the features a classifier was trained on, from its gradient.

The video-leakage paper's second setting: a frozen feature extractor (the head) runs at the
edge and only the classifier (the tail) is trained, so the gradient on the wire covers the
classifier alone and the attacker's first target is the feature matrix the classifier saw.
Dummy features are matched to the gradient in L2 (DLG's loss) for 20,000 iterations; every
1,000 a stagnation check (relative improvement of the best loss below 1e-3) adds N(0, std 1e-3)
noise to the dummy and halves the learning rate. Adam (default, lr 0.01: 0.1 oscillates on an FC
classifier) or L-BFGS (an iteration is one step of up to 20 evaluations, as in DLG; a step
without progress triggers the noise-and-halve kick at once). Labels are the wire's, else inferred (iDLG).
Presets: `paper` runs every iteration; `best` (the defaults) also stops once the loss is below 1e-12.
The recovered features come back in `GradientResult.inputs`; feature MSE and cosine against
the true features are for whoever knows them (the runner, a benchmark, a test).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from adversary.configs import require
from adversary.gradient.base import (
    GradientCase,
    GradientInversionAttack,
    GradientResult,
    adam,
    best_of_restarts,
    dummy_gradients,
    gradient_distance_l2,
    infer_labels_idlg,
)
from adversary.gradient.dlg import label_accuracy
from adversary.registry import register

LBFGS_INNER = 20  # evaluations per L-BFGS iteration, as in DLG
MAX_KICKS = 20  # stagnation kicks before giving up (the lr is then 2^-20 of its start)


def feature_scores(recovered: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample MSE and cosine similarity of recovered vs true features: two (B,) tensors."""
    r, t = recovered.detach().flatten(1).double().cpu(), truth.detach().flatten(1).double().cpu()
    mse = ((r - t) ** 2).mean(1)
    cos = torch.nn.functional.cosine_similarity(r, t, dim=1, eps=1e-12)
    return mse.float(), cos.float()


@dataclass(frozen=True)
class StagnationConfig:
    """Every `check_every` iterations, a best loss that improved by less than `min_improvement`
    (relative) adds N(0, noise_std) to the best dummy and halves the learning rate."""

    check_every: int = 1000
    min_improvement: float = 1e-3
    noise_std: float = 1e-3

    def check(self) -> None:
        require(self.check_every >= 1 and self.min_improvement >= 0 and self.noise_std >= 0,
                f"check_every must be >= 1, min_improvement and noise_std >= 0 "
                f"(got {self.check_every}, {self.min_improvement}, {self.noise_std})")


@dataclass(frozen=True)
class MatchConfig:
    """How the dummy starts and what the loss is measured against."""

    relative: bool = False  # the loss (and threshold, stop_loss) over the tapped gradient's squared norm
    init: Literal["normal", "abs"] = "normal"  # abs: |N(0, 1)|, for features known to be >= 0 (after ReLU)


@dataclass(frozen=True)
class FVIConfig:
    """fvi's hyper-parameters; `lr` none: 0.01 for Adam, 1 for L-BFGS."""

    iterations: int = 20000
    optimizer: Literal["adam", "lbfgs"] = "adam"
    lr: float | None = None
    restarts: int = 1
    threshold: float = 1e-5  # success: the final gradient loss is below it (and no more restarts)
    stop_loss: float = 1e-12  # a run ends once its best loss is below it (0: runs all its iterations)
    stagnation: StagnationConfig = field(default_factory=StagnationConfig)
    match: MatchConfig = field(default_factory=MatchConfig)

    # the video-leakage paper's loop: 20,000 iterations, a stagnation check every 1,000 that adds
    # N(0, 0.001) noise and halves the learning rate, no early stop on a small loss
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {
        "iterations": 20000, "restarts": 1, "threshold": 1e-5, "stop_loss": 0.0, "stagnation.check_every": 1000,
        "stagnation.min_improvement": 1e-3, "stagnation.noise_std": 1e-3},
        # measured better on clip classifiers (docs/gradient-inversion.md, "Clip models"): L-BFGS on the
        # scale-free loss, so a saturated model's tiny gradient is matched as well as a fresh one's
        "clip": {"iterations": 300, "optimizer": "lbfgs", "restarts": 4, "match.relative": True,
                 "match.init": "abs", "threshold": 1e-8, "stop_loss": 1e-14}}

    def check(self) -> None:
        require(self.iterations >= 1 and self.restarts >= 1,
                f"iterations and restarts must be >= 1 (got {self.iterations}, {self.restarts})")
        require(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.threshold >= 0 and self.stop_loss >= 0,
                f"threshold and stop_loss must be >= 0 (got {self.threshold}, {self.stop_loss})")

    @property
    def learning_rate(self) -> float:
        """The starting learning rate: `lr`, else the optimiser's default."""
        return self.lr if self.lr is not None else (0.01 if self.optimizer == "adam" else 1.0)


@register
class FeatureVectorInversion(GradientInversionAttack):
    """L2 gradient matching on dummy features, with stagnation noise and learning-rate halving."""

    name: ClassVar[str] = "fvi"
    Config = FVIConfig

    @property
    def loss_threshold(self) -> float:
        return self.config.threshold

    @property
    def relative_loss(self) -> bool:
        return self.config.match.relative

    def describe(self) -> dict[str, Any]:
        init = "N(0, 1)" if self.config.match.init == "normal" else "|N(0, 1)|"
        return {**super().describe(), "learning_rate": self.config.learning_rate, "init": init,
                "loss": "sum of squared gradient differences (L2)"
                + (" over the tapped gradient's squared norm" if self.config.match.relative else ""),
                "labels": "wire labels, else iDLG inference"}

    def _make_opt(self, x: torch.Tensor, lr: float) -> torch.optim.Optimizer:
        if self.config.optimizer == "adam":
            return adam([x], lr)
        return torch.optim.LBFGS([x], lr=lr, max_iter=LBFGS_INNER, history_size=100,
                                 line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=1e-12)

    def _run(self, case: GradientCase, labels: torch.Tensor, seed: int,
             true: list[torch.Tensor]) -> tuple[torch.Tensor, float, int, int]:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((case.batch_size, *case.input_shape), generator=gen)
        x = (x.abs() if self.config.match.init == "abs" else x).to(case.device).requires_grad_(True)
        c, stag = self.config, self.config.stagnation
        scale = 1.0 / max(float(case.gradient_norm2()), 1e-30) if c.match.relative else 1.0
        lr = c.learning_rate
        opt = self._make_opt(x, lr)
        best_x, best, at_check, kicks, step = x.detach().clone(), math.inf, math.inf, 0, 0

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = gradient_distance_l2(dummy_gradients(case, x, labels), true) * scale
            (x.grad,) = torch.autograd.grad(loss, x)
            return loss.detach()

        def kick() -> None:  # stagnation: jitter the best dummy, halve the learning rate
            nonlocal lr, kicks, opt
            with torch.no_grad():
                x.copy_(best_x + stag.noise_std * torch.randn(x.shape, generator=gen).to(x.device))
            lr, kicks = lr / 2, kicks + 1
            opt = self._make_opt(x, lr)

        with torch.enable_grad():
            for step in range(1, c.iterations + 1):
                before = best
                value = float(opt.step(closure))  # loss before this step's update
                if math.isfinite(value) and value < best:
                    best, best_x = value, x.detach().clone()
                if not math.isfinite(value) or best < c.stop_loss or kicks > MAX_KICKS:
                    break
                if step == 1:
                    at_check = best
                if c.optimizer == "lbfgs" and step > 1 and not best < before:
                    kick()  # L-BFGS has converged where it is: no use waiting for the next check
                elif step % stag.check_every == 0:
                    if not at_check - best > stag.min_improvement * at_check:
                        kick()
                    at_check = best
            final = float(gradient_distance_l2(dummy_gradients(case, x, labels, create_graph=False), true)) * scale
        if math.isfinite(final) and final < best:
            best, best_x = final, x.detach().clone()
        return best_x, best, step, kicks

    def reconstruct(self, case: GradientCase) -> GradientResult:
        self.check_access(case)
        start = time.perf_counter()
        labels = case.labels if case.labels is not None else infer_labels_idlg(case)
        true = [case.gradients[n] for n in case.names]
        threshold = float(self.success_thresholds(case)[0])  # type: ignore[index]  # always a rule
        best, losses = best_of_restarts(lambda r: self._run(case, labels, case.seed + r, true),
                                        self.config.restarts, threshold)
        x, loss, steps, kicks = best
        b = case.batch_size
        extra: dict[str, Any] = {"restart_losses": losses, "steps": steps, "stagnation_kicks": kicks,
                                 "labels_from": "wire" if case.labels is not None else "idlg",
                                 "seconds": time.perf_counter() - start}
        if case.labels is not None:
            extra["label_accuracy"] = label_accuracy(labels, case.labels)
        return GradientResult(x, labels.detach().to(torch.long), torch.full((b,), loss),
                              torch.full((b,), loss < threshold), extra)
