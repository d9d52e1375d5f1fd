"""Training pairs for super-resolution: clean frames from footage, degraded low-resolution inputs.

`load_footage` reads any `--source` spec (a video file, a folder of images, `sample:NAME`,
`synthetic`) into clean frames the way the edge preprocesses them (shorter side to `size`, centre
crop). `PairSampler` draws (low, high) pairs from them: random frames, random crops, flips, and the
degradation of `adversary.enhance.degrade`. `pairs` gives single frames (blind and reference-based
methods: `index` says which frame each came from, so references can be picked from the others);
`clips` gives runs of consecutive frames with one crop per run (multi-frame methods).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adversary.enhance.degrade import DegradeConfig, degrade
from splitleak.errors import SplitleakError
from splitleak.video import open_source, to_model_input


@dataclass
class Pairs:
    """low (B, 3, h, w) or (B, T, 3, h, w); high the same at `scale` times the size; both float [0, 1].
    index: the frame (or a clip's first frame) each came from; box: (top, left) of its crop in the frame."""

    low: torch.Tensor
    high: torch.Tensor
    index: torch.Tensor
    box: torch.Tensor


def load_footage(source: str, size: int = 128, frames: int | None = 300, stride: int = 1) -> torch.Tensor:
    """Clean frames (N, 3, size, size) float [0, 1] from a source spec: every `stride`-th of the first
    `frames * stride`; SplitleakError if the source yields none."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise SplitleakError(f"bad stride {stride!r}: expected a positive integer")
    wanted = None if frames is None else frames * stride
    with open_source(source, frames=wanted) as src:
        clean = [to_model_input(f.image, size) for f in src if f.index % stride == 0]
    if not clean:
        raise SplitleakError(f"the source {source} gave no frames to train on")
    return torch.from_numpy(np.stack(clean))


class PairSampler:
    """Random (degraded, clean) pairs from clean frames (N, 3, H, W), `scale` times apart.

    `patch` (a multiple of `scale`, at most the frame size) is the side of the clean crop; None
    keeps whole frames. The same seed gives the same batches."""

    def __init__(self, frames: torch.Tensor, scale: int = 4, patch: int | None = 64,
                 degradation: DegradeConfig = DegradeConfig(), seed: int = 0) -> None:
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
            raise SplitleakError(f"expected clean frames (N, 3, H, W), got {tuple(frames.shape)}")
        height, width = frames.shape[2:]
        patch = patch or min(height, width)
        if patch % scale or patch > min(height, width) or patch < scale:
            raise SplitleakError(f"bad patch {patch}: a multiple of the scale {scale} and at most the frame "
                                 f"size {width}x{height}")
        if height % scale or width % scale:
            raise SplitleakError(f"frames of {width}x{height} do not divide by the scale {scale}")
        self.frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8)  # 4x less memory; PNG levels anyway
        self.scale, self.patch, self.degradation = scale, patch, degradation
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def crop_box(self) -> tuple[int, int]:
        """A random (top, left) on the scale grid, so the low crop aligns with the clean one."""
        height, width = self.frames.shape[2:]
        top = int(self.rng.integers(0, (height - self.patch) // self.scale + 1)) * self.scale
        left = int(self.rng.integers(0, (width - self.patch) // self.scale + 1)) * self.scale
        return top, left

    def _crops(self, indices: np.ndarray, box: tuple[int, int], flip: tuple[bool, bool]) -> torch.Tensor:
        top, left = box
        crop = self.frames[indices, :, top:top + self.patch, left:left + self.patch].float() / 255
        dims = [d for d, on in zip((-1, -2), flip) if on]
        return crop.flip(dims) if dims else crop

    def _flip(self) -> tuple[bool, bool]:
        return bool(self.rng.random() < 0.5), bool(self.rng.random() < 0.1)  # horizontal often, vertical seldom

    def pairs(self, batch: int) -> Pairs:
        """`batch` single-frame pairs: low (B, 3, p/s, p/s), high (B, 3, p, p)."""
        indices = self.rng.integers(0, len(self), batch)
        boxes = [self.crop_box() for _ in range(batch)]
        high = torch.cat([self._crops(np.array([i]), box, self._flip()) for i, box in zip(indices, boxes)])
        low = degrade(high, self.scale, self.rng, self.degradation)
        return Pairs(low, high, torch.from_numpy(indices), torch.tensor(boxes))

    def with_refs(self, batch: int, count: int, min_gap: int = 3, max_gap: int = 40) -> tuple[Pairs, torch.Tensor]:
        """`batch` single-frame pairs and, for each, `count` clean frames min_gap..max_gap frames away
        (the attacker's references: never the target), cropped and flipped as their target:
        (pairs, refs (B, count, 3, p, p))."""
        indices = self.rng.integers(0, len(self), batch)
        highs, refs, boxes = [], [], []
        for i in indices:
            box, flip = self.crop_box(), self._flip()
            boxes.append(box)
            near = [j for j in range(len(self)) if min_gap <= abs(j - int(i)) <= max_gap]
            near = near or [j for j in range(len(self)) if j != i] or [int(i)]
            picked = self.rng.choice(near, size=count, replace=len(near) < count)
            highs.append(self._crops(np.array([i]), box, flip))
            refs.append(self._crops(np.asarray(picked), box, flip))
        high = torch.cat(highs)
        low = degrade(high, self.scale, self.rng, self.degradation)
        return Pairs(low, high, torch.from_numpy(indices), torch.tensor(boxes)), torch.stack(refs)

    def clips(self, batch: int, length: int) -> Pairs:
        """`batch` runs of `length` consecutive frames, one crop and flip per run, each frame degraded
        on its own draw (an attack recovers frames one by one): low (B, T, 3, p/s, p/s), high (B, T, 3, p, p)."""
        if length < 1 or length > len(self):
            raise SplitleakError(f"clip length {length} must be in 1..{len(self)} (the frames loaded)")
        starts = self.rng.integers(0, len(self) - length + 1, batch)
        boxes = [self.crop_box() for _ in range(batch)]
        high = torch.stack([self._crops(np.arange(s, s + length), box, self._flip()) for s, box in zip(starts, boxes)])
        low = degrade(high.flatten(0, 1), self.scale, self.rng, self.degradation)
        return Pairs(low.unflatten(0, (batch, length)), high, torch.from_numpy(starts), torch.tensor(boxes))
