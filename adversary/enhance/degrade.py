"""Degraded low-resolution frames from clean ones, for training super-resolution (Real-ESRGAN's recipe).

Real-ESRGAN's second-order degradation: blur, resize, noise, JPEG, then all four again with milder
settings, then a resize to the target size (Wang et al., 2021; their sinc filter is left out).
Two additions fit what an attack recovers: the "plain" path (an area downscale, which is how the
edge itself makes its 32x32 model inputs), and "inversion noise", the residue of gradient inversion
(white for frames DLG recovered well; blotchy and colour-shifted, noisy at low spatial frequencies,
for frames from a saturated model). Every image draws its own parameters from a numpy Generator, so
a seed fixes them.
Images are float32 (H, W, 3) in [0, 1]; the result is quantised to 8 bits, as the PNGs an attack writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from splitleak.errors import SplitleakError

_RESIZE_MODES = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


@dataclass(frozen=True)
class DegradeConfig:
    """Probabilities and ranges of the degradation; the defaults follow Real-ESRGAN's x4 settings
    (sigmas for 8-bit images are given in [0, 1] units), scaled down where frames are small."""

    plain_prob: float = 0.3  # area downscale only (then inversion noise), as the edge makes its inputs
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    blur2_prob: float = 0.8
    resize_down: tuple[float, float] = (0.15, 1.0)
    resize_up: tuple[float, float] = (1.0, 1.5)
    resize_down2: tuple[float, float] = (0.3, 1.0)
    resize_up2: tuple[float, float] = (1.0, 1.2)
    noise_sigma: tuple[float, float] = (1 / 255, 30 / 255)
    noise_sigma2: tuple[float, float] = (1 / 255, 25 / 255)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (30, 95)
    inversion_prob: float = 0.5  # gradient-inversion-like residue on the final low-resolution frame
    inversion_sigma: tuple[float, float] = (0.01, 0.12)
    inversion_coarse: tuple[int, ...] = (1, 2, 4)  # the noise is drawn at 1/k of the size, k one of these
    colour_shift: float = 0.05  # per-channel offset up to this, gain up to 1 +- 2x this


# Named degradations for train-sr; both start from an area downscale (the edge's preprocessing).
# "recovered": DLG frames from gradients taken at an untrained LeNet (the paper's setting; lenet 32 px,
#   fedsgd, lr 1e-4, 100 iterations): residue vs the edge's input measured on 24 frames of three clips
#   (benchmarks/enhance.py --quick) at RMSE 0.006-0.012 per frame (38-45 dB), white (8-12% of its energy
#   below 1/4 of the resolution, white noise has 6%), no colour shift (|offset| < 5e-4, gain 1.000 +- 0.003).
# "recovered-heavy": frames from a saturated stream (edge defaults: one label, lr 0.01), 10-25 dB with
#   blotchy, colour-shifted residue.
PRESETS = {"realesrgan": DegradeConfig(),
           "recovered": DegradeConfig(plain_prob=1.0, inversion_prob=0.9, inversion_sigma=(0.0, 0.02),
                                      inversion_coarse=(1,), colour_shift=0.0),
           "recovered-heavy": DegradeConfig(plain_prob=1.0, inversion_prob=0.9, inversion_sigma=(0.0, 0.25),
                                            colour_shift=0.05)}


def preset(name: str) -> DegradeConfig:
    """The degradation called `name`; SplitleakError listing the known ones."""
    if name not in PRESETS:
        raise SplitleakError(f"unknown degradation {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def _uniform(rng: np.random.Generator, span: tuple[float, float]) -> float:
    return float(rng.uniform(span[0], span[1]))


def gaussian_kernel(rng: np.random.Generator, sigma: tuple[float, float], size: int) -> np.ndarray:
    """An anisotropic Gaussian kernel (size x size, odd) with random sigmas and rotation, summing to 1."""
    sx, sy, theta = _uniform(rng, sigma), _uniform(rng, sigma), float(rng.uniform(0, np.pi))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inv_cov = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    r = np.arange(size) - size // 2
    grid = np.stack(np.meshgrid(r, r), axis=-1)
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", grid, inv_cov, grid))
    return (kernel / kernel.sum()).astype(np.float32)


def blur(img: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float]) -> np.ndarray:
    size = int(min(2 * int(rng.integers(3, 11)) + 1, 2 * (min(img.shape[:2]) // 2) - 1))
    if size < 3:
        return img
    return cv2.filter2D(img, -1, gaussian_kernel(rng, sigma, size), borderType=cv2.BORDER_REFLECT)


def resize(img: np.ndarray, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Resize to (h, w) with a randomly chosen interpolation (area, bilinear, bicubic)."""
    mode = _RESIZE_MODES[int(rng.integers(len(_RESIZE_MODES)))]
    return np.clip(cv2.resize(img, (hw[1], hw[0]), interpolation=mode), 0, 1)


