"""Gradients that shrink: the edge's default learning stream attacked as it saturates its model.

The stream is recorded as the edge streams by default (issue 26, item 4): `splitleak cloud --record`
in its own process, one edge in fedsgd mode at its defaults (one label, lr 0.01, batch 1, round size 1),
lenet at 32x32 on the first frames of `sample:bikes`, truth frames kept. Each frame is its own round, so
the global model saturates on the one label and the gradient's norm falls ~100x after a few rounds.
`idlg` and `idlg-batched` then attack the recording exactly as `splitleak attack --recording REC
--attack NAME --truth TRUTH` does, with default options.

`rows(quick)` gives ONE ROW PER FRAME PER ATTACK: the frame's round, its tapped gradient's norm, PSNR /
SSIM at 128 px (the runner's scores; `psnr_native` at 32 px beside them) and the attack's seconds per
frame (a batched run's time shared out over its frames). quick: the first 4 frames (rounds 0-3, the
norm already ~1/35 of round 0's); full: the first 10.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from adversary.runner.run import run_attack
from benchmarks.common import parser, print_table, record_training, write

SOURCE, MODEL, SIZE = "sample:bikes", "lenet", 32
ATTACKS = ("idlg", "idlg-batched")
FRAMES = {True: 4, False: 10}


def record(folder: Path, frames: int) -> tuple[Path, Path]:
    """The default single-label fedsgd stream through a real cloud process: (recording, truth folder)."""
    return record_training(folder, source=SOURCE, model=MODEL, split="none", size=SIZE, frames=frames,
                           mode="fedsgd")


def frame_rows(attack: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored frame of a runner's metrics."""
    rows = []
    for f in sorted(metrics["frames"], key=lambda f: f["seq"]):
        rows.append({"setting": "frame", "model": MODEL, "attack": attack, "chain": None, "local_steps": 1,
                     "batch": 1, "feature_cos": None, "psnr": f["psnr"], "ssim": f["ssim"],
                     "psnr_native": f["psnr_native"], "seconds_per_frame": metrics["summary"]["seconds_per_frame"],
                     "gradient_norm": f["gradient_norm"], "round": f["round"], "frame": f["seq"],
                     "gradient_loss_relative": f["gradient_loss_relative"], "gradient_loss_l2": f["gradient_loss_l2"]})
    return rows


def rows(quick: bool) -> list[dict[str, Any]]:
    """Per frame per attack (see the module docstring)."""
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rec, truth = record(Path(tmp), FRAMES[quick])
        for attack in ATTACKS:
            metrics = run_attack(str(rec), attack, str(Path(tmp) / attack), truth=str(truth), device="cpu",
                                 progress=False)
            out.extend(frame_rows(attack, metrics))
    return out


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    table = rows(args.quick)
    print_table(table, ["attack", "frame", "round", "gradient_norm", "psnr", "psnr_native", "ssim",
                        "gradient_loss_relative", "seconds_per_frame"])
    write(args.json, table, {"source": SOURCE, "model": MODEL, "size": SIZE, "frames": FRAMES[args.quick],
                             "attacks": list(ATTACKS), "options": "defaults", "quick": args.quick})


if __name__ == "__main__":
    main()
