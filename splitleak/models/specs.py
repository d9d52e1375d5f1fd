"""The registry: what each model is, how to build it, how to cut it, which inputs it takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from splitleak.errors import SplitleakError
import splitleak.models.stages as st
from splitleak.models.classifiers import Moderate, Simple
from splitleak.models.clipnet import SEGMENTS, ClipNet, FrameAvg, clipnet_stages, frameavg_stages
from splitleak.models.cnn6 import CNN6
from splitleak.models.lenet import LeNet

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the zoo. `build(size, num_classes)` makes the bare network (no normalisation)."""

    name: str
    build: Callable[[int, int], nn.Module]
    stages: Callable[[nn.Module], st.Stages]
    split_points: tuple[str, ...]  # named stages one may cut after (`none` is added by split_points())
    input_kind: str = "image"  # "image": (B,3,H,W); "clip": (B,3,T,H,W)
    default_size: int = 224
    default_classes: int = 1000
    clip_len: int | None = None
    clip_multiple: int = 1  # a clip's length must be a multiple of it (clipnet: its segments)
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    size_multiple: int = 1
    min_size: int = 16
    torchvision: bool = True  # has torchvision weights by name

    def check_size(self, size: int) -> None:
        """Raise SplitleakError if the network cannot take size x size inputs."""
        if isinstance(size, bool) or not isinstance(size, int) or size < self.min_size:
            raise SplitleakError(f"{self.name}: size must be an integer >= {self.min_size}, got {size!r}")
        if size % self.size_multiple:
            raise SplitleakError(f"{self.name}: size must be a multiple of {self.size_multiple}, got {size}")


def _tv(name: str, size: int, num_classes: int) -> nn.Module:
    from torchvision.models import get_model  # lazy: torchvision is slow to import

    extra = {"image_size": size} if name.startswith("vit_") else {}
    return get_model(name, weights=None, num_classes=num_classes, **extra)


_RESNET_POINTS = ("conv1", "layer1", "layer2", "layer3", "layer4")

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("lenet", lambda size, nc: LeNet(size, nc), st.lenet_stages, ("conv1", "conv2", "conv3"),
              default_size=32, default_classes=10, mean=None, std=None, size_multiple=4, min_size=4,
              torchvision=False),
    ModelSpec("cnn6", lambda size, nc: CNN6(size, nc), st.cnn6_stages, tuple(f"conv{i}" for i in range(1, 7)),
              default_size=32, default_classes=10, mean=None, std=None, min_size=8, torchvision=False),
    ModelSpec("simple", lambda size, nc: Simple(size, nc), st.simple_stages, (),
              default_size=32, default_classes=10, mean=None, std=None, min_size=1, torchvision=False),
    ModelSpec("moderate", lambda size, nc: Moderate(size, nc), st.moderate_stages, ("conv1", "conv2", "fc1"),
              default_size=32, default_classes=10, mean=None, std=None, min_size=4, torchvision=False),
    ModelSpec("resnet18", partial(_tv, "resnet18"), st.resnet_stages, _RESNET_POINTS),
    ModelSpec("resnet50", partial(_tv, "resnet50"), st.resnet_stages, _RESNET_POINTS),
    ModelSpec("mobilenet_v3_small", partial(_tv, "mobilenet_v3_small"), st.mobilenet_stages,
              tuple(str(i) for i in range(13))),
    ModelSpec("vit_b_16", partial(_tv, "vit_b_16"), st.vit_stages, tuple(str(i) for i in range(12)), size_multiple=16),
    ModelSpec("r3d_18", partial(_tv, "r3d_18"), st.r3d_stages, ("stem",) + _RESNET_POINTS[1:],
              input_kind="clip", default_size=112, default_classes=400, clip_len=8,
              mean=KINETICS_MEAN, std=KINETICS_STD),
    # the video paper's clip pipelines (splitleak/models/clipnet.py): split at `pool` / `mean`, the
    # frozen extractor is the head and only the small classifier trains
    ModelSpec("clipnet", lambda size, nc: ClipNet(nc), clipnet_stages, ("extract", "pool"),
              input_kind="clip", default_size=112, default_classes=10, clip_len=2 * SEGMENTS,
              clip_multiple=SEGMENTS, mean=KINETICS_MEAN, std=KINETICS_STD, torchvision=False),
    ModelSpec("frameavg", lambda size, nc: FrameAvg(nc), frameavg_stages, ("extract", "mean"),
              input_kind="clip", default_size=112, default_classes=10, clip_len=8, torchvision=False),
]}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or SplitleakError listing the known models."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise SplitleakError(f"unknown model {name!r}; choose one of: {', '.join(REGISTRY)}") from None


def all_stages(spec: ModelSpec, network: nn.Module) -> st.Stages:
    """The full stage list: input normalisation (if any), then the network's own stages."""
    norm = [("normalize", st.Normalize(spec.mean, spec.std))] if spec.mean is not None else []
    return norm + spec.stages(network)
