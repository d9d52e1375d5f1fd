"""The gradient-inversion family: one verb, `reconstruct`, and the threat-model case it runs in.

Following breaching, the case (who holds what) is kept apart from the attack: the attack gets
the gradient that crossed the wire plus what the case grants (the trained module with the
round's weights, the batch size, the input shape), nothing else. Gradients of dummy inputs
are taken with `splitleak.learning.gradients`, the one definition the edge also uses. A FedAvg update
of several local steps carries its local training (`case.local`): its `gradients` are the recorded
delta over -lr, and the dummy gradients are the same pseudo-gradient of the local training simulated
on the dummy batch (adversary/gradient/local.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from adversary.attack import Attack
from adversary.gradient.local import LocalTraining, autograd_error_step, pinned_pseudo_gradients, unrolled_gradients
from adversary.losses import cosine_distance, gradient_distance_l2, total_variation
from splitleak import learning
from splitleak.errors import SplitleakError

__all__ = ["FLOOR_MARGIN", "GradientCase", "GradientResult", "GradientInversionAttack", "LOSS_UNIT", "adam",
           "best_of_restarts", "check_floors",
           "cosine_distance", "dummy_gradients", "error_gradients", "gradient_distance_l2", "infer_labels_idlg",
           "last_layer_gradients", "last_layer_names", "output_error", "total_variation"]

INPUT_KINDS = ("image", "features")
# The L-BFGS optimisers see a relative loss (over the tapped gradient's squared norm) times LOSS_UNIT: torch's
# L-BFGS drops curvature pairs with s'y < 1e-10 and ends a search on changes below tolerance_change, absolute
# constants that bind near relative losses of 1e-10, where an unsaturated frame is still gaining decibels
# (frame 0 of the saturated stream: 27.1 dB at unit 1, 45.5 dB at 1e4). Every reported loss is in relative units.
LOSS_UNIT = 1e6
# A frame succeeds below max(the attack's threshold, FLOOR_MARGIN x its update's rounding floor): the truth sits
# at ~1x its floor (local.rounding_floor), so the margin admits a dummy within a few floors of it.
FLOOR_MARGIN = 10.0


@dataclass
class GradientCase:
    """What the attacker holds in one round: the module, its gradient, and the batch's shape.

    `module` is the trained part with the round's weights (eval mode, on `device`);
    `gradients` maps parameter names to float32 gradients in the order they crossed the wire;
    `input_shape` is one input's shape: (3, H, W) images for split `none`, the head's feature
    shape otherwise; `labels` are class ids (B,) if the update carried them.
    `local`: the FedAvg local training behind the update when it took several steps; then `gradients`
    hold the update's delta over -lr (the pseudo-gradient). None: a gradient (fedsgd, or one step,
    whose delta over -lr is its gradient): the attacks' fast path, exactly as on fedsgd.
    `rounding_floor`: the relative gradient loss the true batch itself leaves, from the float32 rounding of a
    FedAvg delta (local.rounding_floor; 0 for a gradient): the success rule never asks for less.
    """

    module: nn.Module
    gradients: dict[str, torch.Tensor]
    batch_size: int
    input_shape: tuple[int, ...]
    num_classes: int
    labels: torch.Tensor | None = None
    input_kind: str = "image"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    grants: frozenset[str] = frozenset({"gradients", "model_weights", "model_architecture", "batch_size"})
    local: LocalTraining | None = None
    rounding_floor: float = 0.0

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self._check_local()
        check_floors([self.rounding_floor])
        if self.input_kind not in INPUT_KINDS:
            raise SplitleakError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise SplitleakError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        self.batch_size = int(self.batch_size)
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.gradients = {k: v.detach().to(self.device, torch.float32) for k, v in self.gradients.items()}
        if self.labels is not None:
            self.labels = self.labels.to(self.device, torch.long).reshape(-1)
        if self.labels is not None and self.labels.numel() != self.batch_size:
            raise SplitleakError(f"{self.labels.numel()} labels for a batch of {self.batch_size}")
        params = dict(self.module.named_parameters())
        for name, grad in self.gradients.items():
            if name not in params:
                raise SplitleakError(f"gradient {name!r} names no parameter of the trained module")
            if tuple(grad.shape) != tuple(params[name].shape):
                raise SplitleakError(f"gradient {name!r} has shape {list(grad.shape)}, the parameter has "
                                     f"{list(params[name].shape)}")
            params[name].requires_grad_(True)

    def _check_local(self) -> None:
        if self.local is not None and not isinstance(self.local, LocalTraining):
            raise SplitleakError(f"local must be a LocalTraining or None, got {type(self.local).__name__}")
        if self.local is not None and self.local.steps == 1:
            self.local = None  # one step: the pseudo-gradient is the gradient (fast path)

    def rounding_floors(self) -> torch.Tensor:
        """Per frame (here one update: shape (1,)), the relative loss the wire's rounding leaves at the truth."""
        return torch.tensor([float(self.rounding_floor)], device=self.device)

    @property
    def local_steps(self) -> int:
        """The SGD steps the update's local training took (1 for a gradient)."""
        return 1 if self.local is None else self.local.steps

    @property
    def names(self) -> list[str]:
        """The parameter names the gradient covers, in wire order."""
        return list(self.gradients)

    @property
    def is_image(self) -> bool:
        return self.input_kind == "image"

    def gradient_norm2(self) -> torch.Tensor:
        """The tapped gradient's squared L2 norm over every parameter (a 0-dim tensor; no host sync)."""
        return sum(g.double().pow(2).sum() for g in self.gradients.values()).float()  # type: ignore[union-attr]


