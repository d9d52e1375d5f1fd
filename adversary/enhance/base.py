"""The shape every super-resolution method shares.

An enhancer maps a batch of low-resolution frames of one stream, in sequence order, to frames
`scale` times larger. Reference-based methods also take high-resolution frames the attacker
holds from the target scene; multi-frame methods use the batch's neighbouring frames.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from splitleak.errors import SplitleakError


class Enhancer:
    """Base class: `enhance(low, refs)` on float [0, 1] tensors, (N, 3, h, w) -> (N, 3, h*s, w*s)."""

    name: ClassVar[str] = ""
    refs: ClassVar[str] = "none"  # "none", "one" or "many": how many reference frames it uses
    temporal: ClassVar[bool] = False  # True when the output of a frame depends on its neighbours
    weights: ClassVar[str] = "none"  # "none", "optional" or "required": whether it loads a weight file / folder
    context: ClassVar[int] = 0  # temporal methods: neighbours on each side the pipeline adds around a batch

    def __init__(self, scale: int = 4, device: str = "cpu", weights: str | None = None) -> None:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise SplitleakError(f"bad scale {scale!r}: expected a positive integer")
        if weights is not None and self.weights == "none":
            raise SplitleakError(f"method {self.name!r} takes no weights")
        if weights is None and self.weights == "required":
            raise SplitleakError(f"method {self.name!r} needs --weights (a train-sr folder or a weight file)")
        self.scale = scale
        self.device = torch.device(device)
        self.weights_path = weights

    def enhance(self, low: torch.Tensor, refs: torch.Tensor | None = None) -> torch.Tensor:
        """Enhanced frames for `low` (one stream, in order); `refs` (R, 3, H, W) where the method uses them."""
        self.check_input(low, refs)
        with torch.inference_mode():
            out = self.forward(low.to(self.device, torch.float32),
                               None if refs is None else refs.to(self.device, torch.float32))
            return out.clamp(0, 1)

    def forward(self, low: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def check_input(self, low: torch.Tensor, refs: torch.Tensor | None) -> None:
        """SplitleakError on shapes the method cannot take."""
        if low.ndim != 4 or low.shape[1] != 3 or low.shape[0] == 0:
            raise SplitleakError(f"expected low-resolution frames of shape (N, 3, h, w), got {tuple(low.shape)}")
        if self.refs == "none":
            return
        if refs is None or refs.ndim != 4 or refs.shape[0] == 0 or refs.shape[1] != 3:
            raise SplitleakError(f"method {self.name!r} needs reference frames (R, 3, H, W)")
        want = (low.shape[2] * self.scale, low.shape[3] * self.scale)
        if tuple(refs.shape[2:]) != want:
            raise SplitleakError(f"reference frames are {refs.shape[3]}x{refs.shape[2]}; method {self.name!r} "
                                 f"needs {want[1]}x{want[0]} (the low frames times --scale {self.scale})")
