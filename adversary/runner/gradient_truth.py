"""Ground truth for the gradient path (the evaluation reads it, never the attack): frame PNGs and,
for feature recordings, feature files; and the batch order that best matches it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from scipy.optimize import linear_sum_assignment

from adversary.evaluate import truth_index
from adversary.gradient.base import GradientResult
from adversary.gradient.features import feature_scores
from adversary.metrics import psnr, resize_to
from adversary.runner.clips import frames_per_sample, sample_seqs
from adversary.runner.meta import ItemMeta
from splitleak.models import SplitModel
from splitleak.video import frame_name, load_png

FEATURES_SUFFIX = ".features.safetensors"


def features_name(stream: str, seq: int) -> str:
    """File of the features recovered from the update that starts at frame `seq` of `stream`."""
    return frame_name(stream, seq)[: -len(".png")] + FEATURES_SUFFIX


class Truth:
    """The truth folder's frame PNGs and feature files, or nothing."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.frames = truth_index(folder) if folder is not None else {}

    def image(self, stream: str, seq: int) -> np.ndarray | None:
        path = self.frames.get((stream, seq))
        return None if path is None else load_png(path)

    def features(self, update: ItemMeta, model: SplitModel) -> list[np.ndarray | None]:
        """True features per frame: a `features` tensor in truth/<update>.features.safetensors, else
        the head run on the truth PNGs (white-box evaluation; PNG rounding makes this approximate)."""
        if self.folder is None:
            return [None] * update.batch
        path = self.folder / features_name(update.stream, update.seq)
        if path.is_file():
            z = load_file(str(path))["features"].astype(np.float32)
            return [z[i] for i in range(update.batch)] if len(z) == update.batch else [None] * update.batch
        out: list[np.ndarray | None] = []
        for seq in sample_seqs(update):
            x = self.sample(update, model, seq)
            if x is None:
                out.append(None)
                continue
            with torch.no_grad():
                z = model.head(torch.from_numpy(x)[None].to(next(iter(model.tail.parameters())).device))
            out.append(z[0].float().cpu().numpy())
        return out

    def sample(self, update: ItemMeta, model: SplitModel, seq: int) -> np.ndarray | None:
        """The model's input starting at frame `seq`: a frame (3, H, W), or a clip (3, T, H, W) of the
        next clip_len frames; None if any frame is missing or of another size."""
        frames = [self.image(update.stream, seq + t) for t in range(frames_per_sample(model))]
        if any(x is None or x.shape[1:] != (update.head.size, update.head.size) for x in frames):
            return None
        return frames[0] if len(frames) == 1 else np.stack(frames, axis=1)  # type: ignore[arg-type]


def order_by_truth(result: GradientResult, truths: list[np.ndarray | None], image: bool) -> list[int]:
    """The permutation of the batch's reconstructions that best matches the truth (Hungarian on PSNR
    for images, cosine for features); identity where any truth is missing or the batch is 1."""
    b = len(truths)
    if b == 1 or any(t is None for t in truths):
        return list(range(b))
    rec = result.inputs.detach().float().cpu().numpy()
    score = np.zeros((b, b))
    for i, t in enumerate(truths):
        for j in range(b):
            if image:
                score[i, j] = psnr(resize_to(rec[j], t.shape[1:]), t)  # type: ignore[union-attr]
            else:
                score[i, j] = float(feature_scores(torch.from_numpy(rec[j][None]), torch.from_numpy(t[None]))[1])
    _, cols = linear_sum_assignment(-score)
    return [int(c) for c in cols]
