"""Build a model cut at a split point: head (edge side) and tail (cloud side)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from splitleak.errors import SplitleakError
from splitleak.models.classifiers import FeatureClassifier, feature_classifier
from splitleak.models.specs import REGISTRY, ModelSpec, all_stages, get_spec
from splitleak.models.weights import build_network, check_state, composite_state, file_tag, seeded

CLASSIFIERS = ("simple", "moderate")  # classifiers a split model's tail can be replaced by

NONE = "none"  # split point: raw frames go over the wire, the tail runs the whole model


@dataclass
class SplitModel:
    """A network cut in two. Head takes inputs in [0, 1] of shape (B, *input_shape)."""

    head: nn.Module
    tail: nn.Module
    name: str
    split: str
    size: int
    weights: str  # tag: seed:N, file:<sha256[:16]>, tv:NAME
    num_classes: int
    input_kind: str
    clip_len: int | None
    input_shape: tuple[int, ...]
    network: nn.Module = field(repr=False, compare=False)  # the bare network; shares head/tail params
    classifier: str | None = None  # "simple" | "moderate": the tail is that classifier over the head's features

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The full-model state dict, in the form build_split_model(weights=PATH) loads."""
        return self.network.state_dict()


def model_names() -> list[str]:
    """Names of all models in the zoo."""
    return list(REGISTRY)


def split_points(name: str) -> list[str]:
    """Valid split points of `name`, input side first; `none` (raw input) comes first."""
    return [NONE, *get_spec(name).split_points]


def _resolve(spec: ModelSpec, split: str, size: int | None, num_classes: int,
             clip_len: int | None) -> tuple[int, int, int | None]:
    if split not in split_points(spec.name):
        raise SplitleakError(f"unknown split point {split!r} for {spec.name}; "
                             f"choose one of: {', '.join(split_points(spec.name))}")
    size = spec.default_size if size is None else size
    spec.check_size(size)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise SplitleakError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    if spec.input_kind != "clip":
        if clip_len is not None:
            raise SplitleakError(f"{spec.name} takes images, not clips: clip_len must be None")
    else:
        clip_len = spec.clip_len if clip_len is None else clip_len
        if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
            raise SplitleakError(f"clip_len must be a positive integer, got {clip_len!r}")
        if clip_len % spec.clip_multiple:
            raise SplitleakError(f"{spec.name} cuts a clip into {spec.clip_multiple} segments: its length must be "
                                 f"a multiple of {spec.clip_multiple}, got {clip_len}")
    return size, num_classes or spec.default_classes, clip_len


def _input_shape(size: int, clip_len: int | None) -> tuple[int, ...]:
    return (3, size, size) if clip_len is None else (3, clip_len, size, size)


def _cut(stages: list[tuple[str, nn.Module]], split: str) -> tuple[nn.Module, nn.Module]:
    if split == NONE:
        return nn.Identity(), nn.Sequential(OrderedDict(stages))
    k = [n for n, _ in stages].index(split) + 1
    return nn.Sequential(OrderedDict(stages[:k])), nn.Sequential(OrderedDict(stages[k:]))


def build_split_model(name: str, split: str, *, size: int | None = None, weights: str = "seed:0",
                      num_classes: int = 0, device: str = "cpu", clip_len: int | None = None,
                      classifier: str | None = None) -> SplitModel:
    """Build `name` with `weights`, cut after stage `split`; head and tail in eval mode on `device`.

    With `classifier` ("simple" or "moderate", the video paper's Table II) the head stays the
    frozen feature extractor and the tail is that classifier over the head's flattened features
    instead of the model's own remaining stages; `weights` then gives the extractor's weights
    (seed:N also seeds the classifier), or is a file written from such a model's state_dict().
    """
    spec = get_spec(name)
    size, num_classes, clip_len = _resolve(spec, split, size, num_classes, clip_len)
    dev = _device(device)
    if classifier is not None:
        head, tail, network, tag = _with_classifier(spec, split, size, num_classes, clip_len, weights, classifier)
    else:
        network, tag = build_network(spec, size, num_classes, weights)
        head, tail = _cut(all_stages(spec, network), split)
    network.to(dev).eval()
    return SplitModel(head.to(dev).eval(), tail.to(dev).eval(), name, split, size, tag, num_classes,
                      spec.input_kind, clip_len, _input_shape(size, clip_len), network, classifier)