@dataclass
class GradientResult:
    """What an attack recovered: inputs (B, *input_shape), class ids (B,), the final gradient-matching
    loss per frame (B,) (a batch loss is repeated over the batch), success per frame, and extras."""

    inputs: torch.Tensor
    labels: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


class GradientInversionAttack(Attack):
    """Base class: subclasses set `name`, `access` and `Config`, and implement `reconstruct`.

    `loss_threshold` is the gradient loss below which the attack counts a frame as recovered
    (None when the loss has no absolute scale, e.g. cosine distance).
    """

    family: ClassVar[str] = "gradient"
    access: ClassVar[frozenset[str]] = frozenset({"gradients", "model_weights", "model_architecture", "batch_size"})

    @property
    def loss_threshold(self) -> float | None:
        return None

    @property
    def relative_loss(self) -> bool:
        """True when the attack's loss is the L2 distance divided by the tapped gradient's squared norm."""
        return False

    # whether the attack matches through dummy_gradients, which simulates a multi-step FedAvg update's
    # local training; a closed-form attack (R-GAP) reads one gradient and sets it False
    unrolls_local_steps: ClassVar[bool] = True

    def success_thresholds(self, case: GradientCase) -> torch.Tensor | None:
        """Per frame of `case` (N,), the loss below which it counts as recovered, in the loss's own units:
        `loss_threshold`, raised to FLOOR_MARGIN x the update's rounding floor where that is higher (a FedAvg
        delta's float32 rounding: no dummy can match it more closely than the truth does). None without a rule."""
        if self.loss_threshold is None:
            return None
        floors = case.rounding_floors() * FLOOR_MARGIN
        if not self.relative_loss:  # an absolute L2 loss: the floor in the update's own units
            floors = floors * case.gradient_norm2()
        return floors.clamp_min(self.loss_threshold)

    def check_access(self, case: Any) -> None:
        super().check_access(case)
        steps = getattr(case, "local_steps", 1)
        if steps > 1 and not self.unrolls_local_steps:
            raise SplitleakError(f"attack {self.name!r} inverts single gradients; this update is a FedAvg delta of "
                                 f"{steps} local steps (dlg, idlg, ig, fvi and the batched engine simulate them)")

    def reconstruct(self, case: GradientCase) -> GradientResult:
        """Recover the batch behind `case.gradients`."""
        raise NotImplementedError


