"""Frames as PNG files named `{stream}_{seq:06d}.png`: ground truth, reconstructions, refs."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from splitleak.errors import SplitleakError
from splitleak.video.preprocess import to_uint8_hwc

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_NAME = re.compile(r"(.+)_(\d{6,})\.png")


def sanitise_stream(stream: str) -> str:
    """A stream id safe in a file name: anything outside [A-Za-z0-9._-] becomes '_'."""
    if not stream:
        raise SplitleakError("empty stream id")
    return _UNSAFE.sub("_", stream)


def frame_name(stream: str, seq: int) -> str:
    """File name of frame `seq` of `stream`, e.g. 'cam0_000042.png'."""
    if isinstance(seq, bool) or int(seq) != seq or seq < 0:
        raise SplitleakError(f"bad sequence number {seq!r}: expected a non-negative integer")
    return f"{sanitise_stream(stream)}_{int(seq):06d}.png"


def parse_frame_name(name: str) -> tuple[str, int] | None:
    """(stream, seq) from a name made by frame_name (a path is fine), or None."""
    match = _NAME.fullmatch(Path(name).name)
    return (match[1], int(match[2])) if match else None


def save_png(path: str | Path, x: np.ndarray) -> Path:
    """Save a float (3, H, W) [0, 1] RGB image as PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(to_uint8_hwc(x), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr):
        raise SplitleakError(f"cannot write image {path}")
    return path


def load_png(path: str | Path) -> np.ndarray:
    """Load an image file as float32 (3, H, W) RGB in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise SplitleakError(f"no such image file: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SplitleakError(f"cannot read image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def index_frames(folder: str | Path) -> dict[tuple[str, int], Path]:
    """Map (stream, seq) -> path for every frame-named PNG in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitleakError(f"no such folder: {folder}")
    found = ((parse_frame_name(p.name), p) for p in sorted(folder.glob("*.png")))
    return {key: path for key, path in found if key is not None}


class TruthWriter:
    """Writes the preprocessed model-input frames to a folder that only evaluation reads."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def path(self, stream: str, seq: int) -> Path:
        """Where frame `seq` of `stream` goes."""
        return self.folder / frame_name(stream, seq)

    def write(self, stream: str, seq: int, x_chw: np.ndarray) -> Path:
        """Save one model-input frame (float (3, H, W) in [0, 1])."""
        out = save_png(self.path(stream, seq), x_chw)
        self.count += 1
        return out
