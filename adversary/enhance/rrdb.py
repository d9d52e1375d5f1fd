"""A compact RRDBNet (ESRGAN / Real-ESRGAN generator) for `splitleak train-sr`.

The module names follow Real-ESRGAN's `RRDBNet` (conv_first, body.N.rdbK.convJ, conv_body, conv_upK,
conv_hr, conv_last) so that a saved state dict is detected and rebuilt by spandrel as an ESRGAN model:
one loader (adversary.enhance.weights) serves the official Real-ESRGAN files and ours. spandrel fixes
the dense blocks' growth channels at 32, so `grow` stays 32 for spandrel-loadable nets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.errors import SplitleakError

SPANDREL_GROW = 32  # the growth channels spandrel assumes for every ESRGAN model


@dataclass(frozen=True)
class RRDBConfig:
    """Shape of the generator: features, RRDB blocks, dense-block growth channels, upscale factor."""

    num_feat: int = 32
    num_block: int = 2
    grow: int = SPANDREL_GROW
    scale: int = 4

    def check(self) -> RRDBConfig:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SplitleakError(f"bad RRDBNet {name} {value!r}: expected a positive integer")
        if self.scale & (self.scale - 1):
            raise SplitleakError(f"the RRDBNet upsamples by powers of two; scale {self.scale} is not one")
        return self


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing all earlier outputs; residual scaled by 0.2 (ESRGAN)."""

    def __init__(self, feat: int, grow: int) -> None:
        super().__init__()
        widths = [feat + i * grow for i in range(5)]
        for i, width in enumerate(widths, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(width, grow if i < 5 else feat, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, feat: int, grow: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(feat, grow) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """conv -> RRDB blocks (+ skip) -> (nearest x2 -> conv) per octave -> conv -> conv, as Real-ESRGAN."""

    def __init__(self, config: RRDBConfig = RRDBConfig()) -> None:
        super().__init__()
        self.config = config.check()
        feat = config.num_feat
        self.conv_first = nn.Conv2d(3, feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(feat, config.grow) for _ in range(config.num_block)))
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        for k in range(1, int(math.log2(config.scale)) + 1):
            setattr(self, f"conv_up{k}", nn.Conv2d(feat, feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for k in range(1, int(math.log2(self.config.scale)) + 1):
            up = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{k}")(up), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def init_as_upsampler(model: RRDBNet, noise: float = 0.1) -> RRDBNet:
    """Start the net as a smooth upsampler: the first, HR and last convolutions pass RGB through on their
    first three channels, each upsampling conv smooths (a 3x3 binomial kernel: nearest x2 then this is
    close to bilinear), the trunk starts near zero. Inputs are in [0, 1], so the leaky ReLUs are the
    identity on that path. Random weights scaled by `noise` stay everywhere else. From this start a
    few hundred CPU steps beat bicubic; from a random start they do not (measured in docs/enhancement.md)."""
    smooth = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1.0
    ups = [getattr(model, f"conv_up{k}") for k in range(1, int(math.log2(model.config.scale)) + 1)]
    with torch.no_grad():
        for conv, kernel in [(model.conv_first, delta), (model.conv_hr, delta), (model.conv_last, delta),
                             *((up, smooth) for up in ups)]:
            conv.weight.mul_(noise)
            conv.bias.zero_()
            for c in range(3):
                conv.weight[c, c] += kernel
        model.conv_body.weight.mul_(noise)
        model.conv_body.bias.zero_()
    return model
