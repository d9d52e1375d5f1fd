"""The typed view of a recorded item's metadata: parsed and checked once, for every attack family.

A recording is input from outside, so every field is checked against the model zoo and against
operator limits before anything allocates or builds a model; a bad field is one SplitleakError
line naming the item. Frames carry a FrameMeta, updates a LearningMeta (FrameMeta under
"frame"), states a round and the FrameMeta of their model (the wire's names; 64-bit integers
may come as decimal strings, as proto3's JSON writes them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from splitleak.errors import SplitleakError
from splitleak.models import CLASSIFIERS, NONE, get_spec, split_points
from splitleak.recording import RecordedItem, show as _show
from splitleak.video import frame_name, sanitise_stream

MAX_INPUT_SIZE = 1024  # pixels per side
MAX_CLASSES = 100_000
MAX_BATCH = 1024  # frames per update
MAX_PARAMS = 10_000  # parameter names per update
MAX_TEXT = 256  # characters in a stream id, model name, split point, weights tag
U32, U64 = 2**32 - 1, 2**64 - 1
_DIGITS = re.compile(r"[0-9]{1,20}")
_WEIGHTS = re.compile(r"seed:[0-9]{1,20}|file:[0-9a-f]{16}|tv:[A-Za-z0-9_.]{1,100}")
_CODEC = re.compile(r"[A-Za-z0-9_.-]{0,32}")


@dataclass(frozen=True)
class HeadKey:
    """The model (and its cut) that produced an item: what the runner rebuilds."""

    model: str
    split: str
    size: int
    weights: str
    num_classes: int
    classifier: str = ""  # "" (the model's own tail), or the Table II classifier over the head's features


@dataclass(frozen=True)
class ItemMeta:
    """One recorded item's metadata, checked. `stream` is spelled as PNG names spell it; the
    learning fields (mode .. local_steps) are an update's, `round` also a state's. `clip_len`: the frames
    a sample stands for (a clip model's clip length, its spec's: the head is rebuilt for it; else 1)."""

    index: int
    kind: str
    stream: str
    seq: int
    head: HeadKey
    codec: str = ""
    mode: str = ""
    round: int = 0
    batch: int = 1
    param_names: tuple[str, ...] = ()
    lr: float | None = None
    local_steps: int = 0
    clip_len: int = 1

    @property
    def filename(self) -> str:
        return frame_name(self.stream, self.seq)


def item_meta(item: RecordedItem) -> ItemMeta:
    """Parse and check one item's metadata; SplitleakError naming the item otherwise."""
    index, kind, meta = item.index, item.kind, item.meta
    try:
        if kind == "frame":
            return ItemMeta(index, kind, *_frame(meta), codec=_codec(meta), clip_len=_clip_len(meta))
        if kind == "update":
            return _update(index, meta)
        if kind == "state":
            return ItemMeta(index, kind, "", 0, _head(meta), round=_uint(meta, "round", 0, U32))
        raise SplitleakError(f"unknown kind {_show(kind)}")
    except SplitleakError as err:
        raise SplitleakError(f"recording item {index}: {err}") from None


def _update(index: int, meta: dict[str, Any]) -> ItemMeta:
    frame = meta.get("frame", {})
    if not isinstance(frame, dict):
        raise SplitleakError(f"frame must be an object, got {type(frame).__name__}")
    batch = _uint(meta, "batch_size", 1, MAX_BATCH, low=1)
    return ItemMeta(index, "update", *_frame(frame), codec=_codec(meta),
                    mode=_text(meta, "mode", 32), round=_uint(meta, "round", 0, U32), batch=batch,
                    param_names=_names(meta), lr=_rate(meta), local_steps=_uint(meta, "local_steps", 0, U32),
                    clip_len=_clip_len(frame))


def _frame(meta: dict[str, Any]) -> tuple[str, int, HeadKey]:
    stream = _text(meta, "stream_id", MAX_TEXT)
    if not stream:
        raise SplitleakError("empty stream id")
    return sanitise_stream(stream), _uint(meta, "seq", 0, U64), _head(meta)


