"""Enhancement benchmark: the video paper's Table I on three bundled clips, 32x32 DLG frames -> 128x128.

Per clip (bikes, bigbuckbunny, carphone; camera motion measured as the mean Farneback flow between
consecutive frames at 128 px): an edge streams a window of the clip's second half in fedsgd mode on
lenet at 32x32 to a cloud that records the updates (both real services over loopback); DLG (the
batched engine) recovers the frames (Low); every method enlarges them to 128x128, scored frame by
frame in float on [0, 1] against the original frames at 128 (High) and against Low (bicubic to 128).
A `dlg` row is the paper's High-vs-Low comparison.
References: frames of the same clip's second half outside the evaluated window (the nearest one
for ref1, four for refs), never an evaluated frame; the rows say how far in time they are.
Training (cached under runs/enhance-bench/): the learned models see only the FIRST half of each of
the three clips, so neither an evaluated frame nor a reference is ever a training frame.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from adversary.enhance.methods import get_method, method_names
from adversary.enhance.reference import RefTrainConfig, train_reference_sr
from adversary.enhance.video import VideoTrainConfig, flow, grey, train_video_sr
from adversary.metrics import score
from benchmarks.common import CloudProcess, parser, print_table, write
from splitleak.video import frame_name, load_png, open_source, save_png, to_model_input

CLIPS = ("bikes", "bigbuckbunny", "carphone")
LOW, HIGH, SCALE = 32, 128, 4
STREAM = "enh"
CACHE = Path("runs/enhance-bench")
REF_SPACING = 6  # frames between the references on each side of the window
# the paper's Table I as the issue quotes it (its PSNRs are on uint8 arrays: not comparable; SSIMs are)
PAPER = [{"source": "paper Table I (as quoted in issue 22)", "comparison": "Enhanced vs High, all settings",
          "ssim_range": "0.21-0.32", "psnr_range_db": "28.4-32.8 (uint8, floor ~24 dB: not comparable)"}]


def load_clip(name: str) -> tuple[list[np.ndarray], torch.Tensor]:
    """(original RGB frames, their 128x128 model inputs (T, 3, 128, 128))."""
    with open_source(f"sample:{name}") as src:
        images = [f.image for f in src]
    return images, torch.from_numpy(np.stack([to_model_input(im, HIGH) for im in images]))


def motion_px(high: torch.Tensor) -> float:
    """Mean Farneback flow magnitude (pixels at 128x128) between consecutive frames of the clip."""
    g = grey(high)
    return float(np.mean([np.linalg.norm(flow(g[i], g[i + 1]), axis=-1).mean() for i in range(len(g) - 1)]))


def layout(total: int, frames: int) -> tuple[list[int], list[int]]:
    """(evaluated frame indices: a window centred in the second half, references: 2 each side)."""
    half = total // 2
    start = half + max(0, (total - half - frames) // 2)
    window = list(range(start, min(start + frames, total)))
    before = [window[0] - 1 - REF_SPACING * k for k in range(2)]
    after = [window[-1] + 1 + REF_SPACING * k for k in range(2)]
    refs = [i for pair in zip(before, after) for i in pair if half <= i < total]
    return window, refs


def record_and_invert(images: list[np.ndarray], window: list[int], label: int, work: Path,
                      iterations: int) -> torch.Tensor:
    """Stream the window's frames (fedsgd, lenet, 32x32) to a recording cloud; DLG-batched on the
    recording; the recovered frames (N, 3, 32, 32) in window order."""
    from adversary.runner.run import run_attack
    from edge.session import EdgeConfig
    from edge.trainer import EdgeTrainer

    folder = work / "source"
    folder.mkdir(parents=True)
    for i, idx in enumerate(window):  # lossless originals: the edge resizes them itself
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(images[idx], cv2.COLOR_RGB2BGR))
    with CloudProcess("--threads", "1", "--record", str(work / "rec")) as cloud:
        EdgeTrainer(EdgeConfig(cloud=cloud.target, source=str(folder), model="lenet", split="none", size=LOW,
                               mode="fedsgd", frames=len(window), label=label, stream_id=STREAM,
                               truth=str(work / "truth"), progress=False)).run()
    run_attack(str(work / "rec"), "dlg-batched", str(work / "dlg"), truth=str(work / "truth"),
               iterations=iterations, options={"stop_loss": 1e-5}, progress=False)
    files = sorted((work / "dlg").rglob(f"{STREAM}_*.png"))
    if len(files) != len(window):
        raise SystemExit(f"DLG wrote {len(files)} frames for {len(window)} streamed")
    return torch.from_numpy(np.stack([load_png(f) for f in files]))


def cache_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def trained(kind: str, clips: list[torch.Tensor], steps: int, seed: int) -> tuple[str, dict[str, Any]]:
    """A `ref` or `video` weight file trained on `clips` (first halves), cached by its settings."""
    settings = {"kind": kind, "steps": steps, "seed": seed, "frames": [int(c.shape[0]) for c in clips],
                "train": "first half of each of " + ",".join(CLIPS)}
    path = CACHE / f"{kind}-{cache_key(settings)}.safetensors"
    log_path = path.with_suffix(".json")
    if not (path.is_file() and log_path.is_file()):
        if kind == "ref":
            log = train_reference_sr(clips, RefTrainConfig(out=str(path), steps=steps, seed=seed), progress=True)
        else:
            log = train_video_sr(clips, VideoTrainConfig(out=str(path), steps=steps, seed=seed), progress=True)
        log_path.write_text(json.dumps({**settings, **log}))
    return str(path), json.loads(log_path.read_text())


def trained_noref(clips: list[torch.Tensor], steps: int, seed: int) -> tuple[str | None, str]:
    """The other branch's noref (adversary.enhance.noref) trained on the same first halves, if it is here."""
    try:
        from adversary.enhance.noref import train_noref
        from adversary.enhance.training import TrainSpec
    except ImportError:
        return None, "unavailable: adversary.enhance.noref is not on this branch"
    settings = {"kind": "noref", "steps": steps, "seed": seed, "frames": [int(c.shape[0]) for c in clips]}
    out = CACHE / f"noref-{cache_key(settings)}"
    if not (out / "model.safetensors").is_file():
        folder = CACHE / "train-frames"
        folder.mkdir(parents=True, exist_ok=True)
        for c, clip in enumerate(clips):
            for i, x in enumerate(clip.numpy()):
                save_png(folder / f"{CLIPS[c]}_{i:05d}.png", x)
        train_noref(TrainSpec(source=str(folder), out=str(out), steps=steps, seed=seed, frames=None))
    return str(out), "ok"


