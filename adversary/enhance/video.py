"""`video`: multi-frame super-resolution from neighbouring recovered frames of the same stream.

Alignment + fusion over a window (VESPCN / EDVR's idea, small): every frame and its `radius`
neighbours on each side are upsampled; dense optical flow (OpenCV's Farneback) from the frame to
each neighbour warps the neighbours onto it; a small network on the low-res grid fuses the stack
into a residual. The neighbours were sampled on other sub-pixel grids and carry independent
inversion noise: both are information one frame lacks.

The upsampler is bicubic, or a trained `noref` generator (`train-sr --method video --base DIR`,
saved inside the video model): then the residual starts from noref's own output for the frame, so
the method begins where noref ends and training only adds what the neighbours carry. Over bicubic
the residual starts from the analytic fusion. Without weights the fusion is analytic: a per-pixel
average of the bicubic-aligned frames that agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from adversary.enhance.base import Enhancer
from adversary.enhance.degrade import DegradeConfig, preset
from adversary.enhance.pairs import PairSampler, load_footage
from adversary.enhance.ref_model import GridFusion, upsample
from adversary.enhance.registry import register, register_trainer
from adversary.enhance.rrdb import RRDBConfig, RRDBNet
from adversary.enhance.training import (TrainSpec, load_at_scale, load_trained, model_config, save_model,
                                        train_model)
from splitleak.errors import SplitleakError

METHOD = "video"
FRAMES_PER_CHUNK = 32


@dataclass(frozen=True)
class VideoConfig:
    scale: int = 4
    radius: int = 2  # neighbours on each side
    channels: int = 48
    blocks: int = 4
    base: dict | None = None  # the noref RRDBNet's config (RRDBConfig as a dict) when it upsamples; None: bicubic


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


def analytic_fuse(window: torch.Tensor, radius: int, tolerance: float = 0.05) -> torch.Tensor:
    """Average each pixel over the aligned frames that agree with the centre within `tolerance`:
    DLG leaves independent noise in every frame, so agreeing neighbours average it out."""
    centre = window[:, radius:radius + 1]
    diff = (window - centre).abs().mean(dim=2, keepdim=True)
    weight = torch.exp(-(diff / tolerance) ** 2)
    return (weight * window).sum(1) / weight.sum(1)


class VideoSR(nn.Module):
    """Aligned window of upsampled frames -> its start (the centre frame when a noref generator
    upsampled it, else the analytic fusion) plus a learned residual (which starts at zero)."""

    def __init__(self, config: VideoConfig = VideoConfig()):
        super().__init__()
        self.config = config
        self.base = RRDBNet(RRDBConfig(**config.base)) if config.base is not None else None
        if self.base is not None:
            self.base.requires_grad_(False)
        self.fusion = GridFusion(3 * (2 * config.radius + 1), 3, config.scale, config.channels, config.blocks)

    @staticmethod
    def from_config(config: dict) -> "VideoSR":
        """The net a train-sr folder's config.json describes (its "net" entry)."""
        return VideoSR(VideoConfig(**config["net"]))

    def upsample(self, low: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, h, w) -> (N, 3, H, W): the noref generator's output, or bicubic."""
        if self.base is None:
            return upsample(low, self.config.scale)
        with torch.no_grad():
            return self.base(low).clamp(0, 1)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        radius = self.config.radius
        start = window[:, radius] if self.base is not None else analytic_fuse(window, radius)
        return start + self.fusion(window.flatten(1, 2))


