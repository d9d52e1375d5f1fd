"""The video-leakage paper's Table II classifiers: `simple` (one FC) and `moderate` (several
layers with non-linearities), on raw 32x32 frames or over a frozen feature extractor.

Table II compares DLG, iDLG and R-GAP on each classifier trained (a) on raw frames and (b) on
the features of a frozen extractor. Here (b) is resnet18 cut at a split point (`layer2` or
`layer4`; seeded weights, or torchvision / file weights when given), built with
`build_split_model("resnet18", "layer2", classifier="moderate")`: the head is the frozen
extractor, the tail is the classifier over the head's flattened features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitleak.models.cnn6 import conv_out

HIDDEN = (256, 128)  # widths of the moderate classifier's hidden FC layers (feature input)


def simple_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Flatten, then one linear layer."""
    return nn.Sequential(nn.Flatten(1), nn.Linear(in_features, num_classes))


def moderate_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Flatten, FC-sigmoid, FC-sigmoid, FC: the moderate classifier over a feature vector."""
    a, b = HIDDEN
    return nn.Sequential(nn.Flatten(1), nn.Linear(in_features, a), nn.Sigmoid(),
                         nn.Linear(a, b), nn.Sigmoid(), nn.Linear(b, num_classes))


def classifier_params(kind: str, feature_shape: tuple[int, ...], num_classes: int) -> int:
    """Parameters of the `kind` classifier over features of `feature_shape` (to bound it before building)."""
    widths = [math.prod(feature_shape), *(HIDDEN if kind == "moderate" else ()), num_classes]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))


def feature_classifier(kind: str, feature_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """The `kind` ("simple" | "moderate") classifier over features of `feature_shape`."""
    build = {"simple": simple_head, "moderate": moderate_head}[kind]
    return build(math.prod(feature_shape), num_classes)


class Simple(nn.Module):
    """One linear layer on the flattened frame: 3 * size * size -> num_classes (3072 at 32x32)."""

    def __init__(self, size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.classifier = simple_head(3 * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


class Moderate(nn.Module):
    """Two 5x5 stride-2 sigmoid convs (12 channels), an FC-sigmoid layer of 256, then the FC output.

    At 32x32: 12x16x16, 12x8x8, then 768 -> 256 -> num_classes.
    """

    def __init__(self, size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 12, 5, stride=2, padding=2), nn.Sigmoid())
        self.conv2 = nn.Sequential(nn.Conv2d(12, 12, 5, stride=2, padding=2), nn.Sigmoid())
        side = conv_out(conv_out(size, 5, 2, 2), 5, 2, 2)
        self.fc1 = nn.Sequential(nn.Flatten(1), nn.Linear(12 * side * side, HIDDEN[0]), nn.Sigmoid())
        self.fc = nn.Linear(HIDDEN[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc1(self.conv2(self.conv1(x))))


class FeatureClassifier(nn.Module):
    """A feature extractor's network with a classifier over its features at a split point.

    Its state dict (`extractor.*`, `classifier.*`) is what a split model with `classifier=`
    saves and loads; forward runs the head (stages up to the split point) then the classifier.
    """

    def __init__(self, head: nn.Module, extractor: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.extractor, self.classifier = extractor, classifier
        self.__dict__["head"] = head  # shares the extractor's parameters; kept out of the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(x))