def scores(out: torch.Tensor, high: torch.Tensor, low: torch.Tensor) -> dict[str, float]:
    """Mean PSNR / SSIM at 128 (float, [0, 1]) of `out` vs High and vs Low (bicubic to 128)."""
    vh = [score(o, h, HIGH) for o, h in zip(out.numpy(), high.numpy())]
    vl = [score(o, lo, HIGH) for o, lo in zip(out.numpy(), low.numpy())]
    return {"psnr_vs_high": float(np.mean([p for p, _ in vh])), "ssim_vs_high": float(np.mean([s for _, s in vh])),
            "psnr_vs_low": float(np.mean([p for p, _ in vl])), "ssim_vs_low": float(np.mean([s for _, s in vl]))}


def distance(window: list[int], refs: list[int]) -> dict[str, float]:
    """Frames between each evaluated frame and its nearest reference: mean and range."""
    d = [min(abs(w - r) for r in refs) for w in window]
    return {"ref_distance_mean": float(np.mean(d)), "ref_distance_min": min(d), "ref_distance_max": max(d)}


def method_rows(clip: str, motion: float, low: torch.Tensor, high: torch.Tensor, refs: torch.Tensor,
                window: list[int], ref_idx: list[int], weights: dict[str, str | None]) -> list[dict[str, Any]]:
    base = {"clip": clip, "motion_px": motion, "frames": len(window), "window": f"{window[0]}-{window[-1]}"}
    rows = [{**base, "method": "dlg", "refs": 0, **scores(low, high, low), "seconds_per_frame": 0.0,
             "note": "High vs Low (bicubic to 128)"}]
    plan = [("bicubic", "bicubic", None, 0), ("noref", "noref", weights.get("noref"), 0),
            ("noref-pretrained", "noref", weights.get("noref-pretrained"), 0),
            ("ref1", "ref1", weights["ref"], 1), ("refs", "refs", weights["ref"], len(ref_idx)),
            ("video", "video", weights["video"], 0)]
    for label, name, w, count in plan:
        if label.startswith("noref") and (name not in method_names() or w is None):
            if label == "noref":
                rows.append({**base, "method": label, "status": weights.get("noref_status", "unavailable")})
            continue
        kwargs = {} if w is None else {"weights": w}
        method = get_method(name)(scale=SCALE, **kwargs)
        given = refs[:count] if count else None
        start = time.perf_counter()
        out = method.enhance(low, given)
        seconds = (time.perf_counter() - start) / len(window)
        row = {**base, "method": label, "refs": count, **scores(out, high, low), "seconds_per_frame": seconds}
        if count:
            row.update(distance(window, ref_idx[:count]))
        rows.append(row)
        print_table(rows[-1:], COLUMNS)
    return rows


