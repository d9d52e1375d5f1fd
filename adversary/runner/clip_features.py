"""Clip features on the feature path: a frame item of a clip model (clipnet, frameavg at a split) holds the
features of a whole clip of `clip_len` frames, named by its first frame's seq.

Only an attack whose class sets `inverts_clips` (do) takes them: its dummy is the whole clip (3, T, H, W),
inverted through the frozen clip head, and each of the T recovered frames is saved as its own PNG
(stream, seq + t), so the per-frame scoring against the truth PNGs works unchanged. Every other feature
attack inverts one image per features tensor, and is refused with one line.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from adversary.runner.meta import HeadKey, ItemMeta
from splitleak.errors import SplitleakError
from splitleak.models import get_spec

Key = tuple[str, int]


def takes_clips(key: HeadKey) -> bool:
    """Whether the head behind `key` takes clips (B, 3, T, H, W)."""
    return get_spec(key.model).input_kind == "clip"


def check_clip_attack(name: str, heads: Iterable[HeadKey]) -> None:
    """SplitleakError when feature attack `name` meets a clip model's features and cannot invert them."""
    from adversary.attacks import get_attack

    clips = sorted({k.model for k in heads if takes_clips(k)})
    if clips and not getattr(get_attack(name), "inverts_clips", False):
        raise SplitleakError(f"{clips[0]} takes clips: only 'do' inverts clip features, not {name!r} "
                             f"(it inverts images' features)")


def frame_keys(meta: ItemMeta) -> list[Key]:
    """The frames a frame item stands for: (stream, seq), or a clip's (stream, seq + t) for t < clip_len."""
    return [(meta.stream, meta.seq + t) for t in range(meta.clip_len)]


def frame_images(meta: ItemMeta, x: np.ndarray) -> list[tuple[Key, np.ndarray]]:
    """What an attack made of one item, per frame: an image (3, H, W) as is, a clip (3, T, H, W) split in T."""
    if x.ndim == 3:
        return [((meta.stream, meta.seq), x)]
    if x.ndim != 4 or x.shape[1] != meta.clip_len:
        raise SplitleakError(f"internal: a reconstruction of shape {list(x.shape)} for a clip of "
                             f"{meta.clip_len} frames")
    return [(key, x[:, t]) for t, key in enumerate(frame_keys(meta))]
