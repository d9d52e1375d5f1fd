"""R-GAP: the recursive closed-form gradient attack (Zhu & Blaschko, ICLR 2021), batch size 1.

The trained module is read as a chain of linear layers (Conv2d, Linear; bias optional) and
invertible element-wise maps (leaky ReLU, sigmoid, input normalisation, flatten). Walking it
from the output back to the input:

1. Last layer (Linear to C classes): its weight gradient is the rank-1 matrix g x^T with
   g = softmax(logits) - onehot(y). The bias gradient is g itself; without a bias g is known up
   to a scale a = 1 - p_y from the rows' inner products, and a is the one value for which
   softmax(W x / a ...) reproduces g (a 1-D search). Then x = dW^T g / |g|^2.
2. Every earlier linear layer, knowing its output z (the activation inverted) and k = dL/dz
   (propagated back, times the activation's derivative), solves for its input x the stacked
   linear system  k * unfold(x)^T = dW  (gradient constraints)  and  W * unfold(x) = z - b
   (forward constraints); convolutions are Toeplitz systems written through unfold.
   The system is solved by least squares through its normal matrix, assembled directly from
   the unfold index map (no tall matrix is built): a rank-revealing pivoted Cholesky, and
   torch.linalg.lstsq's minimum-norm solution where the rank falls short.
3. The rank of each system against its number of unknowns says where recovery is unique
   (`rank_report`): rank < unknowns means many inputs give the same gradient there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import cho_solve
from scipy.linalg.lapack import dpstrf
from torch import nn

from adversary.configs import require
from adversary.gradient.base import (GradientCase, GradientInversionAttack, GradientResult, dummy_gradients,
                                     gradient_distance_l2)
from adversary.registry import register
from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models.stages import Normalize
from splitleak.models.weights import seeded

LINEAR = (nn.Conv2d, nn.Linear)
ELEMENTWISE = (nn.LeakyReLU, nn.Sigmoid, Normalize, nn.Flatten)
RCOND = 1e-10  # normal-matrix pivots below RCOND * its largest diagonal count as zero (~1e-5 in singular values)
SIGMOID_EPS = 1e-6


@dataclass
class Op:
    """One step of the chain: a leaf module, its qualified name and per-sample in/out shapes."""

    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def chain(module: nn.Module, input_shape: tuple[int, ...]) -> list[Op]:
    """The module's leaves in forward order (through nested nn.Sequential), with their shapes.

    SplitleakError for a layer R-GAP cannot go through (pooling, ReLU, BatchNorm, custom forwards).
    """
    leaves: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, m: nn.Module) -> None:
        if isinstance(m, nn.Sequential):
            for child_name, child in m.named_children():
                walk(f"{prefix}.{child_name}" if prefix else child_name, child)
        elif isinstance(m, nn.Identity):
            return
        elif isinstance(m, LINEAR + ELEMENTWISE):
            leaves.append((prefix, m))
        else:
            raise SplitleakError(f"rgap cannot invert layer {prefix or 'module'!r} ({type(m).__name__}): "
                                 f"it needs bias-free or biased Conv2d/Linear layers with invertible "
                                 f"activations (leaky ReLU, sigmoid)")

    walk("", module)
    if not leaves or not isinstance(leaves[-1][1], nn.Linear):
        raise SplitleakError("rgap needs a module that ends in a Linear layer")
    ops, shape = [], tuple(input_shape)
    with torch.no_grad():
        x = torch.zeros(1, *shape, device=_device(module))
        for name, m in leaves:
            if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros"):
                raise SplitleakError(f"rgap supports plain convolutions only, not {name!r} ({m})")
            y = m(x)
            ops.append(Op(name, m, tuple(x.shape[1:]), tuple(y.shape[1:])))
            x = y
    return ops


def unreadable(module: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """Why R-GAP's closed form cannot read `module` (its chain's one-line reason); None where it can."""
    try:
        chain(module, input_shape)
    except SplitleakError as err:
        return str(err)
    return None


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# ---- element-wise steps: recover the step's input from its output, and dL/d input ----

def _back_elementwise(op: Op, h: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = op.module
    if isinstance(m, nn.Flatten):
        return h.reshape(op.in_shape), d.reshape(op.in_shape)
    if isinstance(m, nn.LeakyReLU):
        slope = m.negative_slope
        z = torch.where(h > 0, h, h / slope)
        return z, d * torch.where(z > 0, 1.0, slope).to(d)
    if isinstance(m, nn.Sigmoid):
        s = h.clamp(SIGMOID_EPS, 1 - SIGMOID_EPS)
        return torch.logit(s), d * s * (1 - s)
    shape = (-1,) + (1,) * (len(op.in_shape) - 1)  # Normalize: x = h * std + mean
    mean, std = m.mean.to(h).view(shape), m.std.to(h).view(shape)
    return h * std + mean, d / std


# ---- linear layers: the index map of unfold, the normal equations, the solve ----

def _index_map(op: Op) -> torch.Tensor:
    """(D, P) flat input index of every entry of unfold(x); padding points to n (a dummy slot)."""
    n = math.prod(op.in_shape)
    if isinstance(op.module, nn.Linear):
        return torch.arange(n).unsqueeze(1)
    m = op.module
    ids = torch.arange(1, n + 1, dtype=torch.float64).reshape(1, *op.in_shape)
    cols = F.unfold(ids, m.kernel_size, padding=m.padding, stride=m.stride)[0]  # 0 where padded
    cols = cols.round().long() - 1
    return torch.where(cols < 0, n, cols)


def _scatter_gram(out: torch.Tensor, idx_a: torch.Tensor, idx_b: torch.Tensor, gram: torch.Tensor) -> None:
    """Add gram[a, b] at (idx_a[g, a], idx_b[g, b]) of the flat (n+1, n+1) `out`, for every group g."""
    n1 = math.isqrt(out.numel())
    flat = (idx_a.unsqueeze(2) * n1 + idx_b.unsqueeze(1)).reshape(-1)
    out.index_add_(0, flat, gram.unsqueeze(0).expand(idx_a.shape[0], -1, -1).reshape(-1))


def _scatter_vec(idx: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n + 1, dtype=torch.float64).index_add_(0, idx.reshape(-1), vals.reshape(-1))[:n]


def _solve_linear(op: Op, z: torch.Tensor, k: torch.Tensor, dw: torch.Tensor, bias: torch.Tensor | None,
                  rcond: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """The layer's input from its output z, k = dL/dz and its weight gradient dw (all float64).

    Gradient constraints K U^T = G and forward constraints W U = Z - b, with U = unfold(x) of
    shape (D, P), each block scaled by its operator's Frobenius norm so neither dominates.
    """
    n = math.prod(op.in_shape)
    idx = _index_map(op)  # (D, P)
    w = op.module.weight.detach().to("cpu", torch.float64)
    out_ch = w.shape[0]
    w2, g = w.reshape(out_ch, -1), dw.reshape(out_ch, -1)  # (O, D)
    kk, zz = k.reshape(out_ch, -1), z.reshape(out_ch, -1)  # (O, P)
    if bias is not None:
        zz = zz - bias.detach().to("cpu", torch.float64).reshape(-1, 1)
    sk, sw = kk.square().sum().clamp_min(1e-300), w2.square().sum().clamp_min(1e-300)
    flat = torch.zeros((n + 1) * (n + 1), dtype=torch.float64)  # the last row and column collect padding
    _scatter_gram(flat, idx, idx, kk.T @ kk / sk)
    _scatter_gram(flat, idx.T, idx.T, w2.T @ w2 / sw)
    normal = flat.reshape(n + 1, n + 1)[:n, :n]
    rhs = _scatter_vec(idx, g.T @ kk, n) / sk + _scatter_vec(idx, w2.T @ zz, n) / sw
    x, rank = solve_normal(normal, rhs, rcond)
    grad_eq, fwd_eq = g.numel(), zz.numel()
    report = {"layer": op.name, "kind": "conv" if isinstance(op.module, nn.Conv2d) else "linear",
              "unknowns": n, "equations": grad_eq + fwd_eq, "gradient_equations": grad_eq,
              "forward_equations": fwd_eq, "rank": rank, "unique": rank == n}
    return x.reshape(op.in_shape), report


def solve_normal(normal: torch.Tensor, rhs: torch.Tensor, rcond: float = RCOND) -> tuple[torch.Tensor, int]:
    """Least squares through the normal equations N x = r (N = A^T A): the solution and rank(A).

    A pivoted Cholesky (LAPACK pstrf) reveals the rank at a third of the cost of an SVD; when the
    system is full rank its factor gives the solution, otherwise torch.linalg.lstsq (SVD driver)
    gives the minimum-norm one: recovery is not unique there anyway.
    """
    n = normal.shape[0]
    matrix = np.array(normal.numpy(), order="F")  # one copy, factored in place
    factor, piv, rank, _ = dpstrf(matrix, tol=rcond * float(normal.diagonal().max()), lower=1, overwrite_a=1)
    if rank < n:
        sol = torch.linalg.lstsq(normal, rhs.unsqueeze(1), rcond=rcond, driver="gelsd")
        return sol.solution[:, 0], int(rank)
    order = piv.astype(np.int64) - 1  # Fortran indices; N[order][:, order] = L L^T
    y = cho_solve((factor, True), rhs.numpy()[order], check_finite=False)  # reads the lower triangle only
    x = np.empty_like(y)
    x[order] = y
    return torch.from_numpy(x), n


def _vjp(op: Op, d: torch.Tensor) -> torch.Tensor:
    """dL/d input of a linear layer from dL/d output (the transposed operator; bias irrelevant)."""
    w = op.module.weight.detach().to("cpu", torch.float64)
    x = torch.zeros(1, *op.in_shape, dtype=torch.float64, requires_grad=True)
    m = op.module
    y = F.linear(x, w) if isinstance(m, nn.Linear) else F.conv2d(x, w, stride=m.stride, padding=m.padding)
    (grad,) = torch.autograd.grad(y, x, d.unsqueeze(0))
    return grad[0]


# ---- the last layer: the rank-1 gradient, the label, the scale ----

def label_from_rank_one(dw: torch.Tensor) -> int:
    """Batch 1 without a bias: rows of dW are g_c x with g_y < 0 < g_c (c != y), so the label's row
    is the one whose inner products with the other rows are negative, whatever the signs of x
    (needs 3 classes or more: with 2 the rows differ only in sign)."""
    return int(torch.argmax((dw @ dw.T < 0).sum(1)))


def _scale(v: torch.Tensor, gamma: torch.Tensor, y: int) -> float:
    """The a in (0, 1) with softmax(v / a) - onehot(y) = a * gamma: log grid, then golden section."""
    onehot = F.one_hot(torch.tensor(y), v.numel()).to(v)

    def residual(log_a: float) -> float:
        a = math.exp(log_a)
        return float(((torch.softmax(v / a, 0) - onehot) / a - gamma).norm())

    grid = torch.linspace(math.log(1e-12), 0.0, 600).tolist()
    values = [residual(t) for t in grid]
    i = min(range(len(grid)), key=values.__getitem__)
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if residual(m1) < residual(m2):
            hi = m2
        else:
            lo = m1
    return math.exp((lo + hi) / 2)


def _last_layer(op: Op, dw: torch.Tensor, db: torch.Tensor | None, y: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The last layer's input x and dL/dx from its rank-1 weight gradient, with its report line."""
    w = op.module.weight.detach().to("cpu", torch.float64)
    if db is not None:
        g = db
    else:
        gamma = -(dw @ dw[y]) / dw[y].dot(dw[y])  # g / a, with gamma_y = -1
        x_hat = dw.T @ gamma / gamma.dot(gamma)  # x * a
        g = _scale(w @ x_hat, gamma, y) * gamma
    x = dw.T @ g / g.dot(g)
    n = x.numel()
    report = {"layer": op.name, "kind": "linear", "unknowns": n, "equations": dw.numel(),
              "gradient_equations": dw.numel(), "forward_equations": 0,
              "rank": n if bool(g.abs().max() > 0) else 0, "unique": bool(g.abs().max() > 0)}
    return x, w.T @ g, report


