"""Loss helpers shared by the prior-based feature attacks (DB, DMB, multi-frame DMB).

Scale. Every attack here uses DO's conventions: the feature term is the per-frame MSE
normalised by mean(z^2) (so it starts near 1 whatever the split point), and TV is the
mean-abs TV of `total_variation`. The paper's weights go with an un-normalised feature
loss; we map them with one factor, 1/100, so that lambda_s = 1 becomes 0.01 (DO's
default, so DO, DB and DMB share one TV weight), lambda_txt = 10 becomes 0.1 and
lambda_c = 5 becomes 0.05. Latent terms (negentropy, the multi-frame tie) are means over
a frame's latent entries, so they do not grow with the latent's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from adversary.feature.do import feature_loss, total_variation

PAPER_TO_OURS = 0.01
LAMBDA_S, LAMBDA_TXT, LAMBDA_C = 1.0 * PAPER_TO_OURS, 10.0 * PAPER_TO_OURS, 5.0 * PAPER_TO_OURS

__all__ = ["LAMBDA_C", "LAMBDA_S", "LAMBDA_TXT", "PAPER_TO_OURS", "consecutive_groups", "feature_loss",
           "group_tie", "log_cosh", "negentropy", "normalise", "total_variation"]


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

    Frames alone in their group get 0.
    """
    out = v.new_zeros(v.shape[0])
    for group in groups:
        if len(group) < 2:
            continue
        idx = torch.as_tensor(list(group), device=v.device)
        members = v.index_select(0, idx).flatten(1)
        out = out.index_add(0, idx, ((members - members.mean(0, keepdim=True)) ** 2).mean(1))
    return out


def consecutive_groups(frames: Sequence[tuple[str, int]], window: int) -> list[list[int]]:
    """Batch positions grouped into runs of consecutive seq of one stream, at most `window` long.

    Frames need not be sorted; positions within a group are ordered by seq. Duplicates of a
    (stream, seq) pair start a new group.
    """
    order = sorted(range(len(frames)), key=lambda i: (str(frames[i][0]), int(frames[i][1]), i))
    groups: list[list[int]] = []
    for i in order:
        stream, seq = frames[i]
        if groups:
            last = frames[groups[-1][-1]]
            if last[0] == stream and int(seq) == int(last[1]) + 1 and len(groups[-1]) < window:
                groups[-1].append(i)
                continue
        groups.append([i])
    return groups