@register
class Video(Enhancer):
    """Multi-frame: each frame enhanced from itself and its aligned neighbours in the batch."""

    name = "video"
    temporal = True
    weights = "optional"

    def __init__(self, scale: int = 4, device: str = "cpu", weights: str | None = None) -> None:
        super().__init__(scale, device, weights)
        self.net: VideoSR | None = None
        self.radius = VideoConfig.radius
        if weights is not None:
            self.net = load_at_scale(weights, METHOD, VideoSR.from_config, scale, self.device)
            self.radius = self.net.config.radius
        self.context = self.radius  # the pipeline hands each batch this many neighbours on each side

    def forward(self, low: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        up = self.net.upsample(low) if self.net is not None else upsample(low, self.scale)
        outs = []
        for i in range(0, low.shape[0], FRAMES_PER_CHUNK):
            window = aligned_window(up.cpu(), self.radius, range(i, min(i + FRAMES_PER_CHUNK, low.shape[0])))
            window = window.to(self.device)
            outs.append(self.net(window) if self.net is not None else analytic_fuse(window, self.radius))
        return torch.cat(outs)


# ----------------------------------------------------------------------------- training


def window_batch(samplers: list[PairSampler], batch: int, model: VideoSR,
                 rng: np.random.Generator) -> tuple[tuple[torch.Tensor], torch.Tensor]:
    """((aligned windows (B, 2r+1, 3, H, W),), centre targets (B, 3, H, W)): runs of consecutive frames
    of one random clip, each frame degraded on its own draw (independent noise), time either way."""
    sampler, radius = samplers[int(rng.integers(len(samplers)))], model.config.radius
    pairs = sampler.clips(batch, 2 * radius + 1)
    windows = []
    for low in pairs.low:
        if rng.random() < 0.5:
            low = low.flip(0)
        up = model.upsample(low.to(next(model.parameters()).device)).cpu()
        windows.append(aligned_window(up, radius, range(radius, radius + 1)))
    return (torch.cat(windows),), pairs.high[:, radius]


def base_generator(weights: str, scale: int) -> RRDBNet:
    """The noref generator of a train-sr noref folder, to upsample inside the video model."""
    from adversary.enhance.noref import build_generator

    base = load_trained(weights, "noref", build_generator)
    if base.config.scale != scale:
        raise SplitleakError(f"the noref base {weights} upscales x{base.config.scale}, not x{scale}")
    return base


def fit_video(clips: list[torch.Tensor], spec: TrainSpec, net: VideoConfig = VideoConfig(),
              degradation: DegradeConfig | None = None, base: str | None = None) -> dict[str, Any]:
    """Train VideoSR on windows of consecutive frames of `clips` (each (T, 3, H, W) clean frames),
    over a frozen noref generator when `base` names a train-sr noref folder; saves it to `spec.out`
    (save_model); returns its config."""
    if not clips or any(c.ndim != 4 or c.shape[0] < 2 * net.radius + 1 for c in clips):
        raise SplitleakError(f"video training needs clips of at least {2 * net.radius + 1} frames, each (T, 3, H, W)")
    degradation = degradation or preset(spec.degradation or "recovered")
    generator = base_generator(base, spec.scale) if base is not None else None
    net = VideoConfig(**{**asdict(net), "scale": spec.scale,
                         "base": asdict(generator.config) if generator is not None else None})
    torch.manual_seed(spec.seed)
    samplers = [PairSampler(c, spec.scale, spec.patch, degradation, spec.seed + k) for k, c in enumerate(clips)]
    rng = np.random.default_rng(spec.seed)
    model = VideoSR(net)
    if generator is not None:
        model.base.load_state_dict(generator.state_dict())
    log = train_model(model, lambda step: window_batch(samplers, spec.batch, model, rng), steps=spec.steps,
                      lr=spec.lr, device=spec.device, progress=spec.progress, desc="train-sr video")
    start = "noref's output for the frame" if generator is not None else "the analytic fusion"
    config = model_config(METHOD, "VideoSR (Farneback alignment + grid fusion, adversary.enhance.video)", net, spec,
                          model, log, degradation, f"{start} (the residual's last conv starts at zero)",
                          frames_loaded=[int(c.shape[0]) for c in clips], base=base)
    save_model(spec.out, model.cpu(), config)
    return config


@register_trainer(METHOD)
def train_video(spec: TrainSpec) -> dict[str, Any]:
    """`splitleak train-sr --method video`: VideoSR trained on consecutive frames of `spec.source`."""
    return fit_video([load_footage(spec.source, spec.size, spec.frames, spec.stride)], spec, base=spec.base)
