"""Feature-checked temporal fusion of per-frame reconstructions (dmb-multi's fusion phase).

Single-frame inversions of consecutive frames err independently where the features do not pin
the image down, so averaging them cancels error, but only where the frames show the same thing.
The features say where: frame j's reconstruction is used for frame k at a location when it
explains frame k's features there about as well as frame k's own reconstruction does,
    r(j -> k) <= threshold * r(k -> k),   r = per-location feature residual / mean(z_k^2),
and frame k's image is the per-pixel average of the reconstructions accepted there (its own always
is). Acceptance maps are upsampled bilinearly from the feature grid to the image; features
without a spatial grid give one decision per frame pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from adversary.feature.blackbox import resize

TOLERANCE = 1e-6  # residuals (relative to mean(z^2)) this small count as a match, whatever the own residual


def residual_maps(feats: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(J, K, 1, h, w) residual of feats[j] against z[k], averaged over channels where mask[k] is set,
    over mean(z_k^2); (J, K, 1, 1, 1) for features without a grid."""
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
                   mask: torch.Tensor, groups: Sequence[Sequence[int]], threshold: float) -> list[torch.Tensor | None]:
    """Per group (None for a group of one), the (n, n, 1, H, W) weights of member j's pixels in
    member k's fused image: 1 where j explains k's features within `threshold` times k's own residual
    (bilinear between feature cells), always 1 for j = k.

    x: per-frame reconstructions; head: the features of images; z, mask: the tapped features and
    where they are finite; groups: batch positions of consecutive frames.
    """
    out: list[torch.Tensor | None] = []
    for group in groups:
        if len(group) < 2:
            out.append(None)
            continue
        idx = torch.as_tensor(list(group), device=x.device)
        n = len(group)
        r = residual_maps(head(x[idx]).float(), z[idx], mask[idx])  # (n, n, 1, h, w): j -> k
        own = torch.diagonal(r, dim1=0, dim2=1).permute(3, 0, 1, 2)  # (n, 1, h, w): k -> k
        keep = (r <= threshold * own[None] + TOLERANCE).float()
        weights = F.interpolate(keep.flatten(0, 1), size=x.shape[-2:], mode="bilinear",
                                align_corners=False).view(n, n, 1, *x.shape[-2:])
        eye = torch.eye(n, device=x.device).view(n, n, 1, 1, 1)
        out.append(torch.maximum(weights, eye))  # a frame always keeps its own image
    return out


def apply_fusion(x: torch.Tensor, groups: Sequence[Sequence[int]],
                 weights: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused images (B, C, H, W): each frame the weighted per-pixel mean of its group's images, and
    the share of neighbour pixels accepted per frame (B,)."""
    out, accepted = x.clone(), x.new_zeros(x.shape[0])
    for group, w in zip(groups, weights):
        if w is None:
            continue
        idx = torch.as_tensor(list(group), device=x.device)
        out[idx] = (w * x.index_select(0, idx)[:, None]).sum(0) / w.sum(0)
        accepted[idx] = (w.sum(0).mean((1, 2, 3)) - 1) / (len(group) - 1)
    return out, accepted


@dataclass(frozen=True)
class Fusion:
    """dmb-multi's fusion phase. Before the refinement, the sampler's images are fused and the frames
    that took a neighbour's pixels refine from their fused image (VAE-encoded); the others refine as
    single-frame DMB does. After the pixel phase, the images are fused again, by the acceptance decided
    on the refined images where the features hold at least as many numbers as the image, on the
    sampler's where they hold fewer (there the refinement's fit is largely guessed detail)."""

    threshold: float

    def acceptance(self, fit: Any, x: torch.Tensor) -> list[torch.Tensor | None]:
        with torch.no_grad():
            return fusion_weights(x, fit.case.head, fit.z, fit.mask, fit.groups, self.threshold)

    def fuse(self, fit: Any, x: torch.Tensor, weights: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        fused, share = apply_fusion(x, fit.groups, weights)
        fit.info["fused_share"] = [round(s, 4) for s in share.tolist()]
        return fused, share

    def before_refine(self, fit: Any, latent: torch.Tensor) -> torch.Tensor:
        """The latents the refinement starts from (not for a grey head: the VAE encodes colour)."""
        x = fit.best.x
        if x.shape[1] != 3:
            return latent
        with torch.no_grad():
            fit.fused_weights = self.acceptance(fit, x)
            fused, share = self.fuse(fit, x, fit.fused_weights)
            changed = share > 0  # the frames whose images took a neighbour's pixels
            if changed.any():  # index assignment keeps latent's memory layout (the VAE's may differ)
                latent[changed] = fit.prior.encode(resize(fused[changed], fit.prior.image_size)).to(latent.dtype)
        fit.best.restart(changed)  # a fused frame's output is refined from it, even where it scores worse
        return latent

    def finish(self, fit: Any, x: torch.Tensor, pixel: Callable[[Any, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The pixel phase on each frame, then the final fusion."""
        on_sampler = fit.fused_weights is not None and fit.z[0].numel() < x[0].numel()
        fit.info["acceptance_on"] = "sampler" if on_sampler else "refined"
        weights = fit.fused_weights if on_sampler else self.acceptance(fit, x)
        return self.fuse(fit, pixel(fit, x), weights)[0]
