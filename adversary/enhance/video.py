"""`video`: multi-frame super-resolution from neighbouring recovered frames of the same stream.

Alignment + fusion over a window (VESPCN / EDVR's idea, small): every frame and its `radius`
neighbours on each side are upsampled (bicubic); dense optical flow (OpenCV's Farneback) from
the frame to each neighbour warps the neighbours onto it; a small network on the low-res grid
fuses the stack into a residual over the upsampled frame. The neighbours were sampled on other
sub-pixel grids and carry independent inversion noise: both are information one frame lacks.
Without weights the fusion is analytic: a per-pixel average of the aligned frames that agree.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from adversary.enhance.base import Enhancer
from adversary.enhance.ref_model import GridFusion, build, load_state, save_state, upsample
from adversary.enhance.reference import check_clips, degrade_like_recovered
from adversary.enhance.registry import register
from splitleak.errors import SplitleakError

ARCH = "splitleak-videosr"
FRAMES_PER_CHUNK = 32


@dataclass(frozen=True)
class VideoConfig:
    scale: int = 4
    radius: int = 2  # neighbours on each side
    channels: int = 48
    blocks: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


def flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Farneback flow (H, W, 2) with src(p) ~ dst(p + flow(p)); src, dst: (H, W) uint8 grey."""
    return cv2.calcOpticalFlowFarneback(src, dst, None, pyr_scale=0.5, levels=3, winsize=9, iterations=3,
                                        poly_n=5, poly_sigma=1.1, flags=0)


def grey(up: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W) uint8 luma, what Farneback takes."""
    luma = 0.299 * up[:, 0] + 0.587 * up[:, 1] + 0.114 * up[:, 2]
    return (luma.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def warp(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) sampled at p + f(p); f (N, H, W, 2) in pixels; borders replicate."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    gx = (xs + f[..., 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + f[..., 1]) * (2 / max(h - 1, 1)) - 1
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=True)


def aligned_window(up: torch.Tensor, radius: int, centres: range | None = None) -> torch.Tensor:
    """For each centre frame t of the sequence `up` (T, 3, H, W): (len, 2*radius+1, 3, H, W), the
    frames t-radius..t+radius warped onto t (indices clamped at the sequence's ends)."""
    count = up.shape[0]
    centres = centres if centres is not None else range(count)
    g = grey(up)
    out = []
    for t in centres:
        stack = []
        for j in range(t - radius, t + radius + 1):
            n = min(max(j, 0), count - 1)
            if n == t:
                stack.append(up[t])
                continue
            f = torch.from_numpy(flow(g[t], g[n])).to(up.dtype)
            stack.append(warp(up[n:n + 1], f[None])[0])
        out.append(torch.stack(stack))
    return torch.stack(out)


class VideoSR(nn.Module):
    """Aligned window -> the centre frame, upsampled plus a learned residual."""

    def __init__(self, config: VideoConfig = VideoConfig()):
        super().__init__()
        self.config = config
        self.fusion = GridFusion(3 * (2 * config.radius + 1), 3, config.scale, config.channels, config.blocks)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        centre = window[:, self.config.radius]
        return centre + self.fusion(window.flatten(1, 2))


def analytic_fuse(window: torch.Tensor, radius: int, tolerance: float = 0.05) -> torch.Tensor:
    """Average each pixel over the aligned frames that agree with the centre within `tolerance`."""
    centre = window[:, radius:radius + 1]
    diff = (window - centre).abs().mean(dim=2, keepdim=True)
    weight = torch.exp(-(diff / tolerance) ** 2)
    return (weight * window).sum(1) / weight.sum(1)


@register
class Video(Enhancer):
    """Multi-frame: each frame enhanced from itself and its aligned neighbours in the batch."""

    name = "video"
    temporal = True

    def __init__(self, scale: int = 4, device: str = "cpu", weights: str | None = None) -> None:
        super().__init__(scale, device)
        self.net: VideoSR | None = None
        self.radius = VideoConfig.radius
        if weights is not None:
            config, state = load_state(weights, ARCH)
            self.net = build(VideoSR, VideoConfig, config, state, weights).to(self.device)
            if self.net.config.scale != scale:
                raise SplitleakError(f"weight file {weights} is for scale {self.net.config.scale}, not --scale {scale}")
            self.radius = self.net.config.radius

    def forward(self, low: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        up = upsample(low, self.scale)
        outs = []
        for i in range(0, low.shape[0], FRAMES_PER_CHUNK):
            window = aligned_window(up.cpu(), self.radius, range(i, min(i + FRAMES_PER_CHUNK, low.shape[0])))
            window = window.to(self.device)
            outs.append(self.net(window) if self.net is not None else analytic_fuse(window, self.radius))
        return torch.cat(outs)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class VideoTrainConfig:
    out: str
    steps: int = 400
    batch: int = 4
    lr: float = 5e-4
    noise: float = 0.02
    seed: int = 0
    scale: int = 4
    radius: int = VideoConfig.radius
    channels: int = VideoConfig.channels
    blocks: int = VideoConfig.blocks


def video_batch(clips: list[torch.Tensor], cfg: VideoTrainConfig, g: torch.Generator):
    """(aligned windows (B, 2r+1, 3, H, W), targets (B, 3, H, W)): consecutive frames of one clip,
    each degraded on its own as recovered frames are (independent noise)."""
    windows, targets = [], []
    for _ in range(cfg.batch):
        clip = clips[int(torch.randint(len(clips), (1,), generator=g))]
        t = int(torch.randint(clip.shape[0], (1,), generator=g))
        idx = [min(max(j, 0), clip.shape[0] - 1) for j in range(t - cfg.radius, t + cfg.radius + 1)]
        seq = clip[idx]
        if torch.rand(1, generator=g) < 0.5:
            seq = seq.flip(-1)
        if torch.rand(1, generator=g) < 0.5:  # time runs both ways
            seq = seq.flip(0)
        up = upsample(degrade_like_recovered(seq, cfg.scale, cfg.noise, g), cfg.scale)
        windows.append(aligned_window(up, cfg.radius, range(cfg.radius, cfg.radius + 1)))
        targets.append(seq[cfg.radius:cfg.radius + 1])
    return torch.cat(windows), torch.cat(targets)


def train_video_sr(clips: list[torch.Tensor], cfg: VideoTrainConfig, progress: bool = False) -> dict:
    """Train `VideoSR` on windows of consecutive frames of `clips` (each (T, 3, H, W) in [0, 1]);
    saves safetensors with its config to `cfg.out`; returns the training log."""
    check_clips(clips, cfg.scale)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    net = VideoSR(VideoConfig(scale=cfg.scale, radius=cfg.radius, channels=cfg.channels, blocks=cfg.blocks))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    losses, start = [], time.perf_counter()
    steps = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="train video", unit="step")
    for _ in steps:
        window, target = video_batch(clips, cfg, g)
        loss = F.l1_loss(net(window), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    log = {"steps": cfg.steps, "seconds": time.perf_counter() - start, "loss_first": float(np.mean(losses[:20])),
           "loss_last": float(np.mean(losses[-20:]))}
    save_state(cfg.out, ARCH, net.config.to_dict(), net, log)
    return {**log, "frames": [int(c.shape[0]) for c in clips]}