def random_resize(img: np.ndarray, rng: np.random.Generator, down: tuple[float, float],
                  up: tuple[float, float]) -> np.ndarray:
    """Real-ESRGAN's resize step: up (p 0.2), down (p 0.7) or keep (p 0.1)."""
    pick = rng.random()
    factor = _uniform(rng, up) if pick < 0.2 else _uniform(rng, down) if pick < 0.9 else 1.0
    h, w = img.shape[:2]
    return resize(img, (max(4, round(h * factor)), max(4, round(w * factor))), rng)


def add_noise(img: np.ndarray, rng: np.random.Generator, cfg: DegradeConfig, sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian (p 0.5) or Poisson noise, grey (the same on every channel) with gray_noise_prob."""
    gray = rng.random() < cfg.gray_noise_prob
    shape = img.shape[:2] + ((1,) if gray else (3,))
    if rng.random() < 0.5:
        noise = rng.normal(0, _uniform(rng, sigma), shape)
    else:
        scale, levels = _uniform(rng, cfg.poisson_scale), 255.0
        base = img.mean(axis=2, keepdims=True) if gray else img
        noise = (rng.poisson(np.clip(base, 0, 1) * levels) / levels - base) * scale
    return np.clip(img + noise.astype(np.float32), 0, 1)


def jpeg(img: np.ndarray, rng: np.random.Generator, quality: tuple[int, int]) -> np.ndarray:
    """Round trip through JPEG at a random quality."""
    q = int(rng.integers(quality[0], quality[1] + 1))
    bgr = cv2.cvtColor(np.rint(img * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        return img
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255


def inversion_noise(img: np.ndarray, rng: np.random.Generator, cfg: DegradeConfig) -> np.ndarray:
    """Blotchy colour noise (white noise at 1/1, 1/2 or 1/4 of the size, upsampled) and a colour shift."""
    h, w = img.shape[:2]
    coarse = int(rng.choice(list(cfg.inversion_coarse)))
    noise = rng.normal(0, _uniform(rng, cfg.inversion_sigma), (max(1, h // coarse), max(1, w // coarse), 3))
    noise = cv2.resize(noise.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    gain = 1 + rng.uniform(-2 * cfg.colour_shift, 2 * cfg.colour_shift, 3)
    offset = rng.uniform(-cfg.colour_shift, cfg.colour_shift, 3)
    return np.clip(img * gain.astype(np.float32) + offset.astype(np.float32) + noise, 0, 1)


def degrade_image(img: np.ndarray, scale: int, rng: np.random.Generator, cfg: DegradeConfig) -> np.ndarray:
    """One clean (H, W, 3) float image -> its degraded (H/scale, W/scale, 3) version, 8-bit levels."""
    h, w = img.shape[:2]
    target = (h // scale, w // scale)
    if rng.random() < cfg.plain_prob:
        out = cv2.resize(img, (target[1], target[0]), interpolation=cv2.INTER_AREA)
    else:
        out = blur(img, rng, cfg.blur_sigma)
        out = random_resize(out, rng, cfg.resize_down, cfg.resize_up)
        out = jpeg(add_noise(out, rng, cfg, cfg.noise_sigma), rng, cfg.jpeg_quality)
        if rng.random() < cfg.blur2_prob:
            out = blur(out, rng, cfg.blur_sigma2)
        pick = rng.random()  # Real-ESRGAN's second resize is relative to the target: up .3, down .4, keep .3
        factor = _uniform(rng, cfg.resize_up2) if pick < 0.3 else _uniform(rng, cfg.resize_down2) if pick < 0.7 else 1.0
        mid = (max(4, round(target[0] * factor)), max(4, round(target[1] * factor)))
        out = add_noise(resize(out, mid, rng), rng, cfg, cfg.noise_sigma2)
        if rng.random() < 0.5:  # Real-ESRGAN's last step: resize + JPEG in either order
            out = jpeg(resize(out, target, rng), rng, cfg.jpeg_quality)
        else:
            out = resize(jpeg(out, rng, cfg.jpeg_quality), target, rng)
    if rng.random() < cfg.inversion_prob:
        out = inversion_noise(out, rng, cfg)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.float32) / 255


def degrade(high: torch.Tensor, scale: int, rng: np.random.Generator,
            cfg: DegradeConfig = DegradeConfig()) -> torch.Tensor:
    """Batch version: clean (N, 3, H, W) in [0, 1] -> degraded (N, 3, H/scale, W/scale), each image its own draw."""
    imgs = high.detach().cpu().float().permute(0, 2, 3, 1).numpy()
    low = [degrade_image(np.ascontiguousarray(img), scale, rng, cfg) for img in imgs]
    return torch.from_numpy(np.stack(low)).permute(0, 3, 1, 2).contiguous()