# ---- the recursion ----

def recover(module: nn.Module, input_shape: tuple[int, ...], gradients: dict[str, torch.Tensor],
            label: int, rcond: float = RCOND) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """One input (float64, `input_shape`) behind `gradients` and the per-layer rank report (input side first)."""
    ops = chain(module, input_shape)
    names = {id(p): n for n, p in module.named_parameters()}

    def grad_of(param: torch.Tensor | None) -> torch.Tensor | None:
        if param is None:
            return None
        name = names[id(param)]
        if name not in gradients:
            raise SplitleakError(f"rgap needs the gradient of {name!r}, which is not on the wire")
        return gradients[name].detach().to("cpu", torch.float64)

    last = ops[-1]
    h, d, line = _last_layer(last, grad_of(last.module.weight), grad_of(last.module.bias), label)
    report = [line]
    for op in reversed(ops[:-1]):
        if isinstance(op.module, LINEAR):
            db = grad_of(op.module.bias)
            if isinstance(op.module, nn.Linear) and db is not None:
                d = db  # a linear layer's bias gradient is dL/dz itself: exact, stops error build-up
            x, line = _solve_linear(op, h, d, grad_of(op.module.weight), op.module.bias, rcond)
            h, d = x, _vjp(op, d)
            report.append(line)
        else:
            h, d = _back_elementwise(op, h, d)
    return h, report[::-1]


