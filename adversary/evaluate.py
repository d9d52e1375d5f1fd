"""Evaluation: reconstructed frames vs ground truth, matched by (stream, seq) file names.

Writes `metrics.json` in the contract shape and a `grid.png` (truth row over reconstruction
row, up to 8 frames). PSNR/SSIM are computed on float [0, 1] images after a bicubic resize of
both images to `size` x `size` (128 by default, as in the video-leakage paper).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from adversary.metrics import PSNR_CAP_DB, resize_to, score
from splitleak.errors import SplitleakError
from splitleak.recording import write_json
from splitleak.video import index_frames, load_png, save_png

Key = tuple[str, int]
GRID_FRAMES = 8


def check_size(size: int | None) -> int | None:
    """SplitleakError unless `size` is None or a positive integer."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise SplitleakError(f"bad evaluation size {size!r}: expected a positive integer")
    return size


def truth_index(truth_dir: str | Path) -> dict[Key, Path]:
    """(stream, seq) -> path of every frame-named PNG in the truth folder, or SplitleakError."""
    if not Path(truth_dir).is_dir():
        raise SplitleakError(f"truth folder not found: {truth_dir}")
    return index_frames(truth_dir)


def match_frames(recon_dir: str | Path, truth_dir: str | Path) -> tuple[list[tuple[Key, Path, Path]], dict[str, int]]:
    """Pairs (key, recon path, truth path) sorted by key, plus counts of frames left unmatched."""
    if not Path(recon_dir).is_dir():
        raise SplitleakError(f"reconstruction folder not found: {recon_dir}")
    recon, truth = index_frames(recon_dir), truth_index(truth_dir)
    keys = sorted(recon.keys() & truth.keys())
    if not keys:
        raise SplitleakError(f"no frames in {recon_dir} match the truth frames in {truth_dir} "
                             f"({len(recon)} reconstructed, {len(truth)} truth PNGs named STREAM_SEQ.png)")
    counts = {"matched": len(keys), "recon_without_truth": len(recon.keys() - truth.keys()),
              "truth_without_recon": len(truth.keys() - recon.keys())}
    return [(k, recon[k], truth[k]) for k in keys], counts


def score_pairs(pairs: list[tuple[Key, Path, Path]], sizes: dict[str, int | None]) -> list[dict[str, Any]]:
    """One row per pair: stream, seq and, per entry of `sizes`, psnr{suffix} and ssim{suffix}."""
    rows = []
    for (stream, seq), recon_path, truth_path in pairs:
        recon, truth = load_png(recon_path), load_png(truth_path)
        row: dict[str, Any] = {"stream": stream, "seq": seq}
        for suffix, size in sizes.items():
            row[f"psnr{suffix}"], row[f"ssim{suffix}"] = score(recon, truth, size)
        rows.append(row)
    return rows


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarise(frames: list[dict[str, Any]], threshold: float, seconds: float | None,
              suffixes: tuple[str, ...] = ("",)) -> dict[str, Any]:
    """mean_psnr, mean_ssim, success_rate (fraction with PSNR >= threshold) and seconds."""
    out: dict[str, Any] = {}
    for sfx in suffixes:
        psnrs = [f.get(f"psnr{sfx}") for f in frames]
        scored = [p for p in psnrs if p is not None]
        out[f"mean_psnr{sfx}"] = _mean(psnrs)
        out[f"mean_ssim{sfx}"] = _mean([f.get(f"ssim{sfx}") for f in frames])
        out[f"success_rate{sfx}"] = (sum(p >= threshold for p in scored) / len(scored)) if scored else None
    out["seconds"] = seconds
    return out


def write_grid(pairs: list[tuple[Key, Path, Path]], path: str | Path, cell: int = 128) -> Path:
    """Truth row over reconstruction row, up to GRID_FRAMES frames, each cell x cell, 2 px gaps."""
    gap = 2
    chosen = pairs[:GRID_FRAMES]
    grid = np.ones((3, 2 * cell + gap, len(chosen) * (cell + gap) - gap), dtype=np.float32)
    for i, (_, recon_path, truth_path) in enumerate(chosen):
        left = i * (cell + gap)
        grid[:, :cell, left:left + cell] = resize_to(load_png(truth_path), (cell, cell))
        grid[:, cell + gap:, left:left + cell] = resize_to(load_png(recon_path), (cell, cell))
    return save_png(path, grid)


def base_config(size: int | None, threshold: float) -> dict[str, Any]:
    """The evaluation settings every metrics.json records."""
    return {"eval_size": size, "resize": "cv2.INTER_CUBIC, clipped to [0, 1]" if size else None,
            "success_threshold_db": threshold, "psnr_cap_db": PSNR_CAP_DB,
            "metrics": "skimage PSNR/SSIM on float [0, 1], data_range=1, SSIM channel_axis=0 win_size=7"}


def write_metrics(out_dir: str | Path, frames: list[dict[str, Any]], summary: dict[str, Any],
                  config: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json ({frames, summary, config}) into out_dir and return it."""
    metrics = {"frames": frames, "summary": summary, "config": config}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def _attack_seconds(recon_dir: str | Path) -> float | None:
    """The attack's own time, if the reconstruction folder came from `splitleak attack`."""
    try:
        seconds = json.loads((Path(recon_dir) / "metrics.json").read_text())["summary"]["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else None


def evaluate_folders(recon_dir: str, truth_dir: str, out_dir: str, size: int | None = 128,
                     threshold: float = 20.0) -> dict[str, Any]:
    """Score every reconstruction that has a truth frame; write metrics.json and grid.png to out_dir.

    summary.seconds is the attack's time read from recon_dir/metrics.json (None if absent);
    the evaluation's own time is config.eval_seconds.
    """
    check_size(size)
    if not math.isfinite(threshold):
        raise SplitleakError(f"bad success threshold {threshold!r}")
    start = time.perf_counter()
    pairs, counts = match_frames(recon_dir, truth_dir)
    attack_seconds = _attack_seconds(recon_dir)
    frames = score_pairs(pairs, {"": size})
    write_grid(pairs, Path(out_dir) / "grid.png", size or 128)
    config = {**base_config(size, threshold), "recon": str(recon_dir), "truth": str(truth_dir), **counts,
              "eval_seconds": time.perf_counter() - start}
    return write_metrics(out_dir, frames, summarise(frames, threshold, attack_seconds), config)
