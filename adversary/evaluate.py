"""Evaluation: reconstructed frames vs ground truth, matched by (stream, seq) file names.

Writes `metrics.json` in the contract shape and a `grid.png` (truth row over reconstruction
row, up to 8 frames). PSNR/SSIM are computed on float [0, 1] images after a bicubic resize of
both images to `size` x `size` (128 by default, as in the video-leakage paper), never on uint8
arrays (the paper's released code did, which wraps around and floors PSNR near 24 dB).

Frames named STREAM_SEQ.png pair by (stream, seq); other images (.png, .jpg, ...) pair by file
name without its suffix. With `low` (the recovered frames an enhancement started from) the three
comparisons of the paper's Table I are scored: High vs Low, Enhanced vs High, Enhanced vs Low,
where recon is the enhanced folder and truth the high-resolution one.
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
from splitleak.video import index_frames, load_png, parse_frame_name, save_png

Key = tuple[str, int]
GRID_FRAMES = 8
PLAIN_SEQ = -1  # the seq of a key made from a plain file name (frame names have seq >= 0)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Table I's comparisons: output suffix -> (which image is scored, against which)
TABLE1 = {"_high_vs_low": ("low", "truth"), "": ("recon", "truth"), "_enhanced_vs_low": ("recon", "low")}


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


def image_index(folder: str | Path, what: str) -> dict[Key, Path]:
    """Key -> path of every image in `folder`: (stream, seq) for STREAM_SEQ.png, (name, PLAIN_SEQ) for others."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitleakError(f"{what} folder not found: {folder}")
    index: dict[Key, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        key = parse_frame_name(path.name)
        index[key if key is not None else (path.stem, PLAIN_SEQ)] = path
    return index


def match_frames(recon_dir: str | Path, truth_dir: str | Path) -> tuple[list[tuple[Key, Path, Path]], dict[str, int]]:
    """Pairs (key, recon path, truth path) sorted by key, plus counts of frames left unmatched."""
    recon, truth = image_index(recon_dir, "reconstruction"), image_index(truth_dir, "truth")
    keys = sorted(recon.keys() & truth.keys())
    if not keys:
        raise SplitleakError(f"no frames in {recon_dir} match the truth frames in {truth_dir} "
                             f"({len(recon)} reconstructed, {len(truth)} truth images; STREAM_SEQ.png frames "
                             f"pair by stream and sequence, other images by file name)")
    counts = {"matched": len(keys), "recon_without_truth": len(recon.keys() - truth.keys()),
              "truth_without_recon": len(truth.keys() - recon.keys())}
    return [(k, recon[k], truth[k]) for k in keys], counts


def score_table1(pairs: list[tuple[Key, Path, Path]], low: dict[Key, Path], size: int | None) -> list[dict[str, Any]]:
    """Per frame, the three comparisons of Table I at `size`: psnr/ssim (enhanced vs high),
    *_high_vs_low and *_enhanced_vs_low; frames without a low image are skipped by the caller."""
    rows = []
    for (stream, seq), recon_path, truth_path in pairs:
        images = {"recon": load_png(recon_path), "truth": load_png(truth_path), "low": load_png(low[(stream, seq)])}
        row: dict[str, Any] = {"stream": stream, "seq": None if seq == PLAIN_SEQ else seq}
        for suffix, (image, reference) in TABLE1.items():
            row[f"psnr{suffix}"], row[f"ssim{suffix}"] = score(images[image], images[reference], size)
        rows.append(row)
    return rows


def table1(summary: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The summary's means arranged as the paper's Table I."""
    names = {"_high_vs_low": "high_vs_low", "": "enhanced_vs_high", "_enhanced_vs_low": "enhanced_vs_low"}
    return {name: {"psnr": summary[f"mean_psnr{sfx}"], "ssim": summary[f"mean_ssim{sfx}"]} for sfx, name in names.items()}


def score_pairs(pairs: list[tuple[Key, Path, Path]], sizes: dict[str, int | None]) -> list[dict[str, Any]]:
    """One row per pair: stream, seq and, per entry of `sizes`, psnr{suffix} and ssim{suffix}."""
    rows = []
    for (stream, seq), recon_path, truth_path in pairs:
        recon, truth = load_png(recon_path), load_png(truth_path)
        row: dict[str, Any] = {"stream": stream, "seq": None if seq == PLAIN_SEQ else seq}
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
                     threshold: float = 20.0, low_dir: str | None = None) -> dict[str, Any]:
    """Score every reconstruction that has a truth frame; write metrics.json and grid.png to out_dir.

    With `low_dir`, only frames that also have a low image are scored, on Table I's three
    comparisons (summary.table1). summary.seconds is the attack's time read from
    recon_dir/metrics.json (None if absent); the evaluation's own time is config.eval_seconds.
    """
    check_size(size)
    if not math.isfinite(threshold):
        raise SplitleakError(f"bad success threshold {threshold!r}")
    start = time.perf_counter()
    pairs, counts = match_frames(recon_dir, truth_dir)
    attack_seconds = _attack_seconds(recon_dir)
    suffixes: tuple[str, ...] = ("",)
    if low_dir is None:
        frames = score_pairs(pairs, {"": size})
    else:
        low = image_index(low_dir, "low-resolution")
        with_low = [p for p in pairs if p[0] in low]
        if not with_low:
            raise SplitleakError(f"no frames in {low_dir} match the {len(pairs)} scored frames of {recon_dir}")
        counts["matched_without_low"] = len(pairs) - len(with_low)
        pairs, suffixes = with_low, tuple(TABLE1)
        frames = score_table1(pairs, low, size)
    write_grid(pairs, Path(out_dir) / "grid.png", size or 128)
    config = {**base_config(size, threshold), "recon": str(recon_dir), "truth": str(truth_dir), "low": low_dir,
              **counts, "eval_seconds": time.perf_counter() - start}
    summary = summarise(frames, threshold, attack_seconds, suffixes)
    if low_dir is not None:
        summary["table1"] = table1(summary)
    return write_metrics(out_dir, frames, summary, config)
