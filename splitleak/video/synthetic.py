"""A deterministic moving scene: textured background with coloured discs and boxes bouncing.

Consecutive frames share the background and move each shape by a few pixels, so the
stream has the temporal structure multi-frame attacks rely on; the seed fixes everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from splitleak.video.base import FrameSource

_SHIFT = 4  # fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT


def textured_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour blobs plus stripes plus fine grain, as HxWx3 uint8 RGB."""
    coarse = rng.random((max(2, height // 16), max(2, width // 16), 3), dtype=np.float32)
    blobs = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xs * np.cos(theta) + ys * np.sin(theta)) / period)
    tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    grain = rng.normal(0, 0.04, (height, width, 3)).astype(np.float32)
    img = 0.6 * blobs + 0.3 * stripes[..., None] * tint + grain + 0.05
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


@dataclass
class Shapes:
    """State of the moving shapes: kind, colour, half extents, centre and velocity (pixels)."""

    disc: np.ndarray  # (n,) bool: disc (half[0] is the radius) or rectangle
    colour: np.ndarray  # (n, 3) int
    half: np.ndarray  # (n, 2) half width, half height
    pos: np.ndarray  # (n, 2) x, y
    vel: np.ndarray  # (n, 2) pixels per frame

    @classmethod
    def random(cls, width: int, height: int, rng: np.random.Generator) -> Shapes:
        n = int(rng.integers(3, 6))
        side = min(width, height)
        disc = rng.random(n) < 0.5
        half = rng.uniform(0.07, 0.16, (n, 2)) * side
        half[disc, 1] = half[disc, 0]
        dims = np.array([width, height], dtype=np.float64)
        pos = rng.uniform(half, dims - half)
        angle = rng.uniform(0, 2 * np.pi, n)
        speed = np.maximum(rng.uniform(0.01, 0.035, n) * side, 1.0)
        vel = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]
        colour = rng.integers(30, 256, (n, 3))
        return cls(disc, colour, half, pos, vel)

    def step(self, width: int, height: int) -> None:
        """Move every shape one frame, reflecting off the borders."""
        lo, hi = self.half, np.array([width, height], dtype=np.float64) - self.half
        pos = self.pos + self.vel
        over, under = pos > hi, pos < lo
        pos = np.where(over, 2 * hi - pos, np.where(under, 2 * lo - pos, pos))
        self.pos = np.clip(pos, lo, hi)
        self.vel = np.where(over | under, -self.vel, self.vel)

    def draw(self, canvas: np.ndarray) -> np.ndarray:
        """Draw the shapes, anti-aliased and sub-pixel, onto `canvas` in place."""
        centres = np.rint(self.pos * _ONE).astype(np.int64)
        halves = np.rint(self.half * _ONE).astype(np.int64)
        for disc, colour, (cx, cy), (hx, hy) in zip(self.disc, self.colour.tolist(), centres, halves):
            if disc:
                cv2.circle(canvas, (int(cx), int(cy)), int(hx), colour, -1, cv2.LINE_AA, _SHIFT)
            else:
                p1, p2 = (int(cx - hx), int(cy - hy)), (int(cx + hx), int(cy + hy))
                cv2.rectangle(canvas, p1, p2, colour, -1, cv2.LINE_AA, _SHIFT)
        return canvas


class SyntheticSource(FrameSource):
    """The moving scene at `width` x `height`; every pass replays the same frames for a seed."""

    def __init__(self, width: int = 128, height: int = 128, seed: int = 0, frames: int | None = None) -> None:
        super().__init__(f"synthetic:{width}x{height} seed={seed}", frames)
        self.width, self.height, self.seed = width, height, seed

    def _images(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        background = textured_background(self.width, self.height, rng)
        shapes = Shapes.random(self.width, self.height, rng)
        while True:
            yield shapes.draw(background.copy())
            shapes.step(self.width, self.height)
