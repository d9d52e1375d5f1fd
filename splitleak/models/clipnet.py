"""The video-leakage paper's clip pipelines: a frozen extractor turns a clip into features, a small
classifier over them is what federated learning trains (and what the cloud's gradient covers).

`clipnet` (the paper's I3D setting): the clip (3, T, H, W) is cut into SEGMENTS equal segments
along time; a 3D CNN (torchvision's r3d_18 as the stand-in for I3D) turns each into a 512-vector
(global average pool), giving a (10, 512) matrix; a max-pool over groups of 8 channels makes it
(1, 10, 64); the classifier is the paper's modified LeNet (its Fig. 7, as read here): DLG's
LeNet with one input channel, i.e. the (10, 64) matrix treated as a one-channel image through
three 5x5 sigmoid convs of 12 channels (strides 2, 2, 1), then one linear layer (576 -> classes).

`frameavg` (the paper's frame-level variant): a 2D CNN (resnet18 through layer3, global average
pool: 256 per frame) on every frame, averaged over the clip's frames, then a small classifier
(256 -> 128 sigmoid -> classes). Every layer of both classifiers is one R-GAP can invert.
"""

from __future__ import annotations

import torch
from torch import nn

SEGMENTS = 10  # segments per clip: the paper's 10 rows of the feature matrix
POOLED = 64  # channels after the max-pool over channels
LENET_CHANNELS = 12
FRAME_HIDDEN = 128


def _conv_side(n: int, stride: int) -> int:
    return (n + 2 * 2 - 5) // stride + 1  # 5x5 kernel, padding 2


def clip_lenet(num_classes: int, rows: int = SEGMENTS, cols: int = POOLED) -> nn.Sequential:
    """DLG's LeNet on a one-channel rows x cols matrix: conv(s2)-sig, conv(s2)-sig, conv(s1)-sig, fc."""
    c = LENET_CHANNELS
    h, w = _conv_side(_conv_side(rows, 2), 2), _conv_side(_conv_side(cols, 2), 2)
    net = nn.Sequential(nn.Conv2d(1, c, 5, stride=2, padding=2), nn.Sigmoid(),
                        nn.Conv2d(c, c, 5, stride=2, padding=2), nn.Sigmoid(),
                        nn.Conv2d(c, c, 5, stride=1, padding=2), nn.Sigmoid(),
                        nn.Flatten(1), nn.Linear(c * h * w, num_classes))
    for p in net.parameters():  # DLG's initialisation: the gradient then carries the input well
        nn.init.uniform_(p, -0.5, 0.5)
    return net


class SegmentFeatures(nn.Module):
    """(B, 3, T, H, W) -> (B, SEGMENTS, 512): r3d_18's body on each of SEGMENTS time segments."""

    def __init__(self, r3d: nn.Module) -> None:
        super().__init__()
        self.stem, self.layer1, self.layer2 = r3d.stem, r3d.layer1, r3d.layer2
        self.layer3, self.layer4, self.avgpool = r3d.layer3, r3d.layer4, r3d.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if t % SEGMENTS:
            raise ValueError(f"a clip of {t} frames does not split into {SEGMENTS} segments")
        x = x.reshape(b, c, SEGMENTS, t // SEGMENTS, h, w).transpose(1, 2).reshape(b * SEGMENTS, c, t // SEGMENTS, h, w)
        for layer in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        return self.avgpool(x).flatten(1).reshape(b, SEGMENTS, -1)


class ChannelMaxPool(nn.Module):
    """(B, S, C) -> (B, 1, S, POOLED): max over groups of C / POOLED neighbouring channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape
        return x.reshape(b, s, POOLED, c // POOLED).amax(-1)[:, None]


class ClipNet(nn.Module):
    """Segment features (frozen in learning: it is the head) -> channel max-pool -> clip LeNet."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        from torchvision.models.video import r3d_18  # lazy: torchvision is slow to import

        self.extractor = SegmentFeatures(r3d_18(weights=None))
        self.pool = ChannelMaxPool()
        self.classifier = clip_lenet(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.extractor(x)))


class FrameFeatures(nn.Module):
    """(B, 3, T, H, W) -> (B, T, 256): resnet18 through layer3 and a global average pool, per frame."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        r = resnet18(weights=None)
        self.body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3,
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        return self.body(x.transpose(1, 2).reshape(b * t, c, h, w)).reshape(b, t, -1)


class FrameMean(nn.Module):
    """(B, T, F) -> (B, F): the clip's feature is its frames' mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


class FrameAvg(nn.Module):
    """Per-frame 2D features, averaged over the clip, then a small sigmoid classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.extractor = FrameFeatures()
        self.mean = FrameMean()
        self.classifier = nn.Sequential(nn.Linear(256, FRAME_HIDDEN), nn.Sigmoid(),
                                        nn.Linear(FRAME_HIDDEN, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.mean(self.extractor(x)))


def clipnet_stages(m: ClipNet) -> list[tuple[str, nn.Module]]:
    return [("extract", m.extractor), ("pool", m.pool), ("classifier", m.classifier)]


def frameavg_stages(m: FrameAvg) -> list[tuple[str, nn.Module]]:
    return [("extract", m.extractor), ("mean", m.mean), ("classifier", m.classifier)]
