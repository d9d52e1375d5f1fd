"""The frame type every source yields, and the base class that counts and stamps frames."""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from splitleak.errors import SplitleakError


@dataclass(frozen=True)
class Frame:
    """One captured frame: its position in the stream, the pixels and when it was grabbed."""

    index: int
    image: np.ndarray  # HxWx3 uint8 RGB
    capture_ts: float  # time.time() when grabbed


class FrameSource(ABC):
    """An iterable of Frames that stops after `frames` frames when given; close() frees it."""

    def __init__(self, name: str, frames: int | None = None) -> None:
        if frames is not None and (isinstance(frames, bool) or int(frames) != frames or frames < 0):
            raise SplitleakError(f"frames must be a non-negative integer, got {frames!r}")
        self.name = name
        self.frames = None if frames is None else int(frames)

    @abstractmethod
    def _images(self) -> Iterator[np.ndarray]:
        """Yield HxWx3 uint8 RGB images, as many as the source has."""

    def __iter__(self) -> Iterator[Frame]:
        images = self._images()
        indices = itertools.count() if self.frames is None else range(self.frames)
        try:
            for index in indices:
                image = next(images, None)
                if image is None:
                    return
                yield Frame(index, image, time.time())
        finally:
            images.close()

    def close(self) -> None:
        """Release whatever the source holds (a capture device, a file)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
