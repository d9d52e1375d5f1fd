"""Feature-checked temporal fusion of per-frame reconstructions (used by dmb-multi's `fuse`).

Single-frame inversions of consecutive frames err independently where the features do not
pin the image down, so averaging them cancels error, but only where the frames show the same
thing. The features say where: frame j's reconstruction is used for frame k at a location
when it explains frame k's features there about as well as frame k's own reconstruction does,
    r(j -> k) <= threshold * r(k -> k),   r = per-location feature residual / mean(z_k^2),
and frame k's image is the per-pixel average of the reconstructions accepted there (its own
always is). The acceptance maps are upsampled bilinearly from the feature grid to the image;
features without a spatial grid give one decision per frame pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TOLERANCE = 1e-6  # residuals (relative to mean(z^2)) this small count as a match, whatever the own residual


def residual_maps(feats: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(J, K, 1, h, w) residual of feats[j] against z[k], averaged over channels where mask[k]
    is set, over mean(z_k^2); (J, K, 1, 1, 1) for features without a spatial grid."""
    if feats.dim() != 4:
        feats, z, mask = (t.flatten(1)[..., None, None] for t in (feats, z, mask))
    m = mask.float()
    scale = ((z * m) ** 2).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)  # mean(z_k^2) per frame
    diff = (feats[:, None] - z[None]) ** 2 * m[None]  # (J, K, C, h, w)
    per_location = diff.sum(2, keepdim=True) / m.sum(1, keepdim=True)[None].clamp_min(1)
    return per_location / scale.clamp_min(1e-12).view(1, -1, 1, 1, 1)


def fusion_weights(x: torch.Tensor, feats: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                   groups: Sequence[Sequence[int]], threshold: float) -> list[torch.Tensor | None]:
    """Per group, the (n, n, 1, H, W) weights of member j's pixels in member k's fused image
    (None for a group of one): 1 where j explains k's features within `threshold` times k's own
    residual (bilinear between feature cells), always 1 for j = k.

    x: per-frame reconstructions; feats: the head's features of x; z, mask: the tapped
    features and where they are finite; groups: batch positions of consecutive frames.
    """
    out: list[torch.Tensor | None] = []
    for group in groups:
        if len(group) < 2:
            out.append(None)
            continue
        idx = torch.as_tensor(list(group), device=x.device)
        r = residual_maps(feats[idx], z[idx], mask[idx])  # (n, n, 1, h, w): j -> k
        own = torch.diagonal(r, dim1=0, dim2=1).permute(3, 0, 1, 2)  # (n, 1, h, w): k -> k
        keep = (r <= threshold * own[None] + TOLERANCE).float()
        n = len(group)
        weights = F.interpolate(keep.flatten(0, 1), size=x.shape[-2:], mode="bilinear",
                                align_corners=False).view(n, n, 1, *x.shape[-2:])
        eye = torch.eye(n, device=x.device).view(n, n, 1, 1, 1)
        out.append(torch.maximum(weights, eye))  # a frame always keeps its own reconstruction
    return out


def apply_fusion(x: torch.Tensor, groups: Sequence[Sequence[int]],
                 weights: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused images (B, C, H, W): each frame the weighted per-pixel mean of its group's images,
    and the share of neighbour pixels accepted per frame (B,)."""
    out, accepted = x.clone(), x.new_zeros(x.shape[0])
    for group, w in zip(groups, weights):
        if w is None:
            continue
        idx = torch.as_tensor(list(group), device=x.device)
        out[idx] = (w * x.index_select(0, idx)[:, None]).sum(0) / w.sum(0)
        accepted[idx] = (w.sum(0).mean((1, 2, 3)) - 1) / (len(group) - 1)
    return out, accepted