def rank_report(module: nn.Module, input_shape: tuple[int, ...], seed: int = 0,
                rcond: float = RCOND) -> list[dict[str, Any]]:
    """Per linear layer (input side first): unknowns, equations, rank and whether recovery is unique.

    The rank depends on the gradient, so it is measured on a probe: a seeded random input in
    [0, 1] with label 0, whose gradient is taken exactly as the edge takes it.
    """
    with seeded(seed):
        probe = torch.rand(1, *input_shape, dtype=torch.float32)
    dev = _device(module)
    grads = learning.gradients(module, probe.to(dev), torch.zeros(1, dtype=torch.long, device=dev))
    return recover(module, input_shape, grads, 0, rcond)[1]


def format_rank_report(report: list[dict[str, Any]]) -> str:
    """The rank report as a small text table, one layer a line."""
    lines = [f"{'layer':<16}{'kind':<8}{'unknowns':>10}{'equations':>11}{'rank':>8}  unique"]
    lines += [f"{r['layer']:<16}{r['kind']:<8}{r['unknowns']:>10}{r['equations']:>11}{r['rank']:>8}  "
              f"{'yes' if r['unique'] else 'NO'}" for r in report]
    return "\n".join(lines)


@dataclass(frozen=True)
class RGAPConfig:
    """R-GAP has no loop: the closed form's one numerical tolerance and the success level."""

    rcond: float = RCOND  # normal-matrix pivots below rcond x the largest diagonal count as zero
    threshold: float = 1e-5  # success: the recovered input's L2 gradient distance is below it (as DLG)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {"rcond": RCOND, "threshold": 1e-5}}  # the closed form

    def check(self) -> None:
        require(0 < self.rcond < 1 and self.threshold >= 0,
                f"rcond must be in (0, 1) and threshold >= 0 (got {self.rcond}, {self.threshold})")


