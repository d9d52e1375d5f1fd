"""Read the feature frames of a recording: validated, de-duplicated, grouped by the head that made them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from splitleak.errors import SplitleakError
from splitleak.models import feature_shape, get_spec
from splitleak.recording import RecordedItem, RecordingReader
from splitleak.video import frame_name, parse_frame_name


@dataclass(frozen=True)
class HeadKey:
    """What identifies the head F1 that produced a frame's features."""

    model: str
    split: str
    size: int
    weights: str
    num_classes: int


@dataclass(frozen=True)
class FrameRef:
    """One tapped frame: its recording index, head, and (stream, seq) as in PNG names."""

    index: int
    head: HeadKey
    stream: str
    seq: int

    @property
    def filename(self) -> str:
        return frame_name(self.stream, self.seq)


@dataclass
class FrameIndex:
    """The frames an attack will invert, plus what was skipped and why."""

    frames: list[FrameRef] = field(default_factory=list)
    updates: int = 0
    duplicates: int = 0
    broken: str | None = None
    codecs: set[str] = field(default_factory=set)


def _int(meta: dict[str, Any], key: str, index: int, default: int | None = None) -> int:
    value = meta.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SplitleakError(f"recording item {index}: bad {key} {value!r}") from None


def head_key(item: RecordedItem) -> HeadKey:
    """The head behind a frame item, validated against the model zoo."""
    meta, i = item.meta, item.index
    model, split = meta.get("model_id") or "", meta.get("split_point") or ""
    try:
        spec = get_spec(model)
    except SplitleakError as err:
        raise SplitleakError(f"recording item {i}: {err}") from None
    if spec.input_kind != "image":
        raise SplitleakError(f"recording item {i}: {model} takes clips; feature attacks invert images only")
    return HeadKey(model, split, _int(meta, "input_size", i, spec.default_size),
                   meta.get("weights") or "seed:0", _int(meta, "num_classes", i, 0))


def frame_features(item: RecordedItem, key: HeadKey) -> np.ndarray:
    """The item's features as float32 (1, *feature_shape), checked against the head's output shape."""
    if "features" not in item.tensors:
        raise SplitleakError(f"recording item {item.index}: frame without a 'features' tensor")
    z = np.asarray(item.tensors["features"], dtype=np.float32)
    try:
        expected = feature_shape(key.model, key.split, size=key.size, num_classes=key.num_classes)
    except SplitleakError as err:
        raise SplitleakError(f"recording item {item.index}: {err}") from None
    if z.shape == expected:
        z = z[None]
    if z.shape != (1, *expected):
        raise SplitleakError(f"recording item {item.index}: features of shape {list(z.shape)} do not fit "
                             f"{key.model}/{key.split} at {key.size}px (expected [1, {', '.join(map(str, expected))}])")
    return z


def _frame_key(item: RecordedItem) -> tuple[str, int]:
    """(stream, seq) exactly as the frame's PNG name spells them (stream id sanitised)."""
    try:
        parsed = parse_frame_name(frame_name(item.meta.get("stream_id") or "", _int(item.meta, "seq", item.index)))
    except SplitleakError as err:
        raise SplitleakError(f"recording item {item.index}: {err}") from None
    assert parsed is not None
    return parsed


def index_recording(folder: str, max_frames: int | None = None) -> FrameIndex:
    """One pass over the recording: every frame's head and name; SplitleakError if there are no frames."""
    if max_frames is not None and max_frames < 1:
        raise SplitleakError(f"max_frames must be >= 1, got {max_frames}")
    reader = RecordingReader(folder)
    found, seen = FrameIndex(), set()
    for item in reader:
        if item.kind != "frame":
            found.updates += 1
            continue
        if max_frames is not None and len(found.frames) >= max_frames:
            continue
        key = head_key(item)
        frame_features(item, key)
        parsed = _frame_key(item)
        if parsed in seen:
            found.duplicates += 1
            continue
        seen.add(parsed)
        found.codecs.add(str((item.meta.get("codec") or {}).get("name", "")))
        found.frames.append(FrameRef(item.index, key, *parsed))
    found.broken = reader.broken
    if not found.frames:
        what = (f"only {found.updates} gradient update(s); use a gradient attack" if found.updates
                else "no items")
        broken = f" (reading stopped at {reader.broken})" if reader.broken else ""
        raise SplitleakError(f"recording {folder} has no feature frames to invert: it holds {what}{broken}")
    return found


def iter_features(folder: str, wanted: dict[int, FrameRef]) -> Iterator[tuple[FrameRef, np.ndarray]]:
    """Second pass: (frame, features (1, ...)) for the indexed frames, in recording order."""
    for item in RecordingReader(folder):
        ref = wanted.get(item.index)
        if ref is not None:
            yield ref, frame_features(item, ref.head)
