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
With fixed labels at batch 1 (idlg, idlg-batched) the steps' output errors are pinned to their sum read off
the wire (`held_errors`, `pinned_pseudo_gradients`), as a one-step update's error is held (base.output_error).
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


# step(weights, error, with_gradients): one SGD step's gradients at `weights` with the output error
# dL/dlogits held at `error` (None: the dummy's own, softmax(logits) - y), and the error it used:
# (gradients, or {} without with_gradients (a forward pass only), error (C,)); differentiable in the dummy
ErrorStep = Callable[[Weights, "torch.Tensor | None", bool], tuple[Weights, torch.Tensor]]


def held_errors(own: list[torch.Tensor], total: torch.Tensor) -> list[torch.Tensor]:
    """Each step's output error with their sum pinned to `total` (the last layer's bias pseudo-gradient,
    sum_k e_k at batch 1): e'_k = e_k + (total - sum_j e_j) / E, the dummy's own errors shifted alike.

    At the true frame sum_j e_j is the wire's total, so e'_k = e_k and the matching is exact; elsewhere the
    errors' scale is the wire's, not the dummy's (1 - p_y, exponential in its logit margin at a saturated
    model): what holding the error does for one step (base.output_error), kept exact for E steps."""
    shift = (total - sum(own)) / len(own)
    return [e + shift for e in own]


def pinned_pseudo_gradients(step: ErrorStep, start: Weights, local: LocalTraining, total_error: torch.Tensor,
                            own_start: Weights | None = None) -> Weights:
    """-delta / lr of the local training with the steps' output errors pinned to sum to `total_error`
    (`held_errors`): a first pass takes the dummy's own errors e_k (E - 1 steps, and the last step's error
    from a forward pass: `step(weights, None, False)`), the second runs the E steps with e'_k held.

    The held errors are constants of the second pass's weights (functions of the dummy only): under
    torch.func.grad they are, as captured tensors; by autograd the first pass must start from other leaves
    of the same values, `own_start` (else the second pass's step differentiates through them too)."""
    weights, own = dict(start if own_start is None else own_start), []
    for k in range(local.steps):
        last = k + 1 == local.steps
        grads, error = step(weights, None, not last)
        own.append(error)
        if not last:
            weights = {n: weights[n] - local.lr * grads[n] for n in weights}
    weights, total = dict(start), None
    for error in held_errors(own, total_error):
        grads, _ = step(weights, error, True)
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


def autograd_error_step(module: torch.nn.Module, inputs: torch.Tensor, onehot: torch.Tensor) -> ErrorStep:
    """ErrorStep for `module` by autograd on one frame `inputs` (1, ...) of label `onehot` (1, C), with
    create_graph (differentiable in the inputs)."""
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())

    def step(weights: Weights, error: torch.Tensor | None, with_gradients: bool) -> tuple[Weights, torch.Tensor]:
        fixed = {n: p for n, p in params.items() if n not in weights}
        logits = functional_call(module, ({**fixed, **weights}, buffers), (inputs,))
        if error is None:  # the dummy's own error: the cross-entropy's gradient w.r.t. the logits
            value, error = learning.loss(logits, onehot), (torch.softmax(logits, -1) - onehot)[0]
        else:
            value = (logits[0] * error).sum()
        if not with_gradients:
            return {}, error
        grads = torch.autograd.grad(value, list(weights.values()), create_graph=True)
        return dict(zip(weights, grads)), error

    return step


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


def rounding_floor(weights: Weights, pseudo: Weights, steps: int, lr: float) -> float:
    """The relative gradient loss the true batch itself leaves on a FedAvg update (-delta / lr) as the edge
    computes it: each of its `steps` float32 steps w <- w - lr g rounds every weight to its float32 spacing,
    an error of variance ulp(w)^2 / 12, so delta carries steps x sum ulp(w)^2 / 12 against |delta|^2 =
    lr^2 |pseudo|^2. Rounds late in a saturating stream measured 1.8e-8 to 1.1e-7 at 2 steps: above the
    1e-8 success rule, which no dummy, the truth included, can then meet. 0 where nothing moved."""
    noise = sum(float((_spacing(weights[n]).double() ** 2).sum()) for n in pseudo) * steps / 12
    signal = lr * lr * sum(float(g.double().pow(2).sum()) for g in pseudo.values())
    return noise / signal if signal > 0 else 0.0


def _spacing(w: torch.Tensor) -> torch.Tensor:
    """The float32 spacing (ulp) at each weight."""
    a = w.detach().float().abs()
    return torch.nextafter(a, torch.full_like(a, math.inf)) - a


def simulated_delta(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, names: list[str],
                    local: LocalTraining) -> Weights:
    """The weight change the edge sends for this batch: `local.steps` SGD steps from the module's weights."""
    params = dict(module.named_parameters())
    start = {n: params[n] for n in names}
    with torch.enable_grad():
        end = local_steps(autograd_steps(module, inputs, labels, False), start, local)
    return {n: (end[n] - start[n]).detach() for n in names}


__all__ = ["ErrorStep", "LocalTraining", "MAX_LOCAL_STEPS", "autograd_error_step", "autograd_steps", "held_errors",
           "local_steps", "pinned_pseudo_gradients", "pseudo_gradients", "rounding_floor", "simulated_delta",
           "unrolled_gradients"]