@register
class RGAP(GradientInversionAttack):
    """R-GAP: closed-form recovery layer by layer; no iterations, no prior, batch size 1 only.

    A frame counts as recovered when every layer's system is unique (rank == unknowns) and the
    recovered input reproduces the gradient (L2 gradient distance < threshold, as DLG).
    """

    name: ClassVar[str] = "rgap"
    Config = RGAPConfig
    unrolls_local_steps: ClassVar[bool] = False  # its closed form reads one gradient (g x^T), not a sum of steps

    @property
    def loss_threshold(self) -> float:
        return self.config.threshold

    def reconstruct(self, case: GradientCase) -> GradientResult:
        self.check_access(case)
        if case.batch_size != 1:
            raise SplitleakError(f"rgap recovers batch size 1 only, the case has {case.batch_size}")
        label = self._label(case)
        x, report = recover(case.module, case.input_shape, case.gradients, label, self.config.rcond)
        x = x.to(torch.float32).unsqueeze(0)
        if case.is_image:
            x = x.clamp(0, 1)
        x = x.to(case.device)
        labels = torch.tensor([label], device=case.device)
        with torch.enable_grad():
            loss = gradient_distance_l2(dummy_gradients(case, x, labels, create_graph=False),
                                        case.gradients).detach().reshape(1)
        unique = all(r["unique"] for r in report)
        success = (loss < self.success_thresholds(case)) & unique  # type: ignore[operator]
        return GradientResult(x, labels, loss, success, {"rank_report": report, "unique": unique})

    @staticmethod
    def _label(case: GradientCase) -> int:
        if case.labels is not None:
            return int(case.labels[0])
        last = chain(case.module, case.input_shape)[-1].module
        names = {id(p): n for n, p in case.module.named_parameters()}
        if last.bias is not None and names[id(last.bias)] in case.gradients:
            return int(torch.argmin(case.gradients[names[id(last.bias)]]))
        return label_from_rank_one(case.gradients[names[id(last.weight)]].double().cpu())
