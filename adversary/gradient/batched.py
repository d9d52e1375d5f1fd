"""The batched engine: N tapped frames, each its own batch-1 update, attacked as N independent
gradient-matching problems in one vectorised optimisation (`dlg-batched`, `idlg-batched`).

Per frame i the problem is dlg's / idlg's:
    min_{x_i, y_i}  sum_params || dL(f(x_i), y_i)/dW - g_i ||^2.
The per-frame parameter gradients are taken for all frames at once with torch.func,
`vmap(grad(...))` of `learning.loss(functional_call(module, params, x_i), y_i)` (the edge's own
definition on a batch of one), and the gradient of the summed matching losses w.r.t. the dummies
(a double backward; frames are independent, so row i gets its own loss's gradient) by autograd.
Class ids enter as one-hot soft labels (the same loss); a call with one frame left runs plain
autograd instead, faster there. The optimiser is `lbfgs_batched.minimize`, a
per-frame L-BFGS (own history, own line search, own convergence, own restarts): a converged
frame is frozen and costs nothing, a frame that diverges or stalls restarts from its next seed
while the others go on. `dlg` / `idlg` (one frame at a time) stay the reference; with the same
seeds the batched attack starts every frame exactly where the sequential one starts it
(`BatchedGradientCase.frame(i)`).

Input: a `BatchedGradientCase`, whose `gradients` values carry a leading frame dimension N
(`gradients[name]` is (N, *param.shape)), `labels` (N,) if the updates carried them, and
optionally `frame_params` (N, *param.shape) when the frames were taken at different weights
(different rounds). `BatchedGradientCase.from_cases([...])` stacks batch-1 `GradientCase`s;
`reconstruct_many(cases)` does that and splits the result back per case.

FedAvg updates of several local steps (`case.local`, the same for every frame of a case): each row's
objective unrolls the local training from that row's weights inside the vmapped function (E
torch.func.grad steps, then -delta / lr), so rows stay independent and no Python loop runs over frames.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from tqdm import tqdm

from adversary.configs import require
from adversary.gradient.base import (LOSS_UNIT, GradientCase, GradientInversionAttack, GradientResult, check_floors,
                                     infer_labels_idlg, output_error)
from adversary.gradient.dlg import DLGConfig, LbfgsConfig, StopRules, dummy_start, label_accuracy
from adversary.gradient.lbfgs_batched import LBFGSOptions, minimize
from adversary.gradient.local import LocalTraining, pinned_pseudo_gradients, pseudo_gradients
from adversary.registry import register
from splitleak import learning
from splitleak.errors import SplitleakError

SINGLE_BELOW = 1  # up to this many frames per call, plain autograd beats vmap on CPU (measured: 1)
FRAME_SEED_STRIDE = 1000  # frame i starts from seeds seed + 1000 i + restart: no two frames share a start


@dataclass
class BatchedGradientCase(GradientCase):
    """N frames, each its own batch-1 update of the same module: `gradients[name]` is
    (N, *param.shape), `labels` (N,) or None, `frame_params[name]` (N, *param.shape) or None
    (None: every frame's gradient was taken at the module's own weights). Frame i's seed is
    `seed + 1000 i` unless `frame_seeds` says otherwise."""

    frame_params: dict[str, torch.Tensor] | None = None
    frame_seeds: tuple[int, ...] | None = None
    frame_floors: tuple[float, ...] | None = None  # each frame's rounding_floor (None: every frame's is 0)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self._check_local()
        if self.batch_size != 1:
            raise SplitleakError(f"the batched engine attacks batch-1 updates (one frame each), "
                                 f"got batch {self.batch_size}")
        if not self.gradients:
            raise SplitleakError("no gradients")
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.gradients = {k: v.detach().to(self.device, torch.float32) for k, v in self.gradients.items()}
        n = self.frames
        params = dict(self.module.named_parameters())
        self._check("gradient", self.gradients, params, n)
        if self.frame_params is not None:
            self.frame_params = {k: v.detach().to(self.device, torch.float32) for k, v in self.frame_params.items()}
            self._check("frame parameter", self.frame_params, params, n)
            if set(self.frame_params) != set(self.gradients):
                raise SplitleakError("frame_params must cover exactly the parameters the gradients cover")
        if self.labels is not None:
            self.labels = self.labels.to(self.device, torch.long).reshape(-1)
            if self.labels.numel() != n:
                raise SplitleakError(f"{self.labels.numel()} labels for {n} frames")
        if self.frame_seeds is not None:
            self.frame_seeds = tuple(int(s) for s in self.frame_seeds)
            if len(self.frame_seeds) != n:
                raise SplitleakError(f"{len(self.frame_seeds)} frame seeds for {n} frames")
        if self.frame_floors is not None:
            check_floors(self.frame_floors)
            if len(self.frame_floors) != n:
                raise SplitleakError(f"{len(self.frame_floors)} rounding floors for {n} frames")

    @staticmethod
    def _check(what: str, tensors: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], n: int) -> None:
        for name, t in tensors.items():
            if name not in params:
                raise SplitleakError(f"{what} {name!r} names no parameter of the trained module")
            if tuple(t.shape) != (n, *params[name].shape):
                raise SplitleakError(f"{what} {name!r} has shape {list(t.shape)}, expected "
                                     f"[{n}, {', '.join(map(str, params[name].shape))}] (frames first)")

    def gradient_norm2(self) -> torch.Tensor:
        """Each frame's tapped gradient's squared L2 norm, (N,) (each frame is its own update)."""
        return sum(g.double().pow(2).flatten(1).sum(1) for g in self.gradients.values()).float()  # type: ignore[union-attr]

    def rounding_floors(self) -> torch.Tensor:
        """Each frame's rounding floor, (N,)."""
        if self.frame_floors is None:
            return torch.zeros(self.frames, device=self.device)
        return torch.tensor(self.frame_floors, device=self.device)

    @property
    def frames(self) -> int:
        """N, the number of frames (updates) in the case."""
        return int(next(iter(self.gradients.values())).shape[0])

    def frame_seed(self, i: int) -> int:
        return self.frame_seeds[i] if self.frame_seeds is not None else self.seed + FRAME_SEED_STRIDE * i

    def frame(self, i: int) -> GradientCase:
        """Frame i as the plain batch-1 GradientCase the sequential attacks take (same seed)."""
        module = self.module
        if self.frame_params is not None:
            module = copy.deepcopy(self.module)
            with torch.no_grad():
                for name, p in module.named_parameters():
                    if name in self.frame_params:
                        p.copy_(self.frame_params[name][i])
        return GradientCase(module, {k: v[i] for k, v in self.gradients.items()}, 1, self.input_shape,
                            self.num_classes, None if self.labels is None else self.labels[i:i + 1],
                            self.input_kind, self.device, self.frame_seed(i), self.grants, self.local,
                            0.0 if self.frame_floors is None else self.frame_floors[i])

    @classmethod
    def from_cases(cls, cases: list[GradientCase], weights: list[dict[str, torch.Tensor]] | None = None
                   ) -> "BatchedGradientCase":
        """Stack batch-1 cases of one model (same parameters on the wire, same shapes). Cases with
        different module objects are taken as different rounds: their weights go to frame_params.
        `weights`: each case's trained parameters, where the cases share one module object whose
        weights were reloaded between them (a recording's rounds); they go to frame_params."""
        if not cases:
            raise SplitleakError("no cases to stack")
        first = cases[0]
        for c in cases:
            if c.batch_size != 1:
                raise SplitleakError(f"the batched engine attacks batch-1 updates, got batch {c.batch_size}")
            if (c.names, c.input_shape, c.num_classes, c.input_kind, c.device, c.local) != (
                    first.names, first.input_shape, first.num_classes, first.input_kind, first.device, first.local):
                raise SplitleakError("cases to stack must share parameters, input shape, classes, kind, device and "
                                     "local training (FedAvg steps and lr)")
        labels = None if any(c.labels is None for c in cases) else torch.cat([c.labels for c in cases])
        frame_params = None
        if weights is not None:
            if len(weights) != len(cases):
                raise SplitleakError(f"{len(weights)} weight sets for {len(cases)} cases")
            frame_params = {n: torch.stack([w[n].detach().to(first.device) for w in weights]) for n in first.names}
        elif any(c.module is not first.module for c in cases):
            per = [dict(c.module.named_parameters()) for c in cases]
            frame_params = {n: torch.stack([p[n].detach() for p in per]) for n in first.names}
        return cls(first.module, {n: torch.stack([c.gradients[n] for c in cases]) for n in first.names}, 1,
                   first.input_shape, first.num_classes, labels, first.input_kind, first.device, first.seed,
                   first.grants, first.local, frame_params=frame_params, frame_seeds=tuple(c.seed for c in cases),
                   frame_floors=tuple(float(c.rounding_floor) for c in cases))


