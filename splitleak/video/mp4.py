"""Side-by-side comparison videos (original | recovered | enhanced, labelled) and PNG contact sheets.

The video is written with PyAV: H.264 (libx264, yuv420p, +faststart) so it plays in a browser;
where that encoder is missing, MPEG-4 Part 2 (`mpeg4`), which desktop players take but browsers
may not. The codec used is returned (and printed by the commands). Small frames are enlarged with nearest-neighbour
interpolation, so a 32x32 recovered frame shows its real pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from splitleak.errors import SplitleakError
from splitleak.video.preprocess import to_uint8_hwc

CODECS = ("libx264", "mpeg4")  # preferred first
LABEL_PX = 18  # height of the label strip above each column
GAP_PX = 4
MAX_FPS = 240


@dataclass(frozen=True)
class Column:
    """One labelled column of the comparison: frames as float (3, H, W) in [0, 1], one per time step."""

    label: str
    frames: Sequence[np.ndarray]


def pick_codec() -> str:
    """The first encoder of CODECS this PyAV build has; SplitleakError if none."""
    import av

    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError, KeyError):
            continue
    raise SplitleakError(f"PyAV has none of the video encoders {', '.join(CODECS)}")


def _cell(frame: np.ndarray, cell: int) -> np.ndarray:
    """float (3, H, W) -> uint8 (cell, cell, 3) RGB: nearest when enlarging, area when shrinking."""
    img = to_uint8_hwc(frame)
    if img.shape[:2] == (cell, cell):
        return img
    mode = cv2.INTER_NEAREST if max(img.shape[:2]) < cell else cv2.INTER_AREA
    return cv2.resize(img, (cell, cell), interpolation=mode)


def _label(text: str, width: int) -> np.ndarray:
    strip = np.zeros((LABEL_PX, width, 3), np.uint8)
    scale = min(0.45, 0.45 * width / max(1, 8 * len(text)))
    cv2.putText(strip, text, (3, LABEL_PX - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def compose(columns: Sequence[Column], t: int, cell: int) -> np.ndarray:
    """Time step `t` of every column side by side under its label: uint8 RGB with even sides (H.264 needs them)."""
    parts = []
    for i, col in enumerate(columns):
        if i:
            parts.append(np.zeros((LABEL_PX + cell, GAP_PX, 3), np.uint8))
        parts.append(np.concatenate([_label(col.label, cell), _cell(col.frames[t], cell)], axis=0))
    frame = np.concatenate(parts, axis=1)
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0))) if pad_h or pad_w else frame


def _check(columns: Sequence[Column], cell: int) -> int:
    if not columns or any(len(c.frames) == 0 for c in columns):
        raise SplitleakError("a comparison video needs at least one column with frames")
    lengths = {len(c.frames) for c in columns}
    if len(lengths) != 1:
        raise SplitleakError(f"the video's columns have different frame counts: {sorted(lengths)}")
    if isinstance(cell, bool) or not isinstance(cell, int) or not 8 <= cell <= 2048:
        raise SplitleakError(f"bad cell size {cell!r}: expected 8..2048 pixels")
    return lengths.pop()


def write_comparison_video(path: str | Path, columns: Sequence[Column], fps: float = 30.0, cell: int = 128) -> str:
    """Write the labelled side-by-side video to `path` (.mp4) at `fps`; return the codec used."""
    import av

    count = _check(columns, cell)
    if not (0 < fps <= MAX_FPS):
        raise SplitleakError(f"bad frame rate {fps!r}: expected 0 < fps <= {MAX_FPS}")
    codec = pick_codec()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = compose(columns, 0, cell)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}
        for t in range(count):
            image = first if t == 0 else compose(columns, t, cell)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return codec


def write_contact_sheet(path: str | Path, columns: Sequence[Column], max_frames: int = 8, cell: int = 128) -> Path:
    """A PNG with one row per column (label at its left top) and up to `max_frames` evenly spaced time steps."""
    count = _check(columns, cell)
    picks = sorted({round(i * (count - 1) / max(1, max_frames - 1)) for i in range(min(max_frames, count))})
    rows = []
    for col in columns:
        cells = [np.concatenate([_label(col.label if j == 0 else "", cell), _cell(col.frames[t], cell)], axis=0)
                 for j, t in enumerate(picks)]
        gap = np.zeros((LABEL_PX + cell, GAP_PX, 3), np.uint8)
        rows.append(np.concatenate([x for c in cells for x in (c, gap)][:-1], axis=1))
    sheet = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise SplitleakError(f"cannot write image {path}")
    return path
