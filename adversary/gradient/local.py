"""FedAvg updates of several local steps: the attacks simulate the local training they came from.

A fedavg update is the weight change after E plain SGD steps at learning rate lr on one batch, every
step on the whole batch, from the round's global weights (edge/trainer.py `_local_delta`). The attacks
match its pseudo-gradient -delta / lr: for E = 1 that is the gradient itself, and the attacks run
exactly as on a fedsgd gradient; for E > 1 it is the sum of the E steps' gradients, each taken at the
weights the steps before it left. The attack unrolls those E steps from the round's weights on its
dummy batch (differentiably: every step's gradient is built with create_graph, so the matching loss
reaches the dummy inputs through all of them) and matches the simulated pseudo-gradient to the
recorded one with its own loss (L2, cosine, relative), as Inverting Gradients does for multi-step
updates. Matching -delta / lr rather than delta keeps one scale for every E (the loss is L2 on deltas
times 1 / lr^2), so the success threshold and stopping rules read the same as on a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call

from splitleak import learning
from splitleak.errors import SplitleakError

MAX_LOCAL_STEPS = 100  # a recording is untrusted: each step is unrolled into the attack's graph

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LocalTraining:
    """How a FedAvg update was trained locally: `steps` SGD steps at `lr` on the whole batch each step."""

    steps: int
    lr: float

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_LOCAL_STEPS:
            raise SplitleakError(f"local steps must be an integer in [1, {MAX_LOCAL_STEPS}], got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise SplitleakError(f"the local learning rate must be a finite number > 0, got {self.lr!r}")

    def describe(self) -> dict[str, float | int]:
        return {"local_steps": self.steps, "lr": self.lr}


def local_steps(step_gradients: Callable[[Weights], Weights], start: Weights, local: LocalTraining) -> Weights:
    """The weights after `local.steps` SGD steps from `start`, in the edge's own arithmetic
    (w <- w - lr * g in the weights' dtype), so a replay at the true batch gives back the recorded
    delta w_E - w_0 exactly (tests/test_fedavg_attacks.py). `step_gradients(weights)` is the loss's gradient
    at `weights` on the batch (autograd with create_graph, or torch.func.grad: both stay differentiable in it)."""
    weights = dict(start)
    for _ in range(local.steps):
        grads = step_gradients(weights)
        weights = {n: weights[n] - local.lr * grads[n] for n in weights}
    return weights


def pseudo_gradients(step_gradients: Callable[[Weights], Weights], start: Weights,
                     local: LocalTraining | None) -> Weights:
    """-delta / lr of the local training from `start`; the gradient itself when `local` is None (one step).

    Summed as the steps' gradients, g_1 + ... + g_E, which -delta / lr is in exact arithmetic: (w_E - w_0) / lr
    in float32 cancels ~|w| / lr x 2^-24 per entry, noise that changed with the dummy and stalled L-BFGS near
    the optimum (saturated rounds ended at ~1e-5 instead of ~5e-7); the sum has none."""
    if local is None:
        return step_gradients(start)
    weights, total = dict(start), None
    for _ in range(local.steps):
        grads = step_gradients(weights)
        total = grads if total is None else {n: total[n] + grads[n] for n in total}
        weights = {n: weights[n] - local.lr * grads[n] for n in weights}
    assert total is not None
    return total


def autograd_steps(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   create_graph: bool) -> Callable[[Weights], Weights]:
    """step_gradients for `module` by autograd: the loss's gradient w.r.t. the given (named) weights, the
    module's other parameters and buffers as they are (eval mode: BatchNorm's running statistics)."""
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())

    def step_gradients(weights: Weights) -> Weights:
        fixed = {n: p for n, p in params.items() if n not in weights}
        logits = functional_call(module, ({**fixed, **weights}, buffers), (inputs,))
        grads = torch.autograd.grad(learning.loss(logits, labels), list(weights.values()), create_graph=create_graph)
        return dict(zip(weights, grads))

    return step_gradients


def unrolled_gradients(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, names: list[str],
                       local: LocalTraining | None, create_graph: bool = True) -> Weights:
    """Pseudo-gradients (-delta / lr) of the named parameters for (inputs, labels) by autograd; with
    create_graph the result is differentiable w.r.t. inputs (and soft labels)."""
    params = dict(module.named_parameters())
    with torch.enable_grad():
        grads = pseudo_gradients(autograd_steps(module, inputs, labels, create_graph),
                                 {n: params[n] for n in names}, local)
    # without create_graph the later steps still hang off the weights' graph: cut it
    return grads if create_graph else {n: g.detach() for n, g in grads.items()}


def simulated_delta(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, names: list[str],
                    local: LocalTraining) -> Weights:
    """The weight change the edge sends for this batch: `local.steps` SGD steps from the module's weights."""
    params = dict(module.named_parameters())
    start = {n: params[n] for n in names}
    with torch.enable_grad():
        end = local_steps(autograd_steps(module, inputs, labels, False), start, local)
    return {n: (end[n] - start[n]).detach() for n in names}


__all__ = ["LocalTraining", "MAX_LOCAL_STEPS", "autograd_steps", "local_steps", "pseudo_gradients", "simulated_delta",
           "unrolled_gradients"]