def _clip_len(meta: dict[str, Any]) -> int:
    """A clip model's clip length (optional field `clip_len`, 0: the spec's), which must be its spec's:
    the runners rebuild the head for that length; 1 for an image model."""
    spec = get_spec(_text(meta, "model_id", MAX_TEXT))
    if spec.input_kind != "clip" or spec.clip_len is None:
        return 1
    value = _uint(meta, "clip_len", 0, MAX_BATCH) or spec.clip_len
    if value != spec.clip_len:
        raise SplitleakError(f"bad clip_len {value}: {spec.name}'s head takes clips of {spec.clip_len} frames")
    return value


def _head(meta: dict[str, Any]) -> HeadKey:
    """The model behind an item, its size and classes resolved to the model's defaults (0: default)."""
    spec = get_spec(_text(meta, "model_id", MAX_TEXT))
    split = _text(meta, "split_point", MAX_TEXT) or NONE
    if split not in split_points(spec.name):
        raise SplitleakError(f"unknown split point {_show(split)} for {spec.name}; "
                             f"choose one of: {', '.join(split_points(spec.name))}")
    size = _uint(meta, "input_size", 0, MAX_INPUT_SIZE) or spec.default_size
    spec.check_size(size)
    classes = _uint(meta, "num_classes", 0, MAX_CLASSES) or spec.default_classes
    weights = _text(meta, "weights", MAX_TEXT) or "seed:0"
    if not _WEIGHTS.fullmatch(weights) or (weights.startswith("seed:") and int(weights[5:]) > U64):
        raise SplitleakError(f"bad weights tag {_show(weights)}: expected seed:N, file:<16 hex> or tv:NAME")
    return HeadKey(spec.name, split, size, weights, classes, _classifier(meta, split))


def _classifier(meta: dict[str, Any], split: str) -> str:
    name = _text(meta, "classifier", MAX_TEXT)
    if name and name not in CLASSIFIERS:
        raise SplitleakError(f"unknown classifier {_show(name)}; choose one of: {', '.join(CLASSIFIERS)}")
    if name and split == NONE:
        raise SplitleakError(f"classifier {name!r} needs a split point (the frozen feature extractor)")
    return name


def _uint(meta: dict[str, Any], key: str, default: int, high: int, low: int = 0) -> int:
    """An integer field in [low, high]; proto3 JSON writes 64-bit integers as decimal strings."""
    value = meta.get(key, default)
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SplitleakError(f"bad {key} {_show(value)}: expected an integer in [{low}, {high}]")
    return value


def _text(meta: dict[str, Any], key: str, limit: int) -> str:
    value = meta.get(key, "")
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise SplitleakError(f"bad {key} {_show(value)}: expected a string of at most {limit} characters")
    return value


def _codec(meta: dict[str, Any]) -> str:
    codec = meta.get("codec", {})
    if not isinstance(codec, dict):
        raise SplitleakError(f"codec must be an object, got {type(codec).__name__}")
    name = codec.get("name", "")
    if not isinstance(name, str) or not _CODEC.fullmatch(name):
        raise SplitleakError(f"bad codec name {_show(name)}")
    return name


def _names(meta: dict[str, Any]) -> tuple[str, ...]:
    names = meta.get("param_names", [])
    if not isinstance(names, list) or len(names) > MAX_PARAMS or \
            not all(isinstance(n, str) and 0 < len(n) <= MAX_TEXT for n in names):
        raise SplitleakError(f"bad param_names: expected at most {MAX_PARAMS} names of at most {MAX_TEXT} characters")
    return tuple(names)


def _rate(meta: dict[str, Any]) -> float | None:
    value = meta.get("learning_rate")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SplitleakError(f"bad learning_rate {_show(value)}: expected a finite number >= 0")
    return float(value)