def frame_loss(logits: torch.Tensor, label: torch.Tensor, linear: bool) -> torch.Tensor:
    """The edge's loss (`learning.loss`), or with `linear` <label, logits>: its gradient holds the output
    error dL/dlogits at `label` (base.output_error), whatever the logits."""
    return (logits * label).sum() if linear else learning.loss(logits, label)


def _functional(module: torch.nn.Module, names: list[str], local: LocalTraining | None = None,
                linear: bool = False):
    """frame_grads(trained, x, label) -> dict for torch.func: the gradient at `trained` (with `linear`, of
    <label, logits>: the output error held at `label`), or with `local` the pseudo-gradient of the local
    training unrolled from `trained` (E torch.func.grad steps; with `linear` too, `label` is the one-hot
    label and the wire's summed output error side by side (2C) and the steps' errors are pinned to that sum,
    local.pinned_pseudo_gradients)."""
    fixed = {n: p.detach() for n, p in module.named_parameters() if n not in names}
    buffers = dict(module.named_buffers())

    def logits_at(tr: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(module, ({**fixed, **tr}, buffers), (x,))

    def frame_grads(trained: dict[str, torch.Tensor], x: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        if local is not None and linear:
            onehot, total = label[..., : label.shape[-1] // 2], label[0, label.shape[-1] // 2:]
            return pinned_pseudo_gradients(_error_step(logits_at, x, onehot), trained, local, total)

        def loss(tr: dict[str, torch.Tensor]) -> torch.Tensor:
            return frame_loss(logits_at(tr, x), label, linear)
        return pseudo_gradients(grad(loss), trained, local)

    return frame_grads


def _error_step(logits_at, x: torch.Tensor, onehot: torch.Tensor):
    """local.ErrorStep by torch.func.grad for one frame x (1, ...) of label `onehot` (1, C)."""
    def step(weights: dict[str, torch.Tensor], error: torch.Tensor | None, with_gradients: bool):
        def loss(tr: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            logits = logits_at(tr, x)
            if error is None:  # the dummy's own error, softmax - y, is the cross-entropy's gradient
                return learning.loss(logits, onehot), (torch.softmax(logits, -1) - onehot)[0]
            return (logits[0] * error).sum(), error
        if not with_gradients:
            return {}, loss(weights)[1]
        return grad(loss, has_aux=True)(weights)
    return step


def frame_gradients(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                    names: list[str] | None = None, frame_params: dict[str, torch.Tensor] | None = None,
                    local: LocalTraining | None = None) -> dict[str, torch.Tensor]:
    """Per-frame gradients, vectorised: frame i's entry equals
    `learning.gradients(module, inputs[i:i+1], labels[i:i+1], names)`; inputs (N, *shape), labels
    (N,) ids or (N, C) soft; result[name] is (N, *param.shape). With `local`: each frame's
    pseudo-gradient -delta / lr of that local training on it alone."""
    names = list(names) if names is not None else learning.parameter_names(module)
    if labels.dim() == 1:  # class ids as one-hot soft labels: the same loss, vmapped without nll_loss
        logits_size = int(module(inputs[:1]).shape[-1])
        labels = F.one_hot(labels.long(), logits_size).to(inputs.dtype)
    frame_grads = _functional(module, names, local)
    shared = {n: p.detach() for n, p in module.named_parameters() if n in names}
    trained, dim = (shared, None) if frame_params is None else (frame_params, 0)
    per_frame = vmap(lambda tr, x, y: frame_grads(tr, x[None], y[None]), in_dims=(dim, 0, 0))
    return per_frame(trained, inputs, labels)


class FrameMatching:
    """The per-frame L2 gradient-matching objective over packed variables z (k, D): the first
    prod(input_shape) entries of a row are the frame's dummy input, the rest (joint labels only)
    its label logits. `objective(z, rows) -> (loss (k,), d loss / d z (k, D))` for frames `rows`.
    `relative`: each frame's loss over its tapped gradient's squared norm, times `unit` (LOSS_UNIT);
    `errors` (N, C): match with each frame's output error held there (base.output_error) instead of
    taking the dummy's own at `labels`."""

    def __init__(self, case: BatchedGradientCase, labels: torch.Tensor | None, relative: bool = False,
                 unit: float = 1.0, errors: torch.Tensor | None = None) -> None:
        self.names, self.shape = case.names, case.input_shape
        norm2 = case.gradient_norm2()
        self.scale = (norm2.clamp_min(1e-30).reciprocal() if relative else torch.ones_like(norm2)) * unit
        self.n_x = math.prod(self.shape)
        self.joint = labels is None
        self.dim = self.n_x + (case.num_classes if self.joint else 0)
        self.targets = {n: case.gradients[n] for n in self.names}
        # fixed class ids enter as one-hot soft labels: the same cross-entropy, without the
        # nll_loss decomposition that vmap runs in Python on every call
        self.labels = None if labels is None else F.one_hot(labels.long(), case.num_classes).to(torch.float32)
        self.linear = errors is not None and not self.joint
        self.pinned = self.linear and case.local is not None  # several steps: their errors' sum is held
        if self.pinned:
            self.labels = torch.cat([self.labels, errors.to(case.device, torch.float32)], -1)
        elif self.linear:
            self.labels = errors.to(case.device, torch.float32)
        self.frame_params = case.frame_params
        self._all = torch.arange(case.frames, device=case.device)
        self._module, self._buffers = case.module, dict(case.module.named_buffers())
        params = dict(case.module.named_parameters())
        self._fixed = {n: p.detach() for n, p in params.items() if n not in self.names}
        self._shared = {n: params[n].detach() for n in self.names}
        self.local = case.local
        frame_grads = _functional(case.module, self.names, case.local, self.linear)
        self._pinned_grads = frame_grads if self.pinned else None  # one frame's, without vmap (_single)
        # per-frame parameter gradients under vmap; the matching loss and its gradient w.r.t. z are
        # taken outside it by plain autograd (frames are independent, so d sum / d z_i = d loss_i / d z_i),
        # about 10% faster than an outer vmap(grad_and_value) level on CPU
        self._frame_grads = {per: vmap(lambda tr, x, y: frame_grads(tr, x[None], y[None]),
                                       in_dims=(0 if per else None, 0, 0)) for per in (False, True)}

    def __call__(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`rows`: distinct frame ids in increasing order (the engine's live rows), so a call with as
        many rows as frames is every frame in order. No host sync."""
        if rows.numel() <= SINGLE_BELOW:  # one frame: plain autograd, which skips vmap's overhead
            parts = [self._single(z[k:k + 1], rows[k:k + 1]) for k in range(rows.numel())]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        whole = rows.numel() == self._all.numel()
        pick = (lambda t: t) if whole else (lambda t: t.index_select(0, rows))
        targets = {n: pick(t) for n, t in self.targets.items()}
        labels = None if self.labels is None else pick(self.labels)
        per = self.frame_params is not None
        trained = {n: pick(t) for n, t in self.frame_params.items()} if per else self._shared
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            x = z[:, : self.n_x].view(-1, *self.shape)
            y = torch.softmax(z[:, self.n_x:], -1) if self.joint else labels
            grads = self._frame_grads[per](trained, x, y)
            f = sum(((grads[n] - targets[n]) ** 2).flatten(1).sum(1) for n in self.names) * pick(self.scale)
            (g,) = torch.autograd.grad(f.sum(), z)
        return f.detach(), g

    def _single(self, z: torch.Tensor, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same loss and gradient for one frame (`row`: its id, shape (1,)), without vmap; the
        frame's tensors are picked on the device (no host sync)."""
        pick = lambda t: t.index_select(0, row)[0]  # noqa: E731
        source = self._shared if self.frame_params is None else {n: pick(t) for n, t in self.frame_params.items()}
        with torch.enable_grad():
            zi = z[0].detach().requires_grad_(True)
            trained = {n: t.detach().requires_grad_(True) for n, t in source.items()}
            x = zi[: self.n_x].view(1, *self.shape)
            y = torch.softmax(zi[self.n_x:], -1)[None] if self.joint else pick(self.labels)[None]
            if self._pinned_grads is not None:
                grads = self._pinned_grads(trained, x, y)
            else:
                grads = pseudo_gradients(self._autograd_steps(x, y), trained, self.local)
            loss = sum(((g - pick(self.targets[n])) ** 2).sum() for n, g in grads.items()) * pick(self.scale)
            (gz,) = torch.autograd.grad(loss, zi)
        return loss.detach().reshape(1), gz.detach()[None]

    def _autograd_steps(self, x: torch.Tensor, y: torch.Tensor):
        """step_gradients for one frame by autograd (create_graph: differentiable in x)."""
        def step_gradients(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            logits = functional_call(self._module, ({**self._fixed, **weights}, self._buffers), (x,))
            grads = torch.autograd.grad(frame_loss(logits, y, self.linear), list(weights.values()),
                                        create_graph=True)
            return dict(zip(weights, grads))
        return step_gradients


@dataclass(frozen=True)
class BatchedStopConfig:
    """Per frame: success, when a frame is frozen, and when a start ends early.

    `threshold` is the success rule (the relative loss < 1e-8; the paper's absolute 1e-5 in its preset):
    a start that ends below it is a success
    (no more restarts), and the success figures count it. `stop_loss` freezes a frame once its
    loss is below it: 0 (the default, and dlg's): never, every frame is polished to the end of its
    start, which gains ~8 dB over stopping at the threshold; None: at the threshold. It is tested
    as dlg tests it: every `stop_every` iterations (None: lbfgs.max_iter, dlg's step; 1: after
    every iteration) on the loss at the previous test.
    `patience` iterations (None: 2 x lbfgs.max_iter, dlg's "two steps without progress"; 0:
    never) without a relative fall of `min_progress` end a start; so does a loss that has not
    halved within `slow_steps` steps (x lbfgs.max_iter iterations) of its last halving (dlg's
    `patience`; None / 0: never).
    """

    threshold: float = 1e-8  # as dlg's stop.threshold (relative); the paper preset: 1e-5 absolute
    stop_loss: float | None = 0.0
    stop_every: int | None = None
    patience: int | None = None
    min_progress: float = 0.0
    slow_steps: int | None = 50
    relative: bool = True  # as dlg's stop.relative: loss over the tapped gradient's squared norm

    def check(self) -> None:
        require(self.threshold >= 0 and (self.stop_loss is None or self.stop_loss >= 0) and self.min_progress >= 0,
                f"threshold, stop_loss and min_progress must be >= 0 "
                f"(got {self.threshold}, {self.stop_loss}, {self.min_progress})")
        require(self.stop_every is None or self.stop_every >= 1, f"stop_every must be >= 1, got {self.stop_every}")
        require(all(v is None or v >= 0 for v in (self.patience, self.slow_steps)),
                f"patience and slow_steps must be >= 0 or none (got {self.patience}, {self.slow_steps})")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs on its device (results do not depend on it).

    `check_every`: L-BFGS iterations between the engine's read-backs to the host (restarts, frames
    done, refills, progress; None: 20 on CUDA, 1 on the CPU, where a read-back is free and a frame
    idling until it is not); between them the loop makes no host sync when `sync_free` (None: on
    CUDA; on the CPU the line search asks whether a phase has rows, which costs nothing there and
    saves ~10%). `rows`: at most this many frames are optimised at once, the rest queue and take
    the rows of frames that finish (0: all)."""

    check_every: int | None = None
    rows: int = 256
    sync_free: bool | None = None

    def check(self) -> None:
        require((self.check_every is None or self.check_every >= 1) and self.rows >= 0,
                f"check_every must be >= 1 and rows >= 0 (got {self.check_every}, {self.rows})")


@dataclass(frozen=True)
class BatchedConfig:
    """dlg's / idlg's protocol per frame: an iteration budget of iterations x lbfgs.max_iter L-BFGS
    iterations per start, `restarts` starts in all; `progress` shows a bar over frames; `engine`:
    how it runs on the device."""

    iterations: int = 300
    restarts: int = 10
    init: Literal["normal", "uniform"] = "normal"
    progress: bool = False
    known_error: bool = True  # as dlg's: fixed labels match with the output error read off the wire
    engine: EngineConfig = field(default_factory=EngineConfig)
    lbfgs: LbfgsConfig = field(default_factory=LbfgsConfig)
    stop: BatchedStopConfig = field(default_factory=BatchedStopConfig)

    # dlg's paper loop per frame: its L-BFGS settings and budget, every frame run to the end of
    # its start (no freezing on success, no abandoning a slow start)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {
        **DLGConfig.PRESETS["paper"], "stop.stop_loss": 0.0, "stop.stop_every": None, "stop.patience": None,
        "stop.min_progress": 0.0, "stop.slow_steps": None, "stop.relative": False, "known_error": False}}

    def check(self) -> None:
        require(self.iterations >= 1 and self.restarts >= 1,
                f"iterations and restarts must be >= 1 (got {self.iterations}, {self.restarts})")


class BatchedLbfgsAttack(StopRules, GradientInversionAttack):
    """dlg / idlg over N frames at once, each frame its own L-BFGS run: `strong_wolfe` -> torch's
    strong-Wolfe search per frame (the trial steps dlg takes on that frame alone), None -> torch's
    fixed step."""

    Config = BatchedConfig
    joint_labels: ClassVar[bool] = True

    def options(self) -> LBFGSOptions:
        """The engine's settings for this config."""
        c, lb, st, en = self.config, self.config.lbfgs, self.config.stop, self.config.engine
        slow = st.slow_steps * lb.max_iter if st.slow_steps else None
        unit = self.unit  # the objective is in these units (base.LOSS_UNIT), so are its thresholds
        return LBFGSOptions(max_iter=c.iterations * lb.max_iter, restarts=c.restarts - 1, threshold=st.threshold * unit,
                            stop=(st.threshold if st.stop_loss is None else st.stop_loss) * unit,
                            history=lb.history_size,
                            lr=lb.lr, line_search=lb.line_search or "fixed", tolerance_change=1e-12,
                            patience=(2 * lb.max_iter if st.patience is None else st.patience) or None,
                            min_progress=st.min_progress,
                            stop_every=lb.max_iter if st.stop_every is None else st.stop_every, slow_patience=slow,
                            check_every=en.check_every, max_rows=en.rows or None, sync_free=en.sync_free)

    def describe(self) -> dict[str, Any]:
        o = self.options()
        return {**super().describe(), "optimizer": "lbfgs", "joint_labels": self.joint_labels,
                "engine": "batched (torch.func vmap, per-frame L-BFGS)",
                "loss": "sum of squared gradient differences (L2)"
                        + (" over the tapped gradient's squared norm" if self.relative_loss else ""),
                "known_error": "fixed labels: each frame's dummy gradient is taken with the output error held at "
                               "its last layer's bias gradient; a FedAvg update of several local steps: the steps' "
                               "errors pinned to sum to that bias pseudo-gradient (reported loss: its own "
                               "gradient's)"
                               if self.config.known_error and not self.joint_labels else None,
                "iteration": f"{self.config.lbfgs.max_iter} L-BFGS iterations (dlg's step of up to "
                             f"{self.config.lbfgs.max_iter} evaluations)",
                "engine_options": {"max_iter": o.max_iter, "stop": o.stop, "stop_every": o.stop_every,
                                   "patience": o.patience, "slow_patience": o.slow_patience,
                                   "line_search": o.line_search, "check_every": o.check_every,
                                   "max_rows": o.max_rows, "sync_free": o.sync_free},
                "host_syncs": "one read-back every check_every iterations (None: 20 on CUDA, 1 on the CPU); "
                              "none between where sync_free (None: on CUDA)",
                "slow_rule": "a start ends when its best loss has not halved within slow_steps steps of its "
                             "last halving (dlg's patience rule)"}

    @property
    def unit(self) -> float:
        """What one unit of the reported loss is worth to the optimiser (LOSS_UNIT where relative)."""
        return LOSS_UNIT if self.config.stop.relative else 1.0

    def batch_labels(self, case: BatchedGradientCase) -> torch.Tensor | None:
        """Per-frame class ids to hold fixed, or None for joint soft labels."""
        return None

    def reconstruct(self, case: GradientCase) -> GradientResult:
        """Recover every frame of a BatchedGradientCase (a plain batch-1 case is one frame)."""
        if not isinstance(case, BatchedGradientCase):
            case = BatchedGradientCase.from_cases([case])
        self.check_access(case)
        start = time.perf_counter()
        labels = self.batch_labels(case)
        relative, unit = self.config.stop.relative, self.unit
        errors = output_error(case) if self.config.known_error and labels is not None else None
        objective = FrameMatching(case, labels, relative, unit, errors)
        n = case.frames

        def init(rows: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
            zs = []
            for r, k in zip(rows.tolist(), starts.tolist()):
                x0, y0 = dummy_start(case, case.frame_seed(r) + k, self.config.init, labels is None)
                zs.append(x0.flatten() if y0 is None else torch.cat([x0.flatten(), y0.flatten()]))
            return torch.stack(zs)

        bar = tqdm(total=n, desc=self.name, unit="frame", leave=False, disable=not self.config.progress)

        def progress(done: int, total: int) -> None:
            if done != bar.n:
                bar.update(done - bar.n)

        thresholds = self.success_thresholds(case)
        assert thresholds is not None  # StopRules: always a rule
        options = replace(self.options(), row_thresholds=thresholds * unit)
        try:
            out = minimize(objective, init, n, options, progress)
        finally:
            bar.close()
        x = out.z[:, : objective.n_x].reshape(n, *case.input_shape)
        found = out.z[:, objective.n_x:].argmax(-1) if labels is None else labels
        loss = out.loss / unit
        if errors is not None:  # the reported loss is the dummy's own gradient's distance, at the labels
            loss = FrameMatching(case, labels, relative)(out.z, torch.arange(n, device=out.z.device))[0]
        success = loss < thresholds
        extra: dict[str, Any] = {"restarts_used": out.starts.tolist(), "iterations": out.iterations.tolist(),
                                 "evaluations": out.evaluations.tolist(), "batched_calls": out.calls,
                                 "seconds": time.perf_counter() - start, "frames": n}
        if case.labels is not None:
            extra["label_accuracy"] = float((found == case.labels).float().mean())
        inputs = x.clamp(0, 1) if case.is_image else x
        return GradientResult(inputs.detach(), found.detach().to(torch.long), loss.detach(), success.detach(), extra)

    def reconstruct_many(self, cases: list[GradientCase], weights: list[dict[str, torch.Tensor]] | None = None
                         ) -> list[GradientResult]:
        """Attack batch-1 cases together, in one optimisation (finished frames' rows refilled from
        the rest, `rows` at a time); one GradientResult per case, as `reconstruct(case)` gives.
        `weights`: see BatchedGradientCase.from_cases."""
        batch = self.reconstruct(BatchedGradientCase.from_cases(cases, weights))
        shared = {k: v for k, v in batch.extra.items() if not isinstance(v, list)}
        results = []
        for i, c in enumerate(cases):
            extra = {**shared, **{k: v[i] for k, v in batch.extra.items() if isinstance(v, list)}}
            if c.labels is not None:
                extra["label_accuracy"] = label_accuracy(batch.labels[i:i + 1], c.labels)
            results.append(GradientResult(batch.inputs[i:i + 1], batch.labels[i:i + 1], batch.loss[i:i + 1],
                                          batch.success[i:i + 1], extra))
        return results


@register
class DLGBatched(BatchedLbfgsAttack):
    """DLG on many frames at once: dummy inputs and soft labels per frame, jointly."""

    name: ClassVar[str] = "dlg-batched"


@register
class IDLGBatched(BatchedLbfgsAttack):
    """iDLG on many frames at once: each frame's label from its own last-layer gradient."""

    name: ClassVar[str] = "idlg-batched"
    joint_labels: ClassVar[bool] = False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": "inferred per frame from its last layer's gradient (iDLG)"}

    def batch_labels(self, case: BatchedGradientCase) -> torch.Tensor:
        return torch.cat([infer_labels_idlg(case.frame(i)) for i in range(case.frames)])


__all__ = ["BatchedConfig", "BatchedGradientCase", "BatchedLbfgsAttack", "BatchedStopConfig", "DLGBatched",
           "FrameMatching", "IDLGBatched", "frame_gradients"]
