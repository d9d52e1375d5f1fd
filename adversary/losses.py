"""The losses every attack family draws on (a leaf: it imports no attack).

Feature inversion follows DO's scale: the feature term is the per-frame MSE normalised by
mean(z^2) (it starts near 1 whatever the split point) and TV is mean-abs. The paper's weights
go with an un-normalised feature loss; one factor, 1/100, maps them (lambda_s 1 -> 0.01,
lambda_txt 10 -> 0.1, lambda_c 5 -> 0.05). Latent terms are means over a frame's latent
entries, so they do not grow with the latent's size. Gradient inversion matches gradients by
squared distance (DLG) or cosine distance (Inverting Gradients).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

PAPER_TO_OURS = 0.01
LAMBDA_S, LAMBDA_TXT, LAMBDA_C = 1.0 * PAPER_TO_OURS, 10.0 * PAPER_TO_OURS, 5.0 * PAPER_TO_OURS


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


def normalise(v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """v_n = (v - mean(v)) / std(v), per sample (over every dim but the first)."""
    flat = v.flatten(1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, keepdim=True)
    return ((flat - mean) / (std + eps)).view_as(v)


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """log(cosh(x)) without overflow: |x| + log1p(exp(-2|x|)) - log 2."""
    a = x.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


def negentropy(v_n: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """The text prior's L_txt = -E[(1/alpha^2) log cosh^2(alpha v_n)], per sample: shape (B,)."""
    return -(2.0 / alpha ** 2) * log_cosh(alpha * v_n).flatten(1).mean(1)


def group_tie(v: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per-frame ||v_k - mean(v over k's group)||^2, averaged over latent entries: shape (B,).
    Frames alone in their group get 0."""
    out = v.new_zeros(v.shape[0])
    for group in groups:
        if len(group) < 2:
            continue
        idx = torch.as_tensor(list(group), device=v.device)
        members = v.index_select(0, idx).flatten(1)
        out = out.index_add(0, idx, ((members - members.mean(0, keepdim=True)) ** 2).mean(1))
    return out


def _as_list(grads: Any) -> list[torch.Tensor]:
    return list(grads.values()) if isinstance(grads, dict) else list(grads)


def gradient_distance_l2(dummy_grads: Any, true_grads: Any) -> torch.Tensor:
    """DLG's loss: sum over all parameters of the squared difference (a scalar)."""
    d, t = _as_list(dummy_grads), _as_list(true_grads)
    return sum(((a - b) ** 2).sum() for a, b in zip(d, t, strict=True))  # type: ignore[return-value]


def cosine_distance(dummy_grads: Any, true_grads: Any, eps: float = 1e-12) -> torch.Tensor:
    """Inverting Gradients' loss: 1 - cosine similarity of the whole (concatenated) gradients."""
    d, t = _as_list(dummy_grads), _as_list(true_grads)
    dot = sum((a * b).sum() for a, b in zip(d, t, strict=True))
    dn = sum((a * a).sum() for a in d)
    tn = sum((b * b).sum() for b in t)
    return 1 - dot / (dn.clamp_min(eps).sqrt() * tn.clamp_min(eps).sqrt())  # type: ignore[union-attr]
