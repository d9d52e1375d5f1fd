"""Frame-wise image quality on float [0, 1] images: PSNR and SSIM (skimage, data_range=1)."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; reported as this cap


def resize_to(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float (3, H, W) image to (3, *hw), clipped to [0, 1]; a no-op at that size."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] == tuple(hw):
        return x
    hwc = cv2.resize(np.ascontiguousarray(x.transpose(1, 2, 0)), (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(hwc.transpose(2, 0, 1), 0.0, 1.0).astype(np.float32)


def psnr(recon: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB of float images in [0, 1], capped at PSNR_CAP_DB."""
    if np.array_equal(recon, truth):
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, peak_signal_noise_ratio(truth, recon, data_range=1.0)))


def ssim(recon: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM of float (3, H, W) images in [0, 1]; the window shrinks for tiny images."""
    side = min(truth.shape[1:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return float(np.array_equal(recon, truth))
    return float(structural_similarity(truth, recon, data_range=1.0, channel_axis=0, win_size=win))


def score(recon: np.ndarray, truth: np.ndarray, size: int | None) -> tuple[float, float]:
    """(PSNR, SSIM) after resizing both to size x size; with size None, at the truth's own size."""
    hw = tuple(truth.shape[1:]) if size is None else (size, size)
    r, t = resize_to(recon, hw), resize_to(truth, hw)
    return psnr(r, t), ssim(r, t)