def _with_classifier(spec: ModelSpec, split: str, size: int, num_classes: int, clip_len: int | None,
                     weights: str, classifier: str) -> tuple[nn.Module, nn.Module, nn.Module, str]:
    """Head = the model's stages up to `split`; tail = `classifier` over the head's features."""
    if classifier not in CLASSIFIERS:
        raise SplitleakError(f"unknown classifier {classifier!r}; choose one of: {', '.join(CLASSIFIERS)}")
    if split == NONE:
        raise SplitleakError(f"classifier {classifier!r} needs a split point (the frozen feature extractor); "
                             f"for a classifier on raw frames use the model {classifier!r}")
    state = composite_state(weights)  # a file saved from a classifier model: extractor.* and classifier.*
    network, tag = build_network(spec, size, num_classes, "seed:0" if state else weights)
    seed = int(weights[len("seed:"):]) if weights.startswith("seed:") else 0
    with torch.device("cpu"), seeded(seed):
        clf = feature_classifier(classifier, _feature_shape(spec.name, split, size, num_classes, clip_len),
                                 num_classes)
    head, _ = _cut(all_stages(spec, network), split)
    composite = FeatureClassifier(head, network, clf)
    if state:
        check_state(f"{spec.name}+{classifier}", composite, state, source=weights)
        composite.load_state_dict(state)
        tag = file_tag(weights)
    return head, nn.Sequential(OrderedDict([("classifier", clf)])), composite, tag


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SplitleakError(f"bad device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SplitleakError(f"device {device!r} asked for but CUDA is not available")
    return dev


def feature_shape(name: str, split: str, size: int | None = None, num_classes: int = 0,
                  clip_len: int | None = None) -> tuple[int, ...]:
    """Per-sample shape of the head's output, found by a forward pass on the meta device."""
    spec = get_spec(name)
    return _feature_shape(spec.name, split, *_resolve(spec, split, size, num_classes, clip_len))


def _feature_shape(name: str, split: str, size: int, num_classes: int,
                   clip_len: int | None) -> tuple[int, ...]:
    return _stage_shapes(name, size, num_classes, clip_len)[split]


@lru_cache(maxsize=64)
def _stage_shapes(name: str, size: int, num_classes: int,
                  clip_len: int | None) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape after every stage (and `none`), from one meta-device forward."""
    spec = REGISTRY[name]
    with torch.device("meta"):
        stages = all_stages(spec, spec.build(size, num_classes))
        x = torch.empty(1, *_input_shape(size, clip_len))
    shapes = {NONE: tuple(x.shape[1:])}
    with torch.no_grad():
        for stage_name, stage in stages:
            x = stage.eval()(x)
            shapes[stage_name] = tuple(x.shape[1:])
    return shapes


def describe(size: int | None = None) -> list[dict[str, Any]]:
    """Per model: name, input kind, default and used size, and each split point's feature shape.

    A model that cannot take `size` gets `"error"` and no feature shapes.
    """
    rows = []
    for spec in REGISTRY.values():
        used = spec.default_size if size is None else size
        row: dict[str, Any] = {"name": spec.name, "input_kind": spec.input_kind,
                               "default_size": spec.default_size, "size": used,
                               "clip_len": spec.clip_len, "num_classes": spec.default_classes}
        try:
            spec.check_size(used)
            row["split_points"] = [{"name": p, "feature_shape": list(feature_shape(spec.name, p, used))}
                                   for p in split_points(spec.name)]
        except SplitleakError as e:
            row["split_points"] = [{"name": p, "feature_shape": None} for p in split_points(spec.name)]
            row["error"] = str(e)
        rows.append(row)
    return rows
