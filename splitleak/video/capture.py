"""Sources backed by OpenCV: video files, cameras and folders of images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from splitleak.errors import SplitleakError
from splitleak.video.base import FrameSource

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _rgb(bgr: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or grey) uint8 image as HxWx3 RGB."""
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VideoFileSource(FrameSource):
    """Frames of a video file, decoded by OpenCV; each pass starts from the first frame."""

    def __init__(self, path: str | Path, frames: int | None = None, name: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(name or f"video:{self.path.name}", frames)
        if not self.path.is_file():
            raise SplitleakError(f"no such video file: {self.path}")
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self._open()

    def _open(self) -> None:
        """Open the file and decode its first frame, so a file with no frame fails here."""
        self.close()
        cap = cv2.VideoCapture(str(self.path))
        ok, bgr = cap.read() if cap.isOpened() else (False, None)
        if not ok or bgr is None:
            cap.release()
            raise SplitleakError(f"cannot decode video {self.path}")
        self._cap, self._first = cap, bgr

    @property
    def fps(self) -> float:
        """Nominal frame rate from the container (0 when unknown)."""
        return float(self._cap.get(cv2.CAP_PROP_FPS)) if self._cap is not None else 0.0

    def _images(self) -> Iterator[np.ndarray]:
        if self._first is None:  # an earlier pass (or close) used the capture: start over
            self._open()
        cap, first = self._cap, self._first
        self._first = None
        yield _rgb(first)
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return
            yield _rgb(bgr)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap, self._first = None, None


class CameraSource(FrameSource):
    """Live frames from camera number `index`; ends when the camera stops delivering."""

    def __init__(self, index: int, frames: int | None = None) -> None:
        super().__init__(f"camera:{index}", frames)
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise SplitleakError(f"cannot open camera {index}")

    def _images(self) -> Iterator[np.ndarray]:
        while self._cap.isOpened():
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                return
            yield _rgb(bgr)

    def close(self) -> None:
        self._cap.release()


class FolderSource(FrameSource):
    """The images of a folder (png/jpg/jpeg/bmp) in name order."""

    def __init__(self, folder: str | Path, frames: int | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SplitleakError(f"no such folder: {self.folder}")
        self.files = sorted(
            p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.files:
            raise SplitleakError(f"no images ({'/'.join(IMAGE_SUFFIXES)}) in folder {self.folder}")
        super().__init__(f"folder:{self.folder.name} ({len(self.files)} images)", frames)
        for path in self.files:
            if not cv2.haveImageReader(str(path)):
                raise SplitleakError(f"cannot read image {path}")

    def _images(self) -> Iterator[np.ndarray]:
        for path in self.files:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SplitleakError(f"cannot read image {path}")
            yield _rgb(bgr)
