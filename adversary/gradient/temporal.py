"""The temporal prior of a raw-clip gradient attack: a clip's consecutive frames differ little.

A clip input is (B, 3, T, H, W). The prior is total variation over time, mean |x_t+1 - x_t| over
every pixel of consecutive frames, added to the gradient-matching loss with weight `lambda_time`;
it is zero for a frame input (B, 3, H, W), so the same attack config serves frames and clips.
The start can also be drawn closer to one shared frame (`start_spread` < 1): every frame starts at
shared + spread * (own - shared), the shared frame being the start's mean over time. A spread of 0
is a trap for a model whose gradient is symmetric in frame order (frameavg): identical frames get
identical updates and never part, so keep it above 0 there.
"""

from __future__ import annotations

import torch

from adversary.configs import require

CLIP_DIMS = 5  # (B, 3, T, H, W)


def is_clip(x: torch.Tensor) -> bool:
    return x.dim() == CLIP_DIMS


def temporal_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between consecutive frames, per clip: shape (B,); zeros for frames."""
    if not is_clip(x) or x.shape[2] < 2:
        return x.new_zeros(x.shape[0])
    return (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1)


def spread_start(x: torch.Tensor, spread: float) -> torch.Tensor:
    """A clip start pulled towards its mean frame: mean + spread * (x - mean); frames unchanged."""
    if not is_clip(x) or spread == 1.0:
        return x
    shared = x.mean(2, keepdim=True)
    return shared + spread * (x - shared)


def check_temporal(lambda_time: float, start_spread: float) -> None:
    """The temporal options' bounds (a config's check)."""
    require(lambda_time >= 0, f"lambda_time must be >= 0, got {lambda_time}")
    require(0 <= start_spread <= 1, f"start_spread must be in [0, 1], got {start_spread}")
