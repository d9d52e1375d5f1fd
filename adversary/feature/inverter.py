"""The black-box inversion network G: tapped features -> pixels, a VAE latent, or a diffusion latent.

"Unlocking Visual Secrets", eq. 11: a small U-Net trained on query pairs (x_q, F1(x_q)). Features
of any layout are put on a grid (C, h, w), normalised per channel with the query set's statistics,
resized to the output grid, and run through the U-Net. The video variant (eq. 13) first mixes K
consecutive frames' features with a pointwise temporal convolution (kernel K x 1 x 1: across
time, one pixel at a time), initialised to pass the centre frame through.

Saved as `inverter.safetensors` (weights and normalisation buffers) + `inverter.json` (the
config that rebuilds the network, plus whatever the trainer records next to it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from splitleak.errors import SplitleakError

WEIGHTS, CONFIG = "inverter.safetensors", "inverter.json"
OUTPUTS = ("pixels", "latent", "noise")  # bb-do, bb-db, bb-dmb


def grid_shape(feature_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """How one frame's features lie on a grid (C, h, w): maps as they are, vectors as 1x1 maps,
    ViT tokens (1 + s*s, D) as a D x s x s map without the class token."""
    shape = tuple(int(s) for s in feature_shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) == 2:
        side = math.isqrt(max(shape[0] - 1, 0))
        if side > 0 and side * side == shape[0] - 1:
            return (shape[1], side, side)
        return (shape[0] * shape[1], 1, 1)
    raise SplitleakError(f"features of shape {list(shape)} cannot be inverted by a U-Net (expected 1-3 dims)")


def to_grid(z: torch.Tensor, feature_shape: tuple[int, ...]) -> torch.Tensor:
    """(..., *feature_shape) -> (..., C, h, w), following grid_shape."""
    lead = z.shape[: z.dim() - len(feature_shape)]
    c, h, w = grid_shape(feature_shape)
    if len(feature_shape) == 2 and h > 1:
        z = z[..., 1:, :].transpose(-1, -2)  # drop the class token; tokens (s*s, D) -> (D, s*s)
    return z.reshape(*lead, c, h, w)


@dataclass(frozen=True)
class InverterConfig:
    """Everything that rebuilds the network: what it reads, what it writes, how big it is."""

    feature_shape: tuple[int, ...]
    out_channels: int
    out_size: int
    output: str = "pixels"  # pixels (sigmoid, [0, 1]) | latent | noise (unbounded)
    frames: int = 1  # K consecutive frames in, one out (the centre one); 1: no temporal layer
    width: int = 32
    levels: int = 2

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise SplitleakError(f"unknown inverter output {self.output!r}; choose one of {', '.join(OUTPUTS)}")
        if self.frames < 1 or self.frames % 2 == 0:
            raise SplitleakError(f"the temporal window must be an odd number of frames >= 1, got {self.frames}")
        if self.out_size % (2 ** self.levels):
            raise SplitleakError(f"output size {self.out_size} is not divisible by 2^{self.levels}")
        grid_shape(self.feature_shape)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "feature_shape": list(self.feature_shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InverterConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**known, "feature_shape": tuple(known["feature_shape"])})


def default_levels(out_size: int) -> int:
    """Down-sampling steps: down to a 4x4 (or smaller) bottleneck, at most 3."""
    levels = 0
    while levels < 3 and out_size % (2 ** (levels + 1)) == 0 and out_size // 2 ** (levels + 1) >= 4:
        levels += 1
    return levels


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = math.gcd(8, cout)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())


class FeatureInverter(nn.Module):
    """G: features (B, *feature_shape), or (B, K, *feature_shape) with K frames -> (B, out_channels, S, S)."""

    def __init__(self, config: InverterConfig) -> None:
        super().__init__()
        self.config = config
        c, _, _ = grid_shape(config.feature_shape)
        self.register_buffer("mean", torch.zeros(c))
        self.register_buffer("std", torch.ones(c))
        self.temporal = None
        if config.frames > 1:
            self.temporal = nn.Conv3d(c, c, kernel_size=(config.frames, 1, 1))
            with torch.no_grad():  # start as "take the centre frame"
                self.temporal.weight.zero_()
                self.temporal.bias.zero_()
                self.temporal.weight[:, :, config.frames // 2, 0, 0] = torch.eye(c)
        w = config.width
        widths = [w * 2 ** i for i in range(config.levels + 1)]
        self.stem = _block(c, w)
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i], 3, stride=2, padding=1)
                                  for i in range(config.levels))
        self.enc = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(config.levels))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(config.levels)))
        self.head = nn.Conv2d(w, config.out_channels, 1)
        nn.init.zeros_(self.head.weight)  # start at a constant output (grey for pixels): training only improves on it
        nn.init.zeros_(self.head.bias)

    def set_normalisation(self, features: torch.Tensor) -> None:
        """Per-channel mean and std of the query features (N, *feature_shape), ignoring non-finite entries."""
        g = to_grid(features.float(), self.config.feature_shape).transpose(0, 1).flatten(1)
        g = torch.where(torch.isfinite(g), g, torch.nan)
        mean = torch.nanmean(g, 1)
        std = torch.nanmean((g - mean[:, None]) ** 2, 1).sqrt()
        self.mean.copy_(torch.nan_to_num(mean))
        self.std.copy_(torch.nan_to_num(std, nan=1.0).clamp_min(1e-6))

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Features -> normalised grid (B, C, S, S), temporally mixed when K > 1."""
        k, fshape = self.config.frames, self.config.feature_shape
        expected = (k, *fshape) if k > 1 else fshape
        if tuple(z.shape[1:]) != tuple(expected):
            raise SplitleakError(f"the inverter takes features of shape [B, {', '.join(map(str, expected))}], "
                                 f"got {list(z.shape)}")
        g = to_grid(z.float(), fshape)
        g = torch.nan_to_num((g - self.mean[:, None, None]) / self.std[:, None, None], nan=0.0, posinf=0.0, neginf=0.0)
        if self.temporal is not None:
            g = self.temporal(g.transpose(1, 2)).squeeze(2)  # (B, K, C, h, w) -> (B, C, K, h, w) -> (B, C, h, w)
        s = self.config.out_size
        if g.shape[-1] > s:
            return F.adaptive_avg_pool2d(g, s)
        return F.interpolate(g, size=(s, s), mode="bilinear", align_corners=False) if g.shape[-1] < s else g

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(self._prepare(z))
        skips = []
        for down, enc in zip(self.down, self.enc):
            skips.append(h)
            h = enc(down(h))
        for up in self.up:
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], 1))
        out = self.head(h)
        return torch.sigmoid(out) if self.config.output == "pixels" else out


def save_inverter(model: FeatureInverter, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the weights (safetensors) and the config plus `extra` (JSON) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(folder / WEIGHTS)
    text = json.dumps({"config": model.config.to_json(), **(extra or {})}, indent=2, sort_keys=True, default=str)
    (folder / (CONFIG + ".tmp")).write_text(text)
    (folder / (CONFIG + ".tmp")).replace(folder / CONFIG)  # the config last: its presence means "complete"
    return folder


def load_inverter(folder: str | Path, device: str | torch.device = "cpu") -> tuple[FeatureInverter, dict[str, Any]]:
    """The inverter saved in `folder` (eval mode, on `device`) and everything its JSON holds."""
    folder = Path(folder)
    try:
        info = json.loads((folder / CONFIG).read_text())
        model = FeatureInverter(InverterConfig.from_json(info["config"]))
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise SplitleakError(f"cannot load the inverter in {folder}: {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), info
