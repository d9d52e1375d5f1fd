"""Cut networks into ordered, named stages; head = stages up to the split point, tail = the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # torchvision is imported lazily: it is slow to import
    from torchvision.models import MobileNetV3, ResNet, VisionTransformer
    from torchvision.models.video import VideoResNet

    from splitleak.models.classifiers import Moderate, Simple
    from splitleak.models.cnn6 import CNN6
    from splitleak.models.lenet import LeNet

Stages = list[tuple[str, nn.Module]]


class Normalize(nn.Module):
    """(x - mean) / std over the channel axis (dim 1), for images (B,C,H,W) and clips (B,C,T,H,W)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


class ViTEmbed(nn.Module):
    """Patchify, prepend the class token, add position embeddings, dropout (torchvision's order)."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.patch_size, self.hidden_dim = vit.patch_size, vit.hidden_dim
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token  # shared Parameter objects, not copies
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        x = self.conv_proj(x).reshape(n, self.hidden_dim, (h // self.patch_size) * (w // self.patch_size))
        x = torch.cat([self.class_token.expand(n, -1, -1), x.permute(0, 2, 1)], dim=1)
        return self.dropout(x + self.pos_embedding)


class ViTClassifier(nn.Module):
    """Final layer norm, take the class token, classification heads."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.ln, self.heads = vit.encoder.ln, vit.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.ln(x)[:, 0])


def lenet_stages(m: LeNet) -> Stages:
    return [("conv1", m.conv1), ("conv2", m.conv2), ("conv3", m.conv3),
            ("classifier", nn.Sequential(nn.Flatten(1), m.fc))]


def cnn6_stages(m: CNN6) -> Stages:
    return [(f"conv{i}", conv) for i, conv in enumerate(m.convs(), start=1)] + \
        [("classifier", nn.Sequential(nn.Flatten(1), m.fc))]


def simple_stages(m: Simple) -> Stages:
    return [("classifier", m.classifier)]


def moderate_stages(m: Moderate) -> Stages:
    return [("conv1", m.conv1), ("conv2", m.conv2), ("fc1", m.fc1), ("classifier", m.fc)]


def resnet_stages(m: ResNet) -> Stages:
    return [("conv1", nn.Sequential(m.conv1, m.bn1, m.relu)),
            ("layer1", nn.Sequential(m.maxpool, m.layer1)),
            ("layer2", m.layer2), ("layer3", m.layer3), ("layer4", m.layer4),
            ("classifier", nn.Sequential(m.avgpool, nn.Flatten(1), m.fc))]


def mobilenet_stages(m: MobileNetV3) -> Stages:
    blocks = [(str(i), block) for i, block in enumerate(m.features)]
    return blocks + [("classifier", nn.Sequential(m.avgpool, nn.Flatten(1), m.classifier))]


def vit_stages(m: VisionTransformer) -> Stages:
    blocks = [(str(i), block) for i, block in enumerate(m.encoder.layers)]
    return [("embed", ViTEmbed(m))] + blocks + [("classifier", ViTClassifier(m))]


def r3d_stages(m: VideoResNet) -> Stages:
    return [("stem", m.stem), ("layer1", m.layer1), ("layer2", m.layer2),
            ("layer3", m.layer3), ("layer4", m.layer4),
            ("classifier", nn.Sequential(m.avgpool, nn.Flatten(1), m.fc))]
