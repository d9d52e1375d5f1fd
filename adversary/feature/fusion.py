"""Feature-checked temporal fusion of per-frame reconstructions (used by dmb-multi's `fuse`).

Single-frame inversions of consecutive frames err independently where the features do not
pin the image down, so averaging them cancels error, but only where the frames show the same
thing. The features say where: frame j's reconstruction is used for frame k at a location
when it explains frame k's features there about as well as frame k's own reconstruction does,
    r(j -> k) <= threshold * r(k -> k),   r = per-location feature residual / mean(z_k^2),
and frame k's image is the per-pixel average of the reconstructions accepted there (its own
always is). The acceptance maps are upsampled bilinearly from the feature grid to the image;
features without a spatial grid give one decision per frame pair.

With `align`, frame j's image is first warped onto frame k's by dense optical flow (OpenCV's
Farneback) estimated between the two reconstructions (the adversary has nothing else), and the
warped image is what the features test and the average use: in moving footage a neighbour then
stands in where the object moved, not only where nothing did. The flows are kept with the
weights, so a fusion decided on one set of images can be applied to later images of the same
frames. Measured, it lowered dmb-multi's gain on every head tried (adversary.feature.dmb_multi).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

TOLERANCE = 1e-6  # residuals (relative to mean(z^2)) this small count as a match, whatever the own residual


class GroupFusion(NamedTuple):
    """One group's fusion: weights (n, n, 1, H, W) of member j's pixels in member k's image, and
    the flows (n, n, H, W, 2) that warp j onto k (None: no alignment)."""
    weights: torch.Tensor
    flows: torch.Tensor | None


def pair_flows(x: torch.Tensor) -> torch.Tensor:
    """(n, n, H, W, 2) dense flow, in pixels (dx, dy), from each image k to each image j of x (n, C, H, W):
    what k shows at p, j shows at p + flows[j, k, p] (Farneback on grey levels; zero for j = k)."""
    n, _, h, w = x.shape
    grey = (x.detach().float().mean(1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    window = max(5, (min(h, w) // 8) | 1)  # about an eighth of the image: 9 at 64x64
    flows = np.zeros((n, n, h, w, 2), np.float32)
    for k in range(n):  # n (n - 1) calls of a few tenths of a millisecond at 64x64
        for j in range(n):
            if j != k:
                flows[j, k] = cv2.calcOpticalFlowFarneback(grey[k], grey[j], None, 0.5, 3, window, 3, 5, 1.1, 0)
    return torch.from_numpy(flows).to(x.device)


def warped(x: torch.Tensor, flows: torch.Tensor | None) -> torch.Tensor:
    """(n, n, C, H, W): image j of x (n, C, H, W) seen from frame k, by flows[j, k] (as is without flows)."""
    n, c, h, w = x.shape
    if flows is None:
        return x[:, None].expand(n, n, c, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    at = torch.stack((xs, ys), -1).to(flows.dtype) + flows  # (n, n, H, W, 2) source pixel per target pixel
    grid = 2 * at / torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=at.dtype, device=x.device) - 1
    source = x[:, None].expand(n, n, c, h, w).reshape(n * n, c, h, w)
    out = F.grid_sample(source, grid.view(n * n, h, w, 2).to(x.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.view(n, n, c, h, w)


def residual_maps(feats: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(J, K, 1, h, w) residual of feats[j] (or feats[j, k], pairs given) against z[k], averaged over
    channels where mask[k] is set, over mean(z_k^2); (J, K, 1, 1, 1) for features without a grid."""
    if feats.dim() == z.dim():
        feats = feats[:, None]  # one image per j, against every k
    if z.dim() != 4:
        feats = feats.flatten(2)[..., None, None]
        z, mask = (t.flatten(1)[..., None, None] for t in (z, mask))
    m = mask.float()
    scale = ((z * m) ** 2).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)  # mean(z_k^2) per frame
    diff = (feats - z[None]) ** 2 * m[None]  # (J, K, C, h, w)
    per_location = diff.sum(2, keepdim=True) / m.sum(1, keepdim=True)[None].clamp_min(1)
    return per_location / scale.clamp_min(1e-12).view(1, -1, 1, 1, 1)


def fusion_weights(x: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                   mask: torch.Tensor, groups: Sequence[Sequence[int]], threshold: float,
                   align: bool = False) -> list[GroupFusion | None]:
    """Per group (None for a group of one), the (n, n, 1, H, W) weights of member j's pixels in
    member k's fused image: 1 where j (warped onto k, with `align`) explains k's features within
    `threshold` times k's own residual (bilinear between feature cells), always 1 for j = k.

    x: per-frame reconstructions; head: the features of images; z, mask: the tapped features and
    where they are finite; groups: batch positions of consecutive frames.
    """
    out: list[GroupFusion | None] = []
    for group in groups:
        if len(group) < 2:
            out.append(None)
            continue
        idx = torch.as_tensor(list(group), device=x.device)
        flows = pair_flows(x[idx]) if align else None
        n = len(group)
        if flows is None:
            feats = head(x[idx]).float()  # (n, ...): one image per member
        else:
            feats = head(warped(x[idx], flows).flatten(0, 1)).float()
            feats = feats.view(n, n, *feats.shape[1:])  # (n, n, ...): j warped onto k
        r = residual_maps(feats, z[idx], mask[idx])  # (n, n, 1, h, w): j -> k
        own = torch.diagonal(r, dim1=0, dim2=1).permute(3, 0, 1, 2)  # (n, 1, h, w): k -> k
        keep = (r <= threshold * own[None] + TOLERANCE).float()
        weights = F.interpolate(keep.flatten(0, 1), size=x.shape[-2:], mode="bilinear",
                                align_corners=False).view(n, n, 1, *x.shape[-2:])
        eye = torch.eye(n, device=x.device).view(n, n, 1, 1, 1)
        out.append(GroupFusion(torch.maximum(weights, eye), flows))  # a frame always keeps its own image
    return out


def apply_fusion(x: torch.Tensor, groups: Sequence[Sequence[int]],
                 fusions: Sequence[GroupFusion | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused images (B, C, H, W): each frame the weighted per-pixel mean of its group's images (warped
    onto it where the fusion has flows), and the share of neighbour pixels accepted per frame (B,)."""
    out, accepted = x.clone(), x.new_zeros(x.shape[0])
    for group, fusion in zip(groups, fusions):
        if fusion is None:
            continue
        w, idx = fusion.weights, torch.as_tensor(list(group), device=x.device)
        out[idx] = (w * warped(x.index_select(0, idx), fusion.flows)).sum(0) / w.sum(0)
        accepted[idx] = (w.sum(0).mean((1, 2, 3)) - 1) / (len(group) - 1)
    return out, accepted

