"""Invert batches of tapped frames with a feature attack: one case per head, PNGs written at once.
Shared by the recording path and the live tap. A clip model's item is a clip: its T frames are
written as T PNGs (adversary.runner.clip_features)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversary.feature.blackbox import make_case
from adversary.runner.attacks import reconstruct_features
from adversary.runner.clip_features import check_clip_attack, frame_images
from adversary.runner.heads import build_head
from adversary.runner.meta import HeadKey, ItemMeta
from splitleak.errors import SplitleakError
from splitleak.models import feature_shape
from splitleak.recording import RecordedItem
from splitleak.video import frame_name, save_png

Key = tuple[str, int]


@dataclass(frozen=True)
class Frame:
    """A frame to invert: its checked metadata and (once read) its features (1, *feature_shape)."""

    meta: ItemMeta
    features: np.ndarray

    @property
    def key(self) -> Key:
        return self.meta.stream, self.meta.seq


def expected_shape(meta: ItemMeta) -> tuple[int, ...]:
    """The per-frame feature shape the item's head makes."""
    k = meta.head
    try:
        return feature_shape(k.model, k.split, size=k.size, num_classes=k.num_classes)
    except SplitleakError as err:
        raise SplitleakError(f"recording item {meta.index}: {err}") from None


def check_features(item: RecordedItem, meta: ItemMeta) -> None:
    """SplitleakError unless the item's 'features' tensor fits its head (read from the file's header)."""
    if "features" not in item.shapes:
        raise SplitleakError(f"recording item {item.index}: frame without a 'features' tensor")
    expected, shape = expected_shape(meta), item.shapes["features"]
    if shape not in (expected, (1, *expected)):
        k = meta.head
        raise SplitleakError(f"recording item {item.index}: features of shape {list(shape)} do not fit "
                             f"{k.model}/{k.split} at {k.size}px (expected [1, {', '.join(map(str, expected))}])")


def read_frame(item: RecordedItem, meta: ItemMeta) -> Frame:
    """The frame's features as float32 (1, *feature_shape), checked before they are read."""
    check_features(item, meta)
    z = np.asarray(item.tensors["features"], dtype=np.float32)
    return Frame(meta, z.reshape(1, *expected_shape(meta)))


class FrameInverter:
    """Builds each head's case once and writes what the attack makes of each batch.

    `tag_cases`: black-box cases carry the head's wire name (the live tap's inverter cache names)."""

    def __init__(self, attack: Any, out: Path, device: str, seed: int, weights_path: str | None,
                 prior: Any = None, tag_cases: bool = False) -> None:
        self.attack, self.out, self.device, self.seed = attack, out, device, seed
        self.weights_path, self.prior, self.tag_cases = weights_path, prior, tag_cases
        self.cases: dict[HeadKey, Any] = {}
        self.done: list[Frame] = []
        self.feature_loss: dict[Key, float] = {}
        self.run_info: dict[str, Any] = {}  # what the attack's last batch chose (its result's info)
        self.seconds = 0.0

    def case(self, key: HeadKey) -> Any:
        if key not in self.cases:
            check_clip_attack(self.attack.name, [key])
            model = build_head(key, self.device, self.weights_path)
            tag = f"{key.model}-{key.split}-{key.size}-{key.weights}" if self.tag_cases else ""
            case = make_case(self.attack, model.head, tuple(model.input_shape), self.device, self.seed,
                             prior=self.prior, tag=tag)
            self.attack.check_access(case)
            self.cases[key] = case
        return self.cases[key]

    def invert(self, key: HeadKey, frames: list[Frame]) -> None:
        """Reconstruct `frames` (all made by head `key`) together; save their PNGs."""
        case = replace(self.case(key), frames=tuple(f.key for f in frames))
        out = reconstruct_features(self.attack, torch.from_numpy(np.concatenate([f.features for f in frames])), case)
        self.seconds += out.seconds
        self.run_info = out.info
        for i, (frame, x) in enumerate(zip(frames, out.images.float().cpu().numpy())):
            for key, image in frame_images(frame.meta, x):  # one image, or each frame of a clip
                save_png(self.out / frame_name(*key), image)
                if out.loss is not None:
                    self.feature_loss[key] = out.loss[i]
            self.done.append(frame)
