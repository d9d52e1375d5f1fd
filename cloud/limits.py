"""What a peer may ask the cloud to build: checked against the operator's limits before any work.

A frame's metadata names a model, a split point, an input size, a weights tag, a class
count and a classifier (the tail over the head's features); every one of them is bounded here, so a 65 KB message cannot make the cloud allocate
gigabytes or reach the network. Weights tags: `seed:N` (N a decimal int64), `file:<16 hex>`
(a file the operator gave with --weights), `tv:NAME` (a torchvision weight name, only where
the file is already in torch's hub cache or the operator passed --allow-downloads).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from cloud.errors import Refused
from splitleak.errors import SplitleakError
from splitleak.models import CLASSIFIERS, NONE, feature_shape, get_spec, split_points
from splitleak.models.classifiers import classifier_params
from splitleak.v1 import splitleak_pb2 as pb

SEED = re.compile(r"seed:(\d{1,19})")
FILE = re.compile(r"file:[0-9a-f]{16}")
TV = re.compile(r"tv:((?:[A-Za-z0-9_]{1,64}_Weights\.)?[A-Z][A-Z0-9_]{0,63})")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ModelLimits:
    allow_models: tuple[str, ...] = ()  # empty: every model of the zoo
    max_classes: int = 1000
    max_input_size: int = 512
    allow_downloads: bool = False  # fetch torchvision weights at request time
    build_timeout: float = 60.0  # seconds a request waits for its model to be built
    max_classifier_params: int = 2**26  # a classifier over large features is large: 256 MB of fp32 at most


@dataclass(frozen=True)
class ModelKey:
    """A model as the cloud builds it: num_classes resolved (0 means the model's default)."""

    model: str
    split: str
    size: int
    weights: str  # canonical tag: seed:N, file:<16 hex>, tv:NAME
    num_classes: int
    classifier: str = ""  # "" (the model's own tail), "simple" or "moderate"


def resolve(meta: pb.FrameMeta, limits: ModelLimits, files: dict[str, str]) -> ModelKey:
    """Check a peer's model request against the limits; the canonical key, or Refused."""
    model, split = meta.model_id, meta.split_point
    if not model or not split:
        raise Refused("frame names no model or split point")
    if limits.allow_models and model not in limits.allow_models:
        raise Refused(f"model {model[:64]!r} is not served here; allowed: {', '.join(limits.allow_models)}")
    try:
        spec = get_spec(model)
        if split not in split_points(model):
            raise Refused(f"unknown split point {split[:64]!r} for {model}")
        if not 1 <= meta.input_size <= limits.max_input_size:
            raise Refused(f"input size {meta.input_size} outside [1, {limits.max_input_size}]")
        spec.check_size(meta.input_size)
    except SplitleakError as err:
        raise Refused(str(err)) from None
    classes = meta.num_classes or spec.default_classes
    if not 1 <= classes <= limits.max_classes:
        raise Refused(f"num_classes {meta.num_classes} ({model}: {classes}) outside [1, {limits.max_classes}]")
    classifier = _classifier(meta, classes, limits)
    weights = _weights_tag(meta.weights or "seed:0", model, spec.torchvision, limits, files)
    return ModelKey(model, split, meta.input_size, weights, classes, classifier)


def _classifier(meta: pb.FrameMeta, classes: int, limits: ModelLimits) -> str:
    """The classifier a frame asks for ("" for none), once its size is within the limits."""
    name = meta.classifier
    if not name:
        return ""
    if name not in CLASSIFIERS:
        raise Refused(f"unknown classifier {name[:64]!r}; choose one of: {', '.join(CLASSIFIERS)}")
    if meta.split_point == NONE:
        raise Refused(f"classifier {name!r} needs a split point (the frozen feature extractor)")
    try:
        shape = feature_shape(meta.model_id, meta.split_point, size=meta.input_size, num_classes=classes)
    except SplitleakError as err:
        raise Refused(str(err)) from None
    params = classifier_params(name, shape, classes)
    if params > limits.max_classifier_params:
        raise Refused(f"classifier {name!r} over {meta.model_id}/{meta.split_point} at {meta.input_size}px has "
                      f"{params} parameters, more than the {limits.max_classifier_params} allowed")
    return name


def build_source(key: ModelKey, files: dict[str, str]) -> str:
    """What build_split_model takes for the key's weights: seed:N, a path, or a torchvision name."""
    kind, _, value = key.weights.partition(":")
    return {"seed": key.weights, "file": files.get(key.weights, ""), "tv": value}[kind]


def _weights_tag(tag: str, model: str, torchvision: bool, limits: ModelLimits, files: dict[str, str]) -> str:
    seed = SEED.fullmatch(tag)
    if seed:
        if int(seed.group(1)) > MAX_SEED:
            raise Refused(f"weights seed {seed.group(1)} exceeds {MAX_SEED}")
        return f"seed:{int(seed.group(1))}"
    if FILE.fullmatch(tag):
        if tag not in files:
            raise Refused(f"the cloud holds no weights file tagged {tag}; start it with --weights PATH")
        return tag
    tv = TV.fullmatch(tag)
    if tv:
        if not torchvision:
            raise Refused(f"{model} has no torchvision weights; use seed:N or file:<16 hex>")
        return "tv:" + _torchvision_weight(model, tv.group(1), limits.allow_downloads)
    raise Refused(f"unknown weights tag {tag[:64]!r}; expected seed:N, file:<16 hex> or tv:NAME")


def _torchvision_weight(model: str, name: str, allow_downloads: bool) -> str:
    """The weight's enum name, once it is known and (unless downloads are allowed) cached."""
    from torch.hub import get_dir
    from torchvision.models import get_model_weights

    enum = get_model_weights(model)
    weight = enum.__members__.get(name.rpartition(".")[2])
    if weight is None or ("." in name and name.partition(".")[0] != enum.__name__):
        raise Refused(f"{model} has no torchvision weights {name!r}; known: {', '.join(enum.__members__)}")
    cached = os.path.join(get_dir(), "checkpoints", os.path.basename(urlparse(weight.url).path))
    if not allow_downloads and not os.path.isfile(cached):
        raise Refused(f"torchvision weights {weight.name} for {model} are not cached on the cloud, and it does "
                      "not download at request time (its operator may start it with --allow-downloads)")
    return weight.name
