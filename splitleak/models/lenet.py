"""The LeNet of "Deep Leakage from Gradients" (Zhu et al., 2019), readable in one sitting."""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """Three 5x5 sigmoid convs with 12 channels, then one linear layer.

    conv1 and conv2 halve the resolution, conv3 keeps it, so the classifier sees
    12 * (size / 4) ** 2 features. Weights and biases start uniform in (-0.5, 0.5).
    """

    def __init__(self, size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 12, 5, stride=2, padding=2), nn.Sigmoid())
        self.conv2 = nn.Sequential(nn.Conv2d(12, 12, 5, stride=2, padding=2), nn.Sigmoid())
        self.conv3 = nn.Sequential(nn.Conv2d(12, 12, 5, stride=1, padding=2), nn.Sigmoid())
        self.fc = nn.Linear(12 * (size // 4) ** 2, num_classes)
        for p in self.parameters():
            nn.init.uniform_(p, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.conv1(x)))
        return self.fc(x.flatten(1))