COLUMNS = ["clip", "motion_px", "method", "refs", "psnr_vs_high", "ssim_vs_high", "psnr_vs_low", "ssim_vs_low",
           "seconds_per_frame", "ref_distance_mean", "status"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, help="evaluated frames per clip (default 48, --quick 12)")
    p.add_argument("--steps", type=int, help="training steps per model (default 600, --quick 150)")
    p.add_argument("--iterations", type=int, default=300, help="DLG L-BFGS iterations (the paper's 300)")
    p.add_argument("--weights", help="pretrained noref weights (e.g. RealESRGAN_x4plus.pth): adds noref-pretrained")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    frames = args.frames or (12 if args.quick else 48)
    steps = args.steps or (150 if args.quick else 600)
    torch.set_num_threads(args.threads)
    loaded = {c: load_clip(c) for c in CLIPS}
    motion = {c: motion_px(high) for c, (_, high) in loaded.items()}
    train = [high[: high.shape[0] // 2] for _, high in loaded.values()]
    weights: dict[str, Any] = {}
    weights["ref"], ref_log = trained("ref", train, steps, args.seed)
    weights["video"], video_log = trained("video", train, steps, args.seed)
    weights["noref"], weights["noref_status"] = trained_noref(train, steps, args.seed)
    weights["noref-pretrained"] = args.weights
    rows: list[dict[str, Any]] = []
    for label, clip in enumerate(CLIPS):
        images, high = loaded[clip]
        window, ref_idx = layout(high.shape[0], frames)
        with tempfile.TemporaryDirectory() as tmp:
            low = record_and_invert(images, window, label, Path(tmp), args.iterations)
        rows += method_rows(clip, motion[clip], low, high[window], high[ref_idx], window, ref_idx, weights)
    ranked = sorted(CLIPS, key=motion.get)
    for r in rows:
        r["motion"] = dict(zip(ranked, ("static", "minimal", "frequent")))[r["clip"]]
    print_table(rows, COLUMNS)
    print_table(PAPER, list(PAPER[0]))
    write(args.json, rows, {"frames": frames, "steps": steps, "dlg": {"attack": "dlg-batched", "model": "lenet",
                            "size": LOW, "mode": "fedsgd", "iterations": args.iterations, "stop_loss": 1e-5},
                            "eval_size": HIGH, "motion": {c: motion[c] for c in CLIPS}, "motion_rank": ranked,
                            "training": {"ref": ref_log, "video": video_log,
                                         "frames": "first half of each clip; evaluation and references from the second"},
                            "references": f"second half, outside the window, {REF_SPACING} frames apart",
                            "paper_table_i": PAPER, "quick": args.quick})


if __name__ == "__main__":
    main()
