"""Bicubic interpolation: the baseline every learned method must beat."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adversary.enhance.base import Enhancer
from adversary.enhance.registry import register


@register
class Bicubic(Enhancer):
    name = "bicubic"

    def forward(self, low: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        return F.interpolate(low, scale_factor=self.scale, mode="bicubic", align_corners=False)
