"""Tail partitions F2 the cloud runs, built on demand from a frame's checked metadata and cached."""
from __future__ import annotations

import torch

from cloud.builds import Builds
from cloud.limits import ModelKey, ModelLimits, build_source, resolve
from splitleak.models import SplitModel, build_split_model, feature_shape
from splitleak.models.weights import file_tag
from splitleak.v1 import splitleak_pb2 as pb

Tail = tuple[torch.nn.Module, tuple[int, ...]]


class TailCache:
    """An LRU of tails by ModelKey, with the per-sample feature shape each expects.

    `weight_files` are state-dict files the cloud holds; an edge names one by its tag
    (file:<sha256 prefix>), never by a path on the cloud's disk.
    """

    def __init__(self, device: str = "cpu", weight_files: tuple[str, ...] = (),
                 limits: ModelLimits = ModelLimits(), max_models: int = 8):
        self.device = device
        self.limits = limits
        self.files = {file_tag(path): path for path in weight_files}
        self._tails: Builds[Tail] = Builds("model", limits.build_timeout, max_models)

    def key(self, meta: pb.FrameMeta) -> ModelKey:
        """The checked, canonical model a frame's metadata names (Refused if out of bounds)."""
        return resolve(meta, self.limits, self.files)

    def get(self, key: ModelKey) -> Tail:
        return self._tails.get(key, lambda: self._build(key))

    def _build(self, key: ModelKey) -> Tail:
        shape = feature_shape(key.model, key.split, size=key.size, num_classes=key.num_classes)
        return self.split_model(key).tail, shape

    def split_model(self, key: ModelKey) -> SplitModel:
        """A fresh split model as a checked key names it (slow: call it on a build thread)."""
        return build_split_model(key.model, key.split, size=key.size, weights=build_source(key, self.files),
                                 num_classes=key.num_classes, device=self.device, classifier=key.classifier or None)
