"""The audit's frames: the first N of any source the edge takes, as model inputs."""
from __future__ import annotations

import numpy as np
import torch

from splitleak.errors import SplitleakError
from splitleak.video import open_source, to_model_input

MIN_FRAMES = 4  # neighbours (i, i+1), (i, i+2) and far-apart pairs need at least this many frames


def load_frames(source: str, count: int, size: int) -> torch.Tensor:
    """(count, 3, size, size) in [0, 1]: the source's first `count` frames; SplitleakError with fewer."""
    if count < MIN_FRAMES:
        raise SplitleakError(f"the audit needs at least {MIN_FRAMES} frames, asked for {count}")
    with open_source(source, frames=count) as src:
        images = [to_model_input(frame.image, size) for frame in src]
    if len(images) < count:
        raise SplitleakError(f"source {source!r} gave {len(images)} frames; the audit's pairs need {count} "
                             f"(at least {MIN_FRAMES}; lower --frames or give a longer source)")
    return torch.from_numpy(np.stack(images))
