"""Clip models' updates on the gradient path: a sample is a clip of clip_len frames, so the i-th
sample of an update starts at frame seq + i * clip_len, and its truth is those frames stacked."""

from __future__ import annotations

from adversary.runner.meta import ItemMeta
from splitleak.errors import SplitleakError
from splitleak.models import NONE, SplitModel, get_spec


def check_clip_update(update: ItemMeta) -> None:
    """SplitleakError for an update of a clip model trained on raw clips (not inverted yet)."""
    spec = get_spec(update.head.model)
    if spec.input_kind == "clip" and update.head.split == NONE:
        raise SplitleakError(f"recording item {update.index}: {spec.name} trained on raw clips (split none): "
                             f"recovering a clip's frames from its gradient is not implemented; "
                             f"attack updates of a frozen extractor (a split point: {', '.join(spec.split_points)})")


def frames_per_sample(model: SplitModel) -> int:
    """1 for an image model, clip_len for a clip model."""
    return model.clip_len if model.input_kind == "clip" and model.clip_len else 1


def sample_seqs(update: ItemMeta, model: SplitModel) -> list[int]:
    """The first frame's sequence number of each sample of the update's batch."""
    step = frames_per_sample(model)
    return [update.seq + i * step for i in range(update.batch)]
