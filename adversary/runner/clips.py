"""Clip models' updates on the gradient path: a sample is a clip of clip_len frames, so the i-th
sample of an update starts at frame seq + i * clip_len, and its truth is those frames stacked.

A clip model trained on raw clips (split none: r3d_18 end to end, frameavg on raw frames) is
attacked with the dummy being the whole clip (3, T, H, W), by an attack with the temporal prior
(adversary/gradient/temporal.py); every frame of the recovered clip is saved as its own PNG and
scored against its truth frame, and the summary gains each clip's mean. frameavg's gradient is
symmetric in frame order (its clip feature is the mean of per-frame features), so the order of
its recovered frames carries no information: they are assigned to the truth frames by best match
(Hungarian on PSNR), and each row says which recovered frame it got (`recovered_as`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from adversary.metrics import psnr
from adversary.runner.clip_features import takes_clips
from adversary.runner.meta import HeadKey, ItemMeta
from splitleak.errors import SplitleakError
from splitleak.models import NONE, SplitModel
from splitleak.video import frame_name, save_png

# models whose gradient does not change when a clip's frames are permuted (a mean over frames)
ORDER_FREE = frozenset({"frameavg"})


def is_raw_clip(key: HeadKey) -> bool:
    """Whether updates of `key` are of a clip model trained on raw clips (the dummy is a clip)."""
    return takes_clips(key) and key.split == NONE


def check_raw_clip_attack(name: str, method: Any, keys: set[HeadKey]) -> None:
    """SplitleakError when a raw-clip update meets an attack without the temporal prior."""
    raw = sorted(k.model for k in keys if is_raw_clip(k))
    if raw and not hasattr(getattr(method, "config", None), "lambda_time"):
        raise SplitleakError(f"attack {name!r} cannot invert {raw[0]} trained on raw clips (split none); "
                             f"use dlg, idlg or ig (they take the temporal prior, --option lambda_time=...)")


def frames_per_sample(model: SplitModel) -> int:
    """1 for an image model, clip_len for a clip model."""
    return model.clip_len if model.input_kind == "clip" and model.clip_len else 1


def sample_seqs(update: ItemMeta) -> list[int]:
    """The first frame's sequence number of each sample of the update's batch (a clip model's sample is a
    clip of `update.clip_len` frames, its spec's: meta.item_meta checks it)."""
    return [update.seq + i * update.clip_len for i in range(update.batch)]


def update_frames(update: ItemMeta) -> list[int]:
    """Sequence numbers of every frame an update trained on (a raw clip's: all its frames)."""
    step = update.clip_len if is_raw_clip(update.head) else 1
    return [update.seq + i for i in range(update.batch * step)]


def clip_psnr(recovered: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(T, T) PSNR of recovered frame j against truth frame i, clips (3, T, H, W) of one size."""
    t = truth.shape[1]
    return np.array([[psnr(recovered[:, j], truth[:, i]) for j in range(t)] for i in range(t)])


def order_clips(recovered: np.ndarray, truths: list[np.ndarray | None]) -> list[int]:
    """The permutation of a batch's recovered clips that best matches the truth clips (Hungarian on the
    mean PSNR of frames in order); identity where a truth is missing or the batch is 1."""
    b = len(truths)
    if b == 1 or any(t is None for t in truths):
        return list(range(b))
    score = np.array([[np.mean(np.diag(clip_psnr(recovered[j], t))) for j in range(b)] for t in truths])
    return [int(c) for c in linear_sum_assignment(-score)[1]]


def frame_assignment(recovered: np.ndarray, truth: np.ndarray | None, order_free: bool) -> list[int]:
    """Which recovered frame stands for truth frame t: best match (Hungarian on PSNR) for a model whose
    gradient ignores frame order, else (or without truth) the recovered order."""
    t = recovered.shape[1]
    if not order_free or truth is None:
        return list(range(t))
    return [int(c) for c in linear_sum_assignment(-clip_psnr(recovered, truth))[1]]


def save_clip(out: Path, row: dict[str, Any], clip: torch.Tensor, truth: np.ndarray | None,
              model: SplitModel, stream: str) -> list[dict[str, Any]]:
    """Save a recovered clip (3, T, H, W) as one PNG per frame; one row per frame, from the clip's row."""
    recovered = clip.detach().float().cpu().numpy()
    assigned = frame_assignment(recovered, truth, model.name in ORDER_FREE)
    rows = []
    for t, j in enumerate(assigned):
        seq = row["seq"] + t
        save_png(out / frame_name(stream, seq), recovered[:, j])
        rows.append({**row, "seq": seq, "clip_seq": row["seq"], "clip_frame": t, "recovered_as": j,
                     "frame_order": "best match" if model.name in ORDER_FREE else "as recovered"})
    return rows


def clip_summary(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Per clip: its frames' mean PSNR / SSIM, and how much of its order the attack kept (the fraction of
    frames assigned their own recovered position, and the reversed one's; None unscored): {} without clip rows."""
    clips: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for f in frames:
        if "clip_seq" in f:
            clips.setdefault((f["stream"], f["clip_seq"]), []).append(f)
    out = []
    for (stream, seq), rows in clips.items():
        t, scored = len(rows), all(r["psnr"] is not None for r in rows)  # unscored: no match, no order
        kept = sum(r["recovered_as"] == r["clip_frame"] for r in rows) / t
        reversed_ = sum(r["recovered_as"] == t - 1 - r["clip_frame"] for r in rows) / t
        out.append({"stream": stream, "seq": seq, "update": rows[0]["update"], "frames": t,
                    "psnr": _mean([r["psnr"] for r in rows]), "ssim": _mean([r["ssim"] for r in rows]),
                    "order_kept": kept if scored else None, "order_reversed": reversed_ if scored else None})
    if not out:
        return {}
    return {"clips": out, "mean_clip_psnr": _mean([c["psnr"] for c in out]),
            "min_clip_psnr": min((c["psnr"] for c in out if c["psnr"] is not None), default=None)}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None