def check_floors(floors: Any) -> None:
    """SplitleakError unless every rounding floor is a finite number >= 0."""
    for f in floors:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0:
            raise SplitleakError(f"a rounding floor must be a finite number >= 0, got {f!r}")


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam, fused (one kernel per step, no host sync) where the parameters are on CUDA; torch's
    default elsewhere (the fused CPU kernel is not faster for the few tensors an attack optimises)."""
    fused = all(p.is_cuda for p in params)
    return torch.optim.Adam(params, lr=lr, fused=True) if fused else torch.optim.Adam(params, lr=lr)


def best_of_restarts(run: Any, restarts: int, threshold: float | None = None,
                     loss: Any = lambda result: result[1]) -> tuple[Any, list[float]]:
    """Call run(restart) for restart = 0, 1, ...; `loss(result)` is a result's loss (default: its [1]).
    Returns the lowest-loss result and every result's loss; stops early once a loss is below `threshold`."""
    best, losses = None, []
    for restart in range(restarts):
        result = run(restart)
        value = loss(result)
        losses.append(value)
        if best is None or value < loss(best):
            best = result
        if threshold is not None and value < threshold:
            break
    assert best is not None, "restarts must be >= 1"
    return best, losses


def dummy_gradients(case: GradientCase, inputs: torch.Tensor, labels: torch.Tensor,
                    create_graph: bool = True) -> list[torch.Tensor]:
    """Gradients of the case's module at (inputs, labels) for the case's parameters, in wire order.

    `labels` are class ids (B,) or soft labels (B, C); with create_graph the result is
    differentiable w.r.t. inputs (and soft labels). For a multi-step FedAvg case: the pseudo-gradient
    -delta / lr of its local training unrolled on (inputs, labels) from the round's weights.
    """
    if case.local is not None:
        grads = unrolled_gradients(case.module, inputs, labels, case.names, case.local, create_graph)
        return [grads[n] for n in case.names]
    grads = learning.gradients(case.module, inputs, labels, names=case.names, create_graph=create_graph)
    return [grads[n] for n in case.names]


