"""CNN6 of "R-GAP: Recursive Gradient Attack on Privacy" (Zhu & Blaschko, ICLR 2021).

Six bias-free convolutions with leaky ReLU (slope 0.2), then one bias-free linear layer: every
layer is linear in its input and every activation is invertible, which is what lets R-GAP
solve for the input layer by layer in closed form. Channels and kernels follow the R-GAP
code (3->12->36->36->36->64->128; its FC has one output for a binary loss, ours has
`num_classes`); no input normalisation, so the first layer sees [0, 1] frames.
"""

from __future__ import annotations

import torch
from torch import nn

# (out_channels, kernel, stride, padding) per convolution
LAYERS = ((12, 4, 2, 2), (36, 3, 2, 1), (36, 3, 1, 1), (36, 3, 1, 1), (64, 3, 2, 1), (128, 3, 1, 1))
SLOPE = 0.2


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of a convolution on a size x size input."""
    return (size + 2 * padding - kernel) // stride + 1


class CNN6(nn.Module):
    """conv1..conv6 (conv + leaky ReLU, no bias), then fc (no bias) on the flattened map.

    At 32x32 the maps are 17, 9, 9, 9, 5, 5 pixels wide and fc sees 128 * 5 * 5 = 3200 values.
    """

    def __init__(self, size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        channels, side = 3, size
        for i, (out, kernel, stride, padding) in enumerate(LAYERS, start=1):
            conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=padding, bias=False)
            self.add_module(f"conv{i}", nn.Sequential(conv, nn.LeakyReLU(SLOPE)))
            channels, side = out, conv_out(side, kernel, stride, padding)
        self.fc = nn.Linear(channels * side * side, num_classes, bias=False)

    def convs(self) -> list[nn.Sequential]:
        return [getattr(self, f"conv{i}") for i in range(1, len(LAYERS) + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs():
            x = conv(x)
        return self.fc(x.flatten(1))
