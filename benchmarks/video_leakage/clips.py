"""The video-leakage paper's clip-feature setting: gradient attacks on a clip classifier over a frozen
extractor, recorded through the real services and attacked through the CLI's code path (then the
raw-clip setting's rows: rawclips.py).

Held-out clips of the bundled footage (sample:bikes from frame 175, which no model here saw) stream
through a real edge (fedsgd, batch 1, lr 0.01, clip k labelled k mod 10) into a real loopback cloud
that records every update and state; `run_attack` (what `splitleak attack` runs) inverts each clip's
update to its feature matrix, scored by cosine against the head run on the truth frames.
`seconds_per_frame` is seconds per clip (one update inverts one clip's features).

    python -m benchmarks.video_leakage [--quick]     (the lead's __main__ collects rows(quick))
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cv2
import torch

from adversary.runner.run import run_attack
from benchmarks.common import record_in_process
from benchmarks.footage import CLIP, attacker_frames, clip_frames
from splitleak.models import get_spec
from splitleak.video import open_source

SETTING = "clip-features"
MODELS = (("clipnet", "pool"), ("frameavg", "mean"))
LR, CLASSES = 0.01, 10


def attacks(quick: bool) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(attack, preset, options): the paper's protocol first (quick: 500 iterations, a check every
    50), then ours: fvi's clip preset, R-GAP's closed form, the batched engine on the scale-free loss."""
    paper = {"iterations": 500, "stagnation.check_every": 50} if quick else {}
    return [("fvi", "paper", paper), ("fvi", "clip", {}), ("rgap", None, {}),
            ("idlg-batched", None, {"stop.relative": True})]


def held_out_folder(folder: Path, frames: int) -> Path:
    """The first `frames` held-out frames of the footage, as a folder of PNGs the edge streams."""
    start = attacker_frames(clip_frames(CLIP))
    folder.mkdir(parents=True)
    with open_source(CLIP) as src:
        for f in src:
            if start <= f.index < start + frames:
                cv2.imwrite(str(folder / f"{f.index - start:05d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    return folder


def record(tmp: Path, model: str, split: str, size: int, clips: int) -> tuple[Path, Path]:
    """Train `clips` clips through the edge into a recording cloud; (recording, truth)."""
    clip_len = get_spec(model).clip_len or 1
    frames = clips * clip_len
    source = held_out_folder(tmp / f"{model}-frames", frames)
    labels = tmp / f"{model}-labels.csv"
    labels.write_text("".join(f"{k * clip_len},{(k + 1) * clip_len},{k % CLASSES}\n" for k in range(clips)))
    rec, truth = tmp / f"{model}-rec", tmp / f"{model}-truth"
    record_in_process(rec, source=str(source), model=model, split=split, size=size, frames=frames, mode="fedsgd",
                      lr=LR, labels=str(labels), num_classes=CLASSES, truth=str(truth))
    return rec, truth


def rows(quick: bool) -> list[dict[str, Any]]:
    """The clip-feature rows, then the raw-clip (split none) ones (benchmarks/video_leakage/rawclips.py)."""
    from benchmarks.video_leakage import rawclips

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: more threads only contend on a shared machine
    try:
        return _rows(quick) + rawclips.rows(quick)
    finally:
        torch.set_num_threads(threads)


def _rows(quick: bool) -> list[dict[str, Any]]:
    size, clips = (16, 2) if quick else (32, 3)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for model, split in MODELS:
            rec, truth = record(tmp, model, split, size, clips)
            for attack, preset, options in attacks(quick):
                where = tmp / f"{model}-{attack}-{preset}"
                metrics = run_attack(str(rec), attack, str(where), truth=str(truth), preset=preset,
                                     options=options, progress=False)
                s = metrics["summary"]
                out.append({"setting": SETTING, "model": model, "attack": attack + (f":{preset}" if preset else ""),
                            "chain": None, "local_steps": 1, "batch": 1, "feature_cos": s["mean_feature_cosine"],
                            "feature_cos_min": min(f["feature_cosine"] for f in metrics["frames"]),
                            "feature_rel_error": s["mean_feature_rel_error"], "psnr": None, "ssim": None,
                            "seconds_per_frame": s["seconds_per_frame"], "per": "clip", "clips": len(metrics["frames"]),
                            "size": size, "options": options})
    return out


if __name__ == "__main__":
    from benchmarks.common import parser, print_table, write

    args = parser("clip-feature gradient inversion (the video-leakage paper's I3D setting)").parse_args()
    table = rows(args.quick)
    print_table(table, ["model", "attack", "feature_cos", "feature_cos_min", "feature_rel_error", "seconds_per_frame"])
    write(args.json, table, {"quick": args.quick, "lr": LR, "footage": CLIP})
