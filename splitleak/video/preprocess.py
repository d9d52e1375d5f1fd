"""Frames to model inputs and back: resize + centre crop to a square, CHW float in [0, 1]."""

from __future__ import annotations

import cv2
import numpy as np

from splitleak.errors import SplitleakError


def to_model_input(image: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 (3, size, size) in [0, 1]: shorter side to `size`, centre crop."""
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise SplitleakError(f"bad size {size!r}: expected a positive integer")
    size = int(size)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SplitleakError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    scale = size / min(height, width)
    new_w = size if width <= height else max(size, round(width * scale))
    new_h = size if height <= width else max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        shrink = new_w < width or new_h < height
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = image[top : top + size, left : left + size]
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def to_uint8_hwc(x: np.ndarray) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> HxWx3 uint8 RGB, rounded and clipped (for saving)."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] != 3:
        raise SplitleakError(f"expected a (3, H, W) image, got shape {x.shape}")
    scaled = np.rint(np.clip(x.astype(np.float64), 0.0, 1.0) * 255.0)
    return np.ascontiguousarray(scaled.transpose(1, 2, 0).astype(np.uint8))
