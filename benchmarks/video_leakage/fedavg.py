"""FedAvg rows of the video-leakage benchmark: frames recovered from weight deltas of E local steps.

Held-out frames of the bundled footage (sample:bikes, from a third into its last 30 %, as
benchmarks/footage.py cuts it) are streamed by a real edge in fedavg mode (lenet, 32x32, split none,
the edge's defaults: lr 0.01, every frame class 0, one edge per round) to a `splitleak cloud` process
that records them; each recording is attacked through `run_attack`, the code `splitleak attack` runs
(the attack simulates the E local steps from each round's recorded weights, adversary/gradient/local.py).
One recording per (local steps, batch), shared by its attacks. idlg-batched takes batch-1 updates only
(the batched engine is one frame per row); idlg and ig invert a batch-4 update jointly.

`psnr` / `ssim` are the contract's (128 px, both images upscaled), `psnr_native` at 32 px; `success` is
the fraction of frames at >= 30 dB (128 px). `update_norms` are the recorded pseudo-gradients' norms
(|delta| / lr) per update in round order: they shrink as the one-label stream saturates the model.

Full: `python -m benchmarks.video_leakage.fedavg --json runs/fedavg.json` (CLI defaults for every
attack, 10 frames at batch 1, 8 at batch 4; hours on 2 CPU cores). Quick: 3 frames, E = 1 and 2,
idlg-batched at a reduced budget (minutes).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from adversary.runner.run import run_attack
from benchmarks.common import parser, print_table, record_training, write
from benchmarks.enhance_dlg import labels_csv
from benchmarks.footage import CLIP, attacker_frames, clip_frames, held_out_start
from splitleak.video import open_source

MODEL, SIZE, STREAM = "lenet", 32, "fedavg"
SUCCESS_DB = 30.0
COLUMNS = ["setting", "model", "attack", "local_steps", "batch", "frames", "psnr", "psnr_native", "ssim", "success",
           "seconds_per_frame", "label_accuracy"]


@dataclass(frozen=True)
class Cell:
    """One row: an attack on the recording of (local_steps, batch); `options` / `iterations` None: CLI defaults."""

    attack: str
    local_steps: int
    batch: int
    frames: int
    iterations: int | None = None
    options: tuple[tuple[str, Any], ...] = ()


def plan(quick: bool, steps: tuple[int, ...] | None = None, batches: tuple[int, ...] | None = None,
         attacks: tuple[str, ...] | None = None, frames: int | None = None, iterations: int | None = None,
         restarts: int | None = None) -> list[Cell]:
    """The cells to measure: quick is idlg-batched at E = 1, 2 on 3 frames with 30 L-BFGS steps and 2 starts;
    full is every attack at CLI defaults (idlg-batched at batch 1 only). `iterations` / `restarts` override
    every attack's budget (restarts: the L-BFGS attacks')."""
    if quick:
        steps, batches, attacks = steps or (1, 2), batches or (1,), attacks or ("idlg-batched",)
        budget: dict[str, tuple[int | None, tuple[tuple[str, Any], ...]]] = {
            "idlg-batched": (30, (("restarts", 2),)), "idlg": (30, (("restarts", 2),)), "ig": (200, ())}
    else:
        steps, batches, attacks = steps or (1, 2, 5, 10), batches or (1, 4), attacks or ("idlg-batched", "idlg", "ig")
        budget = {a: (None, ()) for a in attacks}
    if iterations is not None or restarts is not None:
        budget = {a: (iterations if iterations is not None else budget.get(a, (None, ()))[0],
                      (("restarts", restarts),) if restarts is not None and a != "ig" else budget.get(a, (None, ()))[1])
                  for a in attacks}
    cells = []
    for e in steps:
        for b in batches:
            n = frames or (3 if quick else (10 if b == 1 else 8))
            n = max(b, n - n % b)  # whole updates
            cells += [Cell(a, e, b, n, *budget.get(a, (None, ()))) for a in attacks if b == 1 or a != "idlg-batched"]
    return cells


def write_source(folder: Path, count: int, clip: str = CLIP) -> tuple[Path, int]:
    """`count` held-out frames of `clip` as lossless PNGs at the clip's own resolution (the edge resizes them
    as it resizes any source); the clip index of the first."""
    total = clip_frames(clip)
    start = held_out_start(total)
    if start < attacker_frames(total) or start + count > total:
        raise SystemExit(f"{clip} has {total} frames; cannot take {count} held-out frames from {start}")
    folder.mkdir(parents=True, exist_ok=True)
    with open_source(clip) as src:
        for f in src:
            if start <= f.index < start + count:
                cv2.imwrite(str(folder / f"{f.index:05d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    return folder, start


def record(source: Path, work: Path, local_steps: int, batch: int, frames: int,
           labels: str = "one") -> tuple[Path, Path]:
    """Stream `frames` frames in fedavg mode (the edge's defaults otherwise: every frame class 0; labels
    "cycle": frame i class i mod 10, which keeps the model from saturating) to a recording cloud process;
    the (recording, truth) folders."""
    work.mkdir(parents=True, exist_ok=True)
    csv = labels_csv(frames, work / "labels.csv") if labels == "cycle" else None
    return record_training(work, source=str(source), model=MODEL, split="none", size=SIZE, mode="fedavg",
                           frames=frames, batch=batch, local_steps=local_steps, stream_id=STREAM, labels=csv)


def attack_row(cell: Cell, rec: Path, truth: Path, out: Path, first: int, labels: str,
               clip: str = CLIP) -> dict[str, Any]:
    """Attack the recording as `splitleak attack` does and summarise it as one row."""
    metrics = run_attack(str(rec), cell.attack, str(out), truth=str(truth), iterations=cell.iterations,
                         options=dict(cell.options), progress=False, seed=0)
    frames, summary = metrics["frames"], metrics["summary"]
    psnrs = [f["psnr"] for f in frames]
    norms = {f["update"]: f["gradient_norm"] for f in frames}
    return {"setting": "fedavg", "model": MODEL, "attack": cell.attack, "chain": None,
            "local_steps": cell.local_steps, "batch": cell.batch, "feature_cos": None,
            "psnr": summary["mean_psnr"], "ssim": summary["mean_ssim"],
            "seconds_per_frame": summary["seconds_per_frame"],
            "success": sum(p >= SUCCESS_DB for p in psnrs) / len(psnrs),
            "frames": len(frames), "psnr_native": summary.get("mean_psnr_native"),
            "psnr_per_frame": [round(p, 2) for p in psnrs],
            "update_norms": [round(norms[k], 4) for k in sorted(norms)],
            "label_accuracy": summary.get("label_accuracy"),
            "raised_loss_thresholds": summary.get("raised_loss_thresholds"), "lr": metrics["config"]["local_training"][0]["lr"],
            "iterations": cell.iterations, "options": dict(cell.options), "source": clip, "first_frame": first,
            "labels": labels}


def rows(quick: bool, steps: tuple[int, ...] | None = None, batches: tuple[int, ...] | None = None,
         attacks: tuple[str, ...] | None = None, frames: int | None = None, labels: str = "one",
         iterations: int | None = None, restarts: int | None = None, clip: str = CLIP) -> list[dict[str, Any]]:
    """Measure every cell of `plan`: one recording per (local steps, batch), each of its attacks on it."""
    cells = plan(quick, steps, batches, attacks, frames, iterations, restarts)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedavg-bench-") as tmp:
        work = Path(tmp)
        source, first = write_source(work / "source", max(c.frames for c in cells), clip)
        recordings: dict[tuple[int, int, int], tuple[Path, Path]] = {}
        for i, cell in enumerate(cells):
            key = (cell.local_steps, cell.batch, cell.frames)
            if key not in recordings:
                folder = work / f"e{cell.local_steps}-b{cell.batch}-n{cell.frames}"
                recordings[key] = record(source, folder, *key, labels=labels)
            row = attack_row(cell, *recordings[key], work / f"out{i}", first, labels, clip)
            print(f"fedavg E={cell.local_steps} B={cell.batch} {cell.attack}: {row['psnr']:.1f} dB, "
                  f"{row['success']:.0%} >= {SUCCESS_DB:g} dB, {row['seconds_per_frame']:.1f} s/frame", flush=True)
            out.append(row)
    return out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=_ints, help="local steps (default 1,2,5,10; --quick 1,2)")
    p.add_argument("--batches", type=_ints, help="batch sizes (default 1,4; --quick 1)")
    p.add_argument("--attacks", type=lambda t: tuple(a for a in t.split(",") if a),
                   help="attacks (default idlg-batched,idlg,ig; --quick idlg-batched)")
    p.add_argument("--frames", type=int, help="frames per recording (default 10 at batch 1, 8 at batch 4; --quick 3)")
    p.add_argument("--labels", choices=("one", "cycle"), default="one",
                   help="one: the edge's default (every frame class 0: the model saturates); "
                        "cycle: frame i class i mod 10")
    p.add_argument("--iterations", type=int, help="every attack's iterations (default: the CLI's; --quick 30, ig 200)")
    p.add_argument("--restarts", type=int, help="the L-BFGS attacks' starts (default: the CLI's 10; --quick 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--clip", default=CLIP, help=f"the footage, its held-out frames (default {CLIP}; e.g. "
                                                 "sample:carphone, footage nothing was tuned on)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    found = rows(args.quick, args.steps, args.batches, args.attacks, args.frames, args.labels, args.iterations,
                 args.restarts, args.clip)
    print_table(found, COLUMNS)
    write(args.json, found, {"quick": args.quick, "model": MODEL, "size": SIZE, "source": args.clip,
                             "success_db": SUCCESS_DB, "labels": args.labels, "iterations": args.iterations,
                             "restarts": args.restarts})


if __name__ == "__main__":
    main()
