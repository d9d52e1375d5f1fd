"""Inverting Gradients (Geiping et al., 2020): cosine gradient matching with a TV prior.

    min_x  1 - cos(grad(x, y), g) + lambda_tv * TV(x)
(+ lambda_time * TV over time for a raw clip (B, 3, T, H, W): adversary/gradient/temporal.py)
Adam (lr 0.1) on x, optionally on the sign of its gradient (the paper's default), the learning
rate cut by 10 at 3/8, 5/8 and 7/8 of the iterations; images are boxed into [0, 1] after every
step. Labels are the wire's when the update carried them, else inferred from the last layer
(iDLG). Works on any trained module (ResNet-18 with eval-mode BatchNorm included) and any
batch size; restarts keep the run with the lowest cosine loss. Presets: `paper` is the reference
code's ResNet setting (24,000 steps, TV 0.1); `best` (the defaults) 2,000 steps and TV 0.01.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from adversary.configs import require
from adversary.gradient.base import (
    GradientCase,
    GradientInversionAttack,
    GradientResult,
    adam,
    best_of_restarts,
    cosine_distance,
    dummy_gradients,
    infer_labels_idlg,
    total_variation,
)
from adversary.gradient.dlg import label_accuracy
from adversary.gradient.temporal import check_temporal, spread_start, temporal_variation
from adversary.registry import register


@dataclass(frozen=True)
class IGConfig:
    """Inverting Gradients' hyper-parameters."""

    iterations: int = 2000
    restarts: int = 1  # the run with the lowest cosine loss is kept
    lr: float = 0.1
    lambda_tv: float = 1e-2
    signed: bool = True  # Adam on the sign of the gradient
    boxed: bool = True  # images clamped to [0, 1] after every step
    # raw clips (B, 3, T, H, W) only: the temporal prior's weight (TV over time, beside lambda_tv's TV
    # within each frame) and the start's spread about one shared frame (1: independent); see temporal.py.
    # 0.1: frameavg end to end, one held-out bikes clip at 16 px, 300 steps: 20.2 dB per frame against
    # 17.0 without (0.01: 19.6, 1: 20.1)
    lambda_time: float = 0.1
    start_spread: float = 1.0

    # Geiping et al. as their code runs it: 24,000 Adam steps of lr 0.1 on the gradient's sign,
    # boxed, one restart, TV weight 0.1 (their code takes TV of normalised images, ~4x ours)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {
        "iterations": 24000, "restarts": 1, "lr": 0.1, "lambda_tv": 0.1, "signed": True, "boxed": True}}

    def check(self) -> None:
        require(self.iterations >= 1 and self.restarts >= 1,
                f"iterations and restarts must be >= 1, got {self.iterations} and {self.restarts}")
        require(self.lr > 0 and self.lambda_tv >= 0, f"lr must be > 0 and lambda_tv >= 0, got {self.lr} and "
                                                      f"{self.lambda_tv}")
        check_temporal(self.lambda_time, self.start_spread)


def milestones(iterations: int) -> list[int]:
    """The steps at which the learning rate is cut by 10: 3/8, 5/8 and 7/8 of the run."""
    return [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]


@register
class InvertingGradients(GradientInversionAttack):
    """Cosine distance + TV, Adam with step decay, box constraint, restarts."""

    name: ClassVar[str] = "ig"
    Config = IGConfig

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "optimizer": "adam", "schedule": "lr x0.1 at 3/8, 5/8, 7/8 of iterations",
                "init": "U[0, 1] images, N(0, 1) features", "loss": "1 - cosine(gradients) + lambda_tv * TV",
                "labels": "wire labels, else iDLG inference"}

    def _objective(self, case: GradientCase, x: torch.Tensor, labels: torch.Tensor,
                   true: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cos = cosine_distance(dummy_gradients(case, x, labels), true)
        tv = torch.zeros((), device=x.device)
        if case.is_image:  # a clip's TV within each frame: its frames as images
            tv = total_variation(x.transpose(1, 2).flatten(0, 1) if x.dim() == 5 else x).mean()
        total = cos + self.config.lambda_tv * tv
        if self.config.lambda_time:
            total = total + self.config.lambda_time * temporal_variation(x).mean()
        return total, cos

    def _run(self, case: GradientCase, labels: torch.Tensor, seed: int,
             true: list[torch.Tensor]) -> tuple[torch.Tensor, float, float]:
        gen = torch.Generator().manual_seed(seed)
        shape = (case.batch_size, *case.input_shape)
        x0 = torch.rand(shape, generator=gen) if case.is_image else torch.randn(shape, generator=gen)
        x = spread_start(x0, self.config.start_spread).to(case.device).requires_grad_(True)
        c = self.config
        opt = adam([x], c.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones(c.iterations), gamma=0.1)
        initial = None
        with torch.enable_grad():
            for _ in range(c.iterations):
                opt.zero_grad()
                total, cos = self._objective(case, x, labels, true)
                initial = float(cos.detach()) if initial is None else initial
                (grad,) = torch.autograd.grad(total, x)
                x.grad = grad.sign() if c.signed else grad
                opt.step()
                sched.step()
                if c.boxed and case.is_image:
                    with torch.no_grad():
                        x.clamp_(0, 1)
            final = float(cosine_distance(dummy_gradients(case, x, labels, create_graph=False), true))
        return x.detach(), final if final == final else float("inf"), float(initial or 0.0)

    def reconstruct(self, case: GradientCase) -> GradientResult:
        self.check_access(case)
        start = time.perf_counter()
        labels = case.labels if case.labels is not None else infer_labels_idlg(case)
        true = [case.gradients[n] for n in case.names]
        best, losses = best_of_restarts(lambda r: self._run(case, labels, case.seed + r, true),
                                        self.config.restarts)
        x, loss, initial = best
        b = case.batch_size
        extra: dict[str, Any] = {"initial_loss": initial, "restart_losses": losses,
                                 "labels_from": "wire" if case.labels is not None else "idlg",
                                 "seconds": time.perf_counter() - start}
        if case.labels is not None:
            extra["label_accuracy"] = label_accuracy(labels, case.labels)
        x = x.clamp(0, 1) if case.is_image else x
        return GradientResult(x, labels.detach().to(torch.long), torch.full((b,), loss),
                              torch.zeros(b, dtype=torch.bool), extra)
