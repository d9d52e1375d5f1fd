"""Clip models trained on raw clips (split none): the frames of a clip recovered from one gradient,
with and without the temporal prior, through the CLI's code path.

Held-out clips of the bundled footage (sample:bikes from frame 175) stream through a real edge
(fedsgd, batch 1, one 8-frame clip per update, clip k labelled k mod 10) into a loopback cloud that
records every update; `run_attack` (what `splitleak attack` runs) inverts each update to the whole
clip, every frame scored at 128 px against its truth frame. Models: frameavg end to end (resnet18
through layer3 on every frame, averaged over the clip: its gradient ignores frame order, so the
recovered frames are assigned to the truth by best match) and r3d_18 end to end. The attack is
`ig` (cosine matching, TV within frames) with lambda_time 0 (no temporal prior) and at its default.
`psnr_mean_frame` is what a perfect collapse to one frame would score: each truth frame against the
clip's mean frame (held-out bikes frames differ little, so the prior has much to work with).

    python -m benchmarks.video_leakage --only clips [--quick]
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from adversary.gradient.ig import IGConfig
from adversary.metrics import psnr, resize_to
from adversary.runner.output import EVAL_SIZE
from adversary.runner.run import run_attack
from splitleak.models import get_spec
from splitleak.video import load_png

SETTING = "clip-raw"
SIZE = 16  # px; 8 frames a clip (both models' default clip_len)


def plan(quick: bool) -> list[tuple[str, int]]:
    """(model, ig iterations): r3d_18 end to end costs ~8x frameavg's per iteration (33 M parameters)."""
    return [("frameavg", 300 if quick else 1000), ("r3d_18", 60 if quick else 300)]


def priors() -> list[tuple[str, dict[str, Any]]]:
    """(the row's `prior`, ig's options): without the temporal prior, then at its default weight."""
    return [("none", {"lambda_time": 0.0}), (f"time {IGConfig.lambda_time:g}", {})]


def attack_label(options: dict[str, Any]) -> str:
    """`ig:lambda_time=W`, so the summary table (which has no `prior` column) tells the rows apart."""
    return f"ig:lambda_time={options.get('lambda_time', IGConfig.lambda_time):g}"


def mean_frame_psnr(truth: Path, clip_len: int) -> float:
    """Mean PSNR (at the evaluation size) of each truth frame against its clip's mean frame."""
    frames = [resize_to(load_png(p), (EVAL_SIZE, EVAL_SIZE)) for p in sorted(truth.glob("*.png"))]
    scores = []
    for k in range(0, len(frames), clip_len):
        clip = frames[k:k + clip_len]
        scores += [psnr(np.mean(clip, axis=0), f) for f in clip]
    return float(np.mean(scores))


def rows(quick: bool) -> list[dict[str, Any]]:
    from benchmarks.video_leakage.clips import record  # the clip-feature setting's recorder

    clips = 1 if quick else 2
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for model, iterations in plan(quick):
            rec, truth = record(tmp, model, "none", SIZE, clips)
            baseline = mean_frame_psnr(truth, get_spec(model).clip_len or 1)
            for prior, options in priors():
                options = {**options, "iterations": iterations}
                metrics = run_attack(str(rec), "ig", str(tmp / f"{model}-{prior}"), truth=str(truth),
                                     options=options, progress=False)
                out.append(_row(model, prior, options, metrics, baseline))
    return out


def _row(model: str, prior: str, options: dict[str, Any], metrics: dict[str, Any],
         baseline: float) -> dict[str, Any]:
    s, frames = metrics["summary"], metrics["frames"]
    per_clip = len(frames) / max(1, len(s["clips"]))
    return {"setting": SETTING, "model": model, "attack": attack_label(options), "prior": prior, "chain": None, "local_steps": 1,
            "batch": 1, "feature_cos": None, "psnr": s["mean_psnr"], "ssim": s["mean_ssim"],
            "psnr_min_frame": min(f["psnr"] for f in frames), "psnr_frames": [round(f["psnr"], 2) for f in frames],
            "order_kept": float(np.mean([c["order_kept"] for c in s["clips"]])),
            "psnr_mean_frame": baseline, "seconds_per_frame": s["seconds_per_frame"],
            "seconds_per_iteration": s["seconds_per_frame"] * per_clip / options["iterations"],
            "clips": len(s["clips"]), "frames_per_clip": per_clip, "size": SIZE, "options": options}