def error_gradients(case: GradientCase, inputs: torch.Tensor, error: torch.Tensor,
                    create_graph: bool = True, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Gradients of the case's module at `inputs` (batch 1) when the output error dL/dlogits is held at
    `error` (C,) instead of the dummy's own softmax(logits) - y: the gradient of <error, logits>.
    For a FedAvg update of several local steps `error` is the steps' summed error (`output_error`) and
    `labels` (1,) the frame's class: the pseudo-gradient with the steps' errors pinned to that sum
    (local.pinned_pseudo_gradients)."""
    params = dict(case.module.named_parameters())
    if case.local is not None:
        if labels is None:
            raise SplitleakError("holding the output error over several local steps needs the frame's label")
        onehot = F.one_hot(labels.reshape(-1)[:1].long(), case.num_classes).to(inputs.dtype)
        with torch.enable_grad():
            start = {n: params[n] for n in case.names}
            leaves = {n: w.detach().requires_grad_(True) for n, w in start.items()}
            grads = pinned_pseudo_gradients(autograd_error_step(case.module, inputs, onehot), start, case.local,
                                            error, own_start=leaves)
        return [grads[n] if create_graph else grads[n].detach() for n in case.names]
    value = (case.module(inputs) * error).sum()
    return list(torch.autograd.grad(value, [params[n] for n in case.names], create_graph=create_graph))


def output_error(case: GradientCase) -> torch.Tensor | None:
    """The output error dL/dlogits = softmax(logits) - onehot(y) of a batch-1 update, read exactly off the
    last layer's bias gradient (iDLG's / R-GAP's analytic step); for a FedAvg update of several local steps
    the sum of the steps' errors (the bias pseudo-gradient); None at batch > 1 or without that bias.

    With it the dummy's gradient can be taken with the true error held fixed (`error_gradients`): at a
    saturated model the error's scale 1 - p_y moves exponentially with the dummy's logits, and holding it
    removes that factor from the landscape; at the true input both gradients agree exactly (for several
    steps the errors are pinned to the wire's sum, local.held_errors, exact at the true input too)."""
    _, bias = last_layer_gradients(case)
    return None if bias is None or case.batch_size != 1 else bias


def last_layer_names(case: GradientCase) -> tuple[str | None, str | None]:
    """(weight name, bias name or None) of the last layer that outputs C classes: the last wire
    parameter that is a (C, D) matrix, and its (C,) bias named like it with `bias`."""
    c, shapes = case.num_classes, {n: tuple(p.shape) for n, p in case.module.named_parameters()}
    weight_name = next((n for n in reversed(case.names) if len(shapes[n]) == 2 and shapes[n][0] == c), None)
    if weight_name is None:
        return None, None
    bias_name = weight_name.rsplit(".", 1)[0] + ".bias" if "." in weight_name else "bias"
    return weight_name, (bias_name if bias_name in case.gradients and shapes[bias_name] == (c,) else None)


def last_layer_gradients(case: GradientCase) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight gradient (C, D), bias gradient (C,) or None) of the last layer that outputs C classes
    (`last_layer_names`); a BatchedGradientCase gives them with the frames first."""
    weight_name, bias_name = last_layer_names(case)
    if weight_name is None:
        return None, None
    return case.gradients[weight_name], (None if bias_name is None else case.gradients[bias_name])


def _greedy_counts(scores: torch.Tensor, batch: int, unit: float) -> torch.Tensor:
    """Pick `batch` labels by repeatedly taking the lowest score and raising it by `unit`."""
    scores = scores.clone().double()
    picked = []
    for _ in range(batch):
        c = int(torch.argmin(scores))
        picked.append(c)
        scores[c] += unit
    return torch.tensor(sorted(picked), dtype=torch.long)


def infer_labels_idlg(case: GradientCase) -> torch.Tensor:
    """Class ids (B,) from the last layer's gradient (iDLG, Zhao et al. 2020), on the case's device.

    Batch 1: with cross-entropy the bias gradient is softmax(z) - onehot(y), so its only negative
    entry is the label; without a bias the weight gradient's rows are (p_c - y_c) h with h >= 0
    after sigmoid / ReLU, so the label is the argmin of the row sums.
    Batch B > 1 (the LLG-style extension, Wainakh et al. 2022): the summed bias gradient
    B * g_b = sum_i (p_i - y_i) has about -1 per occurrence of a label, so labels are picked
    greedily: take the most negative entry, add 1, repeat B times (repeated labels come out
    repeated). Without a bias the same greedy runs on the row sums, the unit being the most
    negative row sum's magnitude (one occurrence). Order is sorted: a batch's order is not
    recoverable from its gradient.
    FedAvg of E local steps: the pseudo-gradient -delta / lr is the sum of the E steps' gradients, each
    step's bias gradient softmax(z_k) - onehot(y) (batch 1) with its only negative entry at y, so the
    sign rule holds at any lr and any E; at batch B the label counts are E per occurrence, so the scores
    are divided by E.
    """
    weight, bias = last_layer_gradients(case)
    if weight is None:
        raise SplitleakError(f"no last-layer gradient with {case.num_classes} rows on the wire: "
                             f"cannot infer labels (names: {', '.join(case.names)})")
    b = case.batch_size
    if bias is not None:
        scores, unit = bias * b / case.local_steps, 1.0
    else:
        scores = weight.sum(1) * b
        unit = float(-scores.min()) if float(scores.min()) < 0 else 1.0
    if b == 1:
        return torch.argmin(scores).reshape(1).to(case.device)
    return _greedy_counts(scores.cpu(), b, unit).to(case.device)
