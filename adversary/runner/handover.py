"""Features recovered from gradients -> a recording of feature frames, as the cloud would have tapped them.

The gradient runner writes one `STREAM_SEQ.features.safetensors` per update (sample i is frame
seq + i, or a clip model's clip of clip_len frames from seq + i * clip_len, whose item then also
carries `clip_len`). The hand-over writes each sample as a "frame" item (the head's FrameMeta, fp32 codec,
tensor `features` (1, *shape)) into a real recording, frames ordered by stream and seq so that a
multi-frame attack sees each stream in order; the feature runner then reads it unchanged. With the
truth, each frame's recovered features are scored against the head run on its truth PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from adversary.gradient.features import feature_scores
from adversary.runner.clips import sample_seqs
from adversary.runner.gradient_truth import Truth, features_name
from adversary.runner.heads import build_head
from adversary.runner.meta import HeadKey, ItemMeta
from adversary.runner.updates import plan_recording
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingWriter


def frame_meta(stream: str, seq: int, head: HeadKey, clip_len: int = 1) -> dict[str, Any]:
    """A tapped frame's metadata (FrameMeta's wire names, as the cloud's recorder writes them); a clip's
    item (clip_len > 1) also names its length, which the feature runner checks against the head's."""
    meta = {"stream_id": stream, "seq": seq, "model_id": head.model, "split_point": head.split,
            "weights": head.weights, "input_size": head.size, "num_classes": head.num_classes,
            "classifier": head.classifier, "codec": {"name": "fp32"}}
    return {**meta, "clip_len": clip_len} if clip_len > 1 else meta


def features_to_recording(recording: str, features_dir: Path, out: Path, *, truth: str | None, device: str,
                          weights_path: str | None, max_frames: int | None) -> dict[str, Any]:
    """Write the features recovered from `recording`'s updates (in `features_dir`) as a recording at `out`;
    returns the frames written and, with `truth`, their scores (cosine, relative error) and means."""
    updates = plan_recording(recording, max_frames).updates
    samples = sorted(((u, i, seq) for u in updates for i, seq in enumerate(sample_seqs(u))),
                     key=lambda s: (s[0].stream, s[2]))
    truths, heads = Truth(truth), {}
    rows: list[dict[str, Any]] = []
    with RecordingWriter(out, {"chain_handover": str(features_dir), "from_recording": str(recording)}) as writer:
        for update, i, seq in samples:
            z = _recovered(features_dir, update)[i]
            writer.append("frame", frame_meta(update.stream, seq, update.head, update.clip_len), {"features": z[None]})
            row: dict[str, Any] = {"stream": update.stream, "seq": seq}
            if truth is not None:
                if update.head not in heads:
                    heads[update.head] = build_head(update.head, device, weights_path)
                row.update(_scores(z, truths.features(update, heads[update.head])[i]))
            rows.append(row)
    return {"recording": str(out), "frames": rows, "summary": _means(rows)}


def _recovered(folder: Path, update: ItemMeta) -> np.ndarray:
    path = folder / features_name(update.stream, update.seq)
    if not path.is_file():
        raise SplitleakError(f"the gradient stage wrote no features for {update.stream} frame {update.seq} ({path})")
    z = load_file(str(path))["features"].astype(np.float32)
    if len(z) != update.batch:
        raise SplitleakError(f"{path} holds {len(z)} samples; the update has {update.batch}")
    return z


def _scores(recovered: np.ndarray, true: np.ndarray | None) -> dict[str, float | None]:
    """Cosine and relative L2 error ||r - t|| / ||t|| of one frame's recovered features."""
    if true is None:
        return {"feature_cosine": None, "feature_rel_error": None}
    r, t = torch.from_numpy(recovered)[None], torch.from_numpy(true)[None]
    _, cos = feature_scores(r, t)
    rel = float(np.linalg.norm(recovered - true) / max(float(np.linalg.norm(true)), 1e-12))
    return {"feature_cosine": float(cos[0]), "feature_rel_error": rel}


def _means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"frames": len(rows)}
    for key in ("feature_cosine", "feature_rel_error"):
        values = [r[key] for r in rows if r.get(key) is not None]
        out[f"mean_{key}"] = float(np.mean(values)) if values else None
    return out
