"""Tail partitions F2 the cloud runs, built on demand from the frame's metadata and cached."""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from splitleak.errors import SplitleakError
from splitleak.models import SplitModel, build_split_model, feature_shape
from splitleak.models.weights import file_tag

MIN_SIZE, MAX_SIZE = 8, 1024


class TailCache:
    """An LRU of tails keyed by (model, split, size, weights, classes), with the shape each expects.

    `weight_files` are state-dict files the cloud holds; an edge names one by its tag
    (file:<sha256 prefix>), never by a path on the cloud's disk.
    """

    def __init__(self, device: str = "cpu", weight_files: tuple[str, ...] = (), max_models: int = 8):
        self.device = device
        self.files = {file_tag(path): path for path in weight_files}
        self.max_models = max_models
        self._tails: OrderedDict[tuple, tuple[torch.nn.Module, tuple[int, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, split: str, size: int, weights: str, num_classes: int) -> tuple[torch.nn.Module, tuple[int, ...]]:
        key = (model, split, size, weights, num_classes)
        with self._lock:
            if key in self._tails:
                self._tails.move_to_end(key)
                return self._tails[key]
            entry = self._build(*key)
            self._tails[key] = entry
            if len(self._tails) > self.max_models:
                self._tails.popitem(last=False)
            return entry

    def _build(self, model: str, split: str, size: int, weights: str, num_classes: int):
        split_model = self.split_model(model, split, size, weights, num_classes)
        return split_model.tail, feature_shape(model, split, size=size, num_classes=num_classes)

    def split_model(self, model: str, split: str, size: int, weights: str, num_classes: int) -> SplitModel:
        """A fresh split model as a peer's metadata names it (weights by tag, never by path)."""
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise SplitleakError(f"input size {size} outside [{MIN_SIZE}, {MAX_SIZE}]")
        source = self._weights_source(weights)
        return build_split_model(model, split, size=size, weights=source, num_classes=num_classes, device=self.device)

    def _weights_source(self, weights: str) -> str:
        kind, _, value = weights.partition(":")
        if kind == "seed":
            return weights
        if kind == "file":
            if weights not in self.files:
                raise SplitleakError(f"the cloud holds no weights file tagged {weights}; start it with --weights PATH")
            return self.files[weights]
        if kind == "tv" and value:
            return value
        raise SplitleakError(f"unknown weights tag {weights!r}; expected seed:N, file:HASH or tv:NAME")
